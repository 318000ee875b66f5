-- api_keys: personal access tokens.  A key is a session of kind 'api_key':
-- created once (the key shown once), validated like an access token, with
-- scopes, an optional expiry and a per-user limit; revoked by its key id or
-- by the key; through PostgREST's pre-request it runs the request as the
-- key's user.
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;

-- A key's checksum, computed from the description in the README alone:
-- the first 32 bits of SHA-256 of everything before it, in 6 base62 digits.
CREATE FUNCTION regress_checksum(head text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    b62 constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    v bigint := ('x' || encode(substr(sha256(convert_to(head, 'UTF8')), 1, 4), 'hex'))::bit(32)::bigint;
    sum text := '';
BEGIN
    FOR i IN 1..6 LOOP
        sum := substr(b62, 1 + (v % 62)::int, 1) || sum;
        v := v / 62;
    END LOOP;
    RETURN sum;
END
$$;

-- Created by an administrator for a user: the key once, never stored.
SELECT api_key AS key1, key_id AS key1_id
  FROM extension_token_api_key_create('user_2apiKeys', 'ci job', ARRAY['orders:read', 'orders:write']) \gset
SELECT :'key1' ~ '^ext_pat_[0-9A-Za-z]{71}$' AS format,
       right(:'key1', 6) = regress_checksum(left(:'key1', -6)) AS checksum_from_the_readme,
       (SELECT count(*) FROM extension_token_sessions
         WHERE session_id = :'key1_id' AND kind = 'api_key'
           AND access_hash = sha256(convert_to(:'key1', 'UTF8'))) AS one_row_hash_only,
       (SELECT count(*) FROM extension_token_sessions s
         WHERE s::text LIKE '%' || substr(:'key1', 9, 40) || '%') AS key_in_table;

-- Validated as an access token is, with its claims and scopes.
SELECT valid, error, user_id, token_name, kind, scopes, expires_at = 'infinity' AS never_expires,
       claims->>'sub' AS sub, claims->>'scope' AS scope, claims->>'type' AS type,
       (claims->>'session_id')::uuid = :'key1_id' AS names_its_key
  FROM extension_token_validate(:'key1');
SELECT valid, error FROM extension_token_validate(:'key1', ARRAY['orders:read']);
SELECT valid, error FROM extension_token_validate(:'key1', ARRAY['orders:read', 'admin']);

-- Hostile keys, each with its answer.
SELECT label, v.valid, v.error
  FROM (VALUES
    ('bad checksum', left(:'key1', -1) || CASE WHEN right(:'key1', 1) = 'A' THEN 'B' ELSE 'A' END),
    ('wrong prefix', 'ext_pax_' || substr(:'key1', 9)),
    ('refresh prefix', 'ext_rt_' || substr(:'key1', 9)),
    ('short', left(:'key1', 40)),
    ('bare prefix', 'ext_pat_'),
    ('1 MB', 'ext_pat_' || repeat('A', 1024 * 1024)),
    ('not base62', left(:'key1', 30) || '-' || substr(:'key1', 32)),
    ('unknown key id', 'ext_pat_' || repeat('0', 21) || '1' || substr(:'key1', 31, 43)
                       || regress_checksum('ext_pat_' || repeat('0', 21) || '1' || substr(:'key1', 31, 43))),
    ('its key id, other secret', left(:'key1', 30) || repeat('x', 43)
                       || regress_checksum(left(:'key1', 30) || repeat('x', 43))),
    ('key id beyond 128 bits', 'ext_pat_' || repeat('z', 22) || substr(:'key1', 31, 43)
                       || regress_checksum('ext_pat_' || repeat('z', 22) || substr(:'key1', 31, 43)))
  ) AS t(label, token), LATERAL extension_token_validate(t.token) v;
SELECT extension_token_revoke(left(:'key1', 30) || repeat('x', 43)
                              || regress_checksum(left(:'key1', 30) || repeat('x', 43))) AS revoke_by_forged_key;

-- A key never refreshes, and is never an access token's session.
SELECT regress_try(format('SELECT extension_token_refresh(%L)', :'key1')) AS refresh_with_key;

-- Listed, without a secret; in the session list too, and spared by the
-- session limit.
SELECT name, status, kind, scopes, use_count >= 0 AS counted
  FROM extension_token_api_key_list('user_2apiKeys');
SET extension_tokens.max_sessions_per_user = 1;
SELECT count(*) AS issued FROM extension_token_issue('user_2apiKeys', 'laptop');
SELECT count(*) AS issued FROM extension_token_issue('user_2apiKeys', 'phone');
SELECT name, status, kind FROM extension_token_list('user_2apiKeys') ORDER BY kind, name;
SELECT valid FROM extension_token_validate(:'key1');
SET extension_tokens.max_sessions_per_user = 0;

-- The per-user limit: refused beyond it, counted per user, free again
-- after a revocation.
SET extension_tokens.max_api_keys_per_user = 2;
SELECT key_id AS key2_id FROM extension_token_api_key_create('user_2apiKeys', 'second') \gset
SELECT regress_try($$SELECT extension_token_api_key_create('user_2apiKeys', 'third')$$) AS over_limit;
SELECT count(*) AS other_user_unaffected FROM extension_token_api_key_create('user_2otherKeys', 'theirs');
SELECT extension_token_revoke_session(:'key2_id') AS revoked_second;
SELECT count(*) AS created_after_revoke FROM extension_token_api_key_create('user_2apiKeys', 'third');
RESET extension_tokens.max_api_keys_per_user;

-- Revoked by its key id: the next validation says so; revoke by the key
-- itself then finds nothing left to revoke (RFC 7009: false).
SELECT extension_token_revoke_session(:'key1_id') AS revoked;
SELECT valid, error FROM extension_token_validate(:'key1');
SELECT extension_token_revoke(:'key1') AS revoke_again;
-- and by the key itself
SELECT api_key AS key3 FROM extension_token_api_key_create('user_2apiKeys', 'leaked') \gset
SELECT extension_token_revoke(:'key3') AS revoked_by_key;
SELECT valid, error FROM extension_token_validate(:'key3');

-- Expiry.
SELECT api_key AS key4, expires_at > now() AND expires_at <= now() + interval '1 second' AS expiry
  FROM extension_token_api_key_create('user_2apiKeys', 'short', NULL, '1 second') \gset
SELECT :'expiry' AS expires_in_a_second, valid FROM extension_token_validate(:'key4');
SELECT pg_sleep(1.2);
SELECT valid, error FROM extension_token_validate(:'key4');
SELECT regress_try($$SELECT extension_token_api_key_create('user_2apiKeys', 'x', NULL, '0 seconds')$$) AS zero_expiry;
SELECT regress_try($$SELECT extension_token_api_key_create('user_2apiKeys', 'x', NULL, '101 years')$$) AS over_100_years;
SELECT regress_try($$SELECT count(*) FROM extension_token_api_key_create('user_2apiKeys', 'x', NULL, '100 years')$$) AS just_100_years;
SELECT regress_try($$SELECT extension_token_api_key_create('user_2apiKeys', 'x', ARRAY['Bad Scope'])$$) AS bad_scope;
SELECT regress_try($$SELECT extension_token_api_key_create('user_2apiKeys', 'x', NULL, NULL, '{"role": "service_role"}')$$) AS reserved_claim;

-- Extra claims go into the key's claims.
SELECT api_key AS key5 FROM extension_token_api_key_create('user_2apiKeys', 'claims', ARRAY['reports'], NULL, '{"team": "data"}') \gset
SELECT claims->>'team' AS team, claims->>'scope' AS scope FROM extension_token_validate(:'key5');

-- Who may create: a signed-in user for himself, not for another; a native
-- token of ours only with the scope tokens:manage.
GRANT EXECUTE ON FUNCTION extension_token_api_key_create(text, text, text[], interval, jsonb),
                          extension_token_api_key_list(text) TO regress_et_authenticated;
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "user_2apiSelf", "role": "regress_et_authenticated"}', true) IS NOT NULL;
SELECT name FROM extension_token_api_key_create(p_name => 'mine');
SELECT regress_try($$SELECT extension_token_api_key_create('user_2apiKeys', 'theirs')$$) AS for_another_user;
SELECT name FROM extension_token_api_key_list();
COMMIT;
SELECT access_token AS plain_native FROM extension_token_issue('user_2apiSelf', 'native') \gset
SELECT access_token AS manage_native FROM extension_token_issue('user_2apiSelf', 'native manage', NULL, NULL, ARRAY['tokens:manage']) \gset
CREATE FUNCTION regress_claims_json(tok text) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT convert_from(regress_b64url_decode(split_part(tok, '.', 2)), 'UTF8') $$;
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', regress_claims_json(:'plain_native'), true) IS NOT NULL;
SELECT regress_try($$SELECT extension_token_api_key_create(p_name => 'by plain native')$$) AS native_without_manage;
SELECT set_config('request.jwt.claims', regress_claims_json(:'manage_native'), true) IS NOT NULL;
SELECT name FROM extension_token_api_key_create(p_name => 'by manage native');
COMMIT;

-- A credential with scopes acts within them: listing, reading the events of
-- and revoking the user's sessions and keys need tokens:manage among them,
-- except revoking its own session.  One without scopes acts as its user.
GRANT EXECUTE ON FUNCTION extension_token_list(text), extension_token_events(text, timestamptz),
                          revoke_user_extension_tokens(text, uuid),
                          extension_token_revoke_session(uuid) TO regress_et_authenticated;
SELECT access_token AS scoped_native, session_id AS scoped_sid
  FROM extension_token_issue('user_2apiSelf', 'native scoped', NULL, NULL, ARRAY['notes:read']) \gset
SELECT session_id AS other_sid FROM extension_token_issue('user_2apiSelf', 'another device') \gset
BEGIN;
SET LOCAL ROLE regress_et_authenticated;
SELECT set_config('request.jwt.claims', regress_claims_json(:'scoped_native'), true) IS NOT NULL;
SELECT regress_try($$SELECT count(*) FROM extension_token_list()$$) AS scoped_list;
SELECT regress_try($$SELECT count(*) FROM extension_token_api_key_list()$$) AS scoped_key_list;
SELECT regress_try($$SELECT count(*) FROM extension_token_events()$$) AS scoped_events;
SELECT regress_try($$SELECT revoke_user_extension_tokens()$$) AS scoped_revoke_all;
SELECT regress_try(format('SELECT extension_token_revoke_session(%L)', :'other_sid')) AS scoped_revoke_other;
-- an API key's claims as the pre-request sets them: the same
SELECT set_config('request.jwt.claims', json_build_object('sub', 'user_2apiSelf', 'type', 'api_key',
                  'session_id', :'other_sid', 'scope', 'orders:read')::text, true) IS NOT NULL;
SELECT regress_try($$SELECT count(*) FROM extension_token_list()$$) AS scoped_key_list_sessions;
SELECT set_config('request.jwt.claims', regress_claims_json(:'manage_native'), true) IS NOT NULL;
SELECT count(*) > 0 AS manage_lists FROM extension_token_list();
SELECT set_config('request.jwt.claims', regress_claims_json(:'plain_native'), true) IS NOT NULL;
SELECT count(*) > 0 AS unscoped_lists FROM extension_token_list();
SELECT set_config('request.jwt.claims', regress_claims_json(:'scoped_native'), true) IS NOT NULL;
SELECT extension_token_revoke_session(:'scoped_sid') AS scoped_signs_itself_out;
COMMIT;
SELECT session_id::text = :'other_sid' AS other, revoked_at IS NOT NULL AS revoked FROM extension_token_sessions
 WHERE session_id IN (:'scoped_sid', :'other_sid') ORDER BY 1;

-- Through PostgREST's pre-request: the key in x-api-key makes the request
-- run as postgrest_role with the key's claims.
SET extension_tokens.postgrest_role = 'regress_et_authenticated';
SELECT api_key AS key6, key_id AS key6_id
  FROM extension_token_api_key_create('user_2apiKeys', 'rest', ARRAY['orders:read']) \gset
CREATE FUNCTION regress_key_request(p_headers text, p_claims text DEFAULT '{"role": "regress_et_anon"}')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; det text; r text;
BEGIN
  PERFORM set_config('request.headers', p_headers, true);
  PERFORM set_config('request.jwt.claims', p_claims, true);
  SET LOCAL ROLE regress_et_anon;
  PERFORM extension_token_pre_request();
  r := current_user || ' ' || (current_setting('request.jwt.claims')::jsonb - 'session_id')::text;
  RESET ROLE;
  RETURN r;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, det = PG_EXCEPTION_DETAIL;
  RETURN st || ': ' || det;
END $$;
SELECT regress_key_request(json_build_object('x-api-key', :'key6')::text) AS with_key;
-- Supabase's anon key as bearer names no user: the key decides
SELECT regress_key_request(json_build_object('x-api-key', :'key6')::text,
                           '{"iss": "supabase", "role": "regress_et_anon", "exp": 4102444800}') AS with_anon_bearer;
-- two identities: refused
SELECT regress_key_request(json_build_object('x-api-key', :'key6')::text,
                           '{"sub": "someone", "role": "regress_et_authenticated"}') AS with_user_bearer;
SELECT regress_key_request('{"x-api-key": "ext_pat_nonsense"}') AS garbage_key;
SELECT regress_key_request('{"x-api-key": 42}') AS not_a_string;
SELECT regress_key_request(json_build_object('x-api-key', repeat('A', 100000))::text) AS huge_header;
SELECT regress_key_request('{"x-api-key": "a", "x-api-key": "b"') AS unparseable_headers;
-- a NUL byte in any header arrives as \u0000, which makes the header JSON unreadable
SELECT regress_key_request(format('{"x-api-key": "%s", "x-evil": "a\u0000b"}', :'key6')) AS nul_in_headers;
SELECT regress_key_request('{"x-api-key": "ext_pat_\u0000"}') AS nul_in_key;
SELECT regress_key_request('{"user-agent": "curl"}') AS no_key_anonymous;
SET extension_tokens.api_key_header = 'x-other-key';
SELECT regress_key_request(json_build_object('x-other-key', :'key6')::text) AS configured_header;
SELECT regress_try($$SET extension_tokens.api_key_header = 'X-Upper'$$) AS upper_case_header;
RESET extension_tokens.api_key_header;
SELECT extension_token_revoke_session(:'key6_id') AS revoked;
SELECT regress_key_request(json_build_object('x-api-key', :'key6')::text) AS after_revoke;
RESET extension_tokens.postgrest_role;
SELECT api_key AS key7 FROM extension_token_api_key_create('user_2apiKeys', 'no role') \gset
SELECT regress_key_request(json_build_object('x-api-key', :'key7')::text) AS without_postgrest_role;

-- Keys near their expiry are in the expiring list, as sessions are.
SELECT key_id AS key8_id FROM extension_token_api_key_create('user_2apiKeys', 'expiring', NULL, '3 days') \gset
SELECT kind, name FROM extension_token_sessions_expiring('7 days') WHERE session_id = :'key8_id';
SELECT count(*) AS not_yet FROM extension_token_sessions_expiring('1 day') WHERE session_id = :'key8_id';
