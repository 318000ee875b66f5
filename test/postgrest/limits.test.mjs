// Rate limits and bad arguments, as PostgREST answers them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SERVICE_KEY, newUser, rpc, show, supabase, userJwt, validate } from './helpers.mjs';

test('the 6th issue within the hour is HTTP 429 PT429 with a hint saying when to retry, and does not count', async () => {
  const me = newUser();
  const token = userJwt(me);
  for (let i = 1; i <= 5; i++) {
    const r = await rpc('extension_token_issue', { p_name: `issue ${i}` }, { token });
    assert.equal(r.status, 200, `issue ${i}: ${show(r)}`);
  }
  const t0 = Date.now();
  const r = await rpc('extension_token_issue', { p_name: 'issue 6' }, { token });
  assert.equal(r.status, 429, show(r));
  assert.equal(r.body.code, 'PT429');
  assert.equal(r.body.message, 'too many token issues for this user');
  assert.equal(r.body.details, 'At most 5 issues per hour are allowed.');
  const m = /^Retry after (.+) \(in (\d+) seconds\)\.$/.exec(r.body.hint);
  assert.ok(m, `hint: ${r.body.hint}`);
  const wait = Number(m[2]);
  assert.ok(wait > 3500 && wait <= 3601, `wait ${wait} s is not about an hour`);
  const retryAt = Date.parse(m[1].replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'));
  if (!Number.isNaN(retryAt)) {
    assert.ok(Math.abs(retryAt - (t0 + wait * 1000)) < 5000, `retry at ${m[1]} vs in ${wait} s`);
  }

  const { status, error } = await supabase(token).rpc('extension_token_issue', {});
  assert.equal(status, 429);
  assert.equal(error.code, 'PT429');
  assert.match(error.hint, /^Retry after /);

  const list = await rpc('extension_token_list', {}, { token });
  assert.equal(list.body.length, 5, 'the refused issues created no session');
  assert.deepEqual(list.body.filter((s) => s.status === 'active').map((s) => s.name), ['issue 5']);
});

test('a reserved claim in p_claims is HTTP 400 with 22023, for every reserved name', async () => {
  const reserved = ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'type', 'session_id', 'role'];
  const me = newUser();
  for (const claim of reserved) {
    const r = await rpc('extension_token_issue', { p_claims: { [claim]: 'x' } }, { token: userJwt(me) });
    assert.equal(r.status, 400, `${claim}: ${show(r)}`);
    assert.equal(r.body.code, '22023', `${claim}: ${show(r)}`);
    assert.match(r.body.message, new RegExp(`reserved claim "${claim}"`));
  }
  const list = await rpc('extension_token_list', {}, { token: userJwt(me) });
  assert.deepEqual(list.body, [], 'refused issues created no session');

  const { error, status } = await supabase(userJwt(me))
    .rpc('extension_token_issue', { p_claims: { role: 'service_role' } });
  assert.equal(status, 400);
  assert.equal(error.code, '22023');
});

test('extra claims that are not reserved are carried in the access token (set by the service role)', async () => {
  // 1.2: a signed-in user may set only the claims in extension_tokens.user_claims
  // (none here); the service role, an administrator, may set any unreserved one.
  const me = newUser();
  const r = await rpc('extension_token_issue', { p_user_id: me, p_claims: { plan: 'pro', scopes: ['read'] } },
    { token: SERVICE_KEY });
  assert.equal(r.status, 200, show(r));
  const v = await validate(r.body.access_token);
  assert.equal(v.claims.plan, 'pro');
  assert.deepEqual(v.claims.scopes, ['read']);
});

test('bad arguments are HTTP 400 with 22023: p_claims not an object, lifetimes out of range, empty name', async () => {
  const me = newUser();
  const cases = [
    { p_claims: ['a'] },
    { p_lifetime: '0 seconds' },
    { p_lifetime: '-1 day' },
    { p_lifetime: '91 days' },
    { p_name: '' },
  ];
  for (const args of cases) {
    const r = await rpc('extension_token_issue', args, { token: userJwt(me) });
    assert.equal(r.status, 400, `${JSON.stringify(args)}: ${show(r)}`);
    assert.equal(r.body.code, '22023', `${JSON.stringify(args)}: ${show(r)}`);
  }
});
