// The add-in: holds nothing but its token pair and calls PostgREST as anon
// (the anon key, or no Authorization at all) to validate and refresh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ANON_KEY, RETRY_BASE, eventually, issueAs, newUser, rpc, show, signJwt, supabase, userJwt, validate,
} from './helpers.mjs';

test('anon validates an access token with POST and with GET (a read-only transaction)', async () => {
  const me = newUser();
  const pair = await issueAs(me, { p_name: 'add-in' });

  const post = await rpc('extension_token_validate', { p_token: pair.access_token });
  assert.equal(post.status, 200, show(post));
  assert.equal(post.body.valid, true);
  assert.equal(post.body.user_id, me);
  assert.equal(post.body.session_id, pair.session_id);

  const get = await rpc('extension_token_validate', { p_token: pair.access_token }, { method: 'GET' });
  assert.equal(get.status, 200, show(get));
  assert.equal(get.body.valid, true, show(get));
  assert.equal(get.body.user_id, me);
  assert.equal(get.body.claims.type, 'access');
  assert.equal(get.body.claims.session_id, pair.session_id);

  const { data, error } = await supabase(ANON_KEY)
    .rpc('extension_token_validate', { p_token: pair.access_token }, { get: true });
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(data.valid, true);
  assert.equal(data.token_name, 'add-in');
});

test('validate answers 200 with valid = false and the reason for bad tokens, never an HTTP error', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const parts = pair.access_token.split('.');
  const tampered = `${parts[0]}.${parts[1]}.${Buffer.from('x'.repeat(32)).toString('base64url')}`;
  const cases = [
    ['', 'missing'],
    ['bad.token.value', 'malformed'],
    [signJwt({ sub: me }), 'malformed'], // correctly signed, claims missing
    [tampered, 'invalid_signature'],
    [pair.refresh_token, 'wrong_token_type'],
  ];
  for (const [token, error] of cases) {
    for (const method of ['POST', 'GET']) {
      const r = await rpc('extension_token_validate', { p_token: token }, { method });
      assert.equal(r.status, 200, `${method} ${error}: ${show(r)}`);
      assert.equal(r.body.valid, false, `${method} ${error}: ${show(r)}`);
      assert.equal(r.body.error, error, `${method}: ${show(r)}`);
      assert.equal(r.body.user_id, null);
    }
  }
});

test('a Supabase user JWT is not an extension token: validate says it is not valid', async () => {
  const v = await validate(userJwt(newUser()));
  assert.equal(v.valid, false);
  assert.ok(['malformed', 'wrong_issuer', 'wrong_audience', 'wrong_token_type', 'invalid_signature']
    .includes(v.error), v.error);
});

test('anon refreshes: a new pair in the same session, and the old access token validates as revoked', async () => {
  const me = newUser();
  const pair = await issueAs(me);

  const { data, error, status } = await supabase(ANON_KEY).rpc('extension_token_refresh', {
    p_refresh_token: pair.refresh_token, p_current_token: pair.access_token,
  });
  assert.equal(error, null, JSON.stringify(error));
  assert.equal(status, 200);
  assert.equal(data.session_id, pair.session_id);
  assert.notEqual(data.access_token, pair.access_token);
  assert.notEqual(data.refresh_token, pair.refresh_token);
  assert.equal(data.token_type, 'Bearer');

  const fresh = await validate(data.access_token);
  assert.equal(fresh.valid, true);
  assert.equal(fresh.user_id, me);
  const old = await validate(pair.access_token);
  assert.equal(old.valid, false);
  assert.equal(old.error, 'revoked');
});

test('reusing an exchanged refresh token is HTTP 401 PT401 refresh_token_already_used and revokes the session', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const next = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(next.status, 200, show(next));

  // extension_tokens.refresh_retry_window = 0 for this PostgREST: no retry.
  const reuse = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(reuse.status, 401, show(reuse));
  assert.equal(reuse.body.code, 'PT401');
  assert.equal(reuse.body.details, 'refresh_token_already_used');
  assert.equal(reuse.body.message, 'refresh token rejected');
  assert.equal(reuse.headers.get('www-authenticate')?.startsWith('Bearer'), true);

  // The revocation is committed by a background worker: allow it a moment.
  const revoked = await eventually(async () =>
    (await validate(next.body.access_token)).error === 'revoked');
  assert.ok(revoked, 'the successor access token was not revoked after the reuse');

  const successor = await rpc('extension_token_refresh', { p_refresh_token: next.body.refresh_token });
  assert.equal(successor.status, 401, show(successor));
  assert.equal(successor.body.code, 'PT401');
  assert.equal(successor.body.details, 'session_revoked');

  const list = await rpc('extension_token_list', {}, { token: userJwt(me) });
  assert.equal(list.body[0].status, 'revoked', show(list));
  assert.equal(list.body[0].revoked_reason, 'refresh_token_reuse', show(list));
  assert.equal(list.body[0].last_refresh_error, 'refresh_token_already_used', show(list));
});

test('within refresh_retry_window, the exchanged refresh token presented again returns the same pair (a retry after a lost response)', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const args = { p_refresh_token: pair.refresh_token };
  const first = await rpc('extension_token_refresh', args, { base: RETRY_BASE });
  assert.equal(first.status, 200, show(first));
  const retry = await rpc('extension_token_refresh', args, { base: RETRY_BASE });
  assert.equal(retry.status, 200, show(retry));
  assert.equal(retry.body.access_token, first.body.access_token, 'the same access token, byte for byte');
  assert.equal(retry.body.refresh_token, first.body.refresh_token, 'the same refresh token, byte for byte');
  assert.equal(retry.body.session_id, pair.session_id);
  assert.equal((await validate(first.body.access_token)).valid, true, 'the one successor pair validates');
  assert.equal((await validate(pair.access_token)).error, 'revoked', 'the replaced access token does not');

  // The window protects only the token exchanged last: once the successor
  // itself has been exchanged, the first refresh token is reuse.
  const second = await rpc('extension_token_refresh', { p_refresh_token: first.body.refresh_token },
    { base: RETRY_BASE });
  assert.equal(second.status, 200, show(second));
  assert.notEqual(second.body.refresh_token, first.body.refresh_token);
  const reuse = await rpc('extension_token_refresh', args, { base: RETRY_BASE });
  assert.equal(reuse.status, 401, show(reuse));
  assert.equal(reuse.body.code, 'PT401');
  assert.equal(reuse.body.details, 'refresh_token_already_used');
  assert.equal((await validate(second.body.access_token)).error, 'revoked',
    'the reuse revoked the session, the newest pair with it');
  const list = await rpc('extension_token_list', {}, { token: userJwt(me) });
  assert.equal(list.body[0].revoked_reason, 'refresh_token_reuse', show(list));
});

test('two tabs refreshing the same token at once both end up holding one pair', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const args = { p_refresh_token: pair.refresh_token, p_current_token: pair.access_token };
  const answers = await Promise.all([1, 2, 3, 4].map(() =>
    rpc('extension_token_refresh', args, { base: RETRY_BASE })));
  for (const r of answers) assert.equal(r.status, 200, show(r));
  const pairs = new Set(answers.map((r) => `${r.body.access_token} ${r.body.refresh_token}`));
  assert.equal(pairs.size, 1, 'every concurrent refresh returned the same pair');
  assert.equal((await validate(answers[0].body.access_token)).valid, true);
  const list = await rpc('extension_token_list', {}, { token: userJwt(me) });
  assert.equal(list.body[0].refresh_count, 1, `one exchange, not ${list.body[0].refresh_count}: ${show(list)}`);
  assert.equal(list.body[0].status, 'active');
});

test('anon revokes with the token itself (RFC 7009): an add-in signs itself out with the anon key', async () => {
  for (const [how, token] of [['anon key', ANON_KEY], ['no Authorization', undefined]]) {
    for (const which of ['access_token', 'refresh_token']) {
      const pair = await issueAs(newUser());
      const r = await rpc('extension_token_revoke', { p_token: pair[which] }, { token });
      assert.equal(r.status, 200, `${how}, ${which}: ${show(r)}`);
      assert.equal(r.body, true, `${how}, ${which}: ${show(r)}`);
      assert.equal((await validate(pair.access_token)).error, 'revoked', `${how}, ${which}`);
      const again = await rpc('extension_token_revoke', { p_token: pair[which] }, { token });
      assert.equal(again.body, false, `${how}, ${which}: revoking again says false`);
    }
  }
  const junk = await rpc('extension_token_revoke', { p_token: 'not a token' });
  assert.equal(junk.status, 200, show(junk));
  assert.equal(junk.body, false);
});

test('an unknown or mistyped refresh token is HTTP 401 PT401 refresh_token_not_found (supabase-js error)', async () => {
  const pair = await issueAs(newUser());
  const last = pair.refresh_token.at(-1) === 'a' ? 'b' : 'a';
  for (const token of [`${pair.refresh_token.slice(0, -1)}${last}`, pair.access_token, 'ext_rt_nope']) {
    const { data, error, status } = await supabase(ANON_KEY)
      .rpc('extension_token_refresh', { p_refresh_token: token });
    assert.equal(status, 401);
    assert.equal(data, null);
    assert.equal(error.code, 'PT401');
    assert.equal(error.details, 'refresh_token_not_found');
  }
  assert.equal((await validate(pair.access_token)).valid, true, 'the real session is untouched');
});

test('refresh with GET (read-only) is refused with 25006 and leaves the refresh token usable', async () => {
  const pair = await issueAs(newUser());
  const get = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token }, { method: 'GET' });
  assert.equal(get.status, 405, show(get));
  assert.equal(get.body.code, '25006');
  const post = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(post.status, 200, show(post));
  assert.equal(post.body.session_id, pair.session_id);
});

test('a session revoked from the dashboard can no longer refresh: HTTP 401 PT401 session_revoked', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const rv = await rpc('revoke_user_extension_tokens', {}, { token: userJwt(me) });
  assert.equal(rv.body, 1, show(rv));
  const r = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
  assert.equal(r.status, 401, show(r));
  assert.equal(r.body.code, 'PT401');
  assert.equal(r.body.details, 'session_revoked');
});
