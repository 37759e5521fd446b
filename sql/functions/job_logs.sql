-- job_logs.sql — a job's history, one row per transition. Rows that say
-- something of their own are stored (jobrunner.job_log_entry); those that
-- repeat what is already written elsewhere are shown from there:
--   "created"            from the job row (created_log_id, created_at);
--   "started attempt N"  from the first row stored for that attempt
--                        (started_id, started_at), or, while the attempt
--                        has none, from the job row (started_log_id,
--                        last_run_at);
--   "completed with status S"  when the worker completed the job, from
--                        the job row (finished_log_id, last_status,
--                        last_duration_ms, finished_at).
-- A job completed at its first attempt stores no log row at all.
-- Their ids come from the same sequence as the stored rows', drawn when the
-- transition happened, so ordering by id is ordering by transition.
-- Rows stored before 0.2.0 (and "created" rows saying more than that, such
-- as a coalesced body's) are stored as they are.
--
-- security_invoker: the rows are read as the querying role, so the policies
-- of jobrunner.job and jobrunner.job_log_entry decide what she sees.
-- A stored row gives itself and the "started" row it carries in one scan
-- (the policy of job_log_entry is checked once per stored row); each kind
-- of row a job stands for is a plain scan of job, cheaper than expanding
-- every job row into three. A qual on job_id reaches each table's key.
CREATE OR REPLACE VIEW jobrunner.job_logs WITH (security_invoker = true) AS
SELECT v.id, e.job_id, e.attempt, v.log_level, v.log_message, v.status_code, v.duration_ms, v.created_at
  FROM jobrunner.job_log_entry e
 CROSS JOIN LATERAL (VALUES
        (e.started_id, 'info', 'started attempt ' || e.attempt, NULL::int, NULL::double precision, e.started_at),
        (e.id, e.log_level, e.log_message, e.status_code, e.duration_ms, e.created_at)
       ) AS v(id, log_level, log_message, status_code, duration_ms, created_at)
 WHERE v.id IS NOT NULL
UNION ALL
SELECT j.created_log_id, j.id, 0, 'info', 'created', NULL, NULL, j.created_at
  FROM jobrunner.job j
 WHERE j.created_log_id IS NOT NULL
UNION ALL
SELECT j.started_log_id, j.id, j.attempt_seq, 'info', 'started attempt ' || j.attempt_seq, NULL, NULL,
       j.last_run_at
  FROM jobrunner.job j
 WHERE j.started_log_id IS NOT NULL
UNION ALL
SELECT j.finished_log_id, j.id, j.attempt_seq, 'info', 'completed with status ' || j.last_status, j.last_status,
       j.last_duration_ms, j.finished_at
  FROM jobrunner.job j
 WHERE j.finished_log_id IS NOT NULL;
COMMENT ON VIEW jobrunner.job_logs IS
    'one row per transition of a job (created, started attempt N, its outcome, canceled, retried by hand); users read the logs of their own jobs';

-- Administrators may still clear logs with DELETE, as when job_logs was a
-- table (users may not: they have no DELETE on it). A stored row is
-- deleted; a row shown from a job row or carried by a stored one is
-- forgotten there.
CREATE OR REPLACE FUNCTION jobrunner._delete_job_log() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM jobrunner.job_log_entry e WHERE e.job_id = OLD.job_id AND e.id = OLD.id;
    IF NOT FOUND THEN
        UPDATE jobrunner.job_log_entry e SET started_id = NULL, started_at = NULL
         WHERE e.job_id = OLD.job_id AND e.started_id = OLD.id;
    END IF;
    IF NOT FOUND THEN
        UPDATE jobrunner.job j
           SET created_log_id = NULLIF(j.created_log_id, OLD.id),
               started_log_id = NULLIF(j.started_log_id, OLD.id),
               finished_log_id = NULLIF(j.finished_log_id, OLD.id)
         WHERE j.id = OLD.job_id AND OLD.id IN (j.created_log_id, j.started_log_id, j.finished_log_id);
    END IF;
    RETURN OLD;
END;
$$;
COMMENT ON FUNCTION jobrunner._delete_job_log() IS
    'internal: DELETE on job_logs removes a stored row, or forgets a row shown from the job row';
CREATE OR REPLACE TRIGGER job_logs_delete INSTEAD OF DELETE ON jobrunner.job_logs
    FOR EACH ROW EXECUTE FUNCTION jobrunner._delete_job_log();
