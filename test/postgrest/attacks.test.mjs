// The attack suite: each test tries to break a promise of the PostgREST gate
// (extension_token_pre_request as db-pre-request) or of issue, against the
// real PostgREST 12.0.2 that test/postgrest.sh starts, and must be refused.
//
// Requests that fetch() cannot make (duplicate headers, which it merges;
// control bytes and invalid UTF-8, which it refuses) go over a raw socket.
//
// Each test says what 1.1 did (git show 009aea9:src/extension_tokens.c):
// its pre_request parsed request.headers itself (jansson, duplicate keys and
// NUL refused, the "authorization" member copied into a buffer of 8192 + 64
// bytes), returned WITHOUT checking whenever that parse did not give exactly
// one string, skipped only ' ' and '\t' after "Bearer", and took a token for
// ours only when its unverified "iss" equalled the CURRENT jwt_issuer; issue
// took any p_claims but the ten reserved names and any caller's token.
// PostgREST authenticates with the FIRST Authorization header while
// request.headers keeps the LAST one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import {
  BASE, SERVICE_KEY, decodeJwt, issueAs, newUser, psql, rpc, show, supabase, userJwt, validate,
} from './helpers.mjs';

const ATTACK_BASE = process.env.ET_POSTGREST_ATTACK_URL;
if (!ATTACK_BASE) throw new Error('ET_POSTGREST_ATTACK_URL is not set: run these tests through test/postgrest.sh');

// The error psql reports for `sql` ('' if it succeeded), kept off stderr.
function psqlError(sql) {
  const r = spawnSync('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' });
  return r.status === 0 ? '' : r.stderr;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One request over a fresh socket, bytes exactly as given: `headers` are
// whole header lines ("Name: value"), each char one byte (latin1), so that
// duplicates, folding, control bytes and invalid UTF-8 reach PostgREST.
// Resolves { status, body, head }.
function send(base, { method = 'GET', path = '/rpc/whoami', headers = [], body } = {}) {
  const u = new URL(base);
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${u.host}`, 'Accept: application/json', ...headers];
  if (body !== undefined) lines.push('Content-Type: application/json');
  lines.push(`Content-Length: ${payload.length}`, 'Connection: close');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    const chunks = [];
    socket.setTimeout(15000, () => socket.destroy(new Error(`no answer: ${method} ${path}`)));
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      const head = (end < 0 ? all : all.subarray(0, end)).toString('latin1');
      let rest = end < 0 ? Buffer.alloc(0) : all.subarray(end + 4);
      if (/^transfer-encoding:\s*chunked/im.test(head)) {
        const parts = [];
        for (;;) {
          const eol = rest.indexOf('\r\n');
          const n = eol < 0 ? 0 : parseInt(rest.subarray(0, eol).toString('latin1'), 16);
          if (!n) break;
          parts.push(rest.subarray(eol + 2, eol + 2 + n));
          rest = rest.subarray(eol + 4 + n);
        }
        rest = Buffer.concat(parts);
      }
      const text = rest.toString('utf8');
      let parsed = text;
      try { parsed = text === '' ? null : JSON.parse(text); } catch { /* keep text */ }
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : 0, body: parsed, head });
    });
    socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]));
  });
}

const bearer = (t) => `Authorization: Bearer ${t}`;
const brief = (r) => `HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 240)}`;
// What PostgREST put in request.jwt.claims (whoami), if the request ran.
const claimsOf = (r) => (r.status === 200 && r.body && typeof r.body === 'object' ? r.body : null);
const ranAs = (r, pair) => claimsOf(r)?.session_id === pair.session_id;
const refused = (r, detail) => r.status === 401 && r.body?.code === 'PT401' && r.body?.details === detail;
// A readable name for a header shape (control bytes and long runs shown).
const label = (s) => JSON.stringify(s.length > 90 ? `${s.slice(0, 40)}…(${s.length} bytes)…${s.slice(-30)}` : s);

async function revokeByToken(me, pair, base = BASE) {
  const r = await rpc('extension_token_revoke', { p_token: pair.access_token }, { token: userJwt(me), base });
  assert.equal(r.body, true, `revoking the token: ${show(r)}`);
}

// ------------------------------------------------------------------------
// Duplicate Authorization headers
// ------------------------------------------------------------------------

// 1.1: request.headers keeps the LAST Authorization, so with the revoked
// token first and anything second 1.1 looked at the second one: not a
// Bearer, or not ours ('Bearer x', a Supabase JWT), or a live token of ours
// (validated instead) -> it returned without checking, and PostgREST ran
// the request as the revoked token (HTTP 200), issue included (a fresh pair
// for the victim).  Each of these cases got through 1.1.
test('duplicate Authorization headers, a revoked token of ours first: refused, whatever comes second (and issue too)', async () => {
  const victim = newUser();
  const pair = await issueAs(victim);
  const other = await issueAs(newUser());
  const t = pair.access_token;
  const seconds = [
    'Authorization: Bearer x',
    `Authorization: Bearer ${other.access_token}`,
    `Authorization: Bearer ${userJwt(victim)}`,
    'Authorization: Basic dXNlcjpwYXNzd29yZA==',
    'Authorization: ',
    'Authorization: Bearer',
    `authorization: Bearer ${other.access_token}`,
    'AUTHORIZATION: foo',
    'AuThOrIzAtIoN: Bearer x',
    bearer(t),
  ];
  const shapes = [...seconds.map((s) => [bearer(t), s]), [bearer(t), 'Authorization: x', bearer(other.access_token)]];

  // The premise: PostgREST takes the first header (while the token is live,
  // every shape runs as it).
  const premise = [];
  for (const headers of shapes) {
    const r = await send(BASE, { headers });
    if (!ranAs(r, pair)) premise.push(`${label(headers.slice(1).join(' | '))} -> ${brief(r)}`);
  }
  assert.deepEqual(premise, [], 'PostgREST no longer authenticates with the first Authorization header');

  await revokeByToken(victim, pair);
  const slipped = [];
  for (const headers of shapes) {
    const r = await send(BASE, { headers });
    if (!refused(r, 'revoked')) slipped.push(`then ${label(headers.slice(1).join(' | '))} -> ${brief(r)}`);
    const i = await send(BASE, { method: 'POST', path: '/rpc/extension_token_issue', headers, body: {} });
    if (!refused(i, 'revoked')) slipped.push(`issue, then ${label(headers.slice(1).join(' | '))} -> ${brief(i)}`);
  }
  assert.deepEqual(slipped, [], 'a revoked token first in duplicate Authorization headers must get 401 PT401 revoked');
  const sessions = psql(`SELECT count(*) FROM extension_token_sessions WHERE user_id = '${victim}' AND revoked_at IS NULL`);
  assert.equal(sessions, '0', 'no live session of the victim may exist after the attempts');
});

// 1.1 decided on the LAST header: with a live token (ours or a Supabase
// JWT) first and the revoked one second, 1.1 refused the request that
// PostgREST authenticated as the live token (HTTP 401 revoked): it judged a
// header that PostgREST did not use.  The cases with a live token first
// fail on 1.1.
test('duplicate Authorization headers, the revoked token second: the request is judged by the first, never runs as the revoked token', async () => {
  const victim = newUser();
  const pair = await issueAs(victim);
  const otherUser = newUser();
  const other = await issueAs(otherUser);
  const supa = newUser();
  await revokeByToken(victim, pair);
  const t = pair.access_token;

  const cases = [
    // [first header, what must happen]
    [bearer(other.access_token), (r) => claimsOf(r)?.session_id === other.session_id, 'runs as the live token of ours'],
    [bearer(userJwt(supa)), (r) => claimsOf(r)?.sub === supa && claimsOf(r)?.session_id === undefined, 'runs as the Supabase user'],
    ['Authorization: Basic dXNlcjpwYXNzd29yZA==', (r) => claimsOf(r)?.role === 'anon', 'runs as anon'],
    ['Authorization: Bearer x', (r) => r.status === 401 && /^PGRST30/.test(r.body?.code), 'PostgREST refuses the first'],
  ];
  const wrong = [];
  for (const [first, ok, what] of cases) {
    for (const second of [bearer(t), `authorization: bearer ${t}`]) {
      const r = await send(BASE, { headers: [first, second] });
      if (ranAs(r, pair) || !ok(r)) wrong.push(`${label(first)} then ${label(second.replace(t, '<revoked>'))}: should be "${what}", got ${brief(r)}`);
    }
  }
  assert.deepEqual(wrong, []);
});

// ------------------------------------------------------------------------
// Malformed Authorization headers
// ------------------------------------------------------------------------

// Spellings of the header, for a token `t` (and `u`, another live token).
const spellings = (t, u) => ({
  'Bearer': [bearer(t)],
  'lower-case scheme': [`Authorization: bearer ${t}`],
  'upper-case scheme': [`Authorization: BEARER ${t}`],
  'a tab': [`Authorization: Bearer\t${t}`],
  'tabs and spaces': [`Authorization: Bearer \t ${t}`],
  'extra spaces': [`Authorization: Bearer    ${t}`],
  'blanks before the scheme': [`Authorization:  \t Bearer ${t}`],
  'a vertical tab': [`Authorization: Bearer\x0b${t}`],
  'a form feed': [`Authorization: Bearer\x0c${t}`],
  '9000 spaces': [`Authorization: Bearer${' '.repeat(9000)}${t}`],
  'a folded line': ['Authorization: Bearer', `\t${t}`],
  'a trailing space': [`Authorization: Bearer ${t} `],
  'empty bearer': ['Authorization: Bearer'],
  'empty bearer and a space': ['Authorization: Bearer '],
  'two tokens': [`Authorization: Bearer ${t} ${u}`],
  'two tokens, ours second': [`Authorization: Bearer ${u} ${t}`],
  'two credentials with a comma': [`Authorization: Bearer ${t}, Bearer ${u}`],
  'a non-ASCII byte after the token': [`Authorization: Bearer ${t}\xe9`],
  'a no-break space (non-ASCII) as the blank': [`Authorization: Bearer\xa0${t}`],
  'a non-ASCII scheme': [`Authorization: B\xe9arer ${t}`],
  'a control byte as the blank': [`Authorization: Bearer\x01${t}`],
  'no blank': [`Authorization: Bearer${t}`],
  'no scheme': [`Authorization: ${t}`],
  'another scheme': [`Authorization: Basic ${t}`],
});

// 1.1 skipped only ' ' and '\t' after "Bearer" and copied the header into a
// buffer of 8256 bytes: PostgREST takes "Bearer\x0b<token>", "Bearer\x0c
// <token>" and "Bearer" + 9000 spaces + token as the bearer token, and 1.1
// returned without checking them (HTTP 200 with the revoked token).
test('malformed Authorization headers: a revoked token of ours is refused in every spelling PostgREST takes, a live one allowed in each', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const other = await issueAs(newUser());
  const supa = newUser();
  const ours = spellings(pair.access_token, other.access_token);
  // The control: what PostgREST itself does with each spelling, for a
  // Supabase user JWT (not ours, so the pre-request lets it through).
  const foreign = spellings(userJwt(supa), other.access_token);

  const control = {};
  const wrongLive = [];
  for (const name of Object.keys(ours)) {
    const f = await send(BASE, { headers: foreign[name] });
    control[name] = { taken: claimsOf(f)?.sub === supa, status: f.status };
    const r = await send(BASE, { headers: ours[name] });
    if (control[name].taken ? !ranAs(r, pair) : (ranAs(r, pair) || r.status !== f.status)) {
      wrongLive.push(`${name}: PostgREST ${control[name].taken ? 'takes' : 'does not take'} it (${brief(f)}); live token of ours: ${brief(r)}`);
    }
  }
  const taken = Object.keys(control).filter((n) => control[n].taken);
  for (const name of ['Bearer', 'lower-case scheme', 'a tab', 'extra spaces', 'a vertical tab', '9000 spaces']) {
    assert.ok(taken.includes(name), `premise: PostgREST takes the token spelled with ${name} (it takes: ${taken.join(', ')})`);
  }
  assert.deepEqual(wrongLive, [], 'a live token of ours must be allowed where PostgREST takes it, and be what PostgREST makes of it elsewhere');

  await revokeByToken(me, pair);
  const slipped = [];
  for (const name of Object.keys(ours)) {
    const r = await send(BASE, { headers: ours[name] });
    const ok = control[name].taken ? refused(r, 'revoked') : (!ranAs(r, pair) && r.status === control[name].status);
    if (!ok) slipped.push(`${name} -> ${brief(r)}`);
  }
  assert.deepEqual(slipped, [], `a revoked token must get 401 PT401 revoked in each spelling PostgREST takes (${taken.join(', ')})`);
});

// ------------------------------------------------------------------------
// Hostile bytes in other headers
// ------------------------------------------------------------------------

const hostileHeaders = {
  'a NUL byte': 'X-Trace: a\x00b',
  'a NUL byte in a cookie': 'Cookie: session=\x00',
  'a control byte (0x01)': 'X-Trace: a\x01b',
  'DEL (0x7f)': 'X-Trace: a\x7fb',
  'a control byte in the name': 'X-Tr\x01ace: a',
  'invalid UTF-8': 'X-Trace: \xff\xfe\xfd',
  'a lone Latin-1 byte': 'X-Trace: caf\xe9',
  'JSON metacharacters': 'X-Trace: "}\\"{\\u0000',
  'the text \\u0000': 'X-Trace: \\u0000',
  'a 7000-byte value': `X-Trace: ${'a'.repeat(7000)}`,
  'a 60000-byte value': `X-Trace: ${'a'.repeat(60000)}`,
  'a header named like ours (X-Authorization)': 'X-Authorization: Bearer x',
  'an API-key header': 'X-Api-Key: ext_pat_0000',
  'Authorization again, upper-case name': 'AUTHORIZATION: Basic eDp5',
  'Authorization again, with a NUL': 'authorization: Bearer \x00',
  'Prefer: tx=rollback': 'Prefer: tx=rollback',
};

// 1.1 parsed request.headers with jansson, which refuses "\u0000" and
// duplicate keys: with a NUL byte in any header (PostgREST passes it on as
// \u0000) the parse failed and 1.1 returned without checking (HTTP 200 with
// the revoked token); with a second "authorization" it read that one.  The
// NUL and Authorization cases got through 1.1; the others PostgREST itself
// refuses (invalid UTF-8: 500, 60000 bytes: 400) or 1.1 parsed.
test('hostile bytes in other headers: a revoked bearer token of ours is refused with each, a live one allowed where PostgREST accepts the header', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const supa = newUser();
  // The header after Authorization, and before it.
  const orders = (auth, h) => ({ after: [auth, h], before: [h, auth] });
  const control = {};
  const wrongLive = [];
  for (const [name, h] of Object.entries(hostileHeaders)) {
    const foreign = orders(bearer(userJwt(supa)), h);
    const ours = orders(bearer(pair.access_token), h);
    for (const order of ['after', 'before']) {
      const f = await send(BASE, { headers: foreign[order] });
      const c = { ok: claimsOf(f)?.sub === supa, status: f.status };
      control[`${name} ${order}`] = c;
      const r = await send(BASE, { headers: ours[order] });
      if (c.ok ? !ranAs(r, pair) : (r.status !== f.status || ranAs(r, pair))) {
        wrongLive.push(`${name} (${order} Authorization): a Supabase JWT gets ${brief(f)}; a live token of ours ${brief(r)}`);
      }
    }
  }
  assert.ok(control['a NUL byte after'].ok && control['a 7000-byte value after'].ok,
    `premise: PostgREST accepts a NUL byte and a 7000-byte value in a header (${JSON.stringify(control)})`);
  assert.deepEqual(wrongLive, [], 'with a live token of ours, a header PostgREST accepts must not make the request fail');

  await revokeByToken(me, pair);
  const slipped = [];
  for (const [name, h] of Object.entries(hostileHeaders)) {
    const ours = orders(bearer(pair.access_token), h);
    for (const order of ['after', 'before']) {
      const c = control[`${name} ${order}`];
      const r = await send(BASE, { headers: ours[order] });
      // Where PostgREST takes our token: refused as revoked; where it does
      // not (it fails the request itself, or takes another Authorization):
      // as it answers a Supabase JWT there, and never as our token.
      const ok = c.ok ? refused(r, 'revoked') : (r.status === c.status && !ranAs(r, pair));
      if (!ok) slipped.push(`${name} (${order} Authorization) -> ${brief(r)}`);
    }
  }
  assert.deepEqual(slipped, [], 'every request with the revoked token as bearer must be refused');
});

// ------------------------------------------------------------------------
// Revoked, rotated-out and idle-expired tokens, in every header shape
// ------------------------------------------------------------------------

// The header shapes that 1.1 did not check (see above), and the plain one.
const shapesFor = (t, live) => ({
  plain: [bearer(t)],
  'lower-case with a vertical tab': [`Authorization: bearer\x0b${t}`],
  '9000 spaces': [`Authorization: Bearer${' '.repeat(9000)}${t}`],
  'then a second Authorization: Basic': [bearer(t), 'Authorization: Basic eDp5'],
  'then a live token of ours': [bearer(t), bearer(live)],
  'with a NUL byte in X-Trace': [bearer(t), 'X-Trace: \x00'],
});

async function refusedEverywhere(base, t, live, detail) {
  const slipped = [];
  for (const [name, headers] of Object.entries(shapesFor(t, live))) {
    const r = await send(base, { headers });
    if (!refused(r, detail)) slipped.push(`${name} -> ${brief(r)}`);
  }
  return slipped;
}

// 1.1 refused these only when sent plainly: in the other shapes it returned
// without checking (200).  Idle: 1.1 read session_inactivity_timeout at
// validation (0 in PostgREST's sessions), not the one fixed at issue, so the
// idle-expired token passed even plainly.
test('revoked, rotated-out and idle-expired tokens of ours are refused by the very next request, in every header shape', async () => {
  const live = (await issueAs(newUser())).access_token;
  const kinds = [
    ['revoked by the token (extension_token_revoke)', 'revoked', async (me, pair) => revokeByToken(me, pair)],
    ['revoked by session id', 'revoked', async (me, pair) => {
      const r = await rpc('extension_token_revoke_session', { p_session_id: pair.session_id }, { token: userJwt(me) });
      assert.equal(r.body, true, show(r));
    }],
    ['signed out everywhere', 'revoked', async (me) => {
      const r = await rpc('revoke_user_extension_tokens', {}, { token: userJwt(me) });
      assert.equal(r.body, 1, show(r));
    }],
    ['ended by the session limit (a second issue)', 'revoked', async (me) => { await issueAs(me); }],
    ['rotated out by a refresh', 'revoked', async (me, pair) => {
      const r = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
      assert.equal(r.status, 200, show(r));
      const next = await send(BASE, { headers: [bearer(r.body.access_token)] });
      assert.equal(claimsOf(next)?.sub, me, `the successor is accepted: ${brief(next)}`);
    }],
    ['the successor of a refresh token presented twice (reuse)', 'revoked', async (me, pair) => {
      const r = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
      assert.equal(r.status, 200, show(r));
      const again = await rpc('extension_token_refresh', { p_refresh_token: pair.refresh_token });
      assert.equal(again.status, 401, `reuse: ${show(again)}`);
      pair.access_token = r.body.access_token; // the successor is what must now be refused
    }],
  ];
  const slipped = [];
  for (const [what, detail, kill] of kinds) {
    const me = newUser();
    const pair = await issueAs(me);
    const before = await send(BASE, { headers: [bearer(pair.access_token)] });
    assert.ok(ranAs(before, pair), `${what}: live before: ${brief(before)}`);
    await kill(me, pair);
    for (const s of await refusedEverywhere(BASE, pair.access_token, live, detail)) slipped.push(`${what}: ${s}`);
  }

  // Idle: a session whose inactivity timeout (2 s) was fixed at issue, in a
  // session of its own: PostgREST's sessions have none.
  const idleUser = newUser();
  const idle = JSON.parse(psql(`SET extension_tokens.session_inactivity_timeout = 2;
    SELECT row_to_json(p) FROM extension_token_issue(p_user_id => '${idleUser}') p`));
  const used = await send(BASE, { headers: [bearer(idle.access_token)] });
  assert.ok(ranAs(used, idle), `idle: live before: ${brief(used)}`);
  await sleep(3500);
  for (const s of await refusedEverywhere(BASE, idle.access_token, live, 'expired')) slipped.push(`idle-expired: ${s}`);

  assert.deepEqual(slipped, [], 'each must get 401 PT401 with the reason');
});

// ------------------------------------------------------------------------
// A settings change: old-issuer and old-audience tokens
// ------------------------------------------------------------------------

// ALTER SYSTEM + reload, then wait until the attack PostgREST's sessions
// apply it: validate (which checks iss and aud against the settings) of
// `probe` answers `error` there several times in a row.
async function changeSetting(name, value, probe, error) {
  if (value === null) psql(`ALTER SYSTEM RESET extension_tokens.${name}`);
  else psql(`ALTER SYSTEM SET extension_tokens.${name} = '${value}'`);
  psql('SELECT pg_reload_conf()');
  let streak = 0;
  const until = Date.now() + 10000;
  while (streak < 8) {
    assert.ok(Date.now() < until, `the attack PostgREST did not apply ${name} = ${value}`);
    const r = await rpc('extension_token_validate', { p_token: probe }, { base: ATTACK_BASE });
    streak = r.body?.error === error ? streak + 1 : 0;
    if (streak === 0) await sleep(100);
  }
}

// The attack PostgREST (no jwt-aud: it takes any aud, as Supabase's does)
// logs in as a role whose jwt_issuer / jwt_audience follow ALTER SYSTEM.
async function oldSettingAttack(name, value, error) {
  const victim = newUser();
  const revokedFirst = await issueAs(victim); // revoked before the change
  const liveUser = newUser();
  const liveOld = await issueAs(liveUser);
  const lateUser = newUser();
  const revokedLater = await issueAs(lateUser); // revoked after the change
  const other = await issueAs(newUser());
  await revokeByToken(victim, revokedFirst);
  const probe = (await issueAs(newUser())).access_token;

  await changeSetting(name, value, probe, error);
  try {
    const wrong = [];
    // A live token minted before the change: PostgREST accepts it, and the
    // pre-request still knows it for ours (its session decides).
    const r = await send(ATTACK_BASE, { headers: [bearer(liveOld.access_token)] });
    if (!ranAs(r, liveOld)) wrong.push(`a live token minted before the change -> ${brief(r)}`);
    for (const s of await refusedEverywhere(ATTACK_BASE, revokedFirst.access_token, other.access_token, 'revoked')) {
      wrong.push(`revoked before the change: ${s}`);
    }
    // Revoked now, by session id (the dashboard's way): the very next request.
    const rv = await rpc('extension_token_revoke_session', { p_session_id: revokedLater.session_id },
      { token: userJwt(lateUser), base: ATTACK_BASE });
    assert.equal(rv.body, true, show(rv));
    for (const s of await refusedEverywhere(ATTACK_BASE, revokedLater.access_token, other.access_token, 'revoked')) {
      wrong.push(`revoked after the change: ${s}`);
    }
    // A token minted after the change, then revoked: refused as well.
    const newUserId = newUser();
    const fresh = await rpc('extension_token_issue', {}, { token: userJwt(newUserId), base: ATTACK_BASE });
    assert.equal(fresh.status, 200, show(fresh));
    assert.equal(decodeJwt(fresh.body.access_token).payload[name === 'jwt_issuer' ? 'iss' : 'aud'], value);
    await revokeByToken(newUserId, fresh.body, ATTACK_BASE);
    for (const s of await refusedEverywhere(ATTACK_BASE, fresh.body.access_token, other.access_token, 'revoked')) {
      wrong.push(`minted after the change, revoked: ${s}`);
    }
    assert.deepEqual(wrong, [], `after ${name} changed, every token of ours is still checked`);
  } finally {
    await changeSetting(name, null, probe, null);
  }
}

// 1.1 took a token for ours only when its unverified iss equalled the
// current jwt_issuer: after the change every older token, revoked ones
// included, passed unchecked (HTTP 200), in every shape.
test('after jwt_issuer changes (ALTER SYSTEM + reload), tokens minted before are still checked: revoked ones refused, live ones allowed', async () => {
  await oldSettingAttack('jwt_issuer', 'extension_tokens-rotated', 'wrong_issuer');
});

// 1.1 validated recognised tokens against the current jwt_audience: after
// the change every older token, live ones included, was refused as
// "wrong_audience" when sent plainly (while PostgREST accepts them), and
// in the header shapes above a revoked one passed unchecked (HTTP 200).
test('after jwt_audience changes (ALTER SYSTEM + reload), tokens minted before are still checked: revoked ones refused, live ones allowed', async () => {
  await oldSettingAttack('jwt_audience', 'extension-rotated', 'wrong_audience');
});

// An add-in signing out presents its own access token to
// extension_token_revoke (RFC 7009).  After a settings change the token
// still passes PostgREST and the pre-request (above), so revoking by it must
// end its session too.  1.1: revoke refused the old token (false), and
// pre_request no longer recognised it: it stayed usable.
test('after jwt_issuer / jwt_audience change, revoking a token minted before by the token itself ends its session', async () => {
  const probe = (await issueAs(newUser())).access_token;
  const wrong = [];
  for (const [name, value, error] of [['jwt_issuer', 'extension_tokens-rotated', 'wrong_issuer'],
    ['jwt_audience', 'extension-rotated', 'wrong_audience']]) {
    const me = newUser();
    const pair = await issueAs(me);
    await changeSetting(name, value, probe, error);
    try {
      const rv = await rpc('extension_token_revoke', { p_token: pair.access_token }, { base: ATTACK_BASE });
      const r = await send(ATTACK_BASE, { headers: [bearer(pair.access_token)] });
      if (rv.body !== true || !refused(r, 'revoked')) {
        wrong.push(`${name} changed: revoke by the token -> ${show(rv)}; next request -> ${brief(r)}`);
      }
    } finally {
      await changeSetting(name, null, probe, null);
    }
  }
  assert.deepEqual(wrong, []);
});

// ------------------------------------------------------------------------
// Forged claims
// ------------------------------------------------------------------------

const authorityClaims = {
  role: 'service_role', scope: 'tokens:manage', aal: 'aal2', amr: [{ method: 'mfa', timestamp: 1 }],
  email: 'ceo@example.com', phone: '+15550100', app_metadata: { role: 'admin', provider: 'email' },
  user_metadata: { admin: true }, is_anonymous: false, email_verified: true, phone_verified: true,
  groups: ['admins'], permissions: ['*'], roles: ['admin'], org_id: 'org_1', org_role: 'owner',
};
const reservedClaims = {
  iss: 'x', sub: 'someone-else', aud: 'authenticated', exp: 4102444800, nbf: 0, iat: 0,
  jti: '00000000-0000-4000-8000-000000000000', type: 'access', session_id: '00000000-0000-4000-8000-000000000000',
};

// 1.1 refused only iss sub aud exp nbf iat jti type session_id role: a user
// put scope, aal, amr, email, app_metadata, ... into his own token (HTTP
// 200), and Supabase RLS policies read them through auth.jwt().
test('forged claims: a signed-in user cannot put any authorization-bearing or reserved claim into his token (HTTP 400, 22023)', async () => {
  const me = newUser();
  const jwt = userJwt(me, { aal: 'aal1', amr: [{ method: 'password', timestamp: 1 }],
    app_metadata: { provider: 'email' }, user_metadata: {}, phone: '', is_anonymous: false });
  const accepted = [];
  const tries = [...Object.entries({ ...authorityClaims, ...reservedClaims }).map(([k, v]) => ({ [k]: v })),
    { app_metadata: { role: 'admin' }, aal: 'aal2', email: 'ceo@example.com' }];
  for (const base of [BASE, ATTACK_BASE]) { // without, and with, an allow-list (user_claims = department)
    for (const claims of tries) {
      const r = await rpc('extension_token_issue', { p_claims: claims }, { token: jwt, base });
      if (!(r.status === 400 && r.body?.code === '22023')) {
        accepted.push(`${JSON.stringify(claims)}${base === ATTACK_BASE ? ' (with user_claims)' : ''} -> ${show(r).slice(0, 300)}`);
      }
    }
  }
  // The same through supabase-js, the dashboard's client.
  const { error, status } = await supabase(jwt).rpc('extension_token_issue',
    { p_claims: { app_metadata: { role: 'admin' }, aal: 'aal2' } });
  if (!(status === 400 && error?.code === '22023')) accepted.push(`supabase-js -> ${status} ${JSON.stringify(error)}`);
  assert.deepEqual(accepted, [], 'every one must be refused');

  // Nothing was issued by the refused calls; a plain issue carries none of
  // them, although the user's own JWT does (aal, amr, email, ...).
  const list = await rpc('extension_token_list', {}, { token: jwt });
  assert.deepEqual(list.body, [], `no session from a refused issue: ${show(list)}`);
  const pair = await issueAs(me);
  const { payload } = decodeJwt(pair.access_token);
  const carried = Object.keys(authorityClaims).filter((k) => k in payload && !(k === 'role' && payload.role === 'authenticated'));
  assert.deepEqual(carried, [], `the issued token carries ${JSON.stringify(payload)}`);
  assert.deepEqual(Object.keys(payload).sort(), ['aud', 'exp', 'iat', 'iss', 'jti', 'role', 'session_id', 'sub', 'type']);
  const who = await send(BASE, { headers: [bearer(pair.access_token)] });
  assert.equal(claimsOf(who)?.sub, me, brief(who));
  for (const k of Object.keys(authorityClaims)) {
    if (k !== 'role') assert.equal(who.body[k], undefined, `request.jwt.claims carries ${k}: ${brief(who)}`);
  }
  assert.equal(who.body.role, 'authenticated');
});

// 1.1 had no allow-list: every claim but the reserved ten was accepted from
// anyone; an administrator could also write scope.
test('the user_claims allow-list: a user sets only the listed claims, never an authority one; an administrator any but the reserved', async () => {
  // user_claims = 'department' for the attack PostgREST's sessions only.
  const me = newUser();
  const ok = await rpc('extension_token_issue', { p_claims: { department: 'sales' } }, { token: userJwt(me), base: ATTACK_BASE });
  assert.equal(ok.status, 200, show(ok));
  assert.equal(decodeJwt(ok.body.access_token).payload.department, 'sales');
  const mixed = await rpc('extension_token_issue', { p_claims: { department: 'sales', aal: 'aal2' } },
    { token: userJwt(newUser()), base: ATTACK_BASE });
  assert.equal(mixed.status, 400, show(mixed));
  assert.equal(mixed.body.code, '22023');
  // Not listed where user_claims is empty (the main PostgREST).
  const unlisted = await rpc('extension_token_issue', { p_claims: { department: 'sales' } }, { token: userJwt(newUser()) });
  assert.equal(unlisted.status, 400, show(unlisted));
  assert.equal(unlisted.body.code, '22023');
  // No administrator can list an authority claim (in a transaction that
  // is rolled back, should the check let it through).
  for (const name of ['aal', 'role', 'scope', 'app_metadata', 'email', 'session_id']) {
    for (const sql of [`SET extension_tokens.user_claims = 'department, ${name}'`,
      `BEGIN; ALTER ROLE authenticator_attack SET extension_tokens.user_claims = 'department, ${name}'; ROLLBACK`]) {
      assert.match(psqlError(sql), /invalid value for parameter "extension_tokens.user_claims"/,
        `user_claims took ${name}: ${sql}`);
    }
  }
  // An administrator (the service role) may set authority claims, never reserved ones.
  const admin = await rpc('extension_token_issue', { p_user_id: newUser(), p_claims: { aal: 'aal2', email: 'a@b.c' } },
    { token: SERVICE_KEY });
  assert.equal(admin.status, 200, show(admin));
  assert.equal(decodeJwt(admin.body.access_token).payload.aal, 'aal2');
  for (const claims of [{ scope: 'tokens:manage' }, { role: 'service_role' }, { session_id: '00000000-0000-4000-8000-000000000000' }, { type: 'id' }]) {
    const r = await rpc('extension_token_issue', { p_user_id: newUser(), p_claims: claims }, { token: SERVICE_KEY });
    assert.equal(r.status, 400, `admin ${JSON.stringify(claims)}: ${show(r)}`);
    assert.equal(r.body.code, '22023');
  }
});

// ------------------------------------------------------------------------
// A native token calling issue
// ------------------------------------------------------------------------

// 1.1: issue believed any authenticated caller: a stolen add-in token as
// PostgREST's bearer got a new, independent pair (HTTP 200) that survived
// the revocation of the stolen one.
test('a native token (ours, as bearer) cannot issue: HTTP 403 42501, raw, through supabase-js, and in duplicate headers', async () => {
  const me = newUser();
  const pair = await issueAs(me);
  const t = pair.access_token;
  const wrong = [];
  const expect403 = (what, r) => {
    if (!(r.status === 403 && r.body?.code === '42501')) wrong.push(`${what} -> ${brief(r)}`);
  };
  expect403('POST /rpc/extension_token_issue', await rpc('extension_token_issue', {}, { token: t }));
  expect403('for himself by id', await rpc('extension_token_issue', { p_user_id: me, p_name: 'x' }, { token: t }));
  expect403('for someone else', await rpc('extension_token_issue', { p_user_id: newUser() }, { token: t }));
  expect403('with a lifetime', await rpc('extension_token_issue', { p_lifetime: '1 hour' }, { token: t }));
  expect403('on the attack PostgREST', await rpc('extension_token_issue', {}, { token: t, base: ATTACK_BASE }));
  expect403('then a Supabase JWT of the same user', await send(BASE, {
    method: 'POST', path: '/rpc/extension_token_issue', headers: [bearer(t), bearer(userJwt(me))], body: {},
  }));
  expect403('lower-case, vertical tab', await send(BASE, {
    method: 'POST', path: '/rpc/extension_token_issue', headers: [`authorization: bearer\x0b${t}`], body: {},
  }));
  const { data, error, status } = await supabase(t).rpc('extension_token_issue', {});
  if (!(status === 403 && error?.code === '42501' && data === null)) {
    wrong.push(`supabase-js -> ${status} ${JSON.stringify(error)} ${JSON.stringify(data)}`);
  }
  assert.deepEqual(wrong, [], 'every attempt must be refused');

  // Nothing was minted: the user has the one session, and once it is
  // revoked nothing of his is left.
  const list = await rpc('extension_token_list', {}, { token: userJwt(me) });
  assert.deepEqual(list.body.map((s) => s.session_id), [pair.session_id], show(list));
  await revokeByToken(me, pair);
  const live = psql(`SELECT count(*) FROM extension_token_sessions WHERE user_id = '${me}' AND revoked_at IS NULL`);
  assert.equal(live, '0');
  const v = await validate(t);
  assert.equal(v.error, 'revoked');
});
