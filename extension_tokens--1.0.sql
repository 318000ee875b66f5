/* extension_tokens--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION extension_tokens" to load this file. \quit

-------------------------------------------------------------------------------
-- Result types (PostgREST returns each as one JSON object)
-------------------------------------------------------------------------------

CREATE TYPE extension_token_pair AS (
    access_token        text,
    refresh_token       text,
    token_type          text,
    expires_in          integer,
    expires_at          timestamptz,
    refresh_expires_at  timestamptz,
    session_id          uuid
);
COMMENT ON TYPE extension_token_pair IS
'A new access token (HS256 JWT) and refresh token (opaque) of one session; shown once, stored only as SHA-256 hashes';

CREATE TYPE extension_token_validation AS (
    valid       boolean,
    error       text,
    user_id     uuid,
    session_id  uuid,
    token_name  text,
    expires_at  timestamptz,
    claims      jsonb
);
COMMENT ON TYPE extension_token_validation IS
'Outcome of extension_token_validate: valid, or the reason it is not (missing, malformed, invalid_signature, unsupported_algorithm, expired, not_yet_valid, wrong_token_type, wrong_issuer, wrong_audience, not_found, revoked)';

CREATE TYPE extension_token_session AS (
    session_id          uuid,
    user_id             uuid,
    name                text,
    status              text,
    created_at          timestamptz,
    last_used_at        timestamptz,
    expires_at          timestamptz,
    refresh_expires_at  timestamptz,
    revoked_at          timestamptz,
    refresh_count       integer,
    last_refresh_at     timestamptz,
    revoked_reason      text
);
COMMENT ON TYPE extension_token_session IS
'One session (an issue and its refreshes) as extension_token_list shows it: no token and no hash';

-------------------------------------------------------------------------------
-- Tables.  Only the extension's owner (and superusers) may read or change
-- them; the functions below switch to the owner around each statement.
-------------------------------------------------------------------------------

CREATE TABLE extension_token_sessions (
    session_id          uuid        PRIMARY KEY,
    user_id             uuid        NOT NULL,
    name                text        NOT NULL,
    claims              jsonb,
    access_lifetime     interval    NOT NULL,
    created_at          timestamptz NOT NULL,
    last_used_at        timestamptz,
    expires_at          timestamptz NOT NULL,
    refresh_expires_at  timestamptz NOT NULL,
    refresh_count       integer     NOT NULL DEFAULT 0,
    last_refresh_at     timestamptz,
    revoked_at          timestamptz,
    revoked_reason      text,
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX extension_token_sessions_user_idx
    ON extension_token_sessions (user_id, created_at);
COMMENT ON TABLE extension_token_sessions IS
'One row per session: the chain of token pairs created by one issue and its refreshes';

CREATE TABLE extension_tokens (
    token_hash      bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    token_type      text        NOT NULL CHECK (token_type IN ('access', 'refresh')),
    session_id      uuid        NOT NULL
                    REFERENCES extension_token_sessions ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    name            text        NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    last_used_at    timestamptz,
    used_at         timestamptz,
    replaced_by     bytea,
    revoked_at      timestamptz,
    revoked_reason  text,
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
    CHECK (token_type = 'refresh' OR (used_at IS NULL AND replaced_by IS NULL))
);
CREATE INDEX extension_tokens_session_idx ON extension_tokens (session_id);
COMMENT ON TABLE extension_tokens IS
'One row per token handed out, keyed by the SHA-256 of the token (never the token); used_at and replaced_by link an exchanged refresh token to its successor';
COMMENT ON COLUMN extension_tokens.token_hash IS 'SHA-256 of the token text';
COMMENT ON COLUMN extension_tokens.used_at IS 'refresh tokens: when it was exchanged';
COMMENT ON COLUMN extension_tokens.replaced_by IS 'refresh tokens: token_hash of the refresh token it was exchanged for';

CREATE TABLE extension_token_users (
    user_id     uuid            PRIMARY KEY,
    issue_log   timestamptz[]   NOT NULL DEFAULT '{}',
    refresh_log timestamptz[]   NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE extension_token_users IS
'One row per user: locked by each issue and refresh of that user, and the timestamps the hourly rate limits count';

-- Keep sessions, tokens and revocations across pg_dump / restore.
SELECT pg_catalog.pg_extension_config_dump('extension_token_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('extension_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('extension_token_users', '');

-- Nobody but the owner may touch the tables.  REVOKE from PUBLIC, and from
-- every role that default privileges granted something (Supabase grants new
-- tables in public to anon, authenticated and service_role).  Row level
-- security with no policy is a second wall should a grant slip through.
REVOKE ALL ON extension_token_sessions, extension_tokens, extension_token_users FROM PUBLIC;
DO $revoke$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT c.oid::pg_catalog.regclass AS tab, a.grantee
          FROM pg_catalog.pg_class c,
               LATERAL pg_catalog.aclexplode(c.relacl) a
         WHERE c.oid OPERATOR(pg_catalog.=) ANY (ARRAY[
                   'extension_token_sessions'::pg_catalog.regclass,
                   'extension_tokens'::pg_catalog.regclass,
                   'extension_token_users'::pg_catalog.regclass])
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
           AND a.grantee OPERATOR(pg_catalog.<>) 0
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %I', r.tab,
                                  pg_catalog.pg_get_userbyid(r.grantee));
    END LOOP;
END
$revoke$;
ALTER TABLE extension_token_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE extension_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE extension_token_users ENABLE ROW LEVEL SECURITY;

-------------------------------------------------------------------------------
-- Functions.  All are C functions that run as their caller; they check who
-- the caller may act for, then switch to the extension's owner for table
-- access only.  PostgreSQL grants EXECUTE on new functions to PUBLIC, so each
-- one is revoked from PUBLIC, and only validate and refresh (whose credential
-- is the token itself) are granted back.
-------------------------------------------------------------------------------

CREATE FUNCTION extension_token_issue(
    p_user_id   uuid        DEFAULT NULL,
    p_name      text        DEFAULT NULL,
    p_lifetime  interval    DEFAULT NULL,
    p_claims    jsonb       DEFAULT NULL)
RETURNS extension_token_pair
AS 'MODULE_PATHNAME', 'extension_token_issue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_issue(uuid, text, interval, jsonb) IS
'Creates a session for p_user_id (NULL: the PostgREST request user) and returns its access and refresh tokens; enforces max_sessions_per_user and issue_rate_limit';

CREATE FUNCTION extension_token_validate(p_token text)
RETURNS extension_token_validation
AS 'MODULE_PATHNAME', 'extension_token_validate'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_validate(text) IS
'Checks an access token (syntax, HS256 signature, claims, not revoked); never raises for a bad token; records last use at most once per extension_tokens.last_used_interval, and not at all in a read-only transaction';

CREATE FUNCTION extension_token_refresh(
    p_refresh_token     text,
    p_current_token     text    DEFAULT NULL)
RETURNS extension_token_pair
AS 'MODULE_PATHNAME', 'extension_token_refresh'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_refresh(text, text) IS
'Exchanges a refresh token for a new pair in the same session; the old pair stops working; presenting an exchanged refresh token again revokes the session (PT401)';

CREATE FUNCTION extension_token_revoke(p_token text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'extension_token_revoke'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_revoke(text) IS
'Revokes the session of an access or refresh token; true if something was revoked, false for an unknown, malformed or already revoked token (RFC 7009)';

CREATE FUNCTION revoke_user_extension_tokens(p_user_id uuid DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'revoke_user_extension_tokens'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION revoke_user_extension_tokens(uuid) IS
'Revokes every active session of p_user_id (NULL: the PostgREST request user); returns how many';

CREATE FUNCTION extension_token_list(p_user_id uuid DEFAULT NULL)
RETURNS SETOF extension_token_session
AS 'MODULE_PATHNAME', 'extension_token_list'
LANGUAGE C STABLE PARALLEL UNSAFE ROWS 10;
COMMENT ON FUNCTION extension_token_list(uuid) IS
'The sessions of p_user_id (NULL: the PostgREST request user), newest first; never a token or a hash';

REVOKE ALL ON FUNCTION extension_token_issue(uuid, text, interval, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_validate(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_refresh(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_revoke(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION revoke_user_extension_tokens(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_list(uuid) FROM PUBLIC;
-- Default privileges may have granted EXECUTE to roles directly (Supabase
-- grants new functions in public to anon, authenticated and service_role):
-- take those back too, so that what follows is all anyone has.
DO $revoke$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT p.oid::pg_catalog.regprocedure AS fn, a.grantee
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_depend d
            ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.objid OPERATOR(pg_catalog.=) p.oid
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.deptype OPERATOR(pg_catalog.=) 'e',
               LATERAL pg_catalog.aclexplode(p.proacl) a
         WHERE d.refobjid OPERATOR(pg_catalog.=)
                   (SELECT oid FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'extension_tokens')
           AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
           AND a.grantee OPERATOR(pg_catalog.<>) 0
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I', r.fn,
                                  pg_catalog.pg_get_userbyid(r.grantee));
    END LOOP;
END
$revoke$;
-- The token is the credential: anyone may validate or exchange one.
GRANT EXECUTE ON FUNCTION extension_token_validate(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION extension_token_refresh(text, text) TO PUBLIC;
