-- identity.sql — who is calling: believed claims, admin rights, and the
-- locks a caller takes on a job it may act on.

CREATE OR REPLACE FUNCTION jobrunner._outer_role() RETURNS oid
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_outer_role';
COMMENT ON FUNCTION jobrunner._outer_role() IS
    'internal: the role the session acts as outside any SECURITY DEFINER function';

CREATE OR REPLACE FUNCTION jobrunner._caller_context(OUT is_admin boolean, OUT claims text,
                                                     OUT from_hook boolean)
    LANGUAGE c STABLE PARALLEL SAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_caller_context';
COMMENT ON FUNCTION jobrunner._caller_context() IS
    'internal: whether the session''s role is an admin, and the claims to believe (none inside a security-restricted operation, but the job owner''s inside a pg_jobrunner hook)';

-- internal: who is calling. Claims are believed only from request.jwt.claims
-- of a session whose login role (session_user) is a superuser or a trusted
-- claim role, or, inside a completion hook, from the job the hook runs for.
-- Admin means superuser or EXECUTE on queue_job_for, judged on the role the
-- session acts as (not on the owner of a SECURITY DEFINER function). Inside
-- a security-restricted operation (code that VACUUM, ANALYZE or an index
-- build runs on a table owner's behalf) nobody is an admin and no claim set
-- by the session counts. job_id and job_attempt bind the caller to one
-- attempt of one job: only the token minted for that attempt carries them.
CREATE OR REPLACE FUNCTION jobrunner._caller(OUT user_id uuid, OUT user_role text,
                                             OUT user_email text, OUT is_admin boolean,
                                             OUT job_id uuid, OUT job_attempt int)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _ctx      record := jobrunner._caller_context();
    _claims   jsonb;
    _sub      text;
    _job      jsonb;
BEGIN
    is_admin := _ctx.is_admin;
    IF _ctx.claims IS NULL OR _ctx.claims = '' THEN
        RETURN;
    END IF;
    BEGIN
        _claims := _ctx.claims::jsonb;
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
                      HINT = 'Jobs belong to users identified by uuid, as auth.uid() returns.';
        END;
        -- The nil uuid stands for "no user" (system jobs) in every key: a
        -- token claiming it would act on system jobs.
        IF user_id = '00000000-0000-0000-0000-000000000000'::uuid THEN
            RAISE EXCEPTION 'claim "sub" is the nil uuid, which stands for system jobs'
                USING ERRCODE = 'invalid_authorization_specification',
                      HINT = 'Jobs belong to users identified by a uuid other than 00000000-0000-0000-0000-000000000000.';
        END IF;
        user_role := COALESCE(_claims ->> 'role',
                              (SELECT r.rolname::text FROM pg_catalog.pg_roles r
                                WHERE r.oid = jobrunner._outer_role()));
        user_email := _claims ->> 'email';
    END IF;
    _job := _claims -> 'job';
    IF NOT _ctx.from_hook AND pg_catalog.jsonb_typeof(_job) = 'object'
       AND pg_catalog.jsonb_typeof(_job -> 'attempt') = 'number' THEN
        BEGIN
            job_id := (_job ->> 'id')::uuid;
            job_attempt := (_job ->> 'attempt')::int;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            job_id := NULL;
            job_attempt := NULL;
        END;
    END IF;
END;
$$;
COMMENT ON FUNCTION jobrunner._caller() IS
    'internal: the caller''s believed identity (sub, role, email), whether the caller is an admin, and the job attempt its token was minted for';

-- internal: raise unless the caller is an admin. EXECUTE on an admin
-- function is granted to admins, but a SECURITY DEFINER wrapper an admin
-- owns must not make its callers admins: every admin function checks the
-- role the session acts as, as _caller does.
CREATE OR REPLACE FUNCTION jobrunner._require_admin(_function text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT c.is_admin FROM jobrunner._caller_context() c) THEN
        RAISE EXCEPTION '% is for administrators', _function
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Administrators are superusers and roles granted EXECUTE on jobrunner.queue_job_for, acting as themselves (not through another role''s SECURITY DEFINER function, nor inside VACUUM or ANALYZE).';
    END IF;
END;
$$;
COMMENT ON FUNCTION jobrunner._require_admin(text) IS
    'internal: raise insufficient_privilege unless the session''s role is an admin';

-- internal: a job the caller may act on, raising not-found unless the caller
-- owns it, is an admin, or holds the token minted for one of its attempts
-- (jobs of other users are reported as not found, so their existence does
-- not leak). The row is locked only when its state is one of _states, the
-- states the caller would change: a call that will change nothing takes no
-- lock, so it can never hold up the worker. After the lock the state is the
-- current one (a claim may have moved the job meanwhile).
CREATE OR REPLACE FUNCTION jobrunner._lock_job_for_caller(_job_id uuid, _states text[])
    RETURNS jobrunner.job
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
    SELECT * INTO _job FROM jobrunner.job j WHERE j.id = _job_id;
    -- COALESCE: a caller without a believed sub must not slip through a NULL.
    IF NOT FOUND OR NOT COALESCE(_me.is_admin OR _job.user_id = _me.user_id
                                 OR _me.job_id = _job_id, false) THEN
        RAISE EXCEPTION 'job % not found', _job_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'A job can be acted on only by its own user or an administrator.';
    END IF;
    IF _job.state = ANY (_states) THEN
        SELECT * INTO _job FROM jobrunner.job j WHERE j.id = _job_id FOR UPDATE;
    END IF;
    RETURN _job;
END;
$$;
COMMENT ON FUNCTION jobrunner._lock_job_for_caller(uuid, text[]) IS
    'internal: a job the caller owns (or any, for an admin), locked if it is in one of the given states; raise not-found otherwise';

-- internal: the job, locked, when it is running at _attempt (any attempt
-- when NULL) and the caller may finish that attempt; NULL otherwise. Only an
-- admin, or a session believing the token minted for the job's current
-- attempt (the endpoint, through PostgREST), may finish it: the job's user
-- with her own token may not, or she could forge its outcome. The worker is
-- woken at commit: the job's slot frees whatever happens next.
CREATE OR REPLACE FUNCTION jobrunner._lock_running_job_for_caller(_job_id uuid, _attempt int)
    RETURNS jobrunner.job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _me record := jobrunner._caller();
    _job jobrunner.job := jobrunner._lock_job_for_caller(_job_id, ARRAY['running']);
BEGIN
    IF NOT _me.is_admin THEN
        IF _me.job_id IS DISTINCT FROM _job_id THEN
            RAISE EXCEPTION 'job % can be finished only with the token minted for its attempt, or by an administrator', _job_id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Call complete_job or fail_job with the Authorization header the endpoint received for this job.';
        END IF;
        IF _me.job_attempt IS DISTINCT FROM _job.attempt_seq
           OR _job.user_id IS DISTINCT FROM _me.user_id THEN
            RETURN NULL;  -- a superseded attempt's token
        END IF;
    END IF;
    IF _job.state <> 'running' OR (_attempt IS NOT NULL AND _attempt <> _job.attempt_seq) THEN
        RETURN NULL;
    END IF;
    PERFORM jobrunner._wake_at_commit();
    RETURN _job;
END;
$$;
COMMENT ON FUNCTION jobrunner._lock_running_job_for_caller(uuid, int) IS
    'internal: the job, locked, if running at the given attempt and the caller is an admin or holds the token of that attempt; NULL otherwise';
