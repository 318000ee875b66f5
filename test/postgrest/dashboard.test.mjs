// The dashboard: a user signed in through Supabase Auth manages their own
// add-in sessions through PostgREST, and nobody else's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
  assert.match(data.refresh_token, /^ext_rt_[0-9A-Za-z]{49}$/);
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

test('a user JWT whose sub is not a uuid is refused with 42501', async () => {
  const r = await rpc('extension_token_issue', {}, { token: userJwt('not-a-uuid') });
  assert.equal(r.status, 403, show(r));
  assert.equal(r.body.code, '42501');
  assert.match(r.body.message, /sub claim/);
});

test('PostgREST refuses a user JWT signed with another secret before the extension sees it', async () => {
  const forged = userJwt(newUser()).split('.');
  forged[2] = Buffer.from('not the signature').toString('base64url');
  const r = await call('/rpc/extension_token_list', { token: forged.join('.'), args: {} });
  assert.equal(r.status, 401, show(r));
  assert.match(r.body.code, /^PGRST30/);
});
