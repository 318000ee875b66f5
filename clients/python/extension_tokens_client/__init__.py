"""extension_tokens client for desktop add-ins (e.g. a Fusion 360 add-in).

Standard library only: copy this directory next to the add-in's code.

    from extension_tokens_client import TokenClient, FileStore, SignedOutError

    client = TokenClient(url="https://<ref>.supabase.co/rest/v1", anon_key=ANON_KEY,
                         store=FileStore(os.path.join(app_data, "tokens")),
                         on_signed_out=lambda e: show_sign_in())
    client.sign_in_with_device(name="Fusion add-in", on_code=lambda d: show(d["user_code"]))
    me = client.rpc("whoami")
    client.sign_out()
"""

from .client import SignOutResult, TokenClient, format_time, pair_to_record, parse_time
from .errors import (
    SIGNED_OUT_REASONS, AccessDeniedError, AccessTokenRejectedError, AuthorizationPendingError,
    BadRequestError, CancelledError, DeviceAuthorizationError, DeviceCodeExpiredError,
    ExpiredBearerError, ExtensionTokensError, ForbiddenError, LockTimeoutError, NetworkError,
    RateLimitedError, ServerError, ServerMisconfiguredError, SignedOutError, SlowDownError,
    error_from_response, parse_retry_after, retry_after_of,
)
from .stores import FileStore, MemoryStore, file_name_of
from .transport import Response, UrllibTransport

__version__ = "1.2.0"

__all__ = [
    "TokenClient", "SignOutResult", "pair_to_record", "parse_time", "format_time",
    "MemoryStore", "FileStore", "file_name_of", "UrllibTransport", "Response",
    "SIGNED_OUT_REASONS", "ExtensionTokensError", "SignedOutError", "RateLimitedError",
    "AccessTokenRejectedError", "ExpiredBearerError", "ForbiddenError", "BadRequestError",
    "ServerMisconfiguredError", "ServerError", "NetworkError", "LockTimeoutError",
    "DeviceAuthorizationError", "AuthorizationPendingError", "SlowDownError",
    "DeviceCodeExpiredError", "AccessDeniedError", "CancelledError",
    "error_from_response", "parse_retry_after", "retry_after_of",
]
