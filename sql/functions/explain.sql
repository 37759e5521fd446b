-- explain.sql — why a job is not running: explain_job(id) answers in rows,
-- one per reason, in words and figures.

-- public API
-- SECURITY DEFINER: the reasons read job_config and the running jobs of the
-- job's name, which its user cannot; the job itself is shown only to its
-- user, an admin, or the endpoint holding the token of one of its attempts
-- (_lock_job_for_caller raises not-found to anyone else, and locks nothing
-- when given no state). What other users' jobs contribute is counts only.
CREATE OR REPLACE FUNCTION jobrunner.explain_job(_job_id uuid)
    RETURNS TABLE (reason text, blocking boolean, detail text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _job jobrunner.job;
    _cfg jobrunner.job_config;
    _owner uuid;
    _worker record;
    _n bigint;
    _tokens double precision;
    _max_in_flight int := pg_catalog.current_setting('jobrunner.max_in_flight', true)::int;
    _blocked boolean := false;
    _dest record;
    _behind record;
    _me record;
BEGIN
    -- A body queued with _on_duplicate => 'replace' behind a job already
    -- sent: shown to the holder's user and admins, like the holder.
    SELECT s.holder_id, s.queued_at, s.run_at, j.user_id INTO _behind
      FROM jobrunner.job_successor s JOIN jobrunner.job j ON j.id = s.holder_id
     WHERE s.id = _job_id;
    IF FOUND THEN
        _me := jobrunner._caller();
        IF NOT COALESCE(_me.is_admin OR _behind.user_id = _me.user_id, false) THEN
            -- Raises not-found exactly as for an id that names nothing.
            PERFORM jobrunner._lock_job_for_caller(_job_id, ARRAY[]::text[]);
        END IF;
        RETURN QUERY SELECT 'behind', true,
            pg_catalog.format('queued at %s behind job %s (same dedup key, already sent): it becomes pending%s when that job ends',
                              _behind.queued_at, _behind.holder_id,
                              CASE WHEN _behind.run_at > now() THEN pg_catalog.format(' (due at %s)', _behind.run_at) ELSE '' END);
        RETURN;
    END IF;
    _job := jobrunner._lock_job_for_caller(_job_id, ARRAY[]::text[]);
    _owner := COALESCE(_job.user_id, '00000000-0000-0000-0000-000000000000'::uuid);
    IF _job.state <> 'pending' THEN
        reason := 'state';
        blocking := _job.state = 'running';
        detail := CASE _job.state
            WHEN 'running' THEN
                pg_catalog.format('running attempt %s since %s', _job.attempt_seq, _job.last_run_at)
                || CASE WHEN _job.acked_at IS NOT NULL
                        THEN pg_catalog.format('; acknowledged, waiting for complete_job until %s',
                                               _job.lease_expires_at)
                        ELSE '; its request is on the wire' END
            WHEN 'completed' THEN pg_catalog.format('completed at %s', _job.finished_at)
            WHEN 'failed' THEN pg_catalog.format('failed at %s after %s attempts: %s', _job.finished_at,
                                                 _job.attempts, _job.last_error)
            ELSE pg_catalog.format('canceled at %s', _job.finished_at) END;
        RETURN NEXT;
        RETURN;
    END IF;

    IF _job.sending_attempt IS NOT NULL THEN
        _blocked := true;
        RETURN QUERY SELECT 'previous_attempt', true,
            pg_catalog.format('attempt %s was settled while its request was on the wire; the job waits until that request ends',
                              _job.sending_attempt);
    END IF;
    IF _job.next_run_at > now() THEN
        _blocked := true;
        RETURN QUERY SELECT 'not_due', true,
            pg_catalog.format('due at %s (in %s)', _job.next_run_at,
                              pg_catalog.date_trunc('milliseconds', _job.next_run_at - now()))
            || CASE WHEN _job.attempts > 0 AND _job.last_error IS NOT NULL
                    THEN pg_catalog.format(', a retry after attempt %s failed: %s', _job.attempts, _job.last_error)
                    ELSE '' END;
    END IF;

    SELECT * INTO _cfg FROM jobrunner.job_config c WHERE c.job_name = _job.job_name;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_config', true,
            pg_catalog.format('job name %s has no job_config row: nothing dispatches it', _job.job_name);
        RETURN;
    END IF;
    IF NOT _cfg.enabled THEN
        _blocked := true;
        RETURN QUERY SELECT 'disabled', true,
            pg_catalog.format('job name %s is disabled in job_config', _job.job_name);
    END IF;

    -- Slots: jobs running, or whose request is still on the wire, count.
    SELECT count(*) INTO _n FROM jobrunner.job j
     WHERE (j.state = 'running' OR j.sending_attempt OPERATOR(pg_catalog.=) j.attempt_seq)
       AND j.job_name = _job.job_name
       AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) = _owner;
    _blocked := _blocked OR _n >= _cfg.concurrency_limit;
    RETURN QUERY SELECT 'concurrency_limit', _n >= _cfg.concurrency_limit,
        pg_catalog.format('%s of %s running for this user and job name (concurrency_limit)', _n,
                          _cfg.concurrency_limit);
    IF _cfg.max_concurrency IS NOT NULL THEN
        SELECT count(*) INTO _n FROM jobrunner.job j
         WHERE (j.state = 'running' OR j.sending_attempt OPERATOR(pg_catalog.=) j.attempt_seq)
           AND j.job_name = _job.job_name;
        _blocked := _blocked OR _n >= _cfg.max_concurrency;
        RETURN QUERY SELECT 'max_concurrency', _n >= _cfg.max_concurrency,
            pg_catalog.format('%s of %s running for job name %s across all users (max_concurrency)', _n,
                              _cfg.max_concurrency, _job.job_name);
    END IF;
    IF _cfg.rate_limit IS NOT NULL THEN
        -- The bucket as the next claim would refill it.
        SELECT LEAST(GREATEST(1.0, _cfg.rate_limit::float8 / 10),
                     b.tokens + EXTRACT(epoch FROM now() - b.refreshed_at)::float8 * _cfg.rate_limit::float8)
          INTO _tokens
          FROM jobrunner.rate_bucket b WHERE b.job_name = _job.job_name;
        _tokens := COALESCE(_tokens, 1);
        _blocked := _blocked OR _tokens < 1;
        RETURN QUERY SELECT 'rate_limit', _tokens < 1,
            CASE WHEN _tokens < 1
                 THEN pg_catalog.format('rate_limit %s per second: the next dispatch is allowed at %s',
                                        _cfg.rate_limit,
                                        now() + pg_catalog.make_interval(secs => (1 - _tokens) / _cfg.rate_limit::float8))
                 ELSE pg_catalog.format('rate_limit %s per second: dispatches allowed now: %s', _cfg.rate_limit,
                                        floor(_tokens)) END;
    END IF;

    -- The destination as the worker sees it (not named: job_config, and so
    -- where a job goes, is for admins).
    SELECT d.* INTO _dest FROM jobrunner._destinations() d
     WHERE d.destination = jobrunner._destination_of(
               COALESCE(_cfg.url, NULLIF(pg_catalog.current_setting('jobrunner.base_url'), '') || '/' || _cfg.job_name));
    IF _dest.destination IS NOT NULL THEN
        _blocked := _blocked OR _dest.state <> 'closed';
        RETURN QUERY SELECT 'destination', _dest.state <> 'closed',
            CASE _dest.state
                WHEN 'paused' THEN pg_catalog.format('its destination asked to wait (Retry-After) until %s', _dest.until)
                WHEN 'open' THEN pg_catalog.format('its destination failed %s times in a row: nothing is sent to it until the next probe at %s',
                                                   _dest.consecutive_failures, _dest.until)
                WHEN 'half_open' THEN 'its destination is being probed after failures: jobs wait for the answer'
                ELSE pg_catalog.format('its destination failed the last %s times', _dest.consecutive_failures) END;
    END IF;

    -- Jobs of the same user and job name that go first.
    SELECT count(*) INTO _n FROM jobrunner.job j
     WHERE j.state = 'pending' AND j.job_name = _job.job_name
       AND COALESCE(j.user_id, '00000000-0000-0000-0000-000000000000'::uuid) = _owner
       AND j.next_run_at <= now() AND j.id <> _job.id
       AND (j.priority > _job.priority OR (j.priority = _job.priority AND j.next_run_at < _job.next_run_at));
    IF _n > 0 THEN
        RETURN QUERY SELECT 'queued_ahead', false,
            pg_catalog.format('due jobs of this user and job name that go first (higher priority or due earlier): %s', _n);
    END IF;

    SELECT * INTO _worker FROM jobrunner.worker_status() w;
    IF NOT _worker.running THEN
        _blocked := true;
        RETURN QUERY SELECT 'worker', true, COALESCE(_worker.paused_reason, 'the worker is not running');
    ELSIF _worker.paused_reason IS NOT NULL THEN
        _blocked := true;
        RETURN QUERY SELECT 'paused', true, 'dispatch is paused: ' || _worker.paused_reason;
    ELSIF _max_in_flight IS NOT NULL AND _worker.in_flight >= _max_in_flight THEN
        _blocked := true;
        RETURN QUERY SELECT 'max_in_flight', true,
            pg_catalog.format('%s of %s requests in flight for all jobs (jobrunner.max_in_flight)',
                              _worker.in_flight, _max_in_flight);
    END IF;

    IF NOT _blocked THEN
        RETURN QUERY SELECT 'ready', false,
            'due and nothing holds it back: the worker takes it on its next turn'::text;
    END IF;
END;
$$;
COMMENT ON FUNCTION jobrunner.explain_job(uuid) IS
    'why a job is not running: one row per reason (reason, blocking, detail in words and figures); for the job''s user and admins';
