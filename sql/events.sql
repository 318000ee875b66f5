-- events: the audit trail.  One event per issue, refresh, revocation,
-- reuse, rate-limit refusal, API key creation and device approval, written
-- in the transaction of the change (a revocation rolled back leaves none);
-- reuse and rate limits outlive the caller's error (written by the revoker's
-- worker); users read their own, administrators all; retention; lookup by a
-- token; never a token in the table.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.refresh_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SET extension_tokens.refresh_retry_window = 0;

-- Waits (at most 10 s) until the worker has committed n events of this kind
-- for the user; the events of a refused call are committed after its error.
CREATE FUNCTION regress_wait_event(p_user text, p_event text, p_n integer DEFAULT 1)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. 200 LOOP
    IF (SELECT count(*) FROM extension_token_events(p_user) e WHERE e.event = p_event) >= p_n THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN false;
END
$$;

-- issue, refresh, revoke: one event each, by this role, of the session
SELECT access_token AS a1, refresh_token AS r1, session_id AS s1
  FROM extension_token_issue('ev_alice', 'laptop') \gset
SELECT access_token AS a2, refresh_token AS r2 FROM extension_token_refresh(:'r1') \gset
SELECT extension_token_revoke(:'a2') AS revoked;
SELECT event, user_id, session_id = :'s1' AS of_s1, actor = current_user AS actor_is_caller, reason
  FROM extension_token_events('ev_alice') ORDER BY event_id;

-- a revocation rolled back leaves no event
SELECT access_token AS a3, refresh_token AS r3, session_id AS s3
  FROM extension_token_issue('ev_alice', 'phone') \gset
BEGIN;
SELECT extension_token_revoke_session(:'s3') AS revoked_then_rolled_back;
ROLLBACK;
SELECT count(*) AS revoked_events_of_s3 FROM extension_token_events('ev_alice')
 WHERE session_id = :'s3' AND event = 'revoked';

-- reuse: PT401, and its event (and the revocation's) survive the error
SELECT refresh_token AS r3b FROM extension_token_refresh(:'r3') \gset
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r3'));
SELECT regress_wait_event('ev_alice', 'reuse_detected') AS reuse_recorded;
SELECT regress_wait_event('ev_alice', 'revoked', 2) AS revocation_recorded;
SELECT event, reason FROM extension_token_events('ev_alice')
 WHERE session_id = :'s3' ORDER BY event_id;

-- rate limits: the refusals are recorded, though the call failed
SET extension_tokens.refresh_rate_limit = 1;
SELECT refresh_token AS r4, session_id AS s4 FROM extension_token_issue('ev_carol', 'tablet') \gset
SELECT refresh_token AS r4b FROM extension_token_refresh(:'r4') \gset
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r4b'));
SET extension_tokens.refresh_rate_limit = 0;
SET extension_tokens.issue_rate_limit = 1;
SELECT count(*) AS issued FROM extension_token_issue('ev_bob', 'first');
SELECT regress_try($$SELECT extension_token_issue('ev_bob', 'second')$$);
SET extension_tokens.issue_rate_limit = 0;
SELECT regress_wait_event('ev_carol', 'rate_limited') AS refresh_refusal_recorded,
       regress_wait_event('ev_bob', 'rate_limited') AS issue_refusal_recorded;
SELECT user_id, event, session_id = :'s4' AS of_s4, reason FROM extension_token_events()
 WHERE user_id IN ('ev_bob', 'ev_carol') ORDER BY user_id DESC, event_id;

-- an API key, a device approval
SELECT key_id AS k1 FROM extension_token_api_key_create('ev_alice', 'ci') \gset
SELECT event, session_id = :'k1' AS of_key FROM extension_token_events('ev_alice')
 WHERE event = 'api_key_created';
SELECT user_code AS uc FROM extension_token_device_start('add-in') \gset
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "ev_alice", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT extension_token_device_approve(:'uc') AS approved;
COMMIT;
SELECT event, user_id, actor FROM extension_token_events('ev_alice') WHERE event = 'device_approved';

-- users read their own events only; administrators all
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "ev_bob", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT user_id, event FROM extension_token_events() ORDER BY event_id;
SELECT regress_try($$SELECT count(*) FROM extension_token_events('ev_alice')$$);
SELECT regress_try($$SELECT count(*) FROM extension_token_events_by_token('x')$$);
SELECT regress_try($$SELECT count(*) FROM extension_token_events$$);
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_et_service;
SELECT count(DISTINCT user_id) >= 3 AS admin_sees_all FROM extension_token_events();
SELECT count(*) AS alice_since_tomorrow FROM extension_token_events('ev_alice', now() + interval '1 day');
ROLLBACK;

-- lookup by token (any token of the session, expired or exchanged): the
-- session's history
SELECT event FROM extension_token_events_by_token(:'a1') ORDER BY event_id;
SELECT count(*) AS by_exchanged_refresh FROM extension_token_events_by_token(:'r1');
SELECT count(*) AS by_garbage FROM extension_token_events_by_token('garbage');
SELECT count(*) AS by_null FROM extension_token_events_by_token(NULL);

-- no token anywhere in the table; token_hash is the minted access token's
SELECT count(*) AS rows_with_a_token FROM extension_token_events e
 WHERE e::text LIKE '%' || :'a1' || '%' OR e::text LIKE '%' || :'r1' || '%'
    OR e::text LIKE '%' || :'a2' || '%' OR e::text LIKE '%' || :'r3' || '%';
SELECT token_hash = sha256(convert_to(:'a1', 'UTF8')) AS issued_hash
  FROM extension_token_events WHERE session_id = :'s1' AND event = 'issued';

-- event_log = security: issue and refresh are not recorded, revocations are
SET extension_tokens.event_log = security;
SELECT refresh_token AS r5, session_id AS s5 FROM extension_token_issue('ev_dave', 'quiet') \gset
SELECT count(*) AS refreshed FROM extension_token_refresh(:'r5');
SELECT extension_token_revoke_session(:'s5') AS revoked;
SELECT event FROM extension_token_events('ev_dave') ORDER BY event_id;
RESET extension_tokens.event_log;

-- retention: cleanup deletes the events older than event_retention only
SELECT count(*) AS issued FROM extension_token_issue('ev_old', 'ancient');
UPDATE extension_token_events SET at = at - interval '100 days' WHERE user_id = 'ev_old';
SET extension_tokens.event_retention = '90d';
SELECT extension_tokens_cleanup() >= 1 AS cleaned;
SELECT count(*) AS old_events_left FROM extension_token_events('ev_old');
SELECT count(*) > 0 AS recent_events_kept FROM extension_token_events('ev_alice');
SET extension_tokens.event_retention = 0;
UPDATE extension_token_events SET at = at - interval '1000 days' WHERE user_id = 'ev_dave';
SELECT extension_tokens_cleanup() >= 0 AS cleaned;
SELECT count(*) AS kept_forever_with_0 FROM extension_token_events('ev_dave');
RESET extension_tokens.event_retention;

-- expiring soon: an API key whose end entered the last 7 days today is
-- announced (the payload is checked by test/t/010_events.pl), once
SELECT count(*) AS key FROM extension_token_api_key_create('ev_erin', 'expiring', NULL, interval '6 days 12 hours');
SELECT extension_tokens_notify_expiring() AS notified;
SELECT extension_tokens_notify_expiring('7 days', '6 hours') AS notified_again_later;
SELECT extension_tokens_notify_expiring('5 days') AS not_yet;

-- a session that ran out leaves session_expired when the cleanup deletes it
-- (a revoked one does not: its event is "revoked")
SELECT session_id AS s6 FROM extension_token_issue('ev_frank', 'short') \gset
SELECT session_id AS s7 FROM extension_token_issue('ev_frank', 'revoked') \gset
SELECT extension_token_revoke_session(:'s7') AS revoked;
UPDATE extension_token_sessions SET refresh_expires_at = now() - interval '8 days',
       expires_at = now() - interval '8 days', check_after = now() - interval '8 days',
       revoked_at = CASE WHEN revoked_at IS NULL THEN NULL ELSE now() - interval '8 days' END
 WHERE user_id = 'ev_frank';
SELECT extension_tokens_cleanup() >= 2 AS cleaned;
SELECT count(*) AS ev_frank_sessions_left FROM extension_token_sessions WHERE user_id = 'ev_frank';
SELECT event, session_id = :'s6' AS of_s6, reason, at < now() - interval '7 days' AS dated_at_expiry
  FROM extension_token_events('ev_frank') WHERE event IN ('session_expired', 'revoked') ORDER BY event_id;

-- daily figures from the events: zero-filled days and kinds, and they
-- survive the cleanup of the sessions they count
SELECT count(*) AS rows_for_3_days, count(DISTINCT day) AS days, min(events) AS least
  FROM extension_token_events_daily(3) WHERE day < current_date;
SELECT events > 0 AS issued_today FROM extension_token_events_daily(1)
 WHERE day = current_date AND event = 'issued';
SELECT events AS issued_today FROM extension_token_events_daily(1)
 WHERE day = current_date AND event = 'issued' \gset
-- as the cleanup would, once they are dead: ev_alice's sessions go
DELETE FROM extension_tokens WHERE session_id IN
  (SELECT session_id FROM extension_token_sessions WHERE user_id = 'ev_alice');
DELETE FROM extension_token_sessions WHERE user_id = 'ev_alice';
SELECT events = :issued_today AS issued_today_unchanged FROM extension_token_events_daily(1)
 WHERE day = current_date AND event = 'issued';

-- the other rate limits: failed device approvals beyond 10 an hour (the
-- guard against guessing user codes), and a device code polled faster than
-- its interval (recorded once per code: anyone may poll a code they started)
SELECT count(*) FILTER (WHERE NOT extension_token_device_approve('BCDF-GHJK', 'ev_gina')) AS failed_approvals
  FROM generate_series(1, 10);
SELECT regress_try($$SELECT extension_token_device_approve('BCDF-GHJK', 'ev_gina')$$);
SELECT regress_wait_event('ev_gina', 'rate_limited') AS approval_refusal_recorded;
SELECT event, reason, session_id FROM extension_token_events('ev_gina') ORDER BY event_id;
CREATE FUNCTION regress_wait_reason(p_reason text, p_n integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. 200 LOOP
    IF (SELECT count(*) FROM extension_token_events() e WHERE e.reason = p_reason) >= p_n THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN false;
END
$$;
SELECT count(*) AS poll_limited_before FROM extension_token_events() WHERE reason = 'device_poll_interval' \gset
SELECT device_code AS dc FROM extension_token_device_start('poller') \gset
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc')) AS first_poll;
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc')) AS too_soon;
SELECT regress_try(format('SELECT extension_token_device_poll(%L)', :'dc')) AS too_soon_again;
SELECT regress_wait_reason('device_poll_interval', :poll_limited_before + 1) AS poll_refusal_recorded;
SELECT pg_sleep(0.5);
SELECT count(*) - :poll_limited_before AS poll_refusals_recorded,
       count(*) FILTER (WHERE user_id IS NULL AND session_id IS NULL) - :poll_limited_before AS anonymous
  FROM extension_token_events() WHERE event = 'rate_limited' AND reason = 'device_poll_interval';
DROP FUNCTION regress_wait_reason(text, integer);

-- signing key rotations (secret_rotated): the worker records them after a
-- reload (operations.sql, test/t/011_secret_rotated.pl); here the record
-- itself, as extension_tokens_check_signing_keys() and the cleanup make it.
-- In one transaction, so that the worker waits on the row: a record that
-- is not the keys in force is a rotation, written once, by this role.
SELECT secret_id = (SELECT key_id FROM extension_tokens_signing_keys() WHERE status = 'current')
       AS state_is_the_secret_in_force, algorithm, key_id
  FROM extension_token_signing_state;
SELECT extension_tokens_check_signing_keys() AS nothing_changed;
BEGIN;
UPDATE extension_token_signing_state SET secret_id = 'feedfacefeedface';
SELECT extension_tokens_check_signing_keys() AS rotated;
SELECT extension_tokens_check_signing_keys() AS once;
SELECT event, user_id, session_id, actor = current_user AS by_caller,
       reason = format('jwt_secret %s (was feedfacefeedface)',
                       (SELECT key_id FROM extension_tokens_signing_keys() WHERE status = 'current')) AS reason_ok
  FROM extension_token_events WHERE event = 'secret_rotated' AND reason LIKE '%feedface%';
ROLLBACK;
BEGIN;
UPDATE extension_token_signing_state SET algorithm = 'EdDSA', key_id = 'regress-old-kid';
SELECT extension_tokens_cleanup() >= 0 AS cleanup_records_it_too;
SELECT reason FROM extension_token_events WHERE event = 'secret_rotated' AND reason LIKE '%regress-old-kid%';
ROLLBACK;
-- administrators only, even with EXECUTE granted; users never see these
-- events (no user id)
GRANT EXECUTE ON FUNCTION extension_tokens_check_signing_keys() TO regress_et_mallory;
SET SESSION AUTHORIZATION regress_et_mallory;
SELECT regress_try($$SELECT extension_tokens_check_signing_keys()$$);
RESET SESSION AUTHORIZATION;
REVOKE EXECUTE ON FUNCTION extension_tokens_check_signing_keys() FROM regress_et_mallory;
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT regress_try($$SELECT extension_tokens_check_signing_keys()$$);
SELECT set_config('request.jwt.claims', '{"sub": "ev_bob", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT count(*) AS rotations_seen_by_a_user FROM extension_token_events() WHERE event = 'secret_rotated';
ROLLBACK;

-- issued per day survives the cleanup: the sessions and API keys it deletes
-- are counted in the rollup of their quarter hour; every day of 30 present
SELECT count(*) AS days, count(DISTINCT day) AS distinct_days, min(day) = date_trunc('day', now()) - interval '29 days' AS from_29_days_ago
  FROM extension_tokens_issued_daily;
SELECT sessions_issued AS s_before, api_keys_created AS k_before FROM extension_tokens_issued_daily
 WHERE day = date_trunc('day', now()) \gset
SELECT tokens_issued_24h AS h24_before FROM extension_token_stats() \gset
SELECT count(*) AS issued FROM extension_token_issue('ev_hank', 'gone soon');
SELECT count(*) AS issued FROM extension_token_issue('ev_hank', 'gone too');
SELECT count(*) AS key FROM extension_token_api_key_create('ev_hank', 'gone key');
SELECT sessions_issued - :s_before AS sessions_added, api_keys_created - :k_before AS keys_added
  FROM extension_tokens_issued_daily WHERE day = date_trunc('day', now());
UPDATE extension_token_sessions SET revoked_at = now() - interval '8 days', check_after = now() - interval '8 days'
 WHERE user_id = 'ev_hank';
SELECT extension_tokens_cleanup() >= 3 AS cleaned;
SELECT count(*) AS ev_hank_sessions_left FROM extension_token_sessions WHERE user_id = 'ev_hank';
SELECT sessions_issued - :s_before AS sessions_still_counted, api_keys_created - :k_before AS keys_still_counted
  FROM extension_tokens_issued_daily WHERE day = date_trunc('day', now());
SELECT tokens_issued_24h - :h24_before AS issued_24h_still_counted FROM extension_token_stats();
SELECT kind, sum(sessions) > 0 AS rolled_up,
       bool_and(extract(epoch FROM bucket)::bigint % 900 = 0) AS quarter_hours
  FROM extension_token_issued_rollup GROUP BY kind ORDER BY kind;
-- a second cleanup adds nothing: the figures are counted once
SELECT extension_tokens_cleanup() >= 0 AS cleaned_again;
SELECT sessions_issued - :s_before AS sessions_counted_once FROM extension_tokens_issued_daily
 WHERE day = date_trunc('day', now());
-- extension_tokens_grant_api_roles() (postgrest.sql ran it) let the service
-- role read the view, and no other API role
SELECT has_table_privilege('regress_et_service', 'extension_tokens_issued_daily', 'SELECT') AS service_reads,
       has_table_privilege('regress_et_authenticated', 'extension_tokens_issued_daily', 'SELECT') AS authenticated_reads,
       has_table_privilege('regress_et_anon', 'extension_tokens_issued_daily', 'SELECT') AS anon_reads;

DROP FUNCTION regress_wait_event(text, text, integer);
RESET extension_tokens.issue_rate_limit;
RESET extension_tokens.refresh_rate_limit;
RESET extension_tokens.max_sessions_per_user;
RESET extension_tokens.refresh_retry_window;
