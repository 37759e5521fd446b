-- coalesce.sql — queue_job's _on_duplicate => 'replace': a newer body for a
-- dedup key replaces the body of the job holding the key while that job has
-- never been sent, and otherwise waits behind it (jobrunner.job_successor)
-- until it ends. A request once sent is never changed, and bodies are sent
-- in the order they were queued.

-- internal: called by _enqueue with the holder locked (FOR UPDATE), so the
-- claim cannot take it meanwhile; returns the id the new body runs under.
CREATE OR REPLACE FUNCTION jobrunner._coalesce(_holder_id uuid, _in_place boolean, _request_body jsonb,
                                               _max_retries int, _run_at timestamptz, _priority int,
                                               _traceparent text, _tracestate text)
    RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _id uuid;
BEGIN
    IF _in_place THEN
        -- The newest call decides the body, the trace it belongs to and, when
        -- it gives one, the time (debounce: each call can push it later).
        UPDATE jobrunner.job j
           SET request_body = _request_body,
               max_retries = COALESCE(_max_retries, j.max_retries),
               next_run_at = COALESCE(_run_at, j.next_run_at),
               due = CASE WHEN _run_at IS NULL THEN j.due ELSE _run_at <= now() END,
               traceparent = _traceparent, tracestate = _tracestate,
               updated_at = now()
         WHERE j.id = _holder_id;
        -- Its time may have moved: the worker looks again.
        PERFORM jobrunner._wake_at_commit();
        RETURN _holder_id;
    END IF;
    INSERT INTO jobrunner.job_successor AS s
           (holder_id, request_body, run_at, priority, max_retries, traceparent, tracestate)
    VALUES (_holder_id, _request_body, _run_at, COALESCE(_priority, 0), _max_retries,
            _traceparent, _tracestate)
    ON CONFLICT (holder_id) DO UPDATE
       SET request_body = EXCLUDED.request_body,
           run_at = COALESCE(EXCLUDED.run_at, s.run_at),
           priority = EXCLUDED.priority,
           max_retries = COALESCE(EXCLUDED.max_retries, s.max_retries),
           traceparent = EXCLUDED.traceparent, tracestate = EXCLUDED.tracestate
    RETURNING s.id INTO _id;
    RETURN _id;
END;
$$;
COMMENT ON FUNCTION jobrunner._coalesce(uuid, boolean, jsonb, int, timestamptz, int, text, text) IS
    'internal: give a pending, never sent job a newer body, or queue the body behind the job holding the dedup key';

-- internal: when the job holding a dedup key ends (however it ends, or is
-- deleted while active), the body waiting behind it becomes a pending job,
-- under the id queue_job returned for it, in the same transaction.
CREATE OR REPLACE FUNCTION jobrunner._release_successor()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _s jobrunner.job_successor;
BEGIN
    DELETE FROM jobrunner.job_successor s WHERE s.holder_id = OLD.id RETURNING s.* INTO _s;
    IF _s.id IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO jobrunner.job (id, user_id, user_role, user_email, job_name, request_body, priority,
                               max_retries, dedup_key, created_at, next_run_at, due,
                               traceparent, tracestate)
    VALUES (_s.id, OLD.user_id, OLD.user_role, OLD.user_email, OLD.job_name, _s.request_body,
            _s.priority, COALESCE(_s.max_retries, OLD.max_retries), OLD.dedup_key, _s.queued_at,
            COALESCE(_s.run_at, now()), COALESCE(_s.run_at <= now(), true),
            _s.traceparent, _s.tracestate);
    INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message)
    VALUES (_s.id, 0, 'info',
            pg_catalog.format('created: queued at %s behind job %s, which has ended', _s.queued_at, OLD.id));
    PERFORM jobrunner._wake_at_commit();
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION jobrunner._release_successor() IS
    'internal trigger: queue the body waiting behind a job with a dedup key once that job ends';

-- Only a job with a dedup key leaving pending/running can have a body behind
-- it: the WHEN clauses keep every other update and delete (the worker's
-- batches, purges) from calling the function at all.
CREATE OR REPLACE TRIGGER job_release_successor
    AFTER UPDATE OF state ON jobrunner.job
    FOR EACH ROW
    WHEN (OLD.dedup_key IS NOT NULL AND OLD.state IN ('pending', 'running')
          AND NEW.state NOT IN ('pending', 'running'))
    EXECUTE FUNCTION jobrunner._release_successor();
CREATE OR REPLACE TRIGGER job_release_successor_on_delete
    AFTER DELETE ON jobrunner.job
    FOR EACH ROW
    WHEN (OLD.dedup_key IS NOT NULL AND OLD.state IN ('pending', 'running'))
    EXECUTE FUNCTION jobrunner._release_successor();

-- internal: dequeue_job and cancel_job given the id of a body still waiting
-- behind its holder: the holder's user or an administrator drops it (true);
-- anyone else learns nothing (false, and the caller goes on to report the
-- id as not found).
CREATE OR REPLACE FUNCTION jobrunner._drop_successor(_job_id uuid)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _me record;
    _holder_id uuid;
BEGIN
    SELECT s.holder_id INTO _holder_id FROM jobrunner.job_successor s WHERE s.id = _job_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The job ahead is locked first, as a replace locks it: the worker,
    -- which releases the body when that job ends, skips a locked job and
    -- comes back to it, instead of waiting for this transaction.
    _me := jobrunner._caller();
    PERFORM FROM jobrunner.job j
      WHERE j.id = _holder_id AND COALESCE(_me.is_admin OR j.user_id = _me.user_id, false)
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM jobrunner.job_successor s WHERE s.id = _job_id AND s.holder_id = _holder_id;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION jobrunner._drop_successor(uuid) IS
    'internal: drop a body waiting behind its holder, for the holder''s user or an admin';
