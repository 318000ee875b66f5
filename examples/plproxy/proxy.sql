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
--   - stats and cleanup: on every shard, added up; jwks: on partition 0.
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
    measured_at timestamptz, validations_cached bigint);
CREATE TYPE public.extension_token_api_key AS (
    api_key text, key_id uuid, name text, scopes text[], expires_at timestamptz);

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
    p_name text, p_lifetime interval, p_claims jsonb, p_scopes text[])
RETURNS SETOF public.extension_token_pair LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.issue(p_jwt_claims, p_user_id, p_name, p_lifetime, p_claims, p_scopes);
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
    p_name text, p_scopes text[], p_expires_in interval, p_claims jsonb)
RETURNS SETOF public.extension_token_api_key LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON p_shard;
    SELECT * FROM extension_tokens_shard.api_key_create(p_jwt_claims, p_user_id, p_name, p_scopes,
                                                        p_expires_in, p_claims);
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

-------------------------------------------------------------------------------
-- The functions clients call: the extension's names, arguments and results.
-------------------------------------------------------------------------------

CREATE FUNCTION public.extension_token_validate(p_token text, p_required_scopes text[] DEFAULT NULL)
RETURNS public.extension_token_validation LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON extension_tokens_proxy.token_shard(p_token);
$$;

CREATE FUNCTION extension_tokens_proxy.refresh(p_refresh_token text, p_current_token text)
RETURNS SETOF public.extension_token_pair LANGUAGE plproxy AS $$
    CLUSTER 'extension_tokens';
    RUN ON extension_tokens_proxy.token_shard(p_refresh_token);
    SELECT * FROM public.extension_token_refresh(p_refresh_token, p_current_token);
$$;

CREATE FUNCTION public.extension_token_refresh(p_refresh_token text, p_current_token text DEFAULT NULL)
RETURNS public.extension_token_pair LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r public.extension_token_pair;
    st text; msg text; det text; hnt text;
BEGIN
    SELECT * FROM extension_tokens_proxy.refresh(p_refresh_token, p_current_token) INTO STRICT r;
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
        current_setting('request.jwt.claims', true), p_user_id, p_name, p_lifetime, p_claims, p_scopes) INTO STRICT r;
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
        current_setting('request.jwt.claims', true), p_user_id, p_name, p_scopes, p_expires_in, p_claims) INTO STRICT r;
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
           max(s.measured_at), sum(s.validations_cached)::bigint
      FROM s
$$;

CREATE FUNCTION public.extension_tokens_cleanup(p_retention interval DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT coalesce(sum(n), 0)::bigint FROM extension_tokens_proxy.cleanup(p_retention) n $$;

-------------------------------------------------------------------------------
-- Privileges, as the extension grants them (extension_tokens_grant_api_roles):
-- validate, refresh, revoke and jwks to everyone (the token is the
-- credential); issue, list, revoke_session, revoke_user and API keys to the
-- signed-in and the service role; statistics and cleanup to the service role.
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA extension_tokens_proxy FROM PUBLIC;
-- (refresh and reraise serve the anonymous refresh)
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.refresh(text, text),
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
    extension_tokens_proxy.issue(integer, text, text, text, interval, jsonb, text[]),
    extension_tokens_proxy.list(integer, text, text), extension_tokens_proxy.revoke_user(integer, text, text, uuid),
    extension_tokens_proxy.revoke_session(integer, text, uuid),
    extension_tokens_proxy.api_key_create(integer, text, text, text, text[], interval, jsonb),
    extension_tokens_proxy.api_key_list(integer, text, text),
    public.extension_token_issue(text, text, interval, jsonb, text[]),
    public.extension_token_list(text), public.revoke_user_extension_tokens(text, uuid),
    public.extension_token_revoke_session(uuid),
    public.extension_token_api_key_create(text, text, text[], interval, jsonb),
    public.extension_token_api_key_list(text)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_proxy.stats(), extension_tokens_proxy.cleanup(interval),
    public.extension_token_stats(), public.extension_tokens_cleanup(interval) TO service_role;
