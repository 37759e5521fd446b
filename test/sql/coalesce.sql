-- coalesce: queue_job(..., _dedup_key, _on_duplicate => 'replace'). A job
-- never sent takes the newest body (and the newest run_at, when given: a
-- debounce); behind a job already sent, the newest body waits and is queued
-- when that job ends. The test session is a superuser, so its
-- request.jwt.claims are believed.
\set SHOW_CONTEXT never
SELECT regress.begin_test();
INSERT INTO jobrunner.job_config (job_name, url, max_retries, concurrency_limit, retry_backoff)
VALUES ('c.doc', 'http://localhost/doc', 3, 100, '10 seconds');
\set user_a 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
\set user_b 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';

-- Errors name the bad value.
SELECT regress.err($$SELECT jobrunner.queue_job('c.doc', _dedup_key => 'k', _on_duplicate => 'merge')$$) AS unknown_mode;
SELECT regress.err($$SELECT jobrunner.queue_job('c.doc', _dedup_key => 'k', _on_duplicate => NULL)$$) AS null_mode;
SELECT regress.err($$SELECT jobrunner.queue_job('c.doc', _on_duplicate => 'replace')$$) AS replace_without_key;
SELECT count(*) AS nothing_queued FROM jobrunner.job;

-- 'keep' (the default) returns the job holding the key, body unchanged.
SELECT jobrunner.queue_job('c.doc', '{"v": 1}', _dedup_key => 'doc-1') AS d1 \gset
SELECT jobrunner.queue_job('c.doc', '{"v": 2}', _dedup_key => 'doc-1', _on_duplicate => 'keep') = :'d1' AS kept;
SELECT request_body FROM jobrunner.job WHERE id = :'d1';

-- 'replace' on a job never sent: the same job, the newest body; its time
-- stays unless the call gives one, and then moves (either way).
SELECT jobrunner.queue_job('c.doc', '{"v": 3}', _dedup_key => 'doc-1', _on_duplicate => 'replace') = :'d1' AS same_job;
SELECT request_body, due, next_run_at <= now() AS due_now FROM jobrunner.job WHERE id = :'d1';
SELECT jobrunner.queue_job('c.doc', '{"v": 4}', _dedup_key => 'doc-1', _on_duplicate => 'replace',
                           _run_at => now() + interval '30 seconds') = :'d1' AS debounced;
SELECT request_body, due, next_run_at - now() BETWEEN interval '29 seconds' AND interval '31 seconds' AS pushed
  FROM jobrunner.job WHERE id = :'d1';
SELECT jobrunner.queue_job('c.doc', '{"v": 5}', _dedup_key => 'doc-1', _on_duplicate => 'replace') = :'d1' AS same_job;
SELECT request_body, due AS still_waiting FROM jobrunner.job WHERE id = :'d1';
SELECT jobrunner.queue_job('c.doc', '{"v": 6}', _dedup_key => 'doc-1', _on_duplicate => 'replace',
                           _run_at => now() - interval '1 second') = :'d1' AS pulled_in;
SELECT request_body, due FROM jobrunner.job WHERE id = :'d1';
SELECT count(*) AS one_row, count(*) FILTER (WHERE log_message = 'created') AS one_created_log
  FROM jobrunner.job j LEFT JOIN jobrunner.job_logs l ON l.job_id = j.id WHERE j.dedup_key = 'doc-1';
-- Other users' and other keys' jobs are not touched.
SELECT jobrunner.queue_job_for(:'user_b', 'authenticated', NULL, 'c.doc', '{"b": 1}',
                               _dedup_key => 'doc-1', _on_duplicate => 'replace') <> :'d1' AS other_user_other_job;

-- Once sent, a job is never changed: the newest body waits behind it, under
-- the id queue_job returns, and later calls replace that body.
SELECT regress.claim(:'d1') AS attempt;
SELECT jobrunner.queue_job('c.doc', '{"v": 7}', _dedup_key => 'doc-1', _on_duplicate => 'replace') AS s1 \gset
SELECT :'s1' <> :'d1' AS new_id, (SELECT request_body FROM jobrunner.job WHERE id = :'d1') AS sent_body,
       NOT EXISTS (SELECT FROM jobrunner.job WHERE id = :'s1') AS not_a_job_yet;
SELECT jobrunner.queue_job('c.doc', '{"v": 8}', _dedup_key => 'doc-1', _on_duplicate => 'replace') = :'s1' AS same_waiting_body;
SELECT request_body FROM jobrunner.job_successor WHERE id = :'s1';
-- 'keep' still answers with the job holding the key.
SELECT jobrunner.queue_job('c.doc', '{"v": 9}', _dedup_key => 'doc-1') = :'d1' AS keep_returns_holder;
SELECT reason, blocking, regress.masked(detail) AS detail FROM jobrunner.explain_job(:'s1');

-- A failed attempt that will be retried: the job goes back to pending, but
-- was sent, so it keeps its body; the waiting body is still v8.
SELECT regress.record(:'d1', 1, 500, NULL, NULL) AS logs_written;
SELECT state, request_body FROM jobrunner.job WHERE id = :'d1';
SELECT jobrunner.queue_job('c.doc', '{"v": 10}', _dedup_key => 'doc-1', _on_duplicate => 'replace') = :'s1' AS still_behind;

-- The holder ends: the waiting body becomes a pending job in that same
-- transaction, under its id, with the key, in its own trace.
UPDATE jobrunner.job SET next_run_at = now(), due = true WHERE id = :'d1';
SELECT regress.claim(:'d1') AS attempt;
SELECT regress.record(:'d1', 2, 200, NULL, NULL) AS logs_written;
SELECT id = :'s1' AS same_id, state, request_body, dedup_key, attempt_seq, due, max_retries
  FROM jobrunner.job WHERE id <> :'d1' AND user_id = :'user_a';
SELECT attempt, log_level, regress.masked(log_message) AS log_message FROM jobrunner.job_logs WHERE job_id = :'s1';
SELECT count(*) AS nothing_waits FROM jobrunner.job_successor;
-- It is an ordinary pending job now: a replace changes it in place.
SELECT jobrunner.queue_job('c.doc', '{"v": 11}', _dedup_key => 'doc-1', _on_duplicate => 'replace') = :'s1' AS in_place;
SELECT request_body FROM jobrunner.job WHERE id = :'s1';

-- Canceling the holder ends it too: what waits behind it is queued.
SELECT regress.claim(:'s1') AS attempt;
SELECT jobrunner.queue_job('c.doc', '{"v": 12}', _dedup_key => 'doc-1', _on_duplicate => 'replace') AS s2 \gset
SELECT jobrunner.cancel_job(:'s1') AS canceled;
SELECT state, request_body FROM jobrunner.job WHERE id = :'s2';

-- A waiting body can itself be dropped by its user (dequeue_job or
-- cancel_job), not by another user, who is told it does not exist.
SELECT regress.claim(:'s2') AS attempt;
SELECT jobrunner.queue_job('c.doc', '{"v": 13}', _dedup_key => 'doc-1', _on_duplicate => 'replace') AS s3 \gset
-- (Through PostgREST's roles: the test session itself is an admin.)
SET SESSION AUTHORIZATION regress_authenticator;
SET ROLE regress_authenticated;
SET request.jwt.claims = '{"sub": "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "role": "authenticated"}';
SELECT regress.masked(regress.err(format('SELECT jobrunner.cancel_job(%L)', :'s3'))) AS other_user_cancel;
SELECT regress.masked(regress.err(format('SELECT jobrunner.dequeue_job(%L)', :'s3'))) AS other_user_dequeue;
SELECT regress.masked(regress.err(format('SELECT * FROM jobrunner.explain_job(%L)', :'s3'))) AS other_user_explain;
SELECT regress.masked(regress.err(format('SELECT jobrunner.queue_job(%L, %L, _dedup_key => %L, _on_duplicate => %L)',
                                         'c.doc', '{"v": "b"}', 'doc-1', 'replace'))) AS other_user_own_key;
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';
SELECT reason FROM jobrunner.explain_job(:'s3');
SELECT jobrunner.cancel_job(:'s3') AS dropped;
RESET ROLE;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS nothing_waits FROM jobrunner.job_successor;
SELECT regress.record(:'s2', 1, 200, NULL, NULL) AS logs_written;
SELECT count(*) AS no_new_job FROM jobrunner.job WHERE state = 'pending' AND user_id = :'user_a';

-- An idempotency key does not go with 'replace' (the body would be merged
-- into another job, and a repeated call would send it twice).
SELECT regress.err($$SELECT jobrunner.queue_job('c.doc', '{"i": 2}', _idempotency_key => 'once',
                                                _dedup_key => 'doc-2', _on_duplicate => 'replace')$$) AS with_idempotency_key;

-- Coalesced bodies that all failed (an outage): retry_jobs retries the
-- newest, not the first.
UPDATE jobrunner.job_config SET max_retries = 0 WHERE job_name = 'c.doc';
SELECT jobrunner.queue_job('c.doc', '{"rev": 1}', _dedup_key => 'doc-3', _on_duplicate => 'replace') AS r1 \gset
SELECT regress.claim(:'r1') AS attempt;
SELECT jobrunner.queue_job('c.doc', '{"rev": 2}', _dedup_key => 'doc-3', _on_duplicate => 'replace') AS r2 \gset
SELECT regress.record(:'r1', 1, 500, 'HTTP 500', NULL) AS logs_written;
SELECT regress.claim(:'r2') AS attempt;
SELECT jobrunner.queue_job('c.doc', '{"rev": 3}', _dedup_key => 'doc-3', _on_duplicate => 'replace') AS r3 \gset
SELECT regress.record(:'r2', 1, 500, 'HTTP 500', NULL) AS logs_written;
SELECT regress.claim(:'r3') AS attempt;
SELECT regress.record(:'r3', 1, 500, 'HTTP 500', NULL) AS logs_written;
SELECT jobrunner.retry_jobs('c.doc', NULL, 'HTTP 500%') AS retried;
SELECT request_body, state FROM jobrunner.job WHERE dedup_key = 'doc-3' ORDER BY created_at;

-- An administrator coalesces system jobs the same way.
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'c.doc', '{"s": 1}', _dedup_key => 'sys') AS sys1 \gset
SELECT jobrunner.queue_job_for(NULL, NULL, NULL, 'c.doc', '{"s": 2}', _dedup_key => 'sys',
                               _on_duplicate => 'replace') = :'sys1' AS same_job;
SELECT request_body FROM jobrunner.job WHERE id = :'sys1';

-- A job claimed but never sent (its destination was unavailable, so the
-- worker deferred it) keeps attempt 0: a replace still changes it in place,
-- and its next attempt is number 1.
SELECT jobrunner.queue_job('c.doc', '{"d": 1}', _dedup_key => 'doc-4', _on_duplicate => 'replace') AS f1 \gset
SELECT regress.claim(:'f1') AS attempt;
SELECT regress.record(:'f1', 1, -1, 'its destination is unavailable', NULL, 1000) AS logs_written;
SELECT state, attempt_seq, attempts FROM jobrunner.job WHERE id = :'f1';
SELECT jobrunner.queue_job('c.doc', '{"d": 2}', _dedup_key => 'doc-4', _on_duplicate => 'replace') = :'f1' AS in_place;
SELECT request_body FROM jobrunner.job WHERE id = :'f1';
UPDATE jobrunner.job SET next_run_at = now(), due = true WHERE id = :'f1';
SELECT regress.claim(:'f1') AS attempt;
