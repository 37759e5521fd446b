-- populate-0.1.0.sql — jobs in every state, made through the 0.1.0 API
-- exactly as a 0.1.0 database holds them, before ALTER EXTENSION ... UPDATE.
-- Run as a superuser against a database where 0.1.0 is installed.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

INSERT INTO jobrunner.job_config (job_name, url, completion, max_retries, retry_backoff)
VALUES ('upgrade-response', 'http://127.0.0.1:9/response', 'response', 2, '1 second'),
       ('upgrade-callback', 'http://127.0.0.1:9/callback', 'callback', 2, '1 second');

-- pending: due now, due later, and with dedup and idempotency keys
SELECT jobrunner.queue_job_for('11111111-1111-1111-1111-111111111111', 'authenticated', 'a@example.com',
                               'upgrade-response', '{"n": 1}');
SELECT jobrunner.queue_job_for('11111111-1111-1111-1111-111111111111', 'authenticated', NULL,
                               'upgrade-response', '{"n": 2}', _run_at => now() + interval '1 hour');
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'upgrade-response', '{"n": 3}',
                               _dedup_key => 'd1', _idempotency_key => 'i1', _priority => 5);
-- to be claimed (running), completed, failed, canceled, and a callback job
-- acknowledged and waiting for complete_job
SELECT jobrunner.queue_job_for('22222222-2222-2222-2222-222222222222', 'authenticated', NULL,
                               'upgrade-response', jsonb_build_object('n', g)) FROM generate_series(4, 7) g;
SELECT jobrunner.queue_job_for('22222222-2222-2222-2222-222222222222', 'authenticated', NULL,
                               'upgrade-callback', '{"n": 8}');

CREATE TEMP TABLE claimed AS
SELECT c.id, c.attempt FROM jobrunner._claim(100, 42) c
 WHERE c.request_body::jsonb ->> 'n' IN ('4', '5', '6', '7', '8');
SELECT jobrunner._record(42, ARRAY[(SELECT id FROM claimed c JOIN jobrunner.job j USING (id) WHERE j.request_body ->> 'n' = '5'),
                                   (SELECT id FROM claimed c JOIN jobrunner.job j USING (id) WHERE j.request_body ->> 'n' = '8')],
                         ARRAY[1, 1], ARRAY[200, 202], ARRAY[NULL, NULL]::text[],
                         ARRAY['{"ok": true}', NULL]::text[], ARRAY[12.5, 3.0]::float8[],
                         ARRAY[NULL, NULL]::bigint[]);
SELECT jobrunner._record(42, ARRAY[(SELECT id FROM claimed c JOIN jobrunner.job j USING (id) WHERE j.request_body ->> 'n' = '6')],
                         ARRAY[1], ARRAY[500], ARRAY['HTTP 500'], ARRAY[NULL]::text[],
                         ARRAY[1.0]::float8[], ARRAY[NULL]::bigint[]);
UPDATE jobrunner.job SET max_retries = 0, state = 'running', attempts = 1, locked_by = 42
 WHERE request_body ->> 'n' = '7';
SELECT jobrunner.fail_job(id, 'given up', _retry => false) FROM jobrunner.job WHERE request_body ->> 'n' = '7';
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'upgrade-response', '{"n": 9}');
SELECT jobrunner.dequeue_job(id) FROM jobrunner.job WHERE request_body ->> 'n' = '9';
