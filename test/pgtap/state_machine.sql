-- state_machine: every public action from every state, table-driven, done by
-- the job's own user through PostgREST (authenticator -> authenticated), then
-- a table of the worker's _record outcomes.
BEGIN;
SELECT plan(69);
SET LOCAL client_min_messages = warning;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
END $$;
GRANT authenticated TO authenticator;

DELETE FROM jobrunner.job_logs;
DELETE FROM jobrunner.job;
DELETE FROM jobrunner.job_config;
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_retries)
VALUES ('tap.sm', 'http://localhost/sm', 1000, 1);

-- Bring a new job of user A to a state, as the worker and an admin would.
-- Jobs are queued a day ahead, and other due jobs are pushed a day ahead
-- before a claim, so a claim takes only the job made due here.
CREATE FUNCTION pg_temp.job_in(_state text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    _id uuid := jobrunner.queue_job_for('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', NULL, 'tap.sm',
                                        _run_at => now() + interval '1 day');
BEGIN
    IF _state IN ('running', 'completed', 'failed', 'retrying') THEN
        UPDATE jobrunner.job SET next_run_at = now() + interval '1 day'
         WHERE state = 'pending' AND next_run_at <= now() AND id <> _id;
        UPDATE jobrunner.job SET next_run_at = now() WHERE id = _id;
        IF (SELECT count(*) FROM jobrunner._claim(10, 42)) <> 1 THEN
            RAISE EXCEPTION 'could not claim %', _id;
        END IF;
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

-- from: the state before; action: what A calls; returns: its result;
-- after: the state it leaves; attempts: the attempts count after.
CREATE TEMP TABLE cases (n serial, from_state text, action text, returns boolean, after text, attempts int, id uuid);
INSERT INTO cases (from_state, action, returns, after, attempts) VALUES
    ('pending',   'dequeue',  true,  'canceled',  0),
    ('pending',   'retry',    false, 'pending',   0),
    ('pending',   'complete', false, 'pending',   0),
    ('pending',   'fail',     false, 'pending',   0),
    ('running',   'dequeue',  false, 'running',   1),
    ('running',   'retry',    false, 'running',   1),
    ('running',   'complete', true,  'completed', 1),
    ('running',   'fail',     true,  'pending',   1),
    ('retrying',  'dequeue',  true,  'canceled',  1),
    ('retrying',  'retry',    false, 'pending',   1),
    ('retrying',  'complete', false, 'pending',   1),
    ('retrying',  'fail',     false, 'pending',   1),
    ('completed', 'dequeue',  false, 'completed', 1),
    ('completed', 'retry',    false, 'completed', 1),
    ('completed', 'complete', false, 'completed', 1),
    ('completed', 'fail',     false, 'completed', 1),
    ('failed',    'dequeue',  false, 'failed',    1),
    ('failed',    'retry',    true,  'pending',   0),
    ('failed',    'complete', false, 'failed',    1),
    ('failed',    'fail',     false, 'failed',    1),
    ('canceled',  'dequeue',  false, 'canceled',  0),
    ('canceled',  'retry',    true,  'pending',   0),
    ('canceled',  'complete', false, 'canceled',  0),
    ('canceled',  'fail',     false, 'canceled',  0);
UPDATE cases SET id = pg_temp.job_in(from_state);
GRANT SELECT ON cases TO PUBLIC;

SELECT is((SELECT count(*)::int FROM cases c JOIN jobrunner.job j ON j.id = c.id
            WHERE j.state = CASE c.from_state WHEN 'retrying' THEN 'pending' ELSE c.from_state END),
          24, 'every case starts in its state');

-- A acts on A's jobs.
SELECT max(id) AS log_mark FROM jobrunner.job_logs \gset
SET SESSION AUTHORIZATION authenticator;
SET ROLE authenticated;
SET LOCAL request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
CREATE FUNCTION pg_temp.act(_action text, _id uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE _action
        WHEN 'dequeue' THEN jobrunner.dequeue_job(_id)
        WHEN 'retry' THEN jobrunner.retry_job(_id)
        WHEN 'complete' THEN jobrunner.complete_job(_id, '{"done": true}')
        WHEN 'fail' THEN jobrunner.fail_job(_id, 'failed by its user')
    END;
END $$;
SELECT is(pg_temp.act(c.action, c.id), c.returns, format('%s job: %s returns %s', c.from_state, c.action, c.returns))
  FROM cases c ORDER BY c.n;
RESET ROLE;
RESET SESSION AUTHORIZATION;

SELECT is(j.state, c.after, format('%s job after %s: %s', c.from_state, c.action, c.after))
  FROM cases c JOIN jobrunner.job j ON j.id = c.id ORDER BY c.n;
SELECT is((SELECT count(*)::int FROM cases c JOIN jobrunner.job j ON j.id = c.id WHERE j.attempts <> c.attempts), 0,
          'attempts are kept, or reset by retry_job');
SELECT is((SELECT count(*)::int FROM cases c
            WHERE (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = c.id AND l.id > :log_mark)
                  <> CASE WHEN c.returns THEN 1 ELSE 0 END),
          0, 'each transition wrote one log row; each refused one wrote none');

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
        UPDATE jobrunner.job SET next_run_at = now() + interval '1 day'
         WHERE state = 'pending' AND next_run_at <= now() AND id <> _id;
        UPDATE jobrunner.job SET next_run_at = now() WHERE id = _id;
        IF (SELECT count(*) FROM jobrunner._claim(10, 42)) <> 1 THEN
            RAISE EXCEPTION 'could not claim %', _id;
        END IF;
    END IF;
    RETURN _id;
END $$;
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
SELECT is(jobrunner._record(o.worker, ARRAY[o.id], ARRAY[o.reported_attempt], ARRAY[o.status],
                            ARRAY[CASE WHEN o.status NOT BETWEEN 200 AND 299 THEN 'error ' || o.status END],
                            ARRAY[NULL]::text[], ARRAY[1]::float8[], ARRAY[NULL]::bigint[]),
          o.returns, format('%s: %s recorded', o.label, o.returns))
  FROM outcomes o ORDER BY o.n;
SELECT is(j.state, o.after, format('%s: %s', o.label, o.after))
  FROM outcomes o JOIN jobrunner.job j ON j.id = o.id ORDER BY o.n;

SELECT * FROM finish();
ROLLBACK;
