// Without a server: the refusal -> error mapping, refresh timing with jitter,
// the device-flow poll loop (interval, slow_down, pending, denied, expired),
// a short Retry-After waited out, the backoff after a failed refresh, a pair
// the store could not write, which 401s refresh, the token shapes, redirects,
// the callbacks outside the lock, the stores and the file lock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { promises as fs, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import * as C from '../src/index.js';
import { FileLock, FileStore } from '../src/file-store.js';
import { SecretStorageStore } from '../src/vscode.js';

const { TokenClient, errorFromResponse: map } = C;
const body = (code, details, extra = {}) => ({ code, details, hint: null, message: 'm', ...extra });
const headers = (h) => new Headers(h);

test('each refusal maps to its error class and action', () => {
  const cases = [
    [{ status: 401, error: body('PT401', 'refresh_token_already_used') }, C.SignedOutError, 'sign_in'],
    [{ status: 401, error: body('PT401', 'session_revoked') }, C.SignedOutError, 'sign_in'],
    [{ status: 401, error: body('PT401', 'session_expired') }, C.SignedOutError, 'sign_in'],
    [{ status: 401, error: body('PT401', 'refresh_token_expired') }, C.SignedOutError, 'sign_in'],
    [{ status: 401, error: body('PT401', 'refresh_token_not_found') }, C.SignedOutError, 'sign_in'],
    [{ status: 401, error: body('PT401', 'expired') }, C.AccessTokenRejectedError, 'refresh'],
    [{ status: 401, error: body('PT401', 'revoked') }, C.AccessTokenRejectedError, 'refresh'],
    [{ status: 401, error: body('PGRST301', null, { message: 'JWT expired' }) }, C.ExpiredBearerError, 'refresh'],
    [{ status: 429, error: body('PT429', 'At most 2'), headers: headers({ 'Retry-After': '42' }) }, C.RateLimitedError, 'wait'],
    [{ status: 401, error: body('42501', null) }, C.ForbiddenError, 'check_permissions'],
    [{ status: 403, error: body('42501', null) }, C.ForbiddenError, 'check_permissions'],
    [{ status: 400, error: body('22023', null) }, C.BadRequestError, 'fix_request'],
    [{ status: 500, error: body('55000', null) }, C.ServerMisconfiguredError, 'contact_admin'],
    [{ status: 503, error: { message: 'upstream' } }, C.ServerError, 'retry_later'],
    [{ status: 0, error: { message: 'fetch failed' }, network: true }, C.NetworkError, 'retry'],
    [{ status: 400, error: body('PT400', 'authorization_pending') }, C.AuthorizationPendingError, 'keep_polling'],
    [{ status: 400, error: body('PT400', 'slow_down') }, C.SlowDownError, 'poll_slower'],
    [{ status: 400, error: body('PT400', 'expired_token') }, C.DeviceCodeExpiredError, 'restart_device_flow'],
    [{ status: 400, error: body('PT400', 'access_denied') }, C.AccessDeniedError, 'stop'],
  ];
  for (const [resp, cls, action] of cases) {
    const e = map(resp);
    assert.ok(e instanceof cls, `${JSON.stringify(resp.error)} -> ${e.name}, expected ${cls.name}`);
    assert.ok(e instanceof C.ExtensionTokensError);
    assert.equal(e.action, action, cls.name);
  }
  assert.equal(map({ status: 401, error: body('PT401', 'session_revoked') }).reason, 'session_revoked');
});

test('the retry time of a 429: Retry-After header, else body retry_after, else the hint', () => {
  const t = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(map({ status: 429, error: body('PT429'), headers: headers({ 'Retry-After': '42' }) }, t).retryAfter, 42);
  assert.equal(map({ status: 429, error: body('PT429'), headers: headers({ 'Retry-After': 'Thu, 01 Jan 2026 00:01:00 GMT' }) }, t).retryAfter, 60);
  assert.equal(map({ status: 429, error: body('PT429', null, { retry_after: 7 }) }, t).retryAfter, 7);
  assert.equal(map({ status: 429, error: body('PT429', null, { hint: 'Retry after 2026-01-01 01:00:00+00 (in 3600 seconds).' }) }, t).retryAfter, 3600);
  const e = map({ status: 429, error: body('PT429', null, { retry_after: 7 }), headers: headers({ 'Retry-After': '9' }) }, t);
  assert.equal(e.retryAfter, 9, 'the header first');
  assert.equal(e.retryAt, t + 9000);
  assert.equal(map({ status: 429, error: body('PT429') }, t).retryAfter, null);
});

// A fake server: handler(fn, args, opts) -> {status, data} | {status, error}
function fakeTransport(handler) {
  const calls = [];
  return {
    calls,
    rpc: async (fn, args, opts = {}) => {
      calls.push({ fn, args, bearer: opts.bearer ?? null });
      const r = await handler(fn, args, opts, calls.length);
      return { headers: null, error: null, data: null, ...r };
    },
  };
}
// Tokens of our shapes (the client refuses others): A(n) an access token, R(n) a refresh token.
const A = (n) => `h.a${n}.s`;
const R = (n) => `ext_rt_r${n}`.padEnd(78, '0');
const pairN = (n, expiresIn = 3600) => ({
  access_token: A(n), refresh_token: R(n), token_type: 'Bearer', expires_in: expiresIn, session_id: 's',
});

test('refresh ahead: due at expiry - margin - jitter, jitter = random() * refreshJitter, fixed per pair', async () => {
  for (const [random, before] of [[0, 300], [0.5, 330], [0.99, 359.4]]) {
    let clock = 1_000_000;
    const t = fakeTransport((fn) => (fn === 'extension_token_refresh' ? { status: 200, data: pairN(2) } : { status: 200, data: 1 }));
    const client = new TokenClient({ transport: t, now: () => clock, random: () => random, refreshMargin: 300, refreshJitter: 60 });
    await client.setSession(pairN(1, 3600));
    const exp = 1_000_000 + 3600e3;
    clock = exp - before * 1000 - 1;
    assert.equal(await client.getAccessToken(), A(1), `random ${random}: 1 ms before due`);
    clock = exp - before * 1000;
    assert.equal(await client.getAccessToken(), A(2), `random ${random}: due`);
    assert.equal(t.calls.filter((c) => c.fn === 'extension_token_refresh').length, 1);
  }
});

test('refresh ahead of a short-lived token: margin at most half, jitter at most a quarter of the lifetime', async () => {
  let clock = 0;
  const t = fakeTransport(() => ({ status: 200, data: pairN(2, 100) }));
  const client = new TokenClient({ transport: t, now: () => clock, random: () => 0.999999 });
  await client.setSession(pairN(1, 100)); // 100 s: margin 50 s, jitter < 25 s
  clock = 24_900; // due from 100 - 50 - 25 = 25 s
  assert.equal(await client.getAccessToken(), A(1));
  clock = 25_001;
  assert.equal(await client.getAccessToken(), A(2));
});

test('pairToRecord reckons expiry from expires_in on this machine\'s clock', () => {
  const rec = C.pairToRecord({ ...pairN(1, 60), expires_at: '2000-01-01T00:00:00Z' }, 5_000);
  assert.equal(rec.expires_at, new Date(65_000).toISOString());
  assert.throws(() => C.pairToRecord({ access_token: 'x' }), TypeError);
});

test('a short Retry-After is waited out and the refresh retried; a long one is thrown', async () => {
  const slept = [];
  let n = 0;
  const t = fakeTransport((fn) => {
    n += 1;
    if (n === 1) return { status: 429, error: body('PT429'), headers: headers({ 'Retry-After': '3' }) };
    return { status: 200, data: pairN(2) };
  });
  const client = new TokenClient({ transport: t, sleep: async (ms) => { slept.push(ms); }, maxRetryWait: 10 });
  await client.setSession(pairN(1));
  assert.equal((await client.refresh()).access_token, A(2));
  assert.deepEqual(slept, [3000]);

  const t2 = fakeTransport(() => ({ status: 429, error: body('PT429'), headers: headers({ 'Retry-After': '30' }) }));
  const c2 = new TokenClient({ transport: t2, sleep: async () => assert.fail('must not wait 30 s'), maxRetryWait: 10 });
  await c2.setSession(pairN(1));
  const e = await c2.refresh().then(() => null, (x) => x);
  assert.ok(e instanceof C.RateLimitedError && e.retryAfter === 30);
  await assert.rejects(c2.refresh(), C.RateLimitedError);
  assert.equal(t2.calls.length, 1, 'no second request inside Retry-After');
});

test('a lost refresh answer is retried with the same token within retryWindow, with backoff', async () => {
  let clock = 0;
  const slept = [];
  let n = 0;
  const t = fakeTransport(() => {
    n += 1;
    return n < 3 ? { status: 0, error: { message: 'reset' }, network: true } : { status: 200, data: pairN(2) };
  });
  const client = new TokenClient({
    transport: t, now: () => clock, sleep: async (ms) => { slept.push(ms); clock += ms; }, retryWindow: 20,
  });
  await client.setSession(pairN(1));
  assert.equal((await client.refresh()).access_token, A(2));
  assert.deepEqual(slept, [250, 500]);
  assert.deepEqual(t.calls.map((c) => c.args.p_refresh_token), [R(1), R(1), R(1)]);
  assert.ok(t.calls.every((c) => c.bearer === null), 'refresh is anonymous');
});

test('errors that are not the session\'s end keep the tokens and report nothing', async () => {
  for (const [status, code, cls] of [[500, '55000', C.ServerMisconfiguredError], [400, '22023', C.BadRequestError],
    [401, '42501', C.ForbiddenError]]) {
    const reports = [];
    const t = fakeTransport(() => ({ status, error: body(code, null) }));
    const client = new TokenClient({ transport: t, onSignedOut: (e) => reports.push(e) });
    await client.setSession(pairN(1));
    await assert.rejects(client.refresh(), cls);
    assert.equal((await client.getSession()).refresh_token, R(1));
    assert.deepEqual(reports, []);
  }
});

test('startAutoRefresh refreshes in the background when due, stops on signed out', async () => {
  let n = 1;
  const t = fakeTransport(() => (n < 3 ? { status: 200, data: pairN(++n, 1) } : { status: 401, error: body('PT401', 'session_revoked') }));
  const reports = [];
  const client = new TokenClient({ transport: t, refreshJitter: 0, onSignedOut: (e) => reports.push(e.reason) });
  await client.setSession(pairN(1, 1)); // 1 s: due after 0.5 s
  client.startAutoRefresh();
  await new Promise((r) => { setTimeout(r, 2000); });
  client.stopAutoRefresh();
  assert.deepEqual(t.calls.map((c) => c.args.p_refresh_token), [R(1), R(2), R(3)]);
  assert.deepEqual(reports, ['session_revoked']);
});

const settle = () => new Promise((r) => { setImmediate(r); });

test('a failed refresh ahead is retried after 5 s, then 30 s doubling, or after Retry-After; not on each tick or call', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const cases = [
    // 5 s, 30 s, 1, 2, 4 min, then every 5 min
    [{ status: 500, error: body('XX000', null) }, [0, 5, 35, 95, 215, ...Array.from({ length: 12 }, (_, i) => 455 + 300 * i)]],
    [{ status: 429, error: body('PT429'), headers: headers({ 'Retry-After': '3600' }) }, [0, 3600]],
  ];
  for (const [answer, expected] of cases) {
    const t0 = 95_000_000;
    let clock = 0;
    const sent = [];
    const tr = fakeTransport(() => { sent.push((clock - t0) / 1000); return answer; });
    const client = new TokenClient({ transport: tr, now: () => clock, random: () => 0, refreshMargin: 5000 });
    await client.setSession(pairN(1, 100_000)); // due at 95 000 s, valid until 100 000 s
    clock = t0;
    client.startAutoRefresh();
    for (let s = 0; s <= 4000; s++) {
      t.mock.timers.tick(s === 0 ? 0 : 1000);
      await settle();
      assert.equal(await client.getAccessToken(), A(1), 'the valid token is used meanwhile');
      clock += 1000;
    }
    client.stopAutoRefresh();
    assert.deepEqual(sent.filter((x) => x <= 4000), expected, JSON.stringify(answer.error));
  }
});

test('startAutoRefresh retries a refresh that failed outright within 5 s, inside the server\'s 30 s retry window', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  let clock = 0;
  let elapsed = 0; // mock-timer ms
  const batches = [];
  const tr = fakeTransport(() => {
    if (batches.at(-1)?.end !== clock) batches.push({ at: elapsed });
    batches.at(-1).end = clock;
    return { status: 0, error: { message: 'reset' }, network: true };
  });
  const client = new TokenClient({
    transport: tr, now: () => clock, random: () => 0, sleep: async (ms) => { clock += ms; batches.at(-1).end = clock; },
  });
  await client.setSession(pairN(1, 60));
  clock = 61_000; // expired: the failure is thrown, not swallowed
  client.startAutoRefresh();
  for (; elapsed <= 40_000; elapsed += 1000) {
    t.mock.timers.tick(elapsed === 0 ? 0 : 1000);
    await settle();
    clock += 1000;
  }
  client.stopAutoRefresh();
  assert.equal(batches[0].at, 0);
  assert.equal(batches[1]?.at, 5000, `the second attempt at ${batches[1]?.at} ms`);
  assert.equal(batches[2]?.at, 35_000, 'then 30 s');
});

/** A MemoryStore whose next `fails` set()s fail (a full disk, a locked file) and whose lock is observable. */
class FlakyStore extends C.MemoryStore {
  fails = 0;

  held = false;

  async set(key, record) {
    if (this.fails > 0) {
      this.fails -= 1;
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }
    return super.set(key, record);
  }

  async withLock(key, fn) {
    return super.withLock(key, async () => {
      this.held = true;
      try {
        return await fn();
      } finally {
        this.held = false;
      }
    });
  }
}

test('a pair the store could not write is used and stored on the next call; the refresh token it replaced is not sent again', async (ctx) => {
  let clock = 0;
  let n = 1;
  const t = fakeTransport((fn) => (fn === 'extension_token_refresh' ? { status: 200, data: pairN(++n) } : { status: 200, data: 'ok' }));
  const store = new FlakyStore();
  const stored = [];
  const client = new TokenClient({ transport: t, store, now: () => clock, onTokens: (r) => stored.push(r.access_token) });
  await client.setSession(pairN(1));
  clock = 3600e3 - 200e3; // due, valid 200 s more
  store.fails = 1;
  assert.equal(await client.getAccessToken(), A(2), 'the new pair, though not stored');
  assert.equal((await store.get('session')).refresh_token, R(1));
  assert.equal((await client.getSession()).access_token, A(2));
  clock += 45e3;
  assert.equal(await client.rpc('whoami'), 'ok');
  assert.equal(t.calls.at(-1).bearer, A(2));
  assert.equal((await store.get('session')).refresh_token, R(2), 'stored on the next call');
  assert.deepEqual(stored, [A(1), A(2)]);
  await client.refresh();
  assert.deepEqual(t.calls.filter((c) => c.fn === 'extension_token_refresh').map((c) => c.args.p_refresh_token), [R(1), R(2)]);
  // with only the auto refresh running, the write is tried again within 5 s
  ctx.mock.timers.enable({ apis: ['setTimeout'] });
  store.fails = 2; // the refresh's write and the first tick's
  await client.refresh();
  client.startAutoRefresh();
  for (let s = 0; s <= 5; s++) {
    ctx.mock.timers.tick(s === 0 ? 0 : 1000);
    await settle();
  }
  client.stopAutoRefresh();
  assert.equal((await store.get('session')).refresh_token, R(4));
  assert.equal(t.calls.filter((c) => c.fn === 'extension_token_refresh').length, 3);
  assert.deepEqual(stored, [A(1), A(2), A(3), A(4)]);
});

test('a refresh token the server exchanged, its pair lost, is not sent again after 25 s: signed out (refresh_lost)', async () => {
  let clock = 0;
  // the server exchanged R(1) and its answer came back truncated
  const t = fakeTransport(() => ({ status: 200, data: { access_token: A(2), refresh_token: null, expires_in: 3600 } }));
  const reports = [];
  const client = new TokenClient({ transport: t, now: () => clock, onSignedOut: (e) => reports.push(e.reason) });
  await client.setSession(pairN(1));
  await assert.rejects(client.refresh(), C.ServerError);
  clock += 20e3;
  await assert.rejects(client.refresh(), C.ServerError, 'within the server\'s retry window: asked again');
  clock += 10e3;
  await assert.rejects(client.refresh(), (e) => e instanceof C.SignedOutError && e.reason === 'refresh_lost');
  assert.equal(t.calls.length, 2, 'no request 30 s after the exchange');
  assert.deepEqual(reports, ['refresh_lost']);
  assert.equal((await client.store.get('session')).signed_out.reason, 'refresh_lost');
});

test('a 401 refreshes only when it refuses the token (or the token expired here), and not again for the token that refresh got', async () => {
  let n = 1;
  const t = fakeTransport((fn, args, opts) => {
    if (fn === 'extension_token_refresh') return { status: 200, data: pairN(++n) };
    if (fn === 'mine') return { status: 401, error: body('PT401', 'not your document') };
    return { status: 401, error: body('PT401', 'expired') };
  });
  let api = () => new Response('{"error":"not your document"}', { status: 401, headers: { 'Content-Type': 'application/json' } });
  const sentTo = [];
  const client = new TokenClient({
    transport: t, fetch: async (url, init) => { sentTo.push(new Headers(init.headers).get('authorization')); return api(); },
  });
  await client.setSession(pairN(1));
  const refreshes = () => t.calls.filter((c) => c.fn === 'extension_token_refresh').length;
  for (let i = 0; i < 5; i++) {
    assert.equal((await client.fetch('https://api.example/docs/42')).status, 401);
    await assert.rejects(client.rpc('mine'), (e) => e instanceof C.AccessTokenRejectedError && e.reason === 'not your document');
  }
  assert.equal(refreshes(), 0, 'a 401 that is not about the token');
  assert.equal(sentTo.length, 5);
  api = () => new Response('', { status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
  assert.equal((await client.fetch('https://api.example/docs/42')).status, 401);
  assert.deepEqual(sentTo.slice(5), [`Bearer ${A(1)}`, `Bearer ${A(2)}`], 'refreshed once and sent again');
  assert.equal((await client.fetch('https://api.example/docs/42')).status, 401);
  await assert.rejects(client.rpc('theirs'), (e) => e instanceof C.AccessTokenRejectedError && e.reason === 'expired');
  assert.equal(refreshes(), 1, 'the token a refresh after a 401 got is not refreshed on a 401');
  api = () => new Response('{"code":"PGRST301","message":"JWT expired"}', { status: 401, headers: { 'Content-Type': 'application/json' } });
  const c2 = new TokenClient({ transport: t, fetch: async () => api() });
  await c2.setSession(pairN(7));
  await c2.fetch('https://api.example/docs/42');
  assert.equal(refreshes(), 2, 'PGRST301 in the body refuses the token');
});

test('onSignedOut and onTokens run after the store\'s lock is released', async () => {
  const store = new FlakyStore();
  const seen = [];
  let refuse = false;
  const t = fakeTransport(() => (refuse ? { status: 401, error: body('PT401', 'session_revoked') } : { status: 200, data: pairN(2) }));
  const client = new TokenClient({
    transport: t, store, onTokens: () => seen.push(['tokens', store.held]), onSignedOut: () => seen.push(['signed_out', store.held]),
  });
  await client.setSession(pairN(1));
  await client.refresh();
  refuse = true;
  await assert.rejects(client.refresh(), C.SignedOutError);
  assert.deepEqual(seen, [['tokens', false], ['tokens', false], ['signed_out', false]]);
});

test('tokens of another shape (a line break, a space) are refused when stored and when read, never shown in a message', async () => {
  for (const bad of [{ ...pairN(1), access_token: `${A(1)}\n` }, { ...pairN(1), access_token: 'SECRET ACCESS' },
    { ...pairN(1), refresh_token: `${R(1)}\n` }, { ...pairN(1), refresh_token: 'ext_rt_short' }]) {
    assert.throws(() => C.pairToRecord(bad), (e) => e instanceof TypeError && /not a token pair/.test(e.message)
      && !e.message.includes(A(1)) && !e.message.includes('SECRET') && !e.message.includes(R(1)) && !e.message.includes('short'));
  }
  assert.ok(C.pairToRecord({ ...pairN(1), refresh_token: `ext_rt_${'x'.repeat(49)}` }), 'a refresh token made by 1.1');
  const store = new C.MemoryStore();
  await store.set('session', { ...C.pairToRecord(pairN(1)), access_token: `${A(1)}\n` });
  const t = fakeTransport(() => ({ status: 200, data: 1 }));
  const client = new TokenClient({ transport: t, store });
  assert.equal(await client.getSession(), null, 'unreadable: as if empty');
  await assert.rejects(client.rpc('whoami'), (e) => e instanceof C.SignedOutError && e.reason === 'no_session');
  assert.equal(t.calls.length, 0);
});

test('supabaseTransport refuses a supabase-js whose rpc() has no setHeader: the call would go out as another identity', async () => {
  const sent = [];
  const supabase = {
    supabaseKey: 'ANON',
    rpc(fn) {
      return { then: (ok, bad) => { sent.push(fn); return Promise.resolve({ data: { role: 'anon' }, error: null, status: 200 }).then(ok, bad); } };
    },
  };
  const client = new TokenClient({ supabase });
  await client.setSession(pairN(1));
  await assert.rejects(client.rpc('whoami'), (e) => e instanceof TypeError && /setHeader/.test(e.message) && /2\.45\.4/.test(e.message));
  await assert.rejects(client.refresh(), TypeError, 'anonymous calls too: the anon key must be the bearer');
  assert.deepEqual(sent, []);
});

test('fetchTransport does not follow a redirect: the bearer and the apikey stay with PostgREST', async () => {
  const seen = [];
  const other = createServer((req, res) => { seen.push(req.headers); res.setHeader('Content-Type', 'application/json'); res.end('{}'); });
  await new Promise((r) => { other.listen(0, '127.0.0.1', r); });
  const api = createServer((req, res) => {
    res.statusCode = 307;
    res.setHeader('Location', `http://127.0.0.1:${other.address().port}${req.url}`);
    res.end();
  });
  await new Promise((r) => { api.listen(0, '127.0.0.1', r); });
  try {
    const client = new TokenClient({ url: `http://127.0.0.1:${api.address().port}`, anonKey: 'ANON' });
    await client.setSession(pairN(1));
    for (const get of [false, true]) {
      const e = await client.rpc('whoami', {}, { get }).then(() => null, (x) => x);
      assert.ok(e instanceof C.ExtensionTokensError && /redirect/.test(e.message), String(e));
      assert.equal(e.status, 307);
    }
    assert.deepEqual(seen, []);
  } finally {
    api.close();
    other.close();
  }
});

// --- device flow ---------------------------------------------------------

function deviceServer(script) {
  // script: answers of successive polls: 'pending' | 'slow_down' | 'denied' | 'expired' | 'net' | 'ok'
  let i = 0;
  return fakeTransport((fn, args) => {
    if (fn === 'extension_token_device_start') {
      return {
        status: 200,
        data: {
          device_code: 'dc', user_code: 'BDWP-HQPK', verification_uri_complete: 'https://d.example/device?code=BDWP-HQPK',
          expires_in: 600, interval: 5,
        },
      };
    }
    assert.equal(fn, 'extension_token_device_poll');
    assert.deepEqual(args, { p_device_code: 'dc' });
    const s = script[i++];
    if (s === 'ok') return { status: 200, data: pairN(9) };
    if (s === 'net') return { status: 0, error: { message: 'reset' }, network: true };
    const details = { pending: 'authorization_pending', slow_down: 'slow_down', denied: 'access_denied', expired: 'expired_token' }[s];
    return { status: 400, error: body('PT400', details) };
  });
}

test('device flow: polls every interval, +5 s after slow_down, backs off on a network error, stores the pair', async () => {
  let clock = 0;
  const slept = [];
  const t = deviceServer(['pending', 'slow_down', 'pending', 'net', 'pending', 'ok']);
  const client = new TokenClient({ transport: t, now: () => clock, sleep: async (ms) => { slept.push(ms); clock += ms; } });
  let shown = null;
  let pending = 0;
  const rec = await client.signInWithDevice({
    name: 'Fusion add-in', scopes: ['files:read'], onCode: (d) => { shown = d; }, onPending: () => { pending += 1; },
  });
  assert.equal(shown.user_code, 'BDWP-HQPK');
  assert.equal(shown.verification_uri_complete, 'https://d.example/device?code=BDWP-HQPK');
  assert.deepEqual(t.calls[0], { fn: 'extension_token_device_start', args: { p_name: 'Fusion add-in', p_scopes: ['files:read'] }, bearer: null });
  assert.deepEqual(slept, [5000, 5000, 10000, 10000, 20000, 10000]);
  assert.equal(pending, 3);
  assert.equal(rec.access_token, A(9));
  assert.equal((await client.getSession()).refresh_token, R(9));
  assert.ok(t.calls.every((c) => c.bearer === null), 'the device flow is anonymous');
});

test('device flow: access_denied and expired_token end the polling with their errors', async () => {
  for (const [script, cls] of [[['pending', 'denied'], C.AccessDeniedError], [['expired'], C.DeviceCodeExpiredError]]) {
    const client = new TokenClient({ transport: deviceServer(script), sleep: async () => {} });
    const d = await client.startDeviceAuthorization();
    await assert.rejects(client.pollDeviceAuthorization(d), cls);
    assert.equal(await client.getSession(), null);
  }
});

test('device flow: stops at expires_in without another poll, and on abort', async () => {
  let clock = 0;
  const t = deviceServer(Array(1000).fill('pending'));
  const client = new TokenClient({ transport: t, now: () => clock, sleep: async (ms) => { clock += ms; } });
  const d = await client.startDeviceAuthorization();
  await assert.rejects(client.pollDeviceAuthorization(d), C.DeviceCodeExpiredError);
  assert.equal(t.calls.length - 1, 119, 'polls at 5, 10, ... 595 s');
  const ac = new AbortController();
  const c2 = new TokenClient({ transport: deviceServer(Array(1000).fill('pending')) });
  const d2 = await c2.startDeviceAuthorization();
  const p = c2.pollDeviceAuthorization(d2, { signal: ac.signal });
  ac.abort(new Error('user cancelled'));
  await assert.rejects(p, /user cancelled/);
});

// --- stores -------------------------------------------------------------

test('KeyedMutex runs holders of one key one at a time, in order', async () => {
  const m = new C.KeyedMutex();
  const log = [];
  const job = (n, ms) => m.withLock('k', async () => {
    log.push(`+${n}`);
    await new Promise((r) => { setTimeout(r, ms); });
    log.push(`-${n}`);
  });
  await Promise.all([job(1, 30), job(2, 1), job(3, 1), m.withLock('other', async () => log.push('o'))]);
  assert.deepEqual(log.filter((x) => x !== 'o'), ['+1', '-1', '+2', '-2', '+3', '-3']);
});

test('SecretStorageStore: JSON under a prefixed key in SecretStorage; get/store/delete; onDidChange per key', async () => {
  const m = new Map();
  const listeners = [];
  const secrets = {
    get: async (k) => m.get(k), store: async (k, v) => { m.set(k, v); listeners.forEach((l) => l({ key: k })); },
    delete: async (k) => { m.delete(k); listeners.forEach((l) => l({ key: k })); },
    onDidChange: (l) => { listeners.push(l); return { dispose() {} }; },
  };
  const store = new SecretStorageStore(secrets);
  let changes = 0;
  store.onDidChange('session', () => { changes += 1; });
  const client = new TokenClient({ transport: fakeTransport(() => ({ status: 200, data: pairN(2) })), store });
  await client.setSession(pairN(1));
  assert.equal(JSON.parse(m.get('extension_tokens:session')).refresh_token, R(1));
  await client.refresh();
  assert.equal(JSON.parse(m.get('extension_tokens:session')).refresh_token, R(2));
  await store.delete('session');
  assert.equal(m.size, 0);
  assert.equal(await store.get('session'), null);
  await secrets.store('other', 'x');
  assert.equal(changes, 3);
  m.set('extension_tokens:session', 'not json');
  assert.equal(await store.get('session'), null);
  assert.throws(() => new SecretStorageStore({ get() {} }), TypeError);
});

test('FileStore: 0600 files replaced atomically, missing -> null', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fs-'));
  const s = new FileStore(join(dir, 'sub'));
  assert.equal(await s.get('a/b'), null);
  await s.set('a/b', { x: 1 });
  assert.deepEqual(await s.get('a/b'), { x: 1 });
  const files = await fs.readdir(join(dir, 'sub'));
  assert.deepEqual(files, ['a%2fb.json']);
  assert.equal((await fs.stat(join(dir, 'sub', 'a%2fb.json'))).mode & 0o777, 0o600);
  await s.delete('a/b');
  assert.equal(await s.get('a/b'), null);
});

test('FileStore.set syncs the file before renaming it into place', async (t) => {
  const { promises } = await import('node:fs');
  const log = [];
  const open = promises.open;
  t.mock.method(promises, 'open', async (...args) => {
    const fh = await open(...args);
    const sync = fh.sync.bind(fh);
    fh.sync = async () => { log.push('sync'); return sync(); };
    return fh;
  });
  const rename = promises.rename;
  t.mock.method(promises, 'rename', async (...args) => { log.push('rename'); return rename(...args); });
  const s = new FileStore(mkdtempSync(join(tmpdir(), 'fs-')));
  await s.set('k', { x: 1 });
  assert.deepEqual(log, ['sync', 'rename']);
  assert.deepEqual(await s.get('k'), { x: 1 });
});

test('FileLock: a waiter waits for the holder; a lock left by a dead process or untouched for staleMs is broken', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lock-'));
  const lock = new FileLock(dir, { staleMs: 400, pollMs: 5 });
  const log = [];
  await Promise.all([
    lock.withLock('k', async () => { log.push('a+'); await new Promise((r) => { setTimeout(r, 100); }); log.push('a-'); }),
    new Promise((r) => { setTimeout(r, 10); }).then(() => lock.withLock('k', async () => { log.push('b'); })),
  ]);
  assert.deepEqual(log, ['a+', 'a-', 'b']);
  // a dead process's lock: broken at once
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  const { hostname } = await import('node:os');
  await fs.writeFile(join(dir, 'k.lock'), JSON.stringify({ id: 'x', pid: Number(dead), host: hostname(), at: 0 }));
  let t = Date.now();
  await lock.withLock('k', async () => {});
  assert.ok(Date.now() - t < 300, 'a dead owner\'s lock is broken without waiting for staleMs');
  // a live but silent owner (another host, say): broken after staleMs
  await fs.writeFile(join(dir, 'k.lock'), JSON.stringify({ id: 'y', pid: 1, host: 'elsewhere', at: 0 }));
  t = Date.now();
  await lock.withLock('k', async () => {});
  assert.ok(Date.now() - t >= 350, 'waited for staleness');
  // a holder that keeps its lock fresh is never broken
  const l2 = new FileLock(dir, { staleMs: 150, pollMs: 5, waitMs: 400 });
  const held = await l2.acquire('k');
  await assert.rejects(l2.acquire('k'), C.LockTimeoutError);
  await held.release();
  await fs.access(join(dir, 'k.lock')).then(() => assert.fail('lock file left'), () => {});
});
