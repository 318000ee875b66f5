// After the session is revoked (the dashboard's Revoke button, sign-out
// elsewhere), the client reports "signed out" once and stops making requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenClient, SignedOutError, MemoryStore } from '../src/index.js';
import { FileStore } from '../src/file-store.js';
import {
  BASE, anonKey, call, issue, newUser, recordingFetch, sessionRow, tempDir, userJwt,
} from './helpers.mjs';

test('after revocation the client reports signed out once and stops', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const f = recordingFetch();
  const reports = [];
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), fetch: f, onSignedOut: (e) => reports.push(e) });
  await client.setSession(pair);
  assert.equal((await client.rpc('whoami')).sub, sub);

  // the dashboard revokes this device's session
  const r = await call(BASE(), 'extension_token_revoke_session', { p_session_id: pair.session_id }, userJwt(sub));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body, true);

  const before = f.calls.length;
  const results = await Promise.allSettled(Array.from({ length: 10 }, () => client.rpc('whoami')));
  for (const x of results) {
    assert.equal(x.status, 'rejected');
    assert.ok(x.reason instanceof SignedOutError, String(x.reason));
    assert.equal(x.reason.reason, 'session_revoked');
    assert.equal(x.reason.action, 'sign_in');
  }
  assert.equal(reports.length, 1, 'reported once');
  assert.equal(reports[0].reason, 'session_revoked');
  assert.equal(f.refreshes().length, 1, 'one refresh attempt told it the session was revoked');
  const made = f.calls.length - before;
  assert.equal(made, 11, 'ten refused calls and one refresh');

  // and it stops: no request, no new report, for whatever is asked next
  const after = f.calls.length;
  await assert.rejects(client.rpc('whoami'), SignedOutError);
  await assert.rejects(client.getAccessToken(), SignedOutError);
  await assert.rejects(client.refresh(), SignedOutError);
  await assert.rejects(client.fetch(`${BASE()}/rpc/whoami`, { method: 'POST', body: '{}' }), SignedOutError);
  assert.equal(f.calls.length, after, 'no request after signed out');
  assert.equal(reports.length, 1);
  assert.equal(client.signedOut.reason, 'session_revoked');
  assert.deepEqual((await client.store.get('session')).signed_out.reason, 'session_revoked', 'a tombstone, no tokens');
  assert.equal(await client.getSession(), null);
  const row = await sessionRow(BASE(), sub, pair.session_id);
  assert.equal(row.refresh_count, 0);
});

test('a new sign-in resumes a signed-out client (and it may report again later)', async () => {
  const sub = newUser();
  const first = await issue(BASE(), sub);
  const reports = [];
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), onSignedOut: (e) => reports.push(e.reason) });
  await client.setSession(first);
  await call(BASE(), 'extension_token_revoke_session', { p_session_id: first.session_id }, userJwt(sub));
  await assert.rejects(client.rpc('whoami'), SignedOutError);
  const second = await issue(BASE(), sub);
  await client.setSession(second);
  assert.equal(client.signedOut, null);
  assert.equal((await client.rpc('whoami')).session_id, second.session_id);
  await call(BASE(), 'extension_token_revoke_session', { p_session_id: second.session_id }, userJwt(sub));
  await assert.rejects(client.rpc('whoami'), SignedOutError);
  assert.deepEqual(reports, ['session_revoked', 'session_revoked']);
});

test('sign-out with the anon key revokes the session; a second process sharing the store reports signed out without a request', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const dir = tempDir('signout');
  const f1 = recordingFetch();
  const f2 = recordingFetch();
  const anon = anonKey();
  const a = new TokenClient({ url: BASE(), anonKey: anon, fetch: f1, store: new FileStore(dir) });
  const reports = [];
  const b = new TokenClient({ url: BASE(), anonKey: anon, fetch: f2, store: new FileStore(dir), onSignedOut: (e) => reports.push(e.reason) });
  await a.setSession(pair);
  assert.equal((await b.rpc('whoami')).sub, sub);

  const out = await a.signOut();
  assert.deepEqual(out, { revoked: true, error: null });
  const revoke = f1.calls.find((c) => c.url.endsWith('/rpc/extension_token_revoke'));
  assert.equal(revoke.headers.get('authorization'), `Bearer ${anon}`, 'revoked with the anon key');
  assert.equal((await sessionRow(BASE(), sub, pair.session_id)).status, 'revoked');
  await assert.rejects(a.getAccessToken(), (e) => e instanceof SignedOutError && e.reason === 'signed_out');

  const n = f2.calls.length;
  await assert.rejects(b.rpc('whoami'), (e) => e instanceof SignedOutError && e.reason === 'signed_out');
  await assert.rejects(b.rpc('whoami'), SignedOutError);
  assert.equal(f2.calls.length, n, 'the other process learned it from the store');
  assert.deepEqual(reports, ['signed_out']);
});

test('sign-out while the server cannot be reached: the tokens are forgotten and the error says so', async () => {
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const client = new TokenClient({ url: 'http://127.0.0.1:1', anonKey: anonKey(), store: new MemoryStore() });
  await client.setSession(pair);
  const out = await client.signOut();
  assert.equal(out.revoked, false);
  assert.equal(out.error?.action, 'retry');
  assert.equal(await client.getSession(), null);
  assert.equal((await sessionRow(BASE(), sub, pair.session_id)).status, 'active');
});

test('a client that never signed in throws SignedOutError(no_session) and reports nothing', async () => {
  const reports = [];
  const f = recordingFetch();
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), fetch: f, onSignedOut: (e) => reports.push(e) });
  await assert.rejects(client.rpc('whoami'), (e) => e instanceof SignedOutError && e.reason === 'no_session');
  assert.equal(f.calls.length, 0);
  assert.deepEqual(reports, []);
});
