// extension_tokens client: the add-in's side of the token lifecycle.
// No dependency beyond fetch.  Node.js-only parts live in './file-store.js'
// (FileStore, FileLock) and the VS Code adapter in './vscode.js'.
export { TokenClient, pairToRecord } from './client.js';
export { MemoryStore, KeyedMutex } from './stores.js';
export { fetchTransport, supabaseTransport } from './transport.js';
export {
  SIGNED_OUT_REASONS, ExtensionTokensError, SignedOutError, RateLimitedError, AccessTokenRejectedError,
  ExpiredBearerError, ForbiddenError, BadRequestError, ServerMisconfiguredError, ServerError, NetworkError,
  LockTimeoutError, DeviceAuthorizationError, AuthorizationPendingError, SlowDownError, DeviceCodeExpiredError,
  AccessDeniedError, errorFromResponse, parseRetryAfter, retryAfterOf,
} from './errors.js';
