// Shared by the client tests: the PostgRESTs that test/clients.sh started, JWTs
// minted as Supabase Auth mints them (HS256 with the shared secret), raw calls
// for what the dashboard does, and the server's own count of refreshes.
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

export const SERVER = process.env.ET_CLIENTS_URL !== undefined;
function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through test/clients.sh`);
  return v;
}
export const BASE = () => env('ET_CLIENTS_URL');                 // refresh_retry_window = 0
export const RETRY_BASE = () => env('ET_CLIENTS_RETRY_URL');     // refresh_retry_window = 30 s
export const RATELIMIT_BASE = () => env('ET_CLIENTS_RATELIMIT_URL'); // refresh_rate_limit = 2
export const DEVICE = process.env.ET_DEVICE === '1';
const SECRET = () => env('ET_JWT_SECRET');

export const newUser = () => `user_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

export function signJwt(payload, header = { alg: 'HS256', typ: 'JWT' }) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', SECRET()).update(input).digest('base64url')}`;
}

export function decodeJwt(token) {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString()),
  };
}

/** The access token with its claims changed (re-signed with the secret, same header):
 *  what a client holds when its clock or its record is wrong about the expiry. */
export function withClaims(token, change) {
  const { header, payload } = decodeJwt(token);
  return signJwt({ ...payload, ...change }, header);
}

export const userJwt = (sub) => signJwt({
  aud: 'authenticated', iss: 'supabase-test', sub, role: 'authenticated', iat: now(), exp: now() + 3600,
});
export const anonKey = () => signJwt({ iss: 'supabase-test', role: 'anon', iat: now(), exp: now() + 86400 });
export const serviceKey = () => signJwt({ iss: 'supabase-test', role: 'service_role', iat: now(), exp: now() + 86400 });

/** A raw PostgREST call: {status, body, headers}. */
export async function call(base, fn, args = {}, token) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${base}/rpc/${fn}`, { method: 'POST', headers, body: JSON.stringify(args) });
  const text = await res.text();
  let body = text;
  try { body = text === '' ? null : JSON.parse(text); } catch { /* keep text */ }
  return { status: res.status, body, headers: res.headers };
}

/** The dashboard issues a pair for `sub` (signed in with Supabase Auth). */
export async function issue(base, sub, args = {}) {
  const r = await call(base, 'extension_token_issue', { p_name: 'add-in', ...args }, userJwt(sub));
  if (r.status !== 200) throw new Error(`issue: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** The session's row as the server's list shows it (status, refresh_count, ...). */
export async function sessionRow(base, sub, sessionId) {
  const r = await call(base, 'extension_token_list', { p_user_id: sub }, serviceKey());
  if (r.status !== 200) throw new Error(`list: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.find((s) => s.session_id === sessionId);
}

export async function validate(base, token) {
  const r = await call(base, 'extension_token_validate', { p_token: token }, anonKey());
  return r.body;
}

/** fetch that records every request (url, method, headers, body) and can interfere. */
export function recordingFetch({ before, after } = {}) {
  const calls = [];
  const f = async (input, init = {}) => {
    const url = String(input instanceof Request ? input.url : input);
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    const entry = { url, method: init.method ?? 'GET', headers, body: init.body ?? null };
    calls.push(entry);
    if (before) await before(entry);
    const res = await fetch(input, init);
    return after ? after(entry, res) : res;
  };
  f.calls = calls;
  f.refreshes = () => calls.filter((c) => c.url.includes('/rpc/extension_token_refresh'));
  return f;
}

export const tempDir = (name) => mkdtempSync(join(process.env.ET_CLIENTS_TMP ?? tmpdir(), `${name}-`));

/** @supabase/supabase-js from test/postgrest's node_modules, as test/postgrest.sh installs it. */
export async function supabaseClient(base, key, { fetch: f = fetch } = {}) {
  const require = createRequire(join(env('ET_SUPABASE_JS'), 'package.json'));
  const { createClient } = await import(pathToFileURL(require.resolve('@supabase/supabase-js')).href);
  // supabase-js talks to <url>/rest/v1; this PostgREST serves at the root.
  const restFetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input).replace(`${base}/rest/v1/`, `${base}/`);
    return f(url, init);
  };
  return createClient(base, key, {
    global: { fetch: restFetch },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

export const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
