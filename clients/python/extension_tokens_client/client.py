"""The add-in's side of extension_tokens (standard library only).

TokenClient holds a token pair in a store, sends the access token with each
call, refreshes ahead of expiry (with jitter) and on a refused bearer, exactly
once however many callers (one thread at a time in the process, the store's
lock across processes, and whoever comes second reads the new pair instead of
refreshing), with the anon key as the refresh call's bearer; maps every
refusal to a typed exception; honours Retry-After; signs in by device
authorization (RFC 8628) and out by revoking with the anon key.  When the
session ends it reports SignedOutError once (on_signed_out) and makes no
further requests until a new sign-in.  A pair the server handed out is never
thrown away: if the store cannot write it, it is kept here and used, and the
store is written again later.
"""

import calendar
import http.client
import json
import random as _random
import re
import threading
import time
import urllib.error
import urllib.request

from .errors import (
    ACCESS_TOKEN_REFUSALS, AccessTokenRejectedError, AuthorizationPendingError, CancelledError,
    DeviceCodeExpiredError, ExpiredBearerError, ExtensionTokensError, NetworkError, RateLimitedError,
    ServerError, SignedOutError, SlowDownError, error_from_response,
)
from .stores import MemoryStore
from .transport import SafeRedirectHandler, UrllibTransport, check_headers

_TRANSIENT = (502, 503, 504)
# A refresh token this process saw the server exchange is not presented again
# after this long: past the server's refresh_retry_window (30 s by default) it
# is reuse, which revokes the session as a theft.
_REFRESH_LOST = 25.0
# After a failed refresh: the first retry within that window (a lost answer is
# then answered with the same pair), later ones 30 s doubling to 5 min.
_RETRY_FIRST, _RETRY_BASE, _RETRY_MAX = 5.0, 30.0, 300.0
# Our tokens' shapes (README: access tokens are compact JWS; refresh tokens
# ext_rt_ and 71 base62 characters, 49 for those made by 1.1): a token with a
# space or a line break never reaches a header or an error message.
_ACCESS_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_REFRESH_TOKEN = re.compile(r"ext_rt_(?:[0-9A-Za-z]{49}|[0-9A-Za-z]{71})")
_REQUIRED = "access_token and refresh_token are required"
_ISO = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d(?::?\d\d)?)?$")


def parse_time(text):
    """Epoch seconds from an ISO 8601 time as the server or the TypeScript client writes it."""
    m = _ISO.match(str(text).strip())
    if not m:
        raise ValueError("not an ISO 8601 time: %r" % (text,))
    y, mo, d, h, mi, s, frac, tz = m.groups()
    t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    if frac:
        t += float("0." + frac)
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        t -= sign * offset
    return t


def format_time(t):
    """ISO 8601 UTC with milliseconds, as JavaScript's toISOString() writes it."""
    ms = int(round((t - int(t)) * 1000))
    if ms == 1000:
        t, ms = int(t) + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + ".%03dZ" % ms


def pair_to_record(pair, now=None):
    """The record a store keeps for a pair (as issue, refresh and device_poll return it).

    expires_at is reckoned on this machine's clock from expires_in when the server
    gives it, so that a skewed clock neither refreshes in a loop nor too late.
    """
    problem = _pair_problem(pair)
    if problem == _REQUIRED:
        raise TypeError("not a token pair: " + problem)
    if problem:
        raise ValueError("not a token pair: " + problem)
    now = time.time() if now is None else now
    if isinstance(pair.get("expires_in"), (int, float)) and not isinstance(pair.get("expires_in"), bool):
        expires = now + pair["expires_in"]
    else:
        try:
            expires = parse_time(pair.get("expires_at"))
        except ValueError:
            expires = now
    return {
        "access_token": pair["access_token"],
        "refresh_token": pair["refresh_token"],
        "token_type": pair.get("token_type") or "Bearer",
        "expires_at": format_time(expires),
        "refresh_expires_at": pair.get("refresh_expires_at"),
        "session_id": pair.get("session_id"),
        "scopes": pair.get("scopes"),
        "obtained_at": format_time(now),
    }


def _pair_problem(pair):
    """What is wrong with a pair (never the tokens themselves), or None."""
    if not isinstance(pair, dict) or not isinstance(pair.get("access_token"), str) \
            or not isinstance(pair.get("refresh_token"), str):
        return _REQUIRED
    if not _ACCESS_TOKEN.fullmatch(pair["access_token"]):
        return "the access token is not three base64url parts (a space or a line break?)"
    if not _REFRESH_TOKEN.fullmatch(pair["refresh_token"]):
        return "the refresh token is not ext_rt_ and 71 letters and digits"
    return None


def _is_session(rec):
    # a stored record with tokens of another shape is unreadable: as if empty
    return _pair_problem(rec) is None


def _refuses_token(headers, body):
    """Whether a 401 of an API says the bearer itself is refused (RFC 6750 invalid_token,
    PostgREST's PGRST301, the pre-request's PT401), not something a new token leaves as is."""
    if re.search(r"\binvalid_token\b", headers.get("www-authenticate", ""), re.I):
        return True
    try:
        b = json.loads(body.decode("utf-8"))
    except (ValueError, AttributeError):
        return False
    return isinstance(b, dict) and (b.get("code") == "PGRST301"
                                    or (b.get("code") == "PT401" and b.get("details") in ACCESS_TOKEN_REFUSALS))


class _Flight(object):
    __slots__ = ("done", "result", "error")

    def __init__(self):
        self.done = threading.Event()
        self.result = None
        self.error = None


class SignOutResult(object):
    """What sign_out did: revoked on the server (bool), and the error if it could not."""

    __slots__ = ("revoked", "error")

    def __init__(self, revoked, error):
        self.revoked = revoked
        self.error = error

    def __repr__(self):
        return "SignOutResult(revoked=%r, error=%r)" % (self.revoked, self.error)


class TokenClient(object):
    """
    url, anon_key: PostgREST (Supabase: https://<ref>.supabase.co/rest/v1) and the anon key,
        sent as `apikey` and as the bearer of anonymous calls (refresh, revoke, device flow).
    store: MemoryStore (default) or FileStore(directory); key: one per account.
    refresh_margin: seconds before expiry to refresh (300; at most half the lifetime);
    refresh_jitter: up to this many seconds earlier still, at random (60; at most a quarter).
    retry_window: seconds to retry a refresh whose answer was lost (20; keep it below the
        server's extension_tokens.refresh_retry_window, 30 s by default).
    max_retry_wait: a Retry-After up to this many seconds is waited out (10).
    on_signed_out(err): called once when the session ends; on_tokens(record): when a new pair
        was stored.  Both are called after the store's lock is released.
    transport, clock, sleep, random: replaceable (tests).
    """

    def __init__(self, url=None, anon_key=None, store=None, key="session", transport=None,
                 refresh_margin=300.0, refresh_jitter=60.0, retry_window=20.0, max_retry_wait=10.0,
                 timeout=15.0, on_signed_out=None, on_tokens=None, clock=None, sleep=None, random=None):
        self.transport = transport or UrllibTransport(url, anon_key, timeout=timeout)
        self.store = store if store is not None else MemoryStore()
        self.key = key
        self.refresh_margin = refresh_margin
        self.refresh_jitter = refresh_jitter
        self.retry_window = retry_window
        self.max_retry_wait = max_retry_wait
        self.on_signed_out = on_signed_out
        self.on_tokens = on_tokens
        self._clock = clock or time.time
        self._sleep = sleep or time.sleep
        self._random = random or _random.random
        self._state = threading.RLock()
        self._flight = None                   # the refresh in progress in this process
        self._signed_out = None
        self._refused = None
        self._seen = None
        self._rate_until = 0.0
        self._failures = 0                    # refreshes failed in a row
        self._retry_at = 0.0                  # no refresh ahead of expiry before this (the backoff)
        self._pending = None                  # (record, over): received, not stored; used instead of `over`
        self._exchanged = {}                  # refresh token -> when the server answered its exchange
        self._recovered = None                # the access token a refresh after a 401 obtained
        self._jitter = (None, 0.0)

    # ---------------------------------------------------------------- session

    @property
    def signed_out(self):
        """The SignedOutError reported, or None."""
        return self._signed_out

    def get_session(self):
        """The stored record, or the newer pair not stored yet (no network); None without a session."""
        rec = self._live(self.store.get(self.key))
        return dict(rec) if _is_session(rec) else None

    def set_session(self, pair):
        """Stores a pair handed over by the dashboard (or a device poll) and resumes."""
        rec = pair_to_record(pair, self._clock())
        with self.store.lock(self.key):
            self.store.set(self.key, rec)
        self._resume(rec)
        if self.on_tokens:
            self.on_tokens(rec)
        return rec

    def get_access_token(self):
        return self._fresh()["access_token"]

    def refresh(self, force=True):
        rec = self._current()
        if not force and not self._due(rec):
            return rec
        return self._refresh(rec)

    def rpc(self, fn, args=None, get=False):
        """Calls a PostgREST function with the access token as bearer; a refused
        bearer (PT401 from the pre-request, PGRST301) is refreshed once and the
        call retried once. Returns the data; raises a typed error otherwise."""
        rec = self._fresh()
        resp = self.transport.rpc(fn, args or {}, bearer=rec["access_token"], get=get)
        if not resp.ok:
            err = error_from_response(resp, self._clock())
            if not isinstance(err, (AccessTokenRejectedError, ExpiredBearerError)):
                raise err
            refused = isinstance(err, ExpiredBearerError) or err.reason in ACCESS_TOKEN_REFUSALS
            if not self._refreshes_on_401(rec, refused):
                raise err
            rec = self._recover(rec)
            resp = self.transport.rpc(fn, args or {}, bearer=rec["access_token"], get=get)
            if not resp.ok:
                raise error_from_response(resp, self._clock())
        return resp.data

    def authorization_header(self):
        """{'Authorization': 'Bearer <access token>'} for an API of one's own."""
        return {"Authorization": "Bearer " + self.get_access_token()}

    def request(self, url, method="GET", data=None, headers=None, timeout=15.0):
        """An HTTP request to an API of one's own that validates our tokens, with the
        access token as bearer; on a 401 that refuses the token (WWW-Authenticate
        invalid_token, PGRST301, PT401 expired/revoked/...), or for a token expired here,
        the token is refreshed once and the request sent again. Redirects are followed,
        but not from https to http (the redirect is returned), and Authorization and
        apikey are not sent to another scheme, host or port. Returns (status, headers
        with lower-case names, body bytes); no answer at all raises NetworkError."""
        opener = urllib.request.build_opener(SafeRedirectHandler())

        def send(rec):
            h = dict(headers or {})
            h["Authorization"] = "Bearer " + rec["access_token"]
            check_headers(h)
            req = urllib.request.Request(url, data=data, headers=h, method=method)
            try:
                with opener.open(req, timeout=timeout) as res:
                    return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
            except urllib.error.HTTPError as e:
                return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                raise NetworkError(str(getattr(e, "reason", e)), status=0)
        rec = self._fresh()
        answer = send(rec)
        if answer[0] == 401 and self._refreshes_on_401(rec, _refuses_token(answer[1], answer[2])):
            answer = send(self._recover(rec))
        return answer

    def sign_out(self):
        """Revokes the session with the anon key (the token is the credential, RFC 7009)
        and forgets the tokens, here and in every process sharing the store; they are
        forgotten even when the server cannot be reached (then .error says so)."""
        revoked, error = False, None
        with self.store.lock(self.key):
            rec = self._live(self.store.get(self.key))
            if _is_session(rec):
                resp = self.transport.rpc("extension_token_revoke", {"p_token": rec["refresh_token"]})
                if resp.ok:
                    revoked = resp.data is True
                else:
                    error = error_from_response(resp, self._clock())
            self.store.set(self.key, {"signed_out": {"reason": "signed_out", "at": format_time(self._clock())}})
        with self._state:
            self._pending = None
            self._signed_out = SignedOutError("signed_out")
            self._refused = rec.get("refresh_token") if isinstance(rec, dict) else None
        return SignOutResult(revoked, error)

    # ------------------------------------------------------------ device flow

    def start_device_authorization(self, name=None, scopes=None):
        """Starts a device authorization (anonymous). Show device['user_code'], or open
        device['verification_uri_complete'], then poll_device_authorization(device)."""
        args = {}
        if name is not None:
            args["p_name"] = name
        if scopes is not None:
            args["p_scopes"] = list(scopes)
        resp = self.transport.rpc("extension_token_device_start", args)
        if not resp.ok:
            raise error_from_response(resp, self._clock())
        d = dict(resp.data)
        d["expires_at"] = self._clock() + float(d.get("expires_in") or 0)
        return d

    def poll_device_once(self, device):
        """One poll: the stored record once approved; otherwise raises
        AuthorizationPendingError, SlowDownError, DeviceCodeExpiredError, AccessDeniedError..."""
        resp = self.transport.rpc("extension_token_device_poll", {"p_device_code": device["device_code"]})
        if not resp.ok:
            raise error_from_response(resp, self._clock())
        return self.set_session(resp.data)

    def poll_device_authorization(self, device, on_pending=None, cancel=None):
        """Polls every `interval` seconds (5 more after each slow_down, waiting out a 429,
        backing off on network errors) until approved; raises AccessDeniedError,
        DeviceCodeExpiredError (also once expires_in passed) or CancelledError
        (cancel: a threading.Event).  Run it off the UI thread."""
        interval = max(1.0, float(device.get("interval") or 5))
        wait = interval
        deadline = device.get("expires_at") or self._clock() + float(device.get("expires_in") or 600)
        while True:
            self._pause(wait, cancel)
            if self._clock() >= deadline:
                raise DeviceCodeExpiredError("the device code expired", code="PT400", details="expired_token")
            try:
                return self.poll_device_once(device)
            except AuthorizationPendingError:
                if on_pending:
                    on_pending()
                wait = interval
            except SlowDownError:
                interval += 5
                wait = interval
            except RateLimitedError as e:
                wait = max(interval, float(e.retry_after if e.retry_after is not None else interval))
            except (NetworkError, ServerError) as e:
                if isinstance(e, ServerError) and e.status not in _TRANSIENT:
                    raise
                wait = min(wait * 2, 60.0)

    def sign_in_with_device(self, name=None, scopes=None, on_code=None, on_pending=None, cancel=None):
        """The whole hand-off: start, give the code to on_code(device), poll until approved."""
        device = self.start_device_authorization(name, scopes)
        if on_code:
            on_code(device)
        return self.poll_device_authorization(device, on_pending, cancel)

    # -------------------------------------------------------------- internals

    def _pause(self, seconds, cancel):
        if cancel is not None:
            if cancel.wait(seconds):
                raise CancelledError("cancelled")
        else:
            self._sleep(seconds)

    def _resume(self, rec):
        with self._state:
            self._signed_out = None
            self._refused = None
            self._seen = rec["refresh_token"]
            self._pending = None
            self._failures, self._retry_at = 0, 0.0

    def _report(self, err, deferred=None):
        """Reports the end of the session: the callback once, then the same answer.
        With `deferred` (the lock is held) the callback waits there until it is released."""
        call = False
        with self._state:
            if self._signed_out is None:
                self._signed_out = err
                call = err.reason != "no_session"
            first = self._signed_out
        if call and self.on_signed_out:
            if deferred is not None:
                deferred.append(err)
            else:
                self._notify(err)
        return SignedOutError(first.reason, first.message)

    def _notify(self, err):
        try:
            self.on_signed_out(err)
        except Exception:  # the callback's problem
            pass

    def _live(self, stored):
        """The stored record, or the pair received for it but not stored yet (the server replaced it)."""
        with self._state:
            p = self._pending
            if p is None:
                return stored
            if _is_session(stored) and stored["refresh_token"] == p[1]:
                return p[0]
            self._pending = None  # the store moved on: a sign-in, a sign-out, another process's pair
            return stored

    def _current(self, deferred=None):
        """The session (stored, or received and not stored yet), or SignedOutError (no request either way)."""
        rec = self._live(self.store.get(self.key))
        with self._state:
            if _is_session(rec):
                if self._signed_out is not None:
                    if rec["refresh_token"] == self._refused:
                        raise self._report(self._signed_out, deferred)
                    self._signed_out = None  # a sign-in since, here or elsewhere
                    self._refused = None
                self._seen = rec["refresh_token"]
                return rec
            if self._signed_out is not None:
                signed_out = self._signed_out
            else:
                signed_out = None
        if signed_out is not None:
            raise self._report(signed_out, deferred)
        reason = (rec or {}).get("signed_out", {}).get("reason") if isinstance(rec, dict) else None
        if not reason:
            reason = "signed_out_elsewhere" if self._seen else "no_session"
        raise self._report(SignedOutError(reason), deferred)

    def _expired(self, rec):
        return self._clock() >= parse_time(rec["expires_at"])

    def _due_at(self, rec):
        exp = parse_time(rec["expires_at"])
        try:
            got = parse_time(rec.get("obtained_at"))
            life = exp - got if exp > got else float("inf")
        except ValueError:
            life = float("inf")
        margin = min(self.refresh_margin, life / 2)
        with self._state:
            if self._jitter[0] != rec["refresh_token"]:
                span = min(self.refresh_jitter, life / 4)
                self._jitter = (rec["refresh_token"], self._random() * span)
            jitter = self._jitter[1]
        return exp - margin - jitter

    def _due(self, rec):
        return self._clock() >= self._due_at(rec)

    def _fresh(self):
        if self._pending is not None:
            self._flush()
        rec = self._current()
        if not self._due(rec):
            return rec
        # A refresh ahead that failed is not tried again before its backoff or Retry-After.
        if not self._expired(rec) and self._clock() < max(self._retry_at, self._rate_until):
            return rec
        try:
            return self._refresh(rec)
        except (RateLimitedError, NetworkError, ServerError):
            # Refreshing ahead is a courtesy: while the token lives, keep using it.
            if not self._expired(rec):
                return rec
            raise

    def _backoff(self):
        """After a failed refresh: none ahead of expiry before 5 s, then 30 s doubling to 5 min
        (and up to half again, at random)."""
        with self._state:
            self._failures += 1
            base = _RETRY_FIRST if self._failures == 1 else \
                min(_RETRY_BASE * 2 ** (self._failures - 2), _RETRY_MAX)
            self._retry_at = self._clock() + base * (1 + self._random() / 2)

    def _refreshes_on_401(self, sent, refused):
        """After a 401 for `sent`: refresh only for a token expired here, or an answer that
        refuses the token, and not for the token a refresh after a 401 just obtained.
        Otherwise every such call would rotate the pair, and the refresh limit is per user."""
        if self._expired(sent):
            return True
        return refused and sent["access_token"] != self._recovered

    def _recover(self, sent):
        """After the server refused the access token of `sent`: the pair to retry with."""
        cur = self._current()
        if cur["access_token"] != sent["access_token"]:
            return cur  # refreshed meanwhile, here or elsewhere
        rec = self._refresh(cur)
        self._recovered = rec["access_token"]
        return rec

    def _refresh(self, observed):
        """One refresh for every concurrent caller in this process: the first
        thread refreshes, the others wait for its outcome and share it."""
        with self._state:
            flight = self._flight
            leader = flight is None
            if leader:
                flight = self._flight = _Flight()
        if not leader:
            flight.done.wait()
            if isinstance(flight.error, SignedOutError):
                raise self._report(flight.error)
            if flight.error is not None:
                raise flight.error
            return flight.result
        try:
            flight.result = self._refresh_locked(observed)
            return flight.result
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._state:
                self._flight = None
            flight.done.set()

    def _flush(self):
        """Writes the pair received but not stored, under the lock; it stays in memory if the store fails again."""
        written = []
        try:
            with self.store.lock(self.key):
                self._store_pending(written)
        except Exception:  # the lock or the store: the next call tries again
            pass
        self._tell(written)

    def _store_pending(self, written):
        """Under the lock: stores the pending pair unless the store moved on."""
        with self._state:
            p = self._pending
        if p is None or self._live(self.store.get(self.key)) is not p[0]:
            return
        try:
            self.store.set(self.key, p[0])
        except Exception:  # a full disk, a locked file: kept in memory
            return
        with self._state:
            if self._pending is p:
                self._pending = None
        written.append(p[0])

    def _tell(self, written):
        if self.on_tokens:
            for rec in written:
                self.on_tokens(rec)

    def _end(self, err, refresh_token, deferred):
        """The session is over: a tombstone for every process sharing the store, and the report."""
        with self._state:
            self._refused = refresh_token
            self._pending = None
        self.store.set(self.key, {"signed_out": {"reason": err.reason, "at": format_time(self._clock())}})
        return self._report(err, deferred)

    def _refresh_locked(self, observed):
        """Under the store's lock: read again; refresh only if nobody else did.  The callbacks
        run after the lock is released: one that signs in again takes the same lock."""
        deferred, written = [], []
        try:
            with self.store.lock(self.key):
                return self._refresh_under_lock(observed, deferred, written)
        finally:
            for err in deferred:
                self._notify(err)
            self._tell(written)

    def _refresh_under_lock(self, observed, deferred, written):
        cur = self._current(deferred)  # the loser re-reads
        self._store_pending(written)
        if cur["refresh_token"] != observed["refresh_token"]:
            return cur
        now = self._clock()
        if now < self._rate_until:
            left = int(-(-(self._rate_until - now) // 1))
            raise RateLimitedError("no refresh before the server's Retry-After (%d s)" % left,
                                   retry_after=left, now=now)
        exchanged = self._exchanged.get(cur["refresh_token"])
        if exchanged is not None and now - exchanged > _REFRESH_LOST:
            lost = SignedOutError("refresh_lost", "signed out (refresh_lost): the server exchanged the "
                                  "refresh token and the new pair was lost here")
            raise self._end(lost, cur["refresh_token"], deferred)
        try:
            pair = self._exchange(cur["refresh_token"])
        except SignedOutError as e:
            raise self._end(e, cur["refresh_token"], deferred)
        except ExtensionTokensError:
            self._backoff()
            raise
        rec = pair_to_record(pair, self._clock())
        with self._state:
            self._failures, self._retry_at = 0, 0.0
            self._seen = rec["refresh_token"]
            # kept in memory until stored: the refresh token it replaced must not be presented again
            self._pending = (rec, self._pending[1] if self._pending is not None else cur["refresh_token"])
        self._store_pending(written)
        return rec

    def _exchange(self, refresh_token):
        """extension_token_refresh, anonymous.  A lost answer (network error,
        502-504) is retried with the same refresh token within retry_window: the
        server's retry window answers with the same pair.  A 429 records its
        Retry-After, and is waited out when short."""
        start = self._clock()
        backoff = 0.25
        while True:
            resp = self.transport.rpc("extension_token_refresh", {"p_refresh_token": refresh_token})
            if resp.ok:
                with self._state:
                    self._exchanged.setdefault(refresh_token, self._clock())
                    while len(self._exchanged) > 8:
                        del self._exchanged[next(iter(self._exchanged))]
                if not _is_session(resp.data):
                    raise ServerError("the refresh answered without a well-formed token pair", status=resp.status)
                return resp.data
            err = error_from_response(resp, self._clock())
            if isinstance(err, RateLimitedError):
                wait = err.retry_after if err.retry_after is not None else 60
                self._rate_until = self._clock() + wait
                if wait > self.max_retry_wait:
                    raise err
                self._sleep(wait)
                continue
            lost = isinstance(err, NetworkError) or (isinstance(err, ServerError) and err.status in _TRANSIENT)
            if lost and self._clock() + backoff - start <= self.retry_window:
                self._sleep(backoff)
                backoff = min(backoff * 2, 4.0)
                continue
            raise err
