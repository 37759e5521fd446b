-- 0.1.0 → 0.2.0: catalog changes only. Functions, views and grants are
-- replayed after this from sql/functions/ (see scripts/build-sql.sh).

-- Attempt numbers that never repeat, the claim's view of due jobs, and
-- requests still on the wire (see the column comments in tables.sql).
ALTER TABLE jobrunner.job
    ADD COLUMN attempt_seq int NOT NULL DEFAULT 0,
    ADD COLUMN due boolean NOT NULL DEFAULT true,
    ADD COLUMN sending_attempt int,
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
-- Jobs that may be attempted again continue their numbering; completed ones
-- keep 0 (nothing fences them any more), so history is not rewritten.
UPDATE jobrunner.job j
   SET attempt_seq = j.attempts,
       due = NOT (j.state = 'pending' AND j.next_run_at > now())
 WHERE j.state <> 'completed' AND (j.attempts > 0 OR (j.state = 'pending' AND j.next_run_at > now()));

DROP INDEX jobrunner.job_pending_idx;
DROP INDEX jobrunner.job_pending_due_idx;
DROP INDEX jobrunner.job_running_idx;
CREATE INDEX job_pending_idx ON jobrunner.job
    (job_name, (COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid)),
     due DESC, priority DESC, next_run_at)
    INCLUDE (created_at)
    WHERE state = 'pending';
CREATE INDEX job_waiting_idx ON jobrunner.job (next_run_at) WHERE state = 'pending' AND NOT due;
CREATE INDEX job_running_idx ON jobrunner.job (lease_expires_at)
    WHERE state = 'running' OR sending_attempt = attempt_seq;
COMMENT ON COLUMN jobrunner.job.locked_by IS
    'worker incarnation that claimed the current attempt (fences late answers)';
COMMENT ON COLUMN jobrunner.job.attempt_seq IS
    'number of the current attempt: counts every attempt ever started and is never reset (attempts is, by retry_job); sent as X-Job-Attempt and in the token; 0 for jobs finished before 0.2.0';
COMMENT ON COLUMN jobrunner.job.due IS
    'pending and its next_run_at has come (as of the worker''s last look): only due jobs are claimed';
COMMENT ON COLUMN jobrunner.job.sending_attempt IS
    'attempt whose request is still on the wire, if any: the job holds its slot and is not sent again until that request has ended';
COMMENT ON COLUMN jobrunner.job.traceparent IS
    'W3C trace context of the request that queued the job (explicit, or PostgREST''s request.headers): every attempt is sent in that trace, with a span id of its own';
COMMENT ON COLUMN jobrunner.job.tracestate IS
    'W3C tracestate sent with traceparent';

-- Functions whose signature or result changes: dropped here, created anew
-- by the replayed files. The policies use _caller and come back with them.
DROP POLICY job_read_own ON jobrunner.job;
DROP POLICY job_logs_read_own ON jobrunner.job_logs;
DROP FUNCTION jobrunner._caller();
DROP FUNCTION jobrunner._claim(int, bigint);
DROP FUNCTION jobrunner._record(bigint, uuid[], int[], int[], text[], text[], double precision[], bigint[]);
DROP FUNCTION jobrunner._purge(interval, int);
DROP FUNCTION jobrunner.worker_status();
DROP FUNCTION jobrunner._lock_job_for_caller(uuid);
DROP FUNCTION jobrunner._recover(bigint);
DROP FUNCTION jobrunner.queue_job(text, jsonb, int, timestamptz, text, text, int);
DROP FUNCTION jobrunner._enqueue(uuid, text, text, text, jsonb, int, timestamptz, text, text, int);
-- queue_job_for gains _on_duplicate. The roles an administrator granted
-- EXECUTE on it keep that right: they are read before the drop and granted
-- it again on the new signature, created here (its body comes with the
-- replayed files).
DO $$
DECLARE
    _grantees text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT a.grantee::pg_catalog.regrole::text, ', ') INTO _grantees
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
     WHERE p.oid = 'jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int)'::pg_catalog.regprocedure
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;
    DROP FUNCTION jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int);
    CREATE FUNCTION jobrunner.queue_job_for(_user_id uuid, _user_role text, _user_email text,
                                            _job_name text, _request_body jsonb, _max_retries int,
                                            _run_at timestamptz, _dedup_key text, _idempotency_key text,
                                            _priority int, _on_duplicate text)
        RETURNS uuid LANGUAGE sql AS 'SELECT NULL::uuid';
    IF _grantees IS NOT NULL THEN
        EXECUTE 'GRANT EXECUTE ON FUNCTION jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int, text) TO '
                || _grantees;
    END IF;
END;
$$;

-- Where this queue dispatches from (see tables.sql); recorded by
-- sql/functions/backup.sql for a database that has none yet.
CREATE TABLE jobrunner.dispatch_origin (
    system_identifier numeric(20, 0) NOT NULL,
    database_oid      oid            NOT NULL,
    recorded_at       timestamptz    NOT NULL DEFAULT now()
);
COMMENT ON TABLE jobrunner.dispatch_origin IS
    'where this queue dispatches from (cluster and database); a row naming another place pauses dispatch until resume_dispatch()';

-- Coalescing: bodies waiting behind a job already sent (see tables.sql).
CREATE TABLE jobrunner.job_successor (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    holder_id    uuid        NOT NULL UNIQUE,
    request_body jsonb,
    run_at       timestamptz,
    priority     int         NOT NULL DEFAULT 0,
    max_retries  int,
    traceparent  text,
    tracestate   text,
    queued_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE jobrunner.job_successor IS
    'the newest body queued with _on_duplicate => ''replace'' behind a job already sent; it becomes job id when holder_id ends';

-- Where the last claim's window of groups ended (see _claim in
-- worker.sql): the next claim goes on from there. One row, written only
-- by the claim; NULL: start from the first group.
CREATE TABLE jobrunner.claim_cursor (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    job_name text,
    owner    uuid
);
INSERT INTO jobrunner.claim_cursor DEFAULT VALUES;
COMMENT ON TABLE jobrunner.claim_cursor IS 'internal: the (job_name, owner) group the last claim stopped after';

-- Due jobs with a positive priority, most urgent first: the claim takes
-- their groups before walking the others (jobs of priority 0 have no entry).
CREATE INDEX job_priority_idx ON jobrunner.job (priority DESC, next_run_at)
    WHERE state = 'pending' AND due AND priority > 0;

-- job_logs becomes a view (sql/functions/job_logs.sql) over the rows still
-- stored, here, and the "created" and "started attempt N" rows shown from
-- the job row and from each attempt's first stored row. The rows stored so
-- far stay as they are, ids and all; the names follow the table's, so an
-- updated database has what a fresh install has.
-- A view or function of the database's own that reads the 0.1.0 table
-- would follow the rename and silently lose the rows now shown from the job
-- row: the update refuses, naming them, instead.
DO $$
DECLARE
    _readers text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                                               THEN r.ev_class::pg_catalog.regclass::text
                                               ELSE pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) END,
                                 ', ')
      INTO _readers
      FROM pg_catalog.pg_depend d
      LEFT JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid
     WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.refobjid = 'jobrunner.job_logs'::pg_catalog.regclass
       AND d.deptype = 'n'
       -- views (their rules) and functions with a SQL-standard body; the
       -- table's own constraints depend on it too, and come along
       AND (r.ev_class IS DISTINCT FROM 'jobrunner.job_logs'::pg_catalog.regclass
            AND d.classid IN ('pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass));
    IF _readers IS NOT NULL THEN
        RAISE EXCEPTION 'cannot update pg_jobrunner to 0.2.0: % read jobrunner.job_logs, which becomes a view', _readers
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Drop them, run ALTER EXTENSION pg_jobrunner UPDATE, then create them again: jobrunner.job_logs keeps every row it had.';
    END IF;
END;
$$;
ALTER TABLE jobrunner.job_logs RENAME TO job_log_entry;
ALTER SEQUENCE jobrunner.job_logs_id_seq RENAME TO job_log_entry_id_seq;
ALTER INDEX jobrunner.job_logs_pkey RENAME TO job_log_entry_pkey;
ALTER TABLE jobrunner.job_log_entry RENAME CONSTRAINT job_logs_log_level_check TO job_log_entry_log_level_check;
ALTER TABLE jobrunner.job_log_entry
    ADD COLUMN started_id bigint,
    ADD COLUMN started_at timestamptz;
COMMENT ON TABLE jobrunner.job_log_entry IS
    'the stored rows of job_logs: one per transition that is not on the job row; purged with the job';
COMMENT ON COLUMN jobrunner.job_log_entry.started_id IS
    'on the first row of an attempt: the id of its "started attempt" row in job_logs (NULL otherwise)';
COMMENT ON COLUMN jobrunner.job_log_entry.started_at IS
    'on the first row of an attempt: when the attempt started';
ALTER TABLE jobrunner.job
    ADD COLUMN created_log_id bigint,
    ADD COLUMN started_log_id bigint,
    ADD COLUMN finished_log_id bigint,
    ADD COLUMN last_duration_ms double precision;
COMMENT ON COLUMN jobrunner.job.created_log_id IS
    'id of the job''s "created" row in job_logs, which this row stands for (NULL: that row is stored)';
COMMENT ON COLUMN jobrunner.job.started_log_id IS
    'id of the "started attempt" row of the current attempt in job_logs, which this row stands for until the attempt''s first stored row carries it';
COMMENT ON COLUMN jobrunner.job.finished_log_id IS
    'id of the "completed with status" row in job_logs, which this row stands for when the worker completed the job (NULL: that row is stored, or the job has not completed)';
COMMENT ON COLUMN jobrunner.job.last_duration_ms IS
    'how long the request that completed the job took, in milliseconds';

-- Room on each page for a job's later versions (see tables.sql); pages
-- written from now on keep it.
ALTER TABLE jobrunner.job SET (fillfactor = 50);
