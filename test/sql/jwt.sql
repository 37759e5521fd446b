-- jwt: sign_jwt (HS256 compact JWS, deterministic), mint_user_jwt (claims
-- for a user, signed with jobrunner.jwt_secret), and a secret that is never
-- shown. Signatures are checked independently with pgcrypto's hmac()
-- (pg_regress loads pgcrypto, see REGRESS_OPTS).
\set SHOW_CONTEXT never

-- base64url (no padding) to text.
CREATE FUNCTION pg_temp.b64url(_s text) RETURNS text LANGUAGE sql AS $$
    SELECT convert_from(decode(rpad(translate(_s, '-_', '+/'), ((length(_s) + 3) / 4) * 4, '='), 'base64'), 'UTF8')
$$;
-- The token's HMAC-SHA256 signature, recomputed here.
CREATE FUNCTION pg_temp.verify(_token text, _secret text) RETURNS boolean LANGUAGE sql AS $$
    SELECT rtrim(translate(encode(hmac(split_part(_token, '.', 1) || '.' || split_part(_token, '.', 2),
                                       _secret, 'sha256'), 'base64'), '+/', '-_'), '=')
           = split_part(_token, '.', 3)
$$;

------------------------------------------------------------------------------
-- sign_jwt
------------------------------------------------------------------------------
\set secret 'a-string-secret-at-least-256-bits-long'
SELECT jobrunner.sign_jwt('{"sub": "1234567890", "name": "John Doe", "iat": 1516239022}', :'secret') AS token \gset
-- A fixed token for fixed claims and secret.
SELECT :'token' AS token;
SELECT pg_temp.b64url(split_part(:'token', '.', 1)) AS header,
       pg_temp.b64url(split_part(:'token', '.', 2)) AS payload;
SELECT pg_temp.verify(:'token', :'secret') AS signature_ok,
       pg_temp.verify(:'token', :'secret' || 'x') AS verifies_with_other_secret,
       :'token' !~ '[=+/]' AS base64url_unpadded;
-- Claims are a jsonb value: key order and spacing do not change the token.
SELECT jobrunner.sign_jwt('{"iat":1516239022,"name":"John Doe","sub":"1234567890"}', :'secret') = :'token' AS same_token;
SELECT jobrunner.sign_jwt('{"sub": "1234567890"}', :'secret') <> :'token' AS other_claims_other_token;
-- Non-ASCII claims survive.
SELECT pg_temp.b64url(split_part(jobrunner.sign_jwt('{"name": "Zoë ✓"}', :'secret'), '.', 2)) AS payload;
-- The secret must be at least 32 bytes; the error never shows it.
SELECT regress.err(format('SELECT jobrunner.sign_jwt(%L, %L)', '{"a": 1}', repeat('s', 31))) AS secret_31_bytes;
SELECT regress.err(format('SELECT jobrunner.sign_jwt(%L, %L)', '{"a": 1}', '')) AS empty_secret;
SELECT pg_temp.verify(jobrunner.sign_jwt('{"a": 1}', repeat('s', 32)), repeat('s', 32)) AS secret_32_bytes_ok;
SELECT position('tooshortsecret' IN regress.err($$SELECT jobrunner.sign_jwt('{"a": 1}', 'tooshortsecret')$$)) = 0
       AS secret_not_in_error;
-- Claims must be a JSON object.
SELECT c AS claims, regress.err(format('SELECT jobrunner.sign_jwt(%L, %L)', c, :'secret')) AS result
  FROM unnest(ARRAY['[1, 2]', '"sub"', '42', 'null', 'true']) AS c;
SELECT jobrunner.sign_jwt(NULL, :'secret') IS NULL AS null_claims, jobrunner.sign_jwt('{}', NULL) IS NULL AS null_secret;
SELECT pg_temp.b64url(split_part(jobrunner.sign_jwt('{}', :'secret'), '.', 2)) AS empty_claims;

------------------------------------------------------------------------------
-- mint_user_jwt: claims sub, role, aud (= role), email, iat, exp; signed with
-- jobrunner.jwt_secret, which only the server's configuration sets (the test
-- cluster's is in the environment, JOBRUNNER_SECRET, to check signatures).
------------------------------------------------------------------------------
\getenv mint_secret JOBRUNNER_SECRET
SELECT jobrunner.mint_user_jwt('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'authenticated', 'a@example.com') AS minted \gset
SELECT pg_temp.verify(:'minted', :'mint_secret') AS signature_ok,
       pg_temp.b64url(split_part(:'minted', '.', 1)) AS header;
SELECT p - 'iat' - 'exp' AS claims,
       (p ->> 'exp')::bigint - (p ->> 'iat')::bigint AS lifetime_s,
       abs((p ->> 'iat')::bigint - extract(epoch FROM now())::bigint) < 60 AS issued_now
  FROM (SELECT pg_temp.b64url(split_part(:'minted', '.', 2))::jsonb AS p) t;
-- A lifetime of its own; no email; a system token (no sub, the system role).
SELECT p - 'iat' - 'exp' AS claims, (p ->> 'exp')::bigint - (p ->> 'iat')::bigint AS lifetime_s
  FROM (SELECT pg_temp.b64url(split_part(jobrunner.mint_user_jwt(
            'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'editor', NULL, interval '90 seconds'), '.', 2))::jsonb AS p) t;
SELECT pg_temp.b64url(split_part(jobrunner.mint_user_jwt(NULL, NULL, NULL), '.', 2))::jsonb - 'iat' - 'exp' AS system_claims;
-- Lifetimes are short, roles are not empty.
SELECT regress.err($$SELECT jobrunner.mint_user_jwt(NULL, 'x', NULL, interval '0')$$) AS zero_ttl;
SELECT regress.err($$SELECT jobrunner.mint_user_jwt(NULL, 'x', NULL, interval '2 days')$$) AS long_ttl;
SELECT regress.err($$SELECT jobrunner.mint_user_jwt(NULL, '', NULL)$$) AS empty_role;

------------------------------------------------------------------------------
-- The secret comes only from the server's configuration files: no session,
-- role or database may set it, not even a superuser's (pg_db_role_setting is
-- readable by everyone, and a session must not choose its own secret).
------------------------------------------------------------------------------
SELECT regress.err($$SET jobrunner.jwt_secret = 'session-secret-0123456789-0123456789'$$) AS set_in_session,
       regress.err($$SELECT set_config('jobrunner.jwt_secret', 'session-secret-0123456789-0123456789', false)$$)
           AS set_config;
SELECT regress.err($$ALTER ROLE CURRENT_USER SET jobrunner.jwt_secret = 'role-secret-0123456789-0123456789'$$) AS alter_role,
       regress.err(format('ALTER DATABASE %I SET jobrunner.jwt_secret = %L', current_database(),
                          'db-secret-0123456789-0123456789')) AS alter_database;
SELECT count(*) AS stored_role_or_db_settings FROM pg_db_role_setting s, unnest(s.setconfig) c
 WHERE c LIKE 'jobrunner.jwt_secret=%';

------------------------------------------------------------------------------
-- The secret is never shown: not by SHOW, current_setting() or pg_settings,
-- not even to a superuser.
------------------------------------------------------------------------------
SHOW jobrunner.jwt_secret;
SELECT current_setting('jobrunner.jwt_secret') AS current_setting;
-- Not listed by SHOW ALL / pg_settings at all.
SELECT count(*) AS in_pg_settings FROM pg_settings WHERE name = 'jobrunner.jwt_secret';
SELECT count(*) AS rows_revealing_it FROM pg_settings
 WHERE setting LIKE '%' || :'mint_secret' || '%' OR reset_val LIKE '%' || :'mint_secret' || '%'
    OR boot_val LIKE '%' || :'mint_secret' || '%';

