-- privileges: what a non-admin role may touch (SELECT on job, job_logs and the
-- views; the public functions), what it may not (job_config, direct writes,
-- admin and internal functions, the signing secret), and the pinned
-- search_path of every SECURITY DEFINER function.
BEGIN;
SELECT plan(73);
SET LOCAL client_min_messages = warning;

CREATE ROLE jr_settings_reader NOLOGIN IN ROLE pg_read_all_settings;

DELETE FROM jobrunner.job_log_entry;
DELETE FROM jobrunner.job;
DELETE FROM jobrunner.job_config;
INSERT INTO jobrunner.job_config (job_name, url) VALUES ('tap.priv', 'http://localhost/priv');
SELECT jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', NULL, 'tap.priv') AS job_a \gset

------------------------------------------------------------------------------
-- Grants as the catalog has them.
------------------------------------------------------------------------------
SELECT schema_privs_are('jobrunner', 'authenticated', ARRAY['USAGE'], 'authenticated: USAGE on schema jobrunner only');
SELECT table_privs_are('jobrunner', 'job', 'authenticated', ARRAY['SELECT'], 'authenticated: SELECT on job only');
SELECT table_privs_are('jobrunner', 'job_logs', 'authenticated', ARRAY['SELECT'], 'authenticated: SELECT on job_logs only');
SELECT table_privs_are('jobrunner', 'job_config', 'authenticated', ARRAY[]::name[], 'authenticated: nothing on job_config');
SELECT table_privs_are('jobrunner', 'job_config', 'anon', ARRAY[]::name[], 'anon: nothing on job_config');
SELECT table_privs_are('jobrunner', 'rate_bucket', 'authenticated', ARRAY[]::name[], 'authenticated: nothing on rate_bucket');
SELECT table_privs_are('jobrunner', 'schedule', 'authenticated', ARRAY[]::name[], 'authenticated: nothing on schedule');
SELECT table_privs_are('jobrunner', 'job_stats', 'authenticated', ARRAY['SELECT'], 'authenticated: SELECT on job_stats');
SELECT table_privs_are('jobrunner', 'recent_failures', 'authenticated', ARRAY['SELECT'], 'authenticated: SELECT on recent_failures');

SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace
         AND p.proname IN ('queue_job_for', 'mint_user_jwt', 'schedule_job', 'unschedule_job')
         AND (has_function_privilege('authenticated', p.oid, 'EXECUTE')
              OR has_function_privilege('anon', p.oid, 'EXECUTE')
              OR has_function_privilege('mallory', p.oid, 'EXECUTE'))$$,
    'admin functions: no EXECUTE for authenticated, anon or mallory');
SELECT set_eq(
    $$SELECT p.proname::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.proname LIKE '\_%'
         AND has_function_privilege('authenticated', p.oid, 'EXECUTE')$$,
    ARRAY['_caller', '_caller_context', '_outer_role'],
    'internal functions: authenticated may execute only _caller, _caller_context and _outer_role');
SELECT set_eq(
    $$SELECT p.proname::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.proname NOT LIKE '\_%'
         AND has_function_privilege('authenticated', p.oid, 'EXECUTE')$$,
    ARRAY['queue_job', 'dequeue_job', 'cancel_job', 'retry_job', 'complete_job', 'fail_job', 'sign_jwt', 'worker_status',
          'explain_job', 'resume_dispatch', 'retry_jobs', 'destination_health'],
    'public functions authenticated may execute (resume_dispatch, retry_jobs and destination_health check for an admin themselves)');

------------------------------------------------------------------------------
-- SECURITY DEFINER functions pin search_path.
------------------------------------------------------------------------------
SELECT cmp_ok((SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.prosecdef),
              '>=', 8, 'the state-changing public functions are SECURITY DEFINER');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.prosecdef
         AND NOT COALESCE('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)$$,
    'every SECURITY DEFINER function has search_path = pg_catalog, pg_temp');
-- C functions pin it too, but for the few called per job that run no SQL
-- and resolve no names (a SET clause costs a settings save and restore per
-- call): exactly these.
SELECT set_eq(
    $$SELECT p.oid::regprocedure::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')
         AND NOT COALESCE('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)$$,
    ARRAY['jobrunner._caller_context()', 'jobrunner._here()', 'jobrunner._max_request_bytes()',
          'jobrunner._outer_role()', 'jobrunner._retry_delay(integer,interval,interval,bigint)',
          'jobrunner._stored_size(jsonb)', 'jobrunner._wake_at_commit()'],
    'every C function has search_path = pg_catalog, pg_temp, but the pure ones called per job');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'jobrunner'::regnamespace
                        AND p.prosecdef AND p.proname LIKE '\_%' AND p.proname <> '_run_schedule'),
          'no internal function but _run_schedule runs as its owner');

------------------------------------------------------------------------------
-- What authenticated (through authenticator, as PostgREST does) cannot do.
------------------------------------------------------------------------------
SET SESSION AUTHORIZATION authenticator;
SET ROLE authenticated;
SET LOCAL request.jwt.claims = '{"sub": "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "role": "authenticated"}';

SELECT throws_ok($$SELECT * FROM jobrunner.job_config$$, '42501', NULL, 'cannot SELECT job_config');
SELECT throws_ok($$INSERT INTO jobrunner.job_config (job_name, url) VALUES ('evil', 'http://evil.example.com/')$$,
                 '42501', NULL, 'cannot INSERT job_config');
SELECT throws_ok($$UPDATE jobrunner.job_config SET url = 'http://evil.example.com/'$$, '42501', NULL, 'cannot UPDATE job_config');
SELECT throws_ok($$DELETE FROM jobrunner.job_config$$, '42501', NULL, 'cannot DELETE job_config');
SELECT throws_ok($$INSERT INTO jobrunner.job (user_id, user_role, job_name, max_retries)
                   VALUES ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'authenticated', 'tap.priv', 0)$$,
                 '42501', NULL, 'cannot INSERT job');
SELECT throws_ok($$UPDATE jobrunner.job SET state = 'completed'$$, '42501', NULL, 'cannot UPDATE job');
SELECT throws_ok($$DELETE FROM jobrunner.job$$, '42501', NULL, 'cannot DELETE job');
-- job_logs is a view: it cannot be inserted into or updated at all, and
-- only administrators may DELETE from it; the table under it refuses
-- writes as job does.
SELECT throws_ok($$INSERT INTO jobrunner.job_logs (job_id, log_level, log_message)
                   VALUES ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'info', 'forged')$$,
                 '55000', NULL, 'cannot INSERT job_logs');
SELECT throws_ok($$UPDATE jobrunner.job_logs SET log_message = 'x'$$, '55000', NULL, 'cannot UPDATE job_logs');
SELECT throws_ok($$DELETE FROM jobrunner.job_logs$$, '42501', NULL, 'cannot DELETE job_logs');
SELECT throws_ok($$INSERT INTO jobrunner.job_log_entry (job_id, log_level, log_message)
                   VALUES ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'info', 'forged')$$,
                 '42501', NULL, 'cannot INSERT job_log_entry');
SELECT throws_ok($$UPDATE jobrunner.job_log_entry SET log_message = 'x'$$, '42501', NULL, 'cannot UPDATE job_log_entry');
SELECT throws_ok($$DELETE FROM jobrunner.job_log_entry$$, '42501', NULL, 'cannot DELETE job_log_entry');
SELECT throws_ok($$TRUNCATE jobrunner.job_log_entry$$, '42501', NULL, 'cannot TRUNCATE job_log_entry');
SELECT throws_ok($$SELECT pg_catalog.nextval('jobrunner.job_log_entry_id_seq')$$, '42501', NULL,
                 'cannot draw log ids');
SELECT throws_ok($$TRUNCATE jobrunner.job$$, '42501', NULL, 'cannot TRUNCATE job');
SELECT throws_ok($$SELECT * FROM jobrunner.rate_bucket$$, '42501', NULL, 'cannot SELECT rate_bucket');
SELECT throws_ok($$SELECT * FROM jobrunner.schedule$$, '42501', NULL, 'cannot SELECT schedule');

SELECT throws_ok($$SELECT jobrunner.queue_job_for('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'service_role', NULL, 'tap.priv')$$,
                 '42501', NULL, 'cannot call queue_job_for');
SELECT throws_ok($$SELECT jobrunner.mint_user_jwt('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'service_role', NULL)$$,
                 '42501', NULL, 'cannot call mint_user_jwt');
SELECT throws_ok($$SELECT jobrunner.schedule_job('s', '* * * * *', 'tap.priv')$$, '42501', NULL, 'cannot call schedule_job');
SELECT throws_ok($$SELECT jobrunner.unschedule_job('s')$$, '42501', NULL, 'cannot call unschedule_job');
SELECT throws_ok($$SELECT * FROM jobrunner._claim(100, 1)$$, '42501', NULL, 'cannot call _claim');
SELECT throws_ok($$SELECT jobrunner._record(1, '{}', '{}', '{}', '{}', '{}', '{}', '{}')$$, '42501', NULL, 'cannot call _record');
SELECT throws_ok($$SELECT jobrunner._recover(1)$$, '42501', NULL, 'cannot call _recover');
SELECT throws_ok($$SELECT jobrunner._expire_leases()$$, '42501', NULL, 'cannot call _expire_leases');
SELECT throws_ok($$SELECT jobrunner._purge(interval '0', interval '0', 1000)$$, '42501', NULL, 'cannot call _purge');
SELECT throws_ok($$SELECT jobrunner._enqueue('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'service_role', NULL, 'tap.priv',
                                             '{}', 0, NULL, NULL, NULL, 0)$$,
                 '42501', NULL, 'cannot call _enqueue (and so choose an owner)');
SELECT throws_ok($$SELECT jobrunner._run_schedule('s')$$, '42501', NULL, 'cannot call _run_schedule');
SELECT throws_ok($$SELECT jobrunner._wake_at_commit()$$, '42501', NULL, 'cannot call _wake_at_commit');
SELECT throws_ok(format('SELECT jobrunner._settle_ok(j, 200, NULL, 1, %L) FROM jobrunner.job j', 'x'),
                 '42501', NULL, 'cannot call _settle_ok');
SELECT throws_ok($$SELECT jobrunner._run_hook('pg_catalog.now()'::regprocedure, NULL::jobrunner.job)$$,
                 '42501', NULL, 'cannot call _run_hook');

-- What it can do: the public functions, and the two that row-level security needs.
SELECT lives_ok($$SELECT * FROM jobrunner._caller()$$, 'can call _caller');
SELECT is((SELECT user_id FROM jobrunner._caller()), 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'::uuid, '_caller gives the believed sub');
SELECT is((SELECT is_admin FROM jobrunner._caller()), false, '_caller: authenticated is not an admin');
SELECT is(jobrunner._outer_role(), 'authenticated'::regrole::oid, '_outer_role is the role set by SET ROLE');
SELECT lives_ok($$SELECT jobrunner.queue_job('tap.priv')$$, 'can queue its own job');
SELECT lives_ok($$SELECT * FROM jobrunner.worker_status()$$, 'can read worker_status');
SELECT lives_ok($$SELECT jobrunner.sign_jwt('{"a": 1}', repeat('k', 32))$$, 'can sign with its own secret');

------------------------------------------------------------------------------
-- The signing secret is not visible to non-superusers.
------------------------------------------------------------------------------
SELECT throws_ok($$SHOW jobrunner.jwt_secret$$, '42501', NULL, 'SHOW jobrunner.jwt_secret is refused');
SELECT throws_ok($$SELECT current_setting('jobrunner.jwt_secret')$$, '42501', NULL, 'current_setting() is refused');
SELECT throws_ok($$SELECT current_setting('jobrunner.jwt_secret', true)$$, '42501', NULL, 'current_setting(missing_ok) is refused');
SELECT is((SELECT count(*)::int FROM pg_settings WHERE name = 'jobrunner.jwt_secret'), 0, 'not in pg_settings');
SELECT throws_ok($$SET jobrunner.jwt_secret = 'attacker-chosen-secret-0123456789abcdef'$$, '42501', NULL,
                 'cannot set the secret');
SELECT throws_ok($$SET jobrunner.trusted_claim_roles = 'mallory'$$, '42501', NULL, 'cannot widen trusted_claim_roles');
RESET ROLE;
RESET SESSION AUTHORIZATION;
-- Even a role allowed to read all settings sees it masked.
SET ROLE jr_settings_reader;
SELECT is(current_setting('jobrunner.jwt_secret'), '(hidden)', 'pg_read_all_settings sees (hidden)');
RESET ROLE;

------------------------------------------------------------------------------
-- The untrusted login role.
------------------------------------------------------------------------------
SET SESSION AUTHORIZATION mallory;
SELECT throws_ok($$SET ROLE authenticated$$, '42501', NULL, 'mallory cannot become authenticated');
SELECT throws_ok($$SELECT * FROM jobrunner.job_config$$, '42501', NULL, 'mallory cannot read job_config');
SELECT throws_ok($$SELECT jobrunner.mint_user_jwt('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'service_role', NULL)$$,
                 '42501', NULL, 'mallory cannot mint tokens');
SELECT throws_ok($$SELECT * FROM jobrunner._claim(100, 1)$$, '42501', NULL, 'mallory cannot claim jobs');
RESET SESSION AUTHORIZATION;

------------------------------------------------------------------------------
-- An admin by grant: EXECUTE on queue_job_for makes a role an administrator.
------------------------------------------------------------------------------
CREATE ROLE jr_admin NOLOGIN;
GRANT EXECUTE ON FUNCTION jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int, text) TO jr_admin;
SET ROLE jr_admin;
SELECT is((SELECT is_admin FROM jobrunner._caller()), true, 'a role with EXECUTE on queue_job_for is an admin');
SELECT is((SELECT count(*)::int FROM jobrunner.job), 2, 'the admin sees every user''s jobs');
SELECT lives_ok(format('SELECT jobrunner.queue_job_for(%L, %L, NULL, %L)', 'cccccccc-cccc-4ccc-8ccc-cccccccccccc',
                       'authenticated', 'tap.priv'), 'the admin queues for a user');
SELECT is(jobrunner.dequeue_job(:'job_a'), true, 'the admin cancels another user''s job');
SELECT throws_ok($$SELECT * FROM jobrunner.job_config$$, '42501', NULL, 'the admin role still cannot read job_config');
RESET ROLE;

-- A role the DBA lets write job_config wakes the worker through the table's
-- trigger, with no grant on the internal functions.
CREATE ROLE jr_config_writer NOLOGIN;
GRANT SELECT, UPDATE ON jobrunner.job_config TO jr_config_writer;
SET ROLE jr_config_writer;
SELECT lives_ok($$UPDATE jobrunner.job_config SET enabled = false WHERE job_name = 'tap.priv'$$,
                'a role granted UPDATE on job_config can change it');
SELECT throws_ok($$SELECT jobrunner._wake_at_commit()$$, '42501', NULL,
                 'and still cannot call the internal wake-up');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
