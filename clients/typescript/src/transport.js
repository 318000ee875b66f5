// How the client reaches PostgREST's /rpc: plain fetch, or a supabase-js client.
//
// A transport has one method, rpc(fn, args, {bearer, get, signal}), that never
// throws for an HTTP or network failure: it answers
//   {status, data, error, headers}
// with error = PostgREST's JSON error body ({code, message, details, hint, ...})
// and status 0 when no answer arrived (then `network` is true and `cause` says why).
// `bearer` null or absent means "anonymous": the anon key is the bearer, never
// an access token of ours (refresh, revoke and the device flow are anonymous).

function queryString(args) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(args ?? {})) {
    if (v === undefined) continue;
    q.set(k, Array.isArray(v) ? `{${v.map((x) => JSON.stringify(String(x))).join(',')}}` : String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/**
 * PostgREST reached with fetch.
 * @param {{url: string, anonKey?: string, fetch?: typeof fetch, headers?: Record<string, string>}} options
 *   url: PostgREST's base URL (Supabase: https://<project>.supabase.co/rest/v1);
 *   anonKey: sent as `apikey` on every call and as the bearer of anonymous calls.
 */
export function fetchTransport({ url, anonKey, fetch: fetchFn, headers: extra = {} }) {
  if (typeof url !== 'string' || url === '') throw new TypeError('fetchTransport: url is required');
  const base = url.replace(/\/+$/, '');
  const doFetch = fetchFn ?? globalThis.fetch;
  if (typeof doFetch !== 'function') throw new TypeError('fetchTransport: no fetch available');
  return {
    kind: 'fetch',
    anonKey: anonKey ?? null,
    async rpc(fn, args = {}, { bearer = null, get = false, signal } = {}) {
      const headers = { Accept: 'application/json', ...extra };
      if (anonKey) headers.apikey = anonKey;
      const auth = bearer ?? anonKey;
      if (auth) headers.Authorization = `Bearer ${auth}`;
      let target = `${base}/rpc/${encodeURIComponent(fn)}`;
      // PostgREST answers /rpc without redirects: one is not followed, since it would
      // take the bearer and the apikey along to wherever it points.
      const init = { method: get ? 'GET' : 'POST', headers, signal, redirect: 'manual' };
      if (get) {
        target += queryString(args);
      } else {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(args ?? {});
      }
      let res;
      let text;
      try {
        res = await doFetch(target, init);
        text = await res.text();
      } catch (cause) {
        return {
          status: 0, data: null, error: { message: String(cause?.message ?? cause) }, headers: null, network: true, cause,
        };
      }
      if (res.type === 'opaqueredirect' || (res.status >= 300 && res.status < 400)) {
        const message = `PostgREST answered with a redirect (HTTP ${res.status || 'opaque'}), not followed: `
          + 'is the url right?';
        return { status: res.status || 300, data: null, error: { message }, headers: res.headers };
      }
      let parsed = null;
      try {
        parsed = text === '' ? null : JSON.parse(text);
      } catch {
        parsed = res.ok ? text : { message: text };
      }
      if (res.ok) return { status: res.status, data: parsed, error: null, headers: res.headers };
      const error = parsed && typeof parsed === 'object' ? parsed : { message: String(parsed ?? `HTTP ${res.status}`) };
      return { status: res.status, data: null, error, headers: res.headers };
    },
  };
}

/**
 * PostgREST reached through a supabase-js client (its .rpc()), 2.45.4 or later
 * (postgrest-js 1.16: rpc().setHeader).  Anonymous calls
 * carry `Authorization: Bearer <anon key>` explicitly, whatever session the
 * supabase client holds.  supabase-js does not expose response headers: the
 * retry time of a 429 then comes from the body (retry_after, or the hint).
 * @param {any} supabase a client made by createClient(url, anonKey)
 * @param {{anonKey?: string}} [options] default: the key the client was made with
 */
export function supabaseTransport(supabase, { anonKey } = {}) {
  if (!supabase || typeof supabase.rpc !== 'function') throw new TypeError('supabaseTransport: not a supabase client');
  const key = anonKey ?? supabase.supabaseKey ?? null;
  return {
    kind: 'supabase',
    anonKey: key,
    async rpc(fn, args = {}, { bearer = null, get = false, signal } = {}) {
      let q = supabase.rpc(fn, args ?? {}, get ? { get: true } : undefined);
      const auth = bearer ?? key;
      if (auth) {
        // Without setHeader the call would go out as whatever the supabase client holds.
        if (typeof q.setHeader !== 'function') {
          throw new TypeError('supabaseTransport: this supabase-js cannot set a header per call '
            + '(rpc().setHeader): use @supabase/supabase-js 2.45.4 or later');
        }
        q = q.setHeader('Authorization', `Bearer ${auth}`);
      }
      if (signal && typeof q.abortSignal === 'function') q = q.abortSignal(signal);
      let result;
      try {
        result = await q;
      } catch (cause) {
        return {
          status: 0, data: null, error: { message: String(cause?.message ?? cause) }, headers: null, network: true, cause,
        };
      }
      const { data, error, status } = result;
      if (!error) return { status, data, error: null, headers: null };
      return { status: status ?? 0, data: null, error, headers: null, network: !status };
    },
  };
}
