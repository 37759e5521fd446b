-- state_machine: every public action from every state, table-driven, done by
-- the job's own user through PostgREST (authenticator -> authenticated), then
-- by the job's endpoint with the token minted for the attempt, then a table
-- of the worker's _record outcomes.
BEGIN;
SELECT plan(85);
SET LOCAL client_min_messages = warning;

DELETE FROM jobrunner.job_log_entry;
DELETE FROM jobrunner.job;
DELETE FROM jobrunner.job_config;
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_retries)
VALUES ('tap.sm', 'http://localhost/sm', 1000, 1);

-- The worker claims this job alone: other due jobs are pushed a day ahead,
-- and a request of the job's still on the wire is answered first (a job is
-- never sent twice at once). Returns the claimed attempt.
CREATE FUNCTION pg_temp.claim(_id uuid) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    _attempt int;
BEGIN
    PERFORM jobrunner._record(j.locked_by, ARRAY[j.id], ARRAY[j.sending_attempt], ARRAY[200],
                              ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[1.0::float8], ARRAY[NULL::bigint])
       FROM jobrunner.job j WHERE j.id = _id AND j.sending_attempt IS NOT NULL AND j.state <> 'running';
    UPDATE jobrunner.job SET next_run_at = now() + interval '1 day'
     WHERE state = 'pending' AND next_run_at <= now() AND id <> _id;
    UPDATE jobrunner.job SET next_run_at = now(), due = true WHERE id = _id;
    SELECT c.attempt INTO _attempt FROM jobrunner._claim(10, 42) c;
    IF _attempt IS NULL OR NOT EXISTS (SELECT 1 FROM jobrunner.job j WHERE j.id = _id AND j.state = 'running') THEN
        RAISE EXCEPTION 'could not claim %', _id;
    END IF;
    RETURN _attempt;
END $$;
-- Bring a new job of user A to a state, as the worker and an admin would.
-- Jobs are queued a day ahead, so a claim takes only the job made due here.
CREATE FUNCTION pg_temp.job_in(_state text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    _id uuid := jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', NULL, 'tap.sm',
                                        _run_at => now() + interval '1 day');
BEGIN
    IF _state IN ('running', 'completed', 'failed', 'retrying') THEN
        PERFORM pg_temp.claim(_id);
    END IF;
    CASE _state
        WHEN 'completed' THEN PERFORM jobrunner.complete_job(_id);
        WHEN 'failed' THEN PERFORM jobrunner.fail_job(_id, 'x', _retry => false);
        WHEN 'retrying' THEN PERFORM jobrunner.fail_job(_id, 'x');
        WHEN 'canceled' THEN PERFORM jobrunner.dequeue_job(_id);
        ELSE NULL;
    END CASE;
    RETURN _id;
END $$;

-- from: the state before; action: what A calls; returns: its result (true,
-- false, or the SQLSTATE it raises); after: the state it leaves; attempts: the
-- attempts count after. A may cancel a pending job and retry a failed or
-- canceled one, but never finish one: with her own token she could forge its
-- outcome (only the endpoint, with the token of the attempt, or an admin may).
CREATE TEMP TABLE cases (n serial, from_state text, action text, returns text, after text, attempts int, id uuid);
INSERT INTO cases (from_state, action, returns, after, attempts) VALUES
    ('pending',   'dequeue',  'true',     'canceled',  0),
    ('pending',   'retry',    'false',     'pending',   0),
    ('pending',   'complete', '42501', 'pending',   0),
    ('pending',   'fail',     '42501', 'pending',   0),
    ('running',   'dequeue',  'false',     'running',   1),
    ('running',   'retry',    'false',     'running',   1),
    ('running',   'complete', '42501', 'running',   1),
    ('running',   'fail',     '42501', 'running',   1),
    ('retrying',  'dequeue',  'true',     'canceled',  1),
    ('retrying',  'retry',    'false',     'pending',   1),
    ('retrying',  'complete', '42501', 'pending',   1),
    ('retrying',  'fail',     '42501', 'pending',   1),
    ('completed', 'dequeue',  'false',     'completed', 1),
    ('completed', 'retry',    'false',     'completed', 1),
    ('completed', 'complete', '42501', 'completed', 1),
    ('completed', 'fail',     '42501', 'completed', 1),
    ('failed',    'dequeue',  'false',     'failed',    1),
    ('failed',    'retry',    'true',     'pending',   0),
    ('failed',    'complete', '42501', 'failed',    1),
    ('failed',    'fail',     '42501', 'failed',    1),
    ('canceled',  'dequeue',  'false',     'canceled',  0),
    ('canceled',  'retry',    'true',     'pending',   0),
    ('canceled',  'complete', '42501', 'canceled',  0),
    ('canceled',  'fail',     '42501', 'canceled',  0);
UPDATE cases SET id = pg_temp.job_in(from_state);
GRANT SELECT ON cases TO PUBLIC;

SELECT is((SELECT count(*)::int FROM cases c JOIN jobrunner.job j ON j.id = c.id
            WHERE j.state = CASE c.from_state WHEN 'retrying' THEN 'pending' ELSE c.from_state END),
          24, 'every case starts in its state');

-- What an action returns, or the SQLSTATE it raises.
CREATE FUNCTION pg_temp.act(_action text, _id uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE _action
        WHEN 'dequeue' THEN jobrunner.dequeue_job(_id)
        WHEN 'retry' THEN jobrunner.retry_job(_id)
        WHEN 'complete' THEN jobrunner.complete_job(_id, '{"done": true}')
        WHEN 'fail' THEN jobrunner.fail_job(_id, 'failed by its caller')
    END::text;
EXCEPTION WHEN others THEN
    RETURN SQLSTATE;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act(text, uuid) TO PUBLIC;

-- A acts on A's jobs.
SELECT max(id) AS log_mark FROM jobrunner.job_logs \gset
SET SESSION AUTHORIZATION authenticator;
SET ROLE authenticated;
SET LOCAL request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
SELECT is(pg_temp.act(c.action, c.id), c.returns, format('%s job: %s by its user returns %s', c.from_state, c.action, c.returns))
  FROM cases c ORDER BY c.n;
RESET ROLE;
RESET SESSION AUTHORIZATION;

SELECT is(j.state, c.after, format('%s job after %s by its user: %s', c.from_state, c.action, c.after))
  FROM cases c JOIN jobrunner.job j ON j.id = c.id ORDER BY c.n;
SELECT is((SELECT count(*)::int FROM cases c JOIN jobrunner.job j ON j.id = c.id WHERE j.attempts <> c.attempts), 0,
          'attempts are kept, or reset by retry_job');
SELECT is((SELECT count(*)::int FROM cases c
            WHERE (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = c.id AND l.id > :log_mark)
                  <> CASE WHEN c.returns = 'true' THEN 1 ELSE 0 END),
          0, 'each transition wrote one log row; each refused one wrote none');

------------------------------------------------------------------------------
-- The endpoint finishes the attempt it was sent, through PostgREST, with the
-- token minted for it: its claims carry the job and the attempt.
------------------------------------------------------------------------------
CREATE TEMP TABLE endpoint_cases (n serial, from_state text, action text, token_attempt text, returns text,
                                  after text, id uuid, attempt int);
INSERT INTO endpoint_cases (from_state, action, token_attempt, returns, after) VALUES
    ('running',   'complete', 'current',  'true',     'completed'),
    ('running',   'fail',     'current',  'true',     'pending'),
    ('running',   'complete', 'previous', 'false',     'running'),
    ('running',   'fail',     'previous', 'false',     'running'),
    ('running',   'complete', 'other',    '42501', 'running'),
    ('running',   'dequeue',  'current',  'false',     'running'),
    ('completed', 'complete', 'current',  'false',     'completed'),
    ('retrying',  'complete', 'current',  'false',     'pending');
UPDATE endpoint_cases SET id = pg_temp.job_in(from_state);
-- A running job at its second attempt, so that a token of the first exists.
DO $$
BEGIN
    PERFORM jobrunner.fail_job(e.id, 'first attempt'), pg_temp.claim(e.id)
       FROM endpoint_cases e WHERE e.token_attempt = 'previous';
END $$;
UPDATE endpoint_cases e SET attempt = j.attempt_seq FROM jobrunner.job j WHERE j.id = e.id;
GRANT SELECT ON endpoint_cases TO PUBLIC;
CREATE FUNCTION pg_temp.endpoint_claims(e endpoint_cases) RETURNS text LANGUAGE sql AS $$
    SELECT jsonb_build_object('sub', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'role', 'authenticated',
                              'jti', e.id || '/' || e.attempt,
                              'job', jsonb_build_object(
                                  'id', CASE e.token_attempt WHEN 'other' THEN gen_random_uuid() ELSE e.id END,
                                  'name', 'tap.sm',
                                  'attempt', e.attempt - CASE e.token_attempt WHEN 'previous' THEN 1 ELSE 0 END))::text
$$;
GRANT EXECUTE ON FUNCTION pg_temp.endpoint_claims(endpoint_cases) TO PUBLIC;
CREATE FUNCTION pg_temp.act_as_endpoint(e endpoint_cases) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.jwt.claims', pg_temp.endpoint_claims(e), true);
    RETURN pg_temp.act(e.action, e.id);
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.act_as_endpoint(endpoint_cases) TO PUBLIC;
SET SESSION AUTHORIZATION authenticator;
SET ROLE authenticated;
SELECT is(pg_temp.act_as_endpoint(e), e.returns,
          format('%s job: %s with the token of the %s attempt returns %s', e.from_state, e.action, e.token_attempt, e.returns))
  FROM endpoint_cases e ORDER BY e.n;
RESET ROLE;
RESET SESSION AUTHORIZATION;
SELECT is(j.state, e.after, format('%s job after %s with the token of the %s attempt: %s', e.from_state, e.action, e.token_attempt, e.after))
  FROM endpoint_cases e JOIN jobrunner.job j ON j.id = e.id ORDER BY e.n;

------------------------------------------------------------------------------
-- The worker's outcomes (_record), fenced by attempt and worker.
------------------------------------------------------------------------------
-- A running job at attempt 1, or at attempt 2 (the last: max_retries = 1).
CREATE FUNCTION pg_temp.running_at(_attempt int) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    _id uuid := pg_temp.job_in('running');
BEGIN
    IF _attempt = 2 THEN
        PERFORM jobrunner.fail_job(_id, 'first attempt');
        PERFORM pg_temp.claim(_id);
    END IF;
    RETURN _id;
END $$;
-- returns: the log rows _record wrote (0: its outcome changed nothing).
CREATE TEMP TABLE outcomes (n serial, label text, attempt int, reported_attempt int, worker bigint,
                            status int, returns int, after text, id uuid);
INSERT INTO outcomes (label, attempt, reported_attempt, worker, status, returns, after) VALUES
    ('2xx',                        1, 1, 42, 200, 1, 'completed'),
    ('204 on the last attempt',    2, 2, 42, 204, 1, 'completed'),
    ('500 with a retry left',      1, 1, 42, 500, 1, 'pending'),
    ('500 on the last attempt',    2, 2, 42, 500, 1, 'failed'),
    ('404',                        1, 1, 42, 404, 1, 'pending'),
    ('302 (not followed)',         1, 1, 42, 302, 1, 'pending'),
    ('connection error',           1, 1, 42,   0, 1, 'pending'),
    ('a stale attempt',            2, 1, 42, 200, 0, 'running'),
    ('another worker''s answer',   1, 1,  7, 200, 0, 'running');
UPDATE outcomes SET id = pg_temp.running_at(attempt);
CREATE FUNCTION pg_temp.logs_written(o outcomes) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    _before int := (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = o.id);
BEGIN
    IF jobrunner._record(o.worker, ARRAY[o.id], ARRAY[o.reported_attempt], ARRAY[o.status],
                         ARRAY[CASE WHEN o.status NOT BETWEEN 200 AND 299 THEN 'error ' || o.status END],
                         ARRAY[NULL]::text[], ARRAY[1]::float8[], ARRAY[NULL]::bigint[]) <> '{}' THEN
        RAISE EXCEPTION 'outcome left for later';
    END IF;
    RETURN (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = o.id) - _before;
END $$;
SELECT is(pg_temp.logs_written(o), o.returns, format('%s: %s log rows', o.label, o.returns))
  FROM outcomes o ORDER BY o.n;
SELECT is(j.state, o.after, format('%s: %s', o.label, o.after))
  FROM outcomes o JOIN jobrunner.job j ON j.id = o.id ORDER BY o.n;

SELECT * FROM finish();
ROLLBACK;
