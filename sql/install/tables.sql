-- tables.sql — the tables and indexes, created once by CREATE EXTENSION.
-- Update scripts change them with ALTER (sql/updates/); everything else
-- (functions, views, grants) lives in sql/functions/ and is replayed by every
-- install and update script.

-- The nil uuid stands for "no user" (system jobs) inside index keys, so that
-- system jobs take part in uniqueness and in the per-owner skip scan.
-- (Written out literally below: expression indexes must match exactly.)

CREATE TABLE jobrunner.job_config (
    job_name          text PRIMARY KEY,
    url               text,
    enabled           boolean     NOT NULL DEFAULT true,
    concurrency_limit int         NOT NULL DEFAULT 1,
    max_concurrency   int,
    rate_limit        numeric,
    timeout           interval    NOT NULL DEFAULT '5 minutes',
    max_retries       int         NOT NULL DEFAULT 3,
    retry_backoff     interval    NOT NULL DEFAULT '10 seconds',
    retry_backoff_max interval    NOT NULL DEFAULT '1 hour',
    headers           jsonb       NOT NULL DEFAULT '{}',
    completion        text        NOT NULL DEFAULT 'response',
    callback_lease    interval    NOT NULL DEFAULT '1 hour',
    on_complete       regprocedure,
    on_fail           regprocedure,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE jobrunner.job_config IS
    'one row per job name: where and how its jobs are delivered; administrators only';

-- Every job, from queueing to purge. A job's row is written when it is
-- queued, claimed and finished: half of each page is left free so that the
-- two later versions land on the row's own page. A version that must move
-- to another page costs a lock record and a longer WAL record more, and
-- leaves the table no smaller: with a 10,000-job burst, 70 % full pages
-- moved 29 % of the versions and ended 12 % larger than 50 % ones.
CREATE TABLE jobrunner.job (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid,
    user_role        text,
    user_email       text,
    job_name         text        NOT NULL,
    request_body     jsonb,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'completed', 'failed', 'canceled')),
    priority         int         NOT NULL DEFAULT 0,
    attempts         int         NOT NULL DEFAULT 0,
    max_retries      int         NOT NULL,
    dedup_key        text,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    next_run_at      timestamptz NOT NULL DEFAULT now(),
    last_run_at      timestamptz,
    locked_at        timestamptz,
    locked_by        bigint,
    acked_at         timestamptz,
    lease_expires_at timestamptz,
    finished_at      timestamptz,
    last_status      int,
    last_error       text,
    response         jsonb,
    attempt_seq      int         NOT NULL DEFAULT 0,
    due              boolean     NOT NULL DEFAULT true,
    sending_attempt  int,
    traceparent      text,
    tracestate       text,
    created_log_id   bigint,
    started_log_id   bigint,
    finished_log_id  bigint,
    last_duration_ms double precision
) WITH (fillfactor = 50);
COMMENT ON TABLE jobrunner.job IS
    'one row per job; users read their own rows; only the extension''s functions write';
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
COMMENT ON COLUMN jobrunner.job.acked_at IS
    'callback completion: when the endpoint acknowledged the current attempt';
COMMENT ON COLUMN jobrunner.job.lease_expires_at IS
    'callback completion: the attempt fails if nobody completes the job by then';
COMMENT ON COLUMN jobrunner.job.created_log_id IS
    'id of the job''s "created" row in job_logs, which this row stands for (NULL: that row is stored)';
COMMENT ON COLUMN jobrunner.job.started_log_id IS
    'id of the "started attempt" row of the current attempt in job_logs, which this row stands for until the attempt''s first stored row carries it';
COMMENT ON COLUMN jobrunner.job.finished_log_id IS
    'id of the "completed with status" row in job_logs, which this row stands for when the worker completed the job (NULL: that row is stored, or the job has not completed)';
COMMENT ON COLUMN jobrunner.job.last_duration_ms IS
    'how long the request that completed the job took, in milliseconds';

-- The claim: a skip scan finds the (job_name, owner) groups with pending
-- jobs (one probe per group: a group's due jobs sort first), then reads each
-- group's due jobs in priority order. Delayed jobs and retries waiting for
-- their time are never visited, however many there are or however many
-- distinct priorities they carry.
CREATE INDEX job_pending_idx ON jobrunner.job
    (job_name, (COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid)),
     due DESC, priority DESC, next_run_at)
    INCLUDE (created_at)
    WHERE state = 'pending';
-- Due jobs with a positive priority, most urgent first: the claim takes
-- their groups before walking the others (jobs of priority 0 have no entry).
CREATE INDEX job_priority_idx ON jobrunner.job (priority DESC, next_run_at)
    WHERE state = 'pending' AND due AND priority > 0;
-- Delayed jobs and retries waiting for their time: the worker marks them due
-- when it comes, and sleeps until the first of them.
CREATE INDEX job_waiting_idx ON jobrunner.job (next_run_at) WHERE state = 'pending' AND NOT due;
-- Running jobs, and jobs whose request is still on the wire: concurrency
-- counts and callback lease expiry. (A request is open exactly when
-- sending_attempt = attempt_seq: written as an equality, the planner
-- estimates it as rare even before the table has statistics, as it is.)
CREATE INDEX job_running_idx ON jobrunner.job (lease_expires_at)
    WHERE state = 'running' OR sending_attempt = attempt_seq;
-- Users read their own jobs (RLS) newest first.
CREATE INDEX job_user_idx ON jobrunner.job (user_id, created_at);
-- Dashboards (last hour) and purge (past retention).
CREATE INDEX job_finished_idx ON jobrunner.job (finished_at) WHERE finished_at IS NOT NULL;
-- Recent failures (the view of that name): only rows with an error.
CREATE INDEX job_error_idx ON jobrunner.job (updated_at) WHERE last_error IS NOT NULL;
-- Dedup: one active job per (job_name, owner, dedup_key).
CREATE UNIQUE INDEX job_dedup_key_idx ON jobrunner.job
    (job_name, (COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid)), dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('pending', 'running');
-- Idempotency: one job per (job_name, owner, idempotency_key) until purge.
CREATE UNIQUE INDEX job_idempotency_key_idx ON jobrunner.job
    (job_name, (COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid)), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Coalescing (queue_job's _on_duplicate => 'replace'): the newest body for a
-- dedup key whose job has already been sent waits here, under the id it will
-- have, and becomes a pending job when that job ends, however it ends. A
-- request once sent is never changed, and the bodies keep their order.
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

-- The rows of job_logs that carry information of their own. The "created"
-- and "started attempt N" rows say only when, and that is on the job row:
-- job_logs (a view, sql/functions/job_logs.sql) shows them from there, and
-- from the first row stored for an attempt (started_id, started_at), so a
-- job writes one log row per outcome instead of three.
CREATE TABLE jobrunner.job_log_entry (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    job_id      uuid        NOT NULL,
    attempt     int         NOT NULL DEFAULT 0,
    log_level   text        NOT NULL CHECK (log_level IN ('info', 'warning', 'error')),
    log_message text        NOT NULL,
    status_code int,
    duration_ms double precision,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_id  bigint,
    started_at  timestamptz,
    -- One index is both the key and a job's logs in order: a row is
    -- written per outcome, so every index on this table is paid per job.
    PRIMARY KEY (job_id, id)
);
COMMENT ON TABLE jobrunner.job_log_entry IS
    'the stored rows of job_logs: one per transition that is not on the job row; purged with the job';
COMMENT ON COLUMN jobrunner.job_log_entry.started_id IS
    'on the first row of an attempt: the id of its "started attempt" row in job_logs (NULL otherwise)';
COMMENT ON COLUMN jobrunner.job_log_entry.started_at IS
    'on the first row of an attempt: when the attempt started';

-- Token buckets of rate-limited job names; written only by the claim, kept
-- across restarts so a restart never grants a fresh burst.
CREATE TABLE jobrunner.rate_bucket (
    job_name     text PRIMARY KEY,
    tokens       double precision NOT NULL,
    refreshed_at timestamptz      NOT NULL
);
COMMENT ON TABLE jobrunner.rate_bucket IS 'internal: rate-limit token buckets per job name';

-- When each (job_name, owner) group was last given a job: ties between
-- groups go to the one served longest ago, so dispatch rotates across users
-- even when only one job of a name may run at a time. Written only by the
-- claim; rows are purged with old jobs.
CREATE TABLE jobrunner.group_turn (
    job_name  text        NOT NULL,
    owner     uuid        NOT NULL,
    served_at timestamptz NOT NULL,
    PRIMARY KEY (job_name, owner)
);
COMMENT ON TABLE jobrunner.group_turn IS 'internal: when each (job_name, owner) group was last served';

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

-- Recurring jobs queued by pg_cron.
CREATE TABLE jobrunner.schedule (
    schedule_name text PRIMARY KEY,
    cron          text        NOT NULL,
    job_name      text        NOT NULL,
    request_body  jsonb,
    user_id       uuid,
    user_role     text,
    cron_job_id   bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE jobrunner.schedule IS 'recurring jobs: what pg_cron queues, and for whom';


-- Where this queue dispatches from: the cluster (system identifier) and
-- database it was created in, or that an administrator confirmed with
-- resume_dispatch(). A dump restored elsewhere brings its rows along, and
-- the worker does not dispatch while a row names another place: a staging
-- copy of production must not call production's endpoints by surprise.
-- (The name sorts before "job", so pg_restore loads it before the jobs. No
-- key: restored in place, the dumped row repeats the one CREATE EXTENSION
-- wrote, which must not fail the restore.)
CREATE TABLE jobrunner.dispatch_origin (
    system_identifier numeric(20, 0) NOT NULL,
    database_oid      oid            NOT NULL,
    recorded_at       timestamptz    NOT NULL DEFAULT now()
);
COMMENT ON TABLE jobrunner.dispatch_origin IS
    'where this queue dispatches from (cluster and database); a row naming another place pauses dispatch until resume_dispatch()';
