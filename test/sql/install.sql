-- install: what CREATE EXTENSION leaves behind (pg_regress created it, with
-- --load-extension), and that it cannot be moved.
\set SHOW_CONTEXT never

-- Not relocatable, in schema jobrunner.
SELECT e.extname, n.nspname AS schema, e.extrelocatable, e.extversion
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_jobrunner';
ALTER EXTENSION pg_jobrunner SET SCHEMA public;

-- Every object of the extension lives in schema jobrunner.
SELECT count(*) AS members_outside_jobrunner
  FROM pg_depend d
  JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_jobrunner')
   AND d.deptype = 'e'
   AND c.relnamespace <> 'jobrunner'::regnamespace;
SELECT count(*) AS functions_outside_jobrunner
  FROM pg_depend d
  JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_jobrunner')
   AND d.deptype = 'e'
   AND p.pronamespace <> 'jobrunner'::regnamespace;

-- Tables and views of the contract.
SELECT c.relname, c.relkind, c.relrowsecurity AS rls
  FROM pg_class c
 WHERE c.relnamespace = 'jobrunner'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relname;

-- job_logs reads its rows as the querying role, so the policies of the
-- tables under it decide what each user sees.
SELECT c.relname, c.reloptions FROM pg_class c WHERE c.oid = 'jobrunner.job_logs'::regclass;

-- The job table carries the columns the contract names.
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a
 WHERE a.attrelid = 'jobrunner.job'::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attname IN ('id', 'user_id', 'user_role', 'user_email', 'job_name', 'request_body',
                     'state', 'priority', 'attempts', 'max_retries', 'dedup_key',
                     'idempotency_key', 'created_at', 'updated_at', 'next_run_at',
                     'last_run_at', 'locked_at', 'finished_at', 'last_status',
                     'last_error', 'response')
 ORDER BY a.attnum;

SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a
 WHERE a.attrelid = 'jobrunner.job_logs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attname IN ('id', 'job_id', 'attempt', 'log_level', 'log_message', 'status_code',
                     'created_at')
 ORDER BY a.attnum;

-- job_config defaults as the contract gives them.
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default_value
  FROM pg_attribute a
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'jobrunner.job_config'::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attname IN ('job_name', 'url', 'enabled', 'concurrency_limit', 'max_concurrency',
                     'rate_limit', 'timeout', 'max_retries', 'retry_backoff',
                     'retry_backoff_max', 'headers', 'completion', 'on_complete', 'on_fail')
 ORDER BY a.attnum;

-- The public API: signatures, and which functions run as their owner.
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS result,
       p.prosecdef AS security_definer
  FROM pg_proc p
 WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.proname !~ '^_'
 ORDER BY p.proname;
-- Argument names are part of the API (callers use named notation).
SELECT p.proname, array_to_string(p.proargnames, ', ') AS argument_names
  FROM pg_proc p
 WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.proname !~ '^_'
   AND p.proname <> 'worker_status' AND p.proname !~ '^metrics'
 ORDER BY p.proname;
-- So are the metrics functions' columns: monitoring/postgres_exporter.yml
-- reads them by name.
SELECT p.proname, a.n, a.column_name
  FROM pg_proc p CROSS JOIN LATERAL unnest(p.proargnames) WITH ORDINALITY a(column_name, n)
 WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.proname ~ '^metrics'
 ORDER BY p.proname, a.n;

-- Every function of the extension pins search_path, but a few pure C ones
-- called per job, which run no SQL and resolve no names (all in C).
SELECT p.oid::regprocedure AS function_without_pinned_search_path,
       l.lanname AS language
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'jobrunner'::regnamespace
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY 1::text;

-- Every public object has a comment.
SELECT c.relname AS table_without_comment
  FROM pg_class c
 WHERE c.relnamespace = 'jobrunner'::regnamespace AND c.relkind IN ('r', 'v')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.oid::regprocedure AS public_function_without_comment
  FROM pg_proc p
 WHERE p.pronamespace = 'jobrunner'::regnamespace AND p.proname !~ '^_'
   AND obj_description(p.oid, 'pg_proc') IS NULL;

-- Settings exist with the documented defaults (the secret is never shown;
-- the defaults, not this server's values, so any server can run the suite).
SELECT name, boot_val AS default_value, context
  FROM pg_settings
 WHERE name IN ('jobrunner.database_name', 'jobrunner.system_role',
                'jobrunner.trusted_claim_roles', 'jobrunner.poll_interval',
                'jobrunner.base_url')
 ORDER BY name;

-- Dropping and re-creating the extension works. No object is left behind
-- (PostgreSQL itself creates the schema named in the control file, outside
-- the extension, so the empty schema stays).
DROP EXTENSION pg_jobrunner;
SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'jobrunner'::regnamespace) AS relations,
       (SELECT count(*) FROM pg_proc WHERE pronamespace = 'jobrunner'::regnamespace) AS functions,
       (SELECT count(*) FROM pg_type WHERE typnamespace = 'jobrunner'::regnamespace) AS types;
CREATE EXTENSION pg_jobrunner;
SELECT count(*) AS jobs FROM jobrunner.job;

-- A schema named jobrunner made beforehand by a role that is not a superuser
-- is refused: its owner could rename it and plant look-alike functions where
-- the worker (a superuser) and the SECURITY DEFINER functions look them up.
DROP EXTENSION pg_jobrunner;
DROP SCHEMA jobrunner;
CREATE ROLE regress_jr_schema_owner;
CREATE SCHEMA jobrunner AUTHORIZATION regress_jr_schema_owner;
CREATE EXTENSION pg_jobrunner;
ALTER SCHEMA jobrunner OWNER TO CURRENT_USER;
CREATE EXTENSION pg_jobrunner;
SELECT count(*) AS jobs FROM jobrunner.job;
DROP ROLE regress_jr_schema_owner;
