// Dashboards and add-ins (1.2) through the real PostgREST: the session list
// shows each device's user agent and address, the dashboard revokes one
// session by id and signs out the others, the add-in signs itself out with
// the anon key, and the device authorization hand-off (RFC 8628) with every
// answer a poll can get.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ANON_KEY, RETRY_BASE, issueAs, newUser, psql, rpc, show, userJwt, validate,
} from './helpers.mjs';

// The dashboard's devices need several sessions per user: the PostgREST of
// RETRY_BASE runs with max_sessions_per_user = 0 (test/postgrest.sh).
const base = RETRY_BASE;

// A call with the headers a browser or an add-in sends.
async function rpcWith(fn, args, token, headers = {}) {
  const res = await fetch(`${base}/rpc/${fn}`, {
    method: 'POST',
    headers: {
      Accept: 'application/json', 'Content-Type': 'application/json',
      Authorization: `Bearer ${token}`, ...headers,
    },
    body: JSON.stringify(args),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

test('the single-session default says how many sessions it ended (revoked_sessions)', async () => {
  const me = newUser();
  const first = await issueAs(me, { p_name: 'laptop' });
  const second = await issueAs(me, { p_name: 'desktop' });
  assert.equal(first.revoked_sessions, 0);
  assert.equal(second.revoked_sessions, 1, 'the dashboard can say "your laptop was signed out"');
  assert.equal((await validate(first.access_token)).error, 'revoked');
});

test('the dashboard lists sessions with user agent and address, revokes one, signs out the others', async () => {
  const me = newUser();
  const jwt = userJwt(me);
  const laptop = await rpcWith('extension_token_issue', { p_name: 'laptop' }, jwt,
    { 'User-Agent': 'VS Code/1.96 addin/2.0', 'X-Forwarded-For': '203.0.113.7, 10.0.0.1' });
  const desktop = await rpcWith('extension_token_issue', { p_name: 'desktop' }, jwt,
    { 'User-Agent': 'JetBrains/2025.1', 'X-Forwarded-For': '2001:db8::7' });
  const cli = await rpcWith('extension_token_issue', { p_name: 'cli' }, jwt,
    { 'User-Agent': 'curl/8', 'X-Forwarded-For': 'garbage' });
  for (const r of [laptop, desktop, cli]) assert.equal(r.status, 200, show(r));

  const list = await rpc('extension_token_list', {}, { token: jwt, base });
  assert.equal(list.status, 200, show(list));
  const by = Object.fromEntries(list.body.map((s) => [s.name, s]));
  assert.equal(by.laptop.user_agent, 'VS Code/1.96 addin/2.0');
  assert.equal(by.laptop.ip, '203.0.113.7');
  assert.equal(by.desktop.ip, '2001:db8::7');
  assert.equal(by.cli.user_agent, 'curl/8');
  assert.equal(by.cli.ip, null, 'not an address: not recorded');
  for (const s of list.body) {
    assert.equal(s.kind, 'access');
    assert.equal(s.status, 'active');
    assert.ok(!JSON.stringify(s).includes(laptop.body.access_token), 'no token in the list');
  }

  // "Revoke" next to the laptop: only the laptop ends.
  const one = await rpc('extension_token_revoke_session', { p_session_id: laptop.body.session_id }, { token: jwt, base });
  assert.equal(one.body, true, show(one));
  assert.equal((await validate(laptop.body.access_token)).error, 'revoked');
  assert.equal((await validate(desktop.body.access_token)).valid, true);
  // Another user cannot revoke my session by its id.
  const other = await rpc('extension_token_revoke_session', { p_session_id: desktop.body.session_id },
    { token: userJwt(newUser()), base });
  assert.equal(other.status, 403, show(other));
  assert.equal((await validate(desktop.body.access_token)).valid, true);

  // "Sign out my other devices" from the cli session.
  const others = await rpc('revoke_user_extension_tokens', { p_except_session_id: cli.body.session_id },
    { token: jwt, base });
  assert.equal(others.body, 1, show(others));
  assert.equal((await validate(desktop.body.access_token)).error, 'revoked');
  assert.equal((await validate(cli.body.access_token)).valid, true);

  // The add-in signs itself out with nothing but the anon key and its token.
  const out = await rpc('extension_token_revoke', { p_token: cli.body.refresh_token }, { token: ANON_KEY });
  assert.equal(out.status, 200, show(out));
  assert.equal(out.body, true);
  assert.equal((await validate(cli.body.access_token)).error, 'revoked');
});

const poll = (deviceCode) => rpc('extension_token_device_poll', { p_device_code: deviceCode }, { token: ANON_KEY });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('device authorization: pending, slow_down, approved once, then expired_token', async () => {
  const me = newUser();
  const start = await rpc('extension_token_device_start', { p_name: 'Fusion 360 add-in', p_scopes: ['cad:read'] },
    { token: ANON_KEY });
  assert.equal(start.status, 200, show(start));
  const { device_code: dc, user_code: uc } = start.body;

  let r = await poll(dc);
  assert.equal(r.status, 400, show(r));
  assert.equal(r.body.code, 'PT400');
  assert.equal(r.body.details, 'authorization_pending');
  r = await poll(dc);
  assert.equal(r.body.details, 'slow_down', show(r));

  // Anonymous cannot approve; the signed-in user can, typing the code loosely.
  const anon = await rpc('extension_token_device_approve', { p_user_code: uc }, { token: ANON_KEY });
  assert.equal(anon.status, 401, show(anon));
  const ok = await rpc('extension_token_device_approve', { p_user_code: ` ${uc.toLowerCase()} ` },
    { token: userJwt(me) });
  assert.equal(ok.body, true, show(ok));

  await sleep(start.body.interval * 1000 + 200);
  r = await poll(dc);
  assert.equal(r.status, 200, show(r));
  const v = await validate(r.body.access_token);
  assert.equal(v.valid, true);
  assert.equal(v.user_id, me);
  assert.equal(v.token_name, 'Fusion 360 add-in');
  assert.deepEqual(v.scopes, ['cad:read']);

  await sleep(start.body.interval * 1000 + 200);
  r = await poll(dc);
  assert.equal(r.status, 400, show(r));
  assert.equal(r.body.details, 'expired_token', 'the pair is handed out once');
});

test('device authorization: denied is access_denied; an expired code is expired_token', async () => {
  const me = newUser();
  const a = (await rpc('extension_token_device_start', {}, { token: ANON_KEY })).body;
  const denied = await rpc('extension_token_device_deny', { p_user_code: a.user_code }, { token: userJwt(me) });
  assert.equal(denied.body, true, show(denied));
  let r = await poll(a.device_code);
  assert.equal(r.body.details, 'access_denied', show(r));

  const b = (await rpc('extension_token_device_start', {}, { token: ANON_KEY })).body;
  psql(`UPDATE extension_token_devices SET expires_at = now() - interval '1 second'
         WHERE device_hash = sha256(convert_to('${b.device_code}', 'UTF8'))`);
  const late = await rpc('extension_token_device_approve', { p_user_code: b.user_code }, { token: userJwt(me) });
  assert.equal(late.body, false, show(late));
  r = await poll(b.device_code);
  assert.equal(r.body.details, 'expired_token', show(r));

  r = await poll('ext_dc_' + 'A'.repeat(43));
  assert.equal(r.body.details, 'expired_token', show(r));
});
