// PostgREST through PgBouncer in transaction pooling mode (test/pgbouncer.sh):
// many clients share two server connections, so one backend's caches and
// settings serve many users one transaction after another.  What must hold:
// every answer is the asker's own (no identity, claim or cached verdict of
// one client reaches another), a revocation made through any client counts
// on the very next request of every other client, whichever server
// connection serves it, and the caches still save work.  Then what
// PostgREST's prepared statements do through this PgBouncer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE, SERVICE_KEY, call, newUser, psql, rpc, show, userJwt,
} from './helpers.mjs';

const POOL_SIZE = Number(process.env.ET_PGBOUNCER_POOL_SIZE);
const PREPARED_BASE = process.env.ET_POSTGREST_PREPARED_URL;
const PREPARED_READY = process.env.ET_POSTGREST_PREPARED_READY === '1';
const PGBOUNCER_VERSION = process.env.ET_PGBOUNCER_VERSION ?? '';
if (!POOL_SIZE || !PREPARED_BASE) {
  throw new Error('ET_PGBOUNCER_POOL_SIZE and ET_POSTGREST_PREPARED_URL: run this file through test/pgbouncer.sh');
}

const whoami = (token, base = BASE) => call('/rpc/whoami', { method: 'GET', token, base });
const stats = () => JSON.parse(psql('SELECT row_to_json(s) FROM extension_token_stats() s'));
// Server connections (backends) of one login role: what PgBouncer opened.
const backends = (role) => Number(psql(
  `SELECT count(*) FROM pg_stat_activity WHERE usename = '${role}' AND backend_type = 'client backend'`));

// n pairs of n users, issued by a backend with the service_role key.
async function pairs(n) {
  return Promise.all(Array.from({ length: n }, async () => {
    const user = newUser();
    const r = await rpc('extension_token_issue', { p_user_id: user }, { token: SERVICE_KEY });
    assert.equal(r.status, 200, show(r));
    return { user, ...r.body };
  }));
}

const shuffled = (xs) => xs.map((x) => [Math.random(), x]).sort((a, b) => a[0] - b[0]).map((p) => p[1]);

test('many clients over two server connections: every validation answers for its own token, and the shared cache serves most', async () => {
  const ps = await pairs(40);
  const before = stats();
  const jobs = shuffled(ps.flatMap((p) => Array.from({ length: 5 }, () => p)));
  const answers = await Promise.all(jobs.map(async (p) => ({
    p, r: await rpc('extension_token_validate', { p_token: p.access_token }),
  })));
  const wrong = answers.filter(({ p, r }) => !(r.status === 200 && r.body.valid === true &&
    r.body.user_id === p.user && r.body.session_id === p.session_id));
  assert.deepEqual(wrong.map(({ r }) => show(r)), [], 'every answer is the asker\'s own');
  const after = stats();
  const cached = after.validations_cached - before.validations_cached;
  const n = jobs.length;
  // Each server connection verifies a token once, then answers from its
  // cache (still reading the session row): at most 2 x 40 first sights.
  assert.ok(cached >= n - POOL_SIZE * ps.length,
    `${cached} of ${n} validations from the per-backend cache (at least ${n - POOL_SIZE * ps.length} expected)`);
  const servers = backends('authenticator');
  assert.ok(servers >= 1 && servers <= POOL_SIZE, `${servers} server connections for PostgREST's role`);
  console.log(`# ${n} validations of ${ps.length} tokens through ${servers} server connections: ` +
    `${cached} answered from the per-backend cache`);
});

test('a revocation through one client counts on the very next request of every other client, on every server connection', async () => {
  const ps = await pairs(30);
  // Warm every server connection's cache with every token.
  await Promise.all(ps.flatMap((p) => Array.from({ length: 4 }, () =>
    rpc('extension_token_validate', { p_token: p.access_token }))));
  const revoked = ps.slice(0, 15);
  const kept = ps.slice(15);
  const slipped = [];
  await Promise.all(revoked.map(async (p, i) => {
    // half by the token itself (anon), half by the user's dashboard session
    const rv = i % 2
      ? await rpc('extension_token_revoke', { p_token: p.access_token })
      : await rpc('revoke_user_extension_tokens', {}, { token: userJwt(p.user) });
    assert.equal(rv.status, 200, show(rv));
    assert.ok(rv.body === true || rv.body === 1, show(rv));
    // Right after: several clients at once, so that both server connections answer.
    const after = await Promise.all([
      ...Array.from({ length: 4 }, () => rpc('extension_token_validate', { p_token: p.access_token })),
      ...Array.from({ length: 4 }, () => whoami(p.access_token)),
      rpc('extension_token_refresh', { p_refresh_token: p.refresh_token }),
    ]);
    for (const r of after.slice(0, 4)) {
      if (!(r.status === 200 && r.body.valid === false && r.body.error === 'revoked')) slipped.push(`validate: ${show(r)}`);
    }
    for (const r of after.slice(4, 8)) {
      if (!(r.status === 401 && r.body.code === 'PT401')) slipped.push(`pre-request: ${show(r)}`);
    }
    const rf = after[8];
    if (!(rf.status === 401 && rf.body.details === 'session_revoked')) slipped.push(`refresh: ${show(rf)}`);
  }));
  assert.deepEqual(slipped, [], 'no token of a revoked session passes anywhere');
  const live = await Promise.all(kept.map((p) => whoami(p.access_token)));
  live.forEach((r, i) => {
    assert.equal(r.status, 200, show(r));
    assert.equal(r.body.sub, kept[i].user);
  });
});

test('identities set with set_config(..., true) stay in their transaction: interleaved users each see only themselves', async () => {
  const ps = await pairs(24);
  const jobs = shuffled(ps.flatMap((p) => [
    ...Array.from({ length: 3 }, () => ['whoami', p]),
    ...Array.from({ length: 2 }, () => ['list', p]),
    ['list-jwt', p],
  ]));
  const bad = [];
  await Promise.all(jobs.map(async ([kind, p]) => {
    if (kind === 'whoami') {
      const r = await whoami(p.access_token);
      if (!(r.status === 200 && r.body.sub === p.user && r.body.session_id === p.session_id)) {
        bad.push(`whoami as ${p.user}: ${show(r)}`);
      }
    } else {
      const token = kind === 'list' ? p.access_token : userJwt(p.user);
      const r = await rpc('extension_token_list', {}, { token });
      const ids = r.status === 200 ? r.body.map((s) => s.session_id) : null;
      if (!(ids && ids.length === 1 && ids[0] === p.session_id && r.body[0].user_id === p.user)) {
        bad.push(`list as ${p.user}: ${show(r)}`);
      }
    }
  }));
  assert.deepEqual(bad, []);
  // And an anonymous request after all of that is anonymous.
  const anon = await whoami(undefined);
  assert.equal(anon.status, 200, show(anon));
  assert.equal(anon.body.role, 'anon', show(anon));
  assert.equal(anon.body.sub, undefined, show(anon));
});

test('API keys and the pre-request gate through the pool: each key sees its owner, a revoked key is refused at once', async () => {
  const users = Array.from({ length: 12 }, newUser);
  psql(`INSERT INTO public.orders (owner, item) VALUES ${users.map((u, i) => `('${u}', 'pool-${i}')`).join(', ')}`);
  const keys = await Promise.all(users.map(async (u) => {
    const r = await rpc('extension_token_api_key_create', { p_scopes: ['orders:read'] }, { token: userJwt(u) });
    assert.equal(r.status, 200, show(r));
    return r.body;
  }));
  const get = (key) => fetch(`${BASE}/orders`, { headers: { Accept: 'application/json', 'x-api-key': key } })
    .then(async (res) => ({ status: res.status, body: await res.json() }));
  const rounds = await Promise.all(shuffled(keys.flatMap((k, i) => [[k, i], [k, i], [k, i]]))
    .map(async ([k, i]) => ({ i, r: await get(k.api_key) })));
  for (const { i, r } of rounds) {
    assert.equal(r.status, 200, show(r));
    assert.deepEqual(r.body.map((o) => o.item), [`pool-${i}`], 'the key\'s owner\'s row and no other');
  }
  const rv = await rpc('extension_token_revoke_session', { p_session_id: keys[0].key_id },
    { token: userJwt(users[0]) });
  assert.equal(rv.body, true, show(rv));
  const after = await Promise.all(Array.from({ length: 6 }, () => get(keys[0].api_key)));
  for (const r of after) assert.equal(r.status, 401, show(r));
  assert.equal((await get(keys[1].api_key)).status, 200);
});

// PostgREST's db-prepared-statements = true through this PgBouncer.  PgBouncer
// before 1.21 does not follow protocol-level prepared statements across
// server connections in transaction mode (1.21 added max_prepared_statements;
// 1.22 turned it on by default), so a statement PostgREST prepared on one
// server connection may be missing (26000) or taken (42P05) on the next: with
// 1.18, PostgREST 12 cannot even load its schema cache and answers 503 to
// everything.  What must never happen is a wrong answer: another user's
// identity, or a revoked token let through.
test('PostgREST with db-prepared-statements = true: requests may fail on an old PgBouncer, but never get a wrong answer', async () => {
  const ps = await pairs(20);
  const revoked = ps.slice(0, 5);
  for (const p of revoked) {
    const rv = await rpc('extension_token_revoke', { p_token: p.access_token });
    assert.equal(rv.body, true, show(rv));
  }
  const jobs = shuffled(ps.flatMap((p) => [['validate', p], ['whoami', p], ['validate', p], ['whoami', p],
    ['list', p]]));
  const wrong = [];
  const failures = {};
  let ok = 0;
  const fail = (r) => {
    const code = r.body?.code ?? r.status;
    const key = `HTTP ${r.status} ${code}: ${String(r.body?.message ?? '').replace(/"[^"]*"/g, '"…"')}`;
    failures[key] = (failures[key] ?? 0) + 1;
  };
  const dead = new Set(revoked.map((p) => p.session_id));
  // A PostgREST that gave up (its process restarting) refuses the connection.
  const guarded = (fn) => async (job) => {
    try {
      await fn(job);
    } catch (e) {
      fail({ status: 0, body: { code: 'no connection', message: String(e.cause?.code ?? e.message) } });
    }
  };
  for (let round = 0; round < 3; round++) {
    await Promise.all(jobs.map(guarded(async ([kind, p]) => {
      if (kind === 'validate') {
        const r = await rpc('extension_token_validate', { p_token: p.access_token }, { base: PREPARED_BASE });
        if (r.status !== 200) return fail(r);
        const right = dead.has(p.session_id)
          ? r.body.valid === false && r.body.error === 'revoked'
          : r.body.valid === true && r.body.user_id === p.user;
        if (!right) wrong.push(`validate ${p.user}: ${show(r)}`); else ok++;
      } else if (kind === 'whoami') {
        const r = await whoami(p.access_token, PREPARED_BASE);
        if (dead.has(p.session_id)) {
          if (r.status === 200) wrong.push(`revoked token passed: ${show(r)}`);
          else if (r.status === 401 && r.body.code === 'PT401') ok++;
          else fail(r);
        } else if (r.status !== 200) fail(r);
        else if (r.body.sub !== p.user) wrong.push(`whoami ${p.user}: ${show(r)}`);
        else ok++;
      } else {
        const r = await call('/rpc/extension_token_list', { token: p.access_token, base: PREPARED_BASE });
        if (dead.has(p.session_id)) {
          if (r.status === 200) wrong.push(`revoked token listed: ${show(r)}`);
          else if (r.status === 401) ok++;
          else fail(r);
        } else if (r.status !== 200) fail(r);
        else if (r.body.some((s) => s.user_id !== p.user)) wrong.push(`list ${p.user}: ${show(r)}`);
        else ok++;
      }
    })));
  }
  const failed = Object.values(failures).reduce((a, b) => a + b, 0);
  console.log(`# PgBouncer ${PGBOUNCER_VERSION}, db-prepared-statements = true ` +
    `(PostgREST ${PREPARED_READY ? 'started' : 'never loaded its schema cache'}): ${ok} right answers, ` +
    `${failed} failed requests, ${wrong.length} wrong answers`);
  for (const [k, v] of Object.entries(failures)) console.log(`#   ${v} x ${k}`);
  assert.deepEqual(wrong, [], 'no wrong answer, whatever the pooler does to prepared statements');
  const [major, minor] = PGBOUNCER_VERSION.split('.').map(Number);
  if (major > 1 || minor >= 22) {
    assert.ok(PREPARED_READY, 'PostgREST starts with prepared statements through PgBouncer 1.22+');
    assert.equal(failed, 0, 'PgBouncer 1.22+ follows prepared statements (max_prepared_statements)');
  }
});
