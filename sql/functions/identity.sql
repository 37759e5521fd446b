-- identity.sql — who is calling: believed claims, admin rights, and the
-- locks a caller takes on a job it may act on.

CREATE OR REPLACE FUNCTION jobrunner._outer_role() RETURNS oid
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_outer_role';
COMMENT ON FUNCTION jobrunner._outer_role() IS
    'internal: the role the session acts as outside any SECURITY DEFINER function';

-- internal: who is calling. Claims from request.jwt.claims are believed only
-- when the login role (session_user) is a superuser or a trusted claim role;
-- admin means superuser or EXECUTE on queue_job_for, judged on the role the
-- session acts as (not on the owner of a SECURITY DEFINER function).
CREATE OR REPLACE FUNCTION jobrunner._caller(OUT user_id uuid, OUT user_role text,
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
CREATE OR REPLACE FUNCTION jobrunner._lock_job_for_caller(_job_id uuid) RETURNS jobrunner.job
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
COMMENT ON FUNCTION jobrunner._lock_job_for_caller(uuid) IS
    'internal: lock a job the caller owns (or any, for an admin); raise not-found otherwise';

-- internal: the caller's job, locked, when it is running at _attempt (any
-- attempt when NULL); NULL otherwise. The worker is woken at commit: the
-- job's slot frees whatever happens next.
CREATE OR REPLACE FUNCTION jobrunner._lock_running_job_for_caller(_job_id uuid, _attempt int)
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
COMMENT ON FUNCTION jobrunner._lock_running_job_for_caller(uuid, int) IS
    'internal: the caller''s job, locked, if running at the given attempt; NULL otherwise';
