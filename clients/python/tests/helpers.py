"""Shared by the Python client tests: the PostgRESTs test/clients.sh started,
JWTs minted as Supabase Auth mints them, raw calls for what the dashboard does,
the server's own count of refreshes, and a urlopen that records (and loses)."""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import unittest
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SERVER = bool(os.environ.get("ET_CLIENTS_URL"))
needs_server = unittest.skipUnless(SERVER, "run through test/clients.sh (ET_CLIENTS_URL is not set)")
BASE = os.environ.get("ET_CLIENTS_URL", "")
RETRY_BASE = os.environ.get("ET_CLIENTS_RETRY_URL", "")
RATELIMIT_BASE = os.environ.get("ET_CLIENTS_RATELIMIT_URL", "")
DEVICE = os.environ.get("ET_DEVICE") == "1"
SECRET = os.environ.get("ET_JWT_SECRET", "")
TMP = os.environ.get("ET_CLIENTS_TMP") or None


def new_user():
    return "py_" + uuid.uuid4().hex[:16]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(payload, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def decode_jwt(token):
    def part(s):
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    h, p, _ = token.split(".")
    return part(h), part(p)


def with_claims(token, **change):
    header, payload = decode_jwt(token)
    payload.update(change)
    return sign_jwt(payload, header)


def now():
    return int(time.time())


def user_jwt(sub):
    return sign_jwt({"aud": "authenticated", "iss": "supabase-test", "sub": sub, "role": "authenticated",
                     "iat": now(), "exp": now() + 3600})


def anon_key():
    return sign_jwt({"iss": "supabase-test", "role": "anon", "iat": now(), "exp": now() + 86400})


def service_key():
    return sign_jwt({"iss": "supabase-test", "role": "service_role", "iat": now(), "exp": now() + 86400})


def call(base, fn, args=None, token=None):
    """A raw PostgREST call: (status, body, headers)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request("%s/rpc/%s" % (base, fn), data=json.dumps(args or {}).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            text = res.read().decode()
            return res.status, (json.loads(text) if text else None), dict(res.headers)
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return e.code, body, {k.lower(): v for k, v in e.headers.items()}


def issue(base, sub, **args):
    args.setdefault("p_name", "fusion add-in")
    status, body, _ = call(base, "extension_token_issue", args, user_jwt(sub))
    if status != 200:
        raise AssertionError("issue: HTTP %s %s" % (status, body))
    return body


def session_row(base, sub, session_id):
    status, body, _ = call(base, "extension_token_list", {"p_user_id": sub}, service_key())
    if status != 200:
        raise AssertionError("list: HTTP %s %s" % (status, body))
    for row in body:
        if row["session_id"] == session_id:
            return row
    return None


class Recorder(object):
    """A urlopen for UrllibTransport that records each request; lose(n) makes the
    next n refresh answers get lost after the server answered (kept in .lost)."""

    def __init__(self, delay_refresh=0.0):
        self.calls = []
        self.lost = []
        self._lose = 0
        self.delay_refresh = delay_refresh

    def lose(self, n):
        self._lose = n

    def refreshes(self):
        return [c for c in self.calls if c["url"].endswith("/rpc/extension_token_refresh")]

    def __call__(self, req, timeout=None):
        entry = {"url": req.full_url, "method": req.get_method(),
                 "headers": {k.lower(): v for k, v in req.header_items()},
                 "body": req.data.decode() if req.data else None}
        self.calls.append(entry)
        is_refresh = entry["url"].endswith("/rpc/extension_token_refresh")
        if is_refresh and self.delay_refresh:
            time.sleep(self.delay_refresh)
        if is_refresh and self._lose > 0:
            self._lose -= 1
            try:
                with urllib.request.urlopen(req, timeout=timeout) as res:
                    self.lost.append((res.status, json.loads(res.read().decode())))
            except urllib.error.HTTPError as e:
                self.lost.append((e.code, json.loads(e.read().decode())))
            raise urllib.error.URLError(ConnectionResetError("connection reset (the answer was lost)"))
        return urllib.request.urlopen(req, timeout=timeout)
