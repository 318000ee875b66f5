"""PostgREST's /rpc over urllib (standard library only).

A transport has one method, rpc(fn, args, bearer=None, get=False), that never
raises for an HTTP or network failure: it returns a Response with status,
data, error (PostgREST's JSON error body) and headers (lower-case names);
status 0 and network=True when no answer arrived.  bearer None means
anonymous: the anon key is the bearer, never an access token of ours.
"""

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request


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
        self._urlopen = urlopen or urllib.request.urlopen

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
            if not isinstance(body, dict):
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
