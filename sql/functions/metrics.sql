-- metrics.sql — what Prometheus reads through postgres_exporter
-- (monitoring/postgres_exporter.yml): counters and latency histograms per
-- job name from shared memory (metrics), the queue's state per job name
-- from the partial indexes (metrics_queue), and the dispatcher's state
-- (metrics_worker). Job names are administrators' data: these are for
-- pg_monitor (the role postgres_exporter's own setup grants) and
-- superusers, not for PUBLIC.

-- public API
CREATE OR REPLACE FUNCTION jobrunner.metrics(
        OUT database text, OUT job_name text, OUT attempts bigint, OUT retries bigint,
        OUT completed bigint, OUT failed bigint,
        OUT responses_2xx bigint, OUT responses_3xx bigint, OUT responses_4xx bigint,
        OUT responses_5xx bigint, OUT responses_other bigint, OUT transport_errors bigint,
        OUT unsent bigint,
        OUT commit_to_request_seconds double precision[],
        OUT commit_to_request_seconds_bucket bigint[],
        OUT commit_to_request_seconds_sum double precision,
        OUT commit_to_request_seconds_count bigint,
        OUT request_duration_seconds double precision[],
        OUT request_duration_seconds_bucket bigint[],
        OUT request_duration_seconds_sum double precision,
        OUT request_duration_seconds_count bigint)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_metrics';
COMMENT ON FUNCTION jobrunner.metrics() IS
    'per job name, since the cluster started: attempts (retries: not a job''s first), jobs completed and failed for good, attempts by outcome (HTTP class, transport error, never sent), and histograms (upper bounds in seconds, cumulative counts, sum, count) of commit to request and request duration; for pg_monitor';

-- public API
CREATE OR REPLACE FUNCTION jobrunner.metrics_worker(
        OUT database text, OUT up boolean, OUT paused boolean, OUT read_only boolean,
        OUT standby boolean, OUT in_flight int, OUT start_time_seconds double precision,
        OUT last_loop_age_seconds double precision, OUT job_names int, OUT job_names_max int)
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_metrics_worker';
COMMENT ON FUNCTION jobrunner.metrics_worker() IS
    'this database''s dispatcher: running (up), running but not dispatching (paused; read_only when read-only mode is why), standby server, requests in flight, start time (Unix seconds), seconds since its last loop, job names counted by name and their cap; for pg_monitor';

-- public API: the queue, per job name (every configured one, and any other
-- with active jobs). One pass over job_pending_idx (an index-only scan:
-- created_at is in the index) and one over job_running_idx; finished jobs
-- are never read. SECURITY DEFINER: the counts cover every user's jobs,
-- which row-level security would hide from the exporter's role.
CREATE OR REPLACE FUNCTION jobrunner.metrics_queue(
        OUT database text, OUT job_name text, OUT pending bigint, OUT due_waiting bigint,
        OUT running bigint, OUT oldest_pending_age_seconds double precision,
        OUT oldest_due_wait_seconds double precision)
    RETURNS SETOF record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH p AS (
        SELECT j.job_name, count(*) AS pending,
               count(*) FILTER (WHERE j.next_run_at <= now()) AS due_waiting,
               min(j.created_at) AS oldest_created,
               min(GREATEST(j.created_at, j.next_run_at)) FILTER (WHERE j.next_run_at <= now()) AS oldest_due
          FROM jobrunner.job j
         WHERE j.state = 'pending'
         GROUP BY j.job_name
    ), r AS (
        SELECT j.job_name, count(*) AS running
          FROM jobrunner.job j
         WHERE j.state = 'running'
         GROUP BY j.job_name
    ), names AS (
        SELECT c.job_name FROM jobrunner.job_config c
        UNION SELECT p.job_name FROM p
        UNION SELECT r.job_name FROM r
    )
    SELECT pg_catalog.current_database()::text, n.job_name,
           COALESCE(p.pending, 0), COALESCE(p.due_waiting, 0), COALESCE(r.running, 0),
           COALESCE(EXTRACT(epoch FROM now() - p.oldest_created)::float8, 0),
           COALESCE(EXTRACT(epoch FROM now() - p.oldest_due)::float8, 0)
      FROM names n
      LEFT JOIN p ON p.job_name = n.job_name
      LEFT JOIN r ON r.job_name = n.job_name
$$;
COMMENT ON FUNCTION jobrunner.metrics_queue() IS
    'per job name: pending jobs, of which due (their time has come) and waiting, running jobs, age of the oldest pending job (from created_at), and how long the oldest due job has waited since it became due; for pg_monitor';

-- internal: count jobs that reached 'completed' or 'failed' in the metrics
-- when the calling transaction commits (nothing if it rolls back, nor for a
-- savepoint rolled back). Called where jobs finish (_record, _complete,
-- _settle_fail); returns how many it will count.
CREATE OR REPLACE FUNCTION jobrunner._count_finished(_job_names text[], _states text[]) RETURNS int
    LANGUAGE c VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_count_finished';
COMMENT ON FUNCTION jobrunner._count_finished(text[], text[]) IS
    'internal: count finished jobs in the metrics when the transaction commits';

REVOKE ALL ON FUNCTION jobrunner.metrics(), jobrunner.metrics_worker(), jobrunner.metrics_queue(),
                       jobrunner._count_finished(text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobrunner.metrics(), jobrunner.metrics_worker(), jobrunner.metrics_queue()
    TO pg_monitor;
