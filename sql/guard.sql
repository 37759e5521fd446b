-- guard.sql — run first by every install and update script. The extension's
-- schema must belong to a superuser: the worker runs code from it as a
-- superuser, and the owner of the schema could rename it and put look-alike
-- functions where those of the extension are looked up. CREATE EXTENSION
-- makes the schema itself when there is none; one made beforehand by another
-- role is refused here.
DO $$
DECLARE
    _owner name;
BEGIN
    SELECT r.rolname INTO _owner
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'jobrunner' AND NOT r.rolsuper;
    IF FOUND THEN
        RAISE EXCEPTION 'schema jobrunner belongs to role %, who is not a superuser', _owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The extension runs code from this schema as a superuser: drop the schema, or ALTER SCHEMA jobrunner OWNER TO a superuser, first.';
    END IF;
END
$$;
