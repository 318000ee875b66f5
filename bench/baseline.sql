-- bench/baseline.sql: the pure-SQL baseline the benchmark measures the
-- extension against.  HS256 JWTs on pgcrypto (hmac, digest, gen_random_bytes),
-- written for this benchmark in the spirit of pgjwt but without its gaps:
-- the header's alg is checked (after the signature, so that nothing an
-- attacker sends is ever parsed as JSON), exp is required and must be an
-- integer, iss/aud/type/iat/nbf are checked, and a malformed token is an
-- answer (false), not an error.
--
-- Its storage is the classic design, which extension_tokens used up to 1.1:
-- one row per token handed out, keyed by the token's SHA-256, in
-- bench.sql_tokens, a table of the same shape as the 1.1 extension_tokens
-- (same columns, checks and indexes; user ids are text as in 1.2; no
-- sessions table, so no foreign key).  Validate looks the token's hash up
-- there; issue signs an access token, makes an opaque refresh token and
-- inserts the two hashed rows; refresh signs, marks the presented refresh
-- row exchanged (one UPDATE) and inserts the new pair (one INSERT).
--
-- The secret is a parameter (bytea: the bytes of extension_tokens.jwt_secret),
-- so that the baseline signs and verifies with exactly the extension's key.
-- Needs: CREATE EXTENSION pgcrypto; a superuser or the owner of schema bench.

CREATE SCHEMA IF NOT EXISTS bench;

-- The token table of extension_tokens 1.1, user_id as text.
CREATE TABLE IF NOT EXISTS bench.sql_tokens (
    token_hash      bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    token_type      text        NOT NULL CHECK (token_type IN ('access', 'refresh')),
    session_id      uuid        NOT NULL,
    user_id         text        NOT NULL,
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
CREATE INDEX IF NOT EXISTS sql_tokens_session_idx ON bench.sql_tokens (session_id);

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

-- Full validate: verify, then the allow-list lookup by SHA-256 in
-- bench.sql_tokens.
CREATE OR REPLACE FUNCTION bench.sql_validate(token text, secret bytea) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF bench.sql_verify(token, secret) IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM bench.sql_tokens t
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
    UPDATE bench.sql_tokens t SET last_used_at = now()
     WHERE t.token_hash = digest(token, 'sha256')
       AND t.token_type = 'access' AND t.revoked_at IS NULL AND t.expires_at > now()
    RETURNING true INTO found_it;
    RETURN coalesce(found_it, false);
END
$$;

-- An opaque refresh token: prefix, 256 random bits, a checksum.
CREATE OR REPLACE FUNCTION bench.sql_refresh_token() RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    body text := translate(bench.b64url(gen_random_bytes(32)), '-_', 'xy');
BEGIN
    RETURN 'ext_rt_' || body || substr(encode(digest(body, 'sha256'), 'hex'), 1, 8);
END
$$;

-- Issue: a signed access token and an opaque refresh token for a new
-- session, their SHA-256s inserted as two rows (one INSERT).
CREATE OR REPLACE FUNCTION bench.sql_issue(p_user_id text, secret bytea,
                                           OUT access_token text, OUT refresh_token text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    t_now timestamptz := now();
    iat bigint := extract(epoch FROM t_now)::bigint;
    sid uuid := gen_random_uuid();
BEGIN
    access_token := bench.sql_sign(json_build_object(
        'iss', 'extension_tokens', 'aud', 'extension', 'sub', p_user_id,
        'session_id', sid, 'jti', gen_random_uuid(), 'type', 'access',
        'iat', iat, 'nbf', iat, 'exp', iat + 30 * 86400), secret);
    refresh_token := bench.sql_refresh_token();
    INSERT INTO bench.sql_tokens (token_hash, token_type, session_id, user_id, name,
                                  created_at, expires_at, last_used_at)
    VALUES (digest(access_token, 'sha256'), 'access', sid, p_user_id, 'Extension Token',
            t_now, t_now + interval '30 days', t_now),
           (digest(refresh_token, 'sha256'), 'refresh', sid, p_user_id, 'Extension Token',
            t_now, t_now + interval '90 days', t_now);
END
$$;

-- Refresh: the presented refresh token's row is marked exchanged and linked
-- to its successor in one UPDATE, which finds it only if it is a live,
-- unexchanged refresh token (of two concurrent exchanges one wins); then the
-- new access token is signed for the same session and user, and the new
-- pair inserted (one INSERT, two rows).  A token that is not live raises
-- PT401, as the extension does.
CREATE OR REPLACE FUNCTION bench.sql_refresh(p_refresh_token text, secret bytea,
                                             OUT access_token text, OUT refresh_token text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    t_now timestamptz := now();
    iat bigint := extract(epoch FROM t_now)::bigint;
    new_hash bytea;
    sid uuid;
    uid text;
    tname text;
BEGIN
    refresh_token := bench.sql_refresh_token();
    new_hash := digest(refresh_token, 'sha256');
    UPDATE bench.sql_tokens t SET used_at = t_now, replaced_by = new_hash
     WHERE t.token_hash = digest(p_refresh_token, 'sha256') AND t.token_type = 'refresh'
       AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > t_now
    RETURNING t.session_id, t.user_id, t.name INTO sid, uid, tname;
    IF sid IS NULL THEN
        RAISE EXCEPTION 'invalid refresh token' USING ERRCODE = 'PT401';
    END IF;
    access_token := bench.sql_sign(json_build_object(
        'iss', 'extension_tokens', 'aud', 'extension', 'sub', uid,
        'session_id', sid, 'jti', gen_random_uuid(), 'type', 'access',
        'iat', iat, 'nbf', iat, 'exp', iat + 30 * 86400), secret);
    INSERT INTO bench.sql_tokens (token_hash, token_type, session_id, user_id, name,
                                  created_at, expires_at, last_used_at)
    VALUES (digest(access_token, 'sha256'), 'access', sid, uid, tname,
            t_now, t_now + interval '30 days', t_now),
           (new_hash, 'refresh', sid, uid, tname,
            t_now, t_now + interval '90 days', t_now);
END
$$;
