// The dashboard: a user signed in through Supabase Auth manages their own
// add-in sessions through PostgREST, and nobody else's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  ANON_KEY, call, issueAs, newUser, rpc, show, supabase, userJwt, validate,
} from './helpers.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

test('a signed-in user issues a pair for themself with supabase-js rpc(), and it validates as theirs', async () => {
  const me = newUser();
  const { data, error, status } = await supabase(userJwt(me))
    .rpc('extension_token_issue', { p_name: 'VS Code add-in' });
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(status, 200);
  assert.match(data.access_token, /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.match(data.refresh_token, /^ext_rt_[0-9A-Za-z]{71}$/);
  assert.equal(data.token_type, 'Bearer');
  assert.equal(data.expires_in, 30 * 86400);
  assert.match(data.session_id, UUID_RE);

  const v = await validate(data.access_token);
  assert.equal(v.valid, true, JSON.stringify(v));
  assert.equal(v.error, null);
  assert.equal(v.user_id, me);
  assert.equal(v.session_id, data.session_id);
  assert.equal(v.token_name, 'VS Code add-in');
  assert.equal(v.claims.sub, me);
});

test('a user may name themself as p_user_id', async () => {
  const me = newUser();
  const r = await rpc('extension_token_issue', { p_user_id: me, p_name: 'explicit' },
    { token: userJwt(me) });
  assert.equal(r.status, 200, show(r));
  assert.equal((await validate(r.body.access_token)).user_id, me);
});

test('the user lists their own sessions (GET and supabase-js), with no token or hash in them', async () => {
  const me = newUser();
  const pair = await issueAs(me, { p_name: 'listed' });

  const { data, error } = await supabase(userJwt(me)).rpc('extension_token_list');
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(data.length, 1);
  assert.equal(data[0].session_id, pair.session_id);
  assert.equal(data[0].user_id, me);
  assert.equal(data[0].name, 'listed');
  assert.equal(data[0].status, 'active');
  assert.equal(data[0].revoked_at, null);
  const text = JSON.stringify(data);
  assert.ok(!text.includes(pair.access_token) && !text.includes(pair.refresh_token));
  assert.ok(!/ext_rt_|eyJ/.test(text), text);

  const r = await rpc('extension_token_list', {}, { method: 'GET', token: userJwt(me) });
  assert.equal(r.status, 200, show(r));
  assert.deepEqual(r.body.map((s) => s.session_id), [pair.session_id]);
});

test('the user revokes one session with extension_token_revoke: it then validates as revoked', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const client = supabase(userJwt(me));

  const first = await client.rpc('extension_token_revoke', { p_token: pair.access_token });
  assert.equal(first.error, null, JSON.stringify(first.error));
  assert.equal(first.data, true);
  const v = await validate(pair.access_token);
  assert.equal(v.valid, false);
  assert.equal(v.error, 'revoked');

  const again = await client.rpc('extension_token_revoke', { p_token: pair.refresh_token });
  assert.equal(again.data, false, 'revoking an already revoked session says false');

  const { data } = await client.rpc('extension_token_list');
  assert.equal(data[0].status, 'revoked');
  assert.notEqual(data[0].revoked_at, null);
});

test('revoke_user_extension_tokens() with no argument revokes all of the caller\'s sessions, and only theirs', async () => {
  const me = newUser();
  const other = newUser();
  const mine = await issueAs(me);
  const theirs = await issueAs(other);

  const r = await rpc('revoke_user_extension_tokens', {}, { token: userJwt(me) });
  assert.equal(r.status, 200, show(r));
  assert.equal(r.body, 1);
  assert.equal((await validate(mine.access_token)).error, 'revoked');
  assert.equal((await validate(theirs.access_token)).valid, true, 'another user is untouched');

  const again = await rpc('revoke_user_extension_tokens', {}, { token: userJwt(me) });
  assert.equal(again.body, 0);
});

test('a second issue revokes the first session (max_sessions_per_user = 1, reason session_limit)', async () => {
  const me = newUser();
  const first = await issueAs(me, { p_name: 'first' });
  const second = await issueAs(me, { p_name: 'second' });
  assert.equal((await validate(first.access_token)).error, 'revoked');
  assert.equal((await validate(second.access_token)).valid, true);
  const r = await rpc('extension_token_list', {}, { token: userJwt(me) });
  const byId = Object.fromEntries(r.body.map((s) => [s.session_id, s]));
  assert.equal(byId[first.session_id].status, 'revoked');
  assert.equal(byId[first.session_id].revoked_reason, 'session_limit');
  assert.equal(byId[second.session_id].status, 'active');
});

test('listing another user\'s sessions is HTTP 403 with code 42501', async () => {
  const me = newUser();
  const other = newUser();
  await issueAs(other);
  const r = await rpc('extension_token_list', { p_user_id: other }, { token: userJwt(me) });
  assert.equal(r.status, 403, show(r));
  assert.equal(r.body.code, '42501');
  assert.match(r.body.message, /another user/);

  const { data, error, status } = await supabase(userJwt(me))
    .rpc('extension_token_list', { p_user_id: other });
  assert.equal(status, 403);
  assert.equal(data, null);
  assert.equal(error.code, '42501');
});

test('issuing for another user is HTTP 403 with code 42501, and creates nothing', async () => {
  const me = newUser();
  const other = newUser();
  const r = await rpc('extension_token_issue', { p_user_id: other }, { token: userJwt(me) });
  assert.equal(r.status, 403, show(r));
  assert.equal(r.body.code, '42501');
  assert.match(r.body.message, /another user/);
  const list = await rpc('extension_token_list', { p_user_id: other }, { token: userJwt(other) });
  assert.equal(list.status, 200, show(list));
  assert.deepEqual(list.body, []);
});

test('revoking all of another user\'s sessions is HTTP 403 with code 42501, and revokes nothing', async () => {
  const me = newUser();
  const other = newUser();
  const theirs = await issueAs(other);
  const r = await rpc('revoke_user_extension_tokens', { p_user_id: other }, { token: userJwt(me) });
  assert.equal(r.status, 403, show(r));
  assert.equal(r.body.code, '42501');
  assert.equal((await validate(theirs.access_token)).valid, true);
});

test('anon (the anon key, or no Authorization) may not issue or list: HTTP 401 with code 42501', async () => {
  for (const token of [ANON_KEY, undefined]) {
    for (const fn of ['extension_token_issue', 'extension_token_list', 'revoke_user_extension_tokens']) {
      const r = await rpc(fn, { p_user_id: newUser() }, { token });
      assert.equal(r.status, 401, `${fn} as ${token ? 'anon key' : 'nobody'}: ${show(r)}`);
      assert.equal(r.body.code, '42501', `${fn}: ${show(r)}`);
    }
  }
  const { error, status } = await supabase(ANON_KEY).rpc('extension_token_issue', {});
  assert.equal(status, 401);
  assert.equal(error.code, '42501');
});

test('a user id is any identity provider\'s sub (text from 1.2 on): Clerk, Auth0, an integer key', async () => {
  const suffix = randomUUID().slice(0, 8);
  for (const sub of [`user_2${suffix}`, `auth0|${suffix}`, `${Date.now()}${suffix.replace(/\D/g, '')}`,
    `google-oauth2|${'9'.repeat(21)}${suffix}`]) {
    const pair = await issueAs(sub, { p_name: 'text user id' });
    const v = await validate(pair.access_token);
    assert.equal(v.valid, true, `${sub}: ${JSON.stringify(v)}`);
    assert.equal(v.user_id, sub);
    assert.equal(v.claims.sub, sub);
    const list = await rpc('extension_token_list', {}, { token: userJwt(sub) });
    assert.equal(list.status, 200, show(list));
    assert.deepEqual(list.body.map((s) => [s.session_id, s.user_id]), [[pair.session_id, sub]]);
    const other = await rpc('extension_token_list', { p_user_id: `${sub}x` }, { token: userJwt(sub) });
    assert.equal(other.status, 403, `${sub} listing ${sub}x: ${show(other)}`);
    const who = await call('/rpc/whoami', { method: 'GET', token: pair.access_token });
    assert.equal(who.status, 200, show(who));
    assert.equal(who.body.sub, sub, 'our token is a PostgREST bearer token of that user');
  }
});

test('a user JWT whose sub is not a user id (empty, over 255 bytes, control characters) is refused with 42501', async () => {
  for (const sub of ['', 'u'.repeat(256), 'user\u0001', 'line\nbreak']) {
    const r = await rpc('extension_token_issue', {}, { token: userJwt(sub) });
    assert.equal(r.status, 403, `${JSON.stringify(sub).slice(0, 20)}: ${show(r)}`);
    assert.equal(r.body.code, '42501');
    assert.match(r.body.message, /sub claim/);
  }
  const ok = await rpc('extension_token_issue', {}, { token: userJwt('u'.repeat(255)) });
  assert.equal(ok.status, 200, `255 bytes is a user id: ${show(ok)}`);
});

test('the user revokes one session by its id (extension_token_revoke_session): true, then false', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const client = supabase(userJwt(me));
  const first = await client.rpc('extension_token_revoke_session', { p_session_id: pair.session_id });
  assert.equal(first.error, null, JSON.stringify(first.error));
  assert.equal(first.data, true);
  assert.equal((await validate(pair.access_token)).error, 'revoked');
  const r = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(r.status, 401, show(r));
  assert.equal(r.body.details, 'session_revoked');
  const again = await client.rpc('extension_token_revoke_session', { p_session_id: pair.session_id });
  assert.equal(again.data, false, 'an already revoked session says false');
  const unknown = await client.rpc('extension_token_revoke_session', { p_session_id: randomUUID() });
  assert.equal(unknown.data, false, 'an unknown session says false');
  const { data } = await client.rpc('extension_token_list');
  assert.equal(data[0].status, 'revoked');
  assert.equal(data[0].revoked_reason, 'revoked');
});

test('revoking another user\'s session by its id is HTTP 403 with 42501; anon may not at all', async () => {
  const me = newUser();
  const other = newUser();
  const theirs = await issueAs(other);
  const r = await rpc('extension_token_revoke_session', { p_session_id: theirs.session_id }, { token: userJwt(me) });
  assert.equal(r.status, 403, show(r));
  assert.equal(r.body.code, '42501');
  for (const token of [ANON_KEY, undefined]) {
    const a = await rpc('extension_token_revoke_session', { p_session_id: theirs.session_id }, { token });
    assert.equal(a.status, 401, show(a));
    assert.equal(a.body.code, '42501');
  }
  assert.equal((await validate(theirs.access_token)).valid, true, 'their session is untouched');
});

test('PostgREST refuses a user JWT signed with another secret before the extension sees it', async () => {
  const forged = userJwt(newUser()).split('.');
  forged[2] = Buffer.from('not the signature').toString('base64url');
  const r = await call('/rpc/extension_token_list', { token: forged.join('.'), args: {} });
  assert.equal(r.status, 401, show(r));
  assert.match(r.body.code, /^PGRST30/);
});
