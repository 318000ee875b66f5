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
-- revoked rows keep their hashes and times; list never shows a hash
SELECT count(*) AS revoked_token_rows FROM extension_tokens
 WHERE user_id = '40000000-0000-4000-8000-000000000001' AND revoked_at IS NOT NULL;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'extension_token_session'::regclass AND attnum > 0 ORDER BY attnum;
