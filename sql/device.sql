-- device: device authorization (RFC 8628), the hand-off from dashboard to
-- add-in: start (anonymous), approve / deny (the signed-in user), poll
-- (anonymous), every PT400 reason, codes stored as hashes only, guessing
-- limited.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SET extension_tokens.device_verification_uri = 'https://dashboard.example.com/device';

-- The add-in starts, with the anon key.
BEGIN;
SET LOCAL ROLE regress_et_anon;
SELECT device_code AS dc, user_code AS uc, verification_uri_complete AS vuc, expires_in, "interval"
  FROM extension_token_device_start('VS Code add-in', ARRAY['notes:read']) \gset
COMMIT;
SELECT :'dc' ~ '^ext_dc_[0-9A-Za-z]{43}$' AS device_code_format,
       :'uc' ~ '^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$' AS user_code_format,
       :'vuc' = 'https://dashboard.example.com/device?user_code=' || :'uc' AS complete_uri,
       :expires_in AS expires_in, :interval AS poll_interval;
-- only hashes are stored
SELECT count(*) AS rows_with_a_code FROM extension_token_devices d
 WHERE d::text LIKE '%' || :'dc' || '%' OR d::text LIKE '%' || replace(:'uc', '-', '') || '%';
SELECT device_hash = sha256(convert_to(:'dc', 'UTF8')) AS device_hashed, status FROM extension_token_devices;

-- Pending: the add-in is told so; polling again at once is slow_down.
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc')) AS first_poll;
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc')) AS too_soon;

-- An anonymous request cannot approve; the signed-in user approves the code
-- as he types it (case, spaces and dashes ignored).
BEGIN;
SET LOCAL ROLE regress_et_anon;
SELECT regress_try(format('SELECT extension_token_device_approve(%L)', :'uc')) AS anonymous_approve;
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "user_device_1", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT extension_token_device_approve(lower(replace(:'uc', '-', ' '))) AS approved;
SELECT extension_token_device_approve(:'uc') AS approved_twice;
COMMIT;

-- The next poll (after the interval) gets the pair, once: a session of the
-- approving user, with the name and scopes the add-in asked for.
SELECT pg_sleep(5.1);
SELECT access_token AS da, session_id AS ds FROM extension_token_device_poll(:'dc') \gset
SELECT valid, user_id, token_name, scopes FROM extension_token_validate(:'da');
SELECT status, session_id = :'ds' AS recorded FROM extension_token_devices
 WHERE device_hash = sha256(convert_to(:'dc', 'UTF8'));
SELECT pg_sleep(5.1);
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc')) AS second_pair;

-- Denied: access_denied.
SELECT device_code AS dc2, user_code AS uc2 FROM extension_token_device_start() \gset
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "user_device_1", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT extension_token_device_deny(:'uc2') AS denied;
COMMIT;
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc2')) AS after_deny;

-- Expired (a code past device_code_lifetime), unknown, malformed: expired_token.
SELECT device_code AS dc3, user_code AS uc3 FROM extension_token_device_start() \gset
UPDATE extension_token_devices SET expires_at = now() - interval '1 second'
 WHERE device_hash = sha256(convert_to(:'dc3', 'UTF8'));
SELECT extension_token_device_approve(:'uc3', 'user_device_1') AS approve_expired;
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', c)) AS refused
  FROM unnest(ARRAY[:'dc3', 'ext_dc_' || repeat('A', 43), 'garbage', '', NULL]) AS c;
-- Approved in time, but polled only after the lifetime: expired_token too
-- (no pair, and no session is made).
SELECT device_code AS dc4, user_code AS uc4 FROM extension_token_device_start() \gset
SELECT extension_token_device_approve(:'uc4', 'user_device_1') AS approved_in_time;
UPDATE extension_token_devices SET expires_at = now() - interval '1 second'
 WHERE device_hash = sha256(convert_to(:'dc4', 'UTF8'));
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc4')) AS approved_then_expired;
SELECT status, session_id IS NULL AS no_session FROM extension_token_devices
 WHERE device_hash = sha256(convert_to(:'dc4', 'UTF8'));

-- Guessing: a user's failed approvals are limited (10 an hour), then PT429;
-- another user is not affected.
SELECT extension_token_device_approve(c, 'user_device_2') AS guess
  FROM unnest(ARRAY['BBBB-BBBB', 'CCCC-CCCC', 'DDDD-DDDD', 'FFFF-FFFF', 'GGGG-GGGG', 'not a code',
                    'HHHH-HHHH', 'JJJJ-JJJJ', 'KKKK-KKKK']) AS c;
SELECT regress_try($$SELECT extension_token_device_approve('LLLL-LLLL', 'user_device_2')$$) AS tenth_failure;
SELECT regress_try($$SELECT extension_token_device_approve('MMMM-MMMM', 'user_device_2')$$) AS eleventh;
SELECT extension_token_device_approve('NNNN-NNNN', 'user_device_3') AS other_user;

-- Bad arguments at start: 22023.
SELECT regress_try($$SELECT extension_token_device_start('', NULL)$$);
SELECT regress_try($$SELECT extension_token_device_start('x', ARRAY['Bad Scope'])$$);
RESET extension_tokens.device_verification_uri;
RESET extension_tokens.issue_rate_limit;
RESET extension_tokens.max_sessions_per_user;
