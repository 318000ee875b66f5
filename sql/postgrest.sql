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

-- db-pre-request, as PostgREST calls it: the request's role, verified claims
-- (request.jwt.claims: PostgREST sets them only from a token whose signature
-- and expiry it checked) and headers set for the transaction.  The decision
-- is made on the claims alone, never on request.headers.
CREATE FUNCTION regress_request(p_role text, p_claims text, p_headers text DEFAULT '{}') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE st text; det text;
BEGIN
  PERFORM set_config('request.headers', p_headers, true);
  IF p_claims IS NOT NULL THEN
    PERFORM set_config('request.jwt.claims', p_claims, true);
  END IF;
  EXECUTE format('SET LOCAL ROLE %I', p_role);
  PERFORM extension_token_pre_request();
  RESET ROLE;
  RETURN 'allowed';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, det = PG_EXCEPTION_DETAIL;
  RETURN st || ': ' || det;
END $$;
-- the claims of a token, as PostgREST hands them on
CREATE FUNCTION regress_claims_of(tok text) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT convert_from(regress_b64url_decode(split_part(tok, '.', 2)), 'UTF8') $$;
SELECT access_token AS native2, refresh_token AS native2_refresh
  FROM extension_token_issue('b0000000-0000-4000-8000-000000000002', 'native 2') \gset
SELECT regress_request('regress_et_authenticated', regress_claims_of(:'native')) AS live_token;
SELECT extension_token_revoke(:'native') AS revoked;
SELECT regress_request('regress_et_authenticated', regress_claims_of(:'native')) AS after_revoke;
-- whatever the headers say (a duplicate Authorization header: PostgREST
-- keeps the last in request.headers and authenticates with the first;
-- garbage; a NUL byte; another token of ours that is live): the verified
-- claims decide
SELECT n AS headers, regress_request('regress_et_authenticated', regress_claims_of(:'native'), h) AS outcome
  FROM unnest(ARRAY[json_build_object('authorization', 'Bearer ' || :'native2')::text,
                    json_build_object('authorization', 'Basic dXNlcjpwYXNz')::text,
                    '{"authorization": "Bearer x", "x-evil": "\u0000"}', 'not json', '{}']) WITH ORDINALITY AS u(h, n);
-- a rotated-out token (its session refreshed since) is refused; the
-- session's current one passes
SELECT access_token AS native3 FROM extension_token_refresh(:'native2_refresh') \gset
SELECT regress_request('regress_et_authenticated', regress_claims_of(:'native2')) AS rotated_out,
       regress_request('regress_et_authenticated', regress_claims_of(:'native3')) AS current;
-- recognised whatever settings changed since it was minted: the issuer and
-- audience in its claims are not what decides
SELECT extension_token_revoke(:'native3') AS revoked;
SELECT regress_request('regress_et_authenticated',
         (regress_claims_of(:'native3')::jsonb || '{"iss": "an-old-issuer", "aud": "an-old-audience"}')::text) AS old_issuer;
-- someone else's JWT (a Supabase user token, which carries a session_id of
-- its own but no type "access"), and no claims at all: left to PostgREST
SELECT regress_request('regress_et_authenticated', '{"iss":"supabase","sub":"b0000000-0000-4000-8000-000000000003","role":"authenticated","session_id":"b0000000-0000-4000-8000-0000000000ff","exp":99999999999}') AS foreign_jwt;
SELECT regress_request('regress_et_anon', NULL) AS no_claims,
       regress_request('regress_et_anon', '{"role": "regress_et_anon"}') AS anon_claims;
-- claims that look like ours but cannot be checked, or that name a session
-- that never issued this token (a forgery PostgREST would only accept if the
-- secret leaked): refused
SELECT n AS claims, regress_request('regress_et_anon', c) AS outcome
  FROM unnest(ARRAY['not json', '[1]', '{"type": "access", "session_id": "not-a-uuid"}',
                    '{"type": "access", "session_id": "b0000000-0000-4000-8000-0000000000ee"}',
                    regress_claims(), regress_claims('{"sub": 42}'),
                    (regress_claims_of(:'native3')::jsonb || '{"jti": "b0000000-0000-4000-8000-0000000000dd"}')::text,
                    '{"type": "access", "type": "access"}']) WITH ORDINALITY AS u(c, n);

-- A token of ours as PostgREST's bearer cannot issue sessions (a stolen
-- add-in token must not mint pairs that outlive its revocation) unless it
-- carries the scope tokens:manage; the identity provider's token can.
SELECT access_token AS native4 FROM extension_token_issue('b0000000-0000-4000-8000-000000000004', 'native 4') \gset
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', regress_claims_of(:'native4'), true) IS NOT NULL AS claims;
SELECT regress_try($$SELECT extension_token_issue()$$) AS native_issue;
SELECT set_config('request.jwt.claims', (regress_claims_of(:'native4')::jsonb || '{"scope": "tokens:manage"}')::text, true) IS NOT NULL AS claims;
SELECT token_type FROM extension_token_issue() AS manage_scope_issue;
SELECT set_config('request.jwt.claims', '{"sub": "b0000000-0000-4000-8000-000000000004", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT token_type FROM extension_token_issue() AS provider_issue;
ROLLBACK;

-- Claims: a signed-in user may set only the claims named in
-- extension_tokens.user_claims (none by default), and never one that
-- authorization reads; an administrator may set any but the reserved ones.
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "b0000000-0000-4000-8000-000000000005", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT c AS claim, regress_try(format($$SELECT extension_token_issue(p_claims => %L)$$, c)) AS by_user
  FROM unnest(ARRAY['{"app_metadata": {"role": "admin"}}', '{"aal": "aal2"}', '{"email": "ceo@example.com"}',
                    '{"amr": ["mfa"]}', '{"user_metadata": {}}', '{"phone": "1"}', '{"is_anonymous": false}',
                    '{"plan": "pro"}', '{"scope": "tokens:manage"}']) AS c;
RESET ROLE;
SET LOCAL extension_tokens.user_claims = 'plan, device';
SET LOCAL ROLE regress_et_authenticated;
SELECT (extension_token_validate(access_token)).claims->>'plan' AS allowed_plan
  FROM extension_token_issue(p_claims => '{"plan": "pro", "device": "laptop"}');
SELECT regress_try($$SELECT extension_token_issue(p_claims => '{"plan": "pro", "aal": "aal2"}')$$) AS still_no_aal;
ROLLBACK;
SELECT regress_try($$SET extension_tokens.user_claims = 'plan, app_metadata'$$) AS authority_in_allow_list;
SELECT (extension_token_validate(access_token)).claims->'app_metadata' AS admin_sets_app_metadata
  FROM extension_token_issue('b0000000-0000-4000-8000-000000000006', p_claims => '{"app_metadata": {"plan": "pro"}}');

-- The signing keys, for administrators: key ids, never the secret, and the
-- live sessions each signed.
SELECT status, length(key_id) AS kid_length, live_sessions > 0 AS signs_live_sessions,
       key_id <> current_setting('extension_tokens.jwt_secret') AS not_the_secret
  FROM extension_tokens_signing_keys() WHERE status = 'current';
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT regress_try($$SELECT * FROM extension_tokens_signing_keys()$$) AS user_reads_keys;
ROLLBACK;

-- The session list shows the client of the issue and of the last refresh
-- (request.headers: user-agent, the first x-forwarded-for), NULL outside
-- PostgREST or when the address is not one.
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "b0000000-0000-4000-8000-000000000007", "role": "authenticated"}', true) IS NOT NULL AS claims;
SELECT set_config('request.headers', '{"user-agent": "VS Code/1.96 extension_tokens-addin/2.0", "x-forwarded-for": "203.0.113.7, 10.0.0.1"}', true) IS NOT NULL AS headers;
SELECT refresh_token AS ua_refresh FROM extension_token_issue(p_name => 'laptop') \gset
SELECT set_config('request.headers', '{"user-agent": "curl/8", "x-forwarded-for": "not-an-ip"}', true) IS NOT NULL AS headers;
SELECT token_type FROM extension_token_issue(p_name => 'script');
SELECT set_config('request.headers', '{"x-forwarded-for": "2001:db8::1"}', true) IS NOT NULL AS headers;
SELECT token_type FROM extension_token_issue(p_name => 'v6');
SELECT name, user_agent, ip FROM extension_token_list() ORDER BY name;
COMMIT;
SELECT set_config('request.headers', '{"user-agent": "JetBrains/2025.1", "x-forwarded-for": "198.51.100.2"}', false) IS NOT NULL AS headers;
SELECT token_type FROM extension_token_refresh(:'ua_refresh');
RESET request.headers;
SELECT name, user_agent, ip FROM extension_token_list('b0000000-0000-4000-8000-000000000007') WHERE name = 'laptop';

-- A rate limit through PostgREST (request.method set): SQLSTATE PGRST,
-- whose message is the response body (code PT429, the retry time in
-- retry_after) and whose detail sets the status and the Retry-After header;
-- SQL callers keep PT429.
SET extension_tokens.issue_rate_limit = 1;
SELECT token_type FROM extension_token_issue('b0000000-0000-4000-8000-000000000008');
SELECT regress_try($$SELECT extension_token_issue('b0000000-0000-4000-8000-000000000008')$$) ~ '^PT429: ' AS sql_caller_gets_pt429;
DO $$
DECLARE st text; msg text; det text;
BEGIN
  PERFORM set_config('request.method', 'POST', true);
  PERFORM extension_token_issue('b0000000-0000-4000-8000-000000000008');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RAISE NOTICE 'sqlstate %, code %, retry_after > 0 %, status %, Retry-After matches %', st,
    msg::jsonb->>'code', (msg::jsonb->>'retry_after')::int > 0, det::jsonb->>'status',
    det::jsonb->'headers'->>'Retry-After' = msg::jsonb->>'retry_after';
END $$;
RESET extension_tokens.issue_rate_limit;
