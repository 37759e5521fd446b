-- Ceiling B (jobs/s), the worker's own shape: each transaction records the
-- previous transaction's batch as completed (status 204) and claims the next
-- one, as the worker does when a whole batch has answered. The batch size is
-- jobrunner.max_in_flight (256 here) via -D batch=256; ids, attempts and n
-- start empty (-D ids={} -D attempts={} -D n=0) and carry over between
-- transactions. One pgbench client plays the single worker.
BEGIN;
SELECT jobrunner._record(:client_id + 1, ':ids'::uuid[], ':attempts'::int[],
                         pg_catalog.array_fill(204, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(NULL::text, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(NULL::text, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(1.0::float8, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(NULL::bigint, ARRAY[:n]::int[]));
SELECT COALESCE(pg_catalog.array_agg(c.id), '{}')::text AS ids,
       COALESCE(pg_catalog.array_agg(c.attempt), '{}')::text AS attempts,
       pg_catalog.count(*) AS n
  FROM jobrunner._claim(:batch, :client_id + 1) c \gset
COMMIT;
