-- queue.sql — putting jobs in the queue, in the caller's transaction.

CREATE OR REPLACE FUNCTION jobrunner._wake_at_commit() RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_wake_at_commit';
COMMENT ON FUNCTION jobrunner._wake_at_commit() IS
    'internal: wake the worker once when the current transaction commits';

CREATE OR REPLACE FUNCTION jobrunner._max_request_bytes() RETURNS bigint
    LANGUAGE c STABLE PARALLEL SAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_max_request_bytes';
COMMENT ON FUNCTION jobrunner._max_request_bytes() IS
    'internal: jobrunner.max_request_size in bytes';

-- internal: a W3C traceparent (version other than ff, trace and parent ids
-- not all zeros, lowercase hex), as this runner sends it on.
CREATE OR REPLACE FUNCTION jobrunner._is_traceparent(_value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(_value ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
                    AND pg_catalog.left(_value, 2) <> 'ff'
                    AND pg_catalog.substr(_value, 4, 32) <> pg_catalog.repeat('0', 32)
                    AND pg_catalog.substr(_value, 37, 16) <> pg_catalog.repeat('0', 16), false)
$$;
COMMENT ON FUNCTION jobrunner._is_traceparent(text) IS
    'internal: whether a value is a W3C traceparent this runner sends on';

-- internal: the W3C trace context a new job carries: the caller's explicit
-- traceparent (refused, naming it, when malformed), else the one PostgREST
-- put in request.headers for the HTTP request being served (ignored when
-- malformed: a client's bad header must not fail the application's write),
-- else none. tracestate goes only with a traceparent, and only when it is
-- printable ASCII of at most 512 characters (it becomes a request header).
CREATE OR REPLACE FUNCTION jobrunner._trace_context(_traceparent text, _tracestate text,
                                                    OUT traceparent text, OUT tracestate text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _raw text;
    _headers jsonb;
BEGIN
    IF _traceparent IS NULL AND _tracestate IS NOT NULL THEN
        RAISE EXCEPTION 'tracestate needs a traceparent'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass _traceparent too, or neither.';
    END IF;
    IF _traceparent IS NULL THEN
        -- Parsed only when it may hold one: PostgREST sets it on every request.
        _raw := pg_catalog.current_setting('request.headers', true);
        IF _raw IS NULL OR pg_catalog.strpos(_raw, 'traceparent') = 0 THEN
            RETURN;
        END IF;
        BEGIN
            _headers := _raw::jsonb;
        EXCEPTION WHEN others THEN
            RETURN;  -- not JSON: no trace context
        END;
        IF pg_catalog.jsonb_typeof(_headers) = 'object' THEN
            _traceparent := _headers ->> 'traceparent';
            _tracestate := _headers ->> 'tracestate';
        END IF;
        IF NOT jobrunner._is_traceparent(_traceparent) THEN
            RETURN;
        END IF;
    ELSIF NOT jobrunner._is_traceparent(_traceparent) THEN
        RAISE EXCEPTION 'invalid traceparent %', pg_catalog.quote_literal(pg_catalog.left(_traceparent, 100))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A W3C traceparent is version-traceid-parentid-flags in lowercase hex, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.';
    END IF;
    traceparent := _traceparent;
    IF _tracestate ~ '^[\x20-\x7e]+$' AND pg_catalog.length(_tracestate) <= 512 THEN
        tracestate := _tracestate;
    END IF;
END;
$$;
COMMENT ON FUNCTION jobrunner._trace_context(text, text) IS
    'internal: the trace context a new job carries (explicit, else PostgREST''s request.headers, else none)';

-- internal: the one place jobs are inserted. Dedup and idempotency keys are
-- enforced by unique indexes (ON CONFLICT), so they hold under concurrency.
CREATE OR REPLACE FUNCTION jobrunner._enqueue(_user_id uuid, _user_role text, _user_email text,
                                   _job_name text, _request_body jsonb, _max_retries int,
                                   _run_at timestamptz, _dedup_key text,
                                   _idempotency_key text, _priority int,
                                   _traceparent text DEFAULT NULL, _tracestate text DEFAULT NULL,
                                   _on_duplicate text DEFAULT 'keep')
    RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _cfg_retries int;
    _id uuid;
    _size bigint;
    _tp text;
    _ts text;
    _holder record;
BEGIN
    IF _job_name IS NULL THEN
        RAISE EXCEPTION 'job name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot queue job "%" on a standby', _job_name
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Queue jobs on the primary; a standby reads the queue but never dispatches.';
    END IF;
    SELECT c.max_retries INTO _cfg_retries FROM jobrunner.job_config c WHERE c.job_name = _job_name;
    -- A configured name passed job_config's own check (the pattern below:
    -- matching it costs more than the rest of the checks together, so only
    -- a name without a config is matched), except a name of dots only, which
    -- 0.1.0 let through: with jobrunner.base_url the name is a path segment.
    IF NOT FOUND OR pg_catalog.ltrim(_job_name, '.') = '' THEN
        IF _job_name !~ '^[A-Za-z0-9._-]{1,128}$' OR pg_catalog.ltrim(_job_name, '.') = '' THEN
            RAISE EXCEPTION 'invalid job name %', pg_catalog.quote_literal(pg_catalog.left(_job_name, 200))
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Job names are 1 to 128 letters, digits, ".", "_" or "-", and not only dots.';
        END IF;
        RAISE EXCEPTION 'job "%" is not configured', _job_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'An administrator inserts a row into jobrunner.job_config for it.';
    END IF;
    IF _max_retries IS NOT NULL AND (_max_retries < 0 OR _max_retries > 1000) THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 1000, not %', _max_retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.length(_dedup_key) > 512 OR pg_catalog.length(_idempotency_key) > 512 THEN
        RAISE EXCEPTION 'dedup and idempotency keys are at most 512 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF _on_duplicate IS NULL OR _on_duplicate NOT IN ('keep', 'replace') THEN
        RAISE EXCEPTION 'invalid _on_duplicate %', COALESCE(pg_catalog.quote_literal(pg_catalog.left(_on_duplicate, 100)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '''keep'' returns the job already queued with the dedup key; ''replace'' gives it the new body (or queues the body behind it once it has been sent).';
    END IF;
    IF _on_duplicate = 'replace' AND _dedup_key IS NULL THEN
        RAISE EXCEPTION '_on_duplicate => ''replace'' needs a _dedup_key'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The dedup key names the job whose body the new one replaces.';
    END IF;
    -- A replaced body is merged into another job: the key could not name
    -- the job that sends it, and a repeated call would send it twice.
    IF _on_duplicate = 'replace' AND _idempotency_key IS NOT NULL THEN
        RAISE EXCEPTION '_on_duplicate => ''replace'' does not take an _idempotency_key'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Repeating a replace is harmless: the same body replaces itself.';
    END IF;
    IF _user_id IS NOT NULL AND _user_role IS NULL THEN
        RAISE EXCEPTION 'a job for user % needs a role', _user_id
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A job dated at infinity would never run, and its date breaks every
    -- computation of when to look next.
    IF NOT pg_catalog.isfinite(_run_at) THEN
        RAISE EXCEPTION 'run_at must be a finite time, not %', _run_at
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to run the job as soon as possible.';
    END IF;
    -- The body travels through the worker's memory and onto the wire: its
    -- size is capped here, where the caller can still be told.
    _size := pg_catalog.octet_length(_request_body::text);
    IF _size > jobrunner._max_request_bytes() THEN
        RAISE EXCEPTION 'request body of job "%" is % bytes, more than jobrunner.max_request_size (%)',
                _job_name, _size, pg_catalog.current_setting('jobrunner.max_request_size')
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store large payloads in a table and queue their key; an administrator can raise jobrunner.max_request_size.';
    END IF;

    -- Most calls carry no trace context: it is looked for only where there
    -- can be one (an argument, or PostgREST's request.headers naming it).
    IF _traceparent IS NOT NULL OR _tracestate IS NOT NULL
       OR pg_catalog.strpos(pg_catalog.current_setting('request.headers', true), 'traceparent') > 0 THEN
        SELECT t.traceparent, t.tracestate INTO _tp, _ts
          FROM jobrunner._trace_context(_traceparent, _tracestate) t;
    END IF;

    FOR _try IN 1..3 LOOP
        -- Without a key nothing can collide (ids are random uuids): a plain
        -- insert, as ON CONFLICT's speculative insertion costs a probe of
        -- every unique index and a WAL record more per job.
        IF _dedup_key IS NULL AND _idempotency_key IS NULL THEN
            INSERT INTO jobrunner.job (user_id, user_role, user_email, job_name, request_body,
                                       priority, max_retries, next_run_at, due, traceparent, tracestate,
                                       created_log_id)
            VALUES (_user_id, _user_role, _user_email, _job_name, _request_body,
                    COALESCE(_priority, 0), COALESCE(_max_retries, _cfg_retries),
                    COALESCE(_run_at, now()), COALESCE(_run_at <= now(), true), _tp, _ts,
                    pg_catalog.nextval('jobrunner.job_log_entry_id_seq'))
            RETURNING id INTO _id;
        ELSE
            INSERT INTO jobrunner.job (user_id, user_role, user_email, job_name, request_body,
                                       priority, max_retries, dedup_key, idempotency_key, next_run_at,
                                       due, traceparent, tracestate, created_log_id)
            VALUES (_user_id, _user_role, _user_email, _job_name, _request_body,
                    COALESCE(_priority, 0), COALESCE(_max_retries, _cfg_retries), _dedup_key,
                    _idempotency_key, COALESCE(_run_at, now()), COALESCE(_run_at <= now(), true), _tp, _ts,
                    pg_catalog.nextval('jobrunner.job_log_entry_id_seq'))
            ON CONFLICT DO NOTHING
            RETURNING id INTO _id;
        END IF;
        -- Its "created" row in job_logs is the job row itself (created_log_id).
        IF _id IS NOT NULL THEN
            PERFORM jobrunner._wake_at_commit();
            RETURN _id;
        END IF;
        -- A conflicting job exists: return it.
        SELECT j.id INTO _id FROM jobrunner.job j
         WHERE _idempotency_key IS NOT NULL AND j.job_name = _job_name
           AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)
               = COALESCE(_user_id, '00000000-0000-0000-0000-000000000000'::uuid)
           AND j.idempotency_key = _idempotency_key;
        IF _id IS NOT NULL THEN
            RETURN _id;
        END IF;
        -- The job holding the dedup key, locked when it is to be changed:
        -- the claim skips a locked job, and a job the claim locked first is
        -- seen here as running once the claim commits.
        IF _on_duplicate = 'keep' THEN
            SELECT j.id INTO _holder FROM jobrunner.job j
             WHERE _dedup_key IS NOT NULL AND j.job_name = _job_name
               AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)
                   = COALESCE(_user_id, '00000000-0000-0000-0000-000000000000'::uuid)
               AND j.dedup_key = _dedup_key AND j.state IN ('pending', 'running');
        ELSE
            SELECT j.id, j.state, j.attempt_seq INTO _holder FROM jobrunner.job j
             WHERE j.job_name = _job_name
               AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid)
                   = COALESCE(_user_id, '00000000-0000-0000-0000-000000000000'::uuid)
               AND j.dedup_key = _dedup_key AND j.state IN ('pending', 'running')
               FOR UPDATE;
        END IF;
        IF _holder.id IS NOT NULL THEN
            IF _on_duplicate = 'keep' THEN
                RETURN _holder.id;
            END IF;
            RETURN jobrunner._coalesce(_holder.id, _holder.state = 'pending' AND _holder.attempt_seq = 0,
                                       _request_body, _max_retries, _run_at, _priority, _tp, _ts);
        END IF;
        -- The conflicting job finished between our insert and our look-up; try again.
    END LOOP;
    RAISE EXCEPTION 'could not queue job "%": its dedup key kept changing hands', _job_name
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END;
$$;
COMMENT ON FUNCTION jobrunner._enqueue(uuid, text, text, text, jsonb, int, timestamptz, text, text, int, text, text, text) IS
    'internal: the one place jobs are inserted (dedup and idempotency through unique indexes)';

-- public API
CREATE OR REPLACE FUNCTION jobrunner.queue_job(_job_name text, _request_body jsonb DEFAULT '{}',
                                    _max_retries int DEFAULT NULL,
                                    _run_at timestamptz DEFAULT NULL,
                                    _dedup_key text DEFAULT NULL,
                                    _idempotency_key text DEFAULT NULL,
                                    _priority int DEFAULT 0,
                                    _traceparent text DEFAULT NULL,
                                    _tracestate text DEFAULT NULL,
                                    _on_duplicate text DEFAULT 'keep')
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _me record := jobrunner._caller();
BEGIN
    -- A user's key must not pre-empt a schedule's runs (see _run_schedule).
    IF NOT _me.is_admin AND _dedup_key LIKE 'schedule:%' THEN
        RAISE EXCEPTION 'dedup key % is reserved for schedules', pg_catalog.quote_literal(pg_catalog.left(_dedup_key, 100))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Choose a key that does not start with "schedule:".';
    END IF;
    IF _me.user_id IS NULL AND NOT _me.is_admin THEN
        RAISE EXCEPTION 'queue_job needs the caller''s identity: no believed request.jwt.claims with a "sub"'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call it through PostgREST with a user''s JWT, or as an administrator use jobrunner.queue_job_for.';
    END IF;
    RETURN jobrunner._enqueue(_me.user_id, _me.user_role, _me.user_email, _job_name,
                              _request_body, _max_retries, _run_at, _dedup_key,
                              _idempotency_key, _priority, _traceparent, _tracestate, _on_duplicate);
END;
$$;
COMMENT ON FUNCTION jobrunner.queue_job(text, jsonb, int, timestamptz, text, text, int, text, text, text) IS
    'queue a job owned by the caller (from request.jwt.claims) in the caller''s transaction, in the caller''s trace; returns its id';

-- public API (admin only)
CREATE OR REPLACE FUNCTION jobrunner.queue_job_for(_user_id uuid, _user_role text, _user_email text,
                                        _job_name text, _request_body jsonb DEFAULT '{}',
                                        _max_retries int DEFAULT NULL,
                                        _run_at timestamptz DEFAULT NULL,
                                        _dedup_key text DEFAULT NULL,
                                        _idempotency_key text DEFAULT NULL,
                                        _priority int DEFAULT 0,
                                        _on_duplicate text DEFAULT 'keep')
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- jobrunner._require_admin, inline: this is called per job.
    IF NOT (jobrunner._caller_context()).is_admin THEN
        RAISE EXCEPTION 'queue_job_for is for administrators'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Administrators are superusers and roles granted EXECUTE on jobrunner.queue_job_for, acting as themselves (not through another role''s SECURITY DEFINER function, nor inside VACUUM or ANALYZE).';
    END IF;
    RETURN jobrunner._enqueue(_user_id, CASE WHEN _user_id IS NULL THEN NULL ELSE _user_role END,
                              CASE WHEN _user_id IS NULL THEN NULL ELSE _user_email END,
                              _job_name, _request_body, _max_retries, _run_at, _dedup_key,
                              _idempotency_key, _priority, NULL, NULL, _on_duplicate);
END;
$$;
COMMENT ON FUNCTION jobrunner.queue_job_for(uuid, text, text, text, jsonb, int, timestamptz, text, text, int, text) IS
    'admin only: queue a job for the given user (NULL user: a system job)';
