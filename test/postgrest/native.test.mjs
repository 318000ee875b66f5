// The extension's access tokens as PostgREST's own bearer tokens
// (extension_tokens.postgrest_role = 'authenticated', the same jwt-secret),
// policed by db-pre-request = public.extension_token_pre_request, and the
// grants that extension_tokens_grant_api_roles() makes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  AUDIENCE, AUD_BASE, ANON_KEY, ISSUER, PRE_REQUEST, SERVICE_KEY, call, decodeJwt, issueAs, newUser,
  psql, rpc, show, signJwt, supabase, userJwt, validate,
} from './helpers.mjs';

const whoami = (token) => call('/rpc/whoami', { method: 'GET', token });

test('PostgREST runs with db-pre-request = public.extension_token_pre_request', () => {
  assert.equal(PRE_REQUEST, true,
    'extension_token_pre_request() is not in the installed extension, so PostgREST runs without it');
});

test('issued and refreshed access tokens carry role = extension_tokens.postgrest_role', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const { header, payload } = decodeJwt(pair.access_token);
  assert.equal(header.alg, 'HS256');
  assert.equal(payload.role, 'authenticated', JSON.stringify(payload));
  assert.equal(payload.sub, me);
  assert.equal(payload.iss, ISSUER);
  assert.equal(payload.aud, AUDIENCE);

  const next = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(next.status, 200, show(next));
  assert.equal(decodeJwt(next.body.access_token).payload.role, 'authenticated');

  const byBackend = await rpc('extension_token_issue', { p_user_id: newUser() }, { token: SERVICE_KEY });
  assert.equal(byBackend.status, 200, show(byBackend));
  assert.equal(decodeJwt(byBackend.body.access_token).payload.role, 'authenticated',
    'a token a service_role backend issues is an authenticated user\'s, never service_role');
});

test('our access token is a PostgREST bearer token: whoami shows role authenticated and our sub', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const r = await whoami(pair.access_token);
  assert.equal(r.status, 200, show(r));
  assert.equal(r.body?.role, 'authenticated', show(r));
  assert.equal(r.body.sub, me);
  assert.equal(r.body.session_id, pair.session_id);
  assert.equal(r.body.type, 'access');

  // supabase-js with the add-in's token as its bearer token.
  const { data, error } = await supabase(pair.access_token).rpc('whoami', {}, { get: true });
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(data.sub, me);
});

test('with our access token as bearer, the user manages their own sessions (the sub is the user)', async () => {
  const me = newUser();
  const pair = await issueAs(me, { p_name: 'bearer' });
  const list = await rpc('extension_token_list', {}, { token: pair.access_token });
  assert.equal(list.status, 200, show(list));
  assert.deepEqual(list.body.map((s) => s.session_id), [pair.session_id]);

  const other = await rpc('extension_token_list', { p_user_id: newUser() }, { token: pair.access_token });
  assert.equal(other.status, 403, show(other));
  assert.equal(other.body.code, '42501');
});

test('a revoked access token is refused by the very next request: HTTP 401 PT401 revoked', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const before = await whoami(pair.access_token);
  assert.equal(before.status, 200, show(before));

  const rv = await rpc('extension_token_revoke', { p_token: pair.access_token }, { token: userJwt(me) });
  assert.equal(rv.status, 200, show(rv));
  assert.equal(rv.body, true);

  const after = await whoami(pair.access_token);
  assert.equal(after.status, 401, show(after));
  assert.equal(after.body.code, 'PT401');
  assert.equal(after.body.details, 'revoked');

  const { data, error, status } = await supabase(pair.access_token).rpc('extension_token_list');
  assert.equal(status, 401);
  assert.equal(data, null);
  assert.equal(error?.code, 'PT401');
  assert.equal(error.details, 'revoked');
});

test('the pre-request function reads the Authorization header as PostgREST does: every spelling PostgREST accepts is checked', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const t = pair.access_token;
  const spellings = [`Bearer ${t}`, `bearer ${t}`, `BEARER ${t}`, `BeArEr ${t}`,
    `Bearer  ${t}`, `Bearer\t${t}`, `Bearer \t${t}`, `bearer\t\t${t}`];
  const get = (authorization) => call('/rpc/whoami', { method: 'GET', authorization });

  // Which of them PostgREST itself takes as this bearer token.
  const accepted = [];
  for (const authorization of spellings) {
    const r = await get(authorization);
    if (r.status === 200 && r.body?.sub === me) accepted.push(authorization);
  }
  assert.ok(accepted.includes(`Bearer ${t}`), 'PostgREST accepts the token at all');

  const rv = await rpc('extension_token_revoke', { p_token: t }, { token: userJwt(me) });
  assert.equal(rv.body, true, show(rv));
  const slipped = [];
  for (const authorization of accepted) {
    const r = await get(authorization);
    if (!(r.status === 401 && r.body?.code === 'PT401' && r.body?.details === 'revoked')) {
      slipped.push(`${JSON.stringify(authorization.replace(t, '<revoked token>'))} -> ${show(r)}`);
    }
  }
  const shown = accepted.map((a) => JSON.stringify(a.replace(t, '<token>'))).join(', ');
  assert.deepEqual(slipped, [],
    `a revoked token that PostgREST accepts must get 401 PT401 revoked (PostgREST accepts ${shown})`);
});

test('an access token that a refresh replaced is refused (PT401 revoked); its successor is accepted', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const next = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(next.status, 200, show(next));

  const old = await whoami(pair.access_token);
  assert.equal(old.status, 401, show(old));
  assert.equal(old.body.code, 'PT401');
  assert.equal(old.body.details, 'revoked');

  const fresh = await whoami(next.body.access_token);
  assert.equal(fresh.status, 200, show(fresh));
  assert.equal(fresh.body.sub, me);
});

test('a PostgREST with jwt-aud = "extension" (extension_tokens.jwt_audience) accepts our tokens and still refuses revoked ones', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const ok = await call('/rpc/whoami', { method: 'GET', token: pair.access_token, base: AUD_BASE });
  assert.equal(ok.status, 200, show(ok));
  assert.equal(ok.body.sub, me);
  assert.equal(ok.body.aud, AUDIENCE);

  const supa = await call('/rpc/whoami', { method: 'GET', token: userJwt(me), base: AUD_BASE });
  assert.equal(supa.status, 401, `a user JWT with aud "authenticated": ${show(supa)}`);
  assert.match(supa.body.code, /^PGRST30/);

  const rv = await rpc('extension_token_revoke', { p_token: pair.access_token }, { token: pair.access_token });
  assert.equal(rv.body, true, `the add-in revokes its own session with its own token: ${show(rv)}`);
  const after = await call('/rpc/whoami', { method: 'GET', token: pair.access_token, base: AUD_BASE });
  assert.equal(after.status, 401, show(after));
  assert.equal(after.body.code, 'PT401');
  assert.equal(after.body.details, 'revoked');
});

test('a correctly signed access token that was never issued is refused: PT401 not_found', async () => {
  const iat = Math.floor(Date.now() / 1000);
  const forged = signJwt({
    iss: ISSUER, aud: AUDIENCE, sub: newUser(), session_id: randomUUID(), jti: randomUUID(),
    type: 'access', role: 'authenticated', iat, exp: iat + 3600,
  });
  const v = await validate(forged);
  assert.equal(v.valid, false);
  assert.equal(v.error, 'not_found');
  const r = await whoami(forged);
  assert.equal(r.status, 401, show(r));
  assert.equal(r.body.code, 'PT401');
  assert.equal(r.body.details, v.error);
});

test('other tokens pass the pre-request function untouched: a Supabase user JWT, the anon and service keys, none', async () => {
  const me = newUser();
  const user = await whoami(userJwt(me));
  assert.equal(user.status, 200, show(user));
  assert.equal(user.body.sub, me);
  assert.equal(user.body.role, 'authenticated');

  // A user JWT of the same user keeps working after their add-in sessions are revoked.
  await issueAs(me);
  const rv = await rpc('revoke_user_extension_tokens', {}, { token: userJwt(me) });
  assert.equal(rv.body, 1, show(rv));
  assert.equal((await whoami(userJwt(me))).status, 200);

  for (const [name, token] of [['anon key', ANON_KEY], ['service key', SERVICE_KEY], ['none', undefined]]) {
    const r = await whoami(token);
    assert.equal(r.status, 200, `${name}: ${show(r)}`);
  }
  const sr = await whoami(SERVICE_KEY);
  assert.equal(sr.body.role, 'service_role');
});

test('tokens of our shape (type access and a session_id) are checked whatever their iss; others pass', async () => {
  const iat = Math.floor(Date.now() / 1000);
  const base = {
    aud: AUDIENCE, sub: newUser(), session_id: randomUUID(), jti: randomUUID(),
    role: 'authenticated', iat, exp: iat + 3600,
  };
  // 1.2: the issuer no longer decides (it may have changed since a token
  // was minted): a token of our shape naming a session we never issued it
  // for is refused.
  const ours = await whoami(signJwt({ ...base, iss: 'someone-else', type: 'access' }));
  assert.equal(ours.status, 401, show(ours));
  assert.equal(ours.body.code, 'PT401');
  for (const claims of [{ iss: ISSUER, type: 'id' }, { iss: ISSUER }]) {
    const token = signJwt({ ...base, ...claims });
    assert.equal((await validate(token)).valid, false, 'not a valid token of ours');
    const r = await whoami(token);
    assert.equal(r.status, 200, `${JSON.stringify(claims)}: ${show(r)}`);
    assert.equal(r.body.sub, base.sub);
  }
});

test('extension_tokens_grant_api_roles() grants exactly the contract, takes back anything else, and is idempotent', () => {
  const exists = psql("SELECT count(*) FROM pg_proc WHERE proname = 'extension_tokens_grant_api_roles'");
  assert.equal(exists, '1', 'extension_tokens_grant_api_roles() is not in the installed extension');

  // Stray grants that it must take back (one transaction: no other test sees them).
  psql(`GRANT EXECUTE ON FUNCTION extension_tokens_cleanup(interval) TO anon, authenticated;
        GRANT EXECUTE ON FUNCTION extension_token_issue(text, text, interval, jsonb, text[]) TO anon;
        GRANT EXECUTE ON FUNCTION extension_token_revoke_session(uuid) TO anon;
        SELECT extension_tokens_grant_api_roles();`);
  psql('SELECT extension_tokens_grant_api_roles()');

  const rows = psql(`
    SELECT r.rolname || ' ' || p.proname || ' ' || has_function_privilege(r.rolname, p.oid, 'EXECUTE')
      FROM pg_proc p
      JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'extension_tokens'
     CROSS JOIN (VALUES ('anon'), ('authenticated'), ('service_role')) r(rolname)
     ORDER BY 1`).split('\n');
  const all = ['anon', 'authenticated', 'service_role'];
  const signedIn = ['authenticated', 'service_role'];
  const want = {
    extension_token_validate: all,
    extension_token_refresh: all,
    extension_token_pre_request: all,
    // 1.2: executable by PUBLIC (the token is the credential, RFC 7009).
    extension_token_revoke: all,
    // extension_token_session_state (the session rule's SQL face) is for
    // nobody: it is called by the extension's own statements and views.
    // 1.2: the add-in starts and polls a device authorization with the anon key.
    extension_token_device_start: all,
    extension_token_device_poll: all,
    // 1.2: the public JWK Set (PUBLIC), read with a GET by anyone.
    extension_token_jwks: all,
    extension_token_device_approve: signedIn,
    extension_token_device_deny: signedIn,
    extension_token_issue: signedIn,
    extension_token_list: signedIn,
    extension_token_api_key_create: signedIn,
    extension_token_api_key_list: signedIn,
    extension_token_revoke_session: signedIn,
    revoke_user_extension_tokens: signedIn,
    // 1.2: signed-in users read their own events (the lookup by token is
    // for administrators, outside the API roles).
    extension_token_events: signedIn,
    // 1.2: the service role's admin page and monitoring read the statistics.
    extension_token_stats: ['service_role'],
    extension_token_event_counts: ['service_role'],
    extension_token_events_daily: ['service_role'],
  };
  const wrong = rows.filter((row) => {
    const [role, fn, has] = row.split(' ');
    return (has === 'true') !== (want[fn] ?? []).includes(role);
  });
  assert.deepEqual(wrong, [], 'privileges that differ from the contract');
  for (const fn of Object.keys(want)) {
    assert.ok(rows.some((row) => row.split(' ')[1] === fn), `${fn} is not in the extension`);
  }
});

test('the issued-per-day view is the service role\'s admin page: 30 zero-filled days; users get 403 42501', async () => {
  const r = await call('/extension_tokens_issued_daily', { method: 'GET', args: { order: 'day' }, token: SERVICE_KEY });
  assert.equal(r.status, 200, show(r));
  assert.equal(r.body.length, 30, show(r));
  assert.ok(r.body.every((d) => Number.isInteger(d.sessions_issued) && Number.isInteger(d.api_keys_created)), show(r));
  assert.ok(r.body[29].sessions_issued >= 1, 'today counts the sessions this suite issued');

  const u = await call('/extension_tokens_issued_daily', { method: 'GET', token: userJwt(newUser()) });
  assert.equal(u.status, 403, show(u));
  assert.equal(u.body.code, '42501');
});

test('extension_tokens_grant_api_roles() is admin only: through PostgREST a user gets 403 42501', async () => {
  const r = await rpc('extension_tokens_grant_api_roles', {}, { token: userJwt(newUser()) });
  assert.equal(r.status, 403, show(r));
  assert.equal(r.body.code, '42501');
});
