-- The token lifecycle in psql: issue -> validate -> refresh -> the old pair
-- is rejected (a retry gets the same new pair, reuse revokes the session)
-- -> revoke -> rejected.  Run by ./quickstart.sh.
\set ON_ERROR_STOP 0
\pset footer off
CREATE EXTENSION IF NOT EXISTS extension_tokens;

\echo '\n1. The dashboard issues a token pair for a user (30-day access, 90-day refresh):'
SELECT * FROM extension_token_issue(p_user_id => 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                                    p_name    => 'VS Code add-in') \gset
SELECT left(:'access_token', 20) || '...' AS access_token,
       left(:'refresh_token', 14) || '...' AS refresh_token,
       :'token_type' AS token_type, :expires_in AS expires_in, :'session_id' AS session_id;

\echo '\n2. The add-in sends the access token with every call; the API validates it:'
SELECT valid, error, user_id, token_name, expires_at FROM extension_token_validate(:'access_token');

\echo '\n3. Before it expires, the add-in exchanges the refresh token for a new pair:'
SELECT access_token AS new_access, refresh_token AS new_refresh
  FROM extension_token_refresh(p_refresh_token => :'refresh_token', p_current_token => :'access_token') \gset
SELECT valid, error, token_name FROM extension_token_validate(:'new_access');

\echo '\n4. The old pair no longer works.  The old access token:'
SELECT valid, error FROM extension_token_validate(:'access_token');
\echo 'The old refresh token presented again within extension_tokens.refresh_retry_window'
\echo '(30 s: the add-in retrying after a lost response) gets the same new pair, not another one:'
SELECT access_token = :'new_access' AS same_access_token, refresh_token = :'new_refresh' AS same_refresh_token
  FROM extension_token_refresh(:'refresh_token');
\echo 'Any other time (the window set to 0 here, rather than waiting) it is treated as theft (PT401):'
SET extension_tokens.refresh_retry_window = 0;
\set VERBOSITY default
SELECT * FROM extension_token_refresh(:'refresh_token');
\echo 'and the whole session is revoked, the new pair with it:'
SELECT valid, error FROM extension_token_validate(:'new_access');

\echo '\n5. A new session; the user revokes it from the dashboard:'
SELECT access_token AS a3, refresh_token AS r3
  FROM extension_token_issue('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'JetBrains add-in') \gset
SELECT extension_token_revoke(:'a3') AS revoked;
SELECT valid, error FROM extension_token_validate(:'a3');
SELECT * FROM extension_token_refresh(:'r3');

\echo '\n6. What the user sees in the dashboard (no token, no hash):'
SELECT name, status, revoked_reason, refresh_count, created_at
  FROM extension_token_list('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
\echo '\nAnd what the tables hold: hashes only.  One row per session, with the SHA-256'
\echo 'of its current access and refresh token:'
SELECT name, left(encode(access_hash, 'hex'), 16) || '...' AS access_sha256,
       left(encode(refresh_hash, 'hex'), 16) || '...' AS refresh_sha256, revoked_reason
  FROM extension_token_sessions ORDER BY created_at;
\echo 'and one row per exchanged refresh token, so that its reuse is recognised:'
SELECT left(encode(token_hash, 'hex'), 16) || '...' AS exchanged_sha256,
       left(encode(replaced_by, 'hex'), 16) || '...' AS replaced_by_sha256, used_at
  FROM extension_tokens ORDER BY used_at;
