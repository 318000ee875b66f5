// asymmetric.es256.mjs: ES256 and EdDSA tokens, the public JWK Set, a real
// PostgREST 12.0.2 whose jwt-secret is that JWK Set (no shared secret), and
// npm jose as the independent verifier and forger.  Run by ../postgrest.sh
// after the HS256 suite, against the same cluster reconfigured (see there):
//   ET_ES_URL1   PostgREST with the JWK Set of key es1
//   ET_ES_URL12  PostgREST with the JWK Set of es2 (current) and es1 (previous)
//   ET_ES_URL2   PostgREST with the JWK Set of es2
//   ET_KEY_DIR   es1.pem, es2.pem, ed1.pem (made with openssl, mode 0600)
// Not named *.test.mjs: the HS256 suite must not pick it up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import * as jose from 'jose';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL1 = need('ET_ES_URL1');
const URL12 = need('ET_ES_URL12');
const URL2 = need('ET_ES_URL2');
const KEY_DIR = need('ET_KEY_DIR');
const ISSUER = 'extension_tokens';
const AUDIENCE = 'extension';

function psql(sql) {
  const r = spawnSync('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1'], { input: sql, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  return r.stdout.trim();
}
const lit = (s) => `'${s.replaceAll("'", "''")}'`;

// The RFC 7638 thumbprint of a key file's public key, computed by jose.
const kidOf = (file) =>
  jose.calculateJwkThumbprint(createPublicKey(createPrivateKey(readFileSync(`${KEY_DIR}/${file}`))).export({ format: 'jwk' }), 'sha256');

// Sets the algorithm and key files, reloads, and waits until every backend
// would see them: the JWK Set holds exactly these keys' ids, in this order.
async function configure(alg, current, previous) {
  const want = [await kidOf(current), ...(previous ? [await kidOf(previous)] : [])].join(' ');
  psql(`ALTER SYSTEM SET extension_tokens.signing_algorithm = '${alg}';
        ALTER SYSTEM SET extension_tokens.signing_key_file = '${KEY_DIR}/${current}';
        ${previous ? `ALTER SYSTEM SET extension_tokens.signing_key_previous_file = '${KEY_DIR}/${previous}';`
    : 'ALTER SYSTEM RESET extension_tokens.signing_key_previous_file;'}
        SELECT pg_reload_conf();`);
  for (let i = 0; i < 100; i++) {
    const keys = jwks().keys;
    if (keys.map((k) => k.kid).join(' ') === want && keys[0].alg === alg) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`configuration ${alg} ${current} ${previous} not in force`);
}
const jwks = () => JSON.parse(psql('SELECT extension_token_jwks();'));
const issue = (user) => psql(`SET extension_tokens.issue_rate_limit = 0;
  SET extension_tokens.max_sessions_per_user = 0;
  SELECT access_token FROM extension_token_issue(${lit(user)});`);
const validate = (token) => JSON.parse(psql(`SELECT row_to_json(v) FROM extension_token_validate(${lit(token)}) v;`));
const revoke = (token) => psql(`SELECT extension_token_revoke(${lit(token)});`);

async function whoami(base, token) {
  const r = await fetch(`${base}/rpc/whoami`, { headers: { Authorization: `Bearer ${token}` } });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, body };
}

const joseVerify = (token, set, alg) =>
  jose.jwtVerify(token, jose.createLocalJWKSet(set), { issuer: ISSUER, audience: AUDIENCE, algorithms: [alg] });

const claims = (sub) => ({
  sub, session_id: crypto.randomUUID(), jti: crypto.randomUUID(), type: 'access', role: 'authenticated',
});
const forge = (sub, alg, key, header = {}) =>
  new jose.SignJWT(claims(sub)).setProtectedHeader({ alg, typ: 'JWT', ...header })
    .setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt().setExpirationTime('1h').sign(key);

const state = {};

test('ES256: PostgREST publishes the JWK Set to anyone with a GET, as the database returns it', async () => {
  await configure('ES256', 'es1.pem');
  const r = await fetch(`${URL1}/rpc/extension_token_jwks`);
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.deepEqual(body, jwks());
  assert.equal(body.keys.length, 1);
  assert.equal(body.keys[0].kty, 'EC');
  assert.ok(!('d' in body.keys[0]), 'no private member');
  // the kid is the RFC 7638 thumbprint, as jose computes it
  assert.equal(body.keys[0].kid, await jose.calculateJwkThumbprint(body.keys[0], 'sha256'));
});

test('ES256: jose verifies our token with only the JWK Set; PostgREST accepts it, then refuses it once revoked', async () => {
  const user = `es-${crypto.randomUUID()}`;
  const token = issue(user);
  const { payload, protectedHeader } = await joseVerify(token, jwks(), 'ES256');
  assert.equal(payload.sub, user);
  assert.equal(protectedHeader.alg, 'ES256');
  let r = await whoami(URL1, token);
  assert.equal(r.status, 200, `${JSON.stringify(r.body)} kid ${protectedHeader.kid}`);
  assert.equal(r.body.sub, user);
  assert.equal(revoke(token), 't');
  r = await whoami(URL1, token);
  assert.equal(r.status, 401, JSON.stringify(r.body));
});

test('ES256: tokens jose signs with another key, another algorithm, HS256 keyed with our public key, or altered claims are refused with the right error', async () => {
  const user = `es-${crypto.randomUUID()}`;
  const token = issue(user);
  const set = jwks();
  const kid = set.keys[0].kid;

  const other = await jose.generateKeyPair('ES256', { extractable: true });
  const wrongKey = await forge(user, 'ES256', other.privateKey, { kid });
  assert.equal(validate(wrongKey).error, 'invalid_signature');
  assert.equal((await whoami(URL1, wrongKey)).status, 401, 'PostgREST refuses it too');

  const ed = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  assert.equal(validate(await forge(user, 'EdDSA', ed.privateKey, { kid })).error, 'unsupported_algorithm');
  const p384 = await jose.generateKeyPair('ES384');
  assert.equal(validate(await forge(user, 'ES384', p384.privateKey, { kid })).error, 'unsupported_algorithm');

  const publicPem = createPublicKey(createPrivateKey(readFileSync(`${KEY_DIR}/es1.pem`)))
    .export({ type: 'spki', format: 'pem' });
  for (const secret of [publicPem, JSON.stringify(set.keys[0]), JSON.stringify(set)]) {
    const hs = await forge(user, 'HS256', new TextEncoder().encode(secret), { kid });
    assert.equal(validate(hs).error, 'unsupported_algorithm');
  }

  const [h, p, s] = token.split('.');
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  payload.sub = 'mallory';
  const altered = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
  assert.equal(validate(altered).error, 'invalid_signature');
  assert.equal((await whoami(URL1, altered)).status, 401);

  // signed by jose with our own key but never issued: the signature passes, the allow-list does not
  const own = await forge(user, 'ES256', createPrivateKey(readFileSync(`${KEY_DIR}/es1.pem`)), { kid });
  const verdict = validate(own).error;
  // jose does not normalize S: half of its signatures are in the high-S form, which ours refuses
  assert.ok(verdict === 'not_found' || verdict === 'invalid_signature', verdict);
  state.es1Token = issue(`es-rot-${crypto.randomUUID()}`);
});

test('EdDSA: jose verifies our token with only the JWK Set and forgeries are refused', async () => {
  await configure('EdDSA', 'ed1.pem');
  const user = `ed-${crypto.randomUUID()}`;
  const token = issue(user);
  const set = jwks();
  assert.equal(set.keys[0].kty, 'OKP');
  assert.equal(set.keys[0].kid, await jose.calculateJwkThumbprint(set.keys[0], 'sha256'));
  const { payload, protectedHeader } = await joseVerify(token, set, 'EdDSA');
  assert.equal(payload.sub, user);
  assert.equal(protectedHeader.alg, 'EdDSA');
  const kid = set.keys[0].kid;
  const other = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519' });
  assert.equal(validate(await forge(user, 'EdDSA', other.privateKey, { kid })).error, 'invalid_signature');
  const es = await jose.generateKeyPair('ES256');
  assert.equal(validate(await forge(user, 'ES256', es.privateKey, { kid })).error, 'unsupported_algorithm');
  const own = await forge(user, 'EdDSA', createPrivateKey(readFileSync(`${KEY_DIR}/ed1.pem`)), { kid });
  assert.equal(validate(own).error, 'not_found');
  // an ES256 token of before is refused: exactly the configured algorithm
  assert.equal(validate(state.es1Token).error, 'unsupported_algorithm');
});

test('rotation with overlap: PostgREST and jose accept tokens of the old and the new key from one JWK Set; then only the new', async () => {
  await configure('ES256', 'es2.pem', 'es1.pem');
  const set = jwks();
  assert.equal(set.keys.length, 2);
  const r0 = await fetch(`${URL12}/rpc/extension_token_jwks`);
  assert.deepEqual(await r0.json(), set, 'the PostgREST started with this JWK Set serves the same');
  const oldToken = state.es1Token;
  const user = `es-rot2-${crypto.randomUUID()}`;
  const newToken = issue(user);
  assert.notEqual(jose.decodeProtectedHeader(oldToken).kid, jose.decodeProtectedHeader(newToken).kid);
  for (const t of [oldToken, newToken]) {
    await joseVerify(t, set, 'ES256');
    assert.equal(validate(t).valid, true);
    const r = await whoami(URL12, t);
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  // A PostgREST still on the old JWK Set does not know the new key: publish first, then sign.
  assert.equal((await whoami(URL1, newToken)).status, 401);
  const keys = psql("SELECT string_agg(status || ':' || live_sessions, ',' ORDER BY status) FROM extension_tokens_signing_keys() WHERE status <> 'retired';");
  assert.match(keys, /^current:[1-9]\d*,previous:[1-9]\d*$/);

  // Rotation done: the previous key removed.
  await configure('ES256', 'es2.pem');
  assert.equal(validate(oldToken).error, 'invalid_signature');
  await assert.rejects(joseVerify(oldToken, jwks(), 'ES256'));
  assert.equal((await whoami(URL2, oldToken)).status, 401);
  assert.equal((await whoami(URL2, newToken)).status, 200);
  // and revocation still goes through the pre-request
  assert.equal(revoke(newToken), 't');
  assert.equal((await whoami(URL2, newToken)).status, 401);
});
