-- state_machine.sql — every transition of a job after it is queued. Every
-- final transition goes through _settle_ok or _settle_fail, whoever causes it
-- (worker, complete_job, fail_job, lease expiry).

CREATE OR REPLACE FUNCTION jobrunner._retry_delay(_attempt int, _base interval, _cap interval,
                                       _retry_after_ms bigint DEFAULT NULL)
    RETURNS interval
    LANGUAGE c VOLATILE PARALLEL SAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_retry_delay';
COMMENT ON FUNCTION jobrunner._retry_delay(int, interval, interval, bigint) IS
    'internal: jittered exponential backoff after failed attempt N, Retry-After honoured up to the cap';

CREATE OR REPLACE FUNCTION jobrunner._call_hook(_hook regprocedure, _job jobrunner.job, _claims jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_call_hook';
COMMENT ON FUNCTION jobrunner._call_hook(regprocedure, jobrunner.job, jsonb) IS
    'internal: call a hook as its owner, in a security-restricted operation, with the given claims as the only claims';

-- internal: run a completion hook the way Postgres runs an index expression
-- during maintenance: with the privileges of the hook function's owner and
-- never more (whoever completes the job, even the superuser worker), inside
-- a security-restricted operation, with request.jwt.claims and every
-- request.jwt.claim.* setting describing the job's user and nothing else.
-- queue_job inside the hook acts for the job's user.
CREATE OR REPLACE FUNCTION jobrunner._run_hook(_hook regprocedure, _job jobrunner.job) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM jobrunner._call_hook(_hook, _job,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'sub', _job.user_id,
            'role', COALESCE(_job.user_role, pg_catalog.current_setting('jobrunner.system_role')),
            'email', _job.user_email)));
END;
$$;
COMMENT ON FUNCTION jobrunner._run_hook(regprocedure, jobrunner.job) IS
    'internal: run a completion hook as its owner, in a security-restricted operation, with the job user''s claims';

-- internal: the stored job_logs row that ends (or acknowledges) _job's
-- current attempt. While the attempt has no stored row, job_logs shows its
-- "started" row from the job row (started_log_id): the first stored row
-- carries it from then on, and the caller's update of the job row clears
-- started_log_id in the same transaction.
CREATE OR REPLACE FUNCTION jobrunner._log_attempt_end(_job jobrunner.job, _level text, _message text,
                                                      _status int DEFAULT NULL,
                                                      _duration_ms double precision DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message, status_code, duration_ms,
                                         started_id, started_at)
    VALUES (_job.id, _job.attempt_seq, _level, _message, _status, _duration_ms,
            _job.started_log_id, CASE WHEN _job.started_log_id IS NOT NULL THEN _job.last_run_at END);
END;
$$;
COMMENT ON FUNCTION jobrunner._log_attempt_end(jobrunner.job, text, text, int, double precision) IS
    'internal: store the row ending an attempt, carrying the attempt''s "started" row';

-- internal: mark a job completed, run on_complete, log. Whatever raises here
-- (the hook, typically) undoes all of it: callers decide what happens next.
CREATE OR REPLACE FUNCTION jobrunner._complete(_job jobrunner.job, _cfg jobrunner.job_config,
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
           locked_at = NULL, lease_expires_at = NULL, started_log_id = NULL
     WHERE j.id = _job.id
    RETURNING * INTO _done;
    IF _cfg.on_complete IS NOT NULL THEN
        PERFORM jobrunner._run_hook(_cfg.on_complete, _done);
    END IF;
    -- Counted in the metrics at commit (and not if a savepoint around this
    -- rolls back: a hook that raised in the worker).
    PERFORM jobrunner._count_finished(ARRAY[_job.job_name], ARRAY['completed']);
    PERFORM jobrunner._log_attempt_end(_job, 'info',
                CASE WHEN _via = 'worker'
                     THEN pg_catalog.format('completed with status %s', _status)
                     ELSE pg_catalog.format('completed by %s', _via) END,
                _status, _duration_ms);
END;
$$;
COMMENT ON FUNCTION jobrunner._complete(jobrunner.job, jobrunner.job_config, int, jsonb, double precision, text) IS
    'internal: mark a job completed, run on_complete, log; raises if the hook raises';

-- internal: the job succeeded (or, for callback jobs, its endpoint acked).
-- From the worker, on_complete runs in a subtransaction: if it raises, its
-- writes and the completion are rolled back and the attempt counts as failed.
-- From complete_job, a raising hook raises in the caller's transaction, so
-- the caller's own writes and the completion still commit together or not at
-- all. Returns true when the job completed.
CREATE OR REPLACE FUNCTION jobrunner._settle_ok(_job jobrunner.job, _status int, _response jsonb,
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
        -- The request has ended: the job keeps its slot as a running job.
        UPDATE jobrunner.job j
           SET acked_at = now(), lease_expires_at = now() + _cfg.callback_lease,
               last_status = _status, updated_at = now(), sending_attempt = NULL, started_log_id = NULL
         WHERE j.id = _job.id;
        PERFORM jobrunner._log_attempt_end(_job, 'info',
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
COMMENT ON FUNCTION jobrunner._settle_ok(jobrunner.job, int, jsonb, double precision, text) IS
    'internal: complete a job (or acknowledge a callback job); from the worker a raising on_complete fails the attempt, from complete_job it raises';

-- internal: the attempt failed. Back to pending after a jittered backoff, or
-- failed once retries are used up (then on_fail runs, in a subtransaction).
CREATE OR REPLACE FUNCTION jobrunner._settle_fail(_job jobrunner.job, _status int, _error text,
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
    _what text := pg_catalog.format('attempt %s failed: %s', _job.attempt_seq, _error);
BEGIN
    SELECT * INTO _cfg FROM jobrunner.job_config c WHERE c.job_name = _job.job_name;
    IF _retry AND _job.attempts <= _job.max_retries THEN
        _next := now() + jobrunner._retry_delay(_job.attempts,
                                                COALESCE(_cfg.retry_backoff, interval '10 seconds'),
                                                COALESCE(_cfg.retry_backoff_max, interval '1 hour'),
                                                _retry_after_ms);
        -- A request still on the wire (fail_job called while it runs) keeps
        -- sending_attempt and the worker that sent it: the job is not sent
        -- again before that request has ended.
        UPDATE jobrunner.job j
           SET state = 'pending', next_run_at = _next, due = _next <= now(), updated_at = now(),
               last_status = _status, last_error = _error, locked_at = NULL,
               locked_by = CASE WHEN j.sending_attempt IS NULL THEN NULL ELSE j.locked_by END,
               acked_at = NULL, lease_expires_at = NULL, started_log_id = NULL
         WHERE j.id = _job.id;
        PERFORM jobrunner._log_attempt_end(_job, 'warning', pg_catalog.format('%s; next attempt at %s', _what, _next),
                                           _status, _duration_ms);
        PERFORM jobrunner._wake_at_commit();
        RETURN;
    END IF;
    BEGIN
        UPDATE jobrunner.job j
           SET state = 'failed', finished_at = now(), updated_at = now(),
               last_status = _status, last_error = _error,
               locked_at = NULL, acked_at = NULL, lease_expires_at = NULL, started_log_id = NULL
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
               locked_at = NULL, acked_at = NULL, lease_expires_at = NULL, started_log_id = NULL
         WHERE j.id = _job.id;
        _what := pg_catalog.format('%s; on_fail hook %s failed: %s', _what, _cfg.on_fail, SQLERRM);
    END;
    PERFORM jobrunner._count_finished(ARRAY[_job.job_name], ARRAY['failed']);
    PERFORM jobrunner._log_attempt_end(_job, 'error', pg_catalog.format('%s; failed permanently', _what),
                                       _status, _duration_ms);
END;
$$;
COMMENT ON FUNCTION jobrunner._settle_fail(jobrunner.job, int, text, boolean, bigint, double precision) IS
    'internal: fail an attempt: retry after backoff, or fail for good and run on_fail';

-- public API
CREATE OR REPLACE FUNCTION jobrunner.dequeue_job(_job_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
BEGIN
    IF jobrunner._drop_successor(_job_id) THEN
        RETURN true;
    END IF;
    _job := jobrunner._lock_job_for_caller(_job_id, ARRAY['pending']);
    IF _job.state <> 'pending' THEN
        RETURN false;
    END IF;
    UPDATE jobrunner.job j
       SET state = 'canceled', finished_at = now(), updated_at = now()
     WHERE j.id = _job_id;
    INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message)
    VALUES (_job_id, _job.attempt_seq, 'info', 'canceled');
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.dequeue_job(uuid) IS
    'cancel the caller''s job if it is still pending; false if it was already claimed or finished';

CREATE OR REPLACE FUNCTION jobrunner._cancel_at_commit(_job_id uuid, _attempt int) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_cancel_at_commit';
COMMENT ON FUNCTION jobrunner._cancel_at_commit(uuid, int) IS
    'internal: have the worker abort this attempt''s request once the current transaction commits';

-- public API
-- A pending job is canceled as by dequeue_job. A running one is canceled
-- too, and once this transaction commits the worker aborts its request in
-- flight (the endpoint sees the connection close). Its request still holds
-- the job's slot until it has ended (sending_attempt); whatever answer
-- comes late changes nothing. An acknowledged callback job has no request
-- left: it is canceled, and its endpoint's complete_job returns false.
CREATE OR REPLACE FUNCTION jobrunner.cancel_job(_job_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
BEGIN
    IF jobrunner._drop_successor(_job_id) THEN
        RETURN true;
    END IF;
    _job := jobrunner._lock_job_for_caller(_job_id, ARRAY['pending', 'running']);
    IF _job.state NOT IN ('pending', 'running') THEN
        RETURN false;
    END IF;
    UPDATE jobrunner.job j
       SET state = 'canceled', finished_at = now(), updated_at = now(), locked_at = NULL,
           acked_at = NULL, lease_expires_at = NULL, started_log_id = NULL,
           locked_by = CASE WHEN j.sending_attempt IS NULL THEN NULL ELSE j.locked_by END
     WHERE j.id = _job_id;
    PERFORM jobrunner._log_attempt_end(_job, 'info',
                CASE WHEN _job.state = 'running'
                     THEN pg_catalog.format('canceled while attempt %s was running', _job.attempt_seq)
                     ELSE 'canceled' END);
    IF _job.sending_attempt IS NOT NULL THEN
        PERFORM jobrunner._cancel_at_commit(_job_id, _job.sending_attempt);
    END IF;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.cancel_job(uuid) IS
    'cancel the caller''s job, pending or running: a request in flight is aborted once the transaction commits';

-- public API
CREATE OR REPLACE FUNCTION jobrunner.retry_job(_job_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
BEGIN
    _job := jobrunner._lock_job_for_caller(_job_id, ARRAY['failed', 'canceled']);
    IF _job.state NOT IN ('failed', 'canceled') THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE jobrunner.job j
           SET state = 'pending', attempts = 0, next_run_at = now(), due = true,
               updated_at = now(), finished_at = NULL, locked_at = NULL,
               locked_by = CASE WHEN j.sending_attempt IS NULL THEN NULL ELSE j.locked_by END,
               acked_at = NULL, lease_expires_at = NULL
         WHERE j.id = _job_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'cannot retry job %: another active job holds its dedup key %', _job_id,
                pg_catalog.quote_literal(_job.dedup_key)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Cancel or wait for the other job first.';
    END;
    INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message)
    VALUES (_job_id, _job.attempt_seq, 'info',
            pg_catalog.format('retried by hand after %s attempts', _job.attempts));
    PERFORM jobrunner._wake_at_commit();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION jobrunner.retry_job(uuid) IS
    'put a failed or canceled job back to pending with its attempts reset (attempt numbers go on)';

-- public API (admins: checked inside)
-- Failed jobs of a job name (every name when NULL) back to pending, as
-- retry_job does one by one: those that failed since _since, whose
-- last_error is LIKE _error_like. A job whose dedup key another active job
-- now holds stays failed. Returns how many were retried.
CREATE OR REPLACE FUNCTION jobrunner.retry_jobs(_job_name text, _since timestamptz DEFAULT NULL,
                                                _error_like text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _id uuid;
    _n bigint := 0;
BEGIN
    PERFORM jobrunner._require_admin('retry_jobs');
    IF _job_name IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM jobrunner.job_config c WHERE c.job_name = _job_name) THEN
        RAISE EXCEPTION 'unknown job name %', pg_catalog.quote_literal(_job_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Retried jobs go to the job_config row of their name; pass NULL for every job name.';
    END IF;
    FOR _id IN
        SELECT j.id FROM jobrunner.job j
         WHERE j.state = 'failed'
           AND (_job_name IS NULL OR j.job_name = _job_name)
           AND (_since IS NULL OR j.finished_at >= _since)
           AND (_error_like IS NULL OR j.last_error LIKE _error_like)
         -- Newest first: of failed jobs sharing a dedup key only one can be
         -- pending, and it must be the newest body (coalesced bodies).
         ORDER BY j.created_at DESC, j.id
    LOOP
        BEGIN
            IF jobrunner.retry_job(_id) THEN
                _n := _n + 1;
            END IF;
        EXCEPTION WHEN unique_violation THEN
            NULL;  -- another active job holds its dedup key: it stays failed
        END;
    END LOOP;
    RETURN _n;
END;
$$;
COMMENT ON FUNCTION jobrunner.retry_jobs(text, timestamptz, text) IS
    'admins: put failed jobs of a job name (NULL: all) back to pending, those failed since _since whose last_error is LIKE _error_like; returns how many';

-- public API
CREATE OR REPLACE FUNCTION jobrunner.complete_job(_job_id uuid, _result jsonb DEFAULT NULL,
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
    'complete a running job inside the caller''s transaction (an admin, or the endpoint with the token of the current attempt); false if it is not running at that attempt';

-- public API
CREATE OR REPLACE FUNCTION jobrunner.fail_job(_job_id uuid, _error text, _retry boolean DEFAULT true,
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
    'fail the current attempt of a running job inside the caller''s transaction (an admin, or the endpoint with the token of that attempt); retried unless _retry is false or retries are used up';
