"""One exception class per kind of refusal, each with the action it implies.

The server answers in six shapes (through PostgREST, a JSON body
{code, message, details, hint} with an HTTP status):

  PT401 + DETAIL refresh_token_* / session_*   the refresh was refused: signed out
  PT401 + DETAIL expired / revoked / ...       extension_token_pre_request refused the bearer
  PGRST301                                     PostgREST itself refused the bearer JWT
  PT429 (429, Retry-After)                     rate limited
  PT400 + DETAIL authorization_pending / ...   device authorization (RFC 8628)
  42501, 22023, 55000                          forbidden, bad request, server not configured

error_from_response() maps an answer to one of the classes below.
"""

import re
import time
from email.utils import parsedate_to_datetime

SIGNED_OUT_REASONS = (
    "refresh_token_not_found",
    "refresh_token_expired",
    "refresh_token_already_used",
    "session_revoked",
    "session_expired",
)

#: DETAILs of PT401 from extension_token_pre_request that a new access token cures (its
#: validation errors, less missing and insufficient_scope): a 401 for any other reason (a
#: resource an API refuses, say) is not answered with a refresh.
ACCESS_TOKEN_REFUSALS = (
    "expired",
    "revoked",
    "not_found",
    "malformed",
    "invalid_signature",
    "unsupported_algorithm",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "wrong_token_type",
)


class ExtensionTokensError(Exception):
    """Base class of every error the client raises."""

    action = "report"

    def __init__(self, message, code=None, status=None, details=None, hint=None):
        super().__init__(message)
        self.message = message
        #: SQLSTATE or PostgREST code (PT401, PGRST301, 42501, ...); None without an answer
        self.code = code
        #: HTTP status; 0 when no answer arrived
        self.status = status
        self.details = details
        self.hint = hint


class SignedOutError(ExtensionTokensError):
    """The session is over (refresh refused, revoked, signed out): sign in again.

    reason: refresh_token_already_used, session_revoked, session_expired,
    refresh_token_expired, refresh_token_not_found, signed_out (this client's
    sign_out), signed_out_elsewhere, no_session, refresh_lost (the server exchanged
    the refresh token and the new pair was lost here).
    """

    action = "sign_in"

    def __init__(self, reason, message=None, **info):
        info["details"] = reason
        super().__init__(message or "signed out (%s)" % reason, **info)
        self.reason = reason


class RateLimitedError(ExtensionTokensError):
    """PT429: retry after retry_after seconds (None if the server did not say)."""

    action = "wait"

    def __init__(self, message, retry_after=None, now=None, **info):
        info.setdefault("code", "PT429")
        info.setdefault("status", 429)
        super().__init__(message, **info)
        self.retry_after = retry_after
        #: epoch seconds from which a retry is accepted
        self.retry_at = None if retry_after is None else (now if now is not None else time.time()) + retry_after


class AccessTokenRejectedError(ExtensionTokensError):
    """PT401 from extension_token_pre_request: the bearer was refused (reason expired,
    revoked, not_found, ...). The client refreshes once and retries."""

    action = "refresh"

    def __init__(self, reason, message=None, **info):
        info["details"] = reason
        super().__init__(message or "access token rejected (%s)" % reason, **info)
        self.reason = reason


class ExpiredBearerError(ExtensionTokensError):
    """PGRST301: PostgREST refused the bearer JWT. The client refreshes once and retries."""

    action = "refresh"


class ForbiddenError(ExtensionTokensError):
    """42501: the caller may not do this (wrong user, missing grant)."""

    action = "check_permissions"


class BadRequestError(ExtensionTokensError):
    """22023 (and other 4xx): the request is wrong; a retry does not help."""

    action = "fix_request"


class ServerMisconfiguredError(ExtensionTokensError):
    """55000: the server is not configured (secret missing, library not preloaded)."""

    action = "contact_admin"


class ServerError(ExtensionTokensError):
    """Another 5xx: retry later; the tokens are kept."""

    action = "retry_later"


class NetworkError(ExtensionTokensError):
    """No answer (refused, reset, timed out): retry; the tokens are kept."""

    action = "retry"


class LockTimeoutError(ExtensionTokensError):
    """The store's lock was not obtained in time."""

    action = "retry"


class DeviceAuthorizationError(ExtensionTokensError):
    """PT400 from the device authorization (RFC 8628) functions."""

    action = "restart_device_flow"


class AuthorizationPendingError(DeviceAuthorizationError):
    """authorization_pending: not approved yet; poll again after the interval."""

    action = "keep_polling"


class SlowDownError(DeviceAuthorizationError):
    """slow_down: polled faster than the interval; add 5 seconds to it."""

    action = "poll_slower"


class DeviceCodeExpiredError(DeviceAuthorizationError):
    """expired_token: the device code expired (or was used); start again."""

    action = "restart_device_flow"


class AccessDeniedError(DeviceAuthorizationError):
    """access_denied: the user denied the request; stop."""

    action = "stop"


class CancelledError(ExtensionTokensError):
    """The device flow was cancelled (the cancel event was set)."""

    action = "stop"


_DEVICE_ERRORS = {
    "authorization_pending": AuthorizationPendingError,
    "slow_down": SlowDownError,
    "expired_token": DeviceCodeExpiredError,
    "access_denied": AccessDeniedError,
}


def parse_retry_after(value, now=None):
    """Seconds from a Retry-After value (delta-seconds or an HTTP date); None if unreadable."""
    if value is None:
        return None
    s = str(value).strip()
    if s.isdigit():
        return int(s)
    try:
        at = parsedate_to_datetime(s).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    now = time.time() if now is None else now
    return max(0, int(-(-(at - now) // 1)))


def retry_after_of(resp, now=None):
    """The retry time of a 429: the Retry-After header, else body retry_after, else the hint."""
    header = (resp.headers or {}).get("retry-after")
    seconds = parse_retry_after(header, now)
    if seconds is not None:
        return seconds
    body = resp.error if isinstance(resp.error, dict) else {}
    ra = body.get("retry_after")
    if isinstance(ra, (int, float)) and not isinstance(ra, bool):
        return max(0, int(-(-ra // 1)))
    hint = body.get("hint")
    m = re.search(r"\bin (\d+) seconds?\b", hint) if isinstance(hint, str) else None
    return int(m.group(1)) if m else None


def error_from_response(resp, now=None):
    """The typed error for a failed transport answer (status, error body, headers)."""
    status = resp.status or 0
    body = resp.error if isinstance(resp.error, dict) else {"message": str(resp.error or "")}
    code = body.get("code") or None
    details = body.get("details")
    info = dict(code=code, status=status, details=details, hint=body.get("hint"))
    message = body.get("message") or ("HTTP %d" % status if status else "no answer from the server")
    if status == 0 or resp.network:
        return NetworkError(message, **info)
    if code == "PT429" or status == 429:
        return RateLimitedError(message, retry_after=retry_after_of(resp, now), now=now, **info)
    if code == "PT401":
        info.pop("details")
        if details in SIGNED_OUT_REASONS:
            return SignedOutError(details, message, **info)
        return AccessTokenRejectedError(details or "unknown", message, **info)
    if code == "PGRST301":
        return ExpiredBearerError(message, **info)
    if code == "PGRST300":
        return ServerMisconfiguredError(message, **info)
    if code == "PGRST302":
        return ForbiddenError(message, **info)
    if code == "PT400" and details in _DEVICE_ERRORS:
        return _DEVICE_ERRORS[details](message, **info)
    if code == "42501" or status == 403:
        return ForbiddenError(message, **info)
    if code == "55000":
        return ServerMisconfiguredError(message, **info)
    if code == "22023" or (400 <= status < 500 and status != 401):
        return BadRequestError(message, **info)
    if status == 401:
        info.pop("details")
        return AccessTokenRejectedError(details or "unknown", message, **info)
    if status >= 500:
        return ServerError(message, **info)
    return ExtensionTokensError(message, **info)
