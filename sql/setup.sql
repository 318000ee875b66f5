-- setup: the extension, the secret, roles, and helpers the other files use.
-- Also proves the configuration errors: without a (long enough) secret,
-- issue and validate refuse with SQLSTATE 55000.
\set VERBOSITY default
-- This suite rewrites the server's configuration (ALTER SYSTEM) and creates
-- roles: on a server the test scripts did not start (they set
-- regress_extension_tokens.throwaway; see the Makefile's installcheck-guard)
-- it stops here, before anything is changed.
\set ON_ERROR_STOP on
DO $$
BEGIN
    IF pg_catalog.current_setting('regress_extension_tokens.throwaway', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'refusing to run the regression suite on a server the test scripts did not start';
    END IF;
END
$$;
\set ON_ERROR_STOP off
CREATE EXTENSION pgcrypto;
-- Roles.  regress_et_authenticated and regress_et_anon are NOLOGIN, as
-- PostgREST's roles are; regress_et_service is named in admin_roles.
CREATE ROLE regress_et_service NOLOGIN;
CREATE ROLE regress_et_authenticated NOLOGIN;
CREATE ROLE regress_et_anon NOLOGIN;
CREATE ROLE regress_et_alice LOGIN;
CREATE ROLE regress_et_mallory LOGIN;
-- Default privileges as Supabase sets them: new tables and functions are
-- granted to the API roles.  CREATE EXTENSION must take them back.
ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO regress_et_anon, regress_et_authenticated;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO regress_et_anon, regress_et_authenticated;
CREATE EXTENSION extension_tokens;
ALTER DEFAULT PRIVILEGES REVOKE ALL ON TABLES FROM regress_et_anon, regress_et_authenticated;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM regress_et_anon, regress_et_authenticated;

-- No secret configured yet.
SELECT access_token FROM extension_token_issue('00000000-0000-4000-8000-000000000001');
\echo :LAST_ERROR_SQLSTATE
SELECT valid FROM extension_token_validate('x');
\echo :LAST_ERROR_SQLSTATE
-- An API client (here the anonymous role) learns nothing of the
-- configuration: a generic 55000, the details in the server log only.
SET ROLE regress_et_anon;
SELECT valid FROM extension_token_validate('x');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- A short secret is refused when it is set: ALTER SYSTEM fails, and the
-- message does not echo it.  Nothing was written, so after a reload the
-- secret is still not set.  A secret file that cannot be read is refused
-- the same way.
ALTER SYSTEM SET extension_tokens.jwt_secret = 'short-secret';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET extension_tokens.jwt_secret_previous = 'short-secret';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET extension_tokens.jwt_secret_file = 'no-such-secret-file';
\echo :LAST_ERROR_SQLSTATE
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT access_token FROM extension_token_issue('00000000-0000-4000-8000-000000000001');
\echo :LAST_ERROR_SQLSTATE

-- The secret the suite signs with (tests forge tokens with pgcrypto).
ALTER SYSTEM SET extension_tokens.jwt_secret = 'regress-secret-0123456789abcdef0123456789';
ALTER SYSTEM SET extension_tokens.admin_roles = 'regress_et_service';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW extension_tokens.jwt_secret;

-- What the API roles are meant to have.
GRANT EXECUTE ON FUNCTION extension_token_issue(text, text, interval, jsonb, text[]),
                          extension_token_list(text),
                          extension_token_revoke_session(uuid),
                          revoke_user_extension_tokens(text, uuid),
                          extension_token_device_approve(text, text),
                          extension_token_device_deny(text)
    TO regress_et_service, regress_et_authenticated, regress_et_mallory;


-- Helpers.  regress_sign: a compact JWS over the given header and payload
-- texts, HMAC'ed by pgcrypto (alg: sha256, sha384 or sha512).
CREATE FUNCTION regress_b64url(bytea) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT rtrim(translate(encode($1, 'base64'), E'+/\n', '-_'), '=') $$;
CREATE FUNCTION regress_b64url_decode(text) RETURNS bytea LANGUAGE sql IMMUTABLE
AS $$ SELECT decode(translate($1, '-_', '+/') || repeat('=', (4 - length($1) % 4) % 4), 'base64') $$;
CREATE FUNCTION regress_sign(header text, payload text, alg text DEFAULT 'sha256',
                             key text DEFAULT 'regress-secret-0123456789abcdef0123456789')
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
  SELECT h || '.' || p || '.' || regress_b64url(hmac(convert_to(h || '.' || p, 'UTF8'),
                                                     convert_to(key, 'UTF8'), alg))
  FROM (SELECT regress_b64url(convert_to(header, 'UTF8')) AS h,
               regress_b64url(convert_to(payload, 'UTF8')) AS p) s
$$;
-- A well-formed claim set valid for an hour; keys in `changes` replace
-- ours, and a key set to null is removed.
CREATE FUNCTION regress_claims(changes jsonb DEFAULT '{}') RETURNS text
LANGUAGE sql VOLATILE
AS $$
  SELECT jsonb_strip_nulls(jsonb_build_object(
           'iss', 'extension_tokens', 'aud', 'extension',
           'sub', '00000000-0000-4000-8000-0000000000aa',
           'session_id', '00000000-0000-4000-8000-0000000000bb',
           'jti', '00000000-0000-4000-8000-0000000000cc', 'type', 'access',
           'iat', extract(epoch FROM now())::bigint,
           'exp', extract(epoch FROM now())::bigint + 3600) || changes)::text
$$;
-- Runs a statement; returns 'ok' or "SQLSTATE: message / detail".
CREATE FUNCTION regress_try(stmt text) RETURNS text LANGUAGE plpgsql
AS $$
DECLARE
  st text; msg text; det text;
BEGIN
  EXECUTE stmt;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN st || ': ' || msg || coalesce(' / ' || nullif(det, ''), '');
END
$$;
GRANT EXECUTE ON FUNCTION regress_try(text), regress_sign(text, text, text, text),
                          regress_claims(jsonb), regress_b64url(bytea),
                          regress_b64url_decode(text) TO PUBLIC;
