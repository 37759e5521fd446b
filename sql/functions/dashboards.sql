-- dashboards.sql — views for watching the queue (security invoker: each
-- caller sees only the jobs row-level security lets it see).

-- public API
CREATE OR REPLACE VIEW jobrunner.job_stats WITH (security_invoker = true) AS
-- Job names come from the indexes, never from a scan of the table: a skip
-- scan over pending jobs, the running ones, and one grouped pass over those
-- finished in the hour. (Grouping first keeps the row estimates small, so
-- the planner neither loops per finished row nor reaches for JIT.)
WITH RECURSIVE pending_names AS (
    (SELECT j.job_name FROM jobrunner.job j
      WHERE j.state = 'pending' ORDER BY j.job_name LIMIT 1)
    UNION ALL
    SELECT (SELECT j.job_name FROM jobrunner.job j
             WHERE j.state = 'pending' AND j.job_name > p.job_name
             ORDER BY j.job_name LIMIT 1)
      FROM pending_names p
     WHERE p.job_name IS NOT NULL
), recent AS (
    SELECT j.job_name,
           count(*) FILTER (WHERE j.state = 'completed') AS completed_last_hour,
           count(*) FILTER (WHERE j.state = 'failed') AS failed_last_hour,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY EXTRACT(epoch FROM j.finished_at - j.last_run_at) * 1000)
               FILTER (WHERE j.state = 'completed') AS p50_ms,
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY EXTRACT(epoch FROM j.finished_at - j.last_run_at) * 1000)
               FILTER (WHERE j.state = 'completed') AS p95_ms
      FROM jobrunner.job j
     WHERE j.finished_at > now() - interval '1 hour'
     GROUP BY j.job_name
), names AS (
    SELECT p.job_name FROM pending_names p WHERE p.job_name IS NOT NULL
    UNION
    SELECT j.job_name FROM jobrunner.job j WHERE j.state = 'running'
    UNION
    SELECT r.job_name FROM recent r
)
SELECT n.job_name,
       p.pending,
       (SELECT count(*) FROM jobrunner.job j WHERE j.job_name = n.job_name AND j.state = 'running') AS running,
       COALESCE(r.completed_last_hour, 0) AS completed_last_hour,
       COALESCE(r.failed_last_hour, 0) AS failed_last_hour,
       r.p50_ms,
       r.p95_ms,
       now() - p.oldest_created_at AS oldest_pending_age
  FROM names n
  LEFT JOIN recent r ON r.job_name = n.job_name
  CROSS JOIN LATERAL (
        SELECT count(*) AS pending, min(j.created_at) AS oldest_created_at
          FROM jobrunner.job j
         WHERE j.job_name = n.job_name AND j.state = 'pending') p;
COMMENT ON VIEW jobrunner.job_stats IS
    'per job name: pending, running, completed and failed in the last hour, p50/p95 run time, oldest pending age (your own jobs; admins see all)';

-- public API
-- error_group: the error with its figures taken out ("HTTP 503", "timed
-- out after N ms"), and jobs_with_this_error how many of the rows share it
-- with this one's job name, so a dashboard groups by what broke. (Columns
-- are only ever added here: views keep the ones they had.)
CREATE OR REPLACE VIEW jobrunner.recent_failures WITH (security_invoker = true) AS
SELECT f.*, count(*) OVER (PARTITION BY f.job_name, f.error_group) AS jobs_with_this_error
  FROM (SELECT j.id, j.job_name, j.user_id, j.state, j.attempts, j.last_status, j.last_error,
               j.updated_at, j.next_run_at,
               CASE WHEN j.last_error ~ '^HTTP [0-9]{3}'
                    THEN pg_catalog.substring(j.last_error, '^HTTP [0-9]{3}')
                    ELSE pg_catalog.left(pg_catalog.regexp_replace(j.last_error, '[0-9]+', 'N', 'g'), 200)
               END AS error_group
          FROM jobrunner.job j
         WHERE j.last_error IS NOT NULL AND j.updated_at > now() - interval '1 day'
           AND j.state IN ('failed', 'pending')) f;
COMMENT ON VIEW jobrunner.recent_failures IS
    'failed jobs and jobs waiting to retry, with their last error, from the last day, grouped by what broke (error_group, jobs_with_this_error)';
