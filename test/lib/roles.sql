-- The roles every test tier shares, created once per cluster (run-tests.sh's
-- cluster tier, and harness.Cluster for a test's own cluster): PostgREST's
-- login role authenticator (NOINHERIT, switching to authenticated or anon per
-- request, as PostgREST connects) and mallory, an ordinary login role that
-- tries what it should not. Idempotent: a second run changes nothing.
SET client_min_messages = warning;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mallory') THEN
        CREATE ROLE mallory LOGIN;
    END IF;
END $$;
GRANT authenticated, anon TO authenticator;
RESET client_min_messages;
