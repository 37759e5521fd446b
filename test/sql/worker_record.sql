-- worker_record: what the worker's statements do to jobs. _record writes
-- attempt outcomes (fenced by attempt and worker), failed attempts back off
-- (jittered, capped, Retry-After honoured), and _recover hands interrupted
-- attempts back without counting them.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

-- The backoff the job was given by its last failed attempt.
CREATE FUNCTION pg_temp.backoff(_id uuid) RETURNS interval LANGUAGE sql AS $$
    SELECT j.next_run_at - j.updated_at FROM jobrunner.job j WHERE j.id = _id
$$;

INSERT INTO jobrunner.job_config (job_name, url, max_retries, concurrency_limit, retry_backoff, retry_backoff_max)
VALUES ('w.task', 'http://localhost/task', 2, 100, '10 seconds', '1 hour'),
       ('w.capped', 'http://localhost/capped', 10, 100, '1 minute', '2 minutes');
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';

-- What a claim hands the worker.
SELECT jobrunner.queue_job('w.task', '{"k": "v"}') AS j1 \gset
SELECT c.job_name, c.user_id, c.user_role, c.attempt, c.request_body, c.url, c.headers, c.timeout_ms
  FROM jobrunner._claim(1000, 42) c WHERE c.id = :'j1';
SELECT state, attempts, locked_by, last_run_at IS NOT NULL AS has_run FROM jobrunner.job WHERE id = :'j1';

------------------------------------------------------------------------------
-- 2xx: completed, with status, response and duration.
------------------------------------------------------------------------------
SELECT regress.record(:'j1', 1, 200, NULL, '{"ok": true}') AS recorded;
SELECT * FROM regress.job(:'j1');
SELECT * FROM regress.logs(:'j1');
-- Recording it again changes nothing.
SELECT regress.record(:'j1', 1, 500, 'late duplicate', NULL) AS recorded_again;
SELECT state, last_status FROM jobrunner.job WHERE id = :'j1';

------------------------------------------------------------------------------
-- Fencing: an outcome for another attempt, or from another worker
-- incarnation, changes nothing.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('w.task') AS j2 \gset
SELECT regress.claim(:'j2') AS attempt;
SELECT regress.record(:'j2', 2, 200, NULL, '{}') AS wrong_attempt,
       regress.record(:'j2', 0, 500, 'x', NULL) AS attempt_zero,
       regress.record(:'j2', 1, 200, NULL, '{}', _worker => 41) AS wrong_worker;
SELECT * FROM regress.job(:'j2');
-- A batch: only the outcome that matches is written.
SELECT jobrunner.queue_job('w.task') AS j3 \gset
SELECT regress.claim(:'j3') AS attempt;
SELECT jobrunner._record(42, ARRAY[:'j2', :'j3']::uuid[], ARRAY[7, 1], ARRAY[200, 201],
                         ARRAY[NULL, NULL]::text[], ARRAY['{"a": 1}', '{"b": 2}'],
                         ARRAY[1, 2]::float8[], ARRAY[NULL, NULL]::bigint[]) AS left_for_later;
SELECT (SELECT state FROM jobrunner.job WHERE id = :'j2') AS j2_state,
       (SELECT state FROM jobrunner.job WHERE id = :'j3') AS j3_state;
-- complete_job got there first: the worker's outcome changes nothing.
SELECT jobrunner.complete_job(:'j2', '{"by": "endpoint"}') AS completed;
SELECT regress.record(:'j2', 1, 500, 'too late', NULL) AS recorded;
SELECT * FROM regress.job(:'j2');

------------------------------------------------------------------------------
-- Failed attempts: back to pending after a jittered exponential backoff
-- (attempt n waits between base*2^(n-1)/2 and base*2^(n-1)), then failed once
-- max_retries (2) retries are used up.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('w.task') AS j4 \gset
SELECT regress.claim(:'j4') AS attempt;
SELECT regress.record(:'j4', 1, 500, 'HTTP 500', '{"ignored": true}') AS recorded;
SELECT * FROM regress.job(:'j4');
SELECT pg_temp.backoff(:'j4') BETWEEN interval '5 seconds' AND interval '10 seconds' AS backoff_5_to_10s;
SELECT regress.claim(:'j4') AS claimed_before_due;
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'j4';
SELECT regress.claim(:'j4') AS attempt;
SELECT regress.record(:'j4', 2, 502, 'HTTP 502', NULL) AS recorded;
SELECT pg_temp.backoff(:'j4') BETWEEN interval '10 seconds' AND interval '20 seconds' AS backoff_10_to_20s;
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'j4';
SELECT regress.claim(:'j4') AS attempt;
SELECT regress.record(:'j4', 3, 504, 'HTTP 504', NULL) AS recorded;
SELECT * FROM regress.job(:'j4');
SELECT * FROM regress.logs(:'j4');
-- A failed job is not claimed again.
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'j4';
SELECT regress.claim(:'j4') AS claimed_after_failure;

-- A connection error (status 0) keeps no status, only the error.
SELECT jobrunner.queue_job('w.task') AS j5 \gset
SELECT regress.claim(:'j5') AS attempt;
SELECT regress.record(:'j5', 1, 0, 'connection refused', NULL) AS recorded;
SELECT * FROM regress.job(:'j5');

-- The backoff itself: bounds per attempt, the cap, and jitter.
SELECT n AS attempt,
       min(d) >= base / 2 AND max(d) <= base AS within_bounds
  FROM generate_series(1, 4) AS n,
       LATERAL (SELECT interval '10 seconds' * 2 ^ (n - 1) AS base) b,
       LATERAL (SELECT jobrunner._retry_delay(n, interval '10 seconds', interval '1 hour') AS d
                  FROM generate_series(1, 300)) s
 GROUP BY n, base ORDER BY n;
SELECT min(d) >= interval '30 minutes' AND max(d) <= interval '1 hour' AS capped_at_1h,
       count(DISTINCT d) > 1 AS jittered
  FROM (SELECT jobrunner._retry_delay(30, interval '10 seconds', interval '1 hour') AS d
          FROM generate_series(1, 300)) s;
SELECT jobrunner._retry_delay(1, interval '0', interval '0') AS no_backoff;

------------------------------------------------------------------------------
-- Retry-After (429/503): honoured exactly, up to retry_backoff_max.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('w.capped') AS j6 \gset
SELECT regress.claim(:'j6') AS attempt;
SELECT regress.record(:'j6', 1, 503, 'HTTP 503', NULL, _retry_after_ms => 30000) AS recorded;
SELECT state, last_status, pg_temp.backoff(:'j6') AS waits FROM jobrunner.job WHERE id = :'j6';
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'j6';
SELECT regress.claim(:'j6') AS attempt;
SELECT regress.record(:'j6', 2, 429, 'HTTP 429', NULL, _retry_after_ms => 36000000) AS recorded;
SELECT state, last_status, pg_temp.backoff(:'j6') AS waits_capped FROM jobrunner.job WHERE id = :'j6';
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'j6';
SELECT regress.claim(:'j6') AS attempt;
SELECT regress.record(:'j6', 3, 503, 'HTTP 503', NULL, _retry_after_ms => 0) AS recorded;
SELECT state, pg_temp.backoff(:'j6') AS waits_not_at_all FROM jobrunner.job WHERE id = :'j6';

------------------------------------------------------------------------------
-- _recover: attempts left running by another worker incarnation go back to
-- pending, due now, without counting the interrupted attempt.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('w.task') AS r1 \gset
SELECT jobrunner.queue_job('w.task') AS r2 \gset
SELECT jobrunner.queue_job('w.task') AS r3 \gset
SELECT regress.claim(:'r1', 41) AS r1_attempt;
SELECT regress.claim(:'r3', 41) AS r3_attempt;
SELECT regress.record(:'r3', 1, 500, 'HTTP 500', NULL, _worker => 41) AS r3_failed_once;
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'r3';
SELECT regress.claim(:'r3', 41) AS r3_attempt;
SELECT regress.claim(:'r2', 43) AS r2_attempt;
SELECT id = :'r1' AS is_r1, id = :'r2' AS is_r2, attempts, locked_by
  FROM jobrunner.job WHERE state = 'running' ORDER BY locked_by, attempts;
-- Worker 43 starts and recovers what is not its own: r1 and r3.
SELECT recovered, skipped FROM jobrunner._recover(43);
SELECT id = :'r1' AS is_r1, state, attempts, locked_by, next_run_at <= now() AS due_now
  FROM jobrunner.job WHERE id IN (:'r1', :'r3') ORDER BY id = :'r1' DESC;
SELECT * FROM regress.logs(:'r3');
-- Worker 43's own attempt is left alone.
SELECT state, attempts, locked_by FROM jobrunner.job WHERE id = :'r2';
-- A late answer from the dead incarnation changes nothing.
SELECT regress.record(:'r1', 1, 200, NULL, '{}', _worker => 41) AS late_answer;
SELECT state FROM jobrunner.job WHERE id = :'r1';
-- Recovered jobs are claimed again, with the same attempt number.
SELECT regress.claim(:'r1', 43) AS r1_attempt;
SELECT recovered AS recovered_again FROM jobrunner._recover(43);

RESET request.jwt.claims;
