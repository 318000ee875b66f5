// Refresh through the real PostgREST whose refresh_retry_window is 0: there a
// second refresh of one token is reuse and revokes the session, so a client
// that refreshed twice would sign itself out.  "Exactly one refresh" is read
// from the server (extension_token_list's refresh_count) and from the wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenClient, MemoryStore, pairToRecord, SignedOutError } from '../src/index.js';
import {
  BASE, anonKey, issue, newUser, recordingFetch, sessionRow, validate, withClaims,
} from './helpers.mjs';

// A session whose access token the server refuses while the client believes
// it valid for another hour (the client's record says so: a skewed clock).
async function refusedSession(sub, claims) {
  const pair = await issue(BASE(), sub);
  const store = new MemoryStore();
  const rec = pairToRecord(pair);
  rec.access_token = withClaims(pair.access_token, claims);
  rec.expires_at = new Date(Date.now() + 3600e3).toISOString();
  await store.set('session', rec);
  return { pair, store };
}

async function tenConcurrentHit401(claims, expectCode) {
  const sub = newUser();
  const { pair, store } = await refusedSession(sub, claims);
  const anon = anonKey();
  const f = recordingFetch();
  let signedOut = 0;
  const client = new TokenClient({ url: BASE(), anonKey: anon, store, fetch: f, onSignedOut: () => { signedOut += 1; } });

  const results = await Promise.all(Array.from({ length: 10 }, () => client.rpc('whoami')));

  // every call got through, as the user, in the same session
  for (const r of results) {
    assert.equal(r.sub, sub);
    assert.equal(r.session_id, pair.session_id);
  }
  // ten calls were refused first (with the code expected), one refresh, ten retries
  const whoami = f.calls.filter((c) => c.url.endsWith('/rpc/whoami'));
  assert.equal(whoami.length, 20, 'ten calls, each retried once');
  assert.equal(f.refreshes().length, 1, 'one refresh request');
  const row = await sessionRow(BASE(), sub, pair.session_id);
  assert.equal(row.refresh_count, 1, 'the server counted one refresh');
  assert.equal(row.status, 'active');
  assert.equal(signedOut, 0);
  // the refresh went out with the anon key, never with the refused bearer
  const refresh = f.refreshes()[0];
  assert.equal(refresh.headers.get('authorization'), `Bearer ${anon}`);
  assert.equal(refresh.headers.get('apikey'), anon);
  assert.equal(JSON.parse(refresh.body).p_refresh_token, pair.refresh_token);
  assert.ok(!refresh.body.includes(pair.access_token.split('.')[2]), 'no access token in the refresh call');
  // and the client now holds a pair that validates
  const now = await client.getSession();
  assert.notEqual(now.refresh_token, pair.refresh_token);
  assert.equal((await validate(BASE(), now.access_token)).valid, true);
  return expectCode;
}

test('ten concurrent requests refused by the pre-request (PT401 expired) produce exactly one refresh', async () => {
  const t = Math.floor(Date.now() / 1000);
  // expired 5 s ago: PostgREST still accepts it (its leeway is 30 s), extension_token_pre_request says expired
  await tenConcurrentHit401({ iat: t - 60, exp: t - 5 }, 'PT401');
});

test('ten concurrent requests refused by PostgREST (PGRST301 JWT expired) produce exactly one refresh', async () => {
  const t = Math.floor(Date.now() / 1000);
  await tenConcurrentHit401({ iat: t - 600, exp: t - 300 }, 'PGRST301');
});

test('the refused bearer is really refused: without the client, the same calls fail', async () => {
  // (so that the two tests above cannot pass for a token that was never refused)
  const sub = newUser();
  const t = Math.floor(Date.now() / 1000);
  for (const [claims, code] of [[{ iat: t - 60, exp: t - 5 }, 'PT401'], [{ iat: t - 600, exp: t - 300 }, 'PGRST301']]) {
    const { store } = await refusedSession(sub, claims);
    const rec = await store.get('session');
    const res = await fetch(`${BASE()}/rpc/whoami`, {
      method: 'POST', headers: { Authorization: `Bearer ${rec.access_token}`, 'Content-Type': 'application/json' }, body: '{}',
    });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).code, code);
  }
});

test('client.fetch() to an API of one\'s own: the bearer is added, a 401 refreshes once and resends', async () => {
  const sub = newUser();
  const t = Math.floor(Date.now() / 1000);
  const { store } = await refusedSession(sub, { iat: t - 600, exp: t - 300 });
  const f = recordingFetch();
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), store, fetch: f });
  const res = await client.fetch(`${BASE()}/rpc/whoami`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).sub, sub);
  assert.equal(f.refreshes().length, 1);
  assert.equal(f.calls.filter((c) => c.url.endsWith('/rpc/whoami')).length, 2);
});

test('refresh ahead of expires_at: a token due within the margin is refreshed once before use, not after a 401', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub, { p_lifetime: '1 hour' });
  const f = recordingFetch();
  let offset = 0;
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), fetch: f, now: () => Date.now() + offset });
  await client.setSession(pair);
  // 58 minutes later the token is due (margin 5 min, jitter up to 1 min) though still valid
  offset = 58 * 60e3;
  const results = await Promise.all(Array.from({ length: 5 }, () => client.rpc('whoami')));
  for (const r of results) assert.equal(r.sub, sub);
  assert.equal(f.refreshes().length, 1);
  assert.equal(f.calls.filter((c) => c.url.endsWith('/rpc/whoami')).length, 5, 'no call was refused');
  assert.equal((await sessionRow(BASE(), sub, pair.session_id)).refresh_count, 1);
});

test('a refresh token already exchanged elsewhere signs the client out (reuse revokes the session)', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  // someone else (a copy of the tokens) refreshes first
  const other = new TokenClient({ url: BASE(), anonKey: anonKey() });
  await other.setSession(pair);
  await other.refresh();
  let reported = [];
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), onSignedOut: (e) => reported.push(e.reason) });
  await client.setSession(pair);
  await assert.rejects(client.refresh(), (e) => e instanceof SignedOutError && e.reason === 'refresh_token_already_used');
  assert.deepEqual(reported, ['refresh_token_already_used']);
  const row = await sessionRow(BASE(), sub, pair.session_id);
  assert.equal(row.status, 'revoked');
});
