-- postgrest: PostgREST's transactions replayed in SQL (SET LOCAL ROLE,
-- request.jwt.claims and request.headers set for the transaction, BEGIN READ
-- ONLY for GET), the grants for API roles, PostgREST-native access tokens
-- (a role claim) and the db-pre-request function that makes a revocation
-- count on the very next request.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;

-- Grants for the API roles: exactly these, whatever they had before, and
-- the same when run twice.
GRANT EXECUTE ON FUNCTION extension_token_stats() TO regress_et_anon;
SELECT extension_tokens_grant_api_roles('regress_et_anon', 'regress_et_authenticated', 'regress_et_service');
SELECT extension_tokens_grant_api_roles('regress_et_anon', 'regress_et_authenticated', 'regress_et_service');
SELECT p.proname,
       has_function_privilege('regress_et_anon', p.oid, 'EXECUTE') AS anon,
       has_function_privilege('regress_et_authenticated', p.oid, 'EXECUTE') AS authenticated,
       has_function_privilege('regress_et_service', p.oid, 'EXECUTE') AS service
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'extension_tokens')
 ORDER BY 1;
SELECT regress_try($$SELECT extension_tokens_grant_api_roles('nosuchrole')$$);
SET SESSION AUTHORIZATION regress_et_mallory;
SELECT regress_try($$SELECT extension_tokens_grant_api_roles('regress_et_anon', 'regress_et_mallory', 'regress_et_mallory')$$);
RESET SESSION AUTHORIZATION;

-- The dashboard (POST /rpc/extension_token_issue as a signed-in user).
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "b0000000-0000-4000-8000-000000000001", "role": "regress_et_authenticated"}', true) IS NOT NULL AS claims;
SELECT access_token AS user_token, refresh_token AS user_refresh FROM extension_token_issue(p_name => 'add-in') \gset
SELECT name, status FROM extension_token_list();
COMMIT;

-- The add-in validates with GET: a read-only transaction, as anon.
BEGIN READ ONLY;
SET LOCAL ROLE regress_et_anon;
SELECT valid, user_id FROM extension_token_validate(:'user_token');
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'user_refresh')) AS refresh_in_get;
COMMIT;

-- PostgREST-native access tokens: with postgrest_role set, tokens carry a
-- role claim (and iss/aud/sub/exp), so PostgREST accepts them as its own.
SET extension_tokens.postgrest_role = 'regress_et_authenticated';
SELECT access_token AS native FROM extension_token_issue('b0000000-0000-4000-8000-000000000002', 'native') \gset
SELECT claims->>'role' AS role, claims->>'sub' AS sub, claims->>'aud' AS aud
  FROM extension_token_validate(:'native');
RESET extension_tokens.postgrest_role;
SELECT (extension_token_validate(access_token)).claims ? 'role' AS role_claim_without_setting
  FROM extension_token_issue('b0000000-0000-4000-8000-000000000002', 'plain');

-- db-pre-request, as PostgREST calls it: the request's role, claims and
-- headers set for the transaction.
CREATE FUNCTION regress_request(p_role text, p_headers text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; det text;
BEGIN
  PERFORM set_config('request.headers', p_headers, true);
  EXECUTE format('SET LOCAL ROLE %I', p_role);
  PERFORM extension_token_pre_request();
  RESET ROLE;
  RETURN 'allowed';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, det = PG_EXCEPTION_DETAIL;
  RETURN st || ': ' || det;
END $$;
SELECT regress_request('regress_et_authenticated', json_build_object('authorization', 'Bearer ' || :'native')::text) AS live_token;
SELECT regress_request('regress_et_authenticated', json_build_object('authorization', 'bearer ' || :'native')::text) AS lower_case_scheme;
SELECT extension_token_revoke(:'native') AS revoked;
SELECT regress_request('regress_et_authenticated', json_build_object('authorization', 'Bearer ' || :'native')::text) AS after_revoke;
-- however the header spells it (PostgREST takes tabs, any case, extra blanks)
SELECT n AS spelling, regress_request('regress_et_authenticated', json_build_object('authorization', h)::text) AS outcome
  FROM unnest(ARRAY['BEARER ' || :'native', E'Bearer\t' || :'native', E'bearer\t\t' || :'native',
                    '  Bearer   ' || :'native' || '  ', 'Bearer ' || :'native' || E'\r\n']) WITH ORDINALITY AS u(h, n);
-- someone else's JWT (a Supabase user token), no header, another scheme:
-- not ours, left to PostgREST
SELECT regress_request('regress_et_authenticated', json_build_object('authorization', 'Bearer ' ||
         regress_sign('{"alg":"HS256","typ":"JWT"}', '{"iss":"supabase","sub":"b0000000-0000-4000-8000-000000000003","role":"authenticated","exp":99999999999}'))::text) AS foreign_jwt;
SELECT regress_request('regress_et_anon', '{}') AS no_header,
       regress_request('regress_et_anon', '{"authorization": "Basic dXNlcjpwYXNz"}') AS basic,
       regress_request('regress_et_anon', 'not json') AS bad_headers;
-- claiming to be ours without being ours: refused
SELECT regress_request('regress_et_anon', json_build_object('authorization', 'Bearer ' ||
         regress_sign('{"alg":"HS256"}', regress_claims(), 'sha256', 'not-our-secret-0123456789abcdef012345'))::text) AS forged;
SELECT regress_request('regress_et_anon', json_build_object('authorization', 'Bearer ' ||
         regress_sign('{"alg":"HS256"}', regress_claims()))::text) AS never_issued;
