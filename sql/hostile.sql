-- hostile: input meant to crash, confuse or slip past the validator.  Every
-- case gets a clear answer; at the end the server has not restarted.
SELECT pg_postmaster_start_time() AS started \gset
SET extension_tokens.issue_rate_limit = 0;
SELECT access_token AS good, refresh_token AS good_refresh FROM extension_token_issue('60000000-0000-4000-8000-000000000001') \gset

-- Size: 16 MiB of anything is refused before it is parsed.
SELECT (extension_token_validate(repeat('A', 16 * 1024 * 1024))).error AS sixteen_mib_letters;
SELECT (extension_token_validate(repeat('eyJ.', 4 * 1024 * 1024))).error AS sixteen_mib_dots;
SELECT (extension_token_validate(:'good' || repeat('A', 16 * 1024 * 1024))).error AS good_token_plus_16_mib;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', repeat('ext_rt_', 2 * 1024 * 1024))) AS refresh_14_mib;
SELECT extension_token_revoke(repeat('A', 16 * 1024 * 1024)) AS revoke_16_mib;
-- just over and just under the 8 KiB cap
SELECT (extension_token_validate(regress_sign('{"alg": "HS256", "typ": "JWT"}',
        regress_claims(jsonb_build_object('pad', repeat('p', n)))))).error AS near_cap, n
  FROM unnest(ARRAY[5800, 6300]) AS n;

-- Syntax and encoding: padding, whitespace, non-ASCII, control bytes.
SELECT (extension_token_validate(t)).error AS error, left(t, 24) AS token
  FROM unnest(ARRAY[:'good' || '=', ' ' || :'good', :'good' || E'\n', replace(:'good', '.', ' . '),
                    replace(:'good', 'e', 'é'), E'\t', '...', 'eyJ', '.', 'Ω.Ω.Ω',
                    overlay(:'good' placing '/' from length(:'good') - 5 for 1),
                    overlay(:'good' placing '+' from length(:'good') - 5 for 1)]) AS t;

-- Header tricks: every spelling of none, keys that must not matter (jwk,
-- jku, x5u), a kid that names none of our keys (no key verifies it),
-- unicode look-alikes, typ variants.
SELECT (extension_token_validate(regress_sign(h, regress_claims()))).error AS error, h AS header
  FROM unnest(ARRAY['{"alg": "none"}', '{"alg": "nOnE", "typ": "JWT"}', '{"alg": "NONE "}',
                    '{"alg": "HS256\u0000"}', '{"alg": "ＨＳ256"}', '{"alg": ["HS256"]}', '{"alg": null}',
                    '{"alg": "HS256", "jku": "http://evil.example/jwks"}',
                    '{"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}',
                    '{"alg": "HS256", "x5u": "http://evil.example/cert"}',
                    '{"alg": "HS256", "kid": "../../../../dev/null"}',
                    '{"alg": "HS256", "typ": "jwt"}', '{"alg": "HS256", "typ": "at+jwt"}',
                    '{"alg": "HS256", "typ": 1}', '{"alg": "HS256", "crit": []}']) AS h;
-- alg none with an empty signature (the classic unsigned token), and with
-- no signature part at all
SELECT (extension_token_validate(regress_b64url('{"alg":"none"}') || '.' || regress_b64url(convert_to(regress_claims(), 'UTF8')) || '.')).error AS none_empty_sig,
       (extension_token_validate(regress_b64url('{"alg":"none"}') || '.' || regress_b64url(convert_to(regress_claims(), 'UTF8')))).error AS none_two_parts,
       (extension_token_validate(regress_b64url('{"alg":"HS256"}') || '.' || regress_b64url(convert_to(regress_claims(), 'UTF8')) || '.')).error AS hs256_empty_sig;
-- The right secret under other HMAC algorithms.
SELECT (extension_token_validate(regress_sign(format('{"alg": "%s", "typ": "JWT"}', a), regress_claims(), h))).error AS error, a AS alg
  FROM (VALUES ('HS384', 'sha384'), ('HS512', 'sha512'), ('HS256', 'sha384'), ('HS256', 'sha1'), ('HS256', 'md5')) v(a, h);

-- Payload encoding and JSON: invalid UTF-8, NUL, duplicate keys, depth,
-- numbers out of range, not an object.  All signed with the right key, so
-- only the claims checks stand in the way.
SELECT (extension_token_validate(
          regress_b64url('{"alg":"HS256","typ":"JWT"}') || '.' || regress_b64url(p) || '.' ||
          regress_b64url(hmac(convert_to(regress_b64url('{"alg":"HS256","typ":"JWT"}') || '.' || regress_b64url(p), 'UTF8'),
                              'regress-secret-0123456789abcdef0123456789', 'sha256')))).error AS error,
       d AS payload
  FROM (VALUES
    ('invalid UTF-8 byte', '\x7b2278223a22ff227d'::bytea),
    ('overlong UTF-8', '\x7b22737562223a22c0af227d'::bytea),
    ('lone surrogate escape', convert_to('{"sub": "\ud800"}', 'UTF8')),
    ('NUL escape in a claim', convert_to(replace(regress_claims('{"sub": "NULHERE"}'), 'NULHERE', '\u0000'), 'UTF8')),
    ('duplicate sub', convert_to('{"sub": "a", "sub": "b", "exp": 99999999999, "iat": 1}', 'UTF8')),
    ('depth 3000', convert_to(repeat('[', 3000) || repeat(']', 3000), 'UTF8')),
    ('exp 1e400', convert_to(replace(regress_claims('{"exp": 0}'), '"exp": 0', '"exp": 1e400'), 'UTF8')),
    ('exp 2^70', convert_to(replace(regress_claims('{"exp": 0}'), '"exp": 0', '"exp": 1180591620717411303424'), 'UTF8')),
    ('exp -1', convert_to(regress_claims('{"exp": -1}'), 'UTF8')),
    ('exp int64 max', convert_to(regress_claims('{"exp": 9223372036854775807}'), 'UTF8')),
    ('array', convert_to('[1, 2, 3]', 'UTF8')),
    ('string', convert_to('"eyJ"', 'UTF8')),
    ('empty object', convert_to('{}', 'UTF8')),
    ('trailing garbage', convert_to(regress_claims() || 'x', 'UTF8')),
    ('two objects', convert_to(regress_claims() || regress_claims(), 'UTF8'))
  ) v(d, p);

-- Type confusion and replay.
SELECT (extension_token_validate(:'good_refresh')).error AS refresh_as_access;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'good')) AS access_as_refresh;
SELECT extension_token_revoke(:'good') AS revoked;
SELECT (extension_token_validate(:'good')).error AS replay_after_revoke;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'good_refresh')) AS refresh_after_revoke;
-- A token re-encoded (same bytes, different text) is not the same token.
SELECT (extension_token_validate(split_part(:'good', '.', 1) || '.' || split_part(:'good', '.', 2) || '.' ||
        split_part(:'good', '.', 3) || 'A')).error AS longer_signature;

-- The server never restarted, and the user still has only the one session
-- issued at the top.
SELECT pg_postmaster_start_time() = :'started' AS same_server;
SELECT count(*) AS sessions_of_hostile_user FROM extension_token_sessions
 WHERE user_id = '60000000-0000-4000-8000-000000000001';
