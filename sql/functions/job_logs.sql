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
CREATE OR REPLACE VIEW jobrunner.job_logs WITH (security_invoker = true) AS
SELECT e.id, e.job_id, e.attempt, e.log_level, e.log_message, e.status_code, e.duration_ms, e.created_at
  FROM jobrunner.job_log_entry e
UNION ALL
SELECT e.started_id, e.job_id, e.attempt, 'info', 'started attempt ' || e.attempt, NULL, NULL, e.started_at
  FROM jobrunner.job_log_entry e
 WHERE e.started_id IS NOT NULL
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
