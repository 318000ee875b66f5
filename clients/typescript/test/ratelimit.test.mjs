// A 429 from the PostgREST whose refresh_rate_limit is 2 per user per hour:
// status 429, Retry-After, body code PT429.  The client reports
// RateLimitedError with retryAfter and sends no refresh before that time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenClient, RateLimitedError } from '../src/index.js';
import {
  RATELIMIT_BASE, anonKey, call, issue, newUser, recordingFetch, sessionRow, supabaseClient,
} from './helpers.mjs';

test('the server answers a 429 with Retry-After and code PT429', async () => {
  const sub = newUser();
  let pair = await issue(RATELIMIT_BASE(), sub);
  for (let i = 0; i < 2; i++) {
    const r = await call(RATELIMIT_BASE(), 'extension_token_refresh', { p_refresh_token: pair.refresh_token }, anonKey());
    assert.equal(r.status, 200);
    pair = r.body;
  }
  const r = await call(RATELIMIT_BASE(), 'extension_token_refresh', { p_refresh_token: pair.refresh_token }, anonKey());
  assert.equal(r.status, 429, JSON.stringify(r.body));
  assert.equal(r.body.code, 'PT429');
  const ra = Number(r.headers.get('retry-after'));
  assert.ok(ra > 3000 && ra <= 3601, `Retry-After ${ra}`);
});

test('429 with Retry-After: RateLimitedError(retryAfter), no refresh request before then, the live token kept', async () => {
  const sub = newUser();
  const pair = await issue(RATELIMIT_BASE(), sub, { p_lifetime: '30 minutes' });
  const f = recordingFetch();
  let offset = 0;
  const client = new TokenClient({ url: RATELIMIT_BASE(), anonKey: anonKey(), fetch: f, now: () => Date.now() + offset });
  await client.setSession(pair);
  await client.refresh();
  await client.refresh();
  const t0 = Date.now();
  const err = await client.refresh().then(() => null, (e) => e);
  assert.ok(err instanceof RateLimitedError, String(err));
  assert.equal(err.action, 'wait');
  assert.equal(err.code, 'PT429');
  assert.ok(err.retryAfter > 3000 && err.retryAfter <= 3601, `retryAfter ${err.retryAfter}`);
  assert.ok(Math.abs(err.retryAt - (t0 + err.retryAfter * 1000)) < 5000);
  assert.equal(f.refreshes().length, 3);

  // Retry-After honoured: a forced refresh is refused locally, without a request
  const again = await client.refresh().then(() => null, (e) => e);
  assert.ok(again instanceof RateLimitedError);
  assert.ok(again.retryAfter > 3000 && again.retryAfter <= err.retryAfter);
  // due (28 minutes later) but valid: the current token is used, no refresh request
  const current = await client.getSession();
  offset = 28 * 60e3;
  assert.equal(await client.getAccessToken(), current.access_token);
  assert.equal((await client.rpc('whoami')).sub, sub);
  // expired on this clock and still inside Retry-After: RateLimitedError, no request
  offset = 31 * 60e3;
  await assert.rejects(client.getAccessToken(), RateLimitedError);
  assert.equal(f.refreshes().length, 3, 'no refresh request inside Retry-After');
  // once Retry-After has passed (on this clock), the client asks again (and the server, on its clock, refuses)
  offset = (err.retryAfter + 5) * 1000;
  const late = await client.refresh().then(() => null, (e) => e);
  assert.equal(f.refreshes().length, 4);
  assert.ok(late instanceof RateLimitedError);
  assert.equal((await sessionRow(RATELIMIT_BASE(), sub, pair.session_id)).refresh_count, 2);
});

test('through supabase-js (no response headers): the retry time comes from the body', async () => {
  const sub = newUser();
  const pair = await issue(RATELIMIT_BASE(), sub);
  const supabase = await supabaseClient(RATELIMIT_BASE(), anonKey());
  const client = new TokenClient({ supabase });
  await client.setSession(pair);
  await client.refresh();
  await client.refresh();
  const err = await client.refresh().then(() => null, (e) => e);
  assert.ok(err instanceof RateLimitedError, String(err));
  assert.ok(err.retryAfter > 3000 && err.retryAfter <= 3601, `retryAfter ${err.retryAfter}`);
});
