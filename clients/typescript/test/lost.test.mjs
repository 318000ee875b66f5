// A refresh whose answer is lost on the way back: the server exchanged the
// token, the client never saw the new pair.  Within the server's retry window
// (extension_tokens.refresh_retry_window, 30 s) the client presents the same
// refresh token again and gets the same pair; on a strict server (window 0)
// the same retry is reuse and the session ends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenClient, SignedOutError, NetworkError } from '../src/index.js';
import {
  BASE, RETRY_BASE, anonKey, issue, newUser, recordingFetch, sessionRow, validate,
} from './helpers.mjs';

function losingFetch(times = 1) {
  const lost = [];
  const f = recordingFetch({
    after: async (call, res) => {
      if (call.url.includes('/rpc/extension_token_refresh') && lost.length < times) {
        lost.push({ status: res.status, body: await res.json() });
        throw new TypeError('fetch failed: connection reset (the answer was lost)');
      }
      return res;
    },
  });
  f.lost = lost;
  return f;
}

test('a lost refresh answer, retried within the retry window, recovers the same pair', async () => {
  const sub = newUser();
  const pair = await issue(RETRY_BASE(), sub);
  const f = losingFetch(1);
  const signedOut = [];
  const client = new TokenClient({ url: RETRY_BASE(), anonKey: anonKey(), fetch: f, onSignedOut: (e) => signedOut.push(e) });
  await client.setSession(pair);

  const rec = await client.refresh();

  assert.equal(f.lost.length, 1);
  assert.equal(f.lost[0].status, 200, 'the server did exchange the token the first time');
  const lostPair = f.lost[0].body;
  assert.equal(f.refreshes().length, 2, 'the same refresh sent twice');
  assert.equal(f.refreshes()[0].body, f.refreshes()[1].body, 'with the same refresh token');
  assert.equal(rec.access_token, lostPair.access_token, 'the same access token as the lost answer');
  assert.equal(rec.refresh_token, lostPair.refresh_token, 'the same refresh token as the lost answer');
  const row = await sessionRow(RETRY_BASE(), sub, pair.session_id);
  assert.equal(row.refresh_count, 1, 'one exchange on the server');
  assert.equal(row.status, 'active');
  assert.equal((await validate(RETRY_BASE(), rec.access_token)).valid, true);
  assert.equal((await client.rpc('whoami')).sub, sub);
  assert.deepEqual(signedOut, []);
});

test('a lost answer, then the client refreshes on: the recovered pair is the live one (the next refresh works)', async () => {
  const sub = newUser();
  const pair = await issue(RETRY_BASE(), sub);
  const f = losingFetch(1);
  const client = new TokenClient({ url: RETRY_BASE(), anonKey: anonKey(), fetch: f });
  await client.setSession(pair);
  const first = await client.refresh();
  const second = await client.refresh();
  assert.notEqual(second.refresh_token, first.refresh_token);
  const row = await sessionRow(RETRY_BASE(), sub, pair.session_id);
  assert.equal(row.refresh_count, 2);
  assert.equal(row.status, 'active');
});

test('the same lost answer on a strict server (retry window 0): the retry is reuse, the client reports signed out', async () => {
  // The contrast that shows what the retry window buys (and that the test above can fail).
  const sub = newUser();
  const pair = await issue(BASE(), sub);
  const f = losingFetch(1);
  const signedOut = [];
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), fetch: f, onSignedOut: (e) => signedOut.push(e.reason) });
  await client.setSession(pair);
  await assert.rejects(client.refresh(), (e) => e instanceof SignedOutError && e.reason === 'refresh_token_already_used');
  assert.deepEqual(signedOut, ['refresh_token_already_used']);
  assert.equal((await sessionRow(BASE(), sub, pair.session_id)).status, 'revoked');
});

test('answers lost for longer than the client retry window: NetworkError, the tokens are kept', async () => {
  const sub = newUser();
  const pair = await issue(RETRY_BASE(), sub);
  const f = losingFetch(100);
  const client = new TokenClient({ url: RETRY_BASE(), anonKey: anonKey(), fetch: f, retryWindow: 1 });
  await client.setSession(pair);
  await assert.rejects(client.refresh(), (e) => e instanceof NetworkError && e.action === 'retry');
  assert.ok(f.refreshes().length >= 2 && f.refreshes().length <= 4, `${f.refreshes().length} attempts in 1 s`);
  assert.equal((await client.getSession()).refresh_token, pair.refresh_token, 'nothing stored that was not received');
  assert.equal(client.signedOut, null);
});
