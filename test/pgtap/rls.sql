-- rls: users see and act on their own jobs only. PostgREST is simulated the
-- way it connects: login role authenticator (trusted), SET ROLE authenticated,
-- request.jwt.claims set per request. An untrusted login role (mallory)
-- setting the same claims is not believed.
BEGIN;
SELECT plan(55);
SET LOCAL client_min_messages = warning;

DELETE FROM jobrunner.job_log_entry;
DELETE FROM jobrunner.job;
DELETE FROM jobrunner.job_config;
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_retries)
VALUES ('tap.rls', 'http://localhost/rls', 100, 0), ('tap.rls2', 'http://localhost/rls2', 100, 0);

\set user_a 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
\set user_b 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'
-- Become a user through PostgREST, an untrusted login, anon, or back to the superuser.
\set as_a 'RESET SESSION AUTHORIZATION; SET SESSION AUTHORIZATION authenticator; SET ROLE authenticated; SET LOCAL request.jwt.claims = ''{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated", "email": "a@example.com"}'';'
\set as_b 'RESET SESSION AUTHORIZATION; SET SESSION AUTHORIZATION authenticator; SET ROLE authenticated; SET LOCAL request.jwt.claims = ''{"sub": "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "role": "authenticated", "email": "b@example.com"}'';'
\set as_mallory_claiming_a 'RESET SESSION AUTHORIZATION; SET SESSION AUTHORIZATION mallory; SET LOCAL request.jwt.claims = ''{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}'';'
\set as_anon 'RESET SESSION AUTHORIZATION; SET SESSION AUTHORIZATION authenticator; SET ROLE anon; SET LOCAL request.jwt.claims = ''{"role": "anon"}'';'
\set as_postgres 'RESET SESSION AUTHORIZATION; RESET request.jwt.claims;'

------------------------------------------------------------------------------
-- The policies.
------------------------------------------------------------------------------
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'jobrunner.job'::regclass), 'RLS is enabled on job');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'jobrunner.job_log_entry'::regclass), 'RLS is enabled on job_log_entry');
SELECT ok((SELECT 'security_invoker=true' = ANY (reloptions) FROM pg_class WHERE oid = 'jobrunner.job_logs'::regclass),
          'job_logs reads as the querying role (the policies of job and job_log_entry apply)');
SELECT policies_are('jobrunner', 'job', ARRAY['job_read_own'], 'job has only the read-own policy');
SELECT policies_are('jobrunner', 'job_log_entry', ARRAY['job_log_entry_read_own'], 'job_log_entry has only the read-own policy');
SELECT policy_cmd_is('jobrunner', 'job', 'job_read_own', 'SELECT', 'the job policy is for SELECT only');
SELECT policy_cmd_is('jobrunner', 'job_log_entry', 'job_log_entry_read_own', 'SELECT', 'the job_log_entry policy is for SELECT only');

------------------------------------------------------------------------------
-- A and B queue jobs through PostgREST.
------------------------------------------------------------------------------
:as_a
SELECT jobrunner.queue_job('tap.rls', '{"who": "a", "n": 1}', _run_at => now() + interval '1 day') AS a_pending \gset
SELECT jobrunner.queue_job('tap.rls', '{"who": "a", "n": 2}', _idempotency_key => 'order-7') AS a_running \gset
SELECT jobrunner.queue_job('tap.rls2', '{"who": "a", "n": 3}', _run_at => now() + interval '1 day') AS a_failed \gset
SELECT is((SELECT user_id FROM jobrunner.job WHERE id = :'a_pending'), :'user_a'::uuid, 'A''s job belongs to A');
SELECT is((SELECT user_role || ' ' || user_email FROM jobrunner.job WHERE id = :'a_pending'), 'authenticated a@example.com',
          'role and email come from A''s claims');
:as_b
SELECT jobrunner.queue_job('tap.rls', '{"who": "b"}', _idempotency_key => 'order-7') AS b_running \gset
SELECT isnt(:'b_running'::uuid, :'a_running'::uuid, 'the same idempotency key gives B its own job, not A''s');
SELECT jobrunner.queue_job('tap.rls', '{"who": "b", "n": 2}', _run_at => now() + interval '1 day') AS b_pending \gset

-- The worker claims A's and B's due jobs; A's third job fails for good.
:as_postgres
SELECT is((SELECT count(*)::int FROM jobrunner._claim(100, 42)), 2, 'the worker claims the two due jobs');
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'a_failed';
SELECT is((SELECT count(*)::int FROM jobrunner._claim(100, 42)), 1, 'and then A''s third');
SELECT ok(jobrunner._record(42, ARRAY[:'a_failed']::uuid[], ARRAY[1], ARRAY[500], ARRAY['HTTP 500'],
                            ARRAY[NULL]::text[], ARRAY[1]::float8[], ARRAY[NULL]::bigint[]) = '{}', 'A''s third fails');
SELECT md5(string_agg(j::text, ',' ORDER BY j.id)) AS a_rows_before FROM jobrunner.job j WHERE j.user_id = :'user_a' \gset
SELECT md5(string_agg(l::text, ',' ORDER BY l.id)) AS a_logs_before
  FROM jobrunner.job_logs l JOIN jobrunner.job j ON j.id = l.job_id WHERE j.user_id = :'user_a' \gset
SELECT is((SELECT count(*)::int FROM jobrunner.job), 5, 'a superuser sees every job');

------------------------------------------------------------------------------
-- B sees only B's jobs and logs, and cannot act on A's.
------------------------------------------------------------------------------
:as_b
SELECT set_eq($$SELECT id FROM jobrunner.job$$, ARRAY[:'b_running', :'b_pending']::uuid[], 'B sees exactly B''s jobs');
SELECT is_empty(format('SELECT 1 FROM jobrunner.job WHERE id = %L', :'a_running'), 'B does not see A''s job by id');
SELECT is_empty(format('SELECT 1 FROM jobrunner.job WHERE user_id = %L', :'user_a'), 'B does not see A''s jobs by owner');
SELECT is((SELECT count(*)::int FROM jobrunner.job_logs WHERE job_id NOT IN (:'b_running', :'b_pending')), 0,
          'B sees no log row of another job');
SELECT cmp_ok((SELECT count(*)::int FROM jobrunner.job_logs), '>=', 3, 'B sees the logs of B''s own jobs');
SELECT is((SELECT sum(pending + running)::int FROM jobrunner.job_stats), 2, 'job_stats counts only B''s jobs');
SELECT is_empty($$SELECT 1 FROM jobrunner.recent_failures$$, 'recent_failures shows none of A''s failures to B');

SELECT throws_ok(format('SELECT jobrunner.dequeue_job(%L)', :'a_pending'), 'P0002',
                 format('job %s not found', :'a_pending'), 'B cannot dequeue A''s job');
SELECT throws_ok(format('SELECT jobrunner.complete_job(%L, %L)', :'a_running', '{"forged": true}'), 'P0002',
                 format('job %s not found', :'a_running'), 'B cannot complete A''s job');
SELECT throws_ok(format('SELECT jobrunner.complete_job(%L, NULL, 1)', :'a_running'), 'P0002', NULL,
                 'B cannot complete A''s job even with the right attempt');
SELECT throws_ok(format('SELECT jobrunner.fail_job(%L, %L)', :'a_running', 'sabotage'), 'P0002',
                 format('job %s not found', :'a_running'), 'B cannot fail A''s job');
SELECT throws_ok(format('SELECT jobrunner.retry_job(%L)', :'a_failed'), 'P0002',
                 format('job %s not found', :'a_failed'), 'B cannot retry A''s job');
-- Another user's job and a job that does not exist look the same.
SELECT throws_ok($$SELECT jobrunner.dequeue_job('00000000-0000-4000-8000-000000000000')$$, 'P0002',
                 'job 00000000-0000-4000-8000-000000000000 not found', 'a missing job gives the same error');
SELECT throws_ok(format('UPDATE jobrunner.job SET user_id = %L WHERE id = %L', :'user_b', :'a_pending'), '42501', NULL,
                 'B cannot take A''s job over');
SELECT throws_ok(format('UPDATE jobrunner.job SET user_id = %L WHERE id = %L', :'user_a', :'b_pending'), '42501', NULL,
                 'B cannot give its job to A');

:as_postgres
SELECT is((SELECT md5(string_agg(j::text, ',' ORDER BY j.id)) FROM jobrunner.job j WHERE j.user_id = :'user_a'),
          :'a_rows_before', 'A''s jobs are unchanged');
SELECT is((SELECT md5(string_agg(l::text, ',' ORDER BY l.id))
             FROM jobrunner.job_logs l JOIN jobrunner.job j ON j.id = l.job_id WHERE j.user_id = :'user_a'),
          :'a_logs_before', 'A''s logs are unchanged');

------------------------------------------------------------------------------
-- A acts on A's own jobs; owner, role and email stay as stored at enqueue.
------------------------------------------------------------------------------
:as_a
SELECT set_eq($$SELECT id FROM jobrunner.job$$, ARRAY[:'a_pending', :'a_running', :'a_failed']::uuid[], 'A sees exactly A''s jobs');
SELECT is((SELECT count(DISTINCT job_id)::int FROM jobrunner.job_logs), 3, 'A sees the logs of A''s jobs');
SELECT is((SELECT failed_last_hour::int FROM jobrunner.job_stats WHERE job_name = 'tap.rls2'), 1, 'job_stats shows A''s failure');
SELECT is((SELECT count(*)::int FROM jobrunner.recent_failures), 1, 'recent_failures shows A''s failure to A');
-- A's claims change (a new role and email); the stored identity does not.
SET LOCAL request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "editor", "email": "new@example.com"}';
SELECT is(jobrunner.retry_job(:'a_failed'), true, 'A retries A''s failed job');
SELECT throws_ok(format('SELECT jobrunner.complete_job(%L, %L)', :'a_running', '{"ok": true}'), '42501', NULL,
                 'A cannot complete A''s running job with her own token');
-- A's endpoint can, with the token minted for the attempt it was sent.
SELECT set_config('request.jwt.claims', jsonb_build_object('sub', :'user_a', 'role', 'authenticated',
                  'job', jsonb_build_object('id', :'a_running', 'name', 'tap.rls', 'attempt', 1))::text, true) IS NOT NULL AS endpoint \gset
SELECT is(jobrunner.complete_job(:'a_running', '{"ok": true}'), true, 'A''s endpoint completes A''s running job');
SET LOCAL request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "editor", "email": "new@example.com"}';
SELECT is(jobrunner.dequeue_job(:'a_pending'), true, 'A cancels A''s pending job');
SELECT is((SELECT string_agg(DISTINCT user_id || ' ' || user_role || ' ' || user_email, ',') FROM jobrunner.job),
          'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa authenticated a@example.com', 'owner, role and email are as stored');
SELECT throws_ok(format('UPDATE jobrunner.job SET user_role = %L WHERE id = %L', 'service_role', :'a_failed'), '42501', NULL,
                 'A cannot change the stored role');

------------------------------------------------------------------------------
-- Claims from an untrusted login role are not believed.
------------------------------------------------------------------------------
:as_mallory_claiming_a
SELECT is(current_setting('request.jwt.claims')::jsonb ->> 'sub', :'user_a', 'mallory set A''s claims');
SELECT throws_ok($$SELECT jobrunner.queue_job('tap.rls')$$, '42501', NULL, 'queue_job with forged claims is refused');
SELECT is_empty($$SELECT 1 FROM jobrunner.job$$, 'mallory sees no job');
SELECT is_empty($$SELECT 1 FROM jobrunner.job_logs$$, 'mallory sees no log');
SELECT throws_ok(format('SELECT jobrunner.dequeue_job(%L)', :'b_pending'), 'P0002', NULL, 'mallory cannot dequeue a job');
SELECT throws_ok(format('SELECT jobrunner.complete_job(%L)', :'b_running'), 'P0002', NULL, 'mallory cannot complete a job');
SELECT throws_ok(format('SELECT jobrunner.retry_job(%L)', :'a_failed'), 'P0002', NULL, 'mallory cannot retry a job');
SET LOCAL request.jwt.claims = '{"role": "service_role"}';
SELECT throws_ok($$SELECT jobrunner.queue_job('tap.rls')$$, '42501', NULL, 'nor with a service_role claim');
-- Only because mallory is not trusted: trusting it (a superuser's choice) changes that.
:as_postgres
SET LOCAL jobrunner.trusted_claim_roles = 'authenticator, mallory';
:as_mallory_claiming_a
SELECT lives_ok($$SELECT jobrunner.queue_job('tap.rls')$$, 'a trusted login role''s claims are believed');
:as_postgres
RESET jobrunner.trusted_claim_roles;

------------------------------------------------------------------------------
-- anon (no sub) queues nothing and sees nothing.
------------------------------------------------------------------------------
:as_anon
SELECT throws_ok($$SELECT jobrunner.queue_job('tap.rls')$$, '42501', NULL, 'anon cannot queue a job');
SELECT is_empty($$SELECT 1 FROM jobrunner.job$$, 'anon sees no job');
SELECT throws_ok(format('SELECT jobrunner.dequeue_job(%L)', :'b_pending'), 'P0002', NULL, 'anon cannot dequeue a job');
:as_postgres

-- B's jobs were not touched by anyone else.
SELECT is((SELECT state FROM jobrunner.job WHERE id = :'b_running'), 'running', 'B''s running job still runs');
SELECT is((SELECT state FROM jobrunner.job WHERE id = :'b_pending'), 'pending', 'B''s pending job is still pending');

SELECT * FROM finish();
ROLLBACK;
