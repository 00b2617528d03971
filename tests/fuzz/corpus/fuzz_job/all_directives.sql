/* every directive once */
-- sluice:table app."Orders"
-- sluice:key tenant_id, id
-- sluice:where deleted_at IS NULL AND note <> 'x -- y'
-- sluice:batch 1_000
-- sluice:chunk-time 500ms
-- sluice:pause 0ms
-- sluice:max-rate 20000
-- sluice:window 22:00-06:00, 12:00-13:30
-- sluice:lock-timeout 2s
-- sluice:statement-timeout 5m
-- sluice:retries 3
-- sluice:on-error skip
-- sluice:undo snapshot(status, "Note")
-- sluice:workers 4
-- sluice:max-replica-lag 10s
-- sluice:throttle-query SELECT count(*) > 10 FROM pg_stat_activity WHERE state = 'active'
-- sluice:requires SELECT true

-- sluice:up
UPDATE app."Orders" SET status = 'done', note = $$a; :lo$$
 WHERE (tenant_id, id) BETWEEN :lo AND :hi /* :hi in a comment */;
INSERT INTO log SELECT E'it\'s', x::lo FROM app."Orders" WHERE (tenant_id, id) BETWEEN :lo AND :hi;

-- sluice:down
UPDATE app."Orders" SET status = NULL WHERE (tenant_id, id) BETWEEN :lo AND :hi;
