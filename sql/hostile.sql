-- hostile: the hostile-input corpus, grouped as the validator's rules
-- (src/token.c) go (syntax, header, signature, claims and types, encoding, size,
-- type confusion, replay, privileges, settings).  Each case states what it
-- must get; the listing shows what it got, and the last queries count the
-- cases per group and list any case whose outcome differs (none may).
-- Tokens are built here with pgcrypto's HMAC (regress_sign) under the
-- suite's secret unless a case says otherwise.  At the end the server has
-- not restarted.
SELECT pg_postmaster_start_time() AS started \gset
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SET extension_tokens.refresh_retry_window = 0;
SELECT access_token AS good, refresh_token AS good_refresh FROM extension_token_issue('60000000-0000-4000-8000-000000000001') \gset
SELECT access_token AS rotated, refresh_token AS used_refresh FROM extension_token_issue('60000000-0000-4000-8000-000000000002') \gset
SELECT refresh_token AS reused_successor FROM extension_token_refresh(:'used_refresh') \gset
SELECT access_token AS revoked, refresh_token AS revoked_refresh FROM extension_token_issue('60000000-0000-4000-8000-000000000003') \gset
SELECT extension_token_revoke(:'revoked');

-- Runs a statement as a role: 'ok' or the SQLSTATE it failed with.
CREATE FUNCTION regress_as(p_role text, p_stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text;
BEGIN
  EXECUTE format('SET LOCAL ROLE %I', p_role);
  EXECUTE p_stmt;
  RESET ROLE;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
  RETURN st;
END $$;
-- A JWS over raw payload bytes (for payloads that are not valid UTF-8).
CREATE FUNCTION regress_sign_bytes(payload bytea) RETURNS text LANGUAGE sql AS $$
  SELECT h || '.' || p || '.' || regress_b64url(hmac(convert_to(h || '.' || p, 'UTF8'),
         'regress-secret-0123456789abcdef0123456789', 'sha256'))
  FROM (SELECT regress_b64url('{"alg":"HS256","typ":"JWT"}') AS h, regress_b64url(payload) AS p) s
$$;

-- Token cases: validated; the outcome is the error code, or 'valid'.
CREATE TEMP TABLE corpus (n serial, grp text, name text, token text, expected text);
INSERT INTO corpus (grp, name, token, expected) VALUES
  -- syntax
  ('syntax', 'empty string', '', 'missing'),
  ('syntax', 'NULL', NULL, 'missing'),
  ('syntax', 'one word', 'garbage', 'malformed'),
  ('syntax', 'two parts', 'a.b', 'malformed'),
  ('syntax', 'four parts', 'a.b.c.d', 'malformed'),
  ('syntax', 'only dots', '..', 'malformed'),
  ('syntax', 'empty header', '.' || split_part(:'good', '.', 2) || '.' || split_part(:'good', '.', 3), 'malformed'),
  ('syntax', 'empty payload', split_part(:'good', '.', 1) || '..' || split_part(:'good', '.', 3), 'malformed'),
  ('syntax', 'base64 padding', :'good' || '=', 'malformed'),
  ('syntax', 'leading space', ' ' || :'good', 'malformed'),
  ('syntax', 'trailing newline', :'good' || E'\n', 'malformed'),
  ('syntax', 'standard base64 "/"', overlay(:'good' placing '/' from length(:'good') - 5 for 1), 'malformed'),
  ('syntax', 'non-ASCII letter', 'é' || substr(:'good', 2), 'malformed'),
  ('syntax', 'length 1 mod 4 segment', 'YR.YQ.YQ', 'malformed'),
  -- size
  ('size', '8 KiB + 1 of letters', repeat('A', 8193), 'malformed'),
  ('size', '16 MiB of letters', repeat('A', 16 * 1024 * 1024), 'malformed'),
  ('size', '16 MiB of segments', repeat('eyJ.', 4 * 1024 * 1024), 'malformed'),
  ('size', 'a good token + 16 MiB', :'good' || repeat('A', 16 * 1024 * 1024), 'malformed'),
  ('size', 'signed, just under the cap', regress_sign('{"alg":"HS256"}', regress_claims(jsonb_build_object('pad', repeat('p', 5800)))), 'not_found'),
  ('size', 'signed, just over the cap', regress_sign('{"alg":"HS256"}', regress_claims(jsonb_build_object('pad', repeat('p', 6300)))), 'malformed'),
  -- header
  ('header', 'alg none, empty signature', regress_b64url('{"alg":"none"}') || '.' || regress_b64url(convert_to(regress_claims(), 'UTF8')) || '.', 'unsupported_algorithm'),
  ('header', 'alg none, signed', regress_sign('{"alg":"none"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg None', regress_sign('{"alg":"None"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg NONE', regress_sign('{"alg":"NONE"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg nOnE with typ', regress_sign('{"alg":"nOnE","typ":"JWT"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg hs256 (case)', regress_sign('{"alg":"hs256"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg "HS256 " (space)', regress_sign('{"alg":"HS256 "}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg fullwidth look-alike', regress_sign('{"alg":"ＨＳ256"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg RS256', regress_sign('{"alg":"RS256"}', regress_claims()), 'unsupported_algorithm'),
  ('header', 'alg missing', regress_sign('{"typ":"JWT"}', regress_claims()), 'malformed'),
  ('header', 'alg as an array', regress_sign('{"alg":["HS256"]}', regress_claims()), 'malformed'),
  ('header', 'alg with NUL escape', regress_sign('{"alg":"HS256\u0000"}', regress_claims()), 'malformed'),
  ('header', 'duplicate alg', regress_sign('{"alg":"none","alg":"HS256"}', regress_claims()), 'malformed'),
  ('header', 'typ at+jwt', regress_sign('{"alg":"HS256","typ":"at+jwt"}', regress_claims()), 'malformed'),
  ('header', 'crit present', regress_sign('{"alg":"HS256","crit":["exp"]}', regress_claims()), 'malformed'),
  ('header', 'header is an array', regress_sign('["HS256"]', regress_claims()), 'malformed'),
  ('header', 'kid naming no key', regress_sign('{"alg":"HS256","kid":"../../etc/passwd"}', regress_claims()), 'invalid_signature'),
  ('header', 'jku, jwk, x5u ignored', regress_sign('{"alg":"HS256","jku":"http://evil.example/","jwk":{"k":"AA"},"x5u":"http://evil.example/"}', regress_claims()), 'not_found'),
  -- signature
  ('signature', 'right secret under HS384', regress_sign('{"alg":"HS384"}', regress_claims(), 'sha384'), 'unsupported_algorithm'),
  ('signature', 'right secret under HS512', regress_sign('{"alg":"HS512"}', regress_claims(), 'sha512'), 'unsupported_algorithm'),
  ('signature', 'HS256 header, SHA-384 MAC', regress_sign('{"alg":"HS256"}', regress_claims(), 'sha384'), 'invalid_signature'),
  ('signature', 'HS256 header, MD5 MAC', regress_sign('{"alg":"HS256"}', regress_claims(), 'md5'), 'invalid_signature'),
  ('signature', 'another key', regress_sign('{"alg":"HS256"}', regress_claims(), 'sha256', 'another-secret-of-sufficient-length-0123'), 'invalid_signature'),
  ('signature', 'empty key', regress_sign('{"alg":"HS256"}', regress_claims(), 'sha256', ''), 'invalid_signature'),
  ('signature', 'one character changed', left(:'good', -10) || CASE substr(:'good', length(:'good') - 9, 1) WHEN 'A' THEN 'B' ELSE 'A' END || right(:'good', 9), 'invalid_signature'),
  ('signature', 'cut to 30 bytes', left(:'good', -3), 'invalid_signature'),
  ('signature', 'one character appended', :'good' || 'A', 'invalid_signature'),
  ('signature', 'non-canonical last character', left(:'good', -1) || 'B', 'malformed'),
  ('signature', 'HS256, empty signature', regress_b64url('{"alg":"HS256"}') || '.' || regress_b64url(convert_to(regress_claims(), 'UTF8')) || '.', 'invalid_signature'),
  ('signature', 'our payload swapped for another user''s', split_part(:'good', '.', 1) || '.' || regress_b64url(convert_to(regress_claims('{"sub":"60000000-0000-4000-8000-0000000000ff"}'), 'UTF8')) || '.' || split_part(:'good', '.', 3), 'invalid_signature'),
  -- claims and types
  ('claims and types', 'exp as a string', regress_sign('{"alg":"HS256"}', regress_claims('{"exp":"99999999999"}')), 'malformed'),
  ('claims and types', 'exp as a real', regress_sign('{"alg":"HS256"}', regress_claims('{"exp":99999999999.5}')), 'malformed'),
  ('claims and types', 'exp as a boolean', regress_sign('{"alg":"HS256"}', regress_claims('{"exp":true}')), 'malformed'),
  ('claims and types', 'exp missing', regress_sign('{"alg":"HS256"}', regress_claims('{"exp":null}')), 'malformed'),
  ('claims and types', 'exp beyond int64', regress_sign_bytes(convert_to(replace(regress_claims('{"exp":0}'), '"exp": 0', '"exp": 1180591620717411303424'), 'UTF8')), 'malformed'),
  ('claims and types', 'exp 1e400', regress_sign_bytes(convert_to(replace(regress_claims('{"exp":0}'), '"exp": 0', '"exp": 1e400'), 'UTF8')), 'malformed'),
  ('claims and types', 'exp in the past', regress_sign('{"alg":"HS256"}', regress_claims('{"exp":1}')), 'expired'),
  ('claims and types', 'exp -1', regress_sign('{"alg":"HS256"}', regress_claims('{"exp":-1}')), 'expired'),
  ('claims and types', 'nbf in the future', regress_sign('{"alg":"HS256"}', regress_claims('{"nbf":99999999999}')), 'not_yet_valid'),
  ('claims and types', 'nbf as a string', regress_sign('{"alg":"HS256"}', regress_claims('{"nbf":"1"}')), 'malformed'),
  ('claims and types', 'iat in the future', regress_sign('{"alg":"HS256"}', regress_claims('{"iat":99999999999}')), 'not_yet_valid'),
  ('claims and types', 'iat missing', regress_sign('{"alg":"HS256"}', regress_claims('{"iat":null}')), 'malformed'),
  ('claims and types', 'iss of someone else', regress_sign('{"alg":"HS256"}', regress_claims('{"iss":"someone-else"}')), 'wrong_issuer'),
  ('claims and types', 'iss missing', regress_sign('{"alg":"HS256"}', regress_claims('{"iss":null}')), 'wrong_issuer'),
  ('claims and types', 'iss as an array', regress_sign('{"alg":"HS256"}', regress_claims('{"iss":["extension_tokens"]}')), 'wrong_issuer'),
  ('claims and types', 'aud of someone else', regress_sign('{"alg":"HS256"}', regress_claims('{"aud":"other"}')), 'wrong_audience'),
  ('claims and types', 'aud as a number', regress_sign('{"alg":"HS256"}', regress_claims('{"aud":1}')), 'wrong_audience'),
  ('claims and types', 'aud array with ours', regress_sign('{"alg":"HS256"}', regress_claims('{"aud":["other","extension"]}')), 'not_found'),
  ('claims and types', 'sub missing', regress_sign('{"alg":"HS256"}', regress_claims('{"sub":null}')), 'malformed'),
  ('claims and types', 'sub as a number', regress_sign('{"alg":"HS256"}', regress_claims('{"sub":42}')), 'malformed'),
  ('claims and types', 'session_id not a uuid', regress_sign('{"alg":"HS256"}', regress_claims('{"session_id":"nope"}')), 'malformed'),
  ('claims and types', 'jti missing', regress_sign('{"alg":"HS256"}', regress_claims('{"jti":null}')), 'malformed'),
  -- encoding
  ('encoding', 'invalid UTF-8 byte', regress_sign_bytes('\x7b2278223a22ff227d'), 'malformed'),
  ('encoding', 'overlong UTF-8', regress_sign_bytes('\x7b22737562223a22c0af227d'), 'malformed'),
  ('encoding', 'lone surrogate escape', regress_sign_bytes(convert_to('{"sub": "\ud800"}', 'UTF8')), 'malformed'),
  ('encoding', 'NUL escape in a claim', regress_sign_bytes(convert_to(replace(regress_claims('{"sub":"NUL"}'), '"NUL"', '"\u0000"'), 'UTF8')), 'malformed'),
  ('encoding', 'duplicate sub', regress_sign_bytes(convert_to('{"sub": "a", "sub": "b", "exp": 99999999999, "iat": 1}', 'UTF8')), 'malformed'),
  ('encoding', 'nesting 3000 deep', regress_sign_bytes(convert_to(repeat('[', 3000) || repeat(']', 3000), 'UTF8')), 'malformed'),
  ('encoding', 'payload is an array', regress_sign_bytes(convert_to('[1, 2, 3]', 'UTF8')), 'malformed'),
  ('encoding', 'payload is a string', regress_sign_bytes(convert_to('"eyJ"', 'UTF8')), 'malformed'),
  ('encoding', 'trailing garbage', regress_sign_bytes(convert_to(regress_claims() || 'x', 'UTF8')), 'malformed'),
  ('encoding', 'two objects', regress_sign_bytes(convert_to(regress_claims() || regress_claims(), 'UTF8')), 'malformed'),
  ('encoding', 'duplicate key in a nested object', regress_sign_bytes(convert_to(replace(regress_claims('{"x":{"a":1}}'), '"a": 1', '"a": 1, "a": 2'), 'UTF8')), 'malformed'),
  ('encoding', 'duplicate key in an object in an array', regress_sign_bytes(convert_to(replace(regress_claims('{"x":[{"a":1}]}'), '"a": 1', '"a": 1, "a": 1'), 'UTF8')), 'malformed'),
  ('encoding', 'duplicate aud', regress_sign_bytes(convert_to(replace(regress_claims(), '"aud": "extension"', '"aud": "other", "aud": "extension"'), 'UTF8')), 'malformed'),
  ('encoding', 'one key in two sibling objects (allowed)', regress_sign('{"alg":"HS256"}', regress_claims('{"x":[{"a":1},{"a":2}]}')), 'not_found'),
  ('encoding', 'integer beyond int64 in an extra claim', regress_sign_bytes(convert_to(replace(regress_claims('{"x":0}'), '"x": 0', '"x": 99999999999999999999'), 'UTF8')), 'malformed'),
  ('encoding', 'exponent of four digits in an extra claim', regress_sign_bytes(convert_to(replace(regress_claims('{"x":0}'), '"x": 0', '"x": 1e1000'), 'UTF8')), 'malformed'),
  ('encoding', 'a real in an extra claim (allowed)', regress_sign_bytes(convert_to(replace(regress_claims('{"x":0}'), '"x": 0', '"x": -1.50e-300'), 'UTF8')), 'not_found'),
  ('encoding', 'nesting 2100 deep in a claim', regress_sign_bytes(convert_to(replace(regress_claims('{"x":0}'), '"x": 0', '"x": ' || repeat('[', 2100) || repeat(']', 2100)), 'UTF8')), 'malformed'),
  ('encoding', 'nesting 1000 deep in a claim (allowed)', regress_sign_bytes(convert_to(replace(regress_claims('{"x":0}'), '"x": 0', '"x": ' || repeat('[', 1000) || repeat(']', 1000)), 'UTF8')), 'not_found'),
  ('encoding', 'invalid escape', regress_sign_bytes(convert_to(replace(regress_claims('{"x":"y"}'), '"y"', '"\q"'), 'UTF8')), 'malformed'),
  ('encoding', 'raw control character in a string', regress_sign_bytes(convert_to(replace(regress_claims('{"x":"y"}'), '"y"', '"' || chr(1) || '"'), 'UTF8')), 'malformed'),
  ('encoding', 'NUL byte in the payload', regress_sign_bytes(convert_to(regress_claims('{"x":"y"}'), 'UTF8') || '\x00'::bytea), 'malformed'),
  -- type confusion
  ('type confusion', 'refresh token as access token', :'good_refresh', 'wrong_token_type'),
  ('type confusion', 'claim type refresh', regress_sign('{"alg":"HS256"}', regress_claims('{"type":"refresh"}')), 'wrong_token_type'),
  ('type confusion', 'claim type ACCESS', regress_sign('{"alg":"HS256"}', regress_claims('{"type":"ACCESS"}')), 'wrong_token_type'),
  ('type confusion', 'bare refresh prefix', 'ext_rt_', 'wrong_token_type'),
  -- replay
  ('replay', 'revoked session', :'revoked', 'revoked'),
  ('replay', 'access token rotated out by a refresh', :'rotated', 'revoked'),
  ('replay', 'well signed, never issued', regress_sign('{"alg":"HS256","typ":"JWT"}', regress_claims()), 'not_found'),
  ('replay', 'the good token, for contrast', :'good', 'valid');

-- Statement cases: run as a role; the outcome is 'ok' or the SQLSTATE.
CREATE TEMP TABLE corpus_stmt (n serial, grp text, name text, role text, stmt text, expected text);
GRANT SELECT ON corpus_stmt TO PUBLIC;
INSERT INTO corpus_stmt (grp, name, role, stmt, expected) VALUES
  ('type confusion', 'access token as refresh token', 'regress_et_anon', format('SELECT extension_token_refresh(%L)', :'good'), 'PT401'),
  ('type confusion', 'mistyped refresh token (checksum)', 'regress_et_anon', format('SELECT extension_token_refresh(%L)', overlay(:'good_refresh' placing CASE substr(:'good_refresh', 20, 1) WHEN 'a' THEN 'b' ELSE 'a' END from 20 for 1)), 'PT401'),
  ('replay', 'exchanged refresh token again', 'regress_et_anon', format('SELECT extension_token_refresh(%L)', :'used_refresh'), 'PT401'),
  ('replay', 'refresh of a revoked session', 'regress_et_anon', format('SELECT extension_token_refresh(%L)', :'revoked_refresh'), 'PT401'),
  ('size', '14 MiB refresh token', 'regress_et_anon', format('SELECT extension_token_refresh(%L)', repeat('ext_rt_', 2 * 1024 * 1024)), 'PT401'),
  ('size', '16 MiB to revoke', 'regress_et_service', format('SELECT extension_token_revoke(%L)', repeat('A', 16 * 1024 * 1024)), 'ok'),
  ('privileges', 'anonymous issue', 'regress_et_anon', $$SELECT extension_token_issue('60000000-0000-4000-8000-000000000009')$$, '42501'),
  ('privileges', 'anonymous list', 'regress_et_anon', $$SELECT extension_token_list('60000000-0000-4000-8000-000000000001')$$, '42501'),
  ('privileges', 'anonymous revoke by session id', 'regress_et_anon', $$SELECT extension_token_revoke_session('60000000-0000-4000-8000-0000000000ee')$$, '42501'),
  ('privileges', 'anonymous revoke of a user', 'regress_et_anon', $$SELECT revoke_user_extension_tokens('60000000-0000-4000-8000-000000000001')$$, '42501'),
  ('privileges', 'anonymous statistics', 'regress_et_anon', 'SELECT extension_token_stats()', '42501'),
  ('privileges', 'anonymous cleanup', 'regress_et_anon', 'SELECT extension_tokens_cleanup()', '42501'),
  ('privileges', 'end user reads the table', 'regress_et_authenticated', 'SELECT count(*) FROM extension_tokens', '42501'),
  ('privileges', 'end user updates a session', 'regress_et_authenticated', 'UPDATE extension_token_sessions SET revoked_at = NULL', '42501'),
  ('privileges', 'end user reads the admin view', 'regress_et_authenticated', 'SELECT count(*) FROM extension_token_sessions_admin', '42501'),
  ('privileges', 'end user without a request identity', 'regress_et_authenticated', 'SELECT extension_token_issue()', '42501'),
  ('privileges', 'login role with forged claims', 'regress_et_mallory', $$SELECT set_config('request.jwt.claims', '{"sub":"60000000-0000-4000-8000-000000000001"}', true), extension_token_list()$$, '42501'),
  ('privileges', 'reserved role claim', 'regress_et_service', $$SELECT extension_token_issue('60000000-0000-4000-8000-000000000009', p_claims => '{"role":"service_role"}')$$, '22023'),
  ('privileges', 'reserved sub claim', 'regress_et_service', $$SELECT extension_token_issue('60000000-0000-4000-8000-000000000009', p_claims => '{"sub":"someone"}')$$, '22023'),
  ('settings', 'SET the secret', 'regress_et_alice', $$SET extension_tokens.jwt_secret = 'mine-mine-mine-0123456789abcdef012345'$$, '55P02'),
  ('settings', 'set_config the secret', 'regress_et_alice', $$SELECT set_config('extension_tokens.jwt_secret', 'mine-mine-mine-0123456789abcdef012345', true)$$, '55P02'),
  ('settings', 'SET the previous secret', 'regress_et_alice', $$SET extension_tokens.jwt_secret_previous = 'mine-mine-mine-0123456789abcdef012345'$$, '55P02'),
  ('settings', 'read the secret', 'regress_et_alice', $$SELECT current_setting('extension_tokens.jwt_secret')$$, '42501'),
  ('settings', 'loosen the rate limit', 'regress_et_alice', 'SET extension_tokens.issue_rate_limit = 0', '42501'),
  ('settings', 'change the issuer', 'regress_et_alice', $$SET extension_tokens.jwt_issuer = 'me'$$, '42501'),
  ('settings', 'name an admin role', 'regress_et_alice', $$SET extension_tokens.admin_roles = 'regress_et_alice'$$, '55P02'),
  ('settings', 'misspelt setting', 'regress_et_alice', $$SET extension_tokens.jwt_secrte = 'x'$$, '42602');

-- Every case, with what it must get and what it got.
CREATE TEMP TABLE outcome AS
  SELECT grp, n, name, expected, coalesce((extension_token_validate(token)).error, 'valid') AS got FROM corpus
  UNION ALL
  SELECT grp, 1000 + n, name, expected, regress_as(role, stmt) FROM corpus_stmt;
SELECT grp, name, expected, got FROM outcome ORDER BY grp, n;

-- Per group, and anything that did not get what it must.
SELECT grp, count(*) AS cases, count(*) FILTER (WHERE got = expected) AS as_expected
  FROM outcome GROUP BY grp ORDER BY grp;
SELECT count(*) AS cases FROM outcome;
SELECT grp, name, expected, got FROM outcome WHERE got IS DISTINCT FROM expected;

-- None of this added a session (the good token's user has the one issued
-- at the top), and the server never restarted.
SELECT count(*) AS sessions_of_hostile_user FROM extension_token_sessions
 WHERE user_id = '60000000-0000-4000-8000-000000000001';
SELECT pg_postmaster_start_time() = :'started' AS same_server;
