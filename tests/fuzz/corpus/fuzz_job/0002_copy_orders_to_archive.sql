-- Copy old orders into an archive table, chunk by chunk. Only the old
-- orders are counted into chunks (where), so each chunk copies about 2000
-- rows; chunk-time then resizes chunks so that one takes about 250ms.
-- The down section removes exactly the copies each chunk made.
-- '2025-01-01' is a plain string literal so that the file runs unchanged on
-- PostgreSQL (compared as a date) and on SQLite (dates stored as ISO text).
-- sluice:table orders
-- sluice:where created_at < '2025-01-01'
-- sluice:batch 2000
-- sluice:chunk-time 250ms

-- sluice:up
INSERT INTO orders_archive (id, customer_id, amount, created_at)
SELECT id, customer_id, amount, created_at
  FROM orders
 WHERE id BETWEEN :lo AND :hi
   AND created_at < '2025-01-01'
    ON CONFLICT (id) DO NOTHING;

-- sluice:down
DELETE FROM orders_archive WHERE id BETWEEN :lo AND :hi;
