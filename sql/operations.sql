-- operations (1.1): statistics that move by exactly the calls made, cleanup,
-- session lifetimes at their edges, refresh tracking, the admin views, and
-- rotating the signing secret.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SET extension_tokens.refresh_retry_window = 0;

-- Statistics: shared-memory counters since the reset, exact.
SELECT extension_token_stats_reset() <= now() + interval '1 minute' AS reset;
SELECT access_token AS a, refresh_token AS r FROM extension_token_issue('70000000-0000-4000-8000-000000000001') \gset
SELECT count(*) FILTER (WHERE (extension_token_validate(:'a' || repeat('', g))).valid) AS valid_calls
  FROM generate_series(1, 5) g;
SELECT (extension_token_validate('garbage')).error, (extension_token_validate(NULL)).error,
       (extension_token_validate(:'r')).error;
SELECT access_token AS a2, refresh_token AS r2 FROM extension_token_refresh(:'r') \gset
SELECT (extension_token_validate(:'a')).error AS rotated_out;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', 'garbage')) AS failed_refresh;
SELECT counters_available, tokens_issued, refreshes_succeeded, refreshes_failed,
       validations_succeeded, validations_failed,
       validations_failed_by_error->>'malformed' AS malformed,
       validations_failed_by_error->>'missing' AS missing,
       validations_failed_by_error->>'wrong_token_type' AS wrong_token_type,
       validations_failed_by_error->>'revoked' AS revoked,
       validations_failed_by_error->>'expired' AS expired,
       stats_since <= measured_at AS since_before_now
  FROM extension_token_stats();
-- table-derived figures, for this test's users only
SELECT count(*) AS issued_today FROM extension_tokens_issued_daily
 WHERE day = date_trunc('day', now()) AND sessions_issued >= 1;

-- Refresh tracking: the failures of a known session are recorded on it
-- (in a transaction of their own, since the call itself fails).
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r')) AS reuse;
SELECT refresh_count, status, revoked_reason, last_refresh_error,
       last_refresh_error_at >= last_refresh_at AS error_after_last_refresh
  FROM extension_token_list('70000000-0000-4000-8000-000000000001');
SELECT status, last_refresh_failed FROM extension_token_sessions_admin
 WHERE user_id = '70000000-0000-4000-8000-000000000001';

-- Session max lifetime: tokens are capped at the session's end, a refresh
-- never extends it, and after it the refresh fails with session_expired.
SET extension_tokens.session_max_lifetime = '3s';
SELECT refresh_token AS m1, expires_in AS m1_expires_in,
       refresh_expires_at - date_trunc('second', now()) <= interval '3 seconds' AS capped
  FROM extension_token_issue('70000000-0000-4000-8000-000000000002') \gset
SELECT :m1_expires_in <= 3 AS access_capped, :'capped' AS refresh_capped;
SELECT refresh_token AS m2, refresh_expires_at AS m2_end FROM extension_token_refresh(:'m1') \gset
SELECT refresh_expires_at = :'m2_end'::timestamptz AS same_end_after_refresh
  FROM extension_token_list('70000000-0000-4000-8000-000000000002');
SELECT pg_sleep(3.2);
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'m2')) AS after_max_lifetime;
SELECT status FROM extension_token_list('70000000-0000-4000-8000-000000000002');
RESET extension_tokens.session_max_lifetime;

-- Inactivity timeout: used within it the session lives; idle past it,
-- validation says expired and refresh says session_expired.
-- (4 s, used every 2 s: margins wide enough for a server under Valgrind)
SET extension_tokens.session_inactivity_timeout = '4s';
SET extension_tokens.last_used_interval = 0;
SELECT access_token AS i_a, refresh_token AS i_r FROM extension_token_issue('70000000-0000-4000-8000-000000000003') \gset
SELECT pg_sleep(2);
SELECT valid FROM extension_token_validate(:'i_a');
SELECT pg_sleep(2);
SELECT valid, error FROM extension_token_validate(:'i_a');
SELECT pg_sleep(4.2);
SELECT valid, error FROM extension_token_validate(:'i_a');
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'i_r')) AS after_idle;
-- (the refusal is recorded by the background worker: wait for it)
DO $$
BEGIN
  FOR i IN 1..50 LOOP
    EXIT WHEN (SELECT last_refresh_error IS NOT NULL FROM extension_token_sessions
                WHERE user_id = '70000000-0000-4000-8000-000000000003');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT status, last_refresh_error FROM extension_token_list('70000000-0000-4000-8000-000000000003');
RESET extension_tokens.session_inactivity_timeout;
RESET extension_tokens.last_used_interval;

-- Cleanup: nothing before the retention has passed; with none, the dead
-- sessions go (tokens and all), live ones stay; small batches loop.
SELECT access_token AS c_live FROM extension_token_issue('70000000-0000-4000-8000-000000000004', 'live') \gset
SELECT access_token AS c_dead FROM extension_token_issue('70000000-0000-4000-8000-000000000004', 'dead') \gset
SELECT extension_token_revoke(:'c_dead');
SELECT (SELECT count(*) FROM extension_token_sessions WHERE user_id = '70000000-0000-4000-8000-000000000004') AS sessions,
       (SELECT count(*) FROM extension_tokens t JOIN extension_token_sessions s USING (session_id)
         WHERE s.user_id = '70000000-0000-4000-8000-000000000004') AS exchanged_tokens;
SELECT count(*) AS all_sessions FROM extension_token_sessions \gset
SELECT extension_tokens_cleanup() >= 0 AS ran_with_default_retention;
SELECT count(*) = :all_sessions AS no_session_old_enough FROM extension_token_sessions;
SET extension_tokens.cleanup_batch_size = 1;
SELECT extension_tokens_cleanup('0') >= 3 AS deleted;
RESET extension_tokens.cleanup_batch_size;
SELECT name FROM extension_token_list('70000000-0000-4000-8000-000000000004');
SELECT count(*) AS orphaned_exchanged_tokens FROM extension_tokens t
 WHERE NOT EXISTS (SELECT 1 FROM extension_token_sessions s WHERE s.session_id = t.session_id);
SELECT valid FROM extension_token_validate(:'c_live');
SELECT (extension_token_validate(:'c_dead')).error AS deleted_token;
SELECT count(*) AS dead_sessions_left FROM extension_token_sessions
 WHERE LEAST(revoked_at, refresh_expires_at) < now();
SELECT regress_try($$SELECT extension_tokens_cleanup('-1 day')$$);
-- A session a refresh kept alive past the moment cleanup was told to look
-- (check_after, which refresh does not move): cleanup keeps it and moves
-- check_after on to its present expiry.
UPDATE extension_token_sessions SET check_after = now() - interval '1 hour'
 WHERE user_id = '70000000-0000-4000-8000-000000000004' AND name = 'live';
SELECT extension_tokens_cleanup('0') AS deleted_nothing;
SELECT name, check_after = refresh_expires_at AS moved_on FROM extension_token_sessions
 WHERE user_id = '70000000-0000-4000-8000-000000000004';
SELECT valid FROM extension_token_validate(:'c_live');
-- Sessions expiring soon (admin function): the live one runs out in 90 days.
SELECT name FROM extension_token_sessions_expiring('91 days')
 WHERE user_id = '70000000-0000-4000-8000-000000000004';
SELECT count(*) AS within_a_day FROM extension_token_sessions_expiring('1 day')
 WHERE user_id = '70000000-0000-4000-8000-000000000004';

-- Rotating the secret: the previous secret keeps its tokens valid, new
-- tokens are signed with the new one (another kid), retiring it ends them.
-- The revoker's worker records each rotation in this database: one
-- secret_rotated event, the key ids (a SHA-256 prefix, the tokens' kid), no
-- secret.
CREATE FUNCTION regress_kid(p_secret text) RETURNS text LANGUAGE sql
  RETURN left(encode(sha256(convert_to('extension_tokens kid:' || p_secret, 'UTF8')), 'hex'), 16);
CREATE FUNCTION regress_wait_rotation(p_reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. 600 LOOP
    IF EXISTS (SELECT 1 FROM extension_token_events
                WHERE event = 'secret_rotated' AND reason = p_reason) THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN false;
END
$$;
SELECT access_token AS old_key_token FROM extension_token_issue('70000000-0000-4000-8000-000000000005') \gset
ALTER SYSTEM SET extension_tokens.jwt_secret = 'regress-rotated-secret-abcdef0123456789abcd';
ALTER SYSTEM SET extension_tokens.jwt_secret_previous = 'regress-secret-0123456789abcdef0123456789';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW extension_tokens.jwt_secret_previous;
SELECT format('jwt_secret %s (was %s)', regress_kid('regress-rotated-secret-abcdef0123456789abcd'),
              regress_kid('regress-secret-0123456789abcdef0123456789')) AS rotation \gset
SELECT regress_wait_rotation(:'rotation') AS rotation_recorded;
SELECT user_id, session_id, actor, position('regress-rotated' IN reason) AS secret_in_reason
  FROM extension_token_events WHERE event = 'secret_rotated' AND reason = :'rotation';
SELECT access_token AS new_key_token FROM extension_token_issue('70000000-0000-4000-8000-000000000006') \gset
SELECT (extension_token_validate(:'old_key_token')).valid AS old_key_valid,
       (extension_token_validate(:'new_key_token')).valid AS new_key_valid,
       convert_from(regress_b64url_decode(split_part(:'old_key_token', '.', 1)), 'UTF8')::jsonb->'kid' <>
       convert_from(regress_b64url_decode(split_part(:'new_key_token', '.', 1)), 'UTF8')::jsonb->'kid' AS kids_differ;
-- a token from before key ids (no kid) signed with the previous secret is
-- checked against both keys: its signature holds, it is simply not issued
SELECT (extension_token_validate(regress_sign('{"alg": "HS256", "typ": "JWT"}', regress_claims()))).error AS no_kid_previous_key;
-- retire the previous secret
ALTER SYSTEM RESET extension_tokens.jwt_secret_previous;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT (extension_token_validate(:'old_key_token')).error AS old_key_retired,
       (extension_token_validate(:'new_key_token')).valid AS new_key_valid;
-- back to the suite's secret
ALTER SYSTEM SET extension_tokens.jwt_secret = 'regress-secret-0123456789abcdef0123456789';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT (extension_token_validate(:'new_key_token')).error AS rotated_back;
SELECT format('jwt_secret %s (was %s)', regress_kid('regress-secret-0123456789abcdef0123456789'),
              regress_kid('regress-rotated-secret-abcdef0123456789abcd')) AS rotation_back \gset
SELECT regress_wait_rotation(:'rotation_back') AS rotation_back_recorded;
-- retiring the previous secret rotated nothing: one event each way
SELECT count(*) FILTER (WHERE reason = :'rotation') AS rotated,
       count(*) FILTER (WHERE reason = :'rotation_back') AS rotated_back
  FROM extension_token_events WHERE event = 'secret_rotated';
SELECT secret_id = regress_kid('regress-secret-0123456789abcdef0123456789') AS state_follows,
       algorithm, key_id
  FROM extension_token_signing_state;
DROP FUNCTION regress_wait_rotation(text);
DROP FUNCTION regress_kid(text);

-- A trigger the owner adds to one of the extension's tables may call the
-- extension again.  Here it first changes the definition of another of its
-- tables, so the inner call loads the extension's statements again, while
-- the outer call (the revocation's UPDATE) is still running one of them:
-- the outer plan must not be freed under it (it was, and the server
-- crashed), and both calls answer.
SELECT pg_postmaster_start_time() AS started \gset
SELECT access_token AS nested_outer FROM extension_token_issue('a7000000-0000-4000-8000-000000000001') \gset
SELECT access_token AS nested_inner FROM extension_token_issue('a7000000-0000-4000-8000-000000000002') \gset
CREATE TABLE regress_nested (token text, valid boolean);
INSERT INTO regress_nested VALUES (:'nested_inner', NULL);
CREATE FUNCTION regress_nested_validate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    ALTER TABLE extension_token_issued_rollup SET (autovacuum_enabled = false);
    UPDATE regress_nested SET valid = (extension_token_validate(token)).valid;
    RETURN NULL;
END $$;
CREATE TRIGGER regress_nested AFTER UPDATE ON extension_token_sessions
    FOR EACH ROW EXECUTE FUNCTION regress_nested_validate();
SELECT extension_token_revoke(:'nested_outer') AS outer_revoked;
SELECT valid AS inner_valid FROM regress_nested;
-- again, with the plans the inner call made; the AFTER trigger sees the
-- revocation it fires for
UPDATE regress_nested SET valid = NULL;
SELECT extension_token_revoke(:'nested_inner') AS inner_revoked;
SELECT valid AS inner_sees_its_own_revocation FROM regress_nested;
DROP TRIGGER regress_nested ON extension_token_sessions;
ALTER TABLE extension_token_issued_rollup RESET (autovacuum_enabled);
DROP FUNCTION regress_nested_validate();
DROP TABLE regress_nested;
SELECT (extension_token_validate(:'nested_outer')).error AS outer_after,
       (extension_token_validate(:'nested_inner')).error AS inner_after;
-- The inner call's load fails (a column it needs is renamed by then) and
-- the trigger's savepoint catches the error: the outer call (an issue under
-- a session limit, whose next statement is prepared after its INSERT) goes
-- on with what it had loaded (it went on with nothing, and crashed).
SET extension_tokens.max_sessions_per_user = 5;
CREATE FUNCTION regress_nested_failed_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        ALTER TABLE extension_token_legacy_refresh RENAME COLUMN session_id TO renamed;
        PERFORM * FROM extension_token_list(NEW.user_id);
    EXCEPTION WHEN undefined_column THEN
        RAISE NOTICE 'inner call: %', SQLERRM;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER regress_nested_failed_load AFTER INSERT ON extension_token_sessions
    FOR EACH ROW EXECUTE FUNCTION regress_nested_failed_load();
SELECT count(*) AS issued FROM extension_token_issue('a7000000-0000-4000-8000-000000000005');
SELECT count(*) AS issued_again FROM extension_token_issue('a7000000-0000-4000-8000-000000000005');
DROP TRIGGER regress_nested_failed_load ON extension_token_sessions;
DROP FUNCTION regress_nested_failed_load();
SET extension_tokens.max_sessions_per_user = 0;
SELECT count(*) AS sessions_of_that_user FROM extension_token_sessions
 WHERE user_id = 'a7000000-0000-4000-8000-000000000005';
-- A column the lookups read, changed to another type by the owner: a
-- clear error, not a crash (the row was read as if of the old type).
BEGIN;
ALTER TABLE extension_token_sessions ALTER COLUMN access_jti TYPE int8 USING 1;
SELECT valid FROM extension_token_validate(:'nested_outer');
ROLLBACK;
SELECT (extension_token_validate(:'nested_outer')).error AS after_rollback;
SELECT pg_postmaster_start_time() = :'started' AS same_server;

-- Kept verdicts and the transaction's own writes.  A transaction that has
-- written anything neither keeps nor uses a verdict: an issue's INSERT is
-- noted by no epoch, so a verdict kept on it outlived its rollback (the
-- token validated with no session), and an owner's trigger that runs before
-- ours in the statement that revokes used the verdict kept before it.
BEGIN;
SELECT access_token AS rb_token, session_id AS rb_sid FROM extension_token_issue('a7000000-0000-4000-8000-000000000003') \gset
SELECT (extension_token_validate(:'rb_token')).valid AS in_issuing_transaction;
SELECT (extension_token_validate(:'rb_token')).valid AS again;
SELECT (extension_token_validate(:'rb_token')).valid AS and_again;
ROLLBACK;
SELECT count(*) AS rolled_back_sessions FROM extension_token_sessions WHERE session_id = :'rb_sid';
SELECT valid, error FROM extension_token_validate(:'rb_token');
-- the same, the issue undone by a savepoint's rollback
CREATE TABLE regress_rb (token text);
DO $$
DECLARE
    t text;
BEGIN
    BEGIN
        SELECT access_token INTO t FROM extension_token_issue('a7000000-0000-4000-8000-000000000003');
        PERFORM extension_token_validate(t);
        PERFORM extension_token_validate(t);
        PERFORM extension_token_validate(t);
        RAISE EXCEPTION 'undo the issue';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    INSERT INTO regress_rb VALUES (t);
END
$$;
SELECT v.valid, v.error FROM regress_rb, extension_token_validate(token) AS v;
DROP TABLE regress_rb;
-- an owner's AFTER UPDATE trigger that runs before ours ("a_" sorts first)
-- validates the session's token while the revocation's statement runs: the
-- row it reads says revoked, and so must it
SELECT access_token AS early_token FROM extension_token_issue('a7000000-0000-4000-8000-000000000004') \gset
CREATE TABLE regress_early (token text, got text);
INSERT INTO regress_early VALUES (:'early_token', NULL);
CREATE FUNCTION regress_early_validate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE regress_early SET got = coalesce((extension_token_validate(token)).error, 'valid');
    RETURN NULL;
END $$;
CREATE TRIGGER a_regress_early AFTER UPDATE ON extension_token_sessions
    FOR EACH ROW EXECUTE FUNCTION regress_early_validate();
SELECT (extension_token_validate(:'early_token')).valid AS kept_before_1;
SELECT (extension_token_validate(:'early_token')).valid AS kept_before_2;
SELECT (extension_token_validate(:'early_token')).valid AS kept_before_3;
SELECT extension_token_revoke(:'early_token') AS early_revoked;
SELECT got AS seen_by_the_earlier_trigger FROM regress_early;
DROP TRIGGER a_regress_early ON extension_token_sessions;
DROP FUNCTION regress_early_validate();
DROP TABLE regress_early;
