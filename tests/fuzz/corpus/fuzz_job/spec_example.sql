-- sluice:table users
-- sluice:key id
-- sluice:batch 5000
-- sluice:undo snapshot(full_name)

-- sluice:up
UPDATE users
   SET full_name = first_name || ' ' || last_name
 WHERE id BETWEEN :lo AND :hi
   AND full_name IS NULL;

-- sluice:down
UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;
