-- Backfill a derived column over the whole table, 5000 rows per chunk.
-- The old values are saved per chunk, so `sluice down` puts back exactly
-- what was there (NULL or not) rather than guessing.
-- Runs unchanged on PostgreSQL and on SQLite (--db sqlite:PATH).
-- sluice:table users
-- sluice:key id
-- sluice:batch 5000
-- sluice:lock-timeout 2s
-- sluice:statement-timeout 30s
-- sluice:undo snapshot(full_name)

-- sluice:up
UPDATE users
   SET full_name = first_name || ' ' || last_name
 WHERE id BETWEEN :lo AND :hi
   AND full_name IS NULL;
