-- bench/baseline.sql: the pure-SQL baseline the benchmark measures the
-- extension against.  HS256 JWTs on pgcrypto (hmac, digest, gen_random_bytes),
-- written for this benchmark in the spirit of pgjwt but without its gaps:
-- the header's alg is checked (after the signature, so that nothing an
-- attacker sends is ever parsed as JSON), exp is required and must be an
-- integer, iss/aud/type/iat/nbf are checked, and a malformed token is an
-- answer (false), not an error.  Then it does what the extension does with a
-- verified token: SHA-256 of the token, a lookup by token_hash in
-- extension_tokens, and the revoked/expired checks.
--
-- The secret is a parameter (bytea: the bytes of extension_tokens.jwt_secret),
-- so that the baseline signs and verifies with exactly the extension's key.
-- Needs: CREATE EXTENSION pgcrypto; CREATE EXTENSION extension_tokens; a
-- superuser (the extension's tables are its owner's only).

CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE FUNCTION bench.b64url(bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT rtrim(translate(encode($1, 'base64'), E'+/\n', '-_'), '=') $$;

CREATE OR REPLACE FUNCTION bench.b64url_decode(text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT decode(translate($1, '-_', '+/') || repeat('=', (4 - length($1) % 4) % 4), 'base64') $$;

-- HS256 compact JWS over a JSON payload.
CREATE OR REPLACE FUNCTION bench.sql_sign(payload json, secret bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    signing_input text := bench.b64url(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8'))
                          || '.' || bench.b64url(convert_to(payload::text, 'UTF8'));
BEGIN
    RETURN signing_input || '.' ||
           bench.b64url(hmac(convert_to(signing_input, 'UTF8'), secret, 'sha256'));
END
$$;

-- Verify only: the signature, the header, the claims.  Returns the payload of
-- a good access token, NULL for anything else; never raises for bad input.
CREATE OR REPLACE FUNCTION bench.sql_verify(token text, secret bytea,
                                            issuer text DEFAULT 'extension_tokens',
                                            audience text DEFAULT 'extension',
                                            skew integer DEFAULT 30)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    parts text[];
    header jsonb;
    payload jsonb;
    now_s numeric := extract(epoch FROM now());
BEGIN
    IF token IS NULL OR length(token) > 8192
       OR token !~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$' THEN
        RETURN NULL;
    END IF;
    parts := string_to_array(token, '.');
    -- The signature first: only a token signed with our key is ever decoded.
    IF bench.b64url(hmac(convert_to(parts[1] || '.' || parts[2], 'UTF8'), secret, 'sha256'))
       IS DISTINCT FROM parts[3] THEN
        RETURN NULL;
    END IF;
    header := convert_from(bench.b64url_decode(parts[1]), 'UTF8')::jsonb;
    IF jsonb_typeof(header) <> 'object' OR header->>'alg' IS DISTINCT FROM 'HS256'
       OR (header ? 'typ' AND header->>'typ' <> 'JWT') OR header ? 'crit' THEN
        RETURN NULL;
    END IF;
    payload := convert_from(bench.b64url_decode(parts[2]), 'UTF8')::jsonb;
    IF jsonb_typeof(payload) <> 'object'
       OR jsonb_typeof(payload->'exp') IS DISTINCT FROM 'number'
       OR (payload->>'exp') !~ '^-?[0-9]+$'
       OR (payload ? 'iat' AND (payload->>'iat') !~ '^-?[0-9]+$')
       OR (payload ? 'nbf' AND (payload->>'nbf') !~ '^-?[0-9]+$')
       OR payload->>'iss' IS DISTINCT FROM issuer
       OR NOT (payload->>'aud' = audience
               OR (jsonb_typeof(payload->'aud') = 'array' AND payload->'aud' ? audience))
       OR payload->>'type' IS DISTINCT FROM 'access'
       OR (payload->>'exp')::numeric + skew <= now_s
       OR (payload->>'nbf')::numeric - skew > now_s
       OR (payload->>'iat')::numeric - skew > now_s THEN
        RETURN NULL;
    END IF;
    RETURN payload;
END
$$;

-- Full validate: verify, then the allow-list lookup by SHA-256.
CREATE OR REPLACE FUNCTION bench.sql_validate(token text, secret bytea) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF bench.sql_verify(token, secret) IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM extension_tokens t
                   WHERE t.token_hash = digest(token, 'sha256')
                     AND t.token_type = 'access' AND t.revoked_at IS NULL
                     AND t.expires_at > now());
END
$$;

-- Full validate, and record the use on the token's row every time.
CREATE OR REPLACE FUNCTION bench.sql_validate_touch(token text, secret bytea) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    found_it boolean;
BEGIN
    IF bench.sql_verify(token, secret) IS NULL THEN
        RETURN false;
    END IF;
    UPDATE extension_tokens t SET last_used_at = now()
     WHERE t.token_hash = digest(token, 'sha256')
       AND t.token_type = 'access' AND t.revoked_at IS NULL AND t.expires_at > now()
    RETURNING true INTO found_it;
    RETURN coalesce(found_it, false);
END
$$;

-- Issue: a session for the user, a signed access token and an opaque refresh
-- token (prefix, 256 random bits, a checksum), their SHA-256s stored in the
-- extension's own tables as the extension stores them.
CREATE OR REPLACE FUNCTION bench.sql_issue(p_user_id uuid, secret bytea,
                                           OUT access_token text, OUT refresh_token text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    t_now timestamptz := now();
    iat bigint := extract(epoch FROM t_now)::bigint;
    sid uuid := gen_random_uuid();
    body text;
BEGIN
    access_token := bench.sql_sign(json_build_object(
        'iss', 'extension_tokens', 'aud', 'extension', 'sub', p_user_id::text,
        'session_id', sid, 'jti', gen_random_uuid(), 'type', 'access',
        'iat', iat, 'nbf', iat, 'exp', iat + 30 * 86400), secret);
    body := translate(bench.b64url(gen_random_bytes(32)), '-_', 'xy');
    refresh_token := 'ext_rt_' || body || substr(encode(digest(body, 'sha256'), 'hex'), 1, 8);
    INSERT INTO extension_token_users AS u (user_id) VALUES (p_user_id)
        ON CONFLICT (user_id) DO UPDATE SET issue_log = '{}';
    INSERT INTO extension_token_sessions (session_id, user_id, name, access_lifetime,
                                          created_at, last_used_at, expires_at, refresh_expires_at)
    VALUES (sid, p_user_id, 'Extension Token', '30 days', t_now, t_now,
            t_now + interval '30 days', t_now + interval '90 days');
    INSERT INTO extension_tokens (token_hash, token_type, session_id, user_id, name,
                                  created_at, expires_at, last_used_at)
    VALUES (digest(access_token, 'sha256'), 'access', sid, p_user_id, 'Extension Token',
            t_now, t_now + interval '30 days', t_now),
           (digest(refresh_token, 'sha256'), 'refresh', sid, p_user_id, 'Extension Token',
            t_now, t_now + interval '90 days', t_now);
END
$$;
