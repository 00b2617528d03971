-- sluice:table t
-- sluice:bacth 5
-- sluice:UP
BEGIN;
