-- Ceiling B (jobs/s): the worker's two statements as plain SQL, one batch of
-- up to 500 per transaction: jobrunner._claim marks due jobs running (fair
-- skip scan, per-group limits, a log row per job), then jobrunner._record
-- completes the same batch with status 204 (fenced update + a log row per job).
-- One pgbench client plays the single worker; :client_id is its worker id.
BEGIN;
SELECT pg_catalog.array_agg(c.id)::text AS ids,
       pg_catalog.array_agg(c.attempt)::text AS attempts,
       pg_catalog.count(*) AS n
  FROM jobrunner._claim(500, :client_id + 1) c \gset
SELECT jobrunner._record(:client_id + 1, ':ids'::uuid[], ':attempts'::int[],
                         pg_catalog.array_fill(204, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(NULL::text, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(NULL::text, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(1.0::float8, ARRAY[:n]::int[]),
                         pg_catalog.array_fill(NULL::bigint, ARRAY[:n]::int[]));
COMMIT;
