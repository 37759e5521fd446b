-- callback_hooks: completion = 'callback' (a 2xx only acknowledges; the job
-- completes through complete_job or fails when its lease runs out), and the
-- on_complete / on_fail hooks (same transaction, the job user's claims, a
-- raising hook undoes its writes and the state change).
\set SHOW_CONTEXT never
SELECT regress.begin_test();

SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated", "email": "a@example.com"}';

------------------------------------------------------------------------------
-- Callback completion.
------------------------------------------------------------------------------
INSERT INTO jobrunner.job_config (job_name, url, completion, callback_lease, max_retries, concurrency_limit)
VALUES ('cb.task', 'http://localhost/cb', 'callback', '10 minutes', 1, 100);

SELECT jobrunner.queue_job('cb.task') AS c1 \gset
SELECT regress.claim(:'c1') AS attempt;
-- The endpoint answers 202: acknowledged, still running, under a lease.
SELECT regress.record(:'c1', 1, 202, NULL, '{"accepted": true}') AS recorded;
SELECT * FROM regress.job(:'c1');
SELECT lease_expires_at - acked_at AS lease FROM jobrunner.job WHERE id = :'c1';
-- A duplicate answer, a worker restart, or an unexpired lease change nothing.
SELECT regress.record(:'c1', 1, 500, 'duplicate', NULL) AS recorded_again;
SELECT recovered FROM jobrunner._recover(99);
SELECT jobrunner._expire_leases() AS expired;
SELECT state, attempts, acked_at IS NOT NULL AS acked FROM jobrunner.job WHERE id = :'c1';
-- The endpoint calls complete_job later, from its own session.
SELECT jobrunner.complete_job(:'c1', '{"result": 42}', _attempt => 1) AS completed;
SELECT * FROM regress.job(:'c1');
SELECT * FROM regress.logs(:'c1');

-- A non-2xx answer fails the attempt as usual.
SELECT jobrunner.queue_job('cb.task') AS c2 \gset
SELECT regress.claim(:'c2') AS attempt;
SELECT regress.record(:'c2', 1, 500, 'HTTP 500', NULL) AS recorded;
SELECT * FROM regress.job(:'c2');

-- Nobody completes it: when the lease runs out, the attempt fails (retried),
-- and on the last attempt the job fails.
SELECT jobrunner.queue_job('cb.task') AS c3 \gset
SELECT regress.claim(:'c3') AS attempt;
SELECT regress.record(:'c3', 1, 200, NULL, NULL) AS recorded;
UPDATE jobrunner.job SET lease_expires_at = now() - interval '1 second' WHERE id = :'c3';
SELECT jobrunner._expire_leases() AS expired;
SELECT * FROM regress.job(:'c3');
SELECT locked_by, lease_expires_at FROM jobrunner.job WHERE id = :'c3';
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'c3';
SELECT regress.claim(:'c3') AS attempt;
SELECT regress.record(:'c3', 2, 200, NULL, NULL) AS recorded;
UPDATE jobrunner.job SET lease_expires_at = now() - interval '1 second' WHERE id = :'c3';
SELECT jobrunner._expire_leases() AS expired;
SELECT * FROM regress.job(:'c3');
SELECT * FROM regress.logs(:'c3');
-- complete_job after the job failed returns false.
SELECT jobrunner.complete_job(:'c3') AS completed;
-- fail_job on an acknowledged job fails the attempt.
SELECT jobrunner.queue_job('cb.task') AS c4 \gset
SELECT regress.claim(:'c4') AS attempt;
SELECT regress.record(:'c4', 1, 200, NULL, NULL) AS recorded;
SELECT jobrunner.fail_job(:'c4', 'endpoint gave up') AS failed;
SELECT * FROM regress.job(:'c4');

------------------------------------------------------------------------------
-- Hooks.
------------------------------------------------------------------------------
CREATE TABLE public.hook_log (job_id uuid, event text, job_state text, claims text);
-- Writes a row, then raises if the job's body asks it to.
CREATE FUNCTION public.note_complete(j jobrunner.job) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.hook_log VALUES (j.id, 'complete', j.state, current_setting('request.jwt.claims', true));
    IF j.request_body ->> 'raise' = 'complete' THEN
        RAISE EXCEPTION 'on_complete refused job %', j.request_body ->> 'n';
    END IF;
END $$;
CREATE FUNCTION public.note_fail(j jobrunner.job) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.hook_log VALUES (j.id, 'fail', j.state, current_setting('request.jwt.claims', true));
    IF j.request_body ->> 'raise' = 'fail' THEN
        RAISE EXCEPTION 'on_fail refused job %', j.request_body ->> 'n';
    END IF;
END $$;
INSERT INTO jobrunner.job_config (job_name, url, max_retries, concurrency_limit, on_complete, on_fail)
VALUES ('hk.task', 'http://localhost/hk', 1, 100, 'public.note_complete(jobrunner.job)', 'public.note_fail(jobrunner.job)'),
       ('hk.plain', 'http://localhost/plain', 1, 100, NULL, NULL);
CREATE FUNCTION pg_temp.hook_rows(_id uuid) RETURNS TABLE (event text, job_state text, claims text)
    LANGUAGE sql AS $$ SELECT h.event, h.job_state, h.claims FROM public.hook_log h WHERE h.job_id = _id $$;

-- The worker's 2xx: the hook runs with the job user's claims, in the same
-- transaction as the completion.
SELECT jobrunner.queue_job('hk.task', '{"n": 1}') AS h1 \gset
SELECT regress.claim(:'h1') AS attempt;
SELECT regress.record(:'h1', 1, 200, NULL, '{"ok": 1}') AS recorded;
SELECT * FROM regress.job(:'h1');
SELECT * FROM pg_temp.hook_rows(:'h1');

-- complete_job by an administrator whose own claims are someone else's: the
-- hook sees the job user's claims; the caller's are back afterwards.
SELECT jobrunner.queue_job('hk.task', '{"n": 2}') AS h2 \gset
SELECT regress.claim(:'h2') AS attempt;
SET request.jwt.claims = '{"sub": "cccccccc-cccc-4ccc-8ccc-cccccccccccc", "role": "service_role"}';
SELECT jobrunner.complete_job(:'h2', '{"done": true}') AS completed;
SELECT * FROM pg_temp.hook_rows(:'h2');
SELECT current_setting('request.jwt.claims') AS claims_after;
-- In a transaction that rolls back, neither the hook's row nor the
-- completion stays.
SELECT jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', NULL, 'hk.task', '{"n": 3}') AS h3 \gset
SELECT regress.claim(:'h3') AS attempt;
BEGIN;
SELECT jobrunner.complete_job(:'h3') AS completed;
SELECT count(*) AS hook_rows_inside FROM public.hook_log WHERE job_id = :'h3';
ROLLBACK;
SELECT state, (SELECT count(*) FROM public.hook_log WHERE job_id = :'h3') AS hook_rows
  FROM jobrunner.job WHERE id = :'h3';
-- A system job's hook sees the system role and no sub.
RESET request.jwt.claims;
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'hk.task', '{"n": 4}') AS h4 \gset
SELECT regress.claim(:'h4') AS attempt;
SELECT regress.record(:'h4', 1, 200, NULL, NULL) AS recorded;
SELECT * FROM pg_temp.hook_rows(:'h4');
SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '(none)') AS claims_after;
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated", "email": "a@example.com"}';

-- A raising on_complete hook: its row and the completion are rolled back and
-- the attempt counts as failed (retried), with the hook's error.
SELECT jobrunner.queue_job('hk.task', '{"n": 5, "raise": "complete"}') AS h5 \gset
SELECT regress.claim(:'h5') AS attempt;
SELECT regress.record(:'h5', 1, 200, NULL, '{"ok": 1}') AS recorded;
SELECT * FROM regress.job(:'h5');
SELECT * FROM pg_temp.hook_rows(:'h5');
SELECT * FROM regress.logs(:'h5');
-- Through complete_job, a raising hook raises in the caller's transaction:
-- the caller's writes and the completion commit together or not at all, so
-- the job stays running (its lease or a later complete_job decides).
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'h5';
SELECT regress.claim(:'h5') AS attempt;
SELECT jobrunner.complete_job(:'h5') AS completed;
SELECT * FROM regress.job(:'h5');
SELECT * FROM pg_temp.hook_rows(:'h5');

-- on_fail: runs when the job fails for good, with the user's claims.
SELECT jobrunner.queue_job('hk.task', '{"n": 6}', _max_retries => 0) AS h6 \gset
SELECT regress.claim(:'h6') AS attempt;
SELECT regress.record(:'h6', 1, 500, 'HTTP 500', NULL) AS recorded;
SELECT * FROM regress.job(:'h6');
SELECT * FROM pg_temp.hook_rows(:'h6');
-- ...but not on a failed attempt that will be retried.
SELECT jobrunner.queue_job('hk.task', '{"n": 7}') AS h7 \gset
SELECT regress.claim(:'h7') AS attempt;
SELECT regress.record(:'h7', 1, 500, 'HTTP 500', NULL) AS recorded;
SELECT state, (SELECT count(*) FROM public.hook_log WHERE job_id = :'h7') AS hook_rows
  FROM jobrunner.job WHERE id = :'h7';
-- A raising on_fail hook: its row is gone, the job still fails, and says why.
SELECT jobrunner.queue_job('hk.task', '{"n": 8, "raise": "fail"}', _max_retries => 0) AS h8 \gset
SELECT regress.claim(:'h8') AS attempt;
SELECT jobrunner.fail_job(:'h8', 'endpoint error') AS failed;
SELECT * FROM regress.job(:'h8');
SELECT * FROM pg_temp.hook_rows(:'h8');
SELECT * FROM regress.logs(:'h8');

-- One batch mixing hooked and plain outcomes.
SELECT jobrunner.queue_job('hk.task', '{"n": 9}') AS h9 \gset
SELECT jobrunner.queue_job('hk.plain') AS p1 \gset
SELECT count(*) AS claimed FROM jobrunner._claim(1000, 42) WHERE id IN (:'h9', :'p1');
SELECT jobrunner._record(42, ARRAY[:'h9', :'p1']::uuid[], ARRAY[1, 1], ARRAY[200, 200],
                         ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::text[],
                         ARRAY[1, 1]::float8[], ARRAY[NULL, NULL]::bigint[]) AS left_for_later;
SELECT (SELECT state FROM jobrunner.job WHERE id = :'h9') AS hooked, (SELECT state FROM jobrunner.job WHERE id = :'p1') AS plain,
       (SELECT count(*) FROM public.hook_log WHERE job_id = :'h9') AS hook_rows;

RESET request.jwt.claims;
DROP TABLE public.hook_log;
DELETE FROM jobrunner.job_config;
DROP FUNCTION public.note_complete(jobrunner.job), public.note_fail(jobrunner.job);
