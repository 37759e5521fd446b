-- job_config.sql — what may be written to job_config, and waking the worker
-- when it changes.

CREATE OR REPLACE FUNCTION jobrunner._is_allowed_url(_url text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_is_allowed_url';
COMMENT ON FUNCTION jobrunner._is_allowed_url(text) IS
    'internal: absolute http(s) URL without whitespace, control characters or userinfo';

CREATE OR REPLACE FUNCTION jobrunner._is_valid_header(_name text, _value text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_is_valid_header';
COMMENT ON FUNCTION jobrunner._is_valid_header(text, text) IS
    'internal: header name is an RFC 9110 token and the value has no CR, LF or NUL';

-- internal: refuse a job_config row that could misdirect or break requests,
-- naming the bad value.
CREATE OR REPLACE FUNCTION jobrunner._validate_job_config() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _k text;
    _v jsonb;
    _hook regprocedure;
    _was regprocedure;
BEGIN
    IF NEW.job_name IS NULL OR NEW.job_name !~ '^[A-Za-z0-9._-]{1,128}$' OR NEW.job_name ~ '^[.]+$' THEN
        RAISE EXCEPTION 'invalid job name %', pg_catalog.quote_nullable(pg_catalog.left(NEW.job_name, 200))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Job names are 1 to 128 letters, digits, ".", "_" or "-", and not only dots.';
    END IF;
    IF NEW.url IS NOT NULL AND NOT jobrunner._is_allowed_url(NEW.url) THEN
        RAISE EXCEPTION 'invalid url % for job "%"', pg_catalog.quote_literal(pg_catalog.left(NEW.url, 200)), NEW.job_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an absolute http:// or https:// URL without spaces or credentials.';
    END IF;
    IF NEW.concurrency_limit < 1 THEN
        RAISE EXCEPTION 'concurrency_limit must be at least 1, not %', NEW.concurrency_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_concurrency IS NOT NULL AND NEW.max_concurrency < 1 THEN
        RAISE EXCEPTION 'max_concurrency must be at least 1 or null, not %', NEW.max_concurrency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.rate_limit IS NOT NULL AND NEW.rate_limit <= 0 THEN
        RAISE EXCEPTION 'rate_limit must be positive or null, not %', NEW.rate_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.timeout <= interval '0' OR NEW.timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must be between 0 and 1 day, not %', NEW.timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_retries < 0 OR NEW.max_retries > 1000 THEN
        RAISE EXCEPTION 'max_retries must be between 0 and 1000, not %', NEW.max_retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.retry_backoff < interval '0' OR NEW.retry_backoff_max < NEW.retry_backoff THEN
        RAISE EXCEPTION 'retry_backoff % and retry_backoff_max % must satisfy 0 <= retry_backoff <= retry_backoff_max',
                NEW.retry_backoff, NEW.retry_backoff_max
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.callback_lease <= interval '0' THEN
        RAISE EXCEPTION 'callback_lease must be positive, not %', NEW.callback_lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.completion NOT IN ('response', 'callback') THEN
        RAISE EXCEPTION 'completion must be ''response'' or ''callback'', not %', pg_catalog.quote_literal(NEW.completion)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.jsonb_typeof(NEW.headers) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'headers must be a JSON object of strings, not %', pg_catalog.left(NEW.headers::text, 200)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR _k, _v IN SELECT e.key, e.value FROM pg_catalog.jsonb_each(NEW.headers) e LOOP
        IF pg_catalog.jsonb_typeof(_v) <> 'string' OR NOT jobrunner._is_valid_header(_k, _v #>> '{}') THEN
            RAISE EXCEPTION 'invalid header % for job "%"', pg_catalog.quote_literal(pg_catalog.left(_k, 100)), NEW.job_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Header names are tokens; values are strings without CR, LF or NUL.';
        END IF;
        IF pg_catalog.lower(_k) IN ('authorization', 'content-type', 'content-length', 'host',
                                    'transfer-encoding', 'x-job', 'x-correlation-id', 'x-job-name',
                                    'x-job-attempt', 'idempotency-key', 'user-agent', 'expect',
                                    'connection', 'traceparent', 'tracestate') THEN
            RAISE EXCEPTION 'header % for job "%" is set by pg_jobrunner and cannot be overridden', pg_catalog.quote_literal(_k), NEW.job_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    -- A hook is checked when it is set: one dropped since must not keep its
    -- job name from being disabled or edited (calling it fails the attempt).
    FOR _hook, _was IN
        SELECT h.new_hook, h.old_hook
          FROM (VALUES (NEW.on_complete, CASE WHEN TG_OP = 'UPDATE' THEN OLD.on_complete END),
                       (NEW.on_fail, CASE WHEN TG_OP = 'UPDATE' THEN OLD.on_fail END)) AS h (new_hook, old_hook)
    LOOP
        CONTINUE WHEN _hook IS NULL OR _hook OPERATOR(pg_catalog.=) _was;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                        WHERE p.oid = _hook AND p.pronargs = 1
                          AND p.proargtypes[0] = 'jobrunner.job'::regtype
                          AND p.prokind = 'f') THEN
            RAISE EXCEPTION 'hook % for job "%" must be a function taking one jobrunner.job', _hook, NEW.job_name
                USING ERRCODE = 'invalid_function_definition',
                      HINT = 'Declare it as: CREATE FUNCTION my_hook(j jobrunner.job) RETURNS void ...';
        END IF;
    END LOOP;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION jobrunner._validate_job_config() IS
    'internal: trigger refusing job_config rows that could misdirect or break requests';

CREATE OR REPLACE TRIGGER job_config_validate
    BEFORE INSERT OR UPDATE ON jobrunner.job_config
    FOR EACH ROW EXECUTE FUNCTION jobrunner._validate_job_config();

-- internal: a job name enabled again, a limit raised or a url fixed can make
-- pending jobs claimable: the worker looks at commit, not at its next poll.
-- In C, so that whoever may write job_config needs no grant on internals.
CREATE OR REPLACE FUNCTION jobrunner._wake_trigger() RETURNS trigger
    LANGUAGE c
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_wake_trigger';
COMMENT ON FUNCTION jobrunner._wake_trigger() IS
    'internal: statement trigger waking the worker at commit (job_config changes)';

CREATE OR REPLACE TRIGGER job_config_wake
    AFTER INSERT OR UPDATE ON jobrunner.job_config
    FOR EACH STATEMENT EXECUTE FUNCTION jobrunner._wake_trigger();
