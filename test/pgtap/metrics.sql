-- metrics: who may read the figures postgres_exporter scrapes (pg_monitor
-- and superusers, not PUBLIC: job names are administrators' data), what
-- metrics_queue() counts (every user's jobs, whatever row-level security
-- shows the caller), what metrics_worker() and metrics() say where no
-- dispatcher serves the database (this one), and the due_at _claim hands
-- the worker for the commit-to-request histogram. The figures a running
-- dispatcher keeps are checked against a live exporter by
-- test/monitoring/run.sh.
BEGIN;
SELECT plan(21);
SET LOCAL client_min_messages = warning;

CREATE ROLE jr_monitor NOLOGIN IN ROLE pg_monitor;

DELETE FROM jobrunner.job_log_entry;
DELETE FROM jobrunner.job;
DELETE FROM jobrunner.job_config;
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit)
VALUES ('tap.m1', 'http://localhost/m1', 100), ('tap.m2', 'http://localhost/m2', 100),
       ('tap.idle', 'http://localhost/idle', 100);

------------------------------------------------------------------------------
-- Grants.
------------------------------------------------------------------------------
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace
         AND p.proname IN ('metrics', 'metrics_queue', 'metrics_worker', '_count_finished')
         AND (has_function_privilege('authenticated', p.oid, 'EXECUTE')
              OR has_function_privilege('anon', p.oid, 'EXECUTE')
              OR has_function_privilege('mallory', p.oid, 'EXECUTE'))$$,
    'metrics functions: no EXECUTE for authenticated, anon or mallory');
SELECT set_eq(
    $$SELECT p.proname::text FROM pg_proc p
       WHERE p.pronamespace = 'jobrunner'::regnamespace
         AND p.proname IN ('metrics', 'metrics_queue', 'metrics_worker', '_count_finished')
         AND has_function_privilege('pg_monitor', p.oid, 'EXECUTE')$$,
    ARRAY['metrics', 'metrics_queue', 'metrics_worker'],
    'pg_monitor may call the three metrics functions, not _count_finished');
SELECT ok((SELECT p.prosecdef FROM pg_proc p WHERE p.oid = 'jobrunner.metrics_queue()'::regprocedure),
          'metrics_queue runs as its owner (it counts every user''s jobs)');

------------------------------------------------------------------------------
-- Jobs of two users: tap.m1 has 2 due and 1 delayed pending, 1 running;
-- tap.m2 has 1 running; tap.idle has none.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', NULL, 'tap.m1', '{"n": 1}') AS m1_run \gset
SELECT jobrunner.queue_job_for('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'authenticated', NULL, 'tap.m2', '{"n": 2}') AS m2_run \gset
SELECT is((SELECT count(*)::int FROM jobrunner._claim(10, 42)), 2, 'the worker claims one job of each name');
SELECT jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', NULL, 'tap.m1', '{"n": 3}') AS m1_due \gset
SELECT jobrunner.queue_job_for('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'authenticated', NULL, 'tap.m1', '{"n": 4}') AS m1_due2 \gset
SELECT jobrunner.queue_job_for('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'authenticated', NULL, 'tap.m1', '{"n": 5}',
                               _run_at => now() + interval '1 hour') AS m1_later \gset
-- The due ones have waited: one since 10 minutes, one since 3.
UPDATE jobrunner.job SET created_at = now() - interval '10 minutes', next_run_at = now() - interval '10 minutes'
 WHERE id = :'m1_due';
UPDATE jobrunner.job SET created_at = now() - interval '20 minutes', next_run_at = now() - interval '3 minutes'
 WHERE id = :'m1_due2';
UPDATE jobrunner.job SET created_at = now() - interval '30 minutes' WHERE id = :'m1_later';

------------------------------------------------------------------------------
-- Who may read them.
------------------------------------------------------------------------------
SET LOCAL ROLE mallory;
SELECT throws_ok($$SELECT * FROM jobrunner.metrics_queue()$$, '42501', NULL, 'mallory may not read metrics_queue()');
SELECT throws_ok($$SELECT * FROM jobrunner.metrics()$$, '42501', NULL, 'nor metrics()');
SELECT throws_ok($$SELECT * FROM jobrunner.metrics_worker()$$, '42501', NULL, 'nor metrics_worker()');
SELECT throws_ok($$SELECT jobrunner._count_finished(ARRAY['tap.m1'], ARRAY['completed'])$$, '42501', NULL,
                 'nor count anything');
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT throws_ok($$SELECT * FROM jobrunner.metrics_queue()$$, '42501', NULL, 'a PostgREST user may not either');
RESET ROLE;

------------------------------------------------------------------------------
-- metrics_queue(), as a pg_monitor member: every user's jobs.
------------------------------------------------------------------------------
SET LOCAL ROLE jr_monitor;
SELECT is((SELECT count(*)::int FROM jobrunner.job), 0, 'row-level security shows jr_monitor no job');
SELECT results_eq(
    $$SELECT job_name, pending::int, due_waiting::int, running::int FROM jobrunner.metrics_queue() ORDER BY job_name$$,
    $$VALUES ('tap.idle', 0, 0, 0), ('tap.m1', 3, 2, 1), ('tap.m2', 0, 0, 1)$$,
    'metrics_queue: every configured name, pending (delayed ones too), due and waiting, running');
SELECT ok((SELECT oldest_pending_age_seconds BETWEEN 30 * 60 - 5 AND 30 * 60 + 5
             FROM jobrunner.metrics_queue() WHERE job_name = 'tap.m1'),
          'oldest pending age counts from created_at, delayed jobs too (30 minutes)');
SELECT ok((SELECT oldest_due_wait_seconds BETWEEN 10 * 60 - 5 AND 10 * 60 + 5
             FROM jobrunner.metrics_queue() WHERE job_name = 'tap.m1'),
          'oldest due wait counts from when a job became due (10 minutes, not 20)');
SELECT is((SELECT oldest_pending_age_seconds + oldest_due_wait_seconds FROM jobrunner.metrics_queue()
            WHERE job_name = 'tap.idle'), 0::float8, 'ages are 0 for a name with nothing pending');
SELECT is((SELECT database FROM jobrunner.metrics_queue() WHERE job_name = 'tap.m2'), current_database()::text,
          'rows name the database');

------------------------------------------------------------------------------
-- Where no dispatcher serves the database (jobrunner_tap is not listed).
------------------------------------------------------------------------------
SELECT results_eq(
    $$SELECT database = current_database(), up, paused, read_only, in_flight, job_names, job_names_max
        FROM jobrunner.metrics_worker()$$,
    $$VALUES (true, false, false, false, 0, 0, 64)$$,
    'metrics_worker: down, not paused, nothing in flight, the cap on job names');
SELECT ok((SELECT start_time_seconds IS NULL AND last_loop_age_seconds IS NULL FROM jobrunner.metrics_worker()),
          'no start time or loop age without a dispatcher');
SELECT is_empty($$SELECT * FROM jobrunner.metrics()$$, 'metrics: no rows where nothing is counted');
RESET ROLE;
SELECT is(jobrunner._count_finished(ARRAY['tap.m1'], ARRAY['completed']), 0,
          '_count_finished counts nothing where no dispatcher serves the database');

------------------------------------------------------------------------------
-- _claim hands the worker when each job became due.
------------------------------------------------------------------------------
UPDATE jobrunner.job SET state = 'completed', finished_at = now() WHERE state = 'running';
UPDATE jobrunner.job SET next_run_at = now() - interval '1 minute', due = true WHERE id = :'m1_later';
CREATE TEMP TABLE claimed AS SELECT c.id, c.due_at FROM jobrunner._claim(10, 42) c;
SELECT is((SELECT count(*)::int FROM claimed c JOIN jobrunner.job j ON j.id = c.id
            WHERE c.due_at = GREATEST(j.created_at, j.next_run_at)
              AND j.id IN (:'m1_due', :'m1_due2', :'m1_later')), 3,
          '_claim: due_at is the later of created_at and next_run_at, for the three due jobs');
SELECT is((SELECT round(EXTRACT(epoch FROM now() - c.due_at)) FROM claimed c WHERE c.id = :'m1_later'), 60::numeric,
          'a delayed job is due from its run_at (1 minute ago), not from when it was queued (30)');

SELECT * FROM finish();
ROLLBACK;
