-- refresh: rotation, the old pair stops working, reuse revokes the session,
-- the retry window, every PT401 reason, p_current_token, the refresh rate
-- limit (PT429).
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.refresh_retry_window = 0;
SELECT access_token AS a1, refresh_token AS r1, session_id AS s1
  FROM extension_token_issue('30000000-0000-4000-8000-000000000001', 'ide', '1 hour', '{"plan": "team"}') \gset
SELECT access_token AS a2, refresh_token AS r2, session_id AS s2, expires_in, token_type
  FROM extension_token_refresh(:'r1', :'a1') \gset
SELECT :'s2' = :'s1' AS same_session, :'a2' <> :'a1' AS new_access, :'r2' <> :'r1' AS new_refresh,
       :expires_in AS expires_in, :'token_type' AS token_type;
-- the new access token carries the session's extra claims
SELECT valid, claims->>'plan' AS plan, claims->>'session_id' = :'s1' AS same_session
  FROM extension_token_validate(:'a2');
-- the old access token no longer works
SELECT valid, error FROM extension_token_validate(:'a1');
-- the rotation link: the exchanged token points at its successor, and the
-- session's row holds the new pair's hashes
SELECT used_at IS NOT NULL AS used, replaced_by = sha256(convert_to(:'r2', 'UTF8')) AS linked
  FROM extension_tokens WHERE token_hash = sha256(convert_to(:'r1', 'UTF8'));
SELECT access_hash = sha256(convert_to(:'a2', 'UTF8')) AS current_access,
       refresh_hash = sha256(convert_to(:'r2', 'UTF8')) AS current_refresh,
       retry_box IS NULL AS no_box_when_strict
  FROM extension_token_sessions WHERE session_id = :'s1';
SELECT refresh_count, last_refresh_at IS NOT NULL AS refreshed, status
  FROM extension_token_list('30000000-0000-4000-8000-000000000001');

-- Presenting r1 again is reuse: PT401, and the whole session is revoked,
-- including the pair that r1 was exchanged for.
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r1'));
SELECT valid, error FROM extension_token_validate(:'a2');
SELECT status, revoked_reason FROM extension_token_list('30000000-0000-4000-8000-000000000001');
-- r2, the live successor, is dead too
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r2'));

-- The retry window (default 30 s): presenting the exchanged token again
-- returns the same pair, byte for byte (a lost response, a second tab), and
-- the session lives on.
RESET extension_tokens.refresh_retry_window;
SHOW extension_tokens.refresh_retry_window;
SELECT refresh_token AS g1 FROM extension_token_issue('30000000-0000-4000-8000-000000000002') \gset
SELECT access_token AS g2_access, refresh_token AS g2 FROM extension_token_refresh(:'g1') \gset
SELECT access_token = :'g2_access' AS same_access, refresh_token = :'g2' AS same_refresh
  FROM extension_token_refresh(:'g1');
SELECT valid, error FROM extension_token_validate(:'g2_access');
-- The successor is kept only sealed: no column holds either token.
SELECT retry_box IS NOT NULL AS sealed,
       position(convert_to(:'g2', 'UTF8') IN retry_box) = 0 AS no_plain_refresh,
       position(convert_to(split_part(:'g2_access', '.', 3), 'UTF8') IN retry_box) = 0 AS no_plain_access
  FROM extension_token_sessions WHERE refresh_hash = sha256(convert_to(:'g2', 'UTF8'));
-- Once the successor has itself been exchanged, g1 is reuse: revoked.
SELECT access_token AS g3_access FROM extension_token_refresh(:'g2') \gset
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'g1')) AS after_successor_exchanged;
SELECT valid, error FROM extension_token_validate(:'g3_access');
-- After the window, re-presentation is reuse too.
SET extension_tokens.refresh_retry_window = 1;
SELECT refresh_token AS w1 FROM extension_token_issue('30000000-0000-4000-8000-00000000000a') \gset
SELECT access_token AS w2_access FROM extension_token_refresh(:'w1') \gset
SELECT pg_sleep(1.2);
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'w1')) AS after_window;
SELECT valid, error FROM extension_token_validate(:'w2_access');
-- Lowering the window to 0 is strict at once, for exchanges made before.
SET extension_tokens.refresh_retry_window = 30;
SELECT refresh_token AS z1 FROM extension_token_issue('30000000-0000-4000-8000-00000000000b') \gset
SELECT access_token AS z2_access FROM extension_token_refresh(:'z1') \gset
SET extension_tokens.refresh_retry_window = 0;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'z1')) AS strict_now;
SELECT valid, error FROM extension_token_validate(:'z2_access');

-- refresh_token_not_found: unknown, mistyped (checksum), an access token,
-- garbage, oversized
SELECT refresh_token AS gone, session_id AS gone_session FROM extension_token_issue('30000000-0000-4000-8000-000000000003') \gset
DELETE FROM extension_token_sessions WHERE session_id = :'gone_session';
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'gone')) AS deleted_session;
SELECT refresh_token AS typo FROM extension_token_issue('30000000-0000-4000-8000-000000000004') \gset
SELECT regress_try(format('SELECT extension_token_refresh(%L)',
       overlay(:'typo' placing CASE substr(:'typo', 20, 1) WHEN 'a' THEN 'b' ELSE 'a' END from 20 for 1))) AS mistyped;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', t)) AS refused
  FROM unnest(ARRAY[:'a1', 'garbage', '', 'ext_rt_', repeat('x', 100000)]) AS t;
-- a NULL refresh token is a bad argument
SELECT regress_try('SELECT extension_token_refresh(NULL)');
-- session_revoked
SELECT access_token AS v_access, refresh_token AS v_refresh FROM extension_token_issue('30000000-0000-4000-8000-000000000005') \gset
SELECT extension_token_revoke(:'v_access');
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'v_refresh'));
-- refresh_token_expired
SET extension_tokens.refresh_token_lifetime = '1s';
SELECT refresh_token AS short_refresh FROM extension_token_issue('30000000-0000-4000-8000-000000000006', p_lifetime => '1 second') \gset
RESET extension_tokens.refresh_token_lifetime;
SELECT pg_sleep(1.5);
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'short_refresh'));

-- p_current_token must be a token of ours for the same session (22023);
-- an expired access token is fine (that is when clients refresh).
SELECT access_token AS c_access, refresh_token AS c_refresh FROM extension_token_issue('30000000-0000-4000-8000-000000000007') \gset
SELECT access_token AS o_access FROM extension_token_issue('30000000-0000-4000-8000-000000000008') \gset
SELECT regress_try(format('SELECT extension_token_refresh(%L, %L)', :'c_refresh', :'o_access')) AS other_session;
SELECT regress_try(format('SELECT extension_token_refresh(%L, %L)', :'c_refresh', 'not-a-token')) AS garbage;
SELECT regress_try(format('SELECT extension_token_refresh(%L, %L)', :'c_refresh',
       regress_sign('{"alg": "HS256", "typ": "JWT"}', regress_claims('{"exp": 1, "iat": 0}')))) AS expired_foreign;
-- ... and none of those consumed the refresh token
SELECT token_type FROM extension_token_refresh(:'c_refresh', :'c_access');

-- Rate limit: 2 refreshes per hour per user, then PT429.
SET extension_tokens.refresh_rate_limit = 2;
SELECT refresh_token AS rl FROM extension_token_issue('30000000-0000-4000-8000-000000000009') \gset
SELECT refresh_token AS rl FROM extension_token_refresh(:'rl') \gset
SELECT refresh_token AS rl FROM extension_token_refresh(:'rl') \gset
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'rl'));
-- the refused refresh did not use up the token: it works once allowed
SET extension_tokens.refresh_rate_limit = 0;
SELECT token_type FROM extension_token_refresh(:'rl');
RESET extension_tokens.refresh_rate_limit;
