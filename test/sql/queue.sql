-- queue: queue_job and queue_job_for, their errors, dedup and idempotency keys.
-- The test session is a superuser, so its request.jwt.claims are believed.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

-- Generous concurrency: every _claim below takes all due jobs.
INSERT INTO jobrunner.job_config (job_name, url, max_retries, concurrency_limit)
VALUES ('q.mail', 'http://localhost/mail', 5, 100),
       ('q.report', 'http://localhost/report', 2, 100);

\set user_a 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
\set user_b 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated", "email": "a@example.com"}';

-- A job belongs to the caller of the claims, with the config's defaults.
SELECT jobrunner.queue_job('q.mail', '{"to": "x@example.com"}') AS job1 \gset
SELECT user_id = :'user_a' AS owned_by_a, user_role, user_email, job_name, request_body, state,
       priority, attempts, max_retries, dedup_key, idempotency_key,
       next_run_at <= now() AS due_now, finished_at IS NULL AS unfinished
  FROM jobrunner.job WHERE id = :'job1';
SELECT attempt, log_level, log_message, status_code FROM jobrunner.job_logs WHERE job_id = :'job1';

-- Options by name: retries, delay, priority; the body defaults to {}.
SELECT jobrunner.queue_job(_job_name => 'q.mail', _max_retries => 0,
                           _run_at => now() + interval '1 hour', _priority => 7) AS job2 \gset
SELECT request_body, max_retries, priority,
       next_run_at - created_at BETWEEN interval '59 minutes' AND interval '61 minutes' AS delayed_one_hour
  FROM jobrunner.job WHERE id = :'job2';

-- Errors, each with its SQLSTATE.
SELECT regress.err($$SELECT jobrunner.queue_job(NULL)$$) AS null_name;
SELECT regress.err($$SELECT jobrunner.queue_job('q mail')$$) AS malformed_name;
SELECT regress.err($$SELECT jobrunner.queue_job('q.nope')$$) AS unknown_name;
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail', _max_retries => -1)$$) AS negative_retries;
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail', _max_retries => 1001)$$) AS too_many_retries;
SELECT regress.err(format('SELECT jobrunner.queue_job(%L, _dedup_key => %L)', 'q.mail', repeat('k', 513)))
       AS long_dedup_key;
SELECT regress.err(format('SELECT jobrunner.queue_job(%L, _idempotency_key => %L)', 'q.mail', repeat('k', 513)))
       AS long_idempotency_key;
-- The hint says what to do.
SELECT jobrunner.queue_job('q.nope');
-- A name of dots only, configured under 0.1.0 (whose check let it through:
-- here its trigger is bypassed), is refused: with jobrunner.base_url it
-- would be a path segment.
ALTER TABLE jobrunner.job_config DISABLE TRIGGER job_config_validate;
INSERT INTO jobrunner.job_config (job_name, url) VALUES ('..', NULL);
ALTER TABLE jobrunner.job_config ENABLE TRIGGER job_config_validate;
SELECT regress.err($$SELECT jobrunner.queue_job('..')$$) AS configured_dots_only;
SELECT regress.err($$SELECT jobrunner.queue_job('...')$$) AS unconfigured_dots_only;
DELETE FROM jobrunner.job_config WHERE job_name = '..';

-- Claims that cannot be believed or read.
SET request.jwt.claims = '{"sub": "not-a-uuid", "role": "authenticated"}';
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail')$$) AS sub_not_a_uuid;
SET request.jwt.claims = 'not json';
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail')$$) AS claims_not_json;
SET request.jwt.claims = '["a"]';
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail')$$) AS claims_not_object;
-- The nil uuid stands for system jobs: no token may claim it.
SET request.jwt.claims = '{"sub": "00000000-0000-0000-0000-000000000000", "role": "authenticated"}';
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail')$$) AS nil_sub;

-- A login role that is neither a superuser nor in trusted_claim_roles: its
-- claims are not believed, with or without them.
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_jr_mallory;
RESET client_min_messages;
CREATE ROLE regress_jr_mallory LOGIN;
SET SESSION AUTHORIZATION regress_jr_mallory;
SELECT session_user, current_setting('jobrunner.trusted_claim_roles') AS trusted;
SET request.jwt.claims = '{"sub": "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "role": "authenticated"}';
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail')$$) AS forged_claims;
RESET request.jwt.claims;
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail')$$) AS no_claims;
SELECT jobrunner.queue_job('q.mail');
SELECT regress.err(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L)', :'user_b', 'authenticated', 'q.mail'))
       AS queue_job_for_not_admin;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS jobs_of_b FROM jobrunner.job WHERE user_id = :'user_b';

-- A superuser without claims is an administrator: queue_job makes a system job.
RESET request.jwt.claims;
SELECT jobrunner.queue_job('q.report') AS sys1 \gset
SELECT user_id IS NULL AS system_job, user_role, user_email, max_retries FROM jobrunner.job WHERE id = :'sys1';

-- queue_job_for: a user's job, or a system job (role and email dropped).
SELECT jobrunner.queue_job_for(:'user_b', 'authenticated', 'b@example.com', 'q.report', '{"n": 1}') AS forb \gset
SELECT user_id = :'user_b' AS owned_by_b, user_role, user_email, request_body FROM jobrunner.job WHERE id = :'forb';
SELECT jobrunner.queue_job_for(NULL, 'authenticated', 'x@example.com', 'q.report') AS sys2 \gset
SELECT user_id, user_role, user_email FROM jobrunner.job WHERE id = :'sys2';
SELECT regress.err(format('SELECT jobrunner.queue_job_for(%L, NULL, NULL, %L)', :'user_b', 'q.report'))
       AS user_without_role;
SELECT regress.err(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L)', :'user_b', 'authenticated', 'q.nope'))
       AS unknown_name;

------------------------------------------------------------------------------
-- Dedup: one pending or running job per (job_name, user, dedup_key).
------------------------------------------------------------------------------
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
SELECT jobrunner.queue_job('q.report', '{"v": 1}', _dedup_key => 'daily') AS d1 \gset
SELECT jobrunner.queue_job('q.report', '{"v": 2}', _dedup_key => 'daily') = :'d1' AS same_job_while_pending;
-- Other users, other job names and system jobs have their own.
SELECT jobrunner.queue_job_for(:'user_b', 'authenticated', NULL, 'q.report', _dedup_key => 'daily') <> :'d1'
       AS other_user_other_job;
SELECT jobrunner.queue_job('q.mail', _dedup_key => 'daily') <> :'d1' AS other_name_other_job;
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'q.report', _dedup_key => 'daily') AS dsys \gset
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'q.report', _dedup_key => 'daily') = :'dsys' AS system_jobs_dedup_too;
-- Still the same while it runs (the worker claimed it).
SELECT count(*) AS claimed FROM jobrunner._claim(100, 42) WHERE id = :'d1';
SELECT state FROM jobrunner.job WHERE id = :'d1';
SELECT jobrunner.queue_job('q.report', _dedup_key => 'daily') = :'d1' AS same_job_while_running;
-- Only one row was inserted, and its body is the first caller's.
SELECT count(*) AS rows_with_key, min(request_body::text) AS body
  FROM jobrunner.job WHERE user_id = :'user_a' AND job_name = 'q.report' AND dedup_key = 'daily';
-- Once it completed, the key is free again: a new job.
SELECT jobrunner.complete_job(:'d1');
SELECT jobrunner.queue_job('q.report', _dedup_key => 'daily') AS d2 \gset
SELECT :'d2' <> :'d1' AS new_job_after_completion;
SELECT jobrunner.dequeue_job(:'d2');
SELECT jobrunner.queue_job('q.report', _dedup_key => 'daily') AS d3 \gset
SELECT :'d3' NOT IN (:'d1', :'d2') AS new_job_after_cancel;
-- Retrying the canceled one while d3 holds the key is refused, naming the key.
SELECT regress.err(format('SELECT jobrunner.retry_job(%L)', :'d2')) AS retry_while_key_taken;
SELECT state FROM jobrunner.job WHERE id = :'d2';

------------------------------------------------------------------------------
-- Idempotency: one job per (job_name, user, idempotency_key) until purged.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('q.mail', _idempotency_key => 'order-1') AS i1 \gset
SELECT jobrunner.queue_job('q.mail', _idempotency_key => 'order-1') = :'i1' AS same_while_pending;
SELECT count(*) AS claimed FROM jobrunner._claim(100, 42) WHERE id = :'i1';
SELECT jobrunner.complete_job(:'i1', '{"sent": true}');
SELECT jobrunner.queue_job('q.mail', _idempotency_key => 'order-1') = :'i1' AS same_after_completion;
SELECT jobrunner.queue_job_for(:'user_b', 'authenticated', NULL, 'q.mail', _idempotency_key => 'order-1') <> :'i1'
       AS other_user_other_job;
-- A canceled job keeps its key too.
SELECT jobrunner.queue_job('q.mail', _idempotency_key => 'order-2') AS i2 \gset
SELECT jobrunner.dequeue_job(:'i2');
SELECT jobrunner.queue_job('q.mail', _idempotency_key => 'order-2') = :'i2' AS same_after_cancel;
SELECT count(*) AS rows_with_key FROM jobrunner.job
 WHERE user_id = :'user_a' AND idempotency_key IN ('order-1', 'order-2');

------------------------------------------------------------------------------
-- Purge: completed and canceled jobs past the retention go, with their logs;
-- then the idempotency key makes a new job.
------------------------------------------------------------------------------
UPDATE jobrunner.job SET finished_at = now() - interval '8 days' WHERE id IN (:'i1', :'i2', :'d1');
-- A failed job past the retention stays (failed jobs have their own, longer
-- retention: they have not been dealt with).
SELECT jobrunner.queue_job('q.mail', _max_retries => 0) AS f1 \gset
SELECT count(*) AS claimed FROM jobrunner._claim(100, 42) WHERE id = :'f1';
SELECT jobrunner.fail_job(:'f1', 'boom');
UPDATE jobrunner.job SET finished_at = now() - interval '8 days' WHERE id = :'f1';
SELECT state FROM jobrunner.job WHERE id = :'f1';
-- A job whose request is still on the wire keeps its slot, so it stays.
SELECT jobrunner._purge(interval '7 days', interval '30 days', 2) AS purged_while_requests_run;
-- The worker's answers for the requests arrive (late: changing nothing else).
SELECT jobrunner._record(42, array_agg(id), array_agg(sending_attempt), array_agg(200), array_agg(NULL::text),
                         array_agg(NULL::text), array_agg(1.0::float8), array_agg(NULL::bigint)) AS left_for_later
  FROM jobrunner.job WHERE sending_attempt IS NOT NULL;
SELECT jobrunner._purge(interval '7 days', interval '30 days', 2) AS purged_first_batch;
SELECT jobrunner._purge(interval '7 days', interval '30 days', 2) AS purged_second_batch;
SELECT jobrunner._purge(interval '7 days', interval '30 days', 2) AS purged_nothing_left;
-- Younger finished jobs stay.
SELECT count(*) > 0 AS younger_finished_jobs_stay FROM jobrunner.job WHERE state IN ('completed', 'canceled');
SELECT count(*) FILTER (WHERE id IN (:'i1', :'i2', :'d1')) AS purged_jobs_left,
       count(*) FILTER (WHERE id = :'f1') AS failed_job_left
  FROM jobrunner.job;
SELECT count(*) AS logs_of_purged_jobs FROM jobrunner.job_logs WHERE job_id IN (:'i1', :'i2', :'d1');
SELECT count(*) > 0 AS logs_of_failed_job FROM jobrunner.job_logs WHERE job_id = :'f1';
-- Past its own retention, a failed job goes too.
SELECT jobrunner._purge(interval '7 days', interval '7 days', 2) AS purged_failed;
SELECT count(*) AS failed_job_left FROM jobrunner.job WHERE id = :'f1';
SELECT jobrunner.queue_job('q.mail', _idempotency_key => 'order-1') NOT IN (:'i1') AS new_job_after_purge;

RESET request.jwt.claims;
DROP ROLE regress_jr_mallory;

------------------------------------------------------------------------------
-- Trace context: an explicit traceparent (checked), else the one PostgREST
-- put in request.headers (a malformed one ignored), else none.
------------------------------------------------------------------------------
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
-- The trace a job queued with these request.headers (NULL: unset) and
-- explicit arguments carries.
CREATE FUNCTION pg_temp.trace_of(_headers text, _traceparent text DEFAULT NULL, _tracestate text DEFAULT NULL)
    RETURNS TABLE (traceparent text, tracestate text) LANGUAGE plpgsql AS $$
DECLARE
    _id uuid;
BEGIN
    PERFORM set_config('request.headers', COALESCE(_headers, ''), true);
    _id := jobrunner.queue_job('q.mail', _traceparent => _traceparent, _tracestate => _tracestate);
    RETURN QUERY SELECT j.traceparent, j.tracestate FROM jobrunner.job j WHERE j.id = _id;
END $$;
\set tp '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
\set hdr '{"accept": "*/*", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "tracestate": "rojo=00f067aa0ba902b7"}'
SELECT * FROM pg_temp.trace_of(NULL, :'tp', 'congo=t61rcWkgMzE') AS explicit;
SELECT * FROM pg_temp.trace_of(:'hdr') AS from_request_headers;
SELECT * FROM pg_temp.trace_of(:'hdr', :'tp') AS explicit_wins;
SELECT * FROM pg_temp.trace_of(NULL) AS none;
-- Malformed headers queue the job without a trace; a tracestate that could
-- not be a header is dropped and the traceparent kept.
SELECT left(h, 60) AS request_headers, t.*
  FROM unnest(ARRAY['not json', '[1]', '{"traceparent": "00-XYZ-1-01"}',
                    '{"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
                    '{"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"}',
                    '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"}',
                    '{"traceparent": 42}',
                    '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "a=1\r\nX-Evil: 1"}',
                    '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "' || repeat('x', 513) || '"}'
                   ]) AS h,
       pg_temp.trace_of(h) t;
-- An explicit value is checked and named.
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail', _traceparent => '00-abc-def-01')$$) AS bad_traceparent;
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail', _traceparent => upper('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'))$$) AS uppercase;
SELECT regress.err($$SELECT jobrunner.queue_job('q.mail', _tracestate => 'a=1')$$) AS tracestate_alone;
-- job_config cannot set the trace headers itself.
SELECT regress.err($$UPDATE jobrunner.job_config SET headers = '{"traceparent": "x"}' WHERE job_name = 'q.mail'$$) AS config_traceparent;
RESET request.jwt.claims;
