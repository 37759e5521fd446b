-- destinations.sql — the health of each destination host as the worker
-- sees it: a circuit breaker (after 5 consecutive failures — no answer, a
-- timeout, or a 5xx — nothing is sent to the host but one probe at growing
-- intervals, 1 s doubling to 60 s, until one succeeds) and back-pressure (a
-- 429 or 503 with Retry-After pauses every job sent to that host until
-- then). Held in the worker's memory and shared memory: a restart forgets
-- it.

CREATE OR REPLACE FUNCTION jobrunner._destination_of(_url text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_destination_of';
COMMENT ON FUNCTION jobrunner._destination_of(text) IS
    'internal: "host:port" of an http(s) URL, as the worker keys destinations';

CREATE OR REPLACE FUNCTION jobrunner._destinations(
    OUT destination text, OUT state text, OUT consecutive_failures int, OUT until timestamptz)
    RETURNS SETOF record
    LANGUAGE c STABLE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_destinations';
COMMENT ON FUNCTION jobrunner._destinations() IS
    'internal: destinations of this database''s worker that are not simply healthy';

-- public API (admins: checked inside)
CREATE OR REPLACE FUNCTION jobrunner.destination_health(
    OUT destination text, OUT state text, OUT consecutive_failures int, OUT until timestamptz,
    OUT job_names text[])
    RETURNS SETOF record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM jobrunner._require_admin('destination_health');
    RETURN QUERY
    SELECT d.destination, d.state, d.consecutive_failures, d.until,
           ARRAY(SELECT c.job_name FROM jobrunner.job_config c
                  WHERE jobrunner._destination_of(COALESCE(c.url, NULLIF(pg_catalog.current_setting('jobrunner.base_url'), '')
                                                                   || '/' || c.job_name)) = d.destination
                  ORDER BY 1)
      FROM jobrunner._destinations() d
     ORDER BY d.destination;
END;
$$;
COMMENT ON FUNCTION jobrunner.destination_health() IS
    'admins: destinations the worker holds back or has seen fail (state closed, open, half_open or paused; until: next probe or end of pause), with their job names';

-- public API
CREATE OR REPLACE VIEW jobrunner.destinations WITH (security_invoker = true) AS
SELECT * FROM jobrunner.destination_health();
COMMENT ON VIEW jobrunner.destinations IS
    'admins: destinations the worker holds back or has seen fail, with their job names';
