// One error class per kind of refusal, each with the action it implies.
//
// The server answers in six shapes (through PostgREST, each a JSON body
// {code, message, details, hint} with an HTTP status):
//   PT401 + DETAIL refresh_token_* / session_*   the refresh was refused: signed out
//   PT401 + DETAIL expired / revoked / ...       extension_token_pre_request refused the bearer
//   PGRST301                                     PostgREST itself refused the bearer JWT
//   PT429 (429, Retry-After)                     rate limited
//   PT400 + DETAIL authorization_pending / ...   device authorization (RFC 8628)
//   42501, 22023, 55000                          forbidden, bad request, server not configured
// errorFromResponse() maps an answer to one of the classes below.

/** DETAILs of PT401 that end the session: the client is signed out. */
export const SIGNED_OUT_REASONS = Object.freeze([
  'refresh_token_not_found',
  'refresh_token_expired',
  'refresh_token_already_used',
  'session_revoked',
  'session_expired',
]);

/** DETAILs of PT401 from extension_token_pre_request that a new access token cures (its
 *  validation errors, less `missing` and `insufficient_scope`): a 401 for any other reason
 *  (a resource an API refuses, say) is not answered with a refresh. */
export const ACCESS_TOKEN_REFUSALS = Object.freeze([
  'expired',
  'revoked',
  'not_found',
  'malformed',
  'invalid_signature',
  'unsupported_algorithm',
  'not_yet_valid',
  'wrong_issuer',
  'wrong_audience',
  'wrong_token_type',
]);

/** Base class: every error the client throws. */
export class ExtensionTokensError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string|null, status?: number|null, details?: string|null, hint?: string|null, cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = new.target.name;
    /** SQLSTATE or PostgREST code (PT401, PGRST301, 42501, ...), null for a network error. */
    this.code = info.code ?? null;
    /** HTTP status, 0 when no answer arrived. */
    this.status = info.status ?? null;
    this.details = info.details ?? null;
    this.hint = info.hint ?? null;
  }

  /** What the caller should do about it. */
  get action() { return 'report'; }
}

/** The session is over (refresh refused, revoked, signed out): sign in again. */
export class SignedOutError extends ExtensionTokensError {
  constructor(reason, info = {}) {
    super(info.message ?? `signed out (${reason})`, { ...info, details: reason });
    /** refresh_token_already_used, session_revoked, session_expired, refresh_token_expired,
     *  refresh_token_not_found, signed_out (this client's signOut), signed_out_elsewhere, no_session,
     *  refresh_lost (the server exchanged the refresh token, the new pair was lost here) */
    this.reason = reason;
  }

  get action() { return 'sign_in'; }
}

/** PT429: too many refreshes or issues; retry after retryAfter seconds. */
export class RateLimitedError extends ExtensionTokensError {
  constructor(message, info = {}, retryAfter = null, now = Date.now()) {
    super(message, { code: 'PT429', status: 429, ...info });
    /** Seconds to wait (Retry-After header, else the body's retry_after, else the hint), null if unknown. */
    this.retryAfter = retryAfter;
    /** Epoch milliseconds from which a retry is accepted, null if unknown. */
    this.retryAt = retryAfter == null ? null : now + retryAfter * 1000;
  }

  get action() { return 'wait'; }
}

/** PT401 from extension_token_pre_request: the access token sent as bearer was refused
 *  (reason expired, revoked, not_found, ...).  The client refreshes once and retries. */
export class AccessTokenRejectedError extends ExtensionTokensError {
  constructor(reason, info = {}) {
    super(info.message ?? `access token rejected (${reason})`, { code: 'PT401', status: 401, details: reason, ...info });
    this.reason = reason;
  }

  get action() { return 'refresh'; }
}

/** PGRST301: PostgREST refused the bearer JWT (expired, or not verifiable).  The client
 *  refreshes once and retries; never sent on refresh, which goes out with the anon key. */
export class ExpiredBearerError extends ExtensionTokensError {
  constructor(message, info = {}) {
    super(message, { code: 'PGRST301', status: 401, ...info });
  }

  get action() { return 'refresh'; }
}

/** 42501: the caller may not do this (wrong user, missing grant). */
export class ForbiddenError extends ExtensionTokensError {
  get action() { return 'check_permissions'; }
}

/** 22023 (and other 4xx): the request itself is wrong; a retry does not help. */
export class BadRequestError extends ExtensionTokensError {
  get action() { return 'fix_request'; }
}

/** 55000: the server is not configured (secret missing, library not preloaded). */
export class ServerMisconfiguredError extends ExtensionTokensError {
  get action() { return 'contact_admin'; }
}

/** Another 5xx: retry later; the tokens are kept. */
export class ServerError extends ExtensionTokensError {
  get action() { return 'retry_later'; }
}

/** No answer (connection refused, reset, timed out): retry; the tokens are kept. */
export class NetworkError extends ExtensionTokensError {
  get action() { return 'retry'; }
}

/** A lock in the token store was not obtained in time. */
export class LockTimeoutError extends ExtensionTokensError {
  get action() { return 'retry'; }
}

/** PT400 from the device authorization (RFC 8628) functions. */
export class DeviceAuthorizationError extends ExtensionTokensError {
  get action() { return 'restart_device_flow'; }
}
/** authorization_pending: the user has not approved yet; poll again after the interval. */
export class AuthorizationPendingError extends DeviceAuthorizationError {
  get action() { return 'keep_polling'; }
}
/** slow_down: polled faster than the interval; add 5 seconds to it. */
export class SlowDownError extends DeviceAuthorizationError {
  get action() { return 'poll_slower'; }
}
/** expired_token: the device code expired (or was used); start again. */
export class DeviceCodeExpiredError extends DeviceAuthorizationError {
  get action() { return 'restart_device_flow'; }
}
/** access_denied: the user denied the request; stop. */
export class AccessDeniedError extends DeviceAuthorizationError {
  get action() { return 'stop'; }
}

const DEVICE_ERRORS = {
  authorization_pending: AuthorizationPendingError,
  slow_down: SlowDownError,
  expired_token: DeviceCodeExpiredError,
  access_denied: AccessDeniedError,
};

/** Seconds from a Retry-After header value (delta-seconds or an HTTP date). */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === '') return null;
  const s = String(value).trim();
  if (/^\d+$/.test(s)) return Number(s);
  const at = Date.parse(s);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

/** The retry time of a 429: the Retry-After header, else body.retry_after, else the hint's "(in N seconds)". */
export function retryAfterOf(resp, now = Date.now()) {
  const header = resp.headers && typeof resp.headers.get === 'function' ? resp.headers.get('retry-after') : null;
  const fromHeader = parseRetryAfter(header, now);
  if (fromHeader != null) return fromHeader;
  const body = resp.error ?? {};
  if (Number.isFinite(Number(body.retry_after)) && body.retry_after !== null && body.retry_after !== '') {
    return Math.max(0, Math.ceil(Number(body.retry_after)));
  }
  const m = typeof body.hint === 'string' ? /\bin (\d+) seconds?\b/.exec(body.hint) : null;
  return m ? Number(m[1]) : null;
}

/**
 * The typed error for a failed answer of a transport: {status, error, headers}, where error is
 * PostgREST's JSON body ({code, message, details, hint}) or, for a network failure, status 0.
 * @returns {ExtensionTokensError}
 */
export function errorFromResponse(resp, now = Date.now()) {
  const status = resp.status ?? 0;
  const body = resp.error && typeof resp.error === 'object' ? resp.error : { message: String(resp.error ?? '') };
  const code = typeof body.code === 'string' && body.code !== '' ? body.code : null;
  const info = {
    code, status, details: body.details ?? null, hint: body.hint ?? null, cause: resp.cause,
  };
  const message = body.message || (status ? `HTTP ${status}` : 'no answer from the server');
  if (status === 0 || resp.network) return new NetworkError(message, info);
  if (code === 'PT429' || status === 429) {
    return new RateLimitedError(message, info, retryAfterOf(resp, now), now);
  }
  if (code === 'PT401') {
    if (SIGNED_OUT_REASONS.includes(body.details)) return new SignedOutError(body.details, { ...info, message });
    return new AccessTokenRejectedError(body.details ?? 'unknown', { ...info, message });
  }
  if (code === 'PGRST301') return new ExpiredBearerError(message, info);
  if (code === 'PGRST300') return new ServerMisconfiguredError(message, info); // PostgREST has no JWT secret
  if (code === 'PGRST302') return new ForbiddenError(message, info); // anonymous access disabled
  if (code === 'PT400' && DEVICE_ERRORS[body.details]) return new DEVICE_ERRORS[body.details](message, info);
  if (code === '42501' || status === 403) return new ForbiddenError(message, info);
  if (code === '55000') return new ServerMisconfiguredError(message, info);
  if (code === '22023' || (status >= 400 && status < 500 && status !== 401)) return new BadRequestError(message, info);
  if (status === 401) return new AccessTokenRejectedError(body.details ?? 'unknown', { ...info, message });
  if (status >= 500) return new ServerError(message, info);
  return new ExtensionTokensError(message, info);
}
