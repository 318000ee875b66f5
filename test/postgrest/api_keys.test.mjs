// API keys through the real PostgREST: created from the dashboard with
// supabase-js, used by a script with an x-api-key header, under row level
// security that reads the key's user and scopes from request.jwt.claims as
// it reads a signed-in user's; revoked, expired and hostile keys refused on
// the very request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  ANON_KEY, BASE, PRE_REQUEST, issueAs, newUser, psql, rpc, show, supabase, userJwt, validate,
} from './helpers.mjs';

const KEY_FORMAT = /^ext_pat_[0-9A-Za-z]{71}$/;

// The table public.orders and its policies are made by test/postgrest.sh
// before PostgREST starts: each user sees only his own orders, and only with
// the scope orders:read; writing needs orders:write.
// A script's request: curl -H "x-api-key: $KEY" .../orders
async function withKey(key, { method = 'GET', path = '/orders?order=item', body, headers = {} } = {}) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { Accept: 'application/json', 'x-api-key': key, ...headers,
      ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let parsed = text;
  try { parsed = text === '' ? null : JSON.parse(text); } catch { /* keep text */ }
  return { status: res.status, body: parsed, headers: Object.fromEntries(res.headers) };
}

// The dashboard creates a key for its signed-in user with supabase-js.
async function createKey(user, args) {
  const { data, error } = await supabase(userJwt(user)).rpc('extension_token_api_key_create', args);
  assert.equal(error, null, JSON.stringify(error));
  return data;
}

test('a key sees exactly its owner\'s rows, with the scope the policy asks for', { skip: !PRE_REQUEST }, async () => {
  const alice = newUser();
  const bob = newUser();
  psql(`INSERT INTO public.orders (owner, item) VALUES ('${alice}', 'a1'), ('${alice}', 'a2'), ('${bob}', 'b1')`);
  const key = await createKey(alice, { p_name: 'reporting script', p_scopes: ['orders:read'] });
  assert.match(key.api_key, KEY_FORMAT);
  assert.equal(key.name, 'reporting script');
  assert.deepEqual(key.scopes, ['orders:read']);
  assert.equal(key.expires_at, null);

  const r = await withKey(key.api_key);
  assert.equal(r.status, 200, show(r));
  assert.deepEqual(r.body.map((o) => o.item), ['a1', 'a2'], 'her rows, and no one else\'s');

  // bob's key never sees alice's rows
  const bobKey = await createKey(bob, { p_scopes: ['orders:read'] });
  const rb = await withKey(bobKey.api_key);
  assert.deepEqual(rb.body.map((o) => o.item), ['b1']);

  // without the scope the policy requires: nothing
  const bare = await createKey(alice, { p_name: 'no scopes' });
  const rn = await withKey(bare.api_key);
  assert.equal(rn.status, 200, show(rn));
  assert.deepEqual(rn.body, []);

  // writing needs orders:write: the policy refuses, and allows with it.
  // PostgREST answers a policy's refusal (42501) with 401, not 403, when the
  // request had no bearer token: to PostgREST a key's request is anonymous.
  const denied = await withKey(key.api_key, { method: 'POST', path: '/orders', body: { owner: alice, item: 'a3' } });
  assert.equal(denied.status, 401, show(denied));
  assert.equal(denied.body.code, '42501');
  assert.match(denied.body.message, /row-level security/);
  const writer = await createKey(alice, { p_scopes: ['orders:read', 'orders:write'] });
  const ok = await withKey(writer.api_key, { method: 'POST', path: '/orders', body: { owner: alice, item: 'a3' } });
  assert.equal(ok.status, 201, show(ok));
  const forged = await withKey(writer.api_key, { method: 'POST', path: '/orders', body: { owner: bob, item: 'x' } });
  assert.equal(forged.status, 401, 'not in another user\'s name');
  assert.equal(forged.body.code, '42501');

  // the request ran as the key's user: what RLS and functions read
  const who = await withKey(key.api_key, { method: 'POST', path: '/rpc/whoami', body: {} });
  assert.equal(who.status, 200, show(who));
  assert.equal(who.body.sub, alice);
  assert.equal(who.body.role, 'authenticated');
  assert.equal(who.body.scope, 'orders:read');
  assert.equal(who.body.type, 'api_key');
  assert.equal(who.body.session_id, key.key_id);
});

test('revoked from the dashboard: the very next request is refused', { skip: !PRE_REQUEST }, async () => {
  const me = newUser();
  const key = await createKey(me, { p_scopes: ['orders:read'] });
  assert.equal((await withKey(key.api_key)).status, 200);
  const listed = await supabase(userJwt(me)).rpc('extension_token_api_key_list');
  assert.equal(listed.error, null);
  assert.deepEqual(listed.data.map((k) => [k.session_id, k.kind, k.status]), [[key.key_id, 'api_key', 'active']]);
  assert.ok(!JSON.stringify(listed.data).includes(key.api_key.slice(8)), 'the list never shows the key');
  const rev = await supabase(userJwt(me)).rpc('extension_token_revoke_session', { p_session_id: key.key_id });
  assert.equal(rev.error, null);
  assert.equal(rev.data, true);
  const r = await withKey(key.api_key);
  assert.equal(r.status, 401, show(r));
  assert.match(JSON.stringify(r.body), /revoked/);
  // another user cannot revoke it (nor see it)
  const other = await createKey(me, {});
  const theirs = await supabase(userJwt(newUser())).rpc('extension_token_revoke_session', { p_session_id: other.key_id });
  assert.ok(theirs.error || theirs.data === false, JSON.stringify(theirs));
  assert.equal((await validate(other.api_key)).valid, true);
});

test('an expired key, an unknown key and hostile headers are refused', { skip: !PRE_REQUEST }, async () => {
  const me = newUser();
  const short = await createKey(me, { p_expires_in: '1 second', p_scopes: ['orders:read'] });
  assert.ok(short.expires_at);
  await new Promise((res) => setTimeout(res, 1500));
  const expired = await withKey(short.api_key);
  assert.equal(expired.status, 401, show(expired));
  assert.match(JSON.stringify(expired.body), /expired/);

  const good = await createKey(me, { p_scopes: ['orders:read'] });
  const flip = (k) => k.slice(0, -1) + (k.endsWith('A') ? 'B' : 'A');
  for (const [label, value] of [
    ['bad checksum', flip(good.api_key)],
    ['wrong prefix', `ext_pax_${good.api_key.slice(8)}`],
    ['1 kB of garbage', 'x'.repeat(1024)],
    ['the key twice (a repeated header is joined)', `${good.api_key}, ${good.api_key}`],
  ]) {
    const r = await withKey(value);
    assert.equal(r.status, 401, `${label}: ${show(r)}`);
  }
  // a key and a signed-in user's token: two identities
  const both = await withKey(good.api_key, { headers: { Authorization: `Bearer ${userJwt(newUser())}` } });
  assert.equal(both.status, 401, show(both));
  // a key with the anon key as bearer (what supabase-js always sends): the key decides
  const anon = await withKey(good.api_key, { headers: { Authorization: `Bearer ${ANON_KEY}` } });
  assert.equal(anon.status, 200, show(anon));
  // no key at all: anonymous, and anon sees no orders
  const none = await fetch(`${BASE}/orders`);
  assert.notEqual(none.status, 200);
});

test('creating a key with our own native token needs the scope tokens:manage', async () => {
  const me = newUser();
  const plain = await issueAs(me, { p_name: 'add-in' });
  const refused = await rpc('extension_token_api_key_create', { p_name: 'from add-in' }, { token: plain.access_token });
  assert.equal(refused.status, 403, show(refused));
  const manage = await issueAs(me, { p_name: 'admin add-in', p_scopes: ['tokens:manage'] });
  const allowed = await rpc('extension_token_api_key_create', { p_name: 'from admin add-in' }, { token: manage.access_token });
  assert.equal(allowed.status, 200, show(allowed));
  assert.match(allowed.body.api_key, KEY_FORMAT);
});

test('keys never reach the server log', async () => {
  const me = newUser();
  const key = await createKey(me, {});
  // a failing call that carries the key as an argument
  await rpc('extension_token_validate', { p_token: key.api_key, p_required_scopes: 'not an array' });
  await rpc('extension_token_revoke', { p_token: key.api_key, nonsense: 1 });
  const log = readFileSync(`${process.env.PGHOST}/server.log`, 'utf8');
  assert.ok(log.length > 0);
  assert.ok(!log.includes(key.api_key.slice(8)), 'the key is not in the server log');
});

test('a key with scopes cannot list, read the events of, or revoke its user\'s other credentials', { skip: !PRE_REQUEST }, async () => {
  const me = newUser();
  const key = await createKey(me, { p_scopes: ['orders:read'] });
  const other = await createKey(me, { p_name: 'the other key', p_scopes: ['tokens:manage'] });
  for (const [fn, args] of [['extension_token_list', {}], ['extension_token_api_key_list', {}],
    ['extension_token_events', {}], ['revoke_user_extension_tokens', {}],
    ['extension_token_revoke_session', { p_session_id: other.key_id }]]) {
    const r = await withKey(key.api_key, { method: 'POST', path: `/rpc/${fn}`, body: args });
    // 401, not 403: PostgREST authenticated the request as its anonymous role
    assert.equal(r.status, 401, `${fn}: ${show(r)}`);
    assert.equal(r.body.code, '42501', `${fn}: ${show(r)}`);
  }
  assert.equal((await validate(other.api_key)).valid, true, 'the other key still works');
  // the key may sign itself out
  const self = await withKey(key.api_key, { method: 'POST', path: '/rpc/extension_token_revoke_session',
    body: { p_session_id: key.key_id } });
  assert.equal(self.status, 200, show(self));
  assert.equal(self.body, true);
  assert.equal((await validate(key.api_key)).valid, false);
});
