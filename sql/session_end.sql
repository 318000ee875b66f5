-- session_end: the one rule for a session's end (1.2), at each edge, and
-- across setting changes: a session's limits are fixed when it is issued,
-- so a setting changed later neither ends it early nor revives it.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;

-- The rule itself, at each edge: each limit is reached at its instant.
SELECT extension_token_session_state(revoked, refresh_exp, ends, idle, last_active, at) AS state, why
  FROM (VALUES
    (NULL::timestamptz, '2030-01-01'::timestamptz, 'infinity'::timestamptz, NULL::interval,
     '2029-12-31'::timestamptz, '2029-12-31 23:59:59.999999'::timestamptz, 'a microsecond before refresh expiry'),
    (NULL, '2030-01-01', 'infinity', NULL, '2029-12-31', '2030-01-01', 'at refresh expiry'),
    (NULL, '2031-01-01', '2030-01-01', NULL, '2029-12-31', '2029-12-31 23:59:59.999999', 'a microsecond before its end'),
    (NULL, '2031-01-01', '2030-01-01', NULL, '2029-12-31', '2030-01-01', 'at its end'),
    (NULL, '2031-01-01', 'infinity', '1 hour', '2030-01-01 10:00', '2030-01-01 10:59:59.999999', 'idle a microsecond less than its timeout'),
    (NULL, '2031-01-01', 'infinity', '1 hour', '2030-01-01 10:00', '2030-01-01 11:00', 'idle exactly its timeout'),
    (NULL, '2031-01-01', 'infinity', NULL, '2000-01-01', '2030-01-01', 'never used, no idle timeout'),
    ('2029-01-01', '2031-01-01', 'infinity', NULL, '2029-01-01', '2030-01-01', 'revoked'),
    ('2029-01-01', '2000-01-01', '2000-01-01', '1 second', '2000-01-01', '2030-01-01', 'revoked and expired: revoked'),
    (NULL, NULL, NULL, NULL, NULL, '2030-01-01', 'no limits at all'),
    (NULL, '2031-01-01', 'infinity', NULL, '2029-12-31', NULL, 'no instant: unknown')
  ) AS t(revoked, refresh_exp, ends, idle, last_active, at, why);

-- Validate, refresh, list, stats and the admin view agree at an idle edge.
SET extension_tokens.session_inactivity_timeout = '1s';
SET extension_tokens.last_used_interval = 0;
SELECT access_token AS ia, refresh_token AS ir, session_id AS isid FROM extension_token_issue('session-end-idle') \gset
SELECT pg_sleep(1.1);
SELECT (SELECT error FROM extension_token_validate(:'ia')) AS validate,
       (SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'ir'))) AS refresh,
       (SELECT status FROM extension_token_list('session-end-idle')) AS list,
       (SELECT status FROM extension_token_sessions_admin WHERE session_id = :'isid') AS admin_view;
-- Raising the timeout afterwards does not bring the ended session back.
SET extension_tokens.session_inactivity_timeout = '1h';
SELECT (SELECT error FROM extension_token_validate(:'ia')) AS validate_after_raise,
       (SELECT status FROM extension_token_list('session-end-idle')) AS list_after_raise;
-- And a session issued with no timeout is not ended by one set later.
RESET extension_tokens.session_inactivity_timeout;
SELECT access_token AS na FROM extension_token_issue('session-end-none') \gset
SET extension_tokens.session_inactivity_timeout = '1s';
SELECT pg_sleep(1.1);
SELECT valid AS issued_without_timeout_still_valid FROM extension_token_validate(:'na');
RESET extension_tokens.session_inactivity_timeout;

-- A session in constant use only through read-only validations (PostgREST
-- GETs) and pre-request checks never ends as idle: every use counts at
-- once, though none is written in the caller's transaction.
SET extension_tokens.session_inactivity_timeout = '2s';
SELECT access_token AS ga FROM extension_token_issue('session-end-gets') \gset
SELECT set_config('regress.ga', :'ga', false) IS NOT NULL AS kept;
BEGIN READ ONLY;
DO $$
DECLARE tok text := current_setting('regress.ga');
BEGIN
  FOR i IN 1..8 LOOP
    PERFORM pg_sleep(0.5);
    IF i % 2 = 0 THEN
      PERFORM set_config('request.jwt.claims',
        convert_from(regress_b64url_decode(split_part(tok, '.', 2)), 'UTF8'), true);
      PERFORM extension_token_pre_request();
    ELSE
      IF NOT (SELECT valid FROM extension_token_validate(tok)) THEN
        RAISE EXCEPTION 'ended while in use, at use %', i;
      END IF;
    END IF;
  END LOOP;
END $$;
COMMIT;
SELECT valid AS alive_after_4s_of_gets FROM extension_token_validate(:'ga');
SELECT pg_sleep(2.1);
SELECT error AS idle_afterwards FROM extension_token_validate(:'ga');
RESET extension_tokens.session_inactivity_timeout;

-- Max lifetime: lowering it later changes no existing session, in any view.
SELECT access_token AS la FROM extension_token_issue('session-end-lifetime') \gset
SET extension_tokens.session_max_lifetime = '1s';
SELECT pg_sleep(1.1);
SELECT (SELECT valid FROM extension_token_validate(:'la')) AS validate,
       (SELECT status FROM extension_token_list('session-end-lifetime')) AS list;
-- ... while a session issued under it ends at it, everywhere at once.
SELECT access_token AS lb, refresh_token AS lbr FROM extension_token_issue('session-end-lifetime-2') \gset
SELECT pg_sleep(1.1);
RESET extension_tokens.session_max_lifetime;
SELECT (SELECT error FROM extension_token_validate(:'lb')) AS validate,
       (SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'lbr'))) AS refresh,
       (SELECT status FROM extension_token_list('session-end-lifetime-2')) AS list;
SELECT sessions_active >= 2 AS counted_active, sessions_expired >= 2 AS counted_expired
  FROM extension_token_stats();
RESET extension_tokens.last_used_interval;
