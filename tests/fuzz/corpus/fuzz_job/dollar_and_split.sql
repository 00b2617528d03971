-- sluice:table t
-- sluice:up
DO $tag$ BEGIN PERFORM 1; END $tag$;
UPDATE t SET a = 1 WHERE id >= :lo;
UPDATE t SET b = 2 WHERE id <= :hi;
-- sluice:down
SELECT :lo, :hi;
