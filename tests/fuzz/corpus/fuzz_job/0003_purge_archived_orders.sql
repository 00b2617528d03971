-- Purge the old orders that 0002 archived. Whole rows are saved before each
-- chunk deletes them (snapshot(*)), so `sluice down` inserts them back.
-- requires: refuse to start unless every old order is in the archive (it
-- also refuses, naming the error, if orders_archive does not exist). The
-- EXISTS in the DELETE keeps a row that is not archived all the same.
-- sluice:table orders
-- sluice:where created_at < '2025-01-01'
-- sluice:batch 2000
-- sluice:undo snapshot(*)
-- sluice:requires SELECT NOT EXISTS (SELECT 1 FROM orders o WHERE o.created_at < '2025-01-01' AND NOT EXISTS (SELECT 1 FROM orders_archive a WHERE a.id = o.id))

-- sluice:up
DELETE FROM orders AS o
 WHERE o.id BETWEEN :lo AND :hi
   AND o.created_at < '2025-01-01'
   AND EXISTS (SELECT 1 FROM orders_archive AS a WHERE a.id = o.id);
