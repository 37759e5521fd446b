-- claim: what the worker's _claim takes. Fair across users within a job name,
-- never beyond concurrency_limit (per user and job name), max_concurrency (per
-- job name) or rate_limit; higher priority first; delayed jobs wait; disabled
-- job names claim nothing.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

-- Queue job <tag> (e.g. 'a3': user a's third) for user 'a', 'b', 'c'...; jobs
-- with a higher n are due a little later, so the order within a user is n.
CREATE FUNCTION pg_temp.q(_job_name text, _tag text, _priority int DEFAULT 0,
                          _run_at timestamptz DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
    SELECT _tag FROM jobrunner.queue_job_for(
        format('%s-%s-4%s-8%s-%s', repeat(left(_tag, 1), 8), repeat(left(_tag, 1), 4),
               repeat(left(_tag, 1), 3), repeat(left(_tag, 1), 3), repeat(left(_tag, 1), 12))::uuid,
        'authenticated', NULL, _job_name, jsonb_build_object('tag', _tag),
        _run_at => COALESCE(_run_at, now() - interval '1 second' + interval '1 ms' * substr(_tag, 2)::int),
        _priority => _priority)
$$;
-- Claim up to _limit jobs as the worker; their tags, sorted.
CREATE FUNCTION pg_temp.claimed(_limit int DEFAULT 100) RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(string_agg(c.request_body::jsonb ->> 'tag', ' ' ORDER BY c.request_body::jsonb ->> 'tag'), '(none)')
      FROM jobrunner._claim(_limit, 42) c
$$;
-- The worker reports job <tag> done (or failed, with a status >= 300); 1
-- when recorded.
CREATE FUNCTION pg_temp.finish(_tag text, _status int DEFAULT 200) RETURNS int LANGUAGE sql AS $$
    SELECT CASE WHEN jobrunner._record(42, ARRAY[j.id], ARRAY[j.attempt_seq], ARRAY[_status],
                                       ARRAY['HTTP ' || _status], ARRAY[NULL]::text[],
                                       ARRAY[1]::float8[], ARRAY[NULL]::bigint[]) = '{}'
                THEN 1 ELSE 0 END
      FROM jobrunner.job j WHERE j.request_body ->> 'tag' = _tag AND j.state = 'running'
$$;
CREATE FUNCTION pg_temp.running() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(string_agg(j.request_body ->> 'tag', ' ' ORDER BY j.request_body ->> 'tag'), '(none)')
      FROM jobrunner.job j WHERE j.state = 'running'
$$;

INSERT INTO jobrunner.job_config (job_name, url, concurrency_limit, max_concurrency, rate_limit, enabled, headers, timeout)
VALUES ('cl.fair', 'http://localhost/fair', 10, NULL, NULL, true, '{}', '5 minutes'),
       ('cl.conc', 'http://localhost/conc', 2, NULL, NULL, true, '{}', '5 minutes'),
       ('cl.other', 'http://localhost/other', 1, NULL, NULL, true, '{}', '5 minutes'),
       ('cl.max', 'http://localhost/max', 5, 3, NULL, true, '{}', '5 minutes'),
       ('cl.slow', 'http://localhost/slow', 100, NULL, 0.01, true, '{}', '5 minutes'),
       ('cl.fast', 'http://localhost/fast', 100, NULL, 50, true, '{}', '5 minutes'),
       ('cl.prio', 'http://localhost/prio', 1, NULL, NULL, true, '{}', '5 minutes'),
       ('cl.off', 'http://localhost/off', 10, NULL, NULL, false, '{}', '5 minutes'),
       ('cl.shape', NULL, 10, NULL, NULL, true, '{"X-Tenant": "t1", "Accept": "application/json"}', '45 seconds');

------------------------------------------------------------------------------
-- Fairness: a user with a backlog does not delay the others.
------------------------------------------------------------------------------
SELECT string_agg(pg_temp.q('cl.fair', 'a' || n), ' ') AS queued FROM generate_series(1, 6) n;
SELECT concat_ws(' ', pg_temp.q('cl.fair', 'b1'), pg_temp.q('cl.fair', 'c1')) AS queued;
-- Three slots: one for each user, each user's oldest first.
SELECT pg_temp.claimed(3) AS first_claim;
SELECT pg_temp.claimed(3) AS second_claim;
SELECT pg_temp.claimed(3) AS third_claim;
SELECT pg_temp.claimed(3) AS nothing_left;
-- Round robin also decides the order of a single claim (group a was served
-- more recently than group b above, so b gets the spare slot).
TRUNCATE jobrunner.job;
SELECT string_agg(pg_temp.q('cl.fair', 'a' || n), ' ') AS queued FROM generate_series(1, 3) n;
SELECT string_agg(pg_temp.q('cl.fair', 'b' || n), ' ') AS queued FROM generate_series(1, 2) n;
SELECT pg_temp.q('cl.fair', 'c1') AS queued;
SELECT pg_temp.claimed(4) AS four_of_six;
-- More groups than a claim takes: each claim looks only at the next groups
-- in turn (from where the last one stopped, round again at the end), so
-- every group gets its first job before any gets a second, and a claim
-- costs what it takes rather than what is queued.
TRUNCATE jobrunner.job;
SELECT string_agg(pg_temp.q('cl.fair', u || n), ' ' ORDER BY u, n) AS queued
  FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e']) u, generate_series(1, 2) n;
SELECT pg_temp.claimed(2) AS window_1, pg_temp.claimed(2) AS window_2, pg_temp.claimed(2) AS window_3;
SELECT pg_temp.claimed(2) AS window_4, pg_temp.claimed(2) AS window_5, pg_temp.claimed(2) AS nothing_left;
-- A group at its concurrency_limit is passed over without taking a place.
UPDATE jobrunner.job_config SET concurrency_limit = 1 WHERE job_name = 'cl.fair';
TRUNCATE jobrunner.job;
SELECT string_agg(pg_temp.q('cl.fair', u || n), ' ' ORDER BY u, n) AS queued
  FROM unnest(ARRAY['a', 'b', 'c']) u, generate_series(1, 2) n;
SELECT pg_temp.claimed(1) AS first, pg_temp.claimed(1) AS second;
SELECT pg_temp.finish('a1') AS finished;
SELECT pg_temp.claimed(2) AS third;
UPDATE jobrunner.job_config SET concurrency_limit = 10 WHERE job_name = 'cl.fair';
-- A name capped by max_concurrency does not crowd the others out of a
-- claim: its groups beyond what it may start take no place (cl.max: 3 at
-- once, five users ahead of cl.other's in key order).
TRUNCATE jobrunner.job;
SELECT string_agg(pg_temp.q('cl.max', u || '1'), ' ' ORDER BY u) AS queued
  FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e']) u;
SELECT string_agg(pg_temp.q('cl.other', u || '2'), ' ' ORDER BY u) AS queued
  FROM unnest(ARRAY['a', 'b']) u;
SELECT pg_temp.claimed(5) AS three_and_two;

------------------------------------------------------------------------------
-- concurrency_limit: running jobs per (user, job name).
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
SELECT string_agg(pg_temp.q('cl.conc', 'a' || n), ' ') AS queued FROM generate_series(1, 4) n;
SELECT pg_temp.q('cl.conc', 'b1') AS queued;
SELECT pg_temp.q('cl.other', 'a9') AS queued;
SELECT pg_temp.claimed() AS claimed;
SELECT pg_temp.claimed() AS claimed_while_full;
SELECT pg_temp.finish('a1') AS finished;
SELECT pg_temp.claimed() AS claimed_after_one_finished;
-- A failed attempt frees its slot too (the retry waits for its backoff).
SELECT pg_temp.finish('a2', 503) AS failed_attempt;
SELECT pg_temp.claimed() AS claimed_after_one_failed;
SELECT pg_temp.running() AS running;

------------------------------------------------------------------------------
-- max_concurrency: running jobs per job name, whoever owns them.
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
SELECT string_agg(pg_temp.q('cl.max', u || n), ' ' ORDER BY u, n) AS queued
  FROM unnest(ARRAY['a', 'b', 'c']) u, generate_series(1, 3) n;
SELECT pg_temp.claimed() AS claimed;
SELECT pg_temp.claimed() AS claimed_while_full;
SELECT pg_temp.finish('b1') AS finished;
SELECT count(*) AS claimed_after_one_finished FROM jobrunner._claim(100, 42);
SELECT count(*) AS running FROM jobrunner.job WHERE state = 'running';

------------------------------------------------------------------------------
-- rate_limit: a token bucket per job name (burst: a tenth of a second's
-- worth, at least one).
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
-- One per 100 seconds.
SELECT string_agg(pg_temp.q('cl.slow', 'a' || n), ' ') AS queued FROM generate_series(1, 5) n;
SELECT pg_temp.claimed() AS claimed;
SELECT pg_temp.claimed() AS claimed_right_after;
SELECT tokens < 1 AS bucket_empty FROM jobrunner.rate_bucket WHERE job_name = 'cl.slow';
-- 250 seconds later two and a half tokens have accrued, but the burst is one.
UPDATE jobrunner.rate_bucket SET refreshed_at = refreshed_at - interval '250 seconds' WHERE job_name = 'cl.slow';
SELECT pg_temp.claimed() AS claimed_after_250s;
-- 50 per second: an empty bucket left alone for 10 seconds holds a burst of
-- five, not 500.
SELECT string_agg(pg_temp.q('cl.fast', 'f' || n), ' ') AS queued FROM generate_series(1, 9) n;
UPDATE jobrunner.rate_bucket SET tokens = 0, refreshed_at = now() - interval '10 seconds' WHERE job_name = 'cl.fast';
SELECT count(*) AS claimed_burst FROM jobrunner._claim(100, 42) WHERE job_name = 'cl.fast';

------------------------------------------------------------------------------
-- Priority: higher first, within a user and across users.
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
SELECT concat_ws(' ', pg_temp.q('cl.prio', 'a1', 0), pg_temp.q('cl.prio', 'a2', 10), pg_temp.q('cl.prio', 'a3', 5)) AS queued;
-- concurrency_limit 1: one at a time, by priority.
SELECT pg_temp.claimed() AS claimed;
SELECT pg_temp.finish('a2') AS finished;
SELECT pg_temp.claimed() AS claimed;
SELECT pg_temp.finish('a3') AS finished;
SELECT pg_temp.claimed() AS claimed;
TRUNCATE jobrunner.job;
SELECT concat_ws(' ', pg_temp.q('cl.prio', 'a1', 0), pg_temp.q('cl.prio', 'b1', 3), pg_temp.q('cl.prio', 'c1', 7)) AS queued;
SELECT pg_temp.claimed(1) AS first, pg_temp.claimed(1) AS second, pg_temp.claimed(1) AS third;

------------------------------------------------------------------------------
-- run_at: delayed jobs wait; jobs due earlier go first.
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
SELECT concat_ws(' ', pg_temp.q('cl.fair', 'a1', _run_at => now() + interval '1 hour'),
                      pg_temp.q('cl.fair', 'a2', _run_at => now() - interval '1 minute'),
                      pg_temp.q('cl.fair', 'a3', _run_at => now() - interval '2 minutes')) AS queued;
SELECT pg_temp.claimed(1) AS first, pg_temp.claimed(1) AS second, pg_temp.claimed() AS then;
UPDATE jobrunner.job SET next_run_at = now() WHERE request_body ->> 'tag' = 'a1';
SELECT pg_temp.claimed() AS claimed_once_due;

------------------------------------------------------------------------------
-- A disabled job name claims nothing; its jobs stay pending.
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
SELECT concat_ws(' ', pg_temp.q('cl.off', 'a1'), pg_temp.q('cl.off', 'b1')) AS queued;
SELECT pg_temp.claimed() AS claimed;
SELECT state, count(*) FROM jobrunner.job GROUP BY 1;
UPDATE jobrunner.job_config SET enabled = true WHERE job_name = 'cl.off';
SELECT pg_temp.claimed() AS claimed_once_enabled;
SELECT pg_temp.claimed(0) AS limit_zero;

------------------------------------------------------------------------------
-- What the worker gets: the url (base_url/job_name when the config has
-- none), the config's headers as lines, and the timeout in milliseconds.
------------------------------------------------------------------------------
TRUNCATE jobrunner.job;
SET jobrunner.base_url = 'https://hooks.example.com/v1';
SELECT pg_temp.q('cl.shape', 'a1') AS queued;
SELECT c.url, c.headers, c.timeout_ms, c.attempt, c.request_body FROM jobrunner._claim(10, 42) c;
RESET jobrunner.base_url;

TRUNCATE jobrunner.job, jobrunner.job_log_entry, jobrunner.rate_bucket;
DELETE FROM jobrunner.job_config;
