-- privileges: the secret is invisible and unchangeable to other roles; the
-- tables are closed; who may call what; who may act for whom (42501).
SET extension_tokens.issue_rate_limit = 0;
SELECT access_token AS victim_access, refresh_token AS victim_refresh
  FROM extension_token_issue('50000000-0000-4000-8000-00000000000a', 'victim') \gset

-- What PUBLIC may execute, and what the tables grant.
-- (anon had every function granted by default privileges before CREATE
-- EXTENSION; the install script took that back.)
SELECT p.proname, has_function_privilege('regress_et_alice', p.oid, 'EXECUTE') AS alice_may_execute,
       has_function_privilege('regress_et_anon', p.oid, 'EXECUTE') AS anon_may_execute
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'extension_tokens')
 ORDER BY 1;
SELECT c.relname, c.relrowsecurity,
       has_table_privilege('regress_et_alice', c.oid, 'SELECT, INSERT, UPDATE, DELETE') AS alice,
       has_table_privilege('regress_et_authenticated', c.oid, 'SELECT, INSERT, UPDATE, DELETE') AS authenticated,
       has_table_privilege('regress_et_anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE') AS anon
  FROM pg_class c
 WHERE c.relname IN ('extension_tokens', 'extension_token_sessions', 'extension_token_users',
                     'extension_token_devices', 'extension_token_legacy_refresh',
                     'extension_token_events', 'extension_token_issued_rollup',
                     'extension_token_signing_state', 'extension_tokens_issued_daily')
 ORDER BY 1;

-- A role with no privileges.
SET SESSION AUTHORIZATION regress_et_alice;
\set VERBOSITY sqlstate
SHOW extension_tokens.jwt_secret;
SELECT current_setting('extension_tokens.jwt_secret');
\set VERBOSITY default
SELECT count(*) AS visible_in_pg_settings FROM pg_settings WHERE name = 'extension_tokens.jwt_secret';
SET extension_tokens.jwt_secret = 'alice-wants-her-own-secret-0123456789abcdef';
SELECT set_config('extension_tokens.jwt_secret', 'alice-wants-her-own-secret-0123456789abcdef', true);
ALTER ROLE regress_et_alice SET extension_tokens.jwt_secret = 'alice-wants-her-own-secret-0123456789abcdef';
SELECT count(*) FROM extension_tokens;
SELECT count(*) FROM extension_token_sessions;
UPDATE extension_token_sessions SET revoked_at = NULL;
SELECT extension_token_issue('50000000-0000-4000-8000-00000000000b');
SELECT extension_token_list('50000000-0000-4000-8000-00000000000a');
SELECT revoke_user_extension_tokens('50000000-0000-4000-8000-00000000000a');
-- ... but the token is a credential anyone may check
SELECT valid, user_id FROM extension_token_validate(:'victim_access');
RESET SESSION AUTHORIZATION;
-- Typos in the reserved prefix are reported, not silently kept.
SET extension_tokens.jwt_secrt = 'x';
-- Per-database and per-role values (readable by everyone) are refused even
-- for a superuser.
ALTER DATABASE contrib_regression SET extension_tokens.jwt_secret = 'per-database-secret-0123456789abcdef';
ALTER ROLE regress_et_alice SET extension_tokens.jwt_secret = 'per-role-secret-0123456789abcdef0123';
-- Members of pg_read_all_settings see that it is set, not what it is.
GRANT pg_read_all_settings TO regress_et_alice;
SET SESSION AUTHORIZATION regress_et_alice;
SHOW extension_tokens.jwt_secret;
SELECT setting FROM pg_settings WHERE name = 'extension_tokens.jwt_secret';
RESET SESSION AUTHORIZATION;
REVOKE pg_read_all_settings FROM regress_et_alice;

-- A login role granted EXECUTE, but not an administrator: it has no user
-- identity, and setting request.jwt.claims itself does not give it one.
SET SESSION AUTHORIZATION regress_et_mallory;
SELECT regress_try($$SELECT extension_token_issue('50000000-0000-4000-8000-00000000000a')$$);
SELECT regress_try($$SELECT extension_token_issue()$$);
SELECT set_config('request.jwt.claims', '{"sub": "50000000-0000-4000-8000-00000000000a", "role": "authenticated"}', false) IS NOT NULL AS claims_set;
SELECT regress_try($$SELECT extension_token_issue()$$);
SELECT regress_try($$SELECT extension_token_list()$$);
SELECT regress_try($$SELECT revoke_user_extension_tokens('50000000-0000-4000-8000-00000000000a')$$);
-- revoking by token needs the token: mallory's guess revokes nothing
SELECT extension_token_revoke('ext_rt_guess');
RESET request.jwt.claims;
RESET SESSION AUTHORIZATION;

-- An end user through PostgREST: NOLOGIN role, claims set for the
-- transaction, exactly as PostgREST does it.
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "50000000-0000-4000-8000-00000000000c", "role": "authenticated"}', true) IS NOT NULL AS claims_set;
SELECT token_type FROM extension_token_issue(p_name => 'my add-in');
SELECT user_id, name, status FROM extension_token_list();
SELECT user_id, name FROM extension_token_list('50000000-0000-4000-8000-00000000000c');
SELECT regress_try($$SELECT extension_token_issue('50000000-0000-4000-8000-00000000000a')$$);
SELECT regress_try($$SELECT extension_token_list('50000000-0000-4000-8000-00000000000a')$$);
SELECT regress_try($$SELECT revoke_user_extension_tokens('50000000-0000-4000-8000-00000000000a')$$);
SELECT revoke_user_extension_tokens() AS own_revoked;
COMMIT;
-- the victim's session is untouched by all of the above
SELECT valid FROM extension_token_validate(:'victim_access');
-- a sub that is not a user id, and no sub at all
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "ctl\u0001char"}', true) IS NOT NULL AS claims_set;
SELECT regress_try($$SELECT extension_token_issue()$$);
SELECT set_config('request.jwt.claims', '{"role": "authenticated"}', true) IS NOT NULL AS claims_set;
SELECT regress_try($$SELECT extension_token_issue()$$);
SELECT set_config('request.jwt.claims', 'not json', true) IS NOT NULL AS claims_set;
SELECT regress_try($$SELECT extension_token_issue()$$);
ROLLBACK;

-- Anonymous: validate, refresh and revoke only (the token is the
-- credential: an add-in signs itself out with the anon key, RFC 7009).
BEGIN;
SET LOCAL ROLE regress_et_anon;
SELECT valid FROM extension_token_validate(:'victim_access');
SELECT token_type FROM extension_token_refresh(:'victim_refresh');
SELECT regress_try($$SELECT extension_token_issue('50000000-0000-4000-8000-00000000000d')$$);
SELECT regress_try($$SELECT extension_token_list('50000000-0000-4000-8000-00000000000a')$$);
SELECT regress_try($$SELECT extension_token_revoke_session('00000000-0000-4000-8000-0000000000ff')$$);
SELECT regress_try($$SELECT revoke_user_extension_tokens('50000000-0000-4000-8000-00000000000a')$$);
SELECT extension_token_revoke(:'victim_access') AS revoked_with_its_own_token;
ROLLBACK;

-- The trusted backend role (named in extension_tokens.admin_roles) acts
-- for anyone, and must name the user when there is no request user.
BEGIN;
SET LOCAL ROLE regress_et_service;
SELECT token_type FROM extension_token_issue('50000000-0000-4000-8000-00000000000e');
SELECT count(*) FROM extension_token_list('50000000-0000-4000-8000-00000000000a');
SELECT regress_try($$SELECT extension_token_issue()$$);
SELECT revoke_user_extension_tokens('50000000-0000-4000-8000-00000000000e') AS revoked;
ROLLBACK;
