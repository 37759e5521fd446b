-- backup.sql — what pg_dump keeps, and what a restore must not do. A table
-- created by an extension script is left out of a dump (CREATE EXTENSION
-- recreates it empty) unless marked here: every table holding users'
-- configuration, jobs or history, and the sequence numbering the logs, so
-- that a restore brings the queue back. Dumping them needs a role that reads
-- every row: a superuser, or a role with BYPASSRLS granted SELECT on them.
--
-- A restored queue does not dispatch until an administrator says so: the
-- place it was dumped from travels with it (dispatch_origin), and the worker
-- pauses while a row names another cluster or database. A failover keeps
-- both (a standby has the primary's system identifier and database oids),
-- so a promoted standby dispatches at once; so does a physical clone, which
-- cannot be told from a failover.

SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_config', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_log_entry', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_log_entry_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.schedule', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.rate_bucket', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.group_turn', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.dispatch_origin', '');
SELECT pg_catalog.pg_extension_config_dump('jobrunner.job_successor', '');

CREATE OR REPLACE FUNCTION jobrunner._here(OUT system_identifier numeric, OUT database_oid oid)
    LANGUAGE c STABLE PARALLEL SAFE
    -- No SET clause: pure C that runs no SQL and resolves no names, called
    -- per job, where a SET clause would cost a settings save and restore.
    AS 'MODULE_PATHNAME', 'jobrunner_here';
COMMENT ON FUNCTION jobrunner._here() IS
    'internal: this cluster''s system identifier and this database''s oid';

-- A queue created here (or updated from a version that did not record it)
-- dispatches from here. A restore runs this too, before loading the dumped
-- rows: the dumped origin then sits beside this one, and dispatch pauses.
INSERT INTO jobrunner.dispatch_origin (system_identifier, database_oid)
SELECT h.system_identifier, h.database_oid FROM jobrunner._here() h
 WHERE NOT EXISTS (SELECT 1 FROM jobrunner.dispatch_origin);

-- internal: why the worker must not dispatch from here, or NULL: a row of
-- dispatch_origin names another cluster or database (this database is a
-- restored dump or a copy).
CREATE OR REPLACE FUNCTION jobrunner._foreign_origin() RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _here record := jobrunner._here();
    _other record;
BEGIN
    SELECT o.* INTO _other FROM jobrunner.dispatch_origin o
     WHERE (o.system_identifier, o.database_oid) <> (_here.system_identifier, _here.database_oid)
     ORDER BY o.recorded_at LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.format('this queue was copied from database %s of cluster %s (restored from a dump or cloned): '
                             'call jobrunner.resume_dispatch() to dispatch its jobs from here',
                             _other.database_oid, _other.system_identifier);
END;
$$;
COMMENT ON FUNCTION jobrunner._foreign_origin() IS
    'internal: why dispatch is paused because the queue was copied from elsewhere, or NULL';

-- public API (admin only)
CREATE OR REPLACE FUNCTION jobrunner.resume_dispatch() RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _changed boolean;
BEGIN
    PERFORM jobrunner._require_admin('resume_dispatch');
    WITH gone AS (
        DELETE FROM jobrunner.dispatch_origin o
         WHERE (o.system_identifier, o.database_oid)
               <> (SELECT h.system_identifier, h.database_oid FROM jobrunner._here() h)
        RETURNING 1
    )
    SELECT count(*) > 0 INTO _changed FROM gone;
    INSERT INTO jobrunner.dispatch_origin (system_identifier, database_oid)
    SELECT h.system_identifier, h.database_oid FROM jobrunner._here() h
     WHERE NOT EXISTS (SELECT 1 FROM jobrunner.dispatch_origin);
    PERFORM jobrunner._wake_at_commit();
    RETURN _changed;
END;
$$;
COMMENT ON FUNCTION jobrunner.resume_dispatch() IS
    'admin only: dispatch from this cluster and database (after a restore or a clone); true if it was paused for that';
