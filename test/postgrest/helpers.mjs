// Shared by the *.test.mjs files: configuration from test/postgrest.sh,
// JWTs minted as Supabase Auth mints them (HS256 with the shared secret),
// raw PostgREST calls, supabase-js clients, and psql for what only a
// superuser can see.
import { createHmac, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createClient } from '@supabase/supabase-js';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through test/postgrest.sh`);
  return v;
}

export const BASE = need('ET_POSTGREST_URL');   // PostgREST, e.g. http://127.0.0.1:4321
export const AUD_BASE = need('ET_POSTGREST_AUD_URL'); // the same, with jwt-aud = "extension"
// The same again, logged in as a role with extension_tokens.refresh_retry_window
// = 30 s (the others have 0: every re-presented refresh token is reuse).
export const RETRY_BASE = need('ET_POSTGREST_RETRY_URL');
export const SECRET = need('ET_JWT_SECRET');    // jwt-secret = extension_tokens.jwt_secret
export const PRE_REQUEST = process.env.ET_PRE_REQUEST === '1';
export const ISSUER = 'extension_tokens';        // extension_tokens.jwt_issuer (default)
export const AUDIENCE = 'extension';             // extension_tokens.jwt_audience (default)

export const newUser = () => randomUUID();

const b64url = (buf) => Buffer.from(buf).toString('base64url');

export function signJwt(payload, header = { alg: 'HS256', typ: 'JWT' }, secret = SECRET) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

export function decodeJwt(token) {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString()),
  };
}

const now = () => Math.floor(Date.now() / 1000);

// A Supabase Auth access token of a signed-in user.
export function userJwt(sub, extra = {}) {
  const iat = now();
  return signJwt({
    aud: 'authenticated', iss: 'supabase-test', sub, role: 'authenticated',
    email: `${sub}@example.test`, iat, exp: iat + 3600, ...extra,
  });
}

// The project's anon and service_role API keys.
export const ANON_KEY = signJwt({ iss: 'supabase-test', role: 'anon', iat: now(), exp: now() + 86400 });
export const SERVICE_KEY = signJwt({ iss: 'supabase-test', role: 'service_role', iat: now(), exp: now() + 86400 });

// A raw call to PostgREST: { status, body, headers }.  `token` becomes the
// bearer token (none: anonymous), `authorization` the whole header instead.
// GET passes args in the query string.
export async function call(path, { method = 'POST', args = {}, token, authorization, base = BASE } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (authorization) headers.Authorization = authorization;
  let url = `${base}${path}`;
  let body;
  if (method === 'GET') {
    const q = new URLSearchParams(args).toString();
    if (q) url += `?${q}`;
  } else {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(args);
  }
  const res = await fetch(url, { method, headers, body });
  const text = await res.text();
  let parsed = text;
  try { parsed = text === '' ? null : JSON.parse(text); } catch { /* keep text */ }
  return { status: res.status, body: parsed, headers: res.headers };
}

export const rpc = (fn, args = {}, opts = {}) => call(`/rpc/${fn}`, { ...opts, args });

// A supabase-js client as a browser or backend makes it, with `token` as the
// bearer token.  supabase-js talks to <url>/rest/v1; this PostgREST serves at
// the root, so its fetch drops that prefix (nothing else changes).
export function supabase(token = ANON_KEY) {
  const restFetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input)
      .replace(`${BASE}/rest/v1/`, `${BASE}/`);
    return fetch(input instanceof Request ? new Request(url, input) : url, init);
  };
  return createClient(BASE, ANON_KEY, {
    global: { headers: { Authorization: `Bearer ${token}` }, fetch: restFetch },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

// Issue a pair as `sub` (a signed-in user) through PostgREST; asserts 200.
export async function issueAs(sub, args = {}) {
  const r = await rpc('extension_token_issue', args, { token: userJwt(sub) });
  if (r.status !== 200) {
    throw new Error(`issue for ${sub}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  }
  return r.body;
}

export async function validate(token) {
  const r = await rpc('extension_token_validate', { p_token: token });
  if (r.status !== 200) throw new Error(`validate: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

// Polls until `check()` returns true (for what a background worker commits).
export async function eventually(check, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A query as the cluster's superuser (PGHOST etc. come from test/lib.sh).
export function psql(sql) {
  return execFileSync('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    { encoding: 'utf8' }).trim();
}

// "HTTP 403 {...}": the whole answer, for assertion messages.
export const show = (r) => `HTTP ${r.status} ${JSON.stringify(r.body)}`;
