-- asymmetric: ES256 and EdDSA signing from PEM key files, the public JWK Set,
-- rotation with a previous key, and the verifier's refusals (exactly the
-- configured algorithm; none, HS256 keyed with the public key, wrong
-- signature lengths, high-S ECDSA signatures, unknown key ids).  Keys are
-- written into the data directory (the server's working directory) by
-- COPY TO PROGRAM as the server's user, mode 0600 unless a test says.
\set VERBOSITY default
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;

-- Test keys (throwaway, made with openssl genpkey for this test only).
CREATE TABLE regress_keys (name text PRIMARY KEY, pem text NOT NULL);
INSERT INTO regress_keys VALUES
  ('es1', $pem$
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6ezTKSswkH7gpolh
0/BfbYaW/DtYN0DS5I3N/3vH7xOhRANCAASH1rctRlcYM0w4xOJ5VE5KZyNbL3z2
XdKMj7Gk4GZQDdtvfQSAU0kVLAreB8fg/atJsxuVOW/fLfpNYcQYf6Fw
-----END PRIVATE KEY-----
$pem$),
  ('es2', $pem$
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglIfgHd/hrS2FyviL
Ru64NximSmvSbqSMXPgvnC1GmuWhRANCAAReaT6kwDQ8fvIKGPp3jHm83A7zTQiG
FqiXuAkewMdK74reOQJDJKTS59BtL0yAQIx2gJTvSEdHRFLgPzgtZ+zU
-----END PRIVATE KEY-----
$pem$),
  ('ed1', $pem$
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPEZIfL7w2w8f+m32kZx4pkObAwBmgo7aGXGZnOAgZes
-----END PRIVATE KEY-----
$pem$),
  ('rsa', $pem$
-----BEGIN PRIVATE KEY-----
MIICeAIBADANBgkqhkiG9w0BAQEFAASCAmIwggJeAgEAAoGBAOwn6PCNA0RbimQW
ZRSMrBA580erYDW99oHmxM5bRgLIXPU8fGCeUcJDi/XSfNzJ9ycDI2YabvCT9J7f
p5EJd8tdBkkzFG3kt+89jhkUEQFP3C0nI6DwdeurFFsEvL2pLFgpt47VdAz6Nnmq
ZS5bdwT6pxfIVf6gzItGu9qxMDY7AgMBAAECgYEAjdvLifSrKbzzfPwW7Ck0kuq8
wSipOp9KHO5K+srJW5KQhKA49rEj29ZHlPtEFj0cQksYUJVAXzQBlg4z0mQlmNRf
GhJFE/1HI+sjM3k4bsyWIfCiZ96WxGnpuVPJSI6VGZEEi1xQ1Y3DN1ZY8YQ2MF1w
Ob3OtmBWDILM3wQwbQECQQD8f7Z8QbygLaZ4hRYAGW7FQRLubI7VErcp0T7jH/Y1
S52T58pbHG1doqLOMYHi5/BqQ+eqUc6Wxc7vzHtnXHURAkEA724vV+N0cFKCSod8
hT7XpV13S/ysPdW85uzWID4sytJerLaqGOC9vdCEB/NSzbiDFknBKs+Q9lVPMSh7
AlpGiwJAfKn9iinWnGsNhvGGZDQqWZ+AXlEg0Bh2cGIMH403PScBPPYzFXrakGFs
6krNKx+CtqSiK5hKXGx7eC/IOccPUQJBAIjK+AuLrWPbEAuKuu7Zx5T4AIeOdc3i
RsncuD21qBu881BUEHykMmO3NSfhsgZNC7/5JX7TFixW8ybPzO+8Kh8CQQC3Ny9G
wpa0zCnCsA2Yo0tOP9rNcMgMflAyLfk6eg1rIjV1NxT9aqUX2W6Vmx74bz4c2wEX
E+FItOoACa8BBx9n
-----END PRIVATE KEY-----
$pem$),
  ('p384', $pem$
-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCmx/QdZR8NOyc8QGWr
VB5jwXfM+5sulg2mN5w8tan/FeUW9ShpnD15qPVEqMUTIbihZANiAAQUzlGLSIDu
nNqz9ugDHS+ym7rHnvgrxyQ2jc2u0g/FO01WSlfwaXDDj5Pmm7Q8c4oCP/WGKMnp
pX2SBzHXrg4tEOWwcjH4dg663T0QLnaFyh9S7H9IK7cTYaIFTx7HxAE=
-----END PRIVATE KEY-----
$pem$),
  ('enc', $pem$
-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAgZqSAErk8MkwICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEAi8Hw3x6XSSSCmWwLhDBRAEgZBl
YBafTnPCKK1bMCr6v3lyvPVjV0xVK8idOAbcmXToz3Xdj+qXQH1ABsN5xvZtEq7v
kO+ie6E9pxKy5lw0RtQtMt5AkSnIxlSABiBXoX1qvfUvqBAXz4p9WZLaze/Gq0iC
CLXPVZ7eosd5k0woRScQlp1/tkuciQ3lm7YMY2R+34kvph3HtPk6Vom5uGT7d7I=
-----END ENCRYPTED PRIVATE KEY-----
$pem$),
  ('pub', $pem$
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEh9a3LUZXGDNMOMTieVROSmcjWy98
9l3SjI+xpOBmUA3bb30EgFNJFSwK3gfH4P2rSbMblTlv3y36TWHEGH+hcA==
-----END PUBLIC KEY-----
$pem$),
  -- key es1's private scalar with key es2's public point
  ('mismatch', $pem$
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIOns0ykrMJB+4KaJYdPwX22Glvw7WDdA0uSNzf97x+8ToAoGCCqGSM49
AwEHoUQDQgAEXmk+pMA0PH7yChj6d4x5vNwO800Ihhaol7gJHsDHSu+K3jkCQySk
0ufQbS9MgECMdoCU70hHR0RS4D84LWfs1A==
-----END EC PRIVATE KEY-----
$pem$),
  -- key es1 with the last byte of its public point changed: not on the curve
  ('offcurve', $pem$
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIOns0ykrMJB+4KaJYdPwX22Glvw7WDdA0uSNzf97x+8ToAoGCCqGSM49
AwEHoUQDQgAEh9a3LUZXGDNMOMTieVROSmcjWy989l3SjI+xpOBmUA3bb30EgFNJ
FSwK3gfH4P2rSbMblTlv3y36TWHEGH+hcQ==
-----END EC PRIVATE KEY-----
$pem$),
  ('garbage', 'not a key at all');

-- Writes key `name` to the file regress_key_<file> with the given mode.
CREATE FUNCTION regress_key_file(name text, file text, mode text DEFAULT '600')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('COPY (SELECT unnest(string_to_array(rtrim(pem, E''\n''), E''\n'')) FROM regress_keys WHERE name = %L) TO PROGRAM %L',
                 name, format('cat > regress_key_%s && chmod %s regress_key_%s', file, mode, file));
END $$;
SELECT regress_key_file(name, name) FROM regress_keys;
SELECT regress_key_file('es1', 'es1_group', '640');

CREATE FUNCTION regress_reload() RETURNS void LANGUAGE sql AS $$
  SELECT pg_reload_conf(); SELECT pg_sleep(0.5);
$$;
CREATE FUNCTION regress_header(token text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT convert_from(regress_b64url_decode(split_part(token, '.', 1)), 'UTF8')::jsonb
$$;
-- The token with its signature replaced by `sig`.
CREATE FUNCTION regress_resig(token text, sig bytea) RETURNS text LANGUAGE sql AS $$
  SELECT split_part(token, '.', 1) || '.' || split_part(token, '.', 2) || '.' || regress_b64url(sig)
$$;
CREATE FUNCTION regress_sig(token text) RETURNS bytea LANGUAGE sql AS $$
  SELECT regress_b64url_decode(split_part(token, '.', 3))
$$;
-- Big-endian bytes <-> numeric, for the ECDSA high-S form n - s.
CREATE FUNCTION regress_bytes_num(b bytea) RETURNS numeric LANGUAGE sql AS $$
  SELECT coalesce(sum(get_byte(b, i)::numeric * power(256::numeric, length(b) - 1 - i)), 0)
    FROM generate_series(0, length(b) - 1) i
$$;
CREATE FUNCTION regress_num_bytes(n numeric, len int) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE b bytea := decode(repeat('00', len), 'hex');
BEGIN
  FOR i IN REVERSE len - 1 .. 0 LOOP
    b := set_byte(b, i, mod(n, 256)::int);
    n := div(n, 256);
  END LOOP;
  RETURN b;
END $$;
-- Little-endian (Ed25519's S) variants.
CREATE FUNCTION regress_num_le(b bytea) RETURNS numeric LANGUAGE sql AS $$
  SELECT coalesce(sum(get_byte(b, i)::numeric * power(256::numeric, i)), 0)
    FROM generate_series(0, length(b) - 1) i
$$;
CREATE FUNCTION regress_num_bytes_le(n numeric, len int) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE b bytea := decode(repeat('00', len), 'hex');
BEGIN
  FOR i IN 0 .. len - 1 LOOP
    b := set_byte(b, i, mod(n, 256)::int);
    n := div(n, 256);
  END LOOP;
  RETURN b;
END $$;
-- The same ECDSA signature in its other (high-S) form: (r, n - s).
CREATE FUNCTION regress_high_s(sig bytea) RETURNS bytea LANGUAGE sql AS $$
  SELECT substr(sig, 1, 32) ||
         regress_num_bytes(115792089210356248762697446949407573529996955224135760342422259061068512044369
                           - regress_bytes_num(substr(sig, 33, 32)), 32)
$$;

-- Under HS256 (the default) the JWK Set is empty: a secret is never in it.
SHOW extension_tokens.signing_algorithm;
SELECT extension_token_jwks();
SELECT provolatile, proacl FROM pg_proc WHERE proname = 'extension_token_jwks';
SELECT key_id ~ '^[0-9a-f]{16}$' AS hs256_kid, status FROM extension_tokens_signing_keys() WHERE status <> 'retired';

-- Key files that are refused when set (22023), each with its reason; the
-- path is named, the content never.
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_missing';
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_es1_group';
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_rsa';
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_p384';
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_enc';
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_pub';
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_mismatch';
ALTER SYSTEM SET extension_tokens.signing_key_previous_file = 'regress_key_offcurve';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET extension_tokens.signing_key_previous_file = 'regress_key_garbage';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET extension_tokens.signing_algorithm = 'RS256';

-- An HS256 token of before the switch (see the revocation below).
SELECT access_token AS hs_before FROM extension_token_issue('asym-before') \gset

-- ES256 without a key: issue and validate refuse (55000).
ALTER SYSTEM SET extension_tokens.signing_algorithm = 'ES256';
SELECT regress_reload();
SELECT access_token FROM extension_token_issue('asym-user');
\echo :LAST_ERROR_SQLSTATE
SELECT valid FROM extension_token_validate('x');
\echo :LAST_ERROR_SQLSTATE
SELECT extension_token_jwks();

-- ES256 with key es1: the header names the algorithm and the key's RFC 7638
-- thumbprint, the signature is 64 bytes (R || S), and the token validates.
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_es1';
SELECT regress_reload();
SELECT access_token AS es1_token, session_id AS es1_session FROM extension_token_issue('asym-user') \gset
SELECT regress_header(:'es1_token') - 'kid' AS header, length(regress_sig(:'es1_token')) AS sig_bytes;
SELECT valid, error, user_id, claims->>'type' AS type FROM extension_token_validate(:'es1_token');
-- A refresh signs its new access token the same way; the old one is dead.
CREATE TEMP TABLE regress_pair AS SELECT * FROM extension_token_issue('asym-refresh');
SELECT r.access_token AS refreshed FROM regress_pair p, extension_token_refresh(p.refresh_token) r \gset
SELECT regress_header(:'refreshed') - 'kid' AS header,
       regress_header(:'refreshed')->>'kid' = regress_header(:'es1_token')->>'kid' AS same_kid,
       (SELECT valid FROM extension_token_validate(:'refreshed')) AS new_valid,
       (SELECT error FROM extension_token_validate(access_token)) AS old_error
  FROM regress_pair;
DROP TABLE regress_pair;
-- The JWK Set: the public key alone (no "d"), its kid the header's, and that
-- kid is the thumbprint computed here independently (RFC 7638 3.1: the
-- required members in lexicographic order, SHA-256, base64url).
SELECT jsonb_array_length(extension_token_jwks()->'keys') AS nkeys;
SELECT k - 'x' - 'y' - 'kid' AS jwk, k ? 'd' AS has_private,
       k->>'kid' = regress_header(:'es1_token')->>'kid' AS kid_is_header,
       k->>'kid' = regress_b64url(digest(format('{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}', k->>'x', k->>'y'), 'sha256')) AS kid_is_thumbprint,
       length(regress_b64url_decode(k->>'x')) AS x_bytes, length(regress_b64url_decode(k->>'y')) AS y_bytes
  FROM jsonb_array_elements(extension_token_jwks()->'keys') k;
-- Anyone may read it, and nothing else was opened to them.
SET ROLE regress_et_anon;
SELECT jsonb_array_length(extension_token_jwks()->'keys') AS anon_nkeys;
RESET ROLE;
SELECT key_id = regress_header(:'es1_token')->>'kid' AS kid_matches, status, live_sessions > 0 AS signs_live
  FROM extension_tokens_signing_keys() WHERE status <> 'retired';

-- Refusals under ES256.
-- alg "HS256", signed with the jwt_secret (still configured): refused by algorithm.
SELECT error FROM extension_token_validate(regress_sign('{"alg":"HS256","typ":"JWT"}',
  convert_from(regress_b64url_decode(split_part(:'es1_token', '.', 2)), 'UTF8')));
-- alg "HS256" keyed with the public key (the JWK text, and the PEM): refused.
SELECT error FROM extension_token_validate(regress_sign('{"alg":"HS256","typ":"JWT"}',
  convert_from(regress_b64url_decode(split_part(:'es1_token', '.', 2)), 'UTF8'), 'sha256',
  (extension_token_jwks()->'keys'->0)::text));
SELECT error FROM extension_token_validate(regress_sign('{"alg":"HS256","typ":"JWT"}',
  convert_from(regress_b64url_decode(split_part(:'es1_token', '.', 2)), 'UTF8'), 'sha256',
  (SELECT pem FROM regress_keys WHERE name = 'pub')));
-- alg "none", "es256", "EdDSA", "ES384" on our own signature: refused by algorithm.
SELECT a AS alg, (SELECT error FROM extension_token_validate(
         regress_b64url(convert_to(jsonb_set(regress_header(:'es1_token'), '{alg}', to_jsonb(a))::text, 'UTF8'))
         || '.' || split_part(:'es1_token', '.', 2) || '.' || split_part(:'es1_token', '.', 3)))
  FROM unnest(ARRAY['none', 'es256', 'EdDSA', 'ES384']) a;
-- Signatures: the high-S form of our own (valid for plain ECDSA), one byte
-- changed, truncated to 63 bytes, 65 bytes, all zeros, empty; then
-- an altered payload, an unknown kid.
SELECT regress_sig(:'es1_token') <> regress_high_s(regress_sig(:'es1_token')) AS high_s_differs;
SELECT (SELECT error FROM extension_token_validate(regress_resig(:'es1_token', regress_high_s(regress_sig(:'es1_token'))))) AS high_s,
       (SELECT error FROM extension_token_validate(regress_resig(:'es1_token',
          set_byte(regress_sig(:'es1_token'), 10, get_byte(regress_sig(:'es1_token'), 10) # 1)))) AS flipped,
       (SELECT error FROM extension_token_validate(regress_resig(:'es1_token', substr(regress_sig(:'es1_token'), 1, 63)))) AS short,
       (SELECT error FROM extension_token_validate(regress_resig(:'es1_token', regress_sig(:'es1_token') || '\x00'::bytea))) AS long,
       (SELECT error FROM extension_token_validate(regress_resig(:'es1_token', decode(repeat('00', 64), 'hex')))) AS zeros,
       (SELECT error FROM extension_token_validate(split_part(:'es1_token', '.', 1) || '.' || split_part(:'es1_token', '.', 2) || '.')) AS empty;
SELECT error FROM extension_token_validate(split_part(:'es1_token', '.', 1) || '.' ||
  regress_b64url(convert_to(jsonb_set(convert_from(regress_b64url_decode(split_part(:'es1_token', '.', 2)), 'UTF8')::jsonb,
                                      '{sub}', '"mallory"')::text, 'UTF8')) || '.' || split_part(:'es1_token', '.', 3)) AS altered_payload;
SELECT error FROM extension_token_validate(
  regress_b64url(convert_to(jsonb_set(regress_header(:'es1_token'), '{kid}', '"someone-else"')::text, 'UTF8'))
  || '.' || split_part(:'es1_token', '.', 2) || '.' || split_part(:'es1_token', '.', 3)) AS unknown_kid;

-- A reload with a refused file keeps the key in force (the token still
-- validates, the JWK Set is unchanged).
SELECT extension_token_jwks() AS jwks_before \gset
SELECT regress_key_file('es1', 'es1_swap', '600');
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_es1_swap';
SELECT regress_key_file('garbage', 'es1_swap', '600');
SELECT regress_reload();
SELECT valid FROM extension_token_validate(:'es1_token');
SELECT extension_token_jwks() = :'jwks_before'::jsonb AS jwks_kept;
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_es1';

-- A key of the other algorithm is refused at use (55000), naming both.
ALTER SYSTEM SET extension_tokens.signing_key_previous_file = 'regress_key_ed1';
SELECT regress_reload();
SELECT valid FROM extension_token_validate(:'es1_token');
\echo :LAST_ERROR_SQLSTATE

-- Rotation: es2 signs, es1 (previous) still verifies what it signed; both
-- are in the JWK Set and in the key list, each with the live sessions it signs.
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_es2';
ALTER SYSTEM SET extension_tokens.signing_key_previous_file = 'regress_key_es1';
SELECT regress_reload();
SELECT access_token AS es2_token FROM extension_token_issue('asym-user') \gset
SELECT regress_header(:'es2_token')->>'kid' <> regress_header(:'es1_token')->>'kid' AS new_kid;
SELECT valid FROM extension_token_validate(:'es1_token');
SELECT valid FROM extension_token_validate(:'es2_token');
SELECT array_agg(k->>'kid' ORDER BY ord) = ARRAY[regress_header(:'es2_token')->>'kid', regress_header(:'es1_token')->>'kid'] AS jwks_current_then_previous
  FROM jsonb_array_elements(extension_token_jwks()->'keys') WITH ORDINALITY AS e(k, ord);
SELECT status, live_sessions FROM extension_tokens_signing_keys() WHERE status <> 'retired' ORDER BY status;
-- The old key's token, re-signed by no one, cannot claim the new key's kid.
SELECT error FROM extension_token_validate(
  regress_b64url(convert_to(jsonb_set(regress_header(:'es1_token'), '{kid}', to_jsonb(regress_header(:'es2_token')->>'kid'))::text, 'UTF8'))
  || '.' || split_part(:'es1_token', '.', 2) || '.' || split_part(:'es1_token', '.', 3)) AS kid_swapped;
-- Rotation done: without the previous key, its tokens no longer verify.
ALTER SYSTEM RESET extension_tokens.signing_key_previous_file;
SELECT regress_reload();
SELECT error FROM extension_token_validate(:'es1_token');
SELECT valid FROM extension_token_validate(:'es2_token');
SELECT jsonb_array_length(extension_token_jwks()->'keys') AS nkeys;

-- Revocation works as for HS256.
SELECT extension_token_revoke(:'es2_token');
SELECT error FROM extension_token_validate(:'es2_token');
-- An HS256 token of before the switch no longer validates, but still signs
-- its session out (correctly signed with the secret still configured); a
-- forged one (another secret) revokes nothing.
SELECT error FROM extension_token_validate(:'hs_before');
SELECT extension_token_revoke(regress_sign(regress_header(:'hs_before')::text,
  convert_from(regress_b64url_decode(split_part(:'hs_before', '.', 2)), 'UTF8'), 'sha256',
  'another-secret-0123456789abcdef0123456789')) AS forged_revokes;
SELECT extension_token_revoke(:'hs_before') AS old_hs256_revokes;
SELECT status FROM extension_token_list('asym-before');

-- EdDSA: a key of the wrong type first (55000), then Ed25519.
ALTER SYSTEM SET extension_tokens.signing_algorithm = 'EdDSA';
SELECT regress_reload();
SELECT access_token FROM extension_token_issue('asym-user');
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET extension_tokens.signing_key_file = 'regress_key_ed1';
SELECT regress_reload();
SELECT access_token AS ed_token FROM extension_token_issue('asym-user') \gset
SELECT regress_header(:'ed_token') - 'kid' AS header, length(regress_sig(:'ed_token')) AS sig_bytes;
SELECT valid, error FROM extension_token_validate(:'ed_token');
SELECT k - 'x' - 'kid' AS jwk,
       k->>'kid' = regress_header(:'ed_token')->>'kid' AS kid_is_header,
       k->>'kid' = regress_b64url(digest(format('{"crv":"Ed25519","kty":"OKP","x":"%s"}', k->>'x'), 'sha256')) AS kid_is_thumbprint
  FROM jsonb_array_elements(extension_token_jwks()->'keys') k;
-- An ES256 token is refused now (exactly the configured algorithm), as are
-- a changed, a short and a non-canonical (S + L) signature.
SELECT error FROM extension_token_validate(:'es1_token');
SELECT (SELECT error FROM extension_token_validate(regress_resig(:'ed_token',
          set_byte(regress_sig(:'ed_token'), 40, get_byte(regress_sig(:'ed_token'), 40) # 1)))) AS flipped,
       (SELECT error FROM extension_token_validate(regress_resig(:'ed_token', substr(regress_sig(:'ed_token'), 1, 63)))) AS short,
       (SELECT error FROM extension_token_validate(regress_resig(:'ed_token',
          substr(regress_sig(:'ed_token'), 1, 32) ||
          regress_num_bytes_le(regress_num_le(substr(regress_sig(:'ed_token'), 33, 32))
                               + 7237005577332262213973186563042994240857116359379907606001950938285454250989, 32)))) AS non_canonical;

-- Back to HS256: the JWK Set is empty again, HS256 tokens are signed as before.
ALTER SYSTEM RESET extension_tokens.signing_algorithm;
ALTER SYSTEM RESET extension_tokens.signing_key_file;
SELECT regress_reload();
SELECT extension_token_jwks();
SELECT access_token AS hs_token FROM extension_token_issue('asym-user') \gset
SELECT regress_header(:'hs_token') - 'kid' AS header, length(regress_sig(:'hs_token')) AS sig_bytes;
SELECT valid FROM extension_token_validate(:'hs_token');
SELECT error FROM extension_token_validate(:'ed_token');

-- Clean up: keys, helpers and the user's sessions.
COPY (SELECT 1) TO PROGRAM 'rm -f regress_key_*';
SELECT revoke_user_extension_tokens('asym-user') >= 0 AS revoked,
       revoke_user_extension_tokens('asym-refresh') >= 0 AS revoked_refresh,
       revoke_user_extension_tokens('asym-before') >= 0 AS revoked_before;
DROP FUNCTION regress_key_file(text, text, text), regress_reload(), regress_header(text),
  regress_resig(text, bytea), regress_sig(text), regress_bytes_num(bytea), regress_num_bytes(numeric, int),
  regress_high_s(bytea), regress_num_le(bytea), regress_num_bytes_le(numeric, int);
DROP TABLE regress_keys;
RESET extension_tokens.issue_rate_limit;
RESET extension_tokens.max_sessions_per_user;
