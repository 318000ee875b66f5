// The same client over supabase-js: calls go through supabase.rpc(); the
// anonymous ones (refresh, revoke) carry the anon key as bearer whatever
// session or headers the supabase client has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenClient, MemoryStore, pairToRecord, SignedOutError, ForbiddenError } from '../src/index.js';
import {
  BASE, anonKey, call, issue, newUser, recordingFetch, sessionRow, supabaseClient, userJwt, withClaims,
} from './helpers.mjs';

test('supabase-js: ten concurrent calls refused (PT401 expired) produce one refresh, sent with the anon key', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const store = new MemoryStore();
  const rec = pairToRecord(pair);
  const t = Math.floor(Date.now() / 1000);
  rec.access_token = withClaims(pair.access_token, { iat: t - 60, exp: t - 5 });
  await store.set('session', rec);
  const anon = anonKey();
  const f = recordingFetch();
  const supabase = await supabaseClient(BASE(), anon, { fetch: f });
  const client = new TokenClient({ supabase, store });
  const results = await Promise.all(Array.from({ length: 10 }, () => client.rpc('whoami')));
  for (const r of results) assert.equal(r.sub, sub);
  assert.equal(f.refreshes().length, 1);
  assert.equal(f.refreshes()[0].headers.get('authorization'), `Bearer ${anon}`);
  assert.equal((await sessionRow(BASE(), sub, pair.session_id)).refresh_count, 1);
  const whoami = f.calls.filter((c) => c.url.endsWith('/rpc/whoami'));
  const now = await client.getSession();
  assert.equal(whoami.at(-1).headers.get('authorization'), `Bearer ${now.access_token}`);
});

test('supabase-js with a signed-in user header: refresh and revoke still go out with the anon key', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const anon = anonKey();
  const f = recordingFetch();
  const supabase = await supabaseClient(BASE(), anon, { fetch: f });
  // what a dashboard app's client carries after sign-in
  supabase.rest.headers = { ...supabase.rest.headers, Authorization: `Bearer ${userJwt(sub)}` };
  const plain = await supabase.rpc('whoami');
  assert.equal(plain.data?.role, 'authenticated', 'the supabase client itself calls as the user');
  const reports = [];
  const client = new TokenClient({ supabase, onSignedOut: (e) => reports.push(e.reason) });
  await client.setSession(pair);
  await client.refresh();
  const out = await client.signOut();
  assert.deepEqual(out, { revoked: true, error: null });
  for (const fn of ['extension_token_refresh', 'extension_token_revoke']) {
    const c = f.calls.find((x) => x.url.endsWith(`/rpc/${fn}`));
    assert.equal(c.headers.get('authorization'), `Bearer ${anon}`, fn);
  }
  assert.equal((await sessionRow(BASE(), sub, pair.session_id)).status, 'revoked');
  await assert.rejects(client.rpc('whoami'), SignedOutError);
  assert.deepEqual(reports, [], 'one\'s own sign-out is not reported as an event');
});

test('supabase-js: a revoked session is reported once', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const supabase = await supabaseClient(BASE(), anonKey());
  const reports = [];
  const client = new TokenClient({ supabase, onSignedOut: (e) => reports.push(e.reason) });
  await client.setSession(pair);
  await call(BASE(), 'extension_token_revoke_session', { p_session_id: pair.session_id }, userJwt(sub));
  const r = await Promise.allSettled([client.rpc('whoami'), client.rpc('whoami'), client.rpc('whoami')]);
  assert.ok(r.every((x) => x.reason instanceof SignedOutError && x.reason.reason === 'session_revoked'));
  assert.deepEqual(reports, ['session_revoked']);
});

test('supabase-js: an add-in token may not list sessions (42501 -> ForbiddenError)', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const supabase = await supabaseClient(BASE(), anonKey());
  const client = new TokenClient({ supabase });
  await client.setSession(pair);
  const err = await client.rpc('extension_token_list', { p_user_id: 'someone_else' }).then(() => null, (e) => e);
  assert.ok(err instanceof ForbiddenError, `${err?.name} ${err?.code} ${err?.message}`);
  assert.equal(err.code, '42501');
  assert.equal(err.action, 'check_permissions');
});
