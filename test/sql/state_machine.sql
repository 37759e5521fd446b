-- state_machine: dequeue_job, retry_job, complete_job and fail_job, what
-- each transition writes to job_logs, and fencing by attempt.
\set SHOW_CONTEXT never
SELECT regress.begin_test();

INSERT INTO jobrunner.job_config (job_name, url, max_retries, concurrency_limit)
VALUES ('sm.task', 'http://localhost/task', 1, 100);
SET request.jwt.claims = '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}';

------------------------------------------------------------------------------
-- pending -> canceled -> pending (retry_job) -> running -> completed
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('sm.task', '{"n": 1}') AS j1 \gset
-- Nothing to complete or fail while pending.
SELECT jobrunner.complete_job(:'j1') AS complete_pending, jobrunner.fail_job(:'j1', 'x') AS fail_pending,
       jobrunner.retry_job(:'j1') AS retry_pending;
SELECT jobrunner.dequeue_job(:'j1') AS canceled;
SELECT * FROM regress.job(:'j1');
SELECT jobrunner.dequeue_job(:'j1') AS canceled_again;
SELECT jobrunner.complete_job(:'j1') AS complete_canceled;
-- The worker does not claim a canceled job.
SELECT regress.claim(:'j1') AS claimed_attempt;
SELECT jobrunner.retry_job(:'j1') AS retried;
SELECT * FROM regress.job(:'j1');
SELECT regress.claim(:'j1') AS claimed_attempt;
SELECT * FROM regress.job(:'j1');
-- A claimed job is not canceled, and cannot be retried.
SELECT jobrunner.dequeue_job(:'j1') AS dequeue_running, jobrunner.retry_job(:'j1') AS retry_running;
-- A stale attempt number changes nothing.
SELECT jobrunner.complete_job(:'j1', '{"r": 0}', _attempt => 2) AS complete_wrong_attempt;
SELECT jobrunner.fail_job(:'j1', 'late', _attempt => 0) AS fail_wrong_attempt;
SELECT state FROM jobrunner.job WHERE id = :'j1';
SELECT jobrunner.complete_job(:'j1', '{"r": 1}', _attempt => 1) AS completed;
SELECT jobrunner.complete_job(:'j1', '{"r": 2}') AS completed_again;
SELECT jobrunner.fail_job(:'j1', 'too late') AS fail_completed;
SELECT jobrunner.dequeue_job(:'j1') AS dequeue_completed, jobrunner.retry_job(:'j1') AS retry_completed;
SELECT * FROM regress.job(:'j1');
SELECT * FROM regress.logs(:'j1');

------------------------------------------------------------------------------
-- fail_job: the attempt fails and is retried; once retries are used up, or
-- with _retry => false, the job fails; retry_job starts it over.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('sm.task') AS j2 \gset
SELECT regress.claim(:'j2') AS claimed_attempt;
SELECT jobrunner.fail_job(:'j2', 'upstream said no') AS failed_attempt;
SELECT * FROM regress.job(:'j2');
-- Retried after a backoff: the job is not due yet.
SELECT next_run_at > now() AS waits_for_backoff FROM jobrunner.job WHERE id = :'j2';
SELECT regress.claim(:'j2') AS claimed_before_due;
UPDATE jobrunner.job SET next_run_at = now() WHERE id = :'j2';
SELECT regress.claim(:'j2') AS claimed_attempt;
-- max_retries = 1: the second failed attempt is the last.
SELECT jobrunner.fail_job(:'j2', 'still no') AS failed_attempt;
SELECT * FROM regress.job(:'j2');
SELECT jobrunner.fail_job(:'j2', 'again') AS fail_failed, jobrunner.complete_job(:'j2') AS complete_failed,
       jobrunner.dequeue_job(:'j2') AS dequeue_failed;
SELECT jobrunner.retry_job(:'j2') AS retried;
SELECT * FROM regress.job(:'j2');
SELECT jobrunner.retry_job(:'j2') AS retried_again;
SELECT * FROM regress.logs(:'j2');

-- _retry => false fails at once, whatever retries are left.
SELECT jobrunner.queue_job('sm.task', _max_retries => 5) AS j3 \gset
SELECT regress.claim(:'j3') AS claimed_attempt;
SELECT jobrunner.fail_job(:'j3', 'bad request, do not retry', _retry => false) AS failed;
SELECT * FROM regress.job(:'j3');
-- A NULL error still says why.
SELECT jobrunner.queue_job('sm.task') AS j4 \gset
SELECT regress.claim(:'j4') AS claimed_attempt;
SELECT jobrunner.fail_job(:'j4', NULL) AS failed_attempt;
SELECT state, last_error FROM jobrunner.job WHERE id = :'j4';

------------------------------------------------------------------------------
-- cancel_job: a pending job as dequeue_job would; a running one too, its
-- request still holding the slot until it ends (the worker aborts it once
-- the cancel commits); a finished one not.
------------------------------------------------------------------------------
SELECT jobrunner.queue_job('sm.task') AS c1 \gset
SELECT jobrunner.cancel_job(:'c1') AS canceled_pending;
SELECT * FROM regress.job(:'c1');
SELECT jobrunner.queue_job('sm.task') AS c2 \gset
SELECT regress.claim(:'c2') AS attempt;
SELECT jobrunner.cancel_job(:'c2') AS canceled_running;
SELECT * FROM regress.job(:'c2');
SELECT sending_attempt AS request_still_holds_the_slot FROM jobrunner.job WHERE id = :'c2';
SELECT log_message FROM regress.logs(:'c2') ORDER BY 1;
-- The aborted request's outcome only gives the slot back; so would a late 200.
SELECT regress.record(:'c2', 1, 0, 'canceled', NULL) AS logged;
SELECT state, sending_attempt, response FROM jobrunner.job WHERE id = :'c2';
SELECT jobrunner.cancel_job(:'c2') AS canceled_again;
-- An acknowledged callback job has no request on the wire: canceled, and
-- its endpoint's complete_job is refused.
INSERT INTO jobrunner.job_config (job_name, url, completion, concurrency_limit)
VALUES ('sm.cb', 'http://localhost/cb', 'callback', 10);
SELECT jobrunner.queue_job('sm.cb') AS c3 \gset
SELECT regress.claim(:'c3') AS attempt;
SELECT regress.record(:'c3', 1, 202, NULL, NULL) AS acknowledged;
SELECT jobrunner.cancel_job(:'c3') AS canceled_acked;
SELECT state, sending_attempt, acked_at FROM jobrunner.job WHERE id = :'c3';
SELECT jobrunner.complete_job(:'c3') AS completed_after_cancel;
-- Another user's job, through PostgREST: not found; her own: canceled.
SELECT jobrunner.queue_job_for('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'authenticated', NULL, 'sm.task') AS c4 \gset
SELECT jobrunner.queue_job('sm.task') AS c5 \gset
SET SESSION AUTHORIZATION regress_authenticator;
SET ROLE regress_authenticated;
SELECT regress.err(format('SELECT jobrunner.cancel_job(%L)', :'c4')) AS cancel_other_users_job;
SELECT jobrunner.cancel_job(:'c5') AS cancel_own_job;
RESET ROLE;
RESET SESSION AUTHORIZATION;

------------------------------------------------------------------------------
-- Errors: a NULL id, and an id that does not exist (reported like another
-- user's job: not found).
------------------------------------------------------------------------------
SELECT regress.err($$SELECT jobrunner.dequeue_job(NULL)$$) AS dequeue_null,
       regress.err($$SELECT jobrunner.complete_job(NULL)$$) AS complete_null;
SELECT f, regress.err(format('SELECT jobrunner.%s(%L%s)', f, '00000000-0000-4000-8000-000000000001',
                             CASE WHEN f = 'fail_job' THEN ', ''x''' ELSE '' END)) AS unknown_id
  FROM unnest(ARRAY['dequeue_job', 'cancel_job', 'retry_job', 'complete_job', 'fail_job']) AS f;

-- Every transition above is in job_logs, with its level.
SELECT log_level, count(*) FROM jobrunner.job_logs GROUP BY 1 ORDER BY 1;
RESET request.jwt.claims;

------------------------------------------------------------------------------
-- job_logs is a view: "created" and "started attempt N" are shown from the
-- job row, then from the attempt's first stored row; a failed attempt
-- stores its row, the worker's completion is shown from the job row. Ids
-- follow the order of the transitions.
------------------------------------------------------------------------------
INSERT INTO jobrunner.job_config (job_name, url, max_retries, retry_backoff)
VALUES ('sm.view', 'http://localhost/view', 3, '0 seconds'), ('sm.view2', 'http://localhost/view', 3, '0 seconds');
SELECT jobrunner.queue_job('sm.view') AS v1 \gset
SELECT regress.claim(:'v1') AS attempt;
-- Running: created and started, neither stored.
SELECT attempt, log_level, log_message FROM jobrunner.job_logs WHERE job_id = :'v1' ORDER BY id;
SELECT count(*) AS stored_while_running FROM jobrunner.job_log_entry WHERE job_id = :'v1';
SELECT regress.record(:'v1', 1, 500, 'HTTP 500', NULL) AS first_failed;
SELECT regress.claim(:'v1') AS attempt;
SELECT regress.record(:'v1', 2, 200, NULL, '{}') AS then_completed;
SELECT attempt, log_level, regexp_replace(log_message, ' at .*$', ' at (time)') AS log_message, status_code
  FROM jobrunner.job_logs WHERE job_id = :'v1' ORDER BY id;
-- Stored: the failed attempt's row, which carries its start.
SELECT count(*) AS stored_rows, count(started_id) AS carrying_a_start
  FROM jobrunner.job_log_entry WHERE job_id = :'v1';
-- Each "started" row has the time its attempt started, before its outcome.
SELECT bool_and(s.created_at <= o.created_at AND s.id < o.id) AS started_before_outcome
  FROM jobrunner.job_logs s
  JOIN jobrunner.job_logs o ON o.job_id = s.job_id AND o.attempt = s.attempt AND o.log_message LIKE 'attempt%failed%'
                            OR o.job_id = s.job_id AND o.attempt = s.attempt AND o.log_message LIKE 'completed%'
 WHERE s.job_id = :'v1' AND s.log_message LIKE 'started%';
-- Ids are unique across stored and shown rows.
SELECT count(*) = count(DISTINCT id) AS ids_unique FROM jobrunner.job_logs;
-- A cancel while running, and a worker restart, carry the start too.
SELECT jobrunner.queue_job('sm.view') AS v2 \gset
SELECT regress.claim(:'v2') AS attempt;
SELECT jobrunner.cancel_job(:'v2') AS canceled_running;
SELECT jobrunner.queue_job('sm.view2') AS v3 \gset
SELECT regress.claim(:'v3', 77) AS attempt;
SELECT recovered >= 1 AS v3_recovered FROM jobrunner._recover(78);
SELECT job_id = :'v2' AS is_v2, attempt, log_message FROM jobrunner.job_logs
 WHERE job_id IN (:'v2', :'v3') ORDER BY job_id = :'v2' DESC, id;
-- Only the completed job still shows its last start from its own row.
SELECT id = :'v1' AS is_v1, started_log_id IS NOT NULL AS start_from_job_row,
       finished_log_id IS NOT NULL AS completion_from_job_row
  FROM jobrunner.job WHERE id IN (:'v1', :'v2', :'v3') ORDER BY 1 DESC, 2;
-- fail_job while the request is still on the wire puts the job back to
-- pending; a worker restart then only ends that request: no attempt was
-- running, so none is "interrupted".
SELECT jobrunner.queue_job('sm.view2') AS v4 \gset
SELECT regress.claim(:'v4', 79) AS attempt;
SELECT jobrunner.fail_job(:'v4', 'endpoint says no') AS failed_on_the_wire;
SELECT state, sending_attempt FROM jobrunner.job WHERE id = :'v4';
SELECT recovered, skipped FROM jobrunner._recover(80);
SELECT state, sending_attempt FROM jobrunner.job WHERE id = :'v4';
SELECT attempt, regexp_replace(log_message, ' at .*$', ' at (time)') AS log_message
  FROM jobrunner.job_logs WHERE job_id = :'v4' ORDER BY id;

-- An administrator clears logs with DELETE as from a table: a stored row,
-- a "started" row it carries, and the rows shown from the job row.
SELECT count(*) AS v1_rows_before FROM jobrunner.job_logs WHERE job_id = :'v1';
DELETE FROM jobrunner.job_logs WHERE job_id = :'v1' AND log_message LIKE 'started attempt 1';
SELECT attempt, regexp_replace(log_message, ' at .*$', ' at (time)') AS log_message
  FROM jobrunner.job_logs WHERE job_id = :'v1' ORDER BY id;
DELETE FROM jobrunner.job_logs WHERE job_id = :'v1';
SELECT count(*) AS v1_rows_after FROM jobrunner.job_logs WHERE job_id = :'v1';
SELECT count(*) AS v1_stored_rows FROM jobrunner.job_log_entry WHERE job_id = :'v1';
SELECT state FROM jobrunner.job WHERE id = :'v1';
