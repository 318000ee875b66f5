-- upgrade: ALTER EXTENSION ... UPDATE from 1.0 through 1.1 to 1.2 keeps
-- every session in every state (live, revoked, rotated, reuse-revoked, run
-- out), every rotation link and revocation reason, and leaves exactly the
-- objects a fresh install has.
-- Runs last: it drops and recreates the extension.

-- Every member object of the extension, described by what defines it and
-- who owns it.
CREATE FUNCTION regress_ext_objects() RETURNS SETOF text LANGUAGE sql AS $$
  SELECT pg_describe_object(d.classid, d.objid, 0) || ' | owner ' ||
    coalesce(pg_get_userbyid(CASE d.classid
      WHEN 'pg_proc'::regclass THEN (SELECT proowner FROM pg_proc WHERE oid = d.objid)
      WHEN 'pg_class'::regclass THEN (SELECT relowner FROM pg_class WHERE oid = d.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typowner FROM pg_type WHERE oid = d.objid)
      WHEN 'pg_event_trigger'::regclass THEN (SELECT evtowner FROM pg_event_trigger WHERE oid = d.objid)
      END), '?') || ' | ' ||
    CASE d.classid
      WHEN 'pg_proc'::regclass THEN
        pg_get_functiondef(d.objid) || coalesce(obj_description(d.objid, 'pg_proc'), '') ||
        coalesce((SELECT proacl::text FROM pg_proc WHERE oid = d.objid), '')
      WHEN 'pg_class'::regclass THEN
        (SELECT relkind::text || ' ' || relrowsecurity || ' ' || coalesce(relacl::text, '') || ' ' ||
                coalesce(obj_description(oid, 'pg_class'), '') ||
                CASE relkind WHEN 'v' THEN pg_get_viewdef(oid) ELSE '' END
           FROM pg_class WHERE oid = d.objid) ||
        coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' ||
                                    a.attnotnull || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '') || ' ' ||
                                    coalesce(col_description(a.attrelid, a.attnum), ''), ', ' ORDER BY a.attnum)
                    FROM pg_attribute a
                    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                   WHERE a.attrelid = d.objid AND a.attnum > 0 AND NOT a.attisdropped), '') ||
        coalesce((SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY pg_get_indexdef(indexrelid))
                    FROM pg_index WHERE indrelid = d.objid), '') ||
        coalesce((SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname)
                    FROM pg_constraint WHERE conrelid = d.objid), '')
      WHEN 'pg_type'::regclass THEN
        coalesce(obj_description(d.objid, 'pg_type'), '') ||
        coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                    FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
                   WHERE t.oid = d.objid AND a.attnum > 0 AND NOT a.attisdropped), '')
      ELSE '' END
  FROM pg_depend d
  WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'extension_tokens')
  UNION ALL
  SELECT 'config ' || extconfig::regclass[]::text || ' ' || extcondition::text
    FROM pg_extension WHERE extname = 'extension_tokens'
$$;

-- Refresh tokens as 1.1 made them (no session id): "ext_rt_", 43 base62
-- characters, and the checksum, the first 32 bits of SHA-256 of what
-- precedes it in 6 base62 digits.
CREATE FUNCTION regress_legacy_refresh() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b62 constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    head text := 'ext_rt_';
    v bigint;
    sum text := '';
BEGIN
    FOR i IN 1..43 LOOP
        head := head || substr(b62, 1 + floor(random() * 62)::int, 1);
    END LOOP;
    v := ('x' || encode(substr(sha256(convert_to(head, 'UTF8')), 1, 4), 'hex'))::bit(32)::bigint;
    FOR i IN 1..6 LOOP
        sum := substr(b62, 1 + (v % 62)::int, 1) || sum;
        v := v / 62;
    END LOOP;
    RETURN head || sum;
END
$$;
SELECT regress_legacy_refresh() AS r0, regress_legacy_refresh() AS r1,
       regress_legacy_refresh() AS rx, regress_legacy_refresh() AS re \gset
SELECT length(:'r0') AS legacy_length;

-- A fresh 1.2 install (without the grants setup.sql added), captured.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
DROP EXTENSION extension_tokens;
CREATE EXTENSION extension_tokens;
CREATE TEMP TABLE fresh_objects AS SELECT * FROM regress_ext_objects() AS o(def);
SELECT count(*) > 20 AS captured FROM fresh_objects;

-- Version 1.0, with a session made as 1.0 made them: a token without a key
-- id, signed with the current secret, and a revoked one.
DROP EXTENSION extension_tokens;
CREATE EXTENSION extension_tokens VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens';
SELECT regress_sign('{"alg": "HS256", "typ": "JWT"}',
                    regress_claims('{"sub": "80000000-0000-4000-8000-000000000001",
                                     "session_id": "80000000-0000-4000-8000-0000000000aa",
                                     "exp": 4102444800}')) AS old_token \gset
SELECT regress_sign('{"alg": "HS256", "typ": "JWT"}',
                    regress_claims('{"sub": "80000000-0000-4000-8000-000000000001",
                                     "session_id": "80000000-0000-4000-8000-0000000000bb",
                                     "exp": 4102444800}')) AS old_revoked \gset
INSERT INTO extension_token_sessions (session_id, user_id, name, access_lifetime, created_at,
                                      last_used_at, expires_at, refresh_expires_at,
                                      revoked_at, revoked_reason)
VALUES ('80000000-0000-4000-8000-0000000000aa', '80000000-0000-4000-8000-000000000001', 'from 1.0',
        '30 days', now(), now(), '2100-01-01', '2100-01-01', NULL, NULL),
       ('80000000-0000-4000-8000-0000000000bb', '80000000-0000-4000-8000-000000000001', 'revoked in 1.0',
        '30 days', now(), now(), '2100-01-01', '2100-01-01', now(), 'revoked');
INSERT INTO extension_tokens (token_hash, token_type, session_id, user_id, name, created_at,
                              expires_at, last_used_at, revoked_at, revoked_reason)
VALUES (sha256(convert_to(:'old_token', 'UTF8')), 'access', '80000000-0000-4000-8000-0000000000aa',
        '80000000-0000-4000-8000-000000000001', 'from 1.0', now(), '2100-01-01', now(), NULL, NULL),
       (sha256(convert_to(:'old_revoked', 'UTF8')), 'access', '80000000-0000-4000-8000-0000000000bb',
        '80000000-0000-4000-8000-000000000001', 'revoked in 1.0', now(), '2100-01-01', now(), now(), 'revoked');
-- The 1.2 library refuses to work on 1.0's tables, and says what to do.
SELECT valid FROM extension_token_validate(:'old_token');

-- Version 1.1, with sessions in every state as 1.1 stored them: one
-- refreshed once (its first pair rotated out, the exchanged refresh token
-- linked to its successor), one revoked by reuse, one that ran out.
ALTER EXTENSION extension_tokens UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens';
SELECT regress_sign('{"alg": "HS256", "typ": "JWT"}',
                    regress_claims('{"sub": "81000000-0000-4000-8000-000000000001",
                                     "session_id": "81000000-0000-4000-8000-0000000000a0",
                                     "jti": "81000000-0000-4000-8000-0000000000f0",
                                     "exp": 4102444800}')) AS rot_tok \gset
INSERT INTO extension_token_sessions (session_id, user_id, name, access_lifetime, created_at, last_used_at,
                                      expires_at, refresh_expires_at, refresh_count, last_refresh_at,
                                      revoked_at, revoked_reason, last_refresh_error, last_refresh_error_at)
VALUES ('81000000-0000-4000-8000-0000000000a0', '81000000-0000-4000-8000-000000000001', 'rotated in 1.1',
        '30 days', now() - interval '2 days', now(), '2100-01-01', '2100-01-01', 1, now() - interval '1 day',
        NULL, NULL, NULL, NULL),
       ('81000000-0000-4000-8000-0000000000a1', '81000000-0000-4000-8000-000000000001', 'reuse in 1.1',
        '30 days', now() - interval '2 days', now(), '2100-01-01', '2100-01-01', 1, now() - interval '1 day',
        now(), 'refresh_token_reuse', 'refresh_token_already_used', now()),
       ('81000000-0000-4000-8000-0000000000a2', '81000000-0000-4000-8000-000000000002', 'ran out in 1.1',
        '1 day', now() - interval '100 days', now() - interval '95 days', now() - interval '99 days',
        now() - interval '10 days', 0, NULL, NULL, NULL, NULL, NULL);
-- the rotated session: first pair (access 0 rotated, refresh r0 exchanged
-- for r1), second pair (access 3, r1) live
INSERT INTO extension_tokens (token_hash, token_type, session_id, user_id, name, created_at, expires_at,
                              used_at, replaced_by, revoked_at, revoked_reason)
VALUES (sha256(convert_to(:'rot_tok', 'UTF8')), 'access', '81000000-0000-4000-8000-0000000000a0',
        '81000000-0000-4000-8000-000000000001', 'rotated in 1.1', now() - interval '2 days', '2100-01-01',
        NULL, NULL, now() - interval '1 day', 'rotated'),
       (sha256(convert_to(:'r0', 'UTF8')), 'refresh', '81000000-0000-4000-8000-0000000000a0',
        '81000000-0000-4000-8000-000000000001', 'rotated in 1.1', now() - interval '2 days', '2100-01-01',
        now() - interval '1 day', sha256(convert_to(:'r1', 'UTF8')), NULL, NULL),
       (sha256(convert_to(:'r1', 'UTF8')), 'refresh', '81000000-0000-4000-8000-0000000000a0',
        '81000000-0000-4000-8000-000000000001', 'rotated in 1.1', now() - interval '1 day', '2100-01-01',
        NULL, NULL, NULL, NULL),
       (sha256(convert_to(:'rx', 'UTF8')), 'refresh', '81000000-0000-4000-8000-0000000000a1',
        '81000000-0000-4000-8000-000000000001', 'reuse in 1.1', now() - interval '2 days', '2100-01-01',
        NULL, NULL, now(), 'refresh_token_reuse'),
       (sha256(convert_to(:'re', 'UTF8')), 'refresh', '81000000-0000-4000-8000-0000000000a2',
        '81000000-0000-4000-8000-000000000002', 'ran out in 1.1', now() - interval '100 days',
        now() - interval '10 days', NULL, NULL, NULL, NULL);
SELECT regress_sign('{"alg": "HS256", "typ": "JWT"}',
                    regress_claims('{"sub": "81000000-0000-4000-8000-000000000001",
                                     "session_id": "81000000-0000-4000-8000-0000000000a0",
                                     "exp": 4102444801}')) AS rot_current \gset
INSERT INTO extension_tokens (token_hash, token_type, session_id, user_id, name, created_at, expires_at)
VALUES (sha256(convert_to(:'rot_current', 'UTF8')), 'access', '81000000-0000-4000-8000-0000000000a0',
        '81000000-0000-4000-8000-000000000001', 'rotated in 1.1', now() - interval '1 day', '2100-01-01');

-- 1.1 -> 1.2: every session keeps its state.  The update is run by another
-- superuser than the extension's owner: what it creates still belongs to the
-- extension's owner (the updater owned it, and kept it when demoted): the
-- comparison with a fresh install below includes every object's owner.
CREATE ROLE regress_updater SUPERUSER;
SET ROLE regress_updater;
ALTER EXTENSION extension_tokens UPDATE TO '1.2';
RESET ROLE;
SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens';
SELECT valid, token_name, user_id FROM extension_token_validate(:'old_token');
SELECT valid, error FROM extension_token_validate(:'old_revoked');
SELECT name, status, revoked_reason, refresh_count FROM extension_token_list('80000000-0000-4000-8000-000000000001');
SELECT name, status, revoked_reason, refresh_count, last_refresh_error
  FROM extension_token_list('81000000-0000-4000-8000-000000000001');
SELECT name, status FROM extension_token_list('81000000-0000-4000-8000-000000000002');
-- the rotated session: its current access token is valid, its first one
-- revoked; the rotation link survived
SELECT valid, error FROM extension_token_validate(:'rot_current');
SELECT valid, error FROM extension_token_validate(:'rot_tok');
SELECT replaced_by = sha256(convert_to(:'r1', 'UTF8')) AS link_kept FROM extension_tokens
 WHERE token_hash = sha256(convert_to(:'r0', 'UTF8'));
-- the expired session's refresh token ran out; the reuse-revoked one is revoked
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'re')) AS ran_out;
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'rx')) AS revoked_by_reuse;
-- its live refresh token refreshes; the exchanged one is reuse and ends it
SET extension_tokens.refresh_retry_window = 0;
SELECT count(*) AS legacy_rows FROM extension_token_legacy_refresh;
SELECT access_token AS rot_next, refresh_token AS rot_next_refresh FROM extension_token_refresh(:'r1') \gset
-- the successor is a 1.2 token: it names its session
SELECT length(:'rot_next_refresh') AS new_format_length;
SELECT valid FROM extension_token_validate(:'rot_next');
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'r0')) AS exchanged_in_1_1;
SELECT valid, error FROM extension_token_validate(:'rot_next');
SELECT status, revoked_reason FROM extension_token_list('81000000-0000-4000-8000-000000000001')
 WHERE name = 'rotated in 1.1';
-- and the 1.2 token that succeeded the legacy one ends with its session
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'rot_next_refresh')) AS successor_after_reuse;
RESET extension_tokens.refresh_retry_window;

-- Cleanup deletes a session with its legacy rows: the ran-out one, dead
-- for 10 days, goes with a retention of a day.
SELECT extension_tokens_cleanup('1 day') > 0 AS cleaned;
SELECT count(*) FILTER (WHERE session_id = '81000000-0000-4000-8000-0000000000a2') AS ran_out_legacy,
       count(*) AS legacy_rows_left
  FROM extension_token_legacy_refresh;

-- 1.2 starts from the keys in force (no rotation is invented for them),
-- and counts 1.1's sessions per day; the one the cleanup deleted stays
-- counted, in the rollup of the quarter hour it was created in.
SELECT secret_id = (SELECT key_id FROM extension_tokens_signing_keys() WHERE status = 'current')
       AS keys_recorded, algorithm
  FROM extension_token_signing_state;
SELECT count(*) AS rotations FROM extension_token_events WHERE event = 'secret_rotated';
SELECT sessions_issued >= 2 AS issued_in_1_1_counted FROM extension_tokens_issued_daily
 WHERE day = date_trunc('day', now() - interval '2 days');
SELECT kind, sessions, bucket <= now() - interval '100 days' AS at_creation
  FROM extension_token_issued_rollup;

-- The upgraded objects are exactly the fresh ones.
CREATE TEMP TABLE upgraded_objects AS SELECT * FROM regress_ext_objects() AS o(def);
SELECT 'only fresh' AS side, def FROM (SELECT def FROM fresh_objects EXCEPT SELECT def FROM upgraded_objects) f
UNION ALL
SELECT 'only upgraded', def FROM (SELECT def FROM upgraded_objects EXCEPT SELECT def FROM fresh_objects) u;
SELECT (SELECT count(*) FROM fresh_objects) = (SELECT count(*) FROM upgraded_objects) AS same_count;
-- The updater owns nothing of the extension's, and no initial privileges
-- name it (PostgreSQL 17 ties those to the role): it can be dropped.
SELECT count(*) AS owned_by_the_updater FROM pg_class WHERE relowner = 'regress_updater'::regrole;
DROP ROLE regress_updater;
