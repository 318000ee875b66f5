"""PostgREST's /rpc over urllib (standard library only).

A transport has one method, rpc(fn, args, bearer=None, get=False), that never
raises for an HTTP or network failure: it returns a Response with status,
data, error (PostgREST's JSON error body) and headers (lower-case names);
status 0 and network=True when no answer arrived (a header that cannot be
sent raises BadRequestError).  bearer None means anonymous: the anon key is
the bearer, never an access token of ours.  PostgREST answers /rpc without
redirects: one is not followed.
"""

import http.client
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from .errors import BadRequestError


class Response(object):
    __slots__ = ("status", "data", "error", "headers", "network")

    def __init__(self, status, data=None, error=None, headers=None, network=False):
        self.status = status
        self.data = data
        self.error = error
        self.headers = headers or {}
        self.network = network

    @property
    def ok(self):
        return 200 <= self.status < 300 and self.error is None

    def __repr__(self):
        return "Response(status=%r, error=%r)" % (self.status, self.error)


def _array_literal(values):
    return "{" + ",".join(json.dumps(str(v)) for v in values) + "}"


_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


def check_headers(headers):
    """BadRequestError (a retry does not help) for a header value http.client would
    refuse, naming the header only: its value may be a token."""
    for name, value in headers.items():
        if _BAD_HEADER_VALUE.search(str(value)):
            raise BadRequestError("the %s header has a line break or a character HTTP does not allow; "
                                  "nothing was sent" % name)


def _origin(url):
    scheme = url.scheme.lower()
    try:
        port = url.port
    except ValueError:
        port = -1
    return scheme, (url.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """For /rpc: a redirect is answered as it came (it would take the bearer and the apikey along)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, but never from https to http (the redirect is then
    answered as it came), and without Authorization and apikey to another scheme, host or port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if old.scheme.lower() == "https" and new.scheme.lower() != "https":
            return None
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is not None and _origin(old) != _origin(new):
            for name in list(follow.headers):
                if name.lower() in ("authorization", "apikey"):
                    del follow.headers[name]
        return follow


class UrllibTransport(object):
    """PostgREST at `url` (Supabase: https://<ref>.supabase.co/rest/v1).

    anon_key: sent as `apikey` on every call, and as the bearer of anonymous
    calls. urlopen: replaceable (tests record the requests with it).
    """

    def __init__(self, url, anon_key=None, timeout=15.0, headers=None, urlopen=None):
        if not url:
            raise ValueError("url is required")
        self.base = url.rstrip("/")
        self.anon_key = anon_key
        self.timeout = timeout
        self.extra_headers = dict(headers or {})
        self._urlopen = urlopen or urllib.request.build_opener(_NoRedirect()).open

    def rpc(self, fn, args=None, bearer=None, get=False):
        args = args or {}
        headers = {"Accept": "application/json"}
        headers.update(self.extra_headers)
        if self.anon_key:
            headers["apikey"] = self.anon_key
        auth = bearer if bearer is not None else self.anon_key
        if auth:
            headers["Authorization"] = "Bearer " + auth
        url = "%s/rpc/%s" % (self.base, urllib.parse.quote(fn, safe=""))
        data = None
        if get:
            q = {k: (_array_literal(v) if isinstance(v, (list, tuple)) else str(v))
                 for k, v in args.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
            method = "GET"
        else:
            headers["Content-Type"] = "application/json"
            data = json.dumps(args).encode("utf-8")
            method = "POST"
        check_headers(headers)
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            res = self._urlopen(req, timeout=self.timeout)
            try:
                status = res.status if hasattr(res, "status") else res.getcode()
                text = res.read().decode("utf-8", "replace")
                hdrs = {k.lower(): v for k, v in res.headers.items()}
            finally:
                res.close()
        except urllib.error.HTTPError as e:
            try:
                text = e.read().decode("utf-8", "replace")
            except (OSError, socket.timeout):
                text = ""
            hdrs = {k.lower(): v for k, v in (e.headers.items() if e.headers else [])}
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            if 300 <= e.code < 400:
                body = {"message": "PostgREST answered with a redirect (HTTP %d), not followed: is the url right?"
                                   % e.code}
            elif not isinstance(body, dict):
                body = {"message": text or ("HTTP %d" % e.code)}
            return Response(e.code, None, body, hdrs)
        except (urllib.error.URLError, http.client.HTTPException, OSError, socket.timeout, ValueError) as e:
            # ValueError: http.client.InvalidURL and friends; OSError: reset, refused, timeout
            return Response(0, None, {"message": str(getattr(e, "reason", e))}, None, network=True)
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Response(status, parsed, None, hdrs)
