-- job-states.sql — one line per job: what must survive an update unchanged.
SELECT j.request_body ->> 'n' AS n, j.state, j.attempts, j.user_id, j.job_name, j.dedup_key,
       j.idempotency_key, j.priority, j.last_status, j.response,
       (SELECT count(*) FROM jobrunner.job_logs l WHERE l.job_id = j.id) AS logs
  FROM jobrunner.job j ORDER BY 1;
