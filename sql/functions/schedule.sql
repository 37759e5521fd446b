-- schedule.sql — recurring jobs through pg_cron.

-- internal: what pg_cron runs. A run is skipped while the previous run of the
-- same schedule is pending or running (the dedup key holds one active job).
CREATE OR REPLACE FUNCTION jobrunner._run_schedule(_schedule_name text) RETURNS uuid
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
        INSERT INTO jobrunner.job_log_entry (job_id, attempt, log_level, log_message)
        VALUES (_id, 0, 'warning',
                pg_catalog.format('scheduled run of "%s" skipped: the previous run is still pending or running',
                                  _schedule_name));
    END IF;
    RETURN _id;
END;
$$;
COMMENT ON FUNCTION jobrunner._run_schedule(text) IS
    'internal: what pg_cron runs for a schedule; skipped while the previous run is active';

-- public API (admin only)
CREATE OR REPLACE FUNCTION jobrunner.schedule_job(_schedule_name text, _cron text, _job_name text,
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
    PERFORM jobrunner._require_admin('schedule_job');
    IF pg_catalog.to_regproc('cron.schedule') IS NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron') THEN
        RAISE EXCEPTION 'schedule_job needs pg_cron, which is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, and CREATE EXTENSION pg_cron.';
    END IF;
    IF _schedule_name IS NULL OR _schedule_name !~ '^[A-Za-z0-9._-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid schedule name %', pg_catalog.quote_nullable(_schedule_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Schedule names are 1 to 64 letters, digits, ".", "_" or "-".';
    END IF;
    IF _cron IS NULL THEN
        RAISE EXCEPTION 'cron expression must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobrunner.job_config c WHERE c.job_name = _job_name) THEN
        RAISE EXCEPTION 'job "%" is not configured', _job_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'An administrator inserts a row into jobrunner.job_config for it.';
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
CREATE OR REPLACE FUNCTION jobrunner.unschedule_job(_schedule_name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _s jobrunner.schedule;
BEGIN
    PERFORM jobrunner._require_admin('unschedule_job');
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
