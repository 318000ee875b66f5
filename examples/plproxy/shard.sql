-- examples/plproxy/shard.sql: run in every shard database, after
-- CREATE EXTENSION extension_tokens (in schema public) and
-- ALTER DATABASE <shard> SET extension_tokens.shard_tag = <its partition number>.
--
-- The proxy database (examples/plproxy/proxy.sql) calls these functions
-- through PL/Proxy, whose user mappings log the proxy's caller in as
-- et_proxy_<role>: a caller who is `authenticated` on the proxy (PostgREST
-- switched to it) arrives as et_proxy_authenticated, and so on.  Each
-- login role is a member of the one role it stands for, as PostgREST's
-- authenticator is, and of nothing else:
--
--   CREATE ROLE et_proxy_anon LOGIN NOINHERIT PASSWORD '...';  GRANT anon TO et_proxy_anon;
--   CREATE ROLE et_proxy_authenticated LOGIN NOINHERIT PASSWORD '...';  GRANT authenticated TO et_proxy_authenticated;
--   CREATE ROLE et_proxy_service_role LOGIN NOINHERIT PASSWORD '...';  GRANT service_role TO et_proxy_service_role;
--
-- The functions below switch to that role and set the request's claims as
-- the proxy saw them (request.jwt.claims), then call the extension's own
-- function: its rules of who may act for whom apply on the shard unchanged
-- (claims are believed only for a NOLOGIN role, reached through SET ROLE by
-- a member).  Token-routed functions (validate, revoke) are called directly,
-- refresh with the request's client only: the token is the credential.
--
-- Run it as the extension's owner: the functions that move device
-- authorizations between shards and the administrators' stats and cleanup
-- are SECURITY DEFINER, with the rights of whoever created them.

CREATE SCHEMA extension_tokens_shard;
COMMENT ON SCHEMA extension_tokens_shard IS
'Entry points of the PL/Proxy proxy: the extension''s functions run as the proxy''s caller';

-- Becomes the proxy's caller for the rest of this (remote) transaction: the
-- role its login stands for (et_proxy_<role>), with the claims PostgREST
-- verified on the proxy.  Not SECURITY DEFINER: a role can only be switched
-- to by a member of it, and that is the whole of the check.
CREATE FUNCTION extension_tokens_shard.act_as(p_claims text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF session_user::text NOT LIKE 'et\_proxy\_%' THEN
        RAISE EXCEPTION 'only the proxy''s login roles call in here' USING ERRCODE = '42501';
    END IF;
    PERFORM pg_catalog.set_config('request.jwt.claims', coalesce(p_claims, ''), true);
    PERFORM pg_catalog.set_config('role', substr(session_user::text, 10), true);
END $$;

-- The client of PostgREST's request, for the session's user_agent and ip:
-- the user-agent and x-forwarded-for of the proxy's request.headers (no
-- other header comes here), as the extension reads them at issue, refresh
-- and the device poll.
CREATE FUNCTION extension_tokens_shard.client(p_client text)
RETURNS void LANGUAGE sql
AS $$ SELECT pg_catalog.set_config('request.headers', coalesce(p_client, ''), true) $$;

CREATE FUNCTION extension_tokens_shard.issue(p_jwt_claims text, p_user_id text, p_name text,
                                             p_lifetime interval, p_claims jsonb, p_scopes text[],
                                             p_client text)
RETURNS SETOF public.extension_token_pair LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.client(p_client);     -- (before act_as: then its role has no rights here)
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN QUERY SELECT * FROM public.extension_token_issue(p_user_id, p_name, p_lifetime, p_claims, p_scopes);
END $$;

CREATE FUNCTION extension_tokens_shard.list(p_jwt_claims text, p_user_id text)
RETURNS SETOF public.extension_token_session LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN QUERY SELECT * FROM public.extension_token_list(p_user_id);
END $$;

CREATE FUNCTION extension_tokens_shard.revoke_user(p_jwt_claims text, p_user_id text,
                                                   p_except_session_id uuid)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN public.revoke_user_extension_tokens(p_user_id, p_except_session_id);
END $$;

CREATE FUNCTION extension_tokens_shard.revoke_session(p_jwt_claims text, p_session_id uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN public.extension_token_revoke_session(p_session_id);
END $$;

CREATE FUNCTION extension_tokens_shard.api_key_create(p_jwt_claims text, p_user_id text,
                                                      p_name text, p_scopes text[], p_expires_in interval,
                                                      p_claims jsonb, p_client text)
RETURNS SETOF public.extension_token_api_key LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.client(p_client);     -- (before act_as: then its role has no rights here)
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN QUERY SELECT * FROM public.extension_token_api_key_create(p_user_id, p_name, p_scopes,
                                                                      p_expires_in, p_claims);
END $$;

CREATE FUNCTION extension_tokens_shard.api_key_list(p_jwt_claims text, p_user_id text)
RETURNS SETOF public.extension_token_session LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN QUERY SELECT * FROM public.extension_token_api_key_list(p_user_id);
END $$;

-- Refresh: the refresh token is the credential (no role of the caller's),
-- with the request's client.
CREATE FUNCTION extension_tokens_shard.refresh(p_client text, p_refresh_token text, p_current_token text)
RETURNS SETOF public.extension_token_pair LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.client(p_client);
    RETURN QUERY SELECT * FROM public.extension_token_refresh(p_refresh_token, p_current_token);
END $$;

-- Administration: only the administrators' login (et_proxy_service_role)
-- may call these; they run with the rights of this script's owner (the
-- extension's owner).
CREATE FUNCTION extension_tokens_shard.stats()
RETURNS SETOF public.extension_token_statistics LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM public.extension_token_stats() $$;

CREATE FUNCTION extension_tokens_shard.cleanup(p_retention interval)
RETURNS bigint LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT public.extension_tokens_cleanup(p_retention) $$;

-- The audit trail, as the caller: the events of a user are on that user's
-- shard; an administrator's whole trail is every shard's (the proxy asks all).
CREATE FUNCTION extension_tokens_shard.events(p_jwt_claims text, p_user_id text, p_since timestamptz)
RETURNS SETOF public.extension_token_event LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN QUERY SELECT * FROM public.extension_token_events(p_user_id, p_since);
END $$;

CREATE FUNCTION extension_tokens_shard.events_by_token(p_jwt_claims text, p_token text)
RETURNS SETOF public.extension_token_event LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    RETURN QUERY SELECT * FROM public.extension_token_events_by_token(p_token);
END $$;

-------------------------------------------------------------------------------
-- PostgREST's db-pre-request through the proxy.  PostgREST runs
-- extension_token_pre_request() in the proxy's transaction; the proxy's
-- version sends the request's headers and verified claims here, to the shard
-- of the request's token, where the extension's own function decides on them
-- as it would on a single server (and refuses with its own PT401).  What it
-- sets for an API key (the key's claims and extension_tokens.postgrest_role)
-- is answered back, for the proxy to set in its own transaction.
--
-- Switching to postgrest_role needs a login that is a member of it: a
-- request with an API key header that arrives as et_proxy_anon (PostgREST's
-- anonymous role) is answered with need_role instead, before anything is
-- checked, and the proxy calls again as that role (PostgREST's authenticator
-- is a member of it).
-------------------------------------------------------------------------------
CREATE TYPE extension_tokens_shard.pre_request_answer AS (need_role text, role text, claims text);

CREATE FUNCTION extension_tokens_shard.pre_request(p_headers text, p_claims text)
RETURNS SETOF extension_tokens_shard.pre_request_answer LANGUAGE plpgsql AS $$
DECLARE
    header text := current_setting('extension_tokens.api_key_header', true);
    key_role text := current_setting('extension_tokens.postgrest_role', true);
    answer extension_tokens_shard.pre_request_answer;
BEGIN
    PERFORM extension_tokens_shard.act_as(p_claims);
    PERFORM pg_catalog.set_config('request.headers', coalesce(p_headers, ''), true);
    IF coalesce(header, '') <> '' AND coalesce(key_role, '') <> ''
       AND strpos(coalesce(p_headers, ''), '"' || header || '"') > 0
       AND NOT pg_catalog.pg_has_role(session_user, key_role, 'MEMBER') THEN
        answer.need_role := key_role;
        RETURN NEXT answer;
        RETURN;
    END IF;
    PERFORM public.extension_token_pre_request();
    -- the extension sets the claims (and the role with them) for an API key only
    IF current_setting('request.jwt.claims', true) IS DISTINCT FROM coalesce(p_claims, '') THEN
        answer.role := current_setting('role');
        answer.claims := current_setting('request.jwt.claims', true);
    END IF;
    RETURN NEXT answer;
END $$;

-------------------------------------------------------------------------------
-- Device authorization (RFC 8628) across shards.
--
-- The proxy starts an authorization on any shard.  Its approval (or denial)
-- must happen on the approving user's shard: the user's guess limit is
-- counted there, by the extension, once per attempt, and the session that
-- the add-in's poll opens is made where the authorization lies.  So the
-- proxy first lets the extension check the caller on the user's shard
-- (approve with a NULL code: who may approve, and the guess limit, nothing
-- counted), then moves the authorization to that shard with the functions
-- below, then calls the extension's approve or deny there with the code:
-- a wrong code is counted there as on a single server, and nowhere else.
--
-- A move is a claim on the shard that has the pending authorization (its
-- user code hash replaced by a hash no code has: a tombstone, which the
-- add-in's poll still finds pending and which nobody can approve), a copy
-- onto the user's shard, then the tombstone's removal.  The claim is one
-- UPDATE of a pending row: of two approvers, one gets it.  At every moment
-- some shard has the authorization, so a poll never sees it vanish.
--
-- These functions read and write extension_token_devices by the SHA-256 of
-- the codes, as the extension does; SECURITY DEFINER, since the table is the
-- extension owner's alone.
-------------------------------------------------------------------------------
CREATE TYPE extension_tokens_shard.device AS (
    device_hash bytea, name text, scopes text[], created_at timestamptz, expires_at timestamptz,
    poll_interval integer);

-- A user code as a person types it, normalized as the extension normalizes it
-- (spaces, tabs and dashes dropped, a-z upper-cased, then exactly 8 letters of
-- its alphabet), hashed; NULL for anything else.
CREATE FUNCTION extension_tokens_shard.user_code_hash(p_user_code text)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN c.n OPERATOR(pg_catalog.~) '^[BCDFGHJKLMNPQRSTVWXZ]{8}$'
                THEN pg_catalog.sha256(pg_catalog.convert_to(c.n, 'UTF8')) END
      FROM (SELECT pg_catalog.translate(p_user_code, E'abcdefghijklmnopqrstuvwxyz -\t',
                                        'ABCDEFGHIJKLMNOPQRSTUVWXYZ') AS n
             WHERE pg_catalog.octet_length(p_user_code) OPERATOR(pg_catalog.<=) 64) c
$$;

-- The tombstone's user code hash: the SHA-256 of "moved" and the device
-- code's hash (32 bytes, as the table requires; no user code hashes to it).
CREATE FUNCTION extension_tokens_shard.moved_hash(p_device_hash bytea)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.sha256('\x6d6f766564'::bytea OPERATOR(pg_catalog.||) p_device_hash) $$;

-- This shard's tag, once for each pending, unexpired authorization of the
-- user code (the proxy asks every shard).
CREATE FUNCTION extension_tokens_shard.device_find(p_user_code text)
RETURNS SETOF integer LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.current_setting('extension_tokens.shard_tag')::integer
      FROM public.extension_token_devices d
     WHERE d.user_code_hash OPERATOR(pg_catalog.=) extension_tokens_shard.user_code_hash(p_user_code)
       AND d.status OPERATOR(pg_catalog.=) 'pending'
       AND d.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()
$$;

-- The claim: the pending authorization of the user code becomes a tombstone
-- here, and is answered for the copy (nothing, if another approver got it).
CREATE FUNCTION extension_tokens_shard.device_claim(p_user_code text)
RETURNS SETOF extension_tokens_shard.device LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE public.extension_token_devices d
       SET user_code_hash = extension_tokens_shard.moved_hash(d.device_hash)
     WHERE d.user_code_hash OPERATOR(pg_catalog.=) extension_tokens_shard.user_code_hash(p_user_code)
       AND d.status OPERATOR(pg_catalog.=) 'pending'
       AND d.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()
    RETURNING d.device_hash, d.name, d.scopes, d.created_at, d.expires_at, d.poll_interval
$$;

-- The copy, on the approving user's shard, pending under its user code (over
-- its own tombstone, if it lay here before).  A decided or expired
-- authorization here that had the same user code can never be approved: its
-- code is retired first, as the table holds a user code once.
CREATE FUNCTION extension_tokens_shard.device_place(p_user_code text, p_device_hash bytea, p_name text,
    p_scopes text[], p_created_at timestamptz, p_expires_at timestamptz, p_poll_interval integer)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h bytea := extension_tokens_shard.user_code_hash(p_user_code);
    placed boolean;
BEGIN
    IF h IS NULL THEN
        RETURN false;
    END IF;
    UPDATE public.extension_token_devices d
       SET user_code_hash = extension_tokens_shard.moved_hash(d.device_hash)
     WHERE d.user_code_hash OPERATOR(pg_catalog.=) h
       AND (d.status OPERATOR(pg_catalog.<>) 'pending' OR d.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now());
    INSERT INTO public.extension_token_devices AS d
           (device_hash, user_code_hash, name, scopes, created_at, expires_at, poll_interval)
    VALUES (p_device_hash, h, p_name, p_scopes, p_created_at, p_expires_at, p_poll_interval)
    ON CONFLICT (device_hash) DO UPDATE SET user_code_hash = excluded.user_code_hash
     WHERE d.user_code_hash OPERATOR(pg_catalog.=) extension_tokens_shard.moved_hash(d.device_hash)
       AND d.status OPERATOR(pg_catalog.=) 'pending';
    GET DIAGNOSTICS placed = ROW_COUNT;
    RETURN placed;
END $$;

-- The tombstone back to its user code (the copy failed).
CREATE FUNCTION extension_tokens_shard.device_unclaim(p_user_code text, p_device_hash bytea)
RETURNS boolean LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH u AS (
        UPDATE public.extension_token_devices d
           SET user_code_hash = extension_tokens_shard.user_code_hash(p_user_code)
         WHERE d.device_hash OPERATOR(pg_catalog.=) p_device_hash
           AND d.user_code_hash OPERATOR(pg_catalog.=) extension_tokens_shard.moved_hash(p_device_hash)
           AND d.status OPERATOR(pg_catalog.=) 'pending'
        RETURNING 1)
    SELECT EXISTS (SELECT FROM u)
$$;

-- The tombstone's removal, once the copy is placed.
CREATE FUNCTION extension_tokens_shard.device_release(p_device_hash bytea)
RETURNS boolean LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (
        DELETE FROM public.extension_token_devices d
         WHERE d.device_hash OPERATOR(pg_catalog.=) p_device_hash
           AND d.user_code_hash OPERATOR(pg_catalog.=) extension_tokens_shard.moved_hash(p_device_hash)
           AND d.status OPERATOR(pg_catalog.=) 'pending'
        RETURNING 1)
    SELECT EXISTS (SELECT FROM d)
$$;

-- A start whose user code another shard's pending authorization already has
-- (a single server's table holds a user code once) is withdrawn by its
-- device code, and the proxy starts again.
CREATE FUNCTION extension_tokens_shard.device_withdraw(p_device_code text)
RETURNS boolean LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (
        DELETE FROM public.extension_token_devices d
         WHERE d.device_hash OPERATOR(pg_catalog.=) pg_catalog.sha256(pg_catalog.convert_to(p_device_code, 'UTF8'))
           AND d.status OPERATOR(pg_catalog.=) 'pending'
        RETURNING 1)
    SELECT EXISTS (SELECT FROM d)
$$;

-- Approve or deny as the caller, by the extension's own functions (a NULL
-- code: its checks of the caller and of the guess limit, nothing counted).
CREATE FUNCTION extension_tokens_shard.device_decide(p_jwt_claims text, p_approve boolean,
                                                     p_user_code text, p_user_id text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM extension_tokens_shard.act_as(p_jwt_claims);
    IF p_approve THEN
        RETURN public.extension_token_device_approve(p_user_code, p_user_id);
    END IF;
    RETURN public.extension_token_device_deny(p_user_code);
END $$;

-- The add-in's poll, by the extension's function, with its refusal as data:
-- the proxy asks every shard (the one that has the authorization answers,
-- the others say expired_token) and answers as a single server would.
CREATE TYPE extension_tokens_shard.poll_answer AS (
    access_token text, refresh_token text, token_type text, expires_in integer,
    expires_at timestamptz, refresh_expires_at timestamptz, session_id uuid, scopes text[],
    revoked_sessions integer, error_state text, error_message text, error_detail text, error_hint text);

CREATE FUNCTION extension_tokens_shard.device_poll(p_device_code text, p_client text)
RETURNS SETOF extension_tokens_shard.poll_answer LANGUAGE plpgsql AS $$
DECLARE
    p public.extension_token_pair;
    answer extension_tokens_shard.poll_answer;
    st text; msg text; det text; hnt text;
BEGIN
    PERFORM extension_tokens_shard.client(p_client);
    BEGIN
        p := public.extension_token_device_poll(p_device_code);
        answer := ROW(p.access_token, p.refresh_token, p.token_type, p.expires_in, p.expires_at,
                      p.refresh_expires_at, p.session_id, p.scopes, p.revoked_sessions,
                      NULL, NULL, NULL, NULL);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                                hnt = PG_EXCEPTION_HINT;
        answer.error_state := st;
        answer.error_message := msg;
        answer.error_detail := det;
        answer.error_hint := hnt;
    END;
    RETURN NEXT answer;
END $$;

-- Only the proxy's login roles may call in (it is not PUBLIC's business).
REVOKE ALL ON SCHEMA extension_tokens_shard FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA extension_tokens_shard FROM PUBLIC;
GRANT USAGE ON SCHEMA extension_tokens_shard TO et_proxy_anon, et_proxy_authenticated, et_proxy_service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_shard.act_as(text), extension_tokens_shard.client(text),
    extension_tokens_shard.issue(text, text, text, interval, jsonb, text[], text),
    extension_tokens_shard.refresh(text, text, text),
    extension_tokens_shard.list(text, text), extension_tokens_shard.revoke_user(text, text, uuid),
    extension_tokens_shard.revoke_session(text, uuid),
    extension_tokens_shard.api_key_create(text, text, text, text[], interval, jsonb, text),
    extension_tokens_shard.api_key_list(text, text),
    extension_tokens_shard.events(text, text, timestamptz),
    extension_tokens_shard.pre_request(text, text),
    extension_tokens_shard.device_find(text), extension_tokens_shard.device_withdraw(text),
    extension_tokens_shard.device_poll(text, text)
    TO et_proxy_anon, et_proxy_authenticated, et_proxy_service_role;
-- approving and denying: the signed-in and the service role
GRANT EXECUTE ON FUNCTION extension_tokens_shard.device_claim(text),
    extension_tokens_shard.device_place(text, bytea, text, text[], timestamptz, timestamptz, integer),
    extension_tokens_shard.device_unclaim(text, bytea), extension_tokens_shard.device_release(bytea),
    extension_tokens_shard.device_decide(text, boolean, text, text)
    TO et_proxy_authenticated, et_proxy_service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_shard.stats(), extension_tokens_shard.cleanup(interval),
    extension_tokens_shard.events_by_token(text, text) TO et_proxy_service_role;
