// Device authorization (RFC 8628) through the real PostgREST: the add-in
// starts and polls with the anon key, the signed-in user approves or denies
// in the dashboard, the next poll gets the pair (once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TokenClient, AuthorizationPendingError, SlowDownError, AccessDeniedError, DeviceCodeExpiredError,
} from '../src/index.js';
import { BASE, DEVICE, anonKey, call, newUser, recordingFetch, sessionRow, userJwt } from './helpers.mjs';

const skip = DEVICE ? false : 'the installed extension has no extension_token_device_start/poll';

test('device flow: start, pending, slow_down, the user approves, the next poll gets the pair (once)', { skip }, async () => {
  const sub = newUser();
  const anon = anonKey();
  const f = recordingFetch();
  const client = new TokenClient({ url: BASE(), anonKey: anon, fetch: f });
  const device = await client.startDeviceAuthorization({ name: 'VS Code on laptop', scopes: ['files:read'] });
  assert.match(device.user_code, /^[B-DF-HJ-NP-TV-Z]{4}-[B-DF-HJ-NP-TV-Z]{4}$/);
  assert.equal(device.interval, 5);
  assert.ok(device.expires_in >= 60);
  assert.equal(device.verification_uri_complete, `https://dashboard.example/device?user_code=${device.user_code}`);

  await assert.rejects(client.pollDeviceOnce(device), AuthorizationPendingError);
  await assert.rejects(client.pollDeviceOnce(device), SlowDownError, 'polled again within the interval');

  // the dashboard: the signed-in user types the code (case, spaces and dashes do not matter)
  const typed = device.user_code.toLowerCase().replace('-', ' ');
  const r = await call(BASE(), 'extension_token_device_approve', { p_user_code: typed }, userJwt(sub));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body, true);

  let pending = 0;
  const t0 = Date.now();
  const rec = await client.pollDeviceAuthorization(device, { onPending: () => { pending += 1; } });
  assert.ok(Date.now() - t0 >= 4900, 'waited the interval before polling');
  assert.equal(pending, 0);
  assert.equal((await client.getSession()).access_token, rec.access_token);
  const me = await client.rpc('whoami');
  assert.equal(me.sub, sub);
  assert.equal(me.scope, 'files:read');
  const row = await sessionRow(BASE(), sub, rec.session_id);
  assert.equal(row.name, 'VS Code on laptop');
  assert.deepEqual(row.scopes, ['files:read']);
  // every device-flow call was anonymous (the anon key), none carried a token of ours
  for (const c of f.calls.filter((x) => x.url.includes('/rpc/extension_token_device_'))) {
    assert.equal(c.headers.get('authorization'), `Bearer ${anon}`);
  }
  // the pair comes once: the code is consumed
  await new Promise((res) => { setTimeout(res, 5100); });
  await assert.rejects(client.pollDeviceOnce(device), DeviceCodeExpiredError);
});

test('device flow: the user denies, the add-in gets access_denied and stops', { skip }, async () => {
  const sub = newUser();
  const client = new TokenClient({ url: BASE(), anonKey: anonKey() });
  const device = await client.startDeviceAuthorization({ name: 'Fusion add-in' });
  const r = await call(BASE(), 'extension_token_device_deny', { p_user_code: device.user_code }, userJwt(sub));
  assert.equal(r.body, true);
  const err = await client.pollDeviceOnce(device).then(() => null, (e) => e);
  assert.ok(err instanceof AccessDeniedError, String(err));
  assert.equal(err.action, 'stop');
  assert.equal(err.code, 'PT400');
  assert.equal(await client.getSession(), null);
});

test('device flow: an unknown device code is expired_token; signInWithDevice ends with the error', { skip }, async () => {
  const client = new TokenClient({ url: BASE(), anonKey: anonKey(), sleep: async () => {} });
  await assert.rejects(client.pollDeviceOnce({ device_code: 'x'.repeat(43) }), DeviceCodeExpiredError);
  const shown = [];
  const sub = newUser();
  const err = await client.signInWithDevice({
    name: 'denied',
    onCode: async (d) => {
      shown.push(d.user_code);
      await call(BASE(), 'extension_token_device_deny', { p_user_code: d.user_code }, userJwt(sub));
    },
  }).then(() => null, (e) => e);
  assert.equal(shown.length, 1);
  assert.ok(err instanceof AccessDeniedError, String(err));
});

test('device flow: an anonymous request cannot approve', { skip }, async () => {
  const client = new TokenClient({ url: BASE(), anonKey: anonKey() });
  const device = await client.startDeviceAuthorization();
  const r = await call(BASE(), 'extension_token_device_approve', { p_user_code: device.user_code }, anonKey());
  assert.ok(r.status === 401 || r.status === 403, JSON.stringify(r));
  await assert.rejects(client.pollDeviceOnce(device), AuthorizationPendingError);
});
