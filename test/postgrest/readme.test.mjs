// The README's supabase-js snippets, run as written: each block after a
// "<!-- readme-snippet: NAME -->" marker in README.md is executed with the
// variables it names bound to a live PostgREST, and what it leaves behind is
// checked.  If the README drifts from the API, this fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  ANON_KEY, BASE, issueAs, newUser, supabase, userJwt, validate,
} from './helpers.mjs';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;

function snippet(name) {
  const m = README.match(new RegExp(`<!-- readme-snippet: ${name} -->\\s*\`\`\`js\\n([\\s\\S]*?)\`\`\``));
  assert.ok(m, `README.md has no js block after <!-- readme-snippet: ${name} -->`);
  return m[1];
}

// Runs a snippet with `bindings` in scope; returns the named variables.
function run(name, bindings, results) {
  const fn = new AsyncFunction(...Object.keys(bindings),
    `${snippet(name)}\nreturn { ${results.join(', ')} };`);
  return fn(...Object.values(bindings));
}

test('README dashboard snippet: issue, list, revoke one, revoke all', async () => {
  const me = newUser();
  const out = await run('dashboard', { supabase: supabase(userJwt(me)) },
    ['pair', 'error', 'sessions', 'revoked', 'count']);
  assert.equal(out.error, null, JSON.stringify(out.error));
  assert.match(out.pair.access_token, /^eyJ/);
  assert.match(out.pair.refresh_token, /^ext_rt_/);
  assert.equal(out.sessions.length, 1);
  assert.equal(out.sessions[0].name, 'VS Code add-in');
  assert.equal(out.revoked, true);
  assert.equal(out.count, 0, 'the only session was already revoked');
  assert.equal((await validate(out.pair.access_token)).error, 'revoked');
});

test('README add-in snippet: validate with POST, refresh; the same refresh again is PT401', async () => {
  const pair = await issueAs(newUser(), { p_name: 'add-in' });
  const createClient = (url, key) => {
    assert.equal(url, 'SUPABASE_URL');
    assert.equal(key, 'SUPABASE_ANON_KEY');
    return supabase(ANON_KEY);
  };
  const bindings = {
    createClient, SUPABASE_URL: 'SUPABASE_URL', SUPABASE_ANON_KEY: 'SUPABASE_ANON_KEY',
    accessToken: pair.access_token, refreshToken: pair.refresh_token,
  };
  const first = await run('addin', bindings, ['check', 'next', 'refreshError']);
  assert.equal(first.check.valid, true, JSON.stringify(first.check));
  assert.equal(first.refreshError, null, JSON.stringify(first.refreshError));
  assert.match(first.next.access_token, /^eyJ/);
  assert.equal(first.next.session_id, pair.session_id);

  // The snippet's comment: a second exchange of the same refresh token.
  const again = await run('addin', bindings, ['check', 'next', 'refreshError']);
  assert.equal(again.check.valid, false, 'the old access token was replaced');
  assert.equal(again.refreshError.code, 'PT401');
  assert.equal(again.refreshError.details, 'refresh_token_already_used');
  assert.equal(again.next, null);
  assert.ok(BASE.startsWith('http://127.0.0.1:'));
});

test('README device snippet: start with the anon key, approve as the signed-in user, poll for the pair', async () => {
  const me = newUser();
  const out = await run('device', { anon: supabase(ANON_KEY), supabase: supabase(userJwt(me)) },
    ['start', 'approved', 'pair', 'error']);
  assert.match(out.start.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
  assert.match(out.start.device_code, /^ext_dc_/);
  assert.equal(out.start.interval, 5);
  // The snippet approves a code the user typed ('bdwp hqpk'), not this one.
  assert.equal(out.approved, false);
  assert.equal(out.error.code, 'PT400');
  assert.equal(out.error.details, 'authorization_pending');
  assert.equal(out.pair, null);
  // Approving the code shown, as typed by a person, and polling after the
  // interval gives the pair of a session of this user.
  const typed = out.start.user_code.toLowerCase().replace('-', ' ');
  const ok = await supabase(userJwt(me)).rpc('extension_token_device_approve', { p_user_code: typed });
  assert.equal(ok.data, true, JSON.stringify(ok.error));
  await new Promise((r) => setTimeout(r, out.start.interval * 1000 + 100));
  const polled = await supabase(ANON_KEY).rpc('extension_token_device_poll', { p_device_code: out.start.device_code });
  assert.equal(polled.error, null, JSON.stringify(polled.error));
  const v = await validate(polled.data.access_token);
  assert.equal(v.valid, true);
  assert.equal(v.user_id, me);
  assert.equal(v.token_name, 'VS Code add-in');
  assert.deepEqual(v.scopes, ['notes:read']);
});
