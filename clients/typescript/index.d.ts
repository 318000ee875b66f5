// Types of @extension-tokens/client (the code is plain JavaScript in src/).

/** A token pair as extension_token_issue / _refresh / _device_poll return it. */
export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type?: string;
  expires_in?: number;
  expires_at?: string;
  refresh_expires_at?: string | null;
  session_id?: string | null;
  scopes?: string[] | null;
  revoked_sessions?: number;
}

/** What a store keeps for a session (expires_at on this machine's clock). */
export interface SessionRecord {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_at: string;
  refresh_expires_at: string | null;
  session_id: string | null;
  scopes: string[] | null;
  obtained_at: string;
}

/** What a store keeps after the session ended. */
export interface SignedOutRecord {
  signed_out: { reason: string; at: string };
}

export type StoredRecord = SessionRecord | SignedOutRecord;

/** Pluggable token storage; withLock makes refresh single-flight across its sharers. */
export interface TokenStore {
  get(key: string): Promise<StoredRecord | null>;
  set(key: string, record: StoredRecord): Promise<void>;
  delete(key: string): Promise<void>;
  withLock?<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

export class KeyedMutex {
  withLock<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

export class MemoryStore implements TokenStore {
  get(key: string): Promise<StoredRecord | null>;
  set(key: string, record: StoredRecord): Promise<void>;
  delete(key: string): Promise<void>;
  withLock<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

/** PostgREST's error body, plus what a transport adds. */
export interface PostgrestErrorBody {
  code?: string;
  message?: string;
  details?: string | null;
  hint?: string | null;
  retry_after?: number;
  [k: string]: unknown;
}

export interface TransportResponse {
  status: number;
  data: any;
  error: PostgrestErrorBody | null;
  headers: Headers | null;
  network?: boolean;
  cause?: unknown;
}

export interface RpcOptions {
  /** The bearer token; null/absent: anonymous (the anon key). */
  bearer?: string | null;
  get?: boolean;
  signal?: AbortSignal;
}

export interface Transport {
  kind?: string;
  anonKey?: string | null;
  rpc(fn: string, args?: Record<string, unknown>, options?: RpcOptions): Promise<TransportResponse>;
}

export function fetchTransport(options: {
  url: string;
  anonKey?: string;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
}): Transport;

/** `supabase`: a client from @supabase/supabase-js createClient(url, anonKey), 2.45.4 or later
 *  (rpc().setHeader; an older one makes each call throw a TypeError). */
export function supabaseTransport(supabase: { rpc: (...args: any[]) => any }, options?: { anonKey?: string }): Transport;

export type ErrorAction =
  | 'report' | 'sign_in' | 'wait' | 'refresh' | 'check_permissions' | 'fix_request' | 'contact_admin'
  | 'retry_later' | 'retry' | 'keep_polling' | 'poll_slower' | 'restart_device_flow' | 'stop';

export interface ErrorInfo {
  code?: string | null;
  status?: number | null;
  details?: string | null;
  hint?: string | null;
  cause?: unknown;
  message?: string;
}

export class ExtensionTokensError extends Error {
  constructor(message: string, info?: ErrorInfo);
  /** SQLSTATE or PostgREST code (PT401, PGRST301, 42501, ...), null for a network error. */
  readonly code: string | null;
  /** HTTP status; 0 when no answer arrived. */
  readonly status: number | null;
  readonly details: string | null;
  readonly hint: string | null;
  /** What the caller should do about it. */
  readonly action: ErrorAction;
}

export type SignedOutReason =
  | 'refresh_token_not_found' | 'refresh_token_expired' | 'refresh_token_already_used'
  | 'session_revoked' | 'session_expired'
  | 'signed_out' | 'signed_out_elsewhere' | 'no_session'
  /** The server exchanged the refresh token and the new pair was lost here (sending it again would be reuse). */
  | 'refresh_lost';

export const SIGNED_OUT_REASONS: readonly string[];

export class SignedOutError extends ExtensionTokensError {
  constructor(reason: SignedOutReason | string, info?: ErrorInfo);
  readonly reason: SignedOutReason | string;
  readonly action: 'sign_in';
}
export class RateLimitedError extends ExtensionTokensError {
  constructor(message: string, info?: ErrorInfo, retryAfter?: number | null, now?: number);
  /** Seconds to wait; null if the server did not say. */
  readonly retryAfter: number | null;
  /** Epoch ms from which a retry is accepted. */
  readonly retryAt: number | null;
  readonly action: 'wait';
}
export class AccessTokenRejectedError extends ExtensionTokensError {
  constructor(reason: string, info?: ErrorInfo);
  /** expired, revoked, not_found, malformed, ... (the validation error). */
  readonly reason: string;
  readonly action: 'refresh';
}
export class ExpiredBearerError extends ExtensionTokensError { readonly action: 'refresh'; }
export class ForbiddenError extends ExtensionTokensError { readonly action: 'check_permissions'; }
export class BadRequestError extends ExtensionTokensError { readonly action: 'fix_request'; }
export class ServerMisconfiguredError extends ExtensionTokensError { readonly action: 'contact_admin'; }
export class ServerError extends ExtensionTokensError { readonly action: 'retry_later'; }
export class NetworkError extends ExtensionTokensError { readonly action: 'retry'; }
export class LockTimeoutError extends ExtensionTokensError { readonly action: 'retry'; }
export class DeviceAuthorizationError extends ExtensionTokensError {}
export class AuthorizationPendingError extends DeviceAuthorizationError { readonly action: 'keep_polling'; }
export class SlowDownError extends DeviceAuthorizationError { readonly action: 'poll_slower'; }
export class DeviceCodeExpiredError extends DeviceAuthorizationError { readonly action: 'restart_device_flow'; }
export class AccessDeniedError extends DeviceAuthorizationError { readonly action: 'stop'; }

export function errorFromResponse(resp: TransportResponse, now?: number): ExtensionTokensError;
export function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
export function retryAfterOf(resp: TransportResponse, now?: number): number | null;

/** Throws a TypeError (without the tokens) for a pair whose tokens are not of our shapes:
 *  an access token of three base64url parts, a refresh token ext_rt_ and 71 (or 49) base62 characters. */
export function pairToRecord(pair: TokenPair, now?: number): SessionRecord;

export interface DeviceAuthorization {
  device_code: string;
  user_code: string;
  verification_uri_complete: string | null;
  expires_in: number;
  interval: number;
  /** Epoch ms (this machine's clock). */
  expires_at: number;
}

export interface TokenClientOptions {
  /** PostgREST base URL (Supabase: https://<ref>.supabase.co/rest/v1). */
  url?: string;
  /** The anon key: sent as `apikey`, and as the bearer of anonymous calls (refresh, revoke, device flow). */
  anonKey?: string;
  /** A supabase-js client: calls go through its .rpc(). */
  supabase?: { rpc: (...args: any[]) => any };
  transport?: Transport;
  fetch?: typeof fetch;
  store?: TokenStore;
  /** Store key, one per account (default 'session'). */
  key?: string;
  /** Seconds before expiry to refresh (default 300; at most half the lifetime). */
  refreshMargin?: number;
  /** Up to this many seconds earlier still, at random (default 60; at most a quarter of the lifetime). */
  refreshJitter?: number;
  /** Seconds to retry a refresh whose answer was lost (default 20; below the server's retry window). */
  retryWindow?: number;
  /** A Retry-After up to this many seconds is waited out (default 10). */
  maxRetryWait?: number;
  /** Seconds per request of the client's own (default 15). */
  requestTimeout?: number;
  /** Called once when the session ends (after the store's lock is released). */
  onSignedOut?: (err: SignedOutError) => void;
  /** Called when this client stored a new pair (after the store's lock is released). */
  onTokens?: (record: SessionRecord) => void;
  now?: () => number;
  random?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export class TokenClient {
  constructor(options: TokenClientOptions);
  readonly store: TokenStore;
  readonly key: string;
  /** The SignedOutError reported, or null. */
  readonly signedOut: SignedOutError | null;
  getSession(): Promise<SessionRecord | null>;
  setSession(pair: TokenPair): Promise<SessionRecord>;
  getAccessToken(): Promise<string>;
  refresh(options?: { force?: boolean }): Promise<SessionRecord>;
  rpc<T = any>(fn: string, args?: Record<string, unknown>, options?: { get?: boolean; signal?: AbortSignal }): Promise<T>;
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  signOut(): Promise<{ revoked: boolean; error: ExtensionTokensError | null }>;
  startDeviceAuthorization(options?: { name?: string; scopes?: string[]; signal?: AbortSignal }): Promise<DeviceAuthorization>;
  pollDeviceOnce(device: DeviceAuthorization, options?: { signal?: AbortSignal }): Promise<SessionRecord>;
  pollDeviceAuthorization(device: DeviceAuthorization,
    options?: { signal?: AbortSignal; onPending?: () => void }): Promise<SessionRecord>;
  signInWithDevice(options?: {
    name?: string; scopes?: string[]; signal?: AbortSignal; onPending?: () => void;
    onCode?: (device: DeviceAuthorization) => void | Promise<void>;
  }): Promise<SessionRecord>;
  startAutoRefresh(): void;
  stopAutoRefresh(): void;
}
