-- observability: worker_status(), the job_stats and recent_failures views,
-- and schedule_job's error without pg_cron.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

------------------------------------------------------------------------------
-- worker_status(): one row, about the dispatcher of the database it is asked
-- in (none serves this one), consistent whether or not one runs.
------------------------------------------------------------------------------
SELECT count(*) AS rows FROM jobrunner.worker_status();
SELECT running = (pid IS NOT NULL) AS pid_iff_running,
       running = (started_at IS NOT NULL) AS started_at_iff_running,
       NOT running OR started_at <= now() AS started_in_the_past,
       in_flight >= 0 AND dispatched >= 0 AND completed >= 0 AND failed >= 0 AS counters_not_negative,
       database_name = current_database() AS reports_this_database,
       -- No dispatcher serves the regression database (it is not listed).
       NOT running AND paused_reason LIKE 'no pg_jobrunner worker serves this database%' AS says_why_not
  FROM jobrunner.worker_status();
-- When it runs, pid is the worker's backend.
SELECT NOT w.running OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.pid) AS pid_is_live
  FROM jobrunner.worker_status() w;

------------------------------------------------------------------------------
-- job_stats: per job name, pending, running, completed and failed in the
-- last hour, p50/p95 run time, age of the oldest pending job.
------------------------------------------------------------------------------
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit)
VALUES ('ob.a', 'http://localhost/a', 100), ('ob.b', 'http://localhost/b', 100), ('ob.c', 'http://localhost/c', 100);
-- ob.a: 2 pending, 1 running, 4 completed (100..400 ms), 1 failed.
SELECT count(*) AS queued FROM generate_series(1, 8) n,
       LATERAL jobrunner.queue_job_for(NULL, NULL, NULL, 'ob.a', jsonb_build_object('n', n),
                                       _run_at => now() - interval '1 minute' + interval '1 ms' * n);
SELECT count(*) AS claimed FROM jobrunner._claim(6, 42);
UPDATE jobrunner.job SET state = 'completed', finished_at = now(), last_run_at = now() - interval '100 ms' * (request_body ->> 'n')::int
 WHERE job_name = 'ob.a' AND state = 'running' AND (request_body ->> 'n')::int BETWEEN 1 AND 4;
UPDATE jobrunner.job SET state = 'failed', finished_at = now(), last_error = 'HTTP 500', last_status = 500
 WHERE job_name = 'ob.a' AND state = 'running' AND (request_body ->> 'n')::int = 5;
UPDATE jobrunner.job SET created_at = now() - interval '2 hours' WHERE job_name = 'ob.a' AND state = 'pending';
-- ob.b: one job completed two hours ago (outside the hour), nothing active.
SELECT count(*) AS queued FROM jobrunner.queue_job_for(NULL, NULL, NULL, 'ob.b');
UPDATE jobrunner.job SET state = 'completed', last_run_at = now() - interval '2 hours', finished_at = now() - interval '2 hours'
 WHERE job_name = 'ob.b';
-- ob.c: one pending job.
SELECT count(*) AS queued FROM jobrunner.queue_job_for(NULL, NULL, NULL, 'ob.c');
SELECT job_name, pending, running, completed_last_hour, failed_last_hour,
       round(p50_ms::numeric) AS p50_ms, round(p95_ms::numeric) AS p95_ms,
       oldest_pending_age >= interval '2 hours' AS oldest_pending_2h
  FROM jobrunner.job_stats ORDER BY job_name;

------------------------------------------------------------------------------
-- recent_failures: failed jobs and jobs waiting to retry, from the last day.
------------------------------------------------------------------------------
SELECT count(*) AS queued FROM generate_series(1, 3) n,
       LATERAL jobrunner.queue_job_for(NULL, NULL, NULL, 'ob.c', jsonb_build_object('f', n));
SELECT count(*) AS claimed FROM jobrunner._claim(100, 42) WHERE request_body LIKE '%"f"%';
-- f1 fails and will be retried, f2 fails for good, f3 completes.
SELECT jobrunner.fail_job(id, 'timeout after 30s') FROM jobrunner.job WHERE request_body ->> 'f' = '1';
SELECT jobrunner.fail_job(id, 'HTTP 400', _retry => false) FROM jobrunner.job WHERE request_body ->> 'f' = '2';
SELECT jobrunner.complete_job(id) FROM jobrunner.job WHERE request_body ->> 'f' = '3';
SELECT job_name, state, attempts, last_error FROM jobrunner.recent_failures ORDER BY last_error;
-- Older than a day: gone from the view.
UPDATE jobrunner.job SET updated_at = now() - interval '2 days' WHERE last_error = 'HTTP 500';
SELECT job_name, state, last_error FROM jobrunner.recent_failures ORDER BY last_error;

------------------------------------------------------------------------------
-- schedule_job needs pg_cron, which this database does not have.
------------------------------------------------------------------------------
SELECT regress.err($$SELECT jobrunner.schedule_job('nightly', '0 3 * * *', 'ob.a')$$) AS without_pg_cron;
SELECT jobrunner.unschedule_job('nightly') AS unscheduled;

TRUNCATE jobrunner.job, jobrunner.job_log_entry, jobrunner.rate_bucket;
DELETE FROM jobrunner.job_config;
