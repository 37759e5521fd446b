-- test_setup: the helpers every regression test shares, in schema regress.
-- It runs first in test/schedule (pg_regress creates the database with the
-- extension, through --load-extension); a test run on its own needs it run
-- before: make installcheck REGRESS="test_setup queue".
\set SHOW_CONTEXT never
-- PostgREST as the tests play it: login role regress_authenticator
-- switches to regress_authenticated per request, and begin_test() makes
-- it the role whose request.jwt.claims are believed. (Left by an earlier
-- run, they own nothing: that run's database is gone.)
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_authenticator, regress_authenticated;
RESET client_min_messages;
CREATE ROLE regress_authenticated NOLOGIN;
CREATE ROLE regress_authenticator LOGIN NOINHERIT IN ROLE regress_authenticated;
CREATE SCHEMA regress;
-- Tests switch to ordinary roles and call these too.
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- A test starts from an empty queue and no job_config, shows times in UTC
-- and ISO form (pg_regress's own PGTZ and PGDATESTYLE are overridden for the
-- session), and believes the claims regress_authenticator sets.
CREATE FUNCTION regress.begin_test() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE jobrunner.job, jobrunner.job_log_entry, jobrunner.rate_bucket, jobrunner.job_successor;
    DELETE FROM jobrunner.job_config;
    PERFORM pg_catalog.set_config('datestyle', 'ISO, YMD', false);
    PERFORM pg_catalog.set_config('timezone', 'UTC', false);
    PERFORM pg_catalog.set_config('jobrunner.trusted_claim_roles', 'regress_authenticator', false);
END $$;

-- Timestamps and uuids in a message, masked: they differ on every run.
CREATE FUNCTION regress.masked(_text text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(regexp_replace(_text,
               '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?)?', '<time>', 'g'),
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g')
$$;

-- err(sql): run a statement; its SQLSTATE and message, or 'ok'.
CREATE FUNCTION regress.err(_sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE _sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || regress.masked(SQLERRM);
END $$;

-- A job's state, without its volatile columns.
CREATE FUNCTION regress.job(_id uuid)
    RETURNS TABLE (state text, attempts int, locked boolean, acked boolean, finished boolean,
                   last_status int, last_error text, response jsonb)
    LANGUAGE sql AS $$
    SELECT j.state, j.attempts, j.locked_at IS NOT NULL, j.acked_at IS NOT NULL,
           j.finished_at IS NOT NULL, j.last_status, regress.masked(j.last_error), j.response
      FROM jobrunner.job j WHERE j.id = _id
$$;

-- A job's log, in order, times masked.
CREATE FUNCTION regress.logs(_id uuid)
    RETURNS TABLE (attempt int, log_level text, log_message text, status_code int,
                   duration_ms double precision)
    LANGUAGE sql AS $$
    SELECT l.attempt, l.log_level, regress.masked(l.log_message), l.status_code, l.duration_ms
      FROM jobrunner.job_logs l WHERE l.job_id = _id ORDER BY l.id
$$;

-- The worker (incarnation _worker) claims this job and nothing else: other
-- due jobs are held back meanwhile. Returns the attempt, NULL if not claimed.
-- A request of the job's that fail_job or complete_job settled while it was
-- on the wire is answered first (its late answer changes nothing but gives
-- the job's slot back), as the worker would: a job is never sent twice at
-- once.
CREATE FUNCTION regress.claim(_id uuid, _worker bigint DEFAULT 42) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    _held uuid[];
    _ids uuid[];
    _attempts int[];
BEGIN
    PERFORM jobrunner._record(j.locked_by, ARRAY[j.id], ARRAY[j.sending_attempt], ARRAY[200],
                              ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[1.0::float8], ARRAY[NULL::bigint])
       FROM jobrunner.job j WHERE j.id = _id AND j.sending_attempt IS NOT NULL AND j.state <> 'running';
    WITH held AS (
        UPDATE jobrunner.job SET next_run_at = next_run_at + interval '1000 years'
         WHERE state = 'pending' AND id <> _id AND next_run_at <= now() RETURNING id)
    SELECT array_agg(id) INTO _held FROM held;
    SELECT array_agg(c.id), array_agg(c.attempt) INTO _ids, _attempts FROM jobrunner._claim(1000, _worker) c;
    UPDATE jobrunner.job SET next_run_at = next_run_at - interval '1000 years' WHERE id = ANY (_held);
    IF _ids IS NOT NULL AND _ids <> ARRAY[_id] THEN
        RAISE EXCEPTION 'claimed more than the one job';
    END IF;
    RETURN _attempts[1];
END $$;

-- One outcome, as the worker records it (12.5 ms on the wire); how many log
-- rows it wrote (0: fenced out). Nothing holds rows here, so nothing is left
-- for later.
CREATE FUNCTION regress.record(_id uuid, _attempt int, _status int, _error text, _response text,
                               _retry_after_ms bigint DEFAULT NULL, _worker bigint DEFAULT 42)
    RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    _before bigint := (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = _id);
BEGIN
    IF jobrunner._record(_worker, ARRAY[_id], ARRAY[_attempt], ARRAY[_status], ARRAY[_error],
                         ARRAY[_response], ARRAY[12.5]::float8[], ARRAY[_retry_after_ms]) <> '{}' THEN
        RAISE EXCEPTION 'outcome left for later';
    END IF;
    RETURN (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = _id) - _before;
END $$;

SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'regress'::regnamespace ORDER BY 1;
