-- pg_jobrunner install script: tables, identity, the job state machine, and
-- the statements the background worker runs. Every name is schema-qualified
-- and every function pins search_path, so nothing here can be hijacked by
-- objects a user creates elsewhere.
\echo Use "CREATE EXTENSION pg_jobrunner" to load this file. \quit

-- The nil uuid stands for "no user" (system jobs) inside index keys, so that
-- system jobs take part in uniqueness and in the per-owner skip scan.
-- (Written out literally below: expression indexes must match exactly.)

------------------------------------------------------------------------------
-- C entry points (internal)
------------------------------------------------------------------------------

CREATE FUNCTION jobrunner._outer_role() RETURNS oid
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_outer_role';
COMMENT ON FUNCTION jobrunner._outer_role() IS
    'internal: the role the session acts as outside any SECURITY DEFINER function';

CREATE FUNCTION jobrunner._wake_at_commit() RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_wake_at_commit';
COMMENT ON FUNCTION jobrunner._wake_at_commit() IS
    'internal: wake the worker once when the current transaction commits';

CREATE FUNCTION jobrunner._retry_delay(_attempt int, _base interval, _cap interval,
                                       _retry_after_ms bigint DEFAULT NULL)
    RETURNS interval
    LANGUAGE c VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_retry_delay';
COMMENT ON FUNCTION jobrunner._retry_delay(int, interval, interval, bigint) IS
    'internal: jittered exponential backoff after failed attempt N, Retry-After honoured up to the cap';

CREATE FUNCTION jobrunner._is_allowed_url(_url text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_is_allowed_url';
COMMENT ON FUNCTION jobrunner._is_allowed_url(text) IS
    'internal: absolute http(s) URL without whitespace, control characters or userinfo';

CREATE FUNCTION jobrunner._is_valid_header(_name text, _value text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_is_valid_header';
COMMENT ON FUNCTION jobrunner._is_valid_header(text, text) IS
    'internal: header name is an RFC 9110 token and the value has no CR, LF or NUL';

-- public API
CREATE FUNCTION jobrunner.sign_jwt(_claims jsonb, _secret text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_sign_jwt';
COMMENT ON FUNCTION jobrunner.sign_jwt(jsonb, text) IS
    'HS256 compact JWS of the given claims; the secret must be at least 32 bytes';

-- public API (admin only)
CREATE FUNCTION jobrunner.mint_user_jwt(_user_id uuid, _role text, _email text,
                                        _ttl interval DEFAULT NULL) RETURNS text
    LANGUAGE c VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_mint_user_jwt';
COMMENT ON FUNCTION jobrunner.mint_user_jwt(uuid, text, text, interval) IS
    'token for a user (sub, role, aud, email, iat, exp) signed with jobrunner.jwt_secret; admin only';

-- public API
CREATE FUNCTION jobrunner.worker_status(
        OUT running boolean, OUT pid int, OUT started_at timestamptz,
        OUT in_flight int, OUT dispatched bigint, OUT completed bigint,
        OUT failed bigint, OUT last_loop_at timestamptz, OUT database_name text)
    LANGUAGE c VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_worker_status';
COMMENT ON FUNCTION jobrunner.worker_status() IS
    'live figures of the background worker: running, pid, in-flight requests, totals since start';

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

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

-- Every job, from queueing to purge. Updated several times per job, so pages
-- keep room for HOT updates.
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
    response         jsonb
) WITH (fillfactor = 70);
COMMENT ON TABLE jobrunner.job IS
    'one row per job; users read their own rows; only the extension''s functions write';
COMMENT ON COLUMN jobrunner.job.locked_by IS
    'worker incarnation holding the current attempt (fences late answers)';
COMMENT ON COLUMN jobrunner.job.acked_at IS
    'callback completion: when the endpoint acknowledged the current attempt';
COMMENT ON COLUMN jobrunner.job.lease_expires_at IS
    'callback completion: the attempt fails if nobody completes the job by then';

-- The claim's skip scan: distinct (job_name, owner, priority) groups of
-- pending jobs, then the due ones of each group in next_run_at order.
CREATE INDEX job_pending_idx ON jobrunner.job
    (job_name, (COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid)),
     priority, next_run_at)
    INCLUDE (created_at)
    WHERE state = 'pending';
-- When the next delayed job or retry comes due.
CREATE INDEX job_pending_due_idx ON jobrunner.job (next_run_at) WHERE state = 'pending';
-- Running jobs: concurrency counts and callback lease expiry.
CREATE INDEX job_running_idx ON jobrunner.job (lease_expires_at) WHERE state = 'running';
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

CREATE TABLE jobrunner.job_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    job_id      uuid        NOT NULL,
    attempt     int         NOT NULL DEFAULT 0,
    log_level   text        NOT NULL CHECK (log_level IN ('info', 'warning', 'error')),
    log_message text        NOT NULL,
    status_code int,
    duration_ms double precision,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- One index is both the key and a job's logs in order: two rows are
    -- written per attempt, so every index on this table is paid per job.
    PRIMARY KEY (job_id, id)
);
COMMENT ON TABLE jobrunner.job_logs IS
    'one row per transition of a job; purged with the job';

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

------------------------------------------------------------------------------
-- Identity
------------------------------------------------------------------------------

-- internal: who is calling. Claims from request.jwt.claims are believed only
-- when the login role (session_user) is a superuser or a trusted claim role;
-- admin means superuser or EXECUTE on queue_job_for, judged on the role the
-- session acts as (not on the owner of a SECURITY DEFINER function).
CREATE FUNCTION jobrunner._caller(OUT user_id uuid, OUT user_role text,
                                  OUT user_email text, OUT is_admin boolean)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _outer    oid := jobrunner._outer_role();
    _raw      text := pg_catalog.current_setting('request.jwt.claims', true);
    _claims   jsonb;
    _believed boolean;
    _sub      text;
BEGIN
    is_admin := COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = _outer), false)
        OR pg_catalog.has_function_privilege(_outer,
               'jobrunner.queue_job_for(uuid,text,text,text,jsonb,integer,timestamptz,text,text,integer)',
               'EXECUTE');
    _believed := COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                            WHERE r.rolname = session_user), false)
        OR session_user::text = ANY (pg_catalog.string_to_array(
               pg_catalog.replace(pg_catalog.current_setting('jobrunner.trusted_claim_roles'), ' ', ''),
               ','));
    IF NOT _believed OR _raw IS NULL OR _raw = '' THEN
        RETURN;
    END IF;
    BEGIN
        _claims := _raw::jsonb;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'request.jwt.claims is not valid JSON'
            USING ERRCODE = 'invalid_authorization_specification';
    END;
    IF pg_catalog.jsonb_typeof(_claims) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'request.jwt.claims is not a JSON object'
            USING ERRCODE = 'invalid_authorization_specification';
    END IF;
    _sub := _claims ->> 'sub';
    IF _sub IS NOT NULL THEN
        BEGIN
            user_id := _sub::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'claim "sub" is not a uuid: %', pg_catalog.left(_sub, 64)
                USING ERRCODE = 'invalid_authorization_specification',
                      HINT = 'jobs belong to users identified by uuid, as auth.uid() returns';
        END;
        user_role := COALESCE(_claims ->> 'role',
                              (SELECT r.rolname::text FROM pg_catalog.pg_roles r WHERE r.oid = _outer));
        user_email := _claims ->> 'email';
    END IF;
END;
$$;
COMMENT ON FUNCTION jobrunner._caller() IS
    'internal: the caller''s believed identity (sub, role, email) and whether the caller is an admin';

-- internal: lock a job for a state change the caller asked for, raising
-- unless the caller owns it or is an admin. Jobs of other users are reported
-- as not found, so their existence does not leak. The lock makes a claim in
-- progress wait for us, or us for it (then we see the job running).
CREATE FUNCTION jobrunner._lock_job_for_caller(_job_id uuid) RETURNS jobrunner.job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _me record := jobrunner._caller();
    _job jobrunner.job;
BEGIN
    IF _job_id IS NULL THEN
        RAISE EXCEPTION 'job id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO _job FROM jobrunner.job j WHERE j.id = _job_id FOR UPDATE;
    -- COALESCE: a caller without a believed sub must not slip through a NULL.
    IF NOT FOUND OR NOT COALESCE(_me.is_admin OR _job.user_id = _me.user_id, false) THEN
        RAISE EXCEPTION 'job % not found', _job_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'a job can be acted on only by its own user or an administrator';
    END IF;
    RETURN _job;
END;
$$;

-- internal: the caller's job, locked, when it is running at _attempt (any
-- attempt when NULL); NULL otherwise. The worker is woken at commit: the
-- job's slot frees whatever happens next.
CREATE FUNCTION jobrunner._lock_running_job_for_caller(_job_id uuid, _attempt int)
    RETURNS jobrunner.job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job := jobrunner._lock_job_for_caller(_job_id);
BEGIN
    IF _job.state <> 'running' OR (_attempt IS NOT NULL AND _attempt <> _job.attempts) THEN
        RETURN NULL;
    END IF;
    PERFORM jobrunner._wake_at_commit();
    RETURN _job;
END;
$$;

------------------------------------------------------------------------------
-- job_config validation
------------------------------------------------------------------------------

-- internal: refuse a job_config row that could misdirect or break requests,
-- naming the bad value.
CREATE FUNCTION jobrunner._validate_job_config() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _k text;
    _v jsonb;
    _hook regprocedure;
BEGIN
    IF NEW.job_name IS NULL OR NEW.job_name !~ '^[A-Za-z0-9._-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid job name %', pg_catalog.quote_nullable(pg_catalog.left(NEW.job_name, 200))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'job names are 1 to 128 letters, digits, ".", "_" or "-"';
    END IF;
    IF NEW.url IS NOT NULL AND NOT jobrunner._is_allowed_url(NEW.url) THEN
        RAISE EXCEPTION 'invalid url % for job "%"', pg_catalog.quote_literal(pg_catalog.left(NEW.url, 200)), NEW.job_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use an absolute http:// or https:// URL without spaces or credentials';
    END IF;
    IF NEW.concurrency_limit < 1 THEN
        RAISE EXCEPTION 'concurrency_limit must be at least 1, not %', NEW.concurrency_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_concurrency IS NOT NULL AND NEW.max_concurrency < 1 THEN
        RAISE EXCEPTION 'max_concurrency must be at least 1 or null, not %', NEW.max_concurrency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.rate_limit IS NOT NULL AND NEW.rate_limit <= 0 THEN
        RAISE EXCEPTION 'rate_limit must be positive or null, not %', NEW.rate_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.timeout <= interval '0' OR NEW.timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must be between 0 and 1 day, not %', NEW.timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_retries < 0 OR NEW.max_retries > 1000 THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 1000, not %', NEW.max_retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.retry_backoff < interval '0' OR NEW.retry_backoff_max < NEW.retry_backoff THEN
        RAISE EXCEPTION 'retry_backoff % and retry_backoff_max % must satisfy 0 <= retry_backoff <= retry_backoff_max',
                NEW.retry_backoff, NEW.retry_backoff_max
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.callback_lease <= interval '0' THEN
        RAISE EXCEPTION 'callback_lease must be positive, not %', NEW.callback_lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.completion NOT IN ('response', 'callback') THEN
        RAISE EXCEPTION 'completion must be ''response'' or ''callback'', not %', pg_catalog.quote_literal(NEW.completion)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.jsonb_typeof(NEW.headers) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'headers must be a JSON object of strings, not %', pg_catalog.left(NEW.headers::text, 200)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR _k, _v IN SELECT e.key, e.value FROM pg_catalog.jsonb_each(NEW.headers) e LOOP
        IF pg_catalog.jsonb_typeof(_v) <> 'string' OR NOT jobrunner._is_valid_header(_k, _v #>> '{}') THEN
            RAISE EXCEPTION 'invalid header % for job "%"', pg_catalog.quote_literal(pg_catalog.left(_k, 100)), NEW.job_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'header names are tokens; values are strings without CR, LF or NUL';
        END IF;
        IF pg_catalog.lower(_k) IN ('authorization', 'content-type', 'content-length', 'host',
                                    'transfer-encoding', 'x-job', 'x-correlation-id', 'x-job-name',
                                    'x-job-attempt', 'idempotency-key', 'user-agent', 'expect',
                                    'connection') THEN
            RAISE EXCEPTION 'header % for job "%" is set by pg_jobrunner and cannot be overridden', pg_catalog.quote_literal(_k), NEW.job_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOREACH _hook IN ARRAY ARRAY[NEW.on_complete, NEW.on_fail] LOOP
        CONTINUE WHEN _hook IS NULL;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                        WHERE p.oid = _hook AND p.pronargs = 1
                          AND p.proargtypes[0] = 'jobrunner.job'::regtype
                          AND p.prokind = 'f') THEN
            RAISE EXCEPTION 'hook % for job "%" must be a function taking one jobrunner.job', _hook, NEW.job_name
                USING ERRCODE = 'invalid_function_definition',
                      HINT = 'declare it as: CREATE FUNCTION my_hook(j jobrunner.job) RETURNS void ...';
        END IF;
    END LOOP;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER job_config_validate
    BEFORE INSERT OR UPDATE ON jobrunner.job_config
    FOR EACH ROW EXECUTE FUNCTION jobrunner._validate_job_config();

-- internal: a job name enabled again, a limit raised or a url fixed can make
-- pending jobs claimable: the worker looks at commit, not at its next poll.
-- In C, so that whoever may write job_config needs no grant on internals.
CREATE FUNCTION jobrunner._wake_trigger() RETURNS trigger
    LANGUAGE c
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_wake_trigger';

CREATE TRIGGER job_config_wake
    AFTER INSERT OR UPDATE ON jobrunner.job_config
    FOR EACH STATEMENT EXECUTE FUNCTION jobrunner._wake_trigger();

------------------------------------------------------------------------------
-- Queueing
------------------------------------------------------------------------------

-- internal: the one place jobs are inserted. Dedup and idempotency keys are
-- enforced by unique indexes (ON CONFLICT), so they hold under concurrency.
CREATE FUNCTION jobrunner._enqueue(_user_id uuid, _user_role text, _user_email text,
                                   _job_name text, _request_body jsonb, _max_retries int,
                                   _run_at timestamptz, _dedup_key text,
                                   _idempotency_key text, _priority int)
    RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _cfg_retries int;
    _id uuid;
BEGIN
    IF _job_name IS NULL THEN
        RAISE EXCEPTION 'job name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF _job_name !~ '^[A-Za-z0-9._-]{1,128}$' THEN
        RAISE EXCEPTION 'invalid job name %', pg_catalog.quote_literal(pg_catalog.left(_job_name, 200))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'job names are 1 to 128 letters, digits, ".", "_" or "-"';
    END IF;
    SELECT c.max_retries INTO _cfg_retries FROM jobrunner.job_config c WHERE c.job_name = _job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" is not configured', _job_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'an administrator inserts a row into jobrunner.job_config for it';
    END IF;
    IF _max_retries IS NOT NULL AND (_max_retries < 0 OR _max_retries > 1000) THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 1000, not %', _max_retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.length(_dedup_key) > 512 OR pg_catalog.length(_idempotency_key) > 512 THEN
        RAISE EXCEPTION 'dedup and idempotency keys are at most 512 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF _user_id IS NOT NULL AND _user_role IS NULL THEN
        RAISE EXCEPTION 'a job for user % needs a role', _user_id
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    FOR _try IN 1..3 LOOP
        INSERT INTO jobrunner.job (user_id, user_role, user_email, job_name, request_body,
                                   priority, max_retries, dedup_key, idempotency_key, next_run_at)
        VALUES (_user_id, _user_role, _user_email, _job_name, _request_body,
                COALESCE(_priority, 0), COALESCE(_max_retries, _cfg_retries), _dedup_key,
                _idempotency_key, COALESCE(_run_at, now()))
        ON CONFLICT DO NOTHING
        RETURNING id INTO _id;
        IF _id IS NOT NULL THEN
            INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message)
            VALUES (_id, 0, 'info', 'created');
            PERFORM jobrunner._wake_at_commit();
            RETURN _id;
        END IF;
        -- A conflicting job exists: return it.
        SELECT j.id INTO _id FROM jobrunner.job j
         WHERE _idempotency_key IS NOT NULL AND j.job_name = _job_name
           AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)
               = COALESCE(_user_id, '00000000-0000-0000-0000-000000000000'::uuid)
           AND j.idempotency_key = _idempotency_key;
        IF _id IS NULL THEN
            SELECT j.id INTO _id FROM jobrunner.job j
             WHERE _dedup_key IS NOT NULL AND j.job_name = _job_name
               AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)
                   = COALESCE(_user_id, '00000000-0000-0000-0000-000000000000'::uuid)
               AND j.dedup_key = _dedup_key AND j.state IN ('pending', 'running');
        END IF;
        IF _id IS NOT NULL THEN
            RETURN _id;
        END IF;
        -- The conflicting job finished between our insert and our look-up; try again.
    END LOOP;
    RAISE EXCEPTION 'could not queue job "%": its dedup key kept changing hands', _job_name
        USING ERRCODE = 'serialization_failure', HINT = 'retry the transaction';
END;
$$;

-- public API
CREATE FUNCTION jobrunner.queue_job(_job_name text, _request_body jsonb DEFAULT '{}',
                                    _max_retries int DEFAULT NULL,
                                    _run_at timestamptz DEFAULT NULL,
                                    _dedup_key text DEFAULT NULL,
                                    _idempotency_key text DEFAULT NULL,
                                    _priority int DEFAULT 0)
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _me record := jobrunner._caller();
BEGIN
    IF _me.user_id IS NULL AND NOT _me.is_admin THEN
        RAISE EXCEPTION 'queue_job needs the caller''s identity: no believed request.jwt.claims with a "sub"'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'call it through PostgREST with a user''s JWT, or as an administrator use jobrunner.queue_job_for';
    END IF;
    RETURN jobrunner._enqueue(_me.user_id, _me.user_role, _me.user_email, _job_name,
                              _request_body, _max_retries, _run_at, _dedup_key,
                              _idempotency_key, _priority);
END;
$$;
COMMENT ON FUNCTION jobrunner.queue_job(text, jsonb, int, timestamptz, text, text, int) IS
    'queue a job owned by the caller (from request.jwt.claims) in the caller''s transaction; returns its id';

-- public API (admin only)
CREATE FUNCTION jobrunner.queue_job_for(_user_id uuid, _user_role text, _user_email text,
                                        _job_name text, _request_body jsonb DEFAULT '{}',
                                        _max_retries int DEFAULT NULL,
                                        _run_at timestamptz DEFAULT NULL,
                                        _dedup_key text DEFAULT NULL,
                                        _idempotency_key text DEFAULT NULL,
                                        _priority int DEFAULT 0)
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jobrunner._enqueue(_user_id, CASE WHEN _user_id IS NULL THEN NULL ELSE _user_role END,
                              CASE WHEN _user_id IS NULL THEN NULL ELSE _user_email END,
                              _job_name, _request_body, _max_retries, _run_at, _dedup_key,
                              _idempotency_key, _priority);
END;
$$;
COMMENT ON FUNCTION jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int) IS
    'admin only: queue a job for the given user (NULL user: a system job)';

------------------------------------------------------------------------------
-- The state machine: every final transition goes through _settle_ok or
-- _settle_fail, whoever causes it (worker, complete_job, fail_job, lease).
------------------------------------------------------------------------------

-- internal: run a completion hook as the job's user would be seen by
-- PostgREST-style code: request.jwt.claims set for the hook's duration only.
CREATE FUNCTION jobrunner._run_hook(_hook regprocedure, _job jobrunner.job) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _saved text := pg_catalog.current_setting('request.jwt.claims', true);
    _claims jsonb;
    _name text;
BEGIN
    _claims := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'sub', _job.user_id,
        'role', COALESCE(_job.user_role, pg_catalog.current_setting('jobrunner.system_role')),
        'email', _job.user_email));
    SELECT pg_catalog.format('%I.%I', n.nspname, p.proname) INTO _name
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE p.oid = _hook;
    IF _name IS NULL THEN
        RAISE EXCEPTION 'hook % of job "%" no longer exists', _hook::oid, _job.job_name
            USING ERRCODE = 'undefined_function';
    END IF;
    PERFORM pg_catalog.set_config('request.jwt.claims', _claims::text, true);
    EXECUTE pg_catalog.format('SELECT %s($1::jobrunner.job)', _name) USING _job;
    PERFORM pg_catalog.set_config('request.jwt.claims', COALESCE(_saved, ''), true);
END;
$$;

-- internal: mark a job completed, run on_complete, log. Whatever raises here
-- (the hook, typically) undoes all of it: callers decide what happens next.
CREATE FUNCTION jobrunner._complete(_job jobrunner.job, _cfg jobrunner.job_config,
                                    _status int, _response jsonb,
                                    _duration_ms double precision, _via text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _done jobrunner.job;
BEGIN
    UPDATE jobrunner.job j
       SET state = 'completed', finished_at = now(), updated_at = now(),
           last_status = COALESCE(_status, j.last_status), last_error = NULL,
           response = COALESCE(_response, j.response),
           locked_at = NULL, lease_expires_at = NULL
     WHERE j.id = _job.id
    RETURNING * INTO _done;
    IF _cfg.on_complete IS NOT NULL THEN
        PERFORM jobrunner._run_hook(_cfg.on_complete, _done);
    END IF;
    INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message, status_code, duration_ms)
    VALUES (_job.id, _job.attempts, 'info',
            CASE WHEN _via = 'worker'
                 THEN pg_catalog.format('completed with status %s', _status)
                 ELSE pg_catalog.format('completed by %s', _via) END,
            _status, _duration_ms);
END;
$$;

-- internal: the job succeeded (or, for callback jobs, its endpoint acked).
-- From the worker, on_complete runs in a subtransaction: if it raises, its
-- writes and the completion are rolled back and the attempt counts as failed.
-- From complete_job, a raising hook raises in the caller's transaction, so
-- the caller's own writes and the completion still commit together or not at
-- all. Returns true when the job completed.
CREATE FUNCTION jobrunner._settle_ok(_job jobrunner.job, _status int, _response jsonb,
                                     _duration_ms double precision, _via text)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _cfg jobrunner.job_config;
BEGIN
    SELECT * INTO _cfg FROM jobrunner.job_config c WHERE c.job_name = _job.job_name;
    IF _via = 'worker' AND _cfg.completion = 'callback' THEN
        UPDATE jobrunner.job j
           SET acked_at = now(), lease_expires_at = now() + _cfg.callback_lease,
               last_status = _status, updated_at = now()
         WHERE j.id = _job.id;
        INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message, status_code, duration_ms)
        VALUES (_job.id, _job.attempts, 'info',
                pg_catalog.format('acknowledged with status %s; waiting for complete_job until %s',
                                  _status, now() + _cfg.callback_lease),
                _status, _duration_ms);
        RETURN false;
    END IF;
    IF _via <> 'worker' THEN
        PERFORM jobrunner._complete(_job, _cfg, _status, _response, _duration_ms, _via);
        RETURN true;
    END IF;
    BEGIN
        PERFORM jobrunner._complete(_job, _cfg, _status, _response, _duration_ms, _via);
        RETURN true;
    EXCEPTION WHEN others THEN
        PERFORM jobrunner._settle_fail(_job, _status,
            pg_catalog.format('on_complete hook %s failed: %s', _cfg.on_complete, SQLERRM),
            true, NULL, _duration_ms);
        RETURN false;
    END;
END;
$$;

-- internal: the attempt failed. Back to pending after a jittered backoff, or
-- failed once retries are used up (then on_fail runs, in a subtransaction).
CREATE FUNCTION jobrunner._settle_fail(_job jobrunner.job, _status int, _error text,
                                       _retry boolean, _retry_after_ms bigint,
                                       _duration_ms double precision)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _cfg jobrunner.job_config;
    _next timestamptz;
    _done jobrunner.job;
    _what text := pg_catalog.format('attempt %s failed: %s', _job.attempts, _error);
BEGIN
    SELECT * INTO _cfg FROM jobrunner.job_config c WHERE c.job_name = _job.job_name;
    IF _retry AND _job.attempts <= _job.max_retries THEN
        _next := now() + jobrunner._retry_delay(_job.attempts,
                                                COALESCE(_cfg.retry_backoff, interval '10 seconds'),
                                                COALESCE(_cfg.retry_backoff_max, interval '1 hour'),
                                                _retry_after_ms);
        UPDATE jobrunner.job j
           SET state = 'pending', next_run_at = _next, updated_at = now(),
               last_status = _status, last_error = _error,
               locked_at = NULL, locked_by = NULL, acked_at = NULL, lease_expires_at = NULL
         WHERE j.id = _job.id;
        INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message, status_code, duration_ms)
        VALUES (_job.id, _job.attempts, 'warning',
                pg_catalog.format('%s; next attempt at %s', _what, _next), _status, _duration_ms);
        PERFORM jobrunner._wake_at_commit();
        RETURN;
    END IF;
    BEGIN
        UPDATE jobrunner.job j
           SET state = 'failed', finished_at = now(), updated_at = now(),
               last_status = _status, last_error = _error,
               locked_at = NULL, acked_at = NULL, lease_expires_at = NULL
         WHERE j.id = _job.id
        RETURNING * INTO _done;
        IF _cfg.on_fail IS NOT NULL THEN
            PERFORM jobrunner._run_hook(_cfg.on_fail, _done);
        END IF;
    EXCEPTION WHEN others THEN
        -- The hook's writes are gone; the job still fails, with the reason.
        UPDATE jobrunner.job j
           SET state = 'failed', finished_at = now(), updated_at = now(),
               last_status = _status,
               last_error = pg_catalog.format('%s; on_fail hook %s failed: %s', _error, _cfg.on_fail, SQLERRM),
               locked_at = NULL, acked_at = NULL, lease_expires_at = NULL
         WHERE j.id = _job.id;
        _what := pg_catalog.format('%s; on_fail hook %s failed: %s', _what, _cfg.on_fail, SQLERRM);
    END;
    INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message, status_code, duration_ms)
    VALUES (_job.id, _job.attempts, 'error',
            pg_catalog.format('%s; failed permanently', _what), _status, _duration_ms);
END;
$$;

-- public API
CREATE FUNCTION jobrunner.dequeue_job(_job_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
BEGIN
    _job := jobrunner._lock_job_for_caller(_job_id);
    IF _job.state <> 'pending' THEN
        RETURN false;
    END IF;
    UPDATE jobrunner.job j
       SET state = 'canceled', finished_at = now(), updated_at = now()
     WHERE j.id = _job_id;
    INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message)
    VALUES (_job_id, _job.attempts, 'info', 'canceled');
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.dequeue_job(uuid) IS
    'cancel the caller''s job if it is still pending; false if it was already claimed or finished';

-- public API
CREATE FUNCTION jobrunner.retry_job(_job_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
BEGIN
    _job := jobrunner._lock_job_for_caller(_job_id);
    IF _job.state NOT IN ('failed', 'canceled') THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE jobrunner.job j
           SET state = 'pending', attempts = 0, next_run_at = now(), updated_at = now(),
               finished_at = NULL, locked_at = NULL, locked_by = NULL, acked_at = NULL,
               lease_expires_at = NULL
         WHERE j.id = _job_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'cannot retry job %: another active job holds its dedup key %', _job_id,
                pg_catalog.quote_literal(_job.dedup_key)
            USING ERRCODE = 'unique_violation',
                  HINT = 'cancel or wait for the other job first';
    END;
    INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message)
    VALUES (_job_id, 0, 'info', pg_catalog.format('retried by hand after %s attempts', _job.attempts));
    PERFORM jobrunner._wake_at_commit();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.retry_job(uuid) IS
    'put a failed or canceled job back to pending with its attempts reset';

-- public API
CREATE FUNCTION jobrunner.complete_job(_job_id uuid, _result jsonb DEFAULT NULL,
                                       _attempt int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job := jobrunner._lock_running_job_for_caller(_job_id, _attempt);
BEGIN
    IF _job.id IS NULL THEN
        RETURN false;
    END IF;
    RETURN jobrunner._settle_ok(_job, NULL, _result, NULL, 'complete_job');
END;
$$;
COMMENT ON FUNCTION jobrunner.complete_job(uuid, jsonb, int) IS
    'complete a running job inside the caller''s transaction; false if it is not running (or not at _attempt)';

-- public API
CREATE FUNCTION jobrunner.fail_job(_job_id uuid, _error text, _retry boolean DEFAULT true,
                                   _attempt int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job := jobrunner._lock_running_job_for_caller(_job_id, _attempt);
BEGIN
    IF _job.id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM jobrunner._settle_fail(_job, NULL, COALESCE(_error, 'failed by fail_job'),
                                   COALESCE(_retry, true), NULL, NULL);
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.fail_job(uuid, text, boolean, int) IS
    'fail the current attempt of a running job inside the caller''s transaction; retried unless _retry is false or retries are used up';

------------------------------------------------------------------------------
-- Worker statements (internal; the worker runs as a superuser)
------------------------------------------------------------------------------

-- internal: at worker start, attempts left in flight by a previous worker are
-- put back to pending at once. The interrupted attempt does not count.
CREATE FUNCTION jobrunner._recover(_worker bigint) RETURNS int
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH reset AS (
        UPDATE jobrunner.job j
           SET state = 'pending', attempts = j.attempts - 1, next_run_at = now(),
               updated_at = now(), locked_at = NULL, locked_by = NULL, lease_expires_at = NULL
         WHERE j.state = 'running' AND j.acked_at IS NULL
           AND j.locked_by IS DISTINCT FROM _worker
        RETURNING j.id, j.attempts
    ), logged AS (
        INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message)
        SELECT r.id, r.attempts + 1, 'warning', 'attempt interrupted by a worker restart; will be attempted again'
          FROM reset r
        RETURNING 1
    )
    SELECT count(*)::int FROM logged;
$$;

-- internal: claim up to _limit due jobs, fairly. Groups are (job_name,
-- owner); each group gets its first free slot before any group gets a
-- second; per-group concurrency_limit, per-name max_concurrency and
-- rate_limit are never exceeded. Rows locked by a concurrent dequeue_job are
-- skipped, never waited for.
CREATE FUNCTION jobrunner._claim(_limit int, _worker bigint)
    RETURNS TABLE (id uuid, job_name text, user_id uuid, user_role text, user_email text,
                   attempt int, request_body text, url text, headers text,
                   timeout_ms bigint)
    -- headers: the job_config headers as "Name: value" lines (values never
    -- hold CR or LF: job_config validation refuses them).
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    _ctids tid[];
    _ids uuid[];
    _base text := NULLIF(pg_catalog.current_setting('jobrunner.base_url'), '');
BEGIN
    IF _limit <= 0 THEN
        RETURN;
    END IF;

    -- Refill the token buckets of rate-limited names (burst: a tenth of a
    -- second's worth, at least one).
    INSERT INTO jobrunner.rate_bucket AS b (job_name, tokens, refreshed_at)
    SELECT c.job_name, 1, now() FROM jobrunner.job_config c
     WHERE c.enabled AND c.rate_limit IS NOT NULL
    ON CONFLICT (job_name) DO UPDATE
       SET tokens = LEAST(GREATEST(1.0, (SELECT c.rate_limit FROM jobrunner.job_config c
                                          WHERE c.job_name = b.job_name)::float8 / 10),
                          b.tokens + EXTRACT(epoch FROM now() - b.refreshed_at)::float8
                                   * (SELECT c.rate_limit FROM jobrunner.job_config c
                                       WHERE c.job_name = b.job_name)::float8),
           refreshed_at = now();

    WITH RECURSIVE grp AS (
        (SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner,
                j.priority
           FROM jobrunner.job j
          WHERE j.state = 'pending'
          ORDER BY 1, 2, 3
          LIMIT 1)
        UNION ALL
        SELECT n.job_name, n.owner, n.priority
          FROM grp g
          CROSS JOIN LATERAL (
                SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner,
                       j.priority
                  FROM jobrunner.job j
                 WHERE j.state = 'pending'
                   AND (j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid), j.priority)
                       > (g.job_name, g.owner, g.priority)
                 ORDER BY 1, 2, 3
                 LIMIT 1) n
    ), running AS (
        SELECT j.job_name, COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner,
               count(*) AS n
          FROM jobrunner.job j
         WHERE j.state = 'running'
         GROUP BY 1, 2
    ), slots AS (
        SELECT g.job_name, g.owner, g.priority, COALESCE(r.n, 0) AS held,
               c.concurrency_limit - COALESCE(r.n, 0) AS free, t.served_at
          FROM grp g
          JOIN jobrunner.job_config c ON c.job_name = g.job_name AND c.enabled
          LEFT JOIN running r ON r.job_name = g.job_name AND r.owner = g.owner
          LEFT JOIN jobrunner.group_turn t ON t.job_name = g.job_name AND t.owner = g.owner
    ), fair_share AS (
        -- No group needs more than an even share of this claim: fetching
        -- more would only be sorted away. Groups left short are topped up by
        -- the next claim.
        SELECT GREATEST(1, ceil(_limit::numeric / GREATEST(1, count(DISTINCT (s.job_name, s.owner)))))::int AS n
          FROM slots s
         WHERE s.free > 0
    ), cand AS (
        SELECT s.job_name, s.owner, s.held, s.free, s.served_at, x.row_ctid, x.id, x.priority,
               x.next_run_at
          FROM slots s
          CROSS JOIN fair_share f
          CROSS JOIN LATERAL (
                SELECT j.ctid AS row_ctid, j.id, j.priority, j.next_run_at
                  FROM jobrunner.job j
                 WHERE j.state = 'pending' AND j.job_name = s.job_name
                   AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) = s.owner
                   AND j.priority = s.priority AND j.next_run_at <= now()
                 ORDER BY j.next_run_at
                 LIMIT LEAST(s.free, f.n)) x
         WHERE s.free > 0
    ), in_group AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.job_name, c.owner
                                       ORDER BY c.priority DESC, c.next_run_at) AS grp_rank
          FROM cand c
    ), in_name AS (
        -- slot: which running job of its group this one would be. Slots
        -- already held count, so when max_concurrency or rate_limit is what
        -- binds, a group with jobs in flight does not beat one without;
        -- between equal slots, the group served longest ago goes first.
        SELECT g.*, row_number() OVER (PARTITION BY g.job_name
                                       ORDER BY g.held + g.grp_rank, g.served_at NULLS FIRST,
                                                g.priority DESC, g.next_run_at) AS name_rank
          FROM in_group g
         WHERE g.grp_rank <= g.free
    ), allowed AS (
        SELECT i.row_ctid, i.id, i.held + i.grp_rank AS slot, i.served_at, i.priority, i.next_run_at
          FROM in_name i
          JOIN jobrunner.job_config c ON c.job_name = i.job_name
          LEFT JOIN (SELECT r.job_name, sum(r.n) AS n FROM running r GROUP BY 1) rn
                 ON rn.job_name = i.job_name
          LEFT JOIN jobrunner.rate_bucket b ON b.job_name = i.job_name
         WHERE (c.max_concurrency IS NULL OR i.name_rank <= c.max_concurrency - COALESCE(rn.n, 0))
           AND (c.rate_limit IS NULL OR i.name_rank <= floor(COALESCE(b.tokens, 0)))
    )
    SELECT pg_catalog.array_agg(a.row_ctid), pg_catalog.array_agg(a.id) INTO _ctids, _ids
      FROM (SELECT a.row_ctid, a.id FROM allowed a
             ORDER BY a.slot, a.served_at NULLS FIRST, a.priority DESC, a.next_run_at
             LIMIT _limit) a;

    IF _ctids IS NULL THEN
        RETURN;
    END IF;

    -- Rows are found by ctid (TID scans) and checked by id. A row changed
    -- since it was read (dequeued, say) no longer matches and is skipped, as
    -- is a row locked by an unfinished dequeue_job.
    RETURN QUERY
    WITH locked AS (
        SELECT l.row_ctid
          FROM unnest(_ctids, _ids) AS c(row_ctid, id)
         CROSS JOIN LATERAL (
                SELECT j.ctid AS row_ctid FROM jobrunner.job j
                 WHERE j.ctid = c.row_ctid AND j.id = c.id AND j.state = 'pending'
                   FOR UPDATE SKIP LOCKED) l
    ), upd AS (
        -- = ANY (array) keeps this a TID scan; a join with locked would be
        -- planned as a hash join over every pending row.
        UPDATE jobrunner.job j
           SET state = 'running', attempts = j.attempts + 1, locked_at = now(),
               locked_by = _worker, last_run_at = now(), updated_at = now(),
               acked_at = NULL, lease_expires_at = NULL
         WHERE j.ctid = ANY (ARRAY(SELECT l.row_ctid FROM locked l)) AND j.state = 'pending'
        RETURNING j.id, j.job_name, j.user_id, j.user_role, j.user_email, j.attempts, j.request_body
    ), logged AS (
        INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message)
        SELECT u.id, u.attempts, 'info', 'started attempt ' || u.attempts FROM upd u
    ), spent AS (
        UPDATE jobrunner.rate_bucket b SET tokens = b.tokens - k.n
          FROM (SELECT u.job_name, count(*) AS n FROM upd u GROUP BY 1) k
         WHERE b.job_name = k.job_name
    ), turned AS (
        INSERT INTO jobrunner.group_turn AS t (job_name, owner, served_at)
        SELECT DISTINCT u.job_name, COALESCE(u.user_id, '00000000-0000-0000-0000-000000000000'::uuid), now()
          FROM upd u
        ON CONFLICT (job_name, owner) DO UPDATE SET served_at = EXCLUDED.served_at
    ), cfg AS (
        -- What the request needs from job_config, once per job name.
        SELECT c.job_name, COALESCE(c.url, _base || '/' || c.job_name) AS url,
               (SELECT pg_catalog.string_agg(e.key || ': ' || (e.value #>> '{}'), E'\n')
                  FROM pg_catalog.jsonb_each(c.headers) e) AS headers,
               (EXTRACT(epoch FROM c.timeout) * 1000)::bigint AS timeout_ms
          FROM jobrunner.job_config c
         WHERE c.job_name IN (SELECT u.job_name FROM upd u)
    )
    SELECT u.id, u.job_name, u.user_id, u.user_role, u.user_email, u.attempts,
           COALESCE(u.request_body::text, '{}'), c.url, c.headers, c.timeout_ms
      FROM upd u
      JOIN cfg c ON c.job_name = u.job_name;
END;
$$;

-- internal: record a batch of attempt outcomes from the worker. Fenced:
-- only rows still running the same attempt for this worker change. Plain
-- outcomes are written set-wise; those that must run a hook go one by one
-- through _settle_ok / _settle_fail, each in its own subtransaction.
CREATE FUNCTION jobrunner._record(_worker bigint, _ids uuid[], _attempts int[],
                                  _statuses int[], _errors text[], _responses text[],
                                  _durations double precision[], _retry_after_ms bigint[])
    RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A generic plan would misjudge the batch (unnest estimated at 10 rows,
    -- running rows at 1) and re-scan it per running row: plan each call.
    SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    _n int := 0;
    _k int;
    _r record;
BEGIN
    -- Outcomes that need a hook or a callback acknowledgement: one by one
    -- (skipped outright when no job name has either).
    IF EXISTS (SELECT 1 FROM jobrunner.job_config c
                WHERE c.on_complete IS NOT NULL OR c.on_fail IS NOT NULL
                   OR c.completion = 'callback') THEN
        FOR _r IN
            -- jj.job is the locked row as a jobrunner.job (a whole-row
            -- reference to a subquery would be an anonymous record).
            SELECT jj.job, x.status, x.err, x.resp, x.dur, x.ra,
                   (x.status BETWEEN 200 AND 299) AS ok
              FROM unnest(_ids, _attempts, _statuses, _errors, _responses, _durations, _retry_after_ms)
                   AS x(id, attempt, status, err, resp, dur, ra)
             CROSS JOIN LATERAL (
                    SELECT j AS job FROM jobrunner.job j
                     WHERE j.id = x.id AND j.state = 'running' AND j.attempts = x.attempt
                       AND j.locked_by = _worker AND j.acked_at IS NULL
                       FOR UPDATE) jj
              JOIN jobrunner.job_config c ON c.job_name = (jj.job).job_name
             WHERE CASE WHEN x.status BETWEEN 200 AND 299
                        THEN c.on_complete IS NOT NULL OR c.completion = 'callback'
                        ELSE c.on_fail IS NOT NULL AND (jj.job).attempts > (jj.job).max_retries END
        LOOP
            IF _r.ok THEN
                PERFORM jobrunner._settle_ok(_r.job, _r.status, _r.resp::jsonb, _r.dur, 'worker');
            ELSE
                PERFORM jobrunner._settle_fail(_r.job, _r.status, _r.err, true, _r.ra, _r.dur);
            END IF;
            _n := _n + 1;
        END LOOP;
    END IF;

    -- Everything else in one statement. Outcomes settled above no longer pass
    -- the fence (their job was completed, failed, re-queued or acknowledged),
    -- so the choice of path is written once, in the loop's query.
    WITH x AS (
        SELECT * FROM unnest(_ids, _attempts, _statuses, _errors, _responses, _durations, _retry_after_ms)
                 AS x(id, attempt, status, err, resp, dur, ra)
    ), t AS MATERIALIZED (
        SELECT x.*, j.row_ctid, (x.status BETWEEN 200 AND 299) AS ok, c.retry_backoff, c.retry_backoff_max
          FROM x
         CROSS JOIN LATERAL (
                SELECT j.ctid AS row_ctid, j.job_name FROM jobrunner.job j
                 WHERE j.id = x.id AND j.state = 'running' AND j.attempts = x.attempt
                   AND j.locked_by = _worker AND j.acked_at IS NULL) j
          LEFT JOIN jobrunner.job_config c ON c.job_name = j.job_name
    ), upd AS (
        UPDATE jobrunner.job j
           SET state = CASE WHEN t.ok THEN 'completed'
                            WHEN j.attempts > j.max_retries THEN 'failed'
                            ELSE 'pending' END,
               finished_at = CASE WHEN t.ok OR j.attempts > j.max_retries THEN now() END,
               next_run_at = CASE WHEN t.ok OR j.attempts > j.max_retries THEN j.next_run_at
                                  ELSE now() + jobrunner._retry_delay(
                                           j.attempts, COALESCE(t.retry_backoff, interval '10 seconds'),
                                           COALESCE(t.retry_backoff_max, interval '1 hour'), t.ra) END,
               updated_at = now(),
               last_status = NULLIF(t.status, 0),
               last_error = CASE WHEN t.ok THEN NULL ELSE t.err END,
               response = CASE WHEN t.ok THEN t.resp::jsonb ELSE j.response END,
               locked_at = NULL,
               locked_by = CASE WHEN t.ok OR j.attempts > j.max_retries THEN j.locked_by END
          FROM t
         -- By ctid: a TID scan, whatever the planner believes about how many
         -- rows are running. A row changed since t was read is skipped: only
         -- someone finishing this attempt changes a running row.
         WHERE j.ctid = t.row_ctid AND j.id = t.id AND j.state = 'running'
           AND j.attempts = t.attempt AND j.locked_by = _worker AND j.acked_at IS NULL
        RETURNING j.id, j.attempts, j.state, j.next_run_at, t.status, t.err, t.dur
    ), logged AS (
        INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message, status_code, duration_ms)
        SELECT u.id, u.attempts,
               CASE u.state WHEN 'completed' THEN 'info' WHEN 'pending' THEN 'warning' ELSE 'error' END,
               CASE WHEN u.state = 'completed'
                    THEN 'completed with status ' || u.status
                    ELSE pg_catalog.format('attempt %s failed: %s', u.attempts, u.err)
                         || CASE WHEN u.state = 'pending'
                                 THEN '; next attempt at ' || u.next_run_at
                                 ELSE '; failed permanently' END
               END,
               NULLIF(u.status, 0), u.dur
          FROM upd u
        RETURNING 1
    )
    SELECT count(*)::int INTO _k FROM logged;
    RETURN _n + _k;
END;
$$;

-- internal: callback jobs whose lease ran out fail their attempt.
CREATE FUNCTION jobrunner._expire_leases(_max int DEFAULT 1000) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
    _n int := 0;
BEGIN
    FOR _job IN
        SELECT * FROM jobrunner.job j
         WHERE j.state = 'running' AND j.acked_at IS NOT NULL AND j.lease_expires_at <= now()
         ORDER BY j.lease_expires_at
         LIMIT _max
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM jobrunner._settle_fail(_job, _job.last_status,
            pg_catalog.format('no complete_job within the callback lease (acknowledged at %s)', _job.acked_at),
            true, NULL, NULL);
        _n := _n + 1;
    END LOOP;
    RETURN _n;
END;
$$;

-- internal: when the worker must look again even if nothing wakes it: the
-- next delayed job or retry, callback lease expiry, or rate-limit refill.
CREATE FUNCTION jobrunner._next_wakeup() RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, not SQL: its plan is kept between calls (a SQL function
    -- with SET is planned anew on every call, and the worker calls this on
    -- every turn).
    RETURN LEAST(
        (SELECT min(j.next_run_at) FROM jobrunner.job j
          WHERE j.state = 'pending' AND j.next_run_at > now()),
        (SELECT min(j.lease_expires_at) FROM jobrunner.job j
          WHERE j.state = 'running' AND j.lease_expires_at IS NOT NULL),
        (SELECT min(now() + pg_catalog.make_interval(
                     secs => (GREATEST(1.0, c.rate_limit::float8 / 20) - b.tokens) / c.rate_limit::float8))
           FROM jobrunner.rate_bucket b
           JOIN jobrunner.job_config c ON c.job_name = b.job_name AND c.enabled
          WHERE b.tokens < GREATEST(1.0, c.rate_limit::float8 / 20)
            AND EXISTS (SELECT 1 FROM jobrunner.job j
                         WHERE j.state = 'pending' AND j.job_name = b.job_name
                           AND j.next_run_at <= now())));
END;
$$;

-- internal: purge completed and canceled jobs (and their logs) older than
-- jobrunner.retention, a small batch at a time.
CREATE FUNCTION jobrunner._purge(_retention interval, _batch int DEFAULT 1000) RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _n int;
BEGIN
    WITH old AS (
        SELECT j.id FROM jobrunner.job j
         WHERE j.finished_at < now() - _retention
           AND j.state IN ('completed', 'canceled')
         ORDER BY j.finished_at
         LIMIT _batch
           FOR UPDATE SKIP LOCKED  -- a row someone is retrying is left for later
    ), logs AS (
        DELETE FROM jobrunner.job_logs l USING old WHERE l.job_id = old.id
    ), gone AS (
        DELETE FROM jobrunner.job j USING old WHERE j.id = old.id RETURNING 1
    ), turns AS (
        DELETE FROM jobrunner.group_turn t WHERE t.served_at < now() - _retention
    )
    SELECT count(*)::int INTO _n FROM gone;
    RETURN _n;
END;
$$;

------------------------------------------------------------------------------
-- Recurring jobs (pg_cron)
------------------------------------------------------------------------------

-- internal: what pg_cron runs. A run is skipped while the previous run of the
-- same schedule is pending or running (the dedup key holds one active job).
CREATE FUNCTION jobrunner._run_schedule(_schedule_name text) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _s jobrunner.schedule;
    _before bigint;
    _id uuid;
BEGIN
    SELECT * INTO _s FROM jobrunner.schedule s WHERE s.schedule_name = _schedule_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schedule "%" does not exist', _schedule_name USING ERRCODE = 'undefined_object';
    END IF;
    SELECT count(*) INTO _before FROM jobrunner.job j
     WHERE j.dedup_key = 'schedule:' || _schedule_name AND j.job_name = _s.job_name
       AND j.state IN ('pending', 'running');
    _id := jobrunner._enqueue(_s.user_id, _s.user_role, NULL, _s.job_name, _s.request_body,
                              NULL, NULL, 'schedule:' || _schedule_name, NULL, 0);
    IF _before > 0 THEN
        INSERT INTO jobrunner.job_logs (job_id, attempt, log_level, log_message)
        VALUES (_id, 0, 'warning',
                pg_catalog.format('scheduled run of "%s" skipped: the previous run is still pending or running',
                                  _schedule_name));
    END IF;
    RETURN _id;
END;
$$;

-- public API (admin only)
CREATE FUNCTION jobrunner.schedule_job(_schedule_name text, _cron text, _job_name text,
                                       _request_body jsonb DEFAULT '{}',
                                       _user_id uuid DEFAULT NULL,
                                       _user_role text DEFAULT 'authenticated')
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _cron_id bigint;
BEGIN
    IF pg_catalog.to_regproc('cron.schedule') IS NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron') THEN
        RAISE EXCEPTION 'schedule_job needs pg_cron, which is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add pg_cron to shared_preload_libraries, set cron.database_name to this database, and CREATE EXTENSION pg_cron';
    END IF;
    IF _schedule_name IS NULL OR _schedule_name !~ '^[A-Za-z0-9._-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid schedule name %', pg_catalog.quote_nullable(_schedule_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'schedule names are 1 to 64 letters, digits, ".", "_" or "-"';
    END IF;
    IF _cron IS NULL THEN
        RAISE EXCEPTION 'cron expression must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobrunner.job_config c WHERE c.job_name = _job_name) THEN
        RAISE EXCEPTION 'job "%" is not configured', _job_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'an administrator inserts a row into jobrunner.job_config for it';
    END IF;
    EXECUTE 'SELECT cron.schedule($1, $2, $3)'
       INTO _cron_id
      USING 'jobrunner:' || _schedule_name, _cron,
            pg_catalog.format('SELECT jobrunner._run_schedule(%L)', _schedule_name);
    INSERT INTO jobrunner.schedule (schedule_name, cron, job_name, request_body, user_id,
                                    user_role, cron_job_id)
    VALUES (_schedule_name, _cron, _job_name, _request_body, _user_id,
            CASE WHEN _user_id IS NULL THEN NULL ELSE _user_role END, _cron_id)
    ON CONFLICT (schedule_name) DO UPDATE
       SET cron = EXCLUDED.cron, job_name = EXCLUDED.job_name,
           request_body = EXCLUDED.request_body, user_id = EXCLUDED.user_id,
           user_role = EXCLUDED.user_role, cron_job_id = EXCLUDED.cron_job_id;
    RETURN _cron_id;
END;
$$;
COMMENT ON FUNCTION jobrunner.schedule_job(text, text, text, jsonb, uuid, text) IS
    'admin only: queue a job on a five-field cron schedule through pg_cron; a run is skipped while the previous one is active';

-- public API (admin only)
CREATE FUNCTION jobrunner.unschedule_job(_schedule_name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _s jobrunner.schedule;
BEGIN
    SELECT * INTO _s FROM jobrunner.schedule s WHERE s.schedule_name = _schedule_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- By signature: cron.unschedule is overloaded (job id, job name), so
    -- to_regproc('cron.unschedule') is NULL and would skip this.
    IF pg_catalog.to_regprocedure('cron.unschedule(bigint)') IS NOT NULL THEN
        EXECUTE 'SELECT cron.unschedule($1)' USING _s.cron_job_id;
    END IF;
    DELETE FROM jobrunner.schedule s WHERE s.schedule_name = _schedule_name;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.unschedule_job(text) IS
    'admin only: stop a recurring job; false if no such schedule';

------------------------------------------------------------------------------
-- Dashboards
------------------------------------------------------------------------------

-- public API
CREATE VIEW jobrunner.job_stats WITH (security_invoker = true) AS
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
CREATE VIEW jobrunner.recent_failures WITH (security_invoker = true) AS
SELECT j.id, j.job_name, j.user_id, j.state, j.attempts, j.last_status, j.last_error,
       j.updated_at, j.next_run_at
  FROM jobrunner.job j
 WHERE j.last_error IS NOT NULL AND j.updated_at > now() - interval '1 day'
   AND j.state IN ('failed', 'pending');
COMMENT ON VIEW jobrunner.recent_failures IS
    'failed jobs and jobs waiting to retry, with their last error, from the last day';

-- Internal functions: documented for whoever reads \df+ jobrunner.*
COMMENT ON FUNCTION jobrunner._lock_running_job_for_caller(uuid, int) IS
    'internal: the caller''s job, locked, if running at the given attempt; NULL otherwise';
COMMENT ON FUNCTION jobrunner._lock_job_for_caller(uuid) IS
    'internal: lock a job the caller owns (or any, for an admin); raise not-found otherwise';
COMMENT ON FUNCTION jobrunner._validate_job_config() IS
    'internal: trigger refusing job_config rows that could misdirect or break requests';
COMMENT ON FUNCTION jobrunner._wake_trigger() IS
    'internal: statement trigger waking the worker at commit (job_config changes)';
COMMENT ON FUNCTION jobrunner._enqueue(uuid, text, text, text, jsonb, int, timestamptz, text, text, int) IS
    'internal: the one place jobs are inserted (dedup and idempotency through unique indexes)';
COMMENT ON FUNCTION jobrunner._run_hook(regprocedure, jobrunner.job) IS
    'internal: run a completion hook with request.jwt.claims set to the job user''s claims';
COMMENT ON FUNCTION jobrunner._complete(jobrunner.job, jobrunner.job_config, int, jsonb, double precision, text) IS
    'internal: mark a job completed, run on_complete, log; raises if the hook raises';
COMMENT ON FUNCTION jobrunner._settle_ok(jobrunner.job, int, jsonb, double precision, text) IS
    'internal: complete a job (or acknowledge a callback job); from the worker a raising on_complete fails the attempt, from complete_job it raises';
COMMENT ON FUNCTION jobrunner._settle_fail(jobrunner.job, int, text, boolean, bigint, double precision) IS
    'internal: fail an attempt: retry after backoff, or fail for good and run on_fail';
COMMENT ON FUNCTION jobrunner._recover(bigint) IS
    'internal: put attempts left in flight by another worker incarnation back to pending';
COMMENT ON FUNCTION jobrunner._claim(int, bigint) IS
    'internal: claim due jobs fairly within concurrency, max_concurrency and rate limits';
COMMENT ON FUNCTION jobrunner._record(bigint, uuid[], int[], int[], text[], text[], double precision[], bigint[]) IS
    'internal: record a batch of attempt outcomes, fenced by attempt and worker';
COMMENT ON FUNCTION jobrunner._expire_leases(int) IS
    'internal: fail callback attempts whose lease ran out';
COMMENT ON FUNCTION jobrunner._next_wakeup() IS
    'internal: when the worker must look at the queue again';
COMMENT ON FUNCTION jobrunner._purge(interval, int) IS
    'internal: delete completed and canceled jobs and their logs past retention, in batches';
COMMENT ON FUNCTION jobrunner._run_schedule(text) IS
    'internal: what pg_cron runs for a schedule; skipped while the previous run is active';

------------------------------------------------------------------------------
-- Privileges and row-level security
------------------------------------------------------------------------------

GRANT USAGE ON SCHEMA jobrunner TO PUBLIC;

ALTER TABLE jobrunner.job ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobrunner.job_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_read_own ON jobrunner.job FOR SELECT TO PUBLIC
    USING (user_id = (SELECT c.user_id FROM jobrunner._caller() c)
           OR (SELECT c.is_admin FROM jobrunner._caller() c));
CREATE POLICY job_logs_read_own ON jobrunner.job_logs FOR SELECT TO PUBLIC
    USING (EXISTS (SELECT 1 FROM jobrunner.job j WHERE j.id = job_logs.job_id));

REVOKE ALL ON ALL TABLES IN SCHEMA jobrunner FROM PUBLIC;
GRANT SELECT ON jobrunner.job, jobrunner.job_logs, jobrunner.job_stats,
                jobrunner.recent_failures TO PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA jobrunner FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    jobrunner.queue_job(text, jsonb, int, timestamptz, text, text, int),
    jobrunner.dequeue_job(uuid),
    jobrunner.retry_job(uuid),
    jobrunner.complete_job(uuid, jsonb, int),
    jobrunner.fail_job(uuid, text, boolean, int),
    jobrunner.sign_jwt(jsonb, text),
    jobrunner.worker_status(),
    -- row-level security policies evaluate these as the querying role
    jobrunner._caller(),
    jobrunner._outer_role()
TO PUBLIC;
