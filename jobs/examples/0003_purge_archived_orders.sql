-- Purge the orders that 0002 archived. Whole rows are saved before each
-- chunk deletes them (snapshot(*)), so `sluice down` inserts them back.
-- sluice:table orders
-- sluice:where created_at < DATE '2025-01-01'
-- sluice:batch 2000
-- sluice:undo snapshot(*)
-- sluice:requires SELECT to_regclass('orders_archive') IS NOT NULL

-- sluice:up
DELETE FROM orders o
 WHERE o.id BETWEEN :lo AND :hi
   AND o.created_at < DATE '2025-01-01'
   AND EXISTS (SELECT 1 FROM orders_archive a WHERE a.id = o.id);
