// The add-in's side of extension_tokens: holds a token pair in a store, sends
// the access token with each call, refreshes ahead of expiry (with jitter) and
// on a refused bearer, exactly once however many callers (single-flight within
// the process, a lock in the store across processes), with the anon key as the
// refresh call's bearer; maps every refusal to a typed error; honours
// Retry-After; signs in by device authorization (RFC 8628) and out by revoking
// with the anon key.  When the session ends it reports SignedOutError once
// (onSignedOut) and makes no further requests until a new sign-in.
// A pair the server handed out is never thrown away: if the store cannot
// write it, it is kept here and used, and the store is written again later.

import { fetchTransport, supabaseTransport } from './transport.js';
import { MemoryStore, KeyedMutex } from './stores.js';
import {
  ACCESS_TOKEN_REFUSALS, AccessDeniedError, AccessTokenRejectedError, AuthorizationPendingError,
  DeviceCodeExpiredError, ExpiredBearerError, NetworkError, RateLimitedError, ServerError, SignedOutError,
  SlowDownError, errorFromResponse,
} from './errors.js';

const realSleep = (ms, signal) => new Promise((resolve, reject) => {
  if (signal?.aborted) { reject(signal.reason ?? new Error('aborted')); return; }
  const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, Math.max(0, ms));
  function onAbort() { clearTimeout(t); reject(signal.reason ?? new Error('aborted')); }
  signal?.addEventListener('abort', onAbort, { once: true });
});

const ok = (resp) => resp.status >= 200 && resp.status < 300 && !resp.error;
const TRANSIENT = new Set([502, 503, 504]);
// A refresh token this process saw the server exchange is not presented again
// after this long: past the server's refresh_retry_window (30 s by default) it
// is reuse, which revokes the session as a theft.
const REFRESH_LOST_MS = 25000;
// After a failed refresh: the first retry within that window (a lost answer is
// then answered with the same pair), later ones 30 s doubling to 5 min.
const RETRY_FIRST_MS = 5000;
const RETRY_BASE_MS = 30000;
const RETRY_MAX_MS = 300000;

// Our tokens' shapes (README: access tokens are compact JWS; refresh tokens
// ext_rt_ and 71 base62 characters, 49 for those made by 1.1): a token with a
// space or a line break never reaches a header or an error message.
const ACCESS_TOKEN = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const REFRESH_TOKEN = /^ext_rt_(?:[0-9A-Za-z]{49}|[0-9A-Za-z]{71})$/;

/** What is wrong with a pair (never the tokens themselves), or null. */
function pairProblem(pair) {
  if (!pair || typeof pair.access_token !== 'string' || typeof pair.refresh_token !== 'string') {
    return 'access_token and refresh_token are required';
  }
  if (!ACCESS_TOKEN.test(pair.access_token)) {
    return 'the access token is not three base64url parts (a space or a line break?)';
  }
  if (!REFRESH_TOKEN.test(pair.refresh_token)) return 'the refresh token is not ext_rt_ and 71 letters and digits';
  return null;
}

/** Whether a 401 of an API says the bearer itself is refused (RFC 6750 invalid_token,
 *  PostgREST's PGRST301, the pre-request's PT401), not something a new token leaves as is. */
async function refusesToken(res) {
  if (/\binvalid_token\b/i.test(res.headers?.get?.('www-authenticate') ?? '')) return true;
  if (typeof res.clone !== 'function' || !/json/i.test(res.headers?.get?.('content-type') ?? '')) return false;
  try {
    const body = await res.clone().json();
    return body?.code === 'PGRST301' || (body?.code === 'PT401' && ACCESS_TOKEN_REFUSALS.includes(body.details));
  } catch {
    return false;
  }
}

/**
 * The record a store keeps for a pair (as extension_token_issue, _refresh and
 * _device_poll return it).  expires_at is reckoned on this machine's clock
 * from expires_in when the server gives it, so that a skewed clock neither
 * refreshes in a loop nor too late.
 */
export function pairToRecord(pair, now = Date.now()) {
  const problem = pairProblem(pair);
  if (problem) throw new TypeError(`not a token pair: ${problem}`);
  let expiresAt = Number.isFinite(pair.expires_in) ? now + pair.expires_in * 1000 : Date.parse(pair.expires_at);
  if (!Number.isFinite(expiresAt)) expiresAt = now;
  return {
    access_token: pair.access_token,
    refresh_token: pair.refresh_token,
    token_type: pair.token_type ?? 'Bearer',
    expires_at: new Date(expiresAt).toISOString(),
    refresh_expires_at: pair.refresh_expires_at ?? null,
    session_id: pair.session_id ?? null,
    scopes: pair.scopes ?? null,
    obtained_at: new Date(now).toISOString(),
  };
}

// A stored record with tokens of another shape is unreadable: as if empty.
const isSession = (rec) => pairProblem(rec) === null;

export class TokenClient {
  #transport;
  #store;
  #key;
  #o;
  #now;
  #random;
  #sleep;
  #mutex = new KeyedMutex();
  #inflight = null;     // the refresh in progress in this process, shared by every caller
  #signedOut = null;    // the SignedOutError reported, while no new session appeared
  #refused = null;      // the refresh token whose refusal signed us out
  #seen = null;         // the last refresh token this client saw in the store
  #rateUntil = 0;       // no refresh before this (a 429's Retry-After)
  #failures = 0;        // refreshes failed in a row
  #retryAt = 0;         // no refresh ahead of expiry before this (the backoff after a failure)
  #pending = null;      // {rec, over}: a pair received but not stored yet, used instead of the stored `over`
  #exchanged = new Map(); // refresh token -> when the server answered its exchange (the last few)
  #recovered = null;    // the access token a refresh after a 401 obtained: a 401 for it is not refreshed again
  #jitter = { token: null, ms: 0 };
  #timer = null;

  /**
   * @param {object} options
   * @param {string} [options.url] PostgREST base URL (Supabase: https://<ref>.supabase.co/rest/v1)
   * @param {string} [options.anonKey] the anon key: `apikey` header, and the bearer of anonymous calls
   * @param {any} [options.supabase] a supabase-js client to call .rpc() on instead of fetch
   * @param {any} [options.transport] a transport of one's own ({rpc(fn, args, opts)})
   * @param {typeof fetch} [options.fetch]
   * @param {any} [options.store] default: a MemoryStore
   * @param {string} [options.key] the store key (default 'session'): one per account
   * @param {number} [options.refreshMargin] seconds before expiry to refresh (default 300, at most half the lifetime)
   * @param {number} [options.refreshJitter] up to this many seconds earlier still, at random (default 60)
   * @param {number} [options.retryWindow] seconds to keep retrying a refresh whose answer was lost (default 20;
   *   keep it below the server's extension_tokens.refresh_retry_window, 30 s by default)
   * @param {number} [options.maxRetryWait] a Retry-After up to this many seconds is waited out (default 10)
   * @param {number} [options.requestTimeout] seconds per request of the client's own (default 15)
   * @param {(err: SignedOutError) => void} [options.onSignedOut] called once when the session ends
   *   (after the store's lock is released)
   * @param {(record: object) => void} [options.onTokens] called when this client stored a new pair
   * @param {() => number} [options.now] the clock, epoch ms (tests)
   * @param {() => number} [options.random] in [0, 1), for the jitter (tests)
   * @param {(ms: number, signal?: AbortSignal) => Promise<void>} [options.sleep] (tests)
   */
  constructor(options = {}) {
    const o = options;
    if (o.transport) this.#transport = o.transport;
    else if (o.supabase) this.#transport = supabaseTransport(o.supabase, { anonKey: o.anonKey });
    else this.#transport = fetchTransport({ url: o.url, anonKey: o.anonKey, fetch: o.fetch });
    this.#store = o.store ?? new MemoryStore();
    this.#key = o.key ?? 'session';
    this.#o = {
      refreshMargin: o.refreshMargin ?? 300,
      refreshJitter: o.refreshJitter ?? 60,
      retryWindow: o.retryWindow ?? 20,
      maxRetryWait: o.maxRetryWait ?? 10,
      requestTimeout: o.requestTimeout ?? 15,
      onSignedOut: o.onSignedOut ?? null,
      onTokens: o.onTokens ?? null,
      fetch: o.fetch ?? null,
    };
    this.#now = o.now ?? Date.now;
    this.#random = o.random ?? Math.random;
    this.#sleep = o.sleep ?? realSleep;
  }

  get store() { return this.#store; }

  get key() { return this.#key; }

  /** The SignedOutError reported, or null while signed in (or never signed in). */
  get signedOut() { return this.#signedOut; }

  // ------------------------------------------------------------------ session

  /** The stored record, or the newer pair not stored yet (no network); null when there is no session. */
  async getSession() {
    const rec = this.#live(await this.#store.get(this.#key));
    return isSession(rec) ? { ...rec } : null;
  }

  /** Stores a pair handed over by the dashboard (or any issue/refresh answer) and resumes. */
  async setSession(pair) {
    const rec = pairToRecord(pair, this.#now());
    await this.#withLock(() => this.#store.set(this.#key, rec));
    this.#resume(rec);
    this.#o.onTokens?.(rec);
    return rec;
  }

  /** A valid access token: the stored one, or (when due) a refreshed one. */
  async getAccessToken() {
    return (await this.#fresh()).access_token;
  }

  /**
   * Refreshes now (force) or when due.  Single-flight: concurrent callers, and
   * other processes sharing the store, end up with one new pair.
   */
  async refresh({ force = true } = {}) {
    const rec = await this.#current();
    if (!force && !this.#due(rec)) return rec;
    return this.#refresh(rec);
  }

  /**
   * Calls a PostgREST function with the access token as bearer.  A refused
   * bearer (PT401 from the pre-request, PGRST301) is refreshed once and the
   * call retried once.  Returns the data; throws a typed error otherwise.
   */
  async rpc(fn, args = {}, { get = false, signal } = {}) {
    let rec = await this.#fresh();
    let resp = await this.#transport.rpc(fn, args, { bearer: rec.access_token, get, signal });
    if (!ok(resp)) {
      const err = errorFromResponse(resp, this.#now());
      if (!(err instanceof AccessTokenRejectedError || err instanceof ExpiredBearerError)) throw err;
      const refused = err instanceof ExpiredBearerError || ACCESS_TOKEN_REFUSALS.includes(err.reason);
      if (!this.#refreshesOn401(rec, refused)) throw err;
      rec = await this.#recover(rec);
      resp = await this.#transport.rpc(fn, args, { bearer: rec.access_token, get, signal });
      if (!ok(resp)) throw errorFromResponse(resp, this.#now());
    }
    return resp.data;
  }

  /**
   * fetch() with `Authorization: Bearer <access token>`, for an API of one's own
   * that validates our tokens.  On a 401 that refuses the token (WWW-Authenticate
   * invalid_token, PGRST301, PT401 expired/revoked/...), or for a token expired
   * here, the token is refreshed once and the request sent again (when its body
   * can be sent again).  Returns the Response.  Redirects are the runtime's
   * fetch's: Node.js 20 and browsers drop Authorization on a cross-origin one.
   */
  async fetch(input, init = {}) {
    const doFetch = this.#o.fetch ?? globalThis.fetch;
    const send = (rec) => {
      const headers = new Headers(init.headers);
      headers.set('Authorization', `Bearer ${rec.access_token}`);
      return doFetch(input, { ...init, headers });
    };
    let rec = await this.#fresh();
    let res = await send(rec);
    const replayable = init.body == null || typeof init.body === 'string' || init.body instanceof URLSearchParams;
    if (res.status === 401 && replayable && this.#refreshesOn401(rec, await refusesToken(res))) {
      rec = await this.#recover(rec);
      res = await send(rec);
    }
    return res;
  }

  /**
   * Signs out: revokes the session with the anon key (the token is the
   * credential, RFC 7009) and forgets the tokens, here and in every process
   * sharing the store.  The tokens are forgotten even when the server could not
   * be reached: `error` then says so and the session lives on until it expires.
   * @returns {Promise<{revoked: boolean, error: ExtensionTokensError|null}>}
   */
  async signOut() {
    this.stopAutoRefresh();
    return this.#withLock(async () => {
      const rec = this.#live(await this.#store.get(this.#key));
      let revoked = false;
      let error = null;
      if (isSession(rec)) {
        const resp = await this.#transport.rpc('extension_token_revoke', { p_token: rec.refresh_token },
          { bearer: null, signal: this.#timeout() });
        if (ok(resp)) revoked = resp.data === true;
        else error = errorFromResponse(resp, this.#now());
      }
      await this.#store.set(this.#key, { signed_out: { reason: 'signed_out', at: new Date(this.#now()).toISOString() } });
      this.#pending = null;
      this.#signedOut = new SignedOutError('signed_out');
      this.#refused = rec?.refresh_token ?? null;
      return { revoked, error };
    });
  }

  // ------------------------------------------------------------- device flow

  /**
   * Starts a device authorization (anonymous): show the user_code, or open
   * verification_uri_complete, then pollDeviceAuthorization().
   */
  async startDeviceAuthorization({ name, scopes, signal } = {}) {
    const args = {};
    if (name != null) args.p_name = name;
    if (scopes != null) args.p_scopes = scopes;
    const resp = await this.#transport.rpc('extension_token_device_start', args, { bearer: null, signal });
    if (!ok(resp)) throw errorFromResponse(resp, this.#now());
    const d = resp.data;
    return {
      device_code: d.device_code,
      user_code: d.user_code,
      verification_uri_complete: d.verification_uri_complete ?? null,
      expires_in: d.expires_in,
      interval: d.interval,
      expires_at: this.#now() + (Number(d.expires_in) || 0) * 1000,
    };
  }

  /**
   * One poll: the pair (stored, resuming the client) once approved; otherwise
   * throws AuthorizationPendingError, SlowDownError, DeviceCodeExpiredError,
   * AccessDeniedError, or another typed error.
   */
  async pollDeviceOnce(device, { signal } = {}) {
    const resp = await this.#transport.rpc('extension_token_device_poll', { p_device_code: device.device_code },
      { bearer: null, signal });
    if (!ok(resp)) throw errorFromResponse(resp, this.#now());
    return this.setSession(resp.data);
  }

  /**
   * Polls until the user approves (returns the stored record) or the flow
   * ends: every `interval` seconds, 5 s more after each slow_down, waiting out
   * a 429, backing off on network errors; throws AccessDeniedError,
   * DeviceCodeExpiredError (also when expires_in passed), or the AbortSignal's reason.
   */
  async pollDeviceAuthorization(device, { signal, onPending } = {}) {
    let interval = Math.max(1, Number(device.interval) || 5) * 1000;
    let wait = interval;
    const deadline = device.expires_at ?? this.#now() + (Number(device.expires_in) || 600) * 1000;
    for (;;) {
      await this.#sleep(wait, signal);
      if (this.#now() >= deadline) throw new DeviceCodeExpiredError('the device code expired', { code: 'PT400', details: 'expired_token' });
      try {
        return await this.pollDeviceOnce(device, { signal });
      } catch (e) {
        if (e instanceof AuthorizationPendingError) {
          onPending?.();
          wait = interval;
        } else if (e instanceof SlowDownError) {
          interval += 5000;
          wait = interval;
        } else if (e instanceof RateLimitedError) {
          wait = Math.max(interval, (e.retryAfter ?? interval / 1000) * 1000);
        } else if (e instanceof NetworkError || (e instanceof ServerError && TRANSIENT.has(e.status))) {
          wait = Math.min(wait * 2, 60000);
        } else {
          throw e;
        }
      }
    }
  }

  /**
   * The whole hand-off: start, give the code to onCode (show it, or open
   * verification_uri_complete), poll until approved.  Returns the stored record.
   */
  async signInWithDevice({ name, scopes, onCode, onPending, signal } = {}) {
    const device = await this.startDeviceAuthorization({ name, scopes, signal });
    if (onCode) await onCode(device);
    return this.pollDeviceAuthorization(device, { signal, onPending });
  }

  // ------------------------------------------------------------ auto refresh

  /** Refreshes in the background when due, until signed out or stopAutoRefresh(). */
  startAutoRefresh() {
    if (this.#timer) return;
    const schedule = (ms) => {
      this.#timer = setTimeout(tick, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
      this.#timer.unref?.();
    };
    const tick = async () => {
      if (!this.#timer) return;
      try {
        const rec = await this.#fresh();
        if (!this.#timer) return;
        // When due, but not before a failed refresh's backoff or Retry-After, and at the latest at expiry;
        // a pair the store could not write is written again soon (other processes read the store).
        let next = Math.min(Math.max(this.#dueAt(rec), this.#retryAt, this.#rateUntil), Date.parse(rec.expires_at));
        if (this.#pending) next = Math.min(next, this.#now() + RETRY_FIRST_MS);
        schedule(next - this.#now());
      } catch (e) {
        if (e instanceof SignedOutError) { this.#timer = null; return; }
        if (!this.#timer) return;
        // Well within the server's refresh retry window, unless a backoff or Retry-After says later.
        schedule(Math.max(RETRY_FIRST_MS, Math.max(this.#retryAt, this.#rateUntil) - this.#now()));
      }
    };
    schedule(0);
  }

  stopAutoRefresh() {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  // --------------------------------------------------------------- internals

  #timeout() {
    return typeof AbortSignal !== 'undefined' && AbortSignal.timeout
      ? AbortSignal.timeout(this.#o.requestTimeout * 1000) : undefined;
  }

  #withLock(fn) {
    if (typeof this.#store.withLock === 'function') return this.#store.withLock(this.#key, fn);
    return this.#mutex.withLock(this.#key, fn);
  }

  #resume(rec) {
    this.#signedOut = null;
    this.#refused = null;
    this.#seen = rec.refresh_token;
    this.#pending = null;
    this.#failures = 0;
    this.#retryAt = 0;
  }

  /** Reports the end of the session: the callback once, then the same answer without a request.
   *  With `later` (the lock is held) the callback is queued there, to run once it is released. */
  #report(err, later = null) {
    if (!this.#signedOut) {
      this.#signedOut = err;
      this.stopAutoRefresh();
      if (err.reason !== 'no_session' && this.#o.onSignedOut) {
        const call = () => {
          try { this.#o.onSignedOut(err); } catch { /* the callback's problem */ }
        };
        if (later) later.push(call);
        else call();
      }
    }
    return new SignedOutError(this.#signedOut.reason, { message: this.#signedOut.message });
  }

  /** The stored record, or the pair received for it but not stored yet (the server replaced it already). */
  #live(stored) {
    const p = this.#pending;
    if (!p) return stored;
    if (isSession(stored) && stored.refresh_token === p.over) return p.rec;
    this.#pending = null; // the store moved on: a sign-in, a sign-out, another process's pair
    return stored;
  }

  /** The session (stored, or received and not stored yet), or SignedOutError (no request is made either way). */
  async #current(later = null) {
    const rec = this.#live(await this.#store.get(this.#key));
    if (isSession(rec)) {
      if (this.#signedOut) {
        // A session appeared after the end: a sign-in (here or in another process).
        if (rec.refresh_token === this.#refused) throw this.#report(this.#signedOut, later);
        this.#resume(rec);
      }
      this.#seen = rec.refresh_token;
      return rec;
    }
    if (this.#signedOut) throw this.#report(this.#signedOut, later);
    let reason = rec?.signed_out?.reason ?? null;
    if (!reason) reason = this.#seen ? 'signed_out_elsewhere' : 'no_session';
    throw this.#report(new SignedOutError(reason), later);
  }

  #expired(rec) { return this.#now() >= Date.parse(rec.expires_at); }

  #dueAt(rec) {
    const exp = Date.parse(rec.expires_at);
    const got = Date.parse(rec.obtained_at ?? '');
    const life = Number.isFinite(got) && exp > got ? exp - got : Infinity;
    const margin = Math.min(this.#o.refreshMargin * 1000, life / 2);
    if (this.#jitter.token !== rec.refresh_token) {
      const span = Math.min(this.#o.refreshJitter * 1000, life / 4);
      this.#jitter = { token: rec.refresh_token, ms: this.#random() * (Number.isFinite(span) ? span : 0) };
    }
    return exp - margin - this.#jitter.ms;
  }

  #due(rec) { return this.#now() >= this.#dueAt(rec); }

  /** The session with a usable access token: refreshed when due. */
  async #fresh() {
    if (this.#pending) await this.#flush();
    const rec = await this.#current();
    if (!this.#due(rec)) return rec;
    // A refresh ahead that failed is not tried again before its backoff or Retry-After.
    if (!this.#expired(rec) && this.#now() < Math.max(this.#retryAt, this.#rateUntil)) return rec;
    try {
      return await this.#refresh(rec);
    } catch (e) {
      // Refreshing ahead is a courtesy: while the token lives, keep using it.
      const transient = e instanceof RateLimitedError || e instanceof NetworkError || e instanceof ServerError;
      if (transient && !this.#expired(rec)) return rec;
      throw e;
    }
  }

  /** After a failed refresh: none ahead of expiry before 5 s, then 30 s doubling to 5 min (+ up to half, at random). */
  #backoff() {
    this.#failures += 1;
    const ms = this.#failures === 1 ? RETRY_FIRST_MS : Math.min(RETRY_BASE_MS * 2 ** (this.#failures - 2), RETRY_MAX_MS);
    this.#retryAt = this.#now() + ms * (1 + this.#random() / 2);
  }

  /**
   * After a 401 for `sent`: refresh only for a token expired here, or an answer that
   * refuses the token, and not for the token a refresh after a 401 just obtained.
   * Otherwise every such call would rotate the pair, and the refresh limit is per user.
   */
  #refreshesOn401(sent, refused) {
    if (this.#expired(sent)) return true;
    return refused && sent.access_token !== this.#recovered;
  }

  /** After the server refused the access token of `sent`: the pair to retry with. */
  async #recover(sent) {
    if (this.#inflight) return this.#inflight;
    const cur = await this.#current();
    if (cur.access_token !== sent.access_token) return cur; // refreshed meanwhile (here or elsewhere)
    const rec = await this.#refresh(cur);
    this.#recovered = rec.access_token;
    return rec;
  }

  /** One refresh for every concurrent caller in this process. */
  #refresh(observed) {
    if (this.#inflight) return this.#inflight;
    const p = this.#refreshLocked(observed).finally(() => {
      if (this.#inflight === p) this.#inflight = null;
    });
    this.#inflight = p;
    return p;
  }

  /** Writes the pair received but not stored, under the lock; it stays in memory if the store fails again. */
  async #flush() {
    const later = [];
    try {
      await this.#withLock(() => this.#storePending(later));
    } catch { /* the lock or the store: the next call tries again */ }
    later.forEach((f) => f());
  }

  /** Under the lock: stores the pending pair unless the store moved on (kept if the store fails again). */
  async #storePending(later) {
    const p = this.#pending;
    if (!p || this.#live(await this.#store.get(this.#key)) !== p.rec) return;
    try {
      await this.#store.set(this.#key, p.rec);
    } catch {
      return; // a full disk, a locked file: kept in memory
    }
    if (this.#pending === p) this.#pending = null;
    later.push(() => this.#o.onTokens?.(p.rec));
  }

  /** The session is over: a tombstone for every process sharing the store, and the report (queued in `later`). */
  async #end(err, refreshToken, later) {
    this.#refused = refreshToken;
    this.#pending = null;
    await this.#store.set(this.#key, { signed_out: { reason: err.reason, at: new Date(this.#now()).toISOString() } });
    return this.#report(err, later);
  }

  /** Under the store's lock: read again; refresh only if nobody else did.  Callbacks run after the lock. */
  async #refreshLocked(observed) {
    const later = [];
    try {
      return await this.#withLock(async () => {
        const cur = await this.#current(later);
        await this.#storePending(later);
        if (cur.refresh_token !== observed.refresh_token) return cur; // the loser re-reads
        if (this.#now() < this.#rateUntil) {
          const left = Math.ceil((this.#rateUntil - this.#now()) / 1000);
          throw new RateLimitedError(`no refresh before the server's Retry-After (${left} s)`, {}, left, this.#now());
        }
        const exchangedAt = this.#exchanged.get(cur.refresh_token);
        if (exchangedAt !== undefined && this.#now() - exchangedAt > REFRESH_LOST_MS) {
          const lost = new SignedOutError('refresh_lost', {
            message: 'signed out (refresh_lost): the server exchanged the refresh token and the new pair was lost here',
          });
          throw await this.#end(lost, cur.refresh_token, later);
        }
        let pair;
        try {
          pair = await this.#exchange(cur.refresh_token);
        } catch (e) {
          if (e instanceof SignedOutError) throw await this.#end(e, cur.refresh_token, later);
          this.#backoff();
          throw e;
        }
        const rec = pairToRecord(pair, this.#now());
        this.#failures = 0;
        this.#retryAt = 0;
        this.#seen = rec.refresh_token;
        // Kept in memory until stored: the refresh token it replaced must not be presented again.
        this.#pending = { rec, over: this.#pending ? this.#pending.over : cur.refresh_token };
        await this.#storePending(later);
        return rec;
      });
    } finally {
      later.forEach((f) => f());
    }
  }

  /**
   * extension_token_refresh, anonymous (the anon key as bearer).  A lost answer
   * (network error, 502-504) is retried with the same refresh token while
   * within retryWindow: the server's retry window answers with the same pair.
   * A 429 records its Retry-After, and is waited out when short.
   */
  async #exchange(refreshToken) {
    const start = this.#now();
    let backoff = 250;
    for (;;) {
      const resp = await this.#transport.rpc('extension_token_refresh', { p_refresh_token: refreshToken },
        { bearer: null, signal: this.#timeout() });
      if (ok(resp)) {
        // Exchanged: were this pair lost, the server answers again only within its retry window.
        if (!this.#exchanged.has(refreshToken)) this.#exchanged.set(refreshToken, this.#now());
        if (this.#exchanged.size > 8) this.#exchanged.delete(this.#exchanged.keys().next().value);
        if (!isSession(resp.data)) {
          throw new ServerError('the refresh answered without a well-formed token pair', { status: resp.status });
        }
        return resp.data;
      }
      const err = errorFromResponse(resp, this.#now());
      if (err instanceof RateLimitedError) {
        const wait = err.retryAfter ?? 60;
        this.#rateUntil = this.#now() + wait * 1000;
        if (wait > this.#o.maxRetryWait) throw err;
        await this.#sleep(wait * 1000);
        continue;
      }
      const lost = err instanceof NetworkError || (err instanceof ServerError && TRANSIENT.has(err.status));
      if (lost && this.#now() + backoff - start <= this.#o.retryWindow * 1000) {
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, 4000);
        continue;
      }
      throw err;
    }
  }
}

