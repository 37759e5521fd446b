-- Ceiling B (transactions/s): the smallest durable state change a job runner
-- makes — one single-row UPDATE plus one INSERT, committed with
-- synchronous_commit = on. Tables are made by run.sh (bench_row, bench_log).
\set id random(1, 10000)
BEGIN;
UPDATE bench_row SET n = n + 1, updated_at = now() WHERE id = :id;
INSERT INTO bench_log (row_id, note) VALUES (:id, 'done');
COMMIT;
