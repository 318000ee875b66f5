-- examples/plproxy/proxy.sql: the proxy database of a sharded
-- extension_tokens on PL/Proxy.  Run it in the proxy database after
--
--   CREATE EXTENSION plproxy;
--   CREATE SERVER extension_tokens FOREIGN DATA WRAPPER plproxy
--       OPTIONS (p0 'dbname=shard0 host=...', p1 'dbname=shard1 host=...');   -- a power of 2
--   CREATE USER MAPPING FOR PUBLIC SERVER extension_tokens OPTIONS (user 'et_proxy_anon', password '...');
--   CREATE USER MAPPING FOR authenticated SERVER extension_tokens OPTIONS (user 'et_proxy_authenticated', password '...');
--   CREATE USER MAPPING FOR service_role SERVER extension_tokens OPTIONS (user 'et_proxy_service_role', password '...');
--   GRANT USAGE ON FOREIGN SERVER extension_tokens TO PUBLIC;
--
-- and, on the shards, examples/plproxy/shard.sql with partition i's
-- database set to extension_tokens.shard_tag = i.
--
-- Clients call the same functions, with the same arguments and results, as
-- on a single server.  Routing:
--   - issue, list, revoke_user_extension_tokens, api_key_create,
--     api_key_list: by hashtext() of the user id (p_user_id, or the `sub` of
--     request.jwt.claims), so that each user's sessions, limits and rate
--     limits live on one shard;
--   - validate, refresh, revoke: by the shard tag in the token's session id
--     (the first 16 bits; every access token, refresh token and API key
--     carries its session id), so no lookup is needed;
--   - revoke_session: by the tag of the session id it names;
--   - stats and cleanup: on every shard, added up; jwks: on partition 0;
--   - events: every shard's, merged oldest first (a user's are all on the
--     user's shard; an administrator's trail is everyone's); events_by_token
--     by the token's tag;
--   - extension_token_pre_request (PostgREST's db-pre-request): the request's
--     headers and verified claims go to the shard of its API key or of its
--     access token's session, where the extension's own function decides;
--     what it sets for an API key (claims, role) is set here;
--   - device authorization: started on any shard; approved and denied on the
--     approving user's shard, where its guess limit is counted, after the
--     authorization was moved there (see shard.sql); polled on every shard,
--     the one holding it answering.
-- PL/Proxy sends a call to partition (value & (partitions - 1)): a tag
-- names its partition exactly, so shards can be added (2 -> 4 -> ...) and
-- every existing token still reaches its shard.  (Users whose hash then
-- names a new partition must be moved with their sessions first, or list and
-- revoke_user would not find their older sessions: rebalancing is not part
-- of this example.)
--
-- Who may act for whom is decided on the shard by the extension itself: the
-- user mapping of the calling role logs in as et_proxy_<role>, which
-- becomes that role there with this request's claims.  Any other role
-- (a login role that did not SET ROLE) reaches the shards as anon: it may
-- validate, refresh and revoke with a token, nothing else.

CREATE SCHEMA extension_tokens_proxy;
COMMENT ON SCHEMA extension_tokens_proxy IS
'Routing of the extension_tokens functions to their shard (PL/Proxy)';

-- The extension's result types, column for column.
CREATE TYPE public.extension_token_pair AS (
    access_token text, refresh_token text, token_type text, expires_in integer,
    expires_at timestamptz, refresh_expires_at timestamptz, session_id uuid, scopes text[],
    revoked_sessions integer);
CREATE TYPE public.extension_token_validation AS (
    valid boolean, error text, user_id text, session_id uuid, token_name text,
    expires_at timestamptz, claims jsonb, scopes text[], kind text);
CREATE TYPE public.extension_token_session AS (
    session_id uuid, user_id text, name text, status text, created_at timestamptz,
    last_used_at timestamptz, expires_at timestamptz, refresh_expires_at timestamptz,
    revoked_at timestamptz, refresh_count integer, last_refresh_at timestamptz,
    revoked_reason text, last_refresh_error text, last_refresh_error_at timestamptz,
    user_agent text, ip inet, scopes text[], use_count bigint, kind text);
CREATE TYPE public.extension_token_statistics AS (
    stats_since timestamptz, counters_available boolean, tokens_issued bigint,
    tokens_issued_24h bigint, sessions_active bigint, sessions_revoked bigint,
    sessions_expired bigint, refreshes_succeeded bigint, refreshes_failed bigint,
    validations_succeeded bigint, validations_failed bigint, validations_failed_by_error jsonb,
    measured_at timestamptz, validations_cached bigint, validations_session_cached bigint);
CREATE TYPE public.extension_token_api_key AS (
    api_key text, key_id uuid, name text, scopes text[], expires_at timestamptz);
CREATE TYPE public.extension_token_device AS (
    device_code text, user_code text, verification_uri_complete text, expires_in integer,
    "interval" integer);
CREATE TYPE public.extension_token_event AS (
    event_id bigint, at timestamptz, event text, user_id text, session_id uuid, actor text,
    reason text, ip inet, user_agent text);
-- The shards' answers to the proxy's own calls (shard.sql has the same types).
CREATE TYPE extension_tokens_proxy.pre_request_answer AS (need_role text, role text, claims text);
CREATE TYPE extension_tokens_proxy.device AS (
    device_hash bytea, name text, scopes text[], created_at timestamptz, expires_at timestamptz,
    poll_interval integer);
CREATE TYPE extension_tokens_proxy.poll_answer AS (
    access_token text, refresh_token text, token_type text, expires_in integer,
    expires_at timestamptz, refresh_expires_at timestamptz, session_id uuid, scopes text[],
    revoked_sessions integer, error_state text, error_message text, error_detail text, error_hint text);

-------------------------------------------------------------------------------
-- Routing
-------------------------------------------------------------------------------

-- The shard tag of a session id: its first 16 bits.
CREATE FUNCTION extension_tokens_proxy.session_shard(p_session_id uuid)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(('x' || substr(p_session_id::text, 1, 4))::bit(16)::integer, 0) $$;

-- The shard tag of the session id in 22 base62 digits (refresh tokens and
-- API keys: the 128-bit id, most significant digit first): id / 2^112.
CREATE FUNCTION extension_tokens_proxy.base62_shard(p_digits text)
RETURNS integer LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n numeric := 0;
BEGIN
    IF p_digits IS NULL OR p_digits !~ '^[0-9A-Za-z]{22}$' THEN
        RETURN 0;
    END IF;
    FOR i IN 1..22 LOOP
        n := n * 62 + strpos('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz',
                             substr(p_digits, i, 1)) - 1;
    END LOOP;
    RETURN least(floor(n / 5192296858534827628530496329220096), 65535)::integer;
END $$;

-- The shard of any token: an API key's or refresh token's digits, an access
-- token's session_id claim (read, not verified: the shard verifies).  What
-- cannot be read goes to partition 0, which gives the same answer as any
-- shard (malformed, not found, false).
CREATE FUNCTION extension_tokens_proxy.token_shard(p_token text)
RETURNS integer LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    payload text;
BEGIN
    IF p_token IS NULL OR length(p_token) > 16384 THEN
        RETURN 0;
    ELSIF left(p_token, 7) = 'ext_rt_' THEN
        RETURN extension_tokens_proxy.base62_shard(substr(p_token, 8, 22));
    ELSIF left(p_token, 8) = 'ext_pat_' THEN
        RETURN extension_tokens_proxy.base62_shard(substr(p_token, 9, 22));
    END IF;
    payload := translate(split_part(p_token, '.', 2), '-_', '+/');
    payload := rpad(payload, (length(payload) + 3) / 4 * 4, '=');
    RETURN extension_tokens_proxy.session_shard(
        (pg_catalog.convert_from(pg_catalog.decode(payload, 'base64'), 'UTF8')::jsonb ->> 'session_id')::uuid);
EXCEPTION WHEN others THEN
    RETURN 0;
END $$;

-- The hash that places a user: of p_user_id, or of the caller's `sub`.
CREATE FUNCTION extension_tokens_proxy.user_shard(p_user_id text)
RETURNS integer LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_catalog.hashtext(coalesce(p_user_id,
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', ''));
EXCEPTION WHEN others THEN
    RETURN 0;
END $$;

-- What the shards get of PostgREST's request headers: the user-agent and
-- x-forwarded-for, from which the extension records a session's user_agent
-- and ip at issue, refresh and the device poll (no token, no cookie).
CREATE FUNCTION extension_tokens_proxy.client()
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    h jsonb;
BEGIN
    h := nullif(current_setting('request.headers', true), '')::jsonb;
    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'user-agent', h -> 'user-agent', 'x-forwarded-for', h -> 'x-forwarded-for'))::text;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

-- A shard's error as the shard raised it: PL/Proxy prefixes the message with
-- the function and partition and the detail and hint with "Remote ...: ",
-- but clients read the detail (PT401's reason) and the hint (PT429's retry).
CREATE FUNCTION extension_tokens_proxy.reraise(p_state text, p_message text, p_detail text, p_hint text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m text := regexp_replace(p_message, '^.*REMOTE ERROR: ', '');
    d text := regexp_replace(p_detail, '^Remote detail: ', '');
    h text := regexp_replace(p_hint, '^Remote hint: ', '');
BEGIN
    IF nullif(d, '') IS NULL AND nullif(h, '') IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = m;
    ELSIF nullif(h, '') IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = m, DETAIL = d;
    ELSIF nullif(d, '') IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = m, HINT = h;
    ELSE
        RAISE EXCEPTION USING ERRCODE = p_state, MESSAGE = m, DETAIL = d, HINT = h;
    END IF;
END $$;

-------------------------------------------------------------------------------
-- The calls to the shards (PL/Proxy).  Granted like the public functions
-- below: the role and identity on the shard come from the user mapping, not
-- from anything an argument says.
-------------------------------------------------------------------------------

CREATE FUNCTION extension_tokens_proxy.issue(p_shard integer, p_jwt_claims text, p_user_id text,
    p_name text, p_lifetime interval, p_claims jsonb, p_scopes text[], p_client text)
RETURNS SETOF public.extension_token_pair LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.issue(p_jwt_claims, p_user_id, p_name, p_lifetime, p_claims, p_scopes,
                                               p_client);
$$;

CREATE FUNCTION extension_tokens_proxy.list(p_shard integer, p_jwt_claims text, p_user_id text)
RETURNS SETOF public.extension_token_session LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.list(p_jwt_claims, p_user_id);
$$;

CREATE FUNCTION extension_tokens_proxy.revoke_user(p_shard integer, p_jwt_claims text, p_user_id text,
    p_except_session_id uuid)
RETURNS SETOF integer LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT extension_tokens_shard.revoke_user(p_jwt_claims, p_user_id, p_except_session_id);
$$;

CREATE FUNCTION extension_tokens_proxy.revoke_session(p_shard integer, p_jwt_claims text, p_session_id uuid)
RETURNS SETOF boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT extension_tokens_shard.revoke_session(p_jwt_claims, p_session_id);
$$;

CREATE FUNCTION extension_tokens_proxy.api_key_create(p_shard integer, p_jwt_claims text, p_user_id text,
    p_name text, p_scopes text[], p_expires_in interval, p_claims jsonb, p_client text)
RETURNS SETOF public.extension_token_api_key LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.api_key_create(p_jwt_claims, p_user_id, p_name, p_scopes,
                                                        p_expires_in, p_claims, p_client);
$$;

CREATE FUNCTION extension_tokens_proxy.api_key_list(p_shard integer, p_jwt_claims text, p_user_id text)
RETURNS SETOF public.extension_token_session LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.api_key_list(p_jwt_claims, p_user_id);
$$;

CREATE FUNCTION extension_tokens_proxy.stats()
RETURNS SETOF public.extension_token_statistics LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ALL;
    SELECT * FROM extension_tokens_shard.stats();
$$;

CREATE FUNCTION extension_tokens_proxy.cleanup(p_retention interval)
RETURNS SETOF bigint LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ALL;
    SELECT extension_tokens_shard.cleanup(p_retention);
$$;

CREATE FUNCTION extension_tokens_proxy.events(p_jwt_claims text, p_user_id text, p_since timestamptz)
RETURNS SETOF public.extension_token_event LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ALL;
    SELECT * FROM extension_tokens_shard.events(p_jwt_claims, p_user_id, p_since);
$$;

CREATE FUNCTION extension_tokens_proxy.events_by_token(p_jwt_claims text, p_token text)
RETURNS SETOF public.extension_token_event LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON extension_tokens_proxy.token_shard(p_token);
    SELECT * FROM extension_tokens_shard.events_by_token(p_jwt_claims, p_token);
$$;

CREATE FUNCTION extension_tokens_proxy.pre_request(p_shard integer, p_headers text, p_claims text)
RETURNS SETOF extension_tokens_proxy.pre_request_answer LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.pre_request(p_headers, p_claims);
$$;

-- Device authorization: see shard.sql for the move of an authorization to
-- its approver's shard.
CREATE FUNCTION extension_tokens_proxy.device_start(p_name text, p_scopes text[])
RETURNS SETOF public.extension_token_device LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ANY;
    SELECT * FROM public.extension_token_device_start(p_name, p_scopes);
$$;

CREATE FUNCTION extension_tokens_proxy.device_find(p_user_code text)
RETURNS SETOF integer LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ALL;
    SELECT extension_tokens_shard.device_find(p_user_code);
$$;

CREATE FUNCTION extension_tokens_proxy.device_withdraw(p_device_code text)
RETURNS SETOF boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ALL;
    SELECT extension_tokens_shard.device_withdraw(p_device_code);
$$;

CREATE FUNCTION extension_tokens_proxy.device_claim(p_shard integer, p_user_code text)
RETURNS SETOF extension_tokens_proxy.device LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.device_claim(p_user_code);
$$;

CREATE FUNCTION extension_tokens_proxy.device_place(p_shard integer, p_user_code text, p_device_hash bytea,
    p_name text, p_scopes text[], p_created_at timestamptz, p_expires_at timestamptz, p_poll_interval integer)
RETURNS SETOF boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT extension_tokens_shard.device_place(p_user_code, p_device_hash, p_name, p_scopes, p_created_at,
                                               p_expires_at, p_poll_interval);
$$;

CREATE FUNCTION extension_tokens_proxy.device_unclaim(p_shard integer, p_user_code text, p_device_hash bytea)
RETURNS SETOF boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT extension_tokens_shard.device_unclaim(p_user_code, p_device_hash);
$$;

CREATE FUNCTION extension_tokens_proxy.device_release(p_shard integer, p_device_hash bytea)
RETURNS SETOF boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT extension_tokens_shard.device_release(p_device_hash);
$$;

CREATE FUNCTION extension_tokens_proxy.device_decide(p_shard integer, p_jwt_claims text, p_approve boolean,
    p_user_code text, p_user_id text)
RETURNS SETOF boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT extension_tokens_shard.device_decide(p_jwt_claims, p_approve, p_user_code, p_user_id);
$$;

CREATE FUNCTION extension_tokens_proxy.device_poll_all(p_device_code text, p_client text)
RETURNS SETOF extension_tokens_proxy.poll_answer LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON ALL;
    SELECT * FROM extension_tokens_shard.device_poll(p_device_code, p_client);
$$;

CREATE FUNCTION extension_tokens_proxy.device_poll_one(p_shard integer, p_device_code text, p_client text)
RETURNS SETOF extension_tokens_proxy.poll_answer LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.device_poll(p_device_code, p_client);
$$;

-- Moves the pending authorization of a user code to partition p_shard (the
-- approving user's): claim where it lies, copy, then drop the tombstone.
-- Nothing to move (no such code, or another approver claimed it first) is
-- not an error: the decision on p_shard then finds nothing and counts a
-- failed attempt, as a single server does.  false: two shards have a
-- pending authorization of this user code (a start withdraws a duplicate,
-- but two starts can race): neither is moved, and the caller decides on no
-- code at all rather than on one of the two.
CREATE FUNCTION extension_tokens_proxy.device_move(p_shard integer, p_user_code text)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    holders integer[];
    d extension_tokens_proxy.device;
    placed boolean;
BEGIN
    holders := ARRAY(SELECT extension_tokens_proxy.device_find(p_user_code));
    IF cardinality(holders) = 0 THEN
        RETURN true;
    ELSIF cardinality(holders) > 1 THEN
        RETURN false;
    END IF;
    SELECT * INTO d FROM extension_tokens_proxy.device_claim(holders[1], p_user_code);
    IF d.device_hash IS NULL THEN
        RETURN true;
    END IF;
    BEGIN
        SELECT extension_tokens_proxy.device_place(p_shard, p_user_code, d.device_hash, d.name, d.scopes,
                                                   d.created_at, d.expires_at, d.poll_interval) INTO placed;
    EXCEPTION WHEN OTHERS THEN
        placed := NULL;
    END;
    IF placed IS NOT TRUE THEN
        PERFORM extension_tokens_proxy.device_unclaim(holders[1], p_user_code, d.device_hash);
        RAISE EXCEPTION 'could not move the device authorization to its approver''s shard'
            USING ERRCODE = '55000', HINT = 'Try again.';
    END IF;
    PERFORM extension_tokens_proxy.device_release(holders[1], d.device_hash);
    RETURN true;
END $$;

-- Approve (p_approve) or deny: the caller's checks and guess limit on the
-- user's shard first (a NULL code: nothing counted), then the authorization
-- moved there, then the extension's decision there, which counts a failed
-- attempt on that shard and nowhere else.
CREATE FUNCTION extension_tokens_proxy.device_decision(p_approve boolean, p_user_code text, p_user_id text)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    shard integer := extension_tokens_proxy.user_shard(p_user_id);
    claims text := current_setting('request.jwt.claims', true);
    code text := p_user_code;
    r boolean;
BEGIN
    PERFORM extension_tokens_proxy.device_decide(shard, claims, p_approve, NULL, p_user_id);
    IF p_user_code IS NOT NULL AND NOT extension_tokens_proxy.device_move(shard, p_user_code) THEN
        code := '';     -- decided on nothing: a failed attempt
    END IF;
    SELECT extension_tokens_proxy.device_decide(shard, claims, p_approve, code, p_user_id) INTO STRICT r;
    RETURN r;
END $$;

-------------------------------------------------------------------------------
-- The functions clients call: the extension's names, arguments and results.
-------------------------------------------------------------------------------

CREATE FUNCTION public.extension_token_validate(p_token text, p_required_scopes text[] DEFAULT NULL)
RETURNS public.extension_token_validation LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON extension_tokens_proxy.token_shard(p_token);
$$;

CREATE FUNCTION extension_tokens_proxy.refresh(p_refresh_token text, p_current_token text, p_client text)
RETURNS SETOF public.extension_token_pair LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON extension_tokens_proxy.token_shard(p_refresh_token);
    SELECT * FROM extension_tokens_shard.refresh(p_client, p_refresh_token, p_current_token);
$$;

CREATE FUNCTION public.extension_token_refresh(p_refresh_token text, p_current_token text DEFAULT NULL)
RETURNS public.extension_token_pair LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r public.extension_token_pair;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT * FROM extension_tokens_proxy.refresh(p_refresh_token, p_current_token, extension_tokens_proxy.client())
      INTO STRICT r;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_revoke(p_token text)
RETURNS boolean LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON extension_tokens_proxy.token_shard(p_token);
$$;

CREATE FUNCTION public.extension_token_jwks()
RETURNS jsonb LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON 0;
$$;

CREATE FUNCTION public.extension_token_issue(p_user_id text DEFAULT NULL, p_name text DEFAULT NULL,
    p_lifetime interval DEFAULT NULL, p_claims jsonb DEFAULT NULL, p_scopes text[] DEFAULT NULL)
RETURNS public.extension_token_pair LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r public.extension_token_pair;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT * FROM extension_tokens_proxy.issue(extension_tokens_proxy.user_shard(p_user_id),
        current_setting('request.jwt.claims', true), p_user_id, p_name, p_lifetime, p_claims, p_scopes,
        extension_tokens_proxy.client()) INTO STRICT r;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_list(p_user_id text DEFAULT NULL)
RETURNS SETOF public.extension_token_session LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN QUERY SELECT * FROM extension_tokens_proxy.list(extension_tokens_proxy.user_shard(p_user_id),
        current_setting('request.jwt.claims', true), p_user_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
END $$;

CREATE FUNCTION public.revoke_user_extension_tokens(p_user_id text DEFAULT NULL,
    p_except_session_id uuid DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r integer;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT extension_tokens_proxy.revoke_user(extension_tokens_proxy.user_shard(p_user_id),
        current_setting('request.jwt.claims', true), p_user_id, p_except_session_id) INTO STRICT r;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_revoke_session(p_session_id uuid)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r boolean;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT extension_tokens_proxy.revoke_session(extension_tokens_proxy.session_shard(p_session_id),
        current_setting('request.jwt.claims', true), p_session_id) INTO STRICT r;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_api_key_create(p_user_id text DEFAULT NULL, p_name text DEFAULT NULL,
    p_scopes text[] DEFAULT NULL, p_expires_in interval DEFAULT NULL, p_claims jsonb DEFAULT NULL)
RETURNS public.extension_token_api_key LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r public.extension_token_api_key;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT * FROM extension_tokens_proxy.api_key_create(extension_tokens_proxy.user_shard(p_user_id),
        current_setting('request.jwt.claims', true), p_user_id, p_name, p_scopes, p_expires_in, p_claims,
        extension_tokens_proxy.client()) INTO STRICT r;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_api_key_list(p_user_id text DEFAULT NULL)
RETURNS SETOF public.extension_token_session LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN QUERY SELECT * FROM extension_tokens_proxy.api_key_list(extension_tokens_proxy.user_shard(p_user_id),
        current_setting('request.jwt.claims', true), p_user_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
END $$;

-- Every shard's counters added up (stats_since: the oldest; the error
-- counts merged).
CREATE FUNCTION public.extension_token_stats()
RETURNS public.extension_token_statistics LANGUAGE sql VOLATILE AS $$
    WITH s AS MATERIALIZED (SELECT * FROM extension_tokens_proxy.stats())
    SELECT min(s.stats_since), bool_and(s.counters_available), sum(s.tokens_issued)::bigint,
           sum(s.tokens_issued_24h)::bigint, sum(s.sessions_active)::bigint,
           sum(s.sessions_revoked)::bigint, sum(s.sessions_expired)::bigint,
           sum(s.refreshes_succeeded)::bigint, sum(s.refreshes_failed)::bigint,
           sum(s.validations_succeeded)::bigint, sum(s.validations_failed)::bigint,
           (SELECT coalesce(jsonb_object_agg(e.k, e.n), '{}') FROM (
                SELECT x.key AS k, sum(x.value::bigint) AS n
                  FROM s t, jsonb_each_text(t.validations_failed_by_error) x GROUP BY x.key) e),
           max(s.measured_at), sum(s.validations_cached)::bigint,
           sum(s.validations_session_cached)::bigint
      FROM s
$$;

CREATE FUNCTION public.extension_tokens_cleanup(p_retention interval DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT coalesce(sum(n), 0)::bigint FROM extension_tokens_proxy.cleanup(p_retention) n $$;

CREATE FUNCTION public.extension_token_events(p_user_id text DEFAULT NULL, p_since timestamptz DEFAULT NULL)
RETURNS SETOF public.extension_token_event LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN QUERY SELECT * FROM extension_tokens_proxy.events(current_setting('request.jwt.claims', true),
                                                             p_user_id, p_since) e
                  ORDER BY e.at, e.event_id;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
END $$;

CREATE FUNCTION public.extension_token_events_by_token(p_token text)
RETURNS SETOF public.extension_token_event LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN QUERY SELECT * FROM extension_tokens_proxy.events_by_token(current_setting('request.jwt.claims', true),
                                                                      p_token);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
END $$;

-- PostgREST's db-pre-request, pointed at the proxy database: the request's
-- token is checked on its shard by the extension's own function (see
-- shard.sql), which refuses a revoked or unreadable one with PT401 as on a
-- single server.  The API key header is the one that
-- extension_tokens.api_key_header names here (preload the extension on the
-- proxy's server with the shards' settings; without it, x-api-key).  Not
-- SECURITY DEFINER: it sets the role for an API key.
CREATE FUNCTION public.extension_token_pre_request()
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    headers text := current_setting('request.headers', true);
    claims text := current_setting('request.jwt.claims', true);
    header text := coalesce(current_setting('extension_tokens.api_key_header', true), 'x-api-key');
    caller_role text := current_setting('role');
    shard integer := 0;
    key text;
    answer extension_tokens_proxy.pre_request_answer;
    st text; msg text; det text; hnt text;
BEGIN
    IF coalesce(headers, '') = '' AND coalesce(claims, '') = '' THEN
        RETURN;     -- not a request: left alone, as the extension leaves it
    END IF;
    BEGIN
        key := nullif(headers, '')::jsonb ->> nullif(header, '');
    EXCEPTION WHEN OTHERS THEN
        key := NULL;    -- unreadable headers: the shard's extension decides on them
    END;
    IF key IS NOT NULL THEN
        shard := extension_tokens_proxy.token_shard(key);
    ELSE
        BEGIN
            shard := extension_tokens_proxy.session_shard((nullif(claims, '')::jsonb ->> 'session_id')::uuid);
        EXCEPTION WHEN OTHERS THEN
            shard := 0;
        END;
    END IF;
    SELECT * INTO STRICT answer FROM extension_tokens_proxy.pre_request(shard, headers, claims);
    IF answer.need_role IS NOT NULL THEN
        -- an API key: asked again as the role it would switch to
        PERFORM pg_catalog.set_config('role', answer.need_role, true);
        SELECT * INTO STRICT answer FROM extension_tokens_proxy.pre_request(shard, headers, claims);
    END IF;
    IF answer.claims IS NOT NULL THEN
        PERFORM pg_catalog.set_config('request.jwt.claims', answer.claims, true);
        PERFORM pg_catalog.set_config('role', answer.role, true);
    ELSIF current_setting('role') IS DISTINCT FROM caller_role THEN
        PERFORM pg_catalog.set_config('role', caller_role, true);
    END IF;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
END $$;

-- Device authorization (RFC 8628).  A start whose user code is pending on
-- another shard too is withdrawn and made again (a single server's table
-- holds a user code once).
CREATE FUNCTION public.extension_token_device_start(p_name text DEFAULT NULL, p_scopes text[] DEFAULT NULL)
RETURNS public.extension_token_device LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r public.extension_token_device;
    st text; msg text; det text; hnt text;
BEGIN
    FOR attempt IN 1..3 LOOP
        SELECT * INTO STRICT r FROM extension_tokens_proxy.device_start(p_name, p_scopes);
        IF (SELECT count(*) FROM extension_tokens_proxy.device_find(r.user_code)) = 1 THEN
            RETURN r;
        END IF;
        PERFORM extension_tokens_proxy.device_withdraw(r.device_code);
    END LOOP;
    RAISE EXCEPTION 'could not start a device authorization with a user code of its own'
        USING ERRCODE = '55000', HINT = 'Try again.';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_device_approve(p_user_code text, p_user_id text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN extension_tokens_proxy.device_decision(true, p_user_code, p_user_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

CREATE FUNCTION public.extension_token_device_deny(p_user_code text)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    RETURN extension_tokens_proxy.device_decision(false, p_user_code, NULL);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

-- The poll asks every shard (a device code of the wrong length only
-- partition 0: any shard's answer is expired_token); the one that holds the
-- authorization answers, the others say expired_token.  The answer is the
-- pair, else the most telling refusal: an error other than PT400, then
-- access_denied, slow_down, authorization_pending, expired_token.
CREATE FUNCTION public.extension_token_device_poll(p_device_code text)
RETURNS public.extension_token_pair LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    answers extension_tokens_proxy.poll_answer[];
    a extension_tokens_proxy.poll_answer;
    best extension_tokens_proxy.poll_answer;
    best_rank integer := -1;
    rank integer;
    pair public.extension_token_pair;
    st text; msg text; det text; hnt text;
BEGIN
    IF octet_length(p_device_code) = 50 THEN
        answers := ARRAY(SELECT x FROM extension_tokens_proxy.device_poll_all(p_device_code,
                                                                             extension_tokens_proxy.client()) x);
    ELSE
        answers := ARRAY(SELECT x FROM extension_tokens_proxy.device_poll_one(0, p_device_code,
                                                                             extension_tokens_proxy.client()) x);
    END IF;
    FOREACH a IN ARRAY answers LOOP
        rank := CASE WHEN a.error_state IS NULL THEN 6
                     WHEN a.error_state <> 'PT400' THEN 5
                     WHEN a.error_detail = 'access_denied' THEN 4
                     WHEN a.error_detail = 'slow_down' THEN 3
                     WHEN a.error_detail = 'authorization_pending' THEN 2
                     ELSE 1 END;
        IF rank > best_rank THEN
            best := a;
            best_rank := rank;
        END IF;
    END LOOP;
    IF best_rank = 6 THEN
        pair := ROW(best.access_token, best.refresh_token, best.token_type, best.expires_in, best.expires_at,
                    best.refresh_expires_at, best.session_id, best.scopes, best.revoked_sessions);
        RETURN pair;
    END IF;
    PERFORM extension_tokens_proxy.reraise(best.error_state, best.error_message, best.error_detail, best.error_hint);
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM extension_tokens_proxy.reraise(st, msg, det, hnt);
    RETURN NULL;
END $$;

-------------------------------------------------------------------------------
-- Privileges, as the extension grants them (extension_tokens_grant_api_roles):
-- validate, refresh, revoke and jwks to everyone (the token is the
-- credential); issue, list, revoke_session, revoke_user and API keys to the
-- signed-in and the service role; statistics and cleanup to the service role.
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA extension_tokens_proxy FROM PUBLIC;
-- (refresh and reraise serve the anonymous refresh)
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.refresh(text, text, text), extension_tokens_proxy.client(),
    extension_tokens_proxy.reraise(text, text, text, text) TO PUBLIC;
REVOKE ALL ON FUNCTION public.extension_token_issue(text, text, interval, jsonb, text[]),
    public.extension_token_list(text), public.revoke_user_extension_tokens(text, uuid),
    public.extension_token_revoke_session(uuid),
    public.extension_token_api_key_create(text, text, text[], interval, jsonb),
    public.extension_token_api_key_list(text), public.extension_token_stats(),
    public.extension_tokens_cleanup(interval) FROM PUBLIC;
GRANT USAGE ON SCHEMA extension_tokens_proxy TO PUBLIC;
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.session_shard(uuid), extension_tokens_proxy.base62_shard(text),
    extension_tokens_proxy.token_shard(text), extension_tokens_proxy.user_shard(text)
    TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    extension_tokens_proxy.issue(integer, text, text, text, interval, jsonb, text[], text),
    extension_tokens_proxy.list(integer, text, text), extension_tokens_proxy.revoke_user(integer, text, text, uuid),
    extension_tokens_proxy.revoke_session(integer, text, uuid),
    extension_tokens_proxy.api_key_create(integer, text, text, text, text[], interval, jsonb, text),
    extension_tokens_proxy.api_key_list(integer, text, text),
    public.extension_token_issue(text, text, interval, jsonb, text[]),
    public.extension_token_list(text), public.revoke_user_extension_tokens(text, uuid),
    public.extension_token_revoke_session(uuid),
    public.extension_token_api_key_create(text, text, text[], interval, jsonb),
    public.extension_token_api_key_list(text)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.stats(), extension_tokens_proxy.cleanup(interval),
    public.extension_token_stats(), public.extension_tokens_cleanup(interval) TO service_role;
-- the pre-request, and the add-in's start and poll of a device authorization:
-- everyone (the device code is the credential)
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.pre_request(integer, text, text),
    extension_tokens_proxy.device_start(text, text[]), extension_tokens_proxy.device_find(text),
    extension_tokens_proxy.device_withdraw(text), extension_tokens_proxy.device_poll_all(text, text),
    extension_tokens_proxy.device_poll_one(integer, text, text) TO PUBLIC;
-- approving, denying and the audit trail: the signed-in and the service role
REVOKE ALL ON FUNCTION public.extension_token_device_approve(text, text), public.extension_token_device_deny(text),
    public.extension_token_events(text, timestamptz), public.extension_token_events_by_token(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    extension_tokens_proxy.device_claim(integer, text),
    extension_tokens_proxy.device_place(integer, text, bytea, text, text[], timestamptz, timestamptz, integer),
    extension_tokens_proxy.device_unclaim(integer, text, bytea), extension_tokens_proxy.device_release(integer, bytea),
    extension_tokens_proxy.device_decide(integer, text, boolean, text, text),
    extension_tokens_proxy.device_move(integer, text), extension_tokens_proxy.device_decision(boolean, text, text),
    extension_tokens_proxy.events(text, text, timestamptz),
    public.extension_token_device_approve(text, text), public.extension_token_device_deny(text),
    public.extension_token_events(text, timestamptz)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.events_by_token(text, text),
    public.extension_token_events_by_token(text) TO service_role;
