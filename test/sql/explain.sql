-- explain: explain_job(id) says why a job is not running, one row per
-- reason; retry_jobs retries failed jobs in bulk; recent_failures groups
-- them by what broke. No worker serves the regression database, so every
-- pending job also shows the 'worker' reason.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_concurrency, rate_limit, max_retries)
VALUES ('ex.one', 'http://localhost/one', 1, 2, NULL, 0),
       ('ex.rate', 'http://localhost/rate', 10, NULL, 0.5, 0),
       ('ex.off', 'http://localhost/off', 1, NULL, NULL, 0);
UPDATE jobrunner.job_config SET enabled = false WHERE job_name = 'ex.off';
\set alice 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
\set bob 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'

-- explain(id): the rows, times and durations masked.
CREATE FUNCTION pg_temp.explain(_id uuid) RETURNS TABLE (reason text, blocking boolean, detail text)
    LANGUAGE sql AS $$
    SELECT e.reason, e.blocking, regexp_replace(regress.masked(e.detail), '\(in [^)]*\)', '(in <interval>)')
      FROM jobrunner.explain_job(_id) e
$$;

-- A due job that nothing holds back but the missing worker.
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'ex.one') AS a1 \gset
SELECT * FROM pg_temp.explain(:'a1');

-- Alice's one slot taken: her second job waits for it, and the first shows
-- as running.
SELECT regress.claim(:'a1') AS attempt;
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'ex.one') AS a2 \gset
SELECT * FROM pg_temp.explain(:'a2');
SELECT * FROM pg_temp.explain(:'a1');
-- max_concurrency across users: bob's job runs, then carol's waits for the
-- job name's cap although her own slot is free.
SELECT jobrunner.queue_job_for(:'bob', 'authenticated', NULL, 'ex.one') AS b1 \gset
SELECT regress.claim(:'b1') AS attempt;
SELECT jobrunner.queue_job_for('cccccccc-cccc-4ccc-8ccc-cccccccccccc', 'authenticated', NULL, 'ex.one') AS c1 \gset
SELECT reason, blocking, detail FROM pg_temp.explain(:'c1') WHERE reason LIKE '%concurrency%';

-- Not due yet, with the retry's reason; a delayed job behind a due one.
SELECT regress.record(:'a1', 1, 503, 'HTTP 503', NULL) AS recorded;
UPDATE jobrunner.job SET state = 'pending', next_run_at = now() + interval '1 hour', due = false,
                         finished_at = NULL, attempts = 1
 WHERE id = :'a1';
SELECT * FROM pg_temp.explain(:'a1');

-- Rate limit: the bucket is empty, the next token is a time.
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'ex.rate') AS r1 \gset
INSERT INTO jobrunner.rate_bucket (job_name, tokens, refreshed_at) VALUES ('ex.rate', 0, now())
    ON CONFLICT (job_name) DO UPDATE SET tokens = 0, refreshed_at = now();
SELECT reason, blocking, detail FROM pg_temp.explain(:'r1') WHERE reason = 'rate_limit';
UPDATE jobrunner.rate_bucket SET tokens = 1;
SELECT reason, blocking, detail FROM pg_temp.explain(:'r1') WHERE reason = 'rate_limit';

-- Disabled, and no job_config at all.
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'ex.off') AS o1 \gset
SELECT reason, blocking, detail FROM pg_temp.explain(:'o1') WHERE reason = 'disabled';
INSERT INTO jobrunner.job_config (job_name, url) VALUES ('ex.gone', 'http://localhost/gone');
SELECT jobrunner.queue_job_for(:'alice', 'authenticated', NULL, 'ex.gone') AS g1 \gset
DELETE FROM jobrunner.job_config WHERE job_name = 'ex.gone';
SELECT * FROM pg_temp.explain(:'g1');

-- Finished jobs say how they ended.
SELECT jobrunner.dequeue_job(:'o1') AS canceled;
SELECT * FROM pg_temp.explain(:'o1');

-- Who may ask: the job's user through PostgREST, not another user (not
-- found, as for every other function), not an untrusted login claiming to
-- be her.
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
SET SESSION AUTHORIZATION regress_authenticator;
SET ROLE regress_authenticated;
SELECT count(*) > 0 AS alice_sees_her_reasons FROM jobrunner.explain_job(:'a2');
SELECT regress.err(format('SELECT * FROM jobrunner.explain_job(%L)', :'b1')) AS bob_job_for_alice;
RESET ROLE;
RESET SESSION AUTHORIZATION;
CREATE ROLE regress_jr_explain_plain LOGIN;
SET SESSION AUTHORIZATION regress_jr_explain_plain;
SELECT regress.err(format('SELECT * FROM jobrunner.explain_job(%L)', :'a2')) AS untrusted_login;
SELECT regress.err('SELECT jobrunner.retry_jobs(NULL)') AS retry_jobs_as_plain;
SELECT regress.err('SELECT * FROM jobrunner.destinations') AS destinations_as_plain;
RESET SESSION AUTHORIZATION;
RESET request.jwt.claims;
DROP ROLE regress_jr_explain_plain;
SELECT regress.err('SELECT * FROM jobrunner.explain_job(NULL)') AS null_id;
-- No worker serves this database: no destination is held back.
SELECT count(*) AS destinations FROM jobrunner.destinations;
SELECT jobrunner._destination_of(u) AS destination
  FROM unnest(ARRAY['https://API.example.com/x', 'http://127.0.0.1:8080/j', 'ftp://x/']) AS u;

------------------------------------------------------------------------------
-- Dead letters: recent_failures groups by what broke, retry_jobs retries.
------------------------------------------------------------------------------
SELECT regress.begin_test();
INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_retries)
VALUES ('dl.a', 'http://localhost/a', 100, 0), ('dl.b', 'http://localhost/b', 100, 0);
-- Fail jobs with these errors, one by one.
CREATE FUNCTION pg_temp.failed(_job_name text, _status int, _error text, _dedup text DEFAULT NULL)
    RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    _id uuid := jobrunner.queue_job_for(gen_random_uuid(), 'authenticated', NULL, _job_name,
                                        _dedup_key => _dedup);
BEGIN
    PERFORM regress.record(_id, regress.claim(_id), _status, _error, NULL);
    RETURN _id;
END $$;
SELECT pg_temp.failed('dl.a', 503, 'HTTP 503: busy') IS NOT NULL,
       pg_temp.failed('dl.a', 503, 'HTTP 503: overloaded') IS NOT NULL,
       pg_temp.failed('dl.a', 0, 'timed out after 300 ms') IS NOT NULL,
       pg_temp.failed('dl.a', 0, 'timed out after 450 ms') IS NOT NULL,
       pg_temp.failed('dl.a', 0, 'connection refused') IS NOT NULL,
       pg_temp.failed('dl.b', 503, 'HTTP 503: busy') IS NOT NULL;
SELECT job_name, error_group, jobs_with_this_error, count(*) AS rows
  FROM jobrunner.recent_failures GROUP BY 1, 2, 3 ORDER BY 1, 2;

-- Bad input is named; only admins may retry in bulk.
SELECT regress.err($$SELECT jobrunner.retry_jobs('dl.none')$$) AS unknown_name;
-- By error: the timeouts of dl.a.
SELECT jobrunner.retry_jobs('dl.a', _error_like => 'timed out%') AS retried_timeouts;
SELECT state, count(*) FROM jobrunner.job WHERE job_name = 'dl.a' GROUP BY 1 ORDER BY 1;
SELECT l.log_message FROM jobrunner.job_logs l JOIN jobrunner.job j ON j.id = l.job_id
 WHERE j.job_name = 'dl.a' AND l.log_message LIKE 'retried%' ORDER BY 1;
-- Since a time: none failed in the future.
SELECT jobrunner.retry_jobs('dl.a', now() + interval '1 minute') AS retried_since_later;
-- A job whose dedup key an active job now holds stays failed; the rest go.
SELECT pg_temp.failed('dl.b', 500, 'HTTP 500', 'k1') AS dup \gset
SELECT jobrunner.queue_job_for(gen_random_uuid(), 'authenticated', NULL, 'dl.b') IS NOT NULL AS other;
UPDATE jobrunner.job SET user_id = (SELECT user_id FROM jobrunner.job WHERE id = :'dup') WHERE id <> :'dup'
   AND job_name = 'dl.b' AND state = 'pending';
UPDATE jobrunner.job SET dedup_key = 'k1' WHERE job_name = 'dl.b' AND state = 'pending';
SELECT jobrunner.retry_jobs(NULL) AS retried_everywhere;
SELECT job_name, state, count(*) FROM jobrunner.job GROUP BY 1, 2 ORDER BY 1, 2;
SELECT state AS dup_state FROM jobrunner.job WHERE id = :'dup';
