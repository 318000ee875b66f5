/* extension_tokens--1.1--1.2.sql: storage 1.2 (one row is the truth for a
 * session), text user ids, the refresh retry window, revoke by session.
 * A fresh 1.2 install runs 1.0, 1.0--1.1 and then this script, so both
 * roads lead to the same objects. */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION extension_tokens UPDATE TO '1.2'" to load this file. \quit

-------------------------------------------------------------------------------
-- What this script creates belongs to the extension's owner, as after a
-- fresh install, whoever runs ALTER EXTENSION ... UPDATE: a role made
-- superuser for an upgrade and demoted afterwards must not own the tables
-- and the functions that run as their owner (nor be named in their initial
-- privileges, which PostgreSQL 17 ties to the role).  So the script runs as
-- the owner (SET LOCAL ROLE), when the owner is a superuser as creating
-- these objects needs; the role in force before is set again at its end.
-------------------------------------------------------------------------------

DO $owner_role$
DECLARE
    owner_name pg_catalog.name;
    owner_super boolean;
BEGIN
    SELECT a.rolname, a.rolsuper INTO owner_name, owner_super
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_authid a ON a.oid OPERATOR(pg_catalog.=) e.extowner
     WHERE e.extname OPERATOR(pg_catalog.=) 'extension_tokens';
    PERFORM pg_catalog.set_config('extension_tokens_update.role',
                                  pg_catalog.current_setting('role'), true);
    IF owner_super AND owner_name OPERATOR(pg_catalog.<>) CURRENT_USER THEN
        PERFORM pg_catalog.set_config('role', owner_name, true);
    END IF;
END
$owner_role$;

-------------------------------------------------------------------------------
-- Default privileges (ALTER DEFAULT PRIVILEGES) may grant the tables and
-- functions this script creates to other roles as they are created: Supabase
-- grants everything new in public to its API roles.  This helper takes back
-- every grant that the ACL of one object (p_kind 'TABLE', which includes
-- views and sequences, or 'FUNCTION') gives to a role other than its owner;
-- it is called once per object, after that object's REVOKE ... FROM PUBLIC
-- where it has one.  What PUBLIC has is left alone: each object's own
-- REVOKE ... FROM PUBLIC, or GRANT ... TO PUBLIC, says what PUBLIC gets.  It
-- is dropped again at the end of this script.
-------------------------------------------------------------------------------

CREATE FUNCTION extension_tokens_revoke_role_grants(p_kind text, p_object text)
RETURNS void
LANGUAGE plpgsql
AS $revoke_role_grants$
DECLARE
    target text;
    acl pg_catalog.aclitem[];
    obj_owner oid;
    r record;
BEGIN
    IF p_kind OPERATOR(pg_catalog.=) 'FUNCTION' THEN
        SELECT pg_catalog.format('FUNCTION %s', p.oid::pg_catalog.regprocedure), p.proacl, p.proowner
          INTO target, acl, obj_owner
          FROM pg_catalog.pg_proc p
         WHERE p.oid OPERATOR(pg_catalog.=) p_object::pg_catalog.regprocedure;
    ELSIF p_kind OPERATOR(pg_catalog.=) 'TABLE' THEN
        SELECT pg_catalog.format('TABLE %s', c.oid::pg_catalog.regclass), c.relacl, c.relowner
          INTO target, acl, obj_owner
          FROM pg_catalog.pg_class c
         WHERE c.oid OPERATOR(pg_catalog.=) p_object::pg_catalog.regclass;
    ELSE
        RAISE EXCEPTION 'extension_tokens_revoke_role_grants: unknown kind %', p_kind;
    END IF;
    FOR r IN
        SELECT DISTINCT a.grantee
          FROM pg_catalog.aclexplode(acl) a
         WHERE a.grantee OPERATOR(pg_catalog.<>) obj_owner
           AND a.grantee OPERATOR(pg_catalog.<>) 0
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %I', target,
                                  pg_catalog.pg_get_userbyid(r.grantee));
    END LOOP;
END
$revoke_role_grants$;

-------------------------------------------------------------------------------
-- What depends on the columns and signatures that change goes first; each is
-- created again below.
-------------------------------------------------------------------------------

DROP FUNCTION extension_token_sessions_expiring(interval);
DROP VIEW extension_token_sessions_admin;
DROP FUNCTION extension_token_issue(uuid, text, interval, jsonb);
DROP FUNCTION extension_token_validate(text);
DROP FUNCTION revoke_user_extension_tokens(uuid);
DROP FUNCTION extension_token_list(uuid);
DROP FUNCTION extension_tokens_grant_api_roles(text, text, text);

-------------------------------------------------------------------------------
-- Sessions: one row is the truth.  The row holds the SHA-256 of the current
-- access token and of the current refresh token, the session's fixed end,
-- revocation, and the retry window's sealed successor.  Validation reads this
-- row (by the session_id the token's signature vouches for) and compares the
-- token's hash with access_hash; refresh exchanges refresh_hash for a new one
-- in one UPDATE of this row; revocation is one UPDATE of this row.  Nothing
-- else can disagree with it.
-------------------------------------------------------------------------------

ALTER TABLE extension_token_sessions
    ALTER COLUMN user_id TYPE text USING user_id::text,
    ADD COLUMN access_hash bytea,
    ADD COLUMN access_jti uuid,
    ADD COLUMN key_id text,
    ADD COLUMN refresh_hash bytea,
    ADD COLUMN ends_at timestamptz,
    ADD COLUMN idle_timeout interval,
    ADD COLUMN retry_hash bytea,
    ADD COLUMN retry_until timestamptz,
    ADD COLUMN retry_box bytea,
    ADD COLUMN kind text NOT NULL DEFAULT 'access',
    ADD COLUMN scopes text[],
    ADD COLUMN user_agent text,
    ADD COLUMN ip inet,
    ADD COLUMN use_count bigint NOT NULL DEFAULT 0;

-- Every 1.1 session keeps its current pair: the newest access token (an
-- unrevoked one first) and the refresh token not yet exchanged.
UPDATE extension_token_sessions s
   SET access_hash = t.token_hash
  FROM (SELECT DISTINCT ON (session_id) session_id, token_hash
          FROM extension_tokens
         WHERE token_type OPERATOR(pg_catalog.=) 'access'
         ORDER BY session_id, (revoked_at IS NULL) DESC, created_at DESC) t
 WHERE t.session_id OPERATOR(pg_catalog.=) s.session_id;
UPDATE extension_token_sessions s
   SET refresh_hash = t.token_hash
  FROM (SELECT DISTINCT ON (session_id) session_id, token_hash
          FROM extension_tokens
         WHERE token_type OPERATOR(pg_catalog.=) 'refresh' AND used_at IS NULL
         ORDER BY session_id, (revoked_at IS NULL) DESC, created_at DESC) t
 WHERE t.session_id OPERATOR(pg_catalog.=) s.session_id;
-- A session without such a token (its rows deleted by hand) gets a hash that
-- no token has: it stays listed and can be revoked, and nothing validates.
UPDATE extension_token_sessions
   SET access_hash = pg_catalog.sha256(pg_catalog.convert_to(
           'no access token ' OPERATOR(pg_catalog.||) pg_catalog.gen_random_uuid()::text, 'UTF8'))
 WHERE access_hash IS NULL;
UPDATE extension_token_sessions
   SET refresh_hash = pg_catalog.sha256(pg_catalog.convert_to(
           'no refresh token ' OPERATOR(pg_catalog.||) pg_catalog.gen_random_uuid()::text, 'UTF8'))
 WHERE refresh_hash IS NULL;
-- The limits in force now become each session's own: a setting changed later
-- applies to sessions issued later, and never brings an ended one back.
UPDATE extension_token_sessions
   SET ends_at = CASE WHEN l.max_lifetime OPERATOR(pg_catalog.>) interval '0'
                      THEN created_at OPERATOR(pg_catalog.+) l.max_lifetime
                      ELSE 'infinity' END,
       idle_timeout = CASE WHEN l.idle OPERATOR(pg_catalog.>) interval '0' THEN l.idle END
  FROM (SELECT COALESCE(pg_catalog.current_setting('extension_tokens.session_max_lifetime', true), '0')::pg_catalog.interval AS max_lifetime,
               COALESCE(pg_catalog.current_setting('extension_tokens.session_inactivity_timeout', true), '0')::pg_catalog.interval AS idle) l;

ALTER TABLE extension_token_sessions
    ALTER COLUMN access_hash SET NOT NULL,
    ALTER COLUMN refresh_hash SET NOT NULL,
    ALTER COLUMN ends_at SET NOT NULL,
    -- No CHECK constraint on the write path: PostgreSQL prepares every CHECK
    -- expression anew for each execution of a statement, which cost a
    -- refresh 17% of its time.  The only writer is the library's own
    -- statements; what it reads back it checks (a hash of another length is
    -- refused as corrupted data, any kind but 'api_key' is an access session).
    DROP CONSTRAINT extension_token_sessions_check;

-- Refresh tokens of 1.2 carry their session id: refresh finds the session by
-- its primary key, and no index on refresh_hash has to move with every
-- refresh.  The refresh tokens of 1.1 carry none; their hashes (current and
-- exchanged) are kept here, with their session, for as long as the session
-- lives.  Nothing adds to this table after the upgrade.
CREATE TABLE extension_token_legacy_refresh (
    token_hash  bytea PRIMARY KEY CHECK (pg_catalog.length(token_hash) OPERATOR(pg_catalog.=) 32),
    session_id  uuid  NOT NULL
);
CREATE INDEX extension_token_legacy_refresh_session_idx
    ON extension_token_legacy_refresh (session_id);
INSERT INTO extension_token_legacy_refresh (token_hash, session_id)
SELECT token_hash, session_id FROM extension_tokens
 WHERE token_type OPERATOR(pg_catalog.=) 'refresh';
COMMENT ON TABLE extension_token_legacy_refresh IS
'SHA-256 of the refresh tokens made before 1.2 (which do not carry their session id), current and exchanged, with their session: how refresh and revoke find the session of such a token';
SELECT pg_catalog.pg_extension_config_dump('extension_token_legacy_refresh', '');

-- Cleanup finds dead sessions by check_after, a lower bound of the moment
-- the session died: set at issue (the refresh token's expiry) and at
-- revocation, and moved on by cleanup itself when it finds the session was
-- refreshed since.  Refresh does not touch it, nor any other indexed
-- column, so that a refresh is a HOT update (room for it: fillfactor).
ALTER TABLE extension_token_sessions ADD COLUMN check_after timestamptz;
UPDATE extension_token_sessions
   SET check_after = LEAST(revoked_at, refresh_expires_at);
ALTER TABLE extension_token_sessions
    ALTER COLUMN check_after SET NOT NULL,
    SET (fillfactor = 80);
DROP INDEX extension_token_sessions_dead_idx;
CREATE INDEX extension_token_sessions_check_idx
    ON extension_token_sessions (check_after);
COMMENT ON COLUMN extension_token_sessions.check_after IS
'When cleanup should look at this session next: no later than its death (its refresh token''s expiry at issue, or its revocation); cleanup moves it on when a refresh moved the expiry';
COMMENT ON TABLE extension_token_sessions IS
'One row per session, the truth about it: the hashes of its current access and refresh tokens, its end, revocation, and the retry window''s sealed successor (openable only with the refresh token it replaced)';
COMMENT ON COLUMN extension_token_sessions.access_hash IS 'SHA-256 of the current access token';
COMMENT ON COLUMN extension_token_sessions.access_jti IS
'jti of the current access token (NULL for a pair made before 1.2): what extension_token_pre_request checks PostgREST''s verified claims against';
COMMENT ON COLUMN extension_token_sessions.key_id IS
'Key id (kid) of the key that signed the current access token (NULL before 1.2)';
COMMENT ON COLUMN extension_token_sessions.refresh_hash IS 'SHA-256 of the current refresh token';
COMMENT ON COLUMN extension_token_sessions.ends_at IS
'The latest moment the session may live (created_at + session_max_lifetime as it was at issue; infinity for none)';
COMMENT ON COLUMN extension_token_sessions.idle_timeout IS
'session_inactivity_timeout as it was at issue (NULL: none)';
COMMENT ON COLUMN extension_token_sessions.retry_hash IS
'SHA-256 of the refresh token exchanged last; presenting it again before retry_until returns the same successor pair';
COMMENT ON COLUMN extension_token_sessions.retry_box IS
'The successor pair, sealed (AES-256-GCM) under a key derived from the refresh token it replaced: useless without that token';

-- Exchanged refresh tokens: kept until their session is deleted, so that a
-- replay is recognised as reuse.  The other token rows of 1.1 (access tokens,
-- current refresh tokens) are now in the session row.
DELETE FROM extension_tokens
 WHERE token_type OPERATOR(pg_catalog.<>) 'refresh' OR used_at IS NULL;
ALTER TABLE extension_tokens
    DROP CONSTRAINT extension_tokens_session_id_fkey,
    DROP COLUMN token_type,
    DROP COLUMN user_id,
    DROP COLUMN name,
    DROP COLUMN created_at,
    DROP COLUMN expires_at,
    DROP COLUMN last_used_at,
    DROP COLUMN revoked_at,
    DROP COLUMN revoked_reason,
    ALTER COLUMN used_at SET NOT NULL,
    DROP CONSTRAINT extension_tokens_pkey,
    DROP CONSTRAINT extension_tokens_token_hash_check,
    ADD CONSTRAINT extension_tokens_pkey PRIMARY KEY (session_id, token_hash);
DROP INDEX extension_tokens_session_idx;
COMMENT ON TABLE extension_tokens IS
'One row per exchanged refresh token, keyed by its session and its SHA-256 (never the token), until its session is deleted: presenting one again is reuse and revokes the session; replaced_by links it to its successor';

ALTER TABLE extension_token_users
    ALTER COLUMN user_id TYPE text USING user_id::text;

-------------------------------------------------------------------------------
-- Types: text user ids, and what 1.2 adds.
-------------------------------------------------------------------------------

ALTER TYPE extension_token_validation
    ALTER ATTRIBUTE user_id TYPE text,
    ADD ATTRIBUTE scopes text[],
    ADD ATTRIBUTE kind text;
COMMENT ON TYPE extension_token_validation IS
'Outcome of extension_token_validate: valid, or the reason it is not (missing, malformed, invalid_signature, unsupported_algorithm, expired, not_yet_valid, wrong_token_type, wrong_issuer, wrong_audience, not_found, revoked, insufficient_scope); on success the session''s user, name, scopes and kind';
ALTER TYPE extension_token_session
    ALTER ATTRIBUTE user_id TYPE text,
    ADD ATTRIBUTE user_agent text,
    ADD ATTRIBUTE ip inet,
    ADD ATTRIBUTE scopes text[],
    ADD ATTRIBUTE use_count bigint,
    ADD ATTRIBUTE kind text;
ALTER TYPE extension_token_pair
    ADD ATTRIBUTE scopes text[],
    ADD ATTRIBUTE revoked_sessions integer;
-- validations_cached: of the validations counted, those whose signature and
-- claims a backend had verified before (its verified-token cache), so that
-- an operator sees what the cache saves on a pool's traffic.
-- validations_session_cached: of those, the ones that also skipped reading
-- the session's row (a verdict kept by the backend, see
-- extension_tokens.session_verdicts).
ALTER TYPE extension_token_statistics
    ADD ATTRIBUTE validations_cached bigint,
    ADD ATTRIBUTE validations_session_cached bigint;

-------------------------------------------------------------------------------
-- The one rule for a session's end.  Validate, refresh, list, stats and the
-- admin view all decide with this function (validate and refresh call the
-- same C code directly).
-------------------------------------------------------------------------------

CREATE FUNCTION extension_token_session_state(p_revoked_at timestamptz,
                                              p_refresh_expires_at timestamptz,
                                              p_ends_at timestamptz,
                                              p_idle_timeout interval,
                                              p_last_active timestamptz,
                                              p_at timestamptz)
RETURNS text
AS 'MODULE_PATHNAME', 'extension_token_session_state'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION extension_token_session_state(timestamptz, timestamptz, timestamptz, interval, timestamptz, timestamptz) IS
'The rule for a session''s end: ''revoked'', ''expired'' (at or past its refresh expiry or its end, or idle for its idle_timeout since p_last_active) or ''active'' at p_at';

-------------------------------------------------------------------------------
-- Functions whose user id is now text, and revocation by session.
-------------------------------------------------------------------------------

CREATE FUNCTION extension_token_issue(
    p_user_id   text        DEFAULT NULL,
    p_name      text        DEFAULT NULL,
    p_lifetime  interval    DEFAULT NULL,
    p_claims    jsonb       DEFAULT NULL,
    p_scopes    text[]      DEFAULT NULL)
RETURNS extension_token_pair
AS 'MODULE_PATHNAME', 'extension_token_issue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_issue(text, text, interval, jsonb, text[]) IS
'Creates a session for p_user_id (NULL: the PostgREST request user) with p_scopes (carried as the scope claim) and returns its access and refresh tokens; enforces max_sessions_per_user (revoked_sessions says how many older sessions it ended) and issue_rate_limit';

CREATE FUNCTION extension_token_validate(p_token text, p_required_scopes text[] DEFAULT NULL)
RETURNS extension_token_validation
AS 'MODULE_PATHNAME', 'extension_token_validate'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_validate(text, text[]) IS
'Checks an access token (syntax, HS256 signature, claims, its session live and this its current token) and, last, that its session has every scope in p_required_scopes (insufficient_scope); never raises for a bad token; never writes in the caller''s transaction (uses are counted in shared memory)';

CREATE FUNCTION revoke_user_extension_tokens(p_user_id text DEFAULT NULL,
                                             p_except_session_id uuid DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'revoke_user_extension_tokens'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION revoke_user_extension_tokens(text, uuid) IS
'Revokes every active session of p_user_id (NULL: the PostgREST request user) but p_except_session_id; returns how many';

CREATE FUNCTION extension_token_revoke_session(p_session_id uuid)
RETURNS boolean
AS 'MODULE_PATHNAME', 'extension_token_revoke_session'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_revoke_session(uuid) IS
'Revokes one session by its id (the caller must be allowed to act for its user); false for an unknown or already revoked session';

CREATE FUNCTION extension_token_list(p_user_id text DEFAULT NULL)
RETURNS SETOF extension_token_session
AS 'MODULE_PATHNAME', 'extension_token_list'
LANGUAGE C STABLE PARALLEL UNSAFE ROWS 10;
COMMENT ON FUNCTION extension_token_list(text) IS
'The sessions of p_user_id (NULL: the PostgREST request user), newest first; never a token or a hash';

COMMENT ON FUNCTION extension_token_refresh(text, text) IS
'Exchanges a refresh token for a new pair in the same session; the old pair stops working; presenting the exchanged refresh token again within extension_tokens.refresh_retry_window returns the same new pair, and after it revokes the session (PT401)';
COMMENT ON FUNCTION extension_token_revoke(text) IS
'Revokes the session of an access or refresh token; true if something was revoked, false for an unknown, malformed or already revoked token (RFC 7009).  Executable by everyone: the token is the credential';

CREATE FUNCTION extension_tokens_signing_keys(OUT key_id text, OUT status text,
                                              OUT live_sessions bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'extension_tokens_signing_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_tokens_signing_keys() IS
'For administrators: the key ids (never the secrets) of the current and previous signing secret, and how many live sessions'' unexpired access tokens each signed (retired: any other key; NULL key_id: pairs made before 1.2).  A rotation is complete when the previous key signs none';

-------------------------------------------------------------------------------
-- Device authorization (RFC 8628): the hand-off from dashboard to add-in.
-- Only hashes of the codes are kept.
-------------------------------------------------------------------------------

CREATE TABLE extension_token_devices (
    device_hash     bytea       PRIMARY KEY CHECK (pg_catalog.length(device_hash) OPERATOR(pg_catalog.=) 32),
    user_code_hash  bytea       NOT NULL UNIQUE CHECK (pg_catalog.length(user_code_hash) OPERATOR(pg_catalog.=) 32),
    name            text        NOT NULL,
    scopes          text[],
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    poll_interval   integer     NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'approved', 'denied', 'consumed'])),
    user_id         text,
    decided_at      timestamptz,
    session_id      uuid,
    CHECK ((status OPERATOR(pg_catalog.=) 'pending') = (user_id IS NULL AND decided_at IS NULL)
           OR status OPERATOR(pg_catalog.=) 'denied')
);
CREATE INDEX extension_token_devices_expires_idx ON extension_token_devices (expires_at);
COMMENT ON TABLE extension_token_devices IS
'Device authorizations (RFC 8628) in progress: SHA-256 of the device code and of the normalized user code, never the codes; what the approved session will be (name, scopes) and who approved it';
SELECT pg_catalog.pg_extension_config_dump('extension_token_devices', '');

-- As for the tables of 1.0: nobody but the owner, whatever default
-- privileges granted (Supabase grants new tables in public to its API roles),
-- and row level security with no policy behind that.
REVOKE ALL ON extension_token_devices, extension_token_legacy_refresh FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_devices');
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_legacy_refresh');
ALTER TABLE extension_token_devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE extension_token_legacy_refresh ENABLE ROW LEVEL SECURITY;

-- A user's failed approvals within the hour: the guard against guessing.
ALTER TABLE extension_token_users
    ADD COLUMN device_log timestamptz[] NOT NULL DEFAULT '{}';

CREATE TYPE extension_token_device AS (
    device_code                 text,
    user_code                   text,
    verification_uri_complete   text,
    expires_in                  integer,
    "interval"                  integer
);
COMMENT ON TYPE extension_token_device IS
'A device authorization just started: the device code (kept by the add-in, shown once), the user code (shown to the user), where the user approves it, and how often to poll';

CREATE FUNCTION extension_token_device_start(p_name text DEFAULT NULL, p_scopes text[] DEFAULT NULL)
RETURNS extension_token_device
AS 'MODULE_PATHNAME', 'extension_token_device_start'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_device_start(text, text[]) IS
'Starts a device authorization (RFC 8628) for a session named p_name with p_scopes; anonymous; the add-in shows user_code (or opens verification_uri_complete) and polls with device_code';

CREATE FUNCTION extension_token_device_approve(p_user_code text, p_user_id text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'extension_token_device_approve'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_device_approve(text, text) IS
'Approves the device authorization of a user code (case, spaces and dashes ignored) for the signed-in user (or p_user_id, for administrators); false for an unknown, expired or decided code; failed attempts are rate limited (PT429)';

CREATE FUNCTION extension_token_device_deny(p_user_code text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'extension_token_device_deny'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_device_deny(text) IS
'Denies the device authorization of a user code; the add-in''s next poll gets access_denied';

CREATE FUNCTION extension_token_device_poll(p_device_code text)
RETURNS extension_token_pair
AS 'MODULE_PATHNAME', 'extension_token_device_poll'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_device_poll(text) IS
'The add-in''s poll: once approved, the new session''s pair (once); else PT400 with DETAIL authorization_pending, slow_down, expired_token or access_denied; anonymous';

-------------------------------------------------------------------------------
-- API keys (personal access tokens): a session of kind 'api_key' whose
-- access_hash is the key's SHA-256.  The key is "ext_pat_", its key id (the
-- session id) in 22 base62 characters, 256 random bits in 43, and the
-- checksum of the refresh tokens' scheme.
-------------------------------------------------------------------------------

CREATE TYPE extension_token_api_key AS (
    api_key     text,
    key_id      uuid,
    name        text,
    scopes      text[],
    expires_at  timestamptz
);
COMMENT ON TYPE extension_token_api_key IS
'A new API key: the key itself (shown once, never stored), its id (revoke it with extension_token_revoke_session), name, scopes and expiry (NULL: never)';

CREATE FUNCTION extension_token_api_key_create(p_user_id text DEFAULT NULL, p_name text DEFAULT NULL,
                                               p_scopes text[] DEFAULT NULL,
                                               p_expires_in interval DEFAULT NULL,
                                               p_claims jsonb DEFAULT NULL)
RETURNS extension_token_api_key
AS 'MODULE_PATHNAME', 'extension_token_api_key_create'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_api_key_create(text, text, text[], interval, jsonb) IS
'Creates an API key for p_user_id (NULL: the calling PostgREST user) with p_scopes, expiring after p_expires_in (NULL: never); at most extension_tokens.max_api_keys_per_user live keys (PT409 beyond); the key is returned once';

CREATE FUNCTION extension_token_api_key_list(p_user_id text DEFAULT NULL)
RETURNS SETOF extension_token_session
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
-- BEGIN ATOMIC: the call is bound to the function itself when this is made,
-- not looked up by the schema's name at each call (whoever owns the schema
-- could rename it and put his own extension_token_list under that name)
BEGIN ATOMIC
    SELECT l.* FROM @extschema@.extension_token_list(p_user_id) AS l
     WHERE l.kind OPERATOR(pg_catalog.=) 'api_key';
END;
COMMENT ON FUNCTION extension_token_api_key_list(text) IS
'The API keys of p_user_id (NULL: the calling PostgREST user), newest first, as extension_token_list shows sessions: never a key or a hash';

-------------------------------------------------------------------------------
-- Across users, for psql
-------------------------------------------------------------------------------

CREATE VIEW extension_token_sessions_admin AS
SELECT s.session_id, s.user_id, s.name, s.kind,
       extension_token_session_state(s.revoked_at, s.refresh_expires_at, s.ends_at, s.idle_timeout,
                                     COALESCE(s.last_used_at, s.created_at), pg_catalog.now()) AS status,
       s.created_at, s.last_used_at, s.expires_at, s.refresh_expires_at, s.ends_at, s.idle_timeout,
       s.revoked_at, s.revoked_reason, s.refresh_count, s.last_refresh_at,
       s.last_refresh_error, s.last_refresh_error_at,
       (s.last_refresh_error_at IS NOT NULL
        AND (s.last_refresh_at IS NULL
             OR s.last_refresh_error_at OPERATOR(pg_catalog.>) s.last_refresh_at)) AS last_refresh_failed,
       s.scopes, s.user_agent, s.ip, s.use_count
  FROM extension_token_sessions s;
COMMENT ON VIEW extension_token_sessions_admin IS
'Every session of every user with its status and refresh history (no token, no hash); superusers and the extension owner only';

CREATE FUNCTION extension_token_sessions_expiring(p_within interval DEFAULT '7 days')
RETURNS SETOF extension_token_sessions_admin
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT *
      FROM extension_token_sessions_admin a
     WHERE a.status OPERATOR(pg_catalog.=) 'active'
       AND a.refresh_expires_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.+) p_within)
     ORDER BY a.refresh_expires_at;
END;
COMMENT ON FUNCTION extension_token_sessions_expiring(interval) IS
'Active sessions whose refresh token runs out within p_within, soonest first';

-------------------------------------------------------------------------------
-- Grants for the API roles of PostgREST / Supabase, idempotent (as in 1.1,
-- with revoke_session for signed-in users and revoke for everyone).
-------------------------------------------------------------------------------

CREATE FUNCTION extension_tokens_grant_api_roles(p_anon text DEFAULT 'anon',
                                                 p_authenticated text DEFAULT 'authenticated',
                                                 p_service_role text DEFAULT 'service_role')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $grant$
DECLARE
    ext oid;
    owner oid;
    f record;
    r text;
    nsp name;
BEGIN
    SELECT e.oid, e.extowner INTO ext, owner FROM pg_catalog.pg_extension e
     WHERE e.extname OPERATOR(pg_catalog.=) 'extension_tokens';
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, owner, 'USAGE') THEN
        RAISE EXCEPTION 'permission denied to grant the extension''s functions'
            USING ERRCODE = '42501',
                  HINT = 'Run it as the extension''s owner or a superuser.';
    END IF;
    FOREACH r IN ARRAY ARRAY[p_anon, p_authenticated, p_service_role] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            RAISE EXCEPTION 'role "%" does not exist', r USING ERRCODE = '42704';
        END IF;
    END LOOP;
    FOR f IN
        SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname,
                                 pg_catalog.pg_get_function_identity_arguments(p.oid)) AS fn,
               p.proname::text AS name
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) d.objid
          JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid OPERATOR(pg_catalog.=) ext
           AND d.deptype OPERATOR(pg_catalog.=) 'e'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I, %I, %I', f.fn,
                                  p_anon, p_authenticated, p_service_role);
        IF f.name OPERATOR(pg_catalog.=) ANY (ARRAY['extension_token_validate', 'extension_token_refresh',
                                                   'extension_token_revoke', 'extension_token_pre_request',
                                                   'extension_token_device_start', 'extension_token_device_poll']) THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I, %I, %I', f.fn,
                                      p_anon, p_authenticated, p_service_role);
        ELSIF f.name OPERATOR(pg_catalog.=) ANY (ARRAY['extension_token_issue', 'extension_token_list',
                                                      'extension_token_api_key_create',
                                                      'extension_token_api_key_list',
                                                      'extension_token_revoke_session',
                                                      'revoke_user_extension_tokens',
                                                      'extension_token_device_approve',
                                                      'extension_token_device_deny',
                                                      'extension_token_events']) THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I, %I', f.fn,
                                      p_authenticated, p_service_role);
        ELSIF f.name OPERATOR(pg_catalog.=) ANY (ARRAY['extension_token_stats',
                                                      'extension_token_event_counts',
                                                      'extension_token_events_daily']) THEN
            -- an admin page or a monitoring job of the service role
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f.fn, p_service_role);
        END IF;
    END LOOP;
    -- The daily figures of an admin page are a view: the service role reads it.
    SELECT n.nspname INTO nsp FROM pg_catalog.pg_namespace n, pg_catalog.pg_extension e
     WHERE e.oid OPERATOR(pg_catalog.=) ext AND n.oid OPERATOR(pg_catalog.=) e.extnamespace;
    EXECUTE pg_catalog.format('REVOKE ALL ON %I.extension_tokens_issued_daily FROM %I, %I, %I', nsp,
                              p_anon, p_authenticated, p_service_role);
    EXECUTE pg_catalog.format('GRANT SELECT ON %I.extension_tokens_issued_daily TO %I', nsp, p_service_role);
END
$grant$;
COMMENT ON FUNCTION extension_tokens_grant_api_roles(text, text, text) IS
'Grants the extension''s functions to PostgREST/Supabase roles, taking back anything else they had on them: validate, refresh, revoke and pre_request to all three; issue, list, revoke_session, revoke_user and events to the signed-in and the service role; stats, event_counts, events_daily and the view extension_tokens_issued_daily to the service role.  Idempotent.  Name the service role in extension_tokens.admin_roles too';

-------------------------------------------------------------------------------
-- Privileges.  PostgreSQL grants EXECUTE on new functions to PUBLIC, and
-- default privileges may have granted them to roles directly (Supabase):
-- take all of that back, then grant what is meant.
-------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION extension_token_issue(text, text, interval, jsonb, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_validate(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION revoke_user_extension_tokens(text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_revoke_session(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_list(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_sessions_expiring(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_tokens_grant_api_roles(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_session_state(timestamptz, timestamptz, timestamptz, interval, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_tokens_signing_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_device_approve(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_device_deny(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_api_key_create(text, text, text[], interval, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_api_key_list(text) FROM PUBLIC;
REVOKE ALL ON extension_token_sessions_admin FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_issue(text, text, interval, jsonb, text[])');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_validate(text, text[])');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'revoke_user_extension_tokens(text, uuid)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_revoke_session(uuid)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_list(text)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_sessions_expiring(interval)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_tokens_grant_api_roles(text, text, text)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_session_state(timestamptz, timestamptz, timestamptz, interval, timestamptz, timestamptz)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_tokens_signing_keys()');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_device_start(text, text[])');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_device_approve(text, text)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_device_deny(text)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_device_poll(text)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_api_key_create(text, text, text[], interval, jsonb)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_api_key_list(text)');
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_sessions_admin');
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_devices');
-- The token is the credential (RFC 7009): an add-in signs itself out with
-- the anon key.
GRANT EXECUTE ON FUNCTION extension_token_revoke(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION extension_token_validate(text, text[]) TO PUBLIC;
-- An add-in starts and polls a device authorization with the anon key: the
-- device code is the credential.
GRANT EXECUTE ON FUNCTION extension_token_device_start(text, text[]) TO PUBLIC;
GRANT EXECUTE ON FUNCTION extension_token_device_poll(text) TO PUBLIC;

-------------------------------------------------------------------------------
-- Installation and uninstallation (issue 26).  Kept at the end of the script.
-------------------------------------------------------------------------------

-- DROP EXTENSION removes the pg_cron jobs it scheduled: they live in the
-- database named by cron.database_name, which dependencies cannot reach.  A
-- ddl_command_start trigger, since a sql_drop one would be dropped with the
-- extension before it fired; the C side (src/uninstall.c) acts at commit,
-- and only if the extension is then gone from this database.
CREATE FUNCTION extension_tokens_drop_jobs()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'extension_tokens_drop_jobs'
LANGUAGE C;
COMMENT ON FUNCTION extension_tokens_drop_jobs() IS
'Event trigger function: when a transaction drops the extension, removes its pg_cron jobs at commit';
-- Nobody calls it but the event trigger: not PUBLIC, and not the API roles
-- that default privileges may have granted it to (Supabase's).
REVOKE ALL ON FUNCTION extension_tokens_drop_jobs() FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_tokens_drop_jobs()');

CREATE EVENT TRIGGER extension_tokens_drop_jobs ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION extension_tokens_drop_jobs();
COMMENT ON EVENT TRIGGER extension_tokens_drop_jobs IS
'Removes the extension''s pg_cron jobs when a transaction drops the extension';

-- The code raises a WARNING, not a NOTICE (src/extension_tokens.c).
COMMENT ON FUNCTION extension_tokens_cleanup_schedule(text, boolean) IS
'Creates or changes the pg_cron job that runs extension_tokens_cleanup() in this database (jobs live in cron.database_name), and one that trims those jobs'' run history to a week; p_quiet turns a failure into a WARNING';

-- Refresh, reuse revocation, use counting and statistics need the library
-- loaded at server start; say so where it is installed.  (A WARNING: notices
-- are silenced while extension scripts run.)
DO $preload$
BEGIN
    IF pg_catalog.current_setting('shared_preload_libraries')
       OPERATOR(pg_catalog.!~) '(^|[\s,"/])extension_tokens(\.so)?($|[\s,"])' THEN
        RAISE WARNING 'extension_tokens is not in shared_preload_libraries: refresh, reuse revocation, use counting and the statistics counters need it'
            USING HINT = 'Add extension_tokens to shared_preload_libraries in postgresql.conf and restart the server.';
    END IF;
END
$preload$;

-------------------------------------------------------------------------------
-- Audit trail and notifications (issue 25).  Kept after the rest.
--
-- extension_token_events is written by the statements that make the changes
-- it records (src/storage.c), in their transaction; reuse and rate-limit
-- refusals by the revoker's worker (src/revoker.c), which commits them
-- after the caller's error.  Nobody reads the table directly: the two
-- functions below do, as the extension's owner, after the caller's rights
-- are checked.
-------------------------------------------------------------------------------

-- A sequence of its own rather than an identity column, so that
-- pg_extension_config_dump() can carry its position through pg_dump.
CREATE SEQUENCE extension_token_events_event_id_seq;
CREATE TABLE extension_token_events (
    event_id    bigint      NOT NULL DEFAULT pg_catalog.nextval('extension_token_events_event_id_seq'::pg_catalog.regclass)
                            PRIMARY KEY,
    at          timestamptz NOT NULL,
    event       text        NOT NULL,
    user_id     text,
    session_id  uuid,
    actor       text,
    reason      text,
    ip          inet,
    user_agent  text,
    token_hash  bytea
);
ALTER SEQUENCE extension_token_events_event_id_seq OWNED BY extension_token_events.event_id;
-- No CHECK constraints: they are prepared anew for every insert, and the
-- issue and refresh statements insert here (the code writes known values).
CREATE INDEX extension_token_events_user_idx ON extension_token_events (user_id, at);
CREATE INDEX extension_token_events_at_idx ON extension_token_events (at);
CREATE INDEX extension_token_events_token_idx ON extension_token_events (token_hash)
    WHERE token_hash IS NOT NULL;
COMMENT ON TABLE extension_token_events IS
'The audit trail: one row per issue, refresh, revocation, refresh token reuse, rate-limit refusal, API key creation, device approval, expired session deleted and signing key rotation, written in the transaction of the change; token_hash is the SHA-256 of the access token or API key that the event minted (or of the reused refresh token), never a token';
COMMENT ON SEQUENCE extension_token_events_event_id_seq IS
'The event ids of extension_token_events, in the order the events were written';
SELECT pg_catalog.pg_extension_config_dump('extension_token_events', '');
SELECT pg_catalog.pg_extension_config_dump('extension_token_events_event_id_seq', '');

-- As for the other tables: nobody but the owner, whatever default privileges
-- granted, and row level security with no policy behind that.
REVOKE ALL ON extension_token_events, extension_token_events_event_id_seq FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_events');
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_events_event_id_seq');
ALTER TABLE extension_token_events ENABLE ROW LEVEL SECURITY;

CREATE TYPE extension_token_event AS (
    event_id    bigint,
    at          timestamptz,
    event       text,
    user_id     text,
    session_id  uuid,
    actor       text,
    reason      text,
    ip          inet,
    user_agent  text
);
COMMENT ON TYPE extension_token_event IS
'One event of the audit trail: what happened (issued, refreshed, revoked, reuse_detected, rate_limited, api_key_created, device_approved, session_expired, secret_rotated), to whose session, done by which role (actor), why, and from where';

CREATE FUNCTION extension_token_events(p_user_id text DEFAULT NULL, p_since timestamptz DEFAULT NULL)
RETURNS SETOF extension_token_event
AS 'MODULE_PATHNAME', 'extension_token_events'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION extension_token_events(text, timestamptz) IS
'The events of p_user_id (NULL: the calling PostgREST user; for an administrator, every user) since p_since (NULL: all kept), oldest first.  Users read their own only';

CREATE FUNCTION extension_token_events_by_token(p_token text)
RETURNS SETOF extension_token_event
AS 'MODULE_PATHNAME', 'extension_token_events_by_token'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION extension_token_events_by_token(text) IS
'Incident response, administrators only: the events of the session that p_token (an access token, refresh token or API key, expired or not) belongs to, found by its SHA-256; the token is neither stored nor logged';

REVOKE ALL ON FUNCTION extension_token_events(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_events_by_token(text) FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_events(text, timestamptz)');
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_events_by_token(text)');

-- Monitoring (monitoring/queries.yaml): the events of this database within
-- the last p_window, by kind and reason, every kind present (zero if none),
-- so that a rate or an alert never reads a missing series as zero traffic.
-- SECURITY DEFINER: a monitoring role reads counts, never a row.  The reason
-- of secret_rotated names key ids, one value per rotation: it is left out,
-- so that a label never takes a new value each time.
CREATE FUNCTION extension_token_event_counts(p_window interval DEFAULT '5 minutes')
RETURNS TABLE (event text, reason text, events bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT k.event, x.reason, pg_catalog.count(e.event_id)
      FROM (VALUES ('issued'), ('refreshed'), ('revoked'), ('reuse_detected'), ('rate_limited'),
                   ('api_key_created'), ('device_approved'), ('session_expired'),
                   ('secret_rotated')) AS k(event)
      LEFT JOIN extension_token_events e
        ON e.event OPERATOR(pg_catalog.=) k.event
       AND e.at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) p_window),
           LATERAL (SELECT CASE WHEN k.event OPERATOR(pg_catalog.=) 'secret_rotated' THEN ''
                                ELSE COALESCE(e.reason, '') END AS reason) AS x
     GROUP BY k.event, x.reason
     ORDER BY 1, 2;
END;
COMMENT ON FUNCTION extension_token_event_counts(interval) IS
'Events of this database within the last p_window, by kind and reason (every kind present, zero if none): for monitoring; grant it and extension_token_stats() to a monitoring role';
REVOKE ALL ON FUNCTION extension_token_event_counts(interval) FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_event_counts(interval)');

-- Daily figures that survive the cleanup of sessions (events are kept for
-- event_retention): every day of the last p_days and every kind, zero-filled.
CREATE FUNCTION extension_token_events_daily(p_days integer DEFAULT 30)
RETURNS TABLE (day date, event text, events bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT d.day::pg_catalog.date, k.event, pg_catalog.count(e.event_id)
      FROM pg_catalog.generate_series(pg_catalog.date_trunc('day', pg_catalog.now())
                                      OPERATOR(pg_catalog.-) pg_catalog.make_interval(days => GREATEST(p_days, 1) OPERATOR(pg_catalog.-) 1),
                                      pg_catalog.date_trunc('day', pg_catalog.now()), interval '1 day') AS d(day)
     CROSS JOIN (VALUES ('issued'), ('refreshed'), ('revoked'), ('reuse_detected'), ('rate_limited'),
                        ('api_key_created'), ('device_approved'), ('session_expired'),
                        ('secret_rotated')) AS k(event)
      LEFT JOIN extension_token_events e
        ON e.event OPERATOR(pg_catalog.=) k.event
       AND e.at OPERATOR(pg_catalog.>=) d.day
       AND e.at OPERATOR(pg_catalog.<) (d.day OPERATOR(pg_catalog.+) interval '1 day')
     GROUP BY d.day, k.event
     ORDER BY 1, 2;
END;
COMMENT ON FUNCTION extension_token_events_daily(integer) IS
'Events of this database per day (the caller''s time zone) over the last p_days, by kind, every day and kind present (zero if none); from the events, so the figures survive the cleanup of sessions for extension_tokens.event_retention';
REVOKE ALL ON FUNCTION extension_token_events_daily(integer) FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_events_daily(integer)');

-- "Expiring soon": NOTIFY extension_tokens for every live session and API
-- key whose end (refresh expiry or lifetime) falls within p_within, once:
-- run every p_every (a pg_cron job, README), each run announces the ends
-- that entered the last p_within since the previous run.
CREATE FUNCTION extension_tokens_notify_expiring(p_within interval DEFAULT '7 days',
                                                 p_every interval DEFAULT '1 day')
RETURNS bigint
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT pg_catalog.count(*)
      FROM (SELECT pg_catalog.pg_notify('extension_tokens', pg_catalog.json_build_object(
                       'event', 'expiring', 'kind', s.kind, 'session_id', s.session_id,
                       'user_id', s.user_id, 'reason', 'expires_soon',
                       'expires_at', LEAST(s.refresh_expires_at, s.ends_at))::text) AS sent
              FROM extension_token_sessions s
             WHERE s.revoked_at IS NULL
               AND LEAST(s.refresh_expires_at, s.ends_at) OPERATOR(pg_catalog.>)
                   (pg_catalog.now() OPERATOR(pg_catalog.+) p_within OPERATOR(pg_catalog.-) p_every)
               AND LEAST(s.refresh_expires_at, s.ends_at) OPERATOR(pg_catalog.<=)
                   (pg_catalog.now() OPERATOR(pg_catalog.+) p_within)
               AND LEAST(s.refresh_expires_at, s.ends_at) OPERATOR(pg_catalog.>) pg_catalog.now()) AS n;
END;
COMMENT ON FUNCTION extension_tokens_notify_expiring(interval, interval) IS
'NOTIFY extension_tokens (event expiring, kind, session_id, user_id, expires_at; never a token) for each live session and API key whose end entered the last p_within during the last p_every; schedule it every p_every with pg_cron.  Returns how many were notified';
REVOKE ALL ON FUNCTION extension_tokens_notify_expiring(interval, interval) FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_tokens_notify_expiring(interval, interval)');

-------------------------------------------------------------------------------
-- Asymmetric signing (ES256, EdDSA) and the public JWK Set (issue 24).
-- extension_tokens.signing_algorithm, signing_key_file and
-- signing_key_previous_file are server settings (src/config.c); the SQL side
-- is the JWK Set alone.
-------------------------------------------------------------------------------

CREATE FUNCTION extension_token_jwks()
    RETURNS jsonb
    AS 'MODULE_PATHNAME', 'extension_token_jwks'
    LANGUAGE C STABLE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_jwks() IS
'The public keys (current and previous) that verify access tokens signed ES256 or EdDSA, as a JWK Set (RFC 7517): give it to PostgREST as jwt-secret or to any JWT library.  Never a secret: empty under HS256';
-- Public keys are public: anyone, including PostgREST's anonymous role with
-- a GET on /rpc/extension_token_jwks, may read them.  As above, grants that
-- default privileges made to roles directly are taken back first, so that
-- the one grant is PUBLIC's.
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_jwks()');
GRANT EXECUTE ON FUNCTION extension_token_jwks() TO PUBLIC;

-------------------------------------------------------------------------------
-- End of the asymmetric signing section.
-------------------------------------------------------------------------------

-------------------------------------------------------------------------------
-- Daily figures that survive the cleanup, and rotations of the signing keys
-- (issue 25).  Kept last: the closing statement records the keys in force,
-- which needs every table of 1.2.
-------------------------------------------------------------------------------

-- Sessions that extension_tokens_cleanup() deleted, counted by the quarter
-- hour (UTC-aligned, so that a day in any time zone is whole quarters) in
-- which they were created, and by kind, written by the statement that
-- deletes them: extension_tokens_issued_daily adds them to the surviving
-- sessions, and a day's figure never shrinks.  A few counters per quarter
-- hour at most; kept for good.
CREATE TABLE extension_token_issued_rollup (
    bucket    timestamptz NOT NULL,
    kind      text        NOT NULL,
    sessions  bigint      NOT NULL,
    PRIMARY KEY (bucket, kind)
);
COMMENT ON TABLE extension_token_issued_rollup IS
'Sessions (kind access) and API keys (kind api_key) deleted by extension_tokens_cleanup(), counted by the quarter hour of their creation: the part of extension_tokens_issued_daily that the sessions table no longer holds';
SELECT pg_catalog.pg_extension_config_dump('extension_token_issued_rollup', '');

REVOKE ALL ON extension_token_issued_rollup FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_issued_rollup');
ALTER TABLE extension_token_issued_rollup ENABLE ROW LEVEL SECURITY;

-- Issued per day: 1.1 counted the surviving sessions, so the cleanup made
-- past days shrink.  Now the sessions it deleted are added back from the
-- rollup, every one of the 30 days is present (0 if none), and API keys are
-- counted apart.  Grants made on the 1.1 view are gone with it:
-- extension_tokens_grant_api_roles() grants it to the service role again.
DROP VIEW extension_tokens_issued_daily;
CREATE VIEW extension_tokens_issued_daily AS
WITH days AS (
    SELECT d.day
      FROM pg_catalog.generate_series(
               pg_catalog.date_trunc('day', pg_catalog.now()) OPERATOR(pg_catalog.-) interval '29 days',
               pg_catalog.date_trunc('day', pg_catalog.now()), interval '1 day') AS d(day)
), issued AS (
    SELECT pg_catalog.date_trunc('day', s.created_at) AS day, s.kind, pg_catalog.count(*) AS n
      FROM extension_token_sessions s
     WHERE s.created_at OPERATOR(pg_catalog.>=)
           (pg_catalog.date_trunc('day', pg_catalog.now()) OPERATOR(pg_catalog.-) interval '29 days')
     GROUP BY 1, 2
    UNION ALL
    SELECT pg_catalog.date_trunc('day', r.bucket), r.kind, r.sessions
      FROM extension_token_issued_rollup r
     WHERE r.bucket OPERATOR(pg_catalog.>=)
           (pg_catalog.date_trunc('day', pg_catalog.now()) OPERATOR(pg_catalog.-) interval '29 days')
)
SELECT days.day,
       CAST(COALESCE(pg_catalog.sum(i.n) FILTER (WHERE i.kind OPERATOR(pg_catalog.=) 'access'), 0)
            AS pg_catalog.int8) AS sessions_issued,
       CAST(COALESCE(pg_catalog.sum(i.n) FILTER (WHERE i.kind OPERATOR(pg_catalog.=) 'api_key'), 0)
            AS pg_catalog.int8) AS api_keys_created
  FROM days LEFT JOIN issued i ON i.day OPERATOR(pg_catalog.=) days.day
 GROUP BY days.day
 ORDER BY days.day;
COMMENT ON VIEW extension_tokens_issued_daily IS
'Sessions issued and API keys created in this database per day (the caller''s time zone) over the last 30 days, every day present (0 if none); sessions that extension_tokens_cleanup() has deleted are still counted (extension_token_issued_rollup), so a day''s figures never shrink';
REVOKE ALL ON extension_tokens_issued_daily FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_tokens_issued_daily');

-- What this database last recorded of the keys in force: their public names
-- only (the kid of the HS256 secret, a SHA-256 prefix that every token it
-- signs carries in its header; the RFC 7638 thumbprint of the asymmetric
-- key), never a key.  When they differ from the keys in force, a
-- secret_rotated event is written and this row moved on, in one transaction
-- (src/storage.c): the revoker's worker compares them in every database after
-- each reload that changed the keys and at every server start
-- (src/revoker.c), so a change made while the server was down is recorded
-- too.  Not in pg_dump's data: a restored database records, from the
-- CREATE EXTENSION on, the keys of the server it was restored into.
CREATE TABLE extension_token_signing_state (
    singleton    boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton),
    algorithm    text,
    secret_id    text,
    key_id       text,
    recorded_at  timestamptz NOT NULL
);
COMMENT ON TABLE extension_token_signing_state IS
'The signing keys this database last recorded (one row): extension_tokens.signing_algorithm, the key id of the HS256 secret (the "kid" of the tokens it signs) and the RFC 7638 thumbprint of the signing key; never a key.  A difference from the keys in force is recorded as a secret_rotated event';

REVOKE ALL ON extension_token_signing_state FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('TABLE', 'extension_token_signing_state');
ALTER TABLE extension_token_signing_state ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION extension_tokens_check_signing_keys()
RETURNS boolean
AS 'MODULE_PATHNAME', 'extension_tokens_check_signing_keys'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_tokens_check_signing_keys() IS
'For administrators: compares the signing keys in force with those this database last recorded and, if they differ, writes a secret_rotated event (the key ids, never a key); true if it did.  The revoker''s worker does this in every database after each reload that changed the keys and at server start; call it where the library is not preloaded';
REVOKE ALL ON FUNCTION extension_tokens_check_signing_keys() FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_tokens_check_signing_keys()');

-- The keys in force now are this database's starting point: a rotation from
-- here on is recorded, and none is invented for the keys it started with.
SELECT extension_tokens_check_signing_keys();

-------------------------------------------------------------------------------
-- Session verdicts (verdict.c): a backend may validate a token it has
-- validated before without reading its session's row while no change to
-- that session has committed since.  These triggers note which sessions a
-- transaction updates or deletes (and a TRUNCATE: all of them) so that its
-- commit can tell every backend; they change nothing.  AFTER, not BEFORE:
-- a BEFORE row trigger makes every UPDATE and DELETE lock its row first.  ENABLE ALWAYS: they
-- fire under session_replication_role = replica and in logical
-- replication's apply workers too.  The library checks that they are
-- present and enabled, and reads the row every time when they are not.
CREATE FUNCTION extension_token_session_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'extension_token_session_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_session_changed() IS
'Internal: the trigger on extension_token_sessions that notes which sessions a transaction changes, so that validations skipping the session''s row (extension_tokens.session_verdicts) stop at its commit';
REVOKE ALL ON FUNCTION extension_token_session_changed() FROM PUBLIC;
SELECT extension_tokens_revoke_role_grants('FUNCTION', 'extension_token_session_changed()');
CREATE TRIGGER extension_token_session_changed
    AFTER UPDATE OR DELETE ON extension_token_sessions
    FOR EACH ROW EXECUTE FUNCTION extension_token_session_changed();
CREATE TRIGGER extension_token_sessions_truncated
    BEFORE TRUNCATE ON extension_token_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION extension_token_session_changed();
ALTER TABLE extension_token_sessions
    ENABLE ALWAYS TRIGGER extension_token_session_changed,
    ENABLE ALWAYS TRIGGER extension_token_sessions_truncated;

-- The pg_cron jobs of 1.1 ran "SELECT <schema>.extension_tokens_cleanup()"
-- as the extension's owner: whoever owns that schema could rename it and
-- put his own function under the old name.  This version's jobs find the
-- function by its membership in the extension; the jobs there are brought
-- up to date, their schedules kept (none there: none made).
DO $cron$
BEGIN
    IF pg_catalog.current_setting('cron.database_name', true) IS NOT NULL THEN
        PERFORM extension_tokens_cleanup_schedule(NULL, p_quiet => true);
    END IF;
END
$cron$;

-- Every object of the extension belongs to the extension's owner, as after a
-- fresh install: what an earlier update run by another role made, too (this
-- script's own objects were made as the owner: see its top).
DO $owner$
DECLARE
    ext_owner pg_catalog.oid;
    owner_name pg_catalog.name;
    r record;
BEGIN
    SELECT e.extowner, a.rolname INTO ext_owner, owner_name
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_authid a ON a.oid OPERATOR(pg_catalog.=) e.extowner
     WHERE e.extname OPERATOR(pg_catalog.=) 'extension_tokens';
    -- tables and views first: their sequences and row types follow them (and
    -- a sequence that belongs to a column cannot be given away by itself)
    FOR r IN
        SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
          LEFT JOIN pg_catalog.pg_class c ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                                        AND c.oid OPERATOR(pg_catalog.=) d.objid
         WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.deptype OPERATOR(pg_catalog.=) 'e'
           AND e.extname OPERATOR(pg_catalog.=) 'extension_tokens'
         ORDER BY c.oid IS NULL, c.relkind OPERATOR(pg_catalog.=) 'S', d.objid
    LOOP
        IF r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass THEN
            PERFORM 1 FROM pg_catalog.pg_class c
              WHERE c.oid OPERATOR(pg_catalog.=) r.objid AND c.relowner OPERATOR(pg_catalog.<>) ext_owner;
            IF FOUND THEN
                EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I',
                    (SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                           WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END
                       FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) r.objid),
                    r.objid::pg_catalog.regclass, owner_name);
            END IF;
        ELSIF r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
            PERFORM 1 FROM pg_catalog.pg_proc p
              WHERE p.oid OPERATOR(pg_catalog.=) r.objid AND p.proowner OPERATOR(pg_catalog.<>) ext_owner;
            IF FOUND THEN
                EXECUTE pg_catalog.format('ALTER ROUTINE %s OWNER TO %I',
                    r.objid::pg_catalog.regprocedure, owner_name);
            END IF;
        ELSIF r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass THEN
            -- an array type (a member too since PostgreSQL 17) follows its element
            PERFORM 1 FROM pg_catalog.pg_type t
              WHERE t.oid OPERATOR(pg_catalog.=) r.objid AND t.typowner OPERATOR(pg_catalog.<>) ext_owner
                AND t.typcategory OPERATOR(pg_catalog.<>) 'A';
            IF FOUND THEN
                EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I',
                    (SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END
                       FROM pg_catalog.pg_type t WHERE t.oid OPERATOR(pg_catalog.=) r.objid),
                    r.objid::pg_catalog.regtype, owner_name);
            END IF;
        ELSIF r.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_event_trigger'::pg_catalog.regclass THEN
            -- an event trigger's owner must be a superuser
            PERFORM 1 FROM pg_catalog.pg_event_trigger t, pg_catalog.pg_authid a
              WHERE t.oid OPERATOR(pg_catalog.=) r.objid AND t.evtowner OPERATOR(pg_catalog.<>) ext_owner
                AND a.oid OPERATOR(pg_catalog.=) ext_owner AND a.rolsuper;
            IF FOUND THEN
                EXECUTE pg_catalog.format('ALTER EVENT TRIGGER %I OWNER TO %I',
                    (SELECT t.evtname FROM pg_catalog.pg_event_trigger t
                      WHERE t.oid OPERATOR(pg_catalog.=) r.objid), owner_name);
            END IF;
        END IF;
    END LOOP;
END
$owner$;

-- The helper of the top of this script has done its work.
DROP FUNCTION extension_tokens_revoke_role_grants(text, text);

-- The role in force before this script, again.
SELECT pg_catalog.set_config('role', pg_catalog.current_setting('extension_tokens_update.role'), true);
