-- validate: every error code of the contract, the success row, the order of
-- the checks, last-use recording (at most once per interval, never in a
-- read-only transaction).
SET extension_tokens.issue_rate_limit = 0;
SELECT * FROM extension_token_issue('20000000-0000-4000-8000-000000000001', 'desk', p_claims => '{"plan": "pro"}') \gset
SELECT valid, error, user_id, session_id = :'session_id' AS same_session, token_name,
       expires_at = :'expires_at' AS same_expiry, claims->>'plan' AS plan
  FROM extension_token_validate(:'access_token');

-- missing
SELECT valid, error, user_id, claims FROM extension_token_validate(NULL);
SELECT valid, error FROM extension_token_validate('');
-- malformed: syntax
SELECT t AS token, (extension_token_validate(t)).error
  FROM unnest(ARRAY['garbage', 'a.b', 'a.b.c.d', '..', 'a..c', '.b.c', 'a.b.',
                    'eyJ!.eyJ.sig', 'a b.c.d', 'YQ==.YQ.YQ', 'YR.YQ.YQ',
                    'eyJhbGciOiJIUzI1NiJ9 .e30.sig']) AS t;
-- malformed: a header that is not a JSON object, or has no alg
SELECT (extension_token_validate(regress_b64url(convert_to(h, 'UTF8')) || '.e30.c2ln')).error AS error, h AS header
  FROM unnest(ARRAY['[]', '"HS256"', '{}', '{"alg": 256}', '{"alg": "HS256", "alg": "HS256"}',
                    '{"alg": "HS256", "typ": "JOSE+JSON"}', '{"alg": "HS256", "crit": ["exp"]}',
                    'not json']) AS h;
-- unsupported_algorithm: decided from the header, before the signature
SELECT (extension_token_validate(regress_sign(format('{"alg": "%s", "typ": "JWT"}', a), regress_claims()))).error AS error, a AS alg
  FROM unnest(ARRAY['HS384', 'HS512', 'RS256', 'ES256', 'none', 'None', 'NONE', 'hs256', 'HS256 ', '']) AS a;
-- invalid_signature: our own token with one signature character changed,
-- another key, a signature cut to 30 bytes (still canonical base64url).
-- A last character with non-zero unused bits ('B' = 000001: the encoding of
-- 32 bytes leaves 2 bits over) is not canonical: malformed.
SELECT (extension_token_validate(left(:'access_token', -10) ||
        CASE substr(:'access_token', length(:'access_token') - 9, 1) WHEN 'A' THEN 'B' ELSE 'A' END ||
        right(:'access_token', 9))).error AS flipped;
SELECT (extension_token_validate(regress_sign('{"alg": "HS256", "typ": "JWT"}', regress_claims(), 'sha256',
                                              'another-secret-of-sufficient-length-0123'))).error AS wrong_key;
SELECT (extension_token_validate(left(:'access_token', -3))).error AS short_signature,
       (extension_token_validate(left(:'access_token', -1) || 'B')).error AS non_canonical;
-- our token with its payload swapped for another user's: signature breaks
SELECT (extension_token_validate(split_part(:'access_token', '.', 1) || '.' ||
        regress_b64url(convert_to(regress_claims('{"sub": "20000000-0000-4000-8000-000000000099"}'), 'UTF8')) || '.' ||
        split_part(:'access_token', '.', 3))).error AS swapped_payload;
-- Claims, signed with the right key: shape first (malformed), then iss,
-- aud, type, then time.
SELECT c AS changes, (extension_token_validate(regress_sign('{"alg": "HS256", "typ": "JWT"}', regress_claims(c::jsonb)))).error
  FROM unnest(ARRAY[
    '{}',
    '{"iss": "someone-else"}', '{"iss": null}', '{"iss": ["extension_tokens"]}',
    '{"aud": "other"}', '{"aud": null}', '{"aud": ["other", "extension"]}', '{"aud": ["other"]}', '{"aud": 1}',
    '{"type": "refresh"}', '{"type": null}', '{"type": "ACCESS"}',
    '{"exp": 1}', '{"nbf": 99999999999}', '{"iat": 99999999999}',
    '{"exp": null}', '{"exp": "99999999999"}', '{"exp": 99999999999.5}', '{"exp": true}',
    '{"iat": null}', '{"iat": "1"}', '{"nbf": "1"}',
    '{"sub": null}', '{"sub": 42}', '{"sub": ""}', '{"session_id": null}', '{"session_id": "nope"}',
    '{"jti": null}'
  ]) AS c;
-- not_found: a token with our signature and perfect claims that we never issued
SELECT (extension_token_validate(regress_sign('{"alg": "HS256", "typ": "JWT"}', regress_claims()))).error AS never_issued;
-- A token issued under another issuer or audience setting.
SET extension_tokens.jwt_issuer = 'another-issuer';
SELECT valid, error FROM extension_token_validate(:'access_token');
RESET extension_tokens.jwt_issuer;
SET extension_tokens.jwt_audience = 'another-audience';
SELECT valid, error FROM extension_token_validate(:'access_token');
RESET extension_tokens.jwt_audience;
-- wrong_token_type: a refresh token presented as an access token
SELECT valid, error FROM extension_token_validate(:'refresh_token');
-- expired: a one-second token, checked with no clock skew allowed
SET extension_tokens.clock_skew = 0;
SELECT access_token AS short_token FROM extension_token_issue('20000000-0000-4000-8000-000000000002', p_lifetime => '1 second') \gset
SELECT pg_sleep(2);
SELECT valid, error FROM extension_token_validate(:'short_token');
-- ... which the default 30-second skew still accepts
RESET extension_tokens.clock_skew;
SELECT valid, error FROM extension_token_validate(:'short_token');
-- revoked
SELECT extension_token_revoke(:'access_token');
SELECT valid, error FROM extension_token_validate(:'access_token');

-- Use (1.2): every validation counts, in a read-only transaction too, and
-- none writes in the caller's transaction (no transaction id is taken): the
-- uses are counted in shared memory and written by the background worker,
-- within about a second, into use_count and last_used_at.
SELECT access_token AS a2, session_id AS s2 FROM extension_token_issue('20000000-0000-4000-8000-000000000003') \gset
SELECT last_used_at AS issued_used, use_count AS issued_count
  FROM extension_token_sessions WHERE session_id = :'s2' \gset
SELECT :issued_count AS use_count_at_issue;
BEGIN;
SELECT valid FROM extension_token_validate(:'a2');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_write_read_write;
COMMIT;
BEGIN READ ONLY;
SELECT valid, error FROM extension_token_validate(:'a2');
SELECT valid FROM extension_token_validate(:'a2');
COMMIT;
SELECT valid FROM extension_token_validate('not a token');
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN (SELECT use_count FROM extension_token_sessions
                WHERE user_id = '20000000-0000-4000-8000-000000000003') >= 3;
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT use_count AS validations_counted, last_used_at > :'issued_used' AS last_used_moved
  FROM extension_token_sessions WHERE session_id = :'s2';
SELECT use_count FROM extension_token_list('20000000-0000-4000-8000-000000000003');

-- Scopes (1.2): issue's p_scopes become the scope claim (space-separated,
-- RFC 9068) and the session's scopes; refresh keeps them; validate answers
-- insufficient_scope, last, when one of p_required_scopes is missing.
SET extension_tokens.issue_rate_limit = 0;
SELECT access_token AS sc, refresh_token AS sc_refresh, scopes AS pair_scopes
  FROM extension_token_issue('20000000-0000-4000-8000-000000000004', p_scopes => ARRAY['notes:read', 'notes:write']) \gset
SELECT :'pair_scopes' AS pair_scopes;
SELECT valid, claims->>'scope' AS scope_claim, scopes, kind FROM extension_token_validate(:'sc');
SELECT valid, error FROM extension_token_validate(:'sc', ARRAY['notes:read']);
SELECT valid, error FROM extension_token_validate(:'sc', ARRAY['notes:read', 'notes:write']);
SELECT valid, error FROM extension_token_validate(:'sc', ARRAY['admin']);
SELECT valid, error FROM extension_token_validate(:'sc', ARRAY[NULL::text]);
SELECT valid, error FROM extension_token_validate(:'sc', '{}');
-- checked last: a revoked token says revoked, not insufficient_scope
SELECT access_token AS sc2 FROM extension_token_refresh(:'sc_refresh') \gset
SELECT valid, claims->>'scope' AS scope_kept, scopes FROM extension_token_validate(:'sc2', ARRAY['notes:write']);
SELECT valid, error FROM extension_token_validate(:'sc', ARRAY['admin']);
SELECT scopes FROM extension_token_list('20000000-0000-4000-8000-000000000004');
-- no scopes: none in the token, NULL in the result
SELECT scopes, claims ? 'scope' AS has_scope_claim, kind
  FROM extension_token_validate((extension_token_issue('20000000-0000-4000-8000-000000000005')).access_token);
-- bad scopes: 22023
SELECT regress_try(format($$SELECT extension_token_issue('20000000-0000-4000-8000-000000000006', p_scopes => %L)$$, s)) AS refused
  FROM unnest(ARRAY['{Notes}', '{"a b"}', '{""}', '{a,a}', '{NULL}', '{{a},{b}}',
                    '{' || repeat('x', 65) || '}',
                    (SELECT array_agg('s' || i)::text FROM generate_series(1, 33) i)]) AS s;
RESET extension_tokens.issue_rate_limit;

-- The claims jsonb is built by the one parse of the payload (PostgreSQL's
-- JSON parser): every extra claim comes back as it was issued (strings with
-- escapes, non-ASCII, reals, integers at the int64 edges, nesting, empty
-- containers, a reserved name nested deeper; reals that a double holds
-- exactly, as the issuing side prints reals to 17 digits), on the first
-- validation (the parse), on the second (a cache hit, parsed again, its
-- jsonb then kept with the cache's entry) and on the third (answered from
-- that copy: which of the two a hit used is not visible from SQL; the
-- fuzzer, fuzz/fuzz_token.c's check_cache, checks it).
SET extension_tokens.issue_rate_limit = 0;
SELECT '{"s": "quote \" backslash \\ newline \n tab \t é 𝄞 \u00e9", "r": 1.5, "n": -0.375, "big": 9223372036854775807,
         "small": -9223372036854775808, "z": 0, "t": true, "f": false, "nul": null, "a": [1, [2, [3, {"k": "v"}]], []],
         "o": {"role": "viewer", "e": {}}}'::jsonb AS rich \gset
SELECT access_token AS rich_token FROM extension_token_issue('20000000-0000-4000-8000-000000000007', p_claims => :'rich') \gset
SELECT (v.claims - ARRAY['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'type', 'session_id']) = :'rich'::jsonb AS first_parse_faithful,
       v.claims->>'sub' AS sub
  FROM extension_token_validate(:'rich_token') v;
SELECT (v.claims - ARRAY['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'type', 'session_id']) = :'rich'::jsonb AS hit_faithful
  FROM extension_token_validate(:'rich_token') v;
SELECT (v.claims - ARRAY['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'type', 'session_id']) = :'rich'::jsonb AS cached_faithful
  FROM extension_token_validate(:'rich_token') v;
-- the token's own bytes, read by jsonb_in, agree with the parse
SELECT convert_from(decode(translate(split_part(:'rich_token', '.', 2), '-_', '+/') ||
                           repeat('=', (4 - length(split_part(:'rich_token', '.', 2)) % 4) % 4), 'base64'), 'UTF8')::jsonb
       = (extension_token_validate(:'rich_token')).claims AS same_as_jsonb_in;
-- validations_cached counts the validations the verified-token cache
-- answered: a token's first validation in this backend is verified, the
-- next two are not; a revoked token's cache hit still counts (and fails).
SELECT access_token AS counted FROM extension_token_issue('20000000-0000-4000-8000-000000000008') \gset
SELECT extension_token_stats_reset() IS NOT NULL AS reset;
SELECT count(*) FILTER (WHERE (extension_token_validate(:'counted')).valid) AS valid FROM generate_series(1, 3);
SELECT extension_token_revoke(:'counted') AS revoked;
SELECT (extension_token_validate(:'counted')).error AS after_revoke;
SELECT validations_succeeded, validations_failed, validations_cached FROM extension_token_stats();
-- extension_tokens.token_cache_size: 0 turns the cache off (no validation
-- answered from it); a change empties it (the token cached at size 8 is
-- verified again at size 16); only a superuser may set it.
SELECT access_token AS sized FROM extension_token_issue('20000000-0000-4000-8000-000000000009') \gset
SELECT count(*) FILTER (WHERE (extension_token_validate(:'sized')).valid) AS valid_before FROM generate_series(1, 2);
SELECT extension_token_stats_reset() IS NOT NULL AS reset;
SET extension_tokens.token_cache_size = 0;
SELECT count(*) FILTER (WHERE (extension_token_validate(:'sized')).valid) AS valid_uncached FROM generate_series(1, 3);
SELECT validations_succeeded, validations_cached FROM extension_token_stats();
SET extension_tokens.token_cache_size = 8;
SELECT count(*) FILTER (WHERE (extension_token_validate(:'sized')).valid) AS valid_cached FROM generate_series(1, 3);
SELECT validations_succeeded, validations_cached FROM extension_token_stats();
SET extension_tokens.token_cache_size = 16;
SELECT count(*) FILTER (WHERE (extension_token_validate(:'sized')).valid) AS valid_resized FROM generate_series(1, 2);
SELECT validations_succeeded, validations_cached FROM extension_token_stats();
RESET extension_tokens.token_cache_size;
SHOW extension_tokens.token_cache_size;
CREATE ROLE regress_cache_size_user;
SET ROLE regress_cache_size_user;
SET extension_tokens.token_cache_size = 1048576;
RESET ROLE;
DROP ROLE regress_cache_size_user;
RESET extension_tokens.issue_rate_limit;
