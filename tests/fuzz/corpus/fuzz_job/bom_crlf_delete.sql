-- sluice:table t
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM t WHERE id BETWEEN :lo AND :hi;
