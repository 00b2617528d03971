-- Backfill a derived column over the whole table, 5000 rows per chunk.
-- sluice:table users
-- sluice:key id
-- sluice:batch 5000
-- sluice:lock-timeout 2s
-- sluice:statement-timeout 30s

-- sluice:up
UPDATE users
   SET full_name = first_name || ' ' || last_name
 WHERE id BETWEEN :lo AND :hi
   AND full_name IS NULL;

-- sluice:down
UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;
