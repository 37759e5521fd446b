-- privileges.sql — who may read and call what: row-level security on the
-- job tables, SELECT on what users may watch, EXECUTE on the public API.
-- Replayed by every install and update script, so it states the whole
-- intended set, not a change.

GRANT USAGE ON SCHEMA jobrunner TO PUBLIC;

ALTER TABLE jobrunner.job ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobrunner.job_log_entry ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS job_read_own ON jobrunner.job;
-- A user reads her own jobs; an endpoint, with the token minted for an
-- attempt, reads that attempt's job (a system job has no user to match).
CREATE POLICY job_read_own ON jobrunner.job FOR SELECT TO PUBLIC
    USING (user_id = (SELECT c.user_id FROM jobrunner._caller() c)
           OR id = (SELECT c.job_id FROM jobrunner._caller() c)
           OR (SELECT c.is_admin FROM jobrunner._caller() c));
-- The logs of the jobs she may read. job_logs reads its rows as the
-- querying role (security_invoker), so both policies apply to it.
DROP POLICY IF EXISTS job_log_entry_read_own ON jobrunner.job_log_entry;
CREATE POLICY job_log_entry_read_own ON jobrunner.job_log_entry FOR SELECT TO PUBLIC
    USING (EXISTS (SELECT 1 FROM jobrunner.job j WHERE j.id = job_log_entry.job_id));

REVOKE ALL ON ALL TABLES IN SCHEMA jobrunner FROM PUBLIC;
GRANT SELECT ON jobrunner.job, jobrunner.job_logs, jobrunner.job_log_entry, jobrunner.job_stats,
                jobrunner.recent_failures,
                jobrunner.destinations  -- for admins: destination_health() checks
TO PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA jobrunner FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    jobrunner.queue_job(text, jsonb, int, timestamptz, text, text, int, text, text, text),
    jobrunner.dequeue_job(uuid),
    jobrunner.cancel_job(uuid),
    jobrunner.retry_job(uuid),
    jobrunner.complete_job(uuid, jsonb, int),
    jobrunner.fail_job(uuid, text, boolean, int),
    jobrunner.sign_jwt(jsonb, text),
    jobrunner.worker_status(),
    jobrunner.explain_job(uuid),
    jobrunner.resume_dispatch(),  -- checks for an admin itself
    jobrunner.retry_jobs(text, timestamptz, text),  -- likewise
    jobrunner.destination_health(),  -- likewise
    -- row-level security policies evaluate these as the querying role
    jobrunner._caller(),
    jobrunner._caller_context(),
    jobrunner._outer_role()
TO PUBLIC;
