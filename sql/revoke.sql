-- revoke and revoke_user_extension_tokens: RFC 7009 semantics, sessions
-- ended by either token, counts, list statuses.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SELECT access_token AS a1, refresh_token AS r1 FROM extension_token_issue('40000000-0000-4000-8000-000000000001', 'one') \gset
SELECT access_token AS a2, refresh_token AS r2 FROM extension_token_issue('40000000-0000-4000-8000-000000000001', 'two') \gset
SELECT access_token AS a3 FROM extension_token_issue('40000000-0000-4000-8000-000000000001', 'three') \gset
-- by access token: true once, then false
SELECT extension_token_revoke(:'a1') AS first, extension_token_revoke(:'a1') AS again;
-- the refresh token of that session is dead too
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r1'));
-- by refresh token: the access token of that session stops working
SELECT extension_token_revoke(:'r2') AS by_refresh;
SELECT valid, error FROM extension_token_validate(:'a2');
-- unknown, malformed, empty, NULL, oversized: false, no error
SELECT extension_token_revoke(t) AS revoked
  FROM unnest(ARRAY[regress_sign('{"alg": "HS256"}', regress_claims()), 'garbage', '', NULL,
                    repeat('y', 1000000)]) AS t;
SELECT name, status, revoked_reason FROM extension_token_list('40000000-0000-4000-8000-000000000001');
-- revoke all: counts only sessions that were still active
SELECT access_token AS a4 FROM extension_token_issue('40000000-0000-4000-8000-000000000001', 'four') \gset
SELECT revoke_user_extension_tokens('40000000-0000-4000-8000-000000000001') AS revoked;
SELECT revoke_user_extension_tokens('40000000-0000-4000-8000-000000000001') AS revoked_again;
SELECT valid, error FROM extension_token_validate(:'a3');
SELECT name, status, revoked_reason FROM extension_token_list('40000000-0000-4000-8000-000000000001');
-- a user with nothing
SELECT revoke_user_extension_tokens('40000000-0000-4000-8000-0000000000ff') AS nothing;
SELECT count(*) FROM extension_token_list('40000000-0000-4000-8000-0000000000ff');
-- revoked sessions keep their hashes and times; list never shows a hash
SELECT count(*) AS revoked_sessions_with_hashes FROM extension_token_sessions
 WHERE user_id = '40000000-0000-4000-8000-000000000001' AND revoked_at IS NOT NULL
   AND access_hash IS NOT NULL AND refresh_hash IS NOT NULL;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'extension_token_session'::regclass AND attnum > 0 ORDER BY attnum;

-- A rotated-away token still names its session: revoking with the access
-- token of an earlier pair ends the session, the current pair included
-- (what a revocation racing a refresh relies on).
SELECT access_token AS old_access, refresh_token AS old_refresh
  FROM extension_token_issue('40000000-0000-4000-8000-000000000002', 'rotated') \gset
SELECT access_token AS new_access FROM extension_token_refresh(:'old_refresh') \gset
SELECT extension_token_revoke(:'old_access') AS by_old_access;
SELECT valid, error FROM extension_token_validate(:'new_access');

-- revoke_session (1.2): by id, as a dashboard's "Revoke" button does; true
-- once, false for an unknown or already revoked session, NULL is false.
SELECT access_token AS d1, session_id AS ds1 FROM extension_token_issue('40000000-0000-4000-8000-000000000003', 'laptop') \gset
SELECT access_token AS d2, session_id AS ds2 FROM extension_token_issue('40000000-0000-4000-8000-000000000003', 'desktop') \gset
SELECT access_token AS d3, session_id AS ds3 FROM extension_token_issue('40000000-0000-4000-8000-000000000003', 'cli') \gset
SELECT extension_token_revoke_session(:'ds1') AS first, extension_token_revoke_session(:'ds1') AS again,
       extension_token_revoke_session('00000000-0000-4000-8000-0000000000ff') AS unknown,
       extension_token_revoke_session(NULL) AS null_id;
SELECT valid, error FROM extension_token_validate(:'d1');
SELECT valid FROM extension_token_validate(:'d2');
-- "Sign out my other devices": everything but the session named.
SELECT revoke_user_extension_tokens('40000000-0000-4000-8000-000000000003', :'ds3') AS others_revoked;
SELECT name, status, revoked_reason FROM extension_token_list('40000000-0000-4000-8000-000000000003');
SELECT valid FROM extension_token_validate(:'d3');
-- A signed-in user (PostgREST) revokes only his own sessions by id.
SELECT access_token AS e1, session_id AS es1 FROM extension_token_issue('40000000-0000-4000-8000-000000000004', 'mine') \gset
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "40000000-0000-4000-8000-000000000003", "role": "authenticated"}', true) IS NOT NULL AS claims_set;
SELECT regress_try(format('SELECT extension_token_revoke_session(%L)', :'es1')) AS other_users_session;
SELECT extension_token_revoke_session(:'ds3') AS own_session;
COMMIT;
SELECT valid FROM extension_token_validate(:'e1');
SELECT name, status, revoked_reason FROM extension_token_list('40000000-0000-4000-8000-000000000003') WHERE name = 'cli';
