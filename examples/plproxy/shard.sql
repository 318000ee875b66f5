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
-- a member).  Token-routed functions (validate, refresh, revoke) are called
-- directly: the token is the credential.

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

CREATE FUNCTION extension_tokens_shard.issue(p_jwt_claims text, p_user_id text, p_name text,
                                             p_lifetime interval, p_claims jsonb, p_scopes text[])
RETURNS SETOF public.extension_token_pair LANGUAGE plpgsql AS $$
BEGIN
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
                                                      p_claims jsonb)
RETURNS SETOF public.extension_token_api_key LANGUAGE plpgsql AS $$
BEGIN
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

-- Only the proxy's login roles may call in (it is not PUBLIC's business).
REVOKE ALL ON SCHEMA extension_tokens_shard FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA extension_tokens_shard FROM PUBLIC;
GRANT USAGE ON SCHEMA extension_tokens_shard TO et_proxy_anon, et_proxy_authenticated, et_proxy_service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_shard.act_as(text), extension_tokens_shard.issue(text, text, text, interval, jsonb, text[]),
    extension_tokens_shard.list(text, text), extension_tokens_shard.revoke_user(text, text, uuid),
    extension_tokens_shard.revoke_session(text, uuid),
    extension_tokens_shard.api_key_create(text, text, text, text[], interval, jsonb),
    extension_tokens_shard.api_key_list(text, text)
    TO et_proxy_anon, et_proxy_authenticated, et_proxy_service_role;
GRANT EXECUTE ON FUNCTION extension_tokens_shard.stats(), extension_tokens_shard.cleanup(interval) TO et_proxy_service_role;
