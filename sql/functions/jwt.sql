-- jwt.sql — HS256 tokens from SQL: signing with a given secret, and minting
-- for a user with jobrunner.jwt_secret.

-- public API
CREATE OR REPLACE FUNCTION jobrunner.sign_jwt(_claims jsonb, _secret text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_sign_jwt';
COMMENT ON FUNCTION jobrunner.sign_jwt(jsonb, text) IS
    'HS256 compact JWS of the given claims; the secret must be at least 32 bytes';

-- public API (admin only)
CREATE OR REPLACE FUNCTION jobrunner.mint_user_jwt(_user_id uuid, _role text, _email text,
                                        _ttl interval DEFAULT NULL) RETURNS text
    LANGUAGE c VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'jobrunner_mint_user_jwt';
COMMENT ON FUNCTION jobrunner.mint_user_jwt(uuid, text, text, interval) IS
    'token for a user (sub, role, aud, email, iat, exp) signed with jobrunner.jwt_secret; admin only';
