"""The Python client without a server: the refusal -> exception mapping, refresh
timing with jitter, a short Retry-After waited out, a lost answer retried, the
backoff after a failed refresh, a pair the store could not write, which 401s
refresh, the token shapes, redirects, the callbacks outside the lock, the
device-flow poll loop, the stores and the file lock across processes."""

import contextlib
import http.server
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import helpers  # noqa: F401  (puts the package on sys.path)
from extension_tokens_client.transport import SafeRedirectHandler
from extension_tokens_client import (
    AccessDeniedError, AccessTokenRejectedError, AuthorizationPendingError, BadRequestError, CancelledError,
    DeviceCodeExpiredError, ExpiredBearerError, ExtensionTokensError, FileStore, ForbiddenError,
    LockTimeoutError, MemoryStore, NetworkError, RateLimitedError, Response, ServerError,
    ServerMisconfiguredError, SignedOutError, SlowDownError, TokenClient, error_from_response, format_time,
    pair_to_record, parse_retry_after, parse_time,
)


def body(code, details=None, **extra):
    b = {"code": code, "details": details, "hint": None, "message": "m"}
    b.update(extra)
    return b


# Tokens of our shapes (the client refuses others): A(n) an access token, R(n) a refresh token.
def A(n):
    return "h.a%d.s" % n


def R(n):
    return ("ext_rt_r%d" % n).ljust(78, "0")


def pair(n, expires_in=3600):
    return {"access_token": A(n), "refresh_token": R(n), "token_type": "Bearer",
            "expires_in": expires_in, "session_id": "s"}


class FakeTransport(object):
    """handler(fn, args, bearer, n) -> Response"""

    def __init__(self, handler):
        self.handler = handler
        self.calls = []
        self.guard = threading.Lock()

    def rpc(self, fn, args=None, bearer=None, get=False):
        with self.guard:
            self.calls.append((fn, args, bearer))
            n = len(self.calls)
        return self.handler(fn, args, bearer, n)


class Mapping(unittest.TestCase):
    def test_each_refusal_maps_to_its_class_and_action(self):
        cases = [
            (Response(401, error=body("PT401", "refresh_token_already_used")), SignedOutError, "sign_in"),
            (Response(401, error=body("PT401", "session_revoked")), SignedOutError, "sign_in"),
            (Response(401, error=body("PT401", "session_expired")), SignedOutError, "sign_in"),
            (Response(401, error=body("PT401", "refresh_token_expired")), SignedOutError, "sign_in"),
            (Response(401, error=body("PT401", "refresh_token_not_found")), SignedOutError, "sign_in"),
            (Response(401, error=body("PT401", "expired")), AccessTokenRejectedError, "refresh"),
            (Response(401, error=body("PGRST301", message="JWT expired")), ExpiredBearerError, "refresh"),
            (Response(429, error=body("PT429"), headers={"retry-after": "42"}), RateLimitedError, "wait"),
            (Response(401, error=body("42501")), ForbiddenError, "check_permissions"),
            (Response(403, error=body("42501")), ForbiddenError, "check_permissions"),
            (Response(400, error=body("22023")), BadRequestError, "fix_request"),
            (Response(500, error=body("55000")), ServerMisconfiguredError, "contact_admin"),
            (Response(503, error={"message": "x"}), ServerError, "retry_later"),
            (Response(0, error={"message": "reset"}, network=True), NetworkError, "retry"),
            (Response(400, error=body("PT400", "authorization_pending")), AuthorizationPendingError, "keep_polling"),
            (Response(400, error=body("PT400", "slow_down")), SlowDownError, "poll_slower"),
            (Response(400, error=body("PT400", "expired_token")), DeviceCodeExpiredError, "restart_device_flow"),
            (Response(400, error=body("PT400", "access_denied")), AccessDeniedError, "stop"),
        ]
        for resp, cls, action in cases:
            e = error_from_response(resp)
            self.assertIsInstance(e, cls, resp)
            self.assertIsInstance(e, ExtensionTokensError)
            self.assertEqual(e.action, action, cls.__name__)
        self.assertEqual(error_from_response(cases[1][0]).reason, "session_revoked")

    def test_retry_after_header_then_body_then_hint(self):
        t = parse_time("2026-01-01T00:00:00Z")
        e = error_from_response(Response(429, error=body("PT429", retry_after=7), headers={"retry-after": "9"}), t)
        self.assertEqual((e.retry_after, e.retry_at), (9, t + 9))
        self.assertEqual(error_from_response(Response(429, error=body("PT429", retry_after=7)), t).retry_after, 7)
        hint = "Retry after 2026-01-01 01:00:00+00 (in 3600 seconds)."
        self.assertEqual(error_from_response(Response(429, error=body("PT429", hint=hint)), t).retry_after, 3600)
        self.assertEqual(parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", t), 60)
        self.assertIsNone(error_from_response(Response(429, error=body("PT429")), t).retry_after)

    def test_times(self):
        self.assertEqual(parse_time("2026-12-06T17:54:43+00:00"), parse_time("2026-12-06T17:54:43.000Z"))
        self.assertEqual(parse_time("2026-12-06T18:54:43+01:00"), parse_time("2026-12-06T17:54:43Z"))
        self.assertEqual(format_time(parse_time("2026-12-06T17:54:32.5Z")), "2026-12-06T17:54:32.500Z")
        rec = pair_to_record(dict(pair(1, 60), expires_at="2000-01-01T00:00:00Z"), now=5.0)
        self.assertEqual(parse_time(rec["expires_at"]), 65.0)
        self.assertRaises(TypeError, pair_to_record, {"access_token": "x"})


class Timing(unittest.TestCase):
    def test_due_at_expiry_minus_margin_minus_jitter(self):
        for rnd, before in ((0.0, 300), (0.5, 330), (0.99, 359.4)):
            clock = [1000000.0]
            t = FakeTransport(lambda fn, a, b, n: Response(200, pair(2)))
            c = TokenClient(transport=t, clock=lambda: clock[0], random=lambda: rnd)
            c.set_session(pair(1))
            exp = 1000000.0 + 3600
            clock[0] = exp - before - 0.001
            self.assertEqual(c.get_access_token(), A(1), rnd)
            clock[0] = exp - before
            self.assertEqual(c.get_access_token(), A(2), rnd)
            self.assertEqual(len(t.calls), 1)

    def test_short_retry_after_waited_long_one_raised(self):
        slept = []
        t = FakeTransport(lambda fn, a, b, n: Response(429, error=body("PT429"), headers={"retry-after": "3"})
                          if n == 1 else Response(200, pair(2)))
        c = TokenClient(transport=t, sleep=slept.append)
        c.set_session(pair(1))
        self.assertEqual(c.refresh()["access_token"], A(2))
        self.assertEqual(slept, [3])
        t2 = FakeTransport(lambda fn, a, b, n: Response(429, error=body("PT429"), headers={"retry-after": "30"}))
        c2 = TokenClient(transport=t2, sleep=lambda s: self.fail("must not wait 30 s"))
        c2.set_session(pair(1))
        with self.assertRaises(RateLimitedError) as cm:
            c2.refresh()
        self.assertEqual(cm.exception.retry_after, 30)
        self.assertRaises(RateLimitedError, c2.refresh)
        self.assertEqual(len(t2.calls), 1, "no second request inside Retry-After")

    def test_lost_answer_retried_with_same_token_and_backoff(self):
        clock = [0.0]
        slept = []

        def sleep(s):
            slept.append(s)
            clock[0] += s
        t = FakeTransport(lambda fn, a, b, n: Response(0, error={"message": "reset"}, network=True)
                          if n < 3 else Response(200, pair(2)))
        c = TokenClient(transport=t, clock=lambda: clock[0], sleep=sleep)
        c.set_session(pair(1))
        self.assertEqual(c.refresh()["access_token"], A(2))
        self.assertEqual(slept, [0.25, 0.5])
        self.assertEqual([a["p_refresh_token"] for _, a, _ in t.calls], [R(1)] * 3)
        self.assertTrue(all(b is None for _, _, b in t.calls), "refresh is anonymous")

    def test_threads_waiting_for_a_failed_refresh_share_its_error(self):
        gate = threading.Event()

        def handler(fn, a, b, n):
            gate.wait(5)
            return Response(500, error=body("55000"))
        t = FakeTransport(handler)
        c = TokenClient(transport=t)
        c.set_session(pair(1))
        results = []

        def run():
            try:
                c.refresh()
            except Exception as e:
                results.append(e)
        threads = [threading.Thread(target=run) for _ in range(5)]
        for th in threads:
            th.start()
        time.sleep(0.2)
        gate.set()
        for th in threads:
            th.join(10)
        self.assertEqual(len(results), 5)
        self.assertTrue(all(isinstance(e, ServerMisconfiguredError) for e in results))
        self.assertEqual(len(t.calls), 1, "one request for five waiting threads")
        self.assertEqual(c.get_session()["refresh_token"], R(1))


class FlakyStore(MemoryStore):
    """A MemoryStore whose next `fails` set()s fail (a full disk, a locked file); counts its locks."""

    def __init__(self):
        MemoryStore.__init__(self)
        self.fails = 0
        self.locks = 0

    def set(self, key, record):
        if self.fails > 0:
            self.fails -= 1
            raise OSError(28, "No space left on device")
        return MemoryStore.set(self, key, record)

    @contextlib.contextmanager
    def lock(self, key):
        self.locks += 1
        with MemoryStore.lock(self, key):
            yield


class Robustness(unittest.TestCase):
    def test_failed_refresh_ahead_not_retried_before_backoff_or_retry_after(self):
        # 5 s, 30 s, 1, 2, 4 min, then every 5 min
        cases = ((Response(500, error=body("XX000")), [0, 5, 35, 95, 215] + list(range(455, 3700, 300))),
                 (Response(429, error=body("PT429"), headers={"retry-after": "3600"}), [0, 3600]))
        for answer, expected in cases:
            t0 = 95000.0
            clock = [0.0]
            sent = []

            def handler(fn, a, b, n):
                sent.append(clock[0] - t0)
                return answer
            store = FlakyStore()
            c = TokenClient(transport=FakeTransport(handler), store=store, clock=lambda: clock[0],
                            random=lambda: 0.0, refresh_margin=5000)
            c.set_session(pair(1, 100000))  # due at 95 000 s, valid until 100 000 s
            locks = store.locks
            for s in range(0, 3700):
                clock[0] = t0 + s
                self.assertEqual(c.get_access_token(), A(1), "the valid token is used meanwhile")
            self.assertEqual(sent, expected, answer)
            self.assertEqual(store.locks - locks, len(expected), "no lock taken without a request")

    def test_a_pair_the_store_could_not_write_is_used_then_stored(self):
        clock = [0.0]
        n = [1]

        def handler(fn, a, b, k):
            if fn != "extension_token_refresh":
                return Response(200, "ok")
            n[0] += 1
            return Response(200, pair(n[0]))
        t = FakeTransport(handler)
        store = FlakyStore()
        stored = []
        c = TokenClient(transport=t, store=store, clock=lambda: clock[0],
                        on_tokens=lambda r: stored.append(r["access_token"]))
        c.set_session(pair(1))
        clock[0] = 3600 - 200  # due, valid 200 s more
        store.fails = 1
        self.assertEqual(c.rpc("whoami"), "ok")
        self.assertEqual(t.calls[-1], ("whoami", {}, A(2)), "the new pair, though not stored")
        self.assertEqual(store.get("session")["refresh_token"], R(1))
        self.assertEqual(c.get_session()["access_token"], A(2))
        clock[0] += 45
        self.assertEqual(c.rpc("whoami"), "ok")
        self.assertEqual(store.get("session")["refresh_token"], R(2), "stored on the next call")
        self.assertEqual(stored, [A(1), A(2)])
        c.refresh()
        self.assertEqual([a["p_refresh_token"] for f, a, _ in t.calls if f == "extension_token_refresh"], [R(1), R(2)])

    def test_an_exchanged_refresh_token_whose_pair_was_lost_is_not_sent_after_25_s(self):
        clock = [0.0]
        # the server exchanged R(1) and its answer came back truncated
        t = FakeTransport(lambda fn, a, b, n: Response(200, {"access_token": A(2), "refresh_token": None}))
        reports = []
        c = TokenClient(transport=t, clock=lambda: clock[0], on_signed_out=lambda e: reports.append(e.reason))
        c.set_session(pair(1))
        self.assertRaises(ServerError, c.refresh)
        clock[0] += 20
        self.assertRaises(ServerError, c.refresh)  # within the server's retry window: asked again
        clock[0] += 10
        with self.assertRaises(SignedOutError) as cm:
            c.refresh()
        self.assertEqual(cm.exception.reason, "refresh_lost")
        self.assertEqual(len(t.calls), 2, "no request 30 s after the exchange")
        self.assertEqual(reports, ["refresh_lost"])
        self.assertEqual(c.store.get("session")["signed_out"]["reason"], "refresh_lost")

    def test_rpc_refreshes_on_401_only_for_a_refused_token_once(self):
        n = [1]

        def handler(fn, a, b, k):
            if fn == "extension_token_refresh":
                n[0] += 1
                return Response(200, pair(n[0]))
            if fn == "mine":
                return Response(401, error=body("PT401", "not your document"))
            return Response(401, error=body("PT401", "expired"))
        t = FakeTransport(handler)
        c = TokenClient(transport=t)
        c.set_session(pair(1))
        for _ in range(5):
            with self.assertRaises(AccessTokenRejectedError) as cm:
                c.rpc("mine")
            self.assertEqual(cm.exception.reason, "not your document")
        refreshes = lambda: len([x for x in t.calls if x[0] == "extension_token_refresh"])  # noqa: E731
        self.assertEqual(refreshes(), 0, "a 401 that is not about the token")
        self.assertRaises(AccessTokenRejectedError, c.rpc, "theirs")
        self.assertEqual([x[2] for x in t.calls if x[0] == "theirs"], [A(1), A(2)], "refreshed once, sent again")
        self.assertRaises(AccessTokenRejectedError, c.rpc, "theirs")
        self.assertEqual(refreshes(), 1, "the token a refresh after a 401 got is not refreshed on a 401")

    def test_on_signed_out_runs_after_the_lock_and_may_sign_in_again(self):
        for store in (MemoryStore(), FileStore(tempfile.mkdtemp(), wait=2)):
            t = FakeTransport(lambda fn, a, b, n: Response(401, error=body("PT401", "session_revoked")))
            box = {}

            def on_signed_out(e):
                c.set_session(pair(9))  # the new sign-in's pair, as a device flow would store it
                box["stored"] = True
            c = TokenClient(transport=t, store=store, on_signed_out=on_signed_out)
            c.set_session(pair(1))

            def go():
                try:
                    c.refresh()
                except Exception as e:
                    box["error"] = e
            th = threading.Thread(target=go, daemon=True)
            th.start()
            th.join(5)
            self.assertFalse(th.is_alive(), "hung in on_signed_out")
            self.assertTrue(box.get("stored"), box)
            self.assertIsInstance(box.get("error"), SignedOutError)
            self.assertEqual(c.get_session()["refresh_token"], R(9))
            self.assertEqual(c.get_access_token(), A(9))

    def test_tokens_of_another_shape_are_refused_and_never_shown(self):
        for bad in (dict(pair(1), access_token=A(1) + "\n"), dict(pair(1), access_token="SECRET ACCESS"),
                    dict(pair(1), refresh_token=R(1) + "\n"), dict(pair(1), refresh_token="ext_rt_short")):
            with self.assertRaises(ValueError) as cm:
                pair_to_record(bad)
            m = str(cm.exception)
            self.assertIn("not a token pair", m)
            for secret in (A(1), "SECRET", R(1), "short"):
                self.assertNotIn(secret, m)
        self.assertTrue(pair_to_record(dict(pair(1), refresh_token="ext_rt_" + "x" * 49)), "made by 1.1")
        store = MemoryStore()
        store.set("session", dict(pair_to_record(pair(1)), access_token=A(1) + "\n"))
        t = FakeTransport(lambda fn, a, b, n: Response(200, 1))
        c = TokenClient(transport=t, store=store)
        self.assertIsNone(c.get_session(), "unreadable: as if empty")
        with self.assertRaises(SignedOutError) as cm:
            c.rpc("whoami")
        self.assertEqual(cm.exception.reason, "no_session")
        self.assertEqual(t.calls, [])

    def test_a_header_value_http_refuses_is_a_bad_request_without_the_value(self):
        with Server() as api:
            c = TokenClient(url=api.url, anon_key="ANON_KEY\n")
            c.set_session(pair(1))
            with self.assertRaises(BadRequestError) as cm:
                c.rpc("whoami")
            self.assertNotIn("ANON_KEY", str(cm.exception))
            with self.assertRaises(BadRequestError) as cm:
                c.request(api.url + "/x", headers={"X-Key": "SECRET\r\nInjected: 1"})
            self.assertNotIn("SECRET", str(cm.exception))
            self.assertEqual(api.seen, [])


class Server(object):
    """A local HTTP server: answer(path) -> (status, headers, body); .seen records (path, headers)."""

    def __init__(self, answer=None):
        self.seen = []
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                me.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                status, headers, data = (answer or (lambda p: (200, {}, b"{}")))(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            do_POST = do_GET

            def log_message(self, *a):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_port

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class LocalHttp(unittest.TestCase):
    """request() and rpc() against local HTTP servers: redirects, 401s."""

    def test_request_drops_the_bearer_and_apikey_on_another_origin_keeps_them_on_the_same(self):
        with Server() as other:
            def answer(path):
                if path == "/away":
                    return 302, {"Location": other.url + "/landed"}, b""
                if path == "/here":
                    return 302, {"Location": "/landed"}, b""
                return 200, {}, b"{}"
            with Server(answer) as api:
                c = TokenClient(url=api.url, anon_key="ANON")
                c.set_session(pair(1))
                status, _, _ = c.request(api.url + "/away", headers={"apikey": "ANON"})
                self.assertEqual(status, 200)
                self.assertEqual([p for p, _ in other.seen], ["/landed"])
                self.assertNotIn("authorization", other.seen[0][1])
                self.assertNotIn("apikey", other.seen[0][1])
                status, _, _ = c.request(api.url + "/here")
                self.assertEqual(status, 200)
                self.assertEqual(api.seen[-1][0], "/landed")
                self.assertEqual(api.seen[-1][1]["authorization"], "Bearer " + A(1), "same origin: kept")

    def test_no_redirect_from_https_to_http(self):
        req = urllib.request.Request("https://api.example/x", headers={"Authorization": "Bearer " + A(1)})
        h = SafeRedirectHandler()
        self.assertIsNone(h.redirect_request(req, io.BytesIO(b""), 302, "Found", {}, "http://api.example/x"))
        same = h.redirect_request(req, io.BytesIO(b""), 302, "Found", {}, "https://api.example/y")
        self.assertEqual(same.get_header("Authorization"), "Bearer " + A(1))
        other = h.redirect_request(req, io.BytesIO(b""), 302, "Found", {}, "https://api.example:8443/y")
        self.assertIsNone(other.get_header("Authorization"))

    def test_rpc_does_not_follow_a_redirect(self):
        with Server() as other:
            with Server(lambda path: (307, {"Location": other.url + path}, b"")) as api:
                c = TokenClient(url=api.url, anon_key="ANON")
                c.set_session(pair(1))
                for get in (True, False):
                    with self.assertRaises(ExtensionTokensError) as cm:
                        c.rpc("whoami", get=get)
                    self.assertIn("redirect", str(cm.exception))
                    self.assertEqual(cm.exception.status, 307)
                self.assertEqual(other.seen, [])

    def test_request_refreshes_on_401_only_when_the_token_is_refused(self):
        answers = {"/doc": (401, {"Content-Type": "application/json"}, b'{"error": "not your document"}'),
                   "/old": (401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, b"")}
        with Server(lambda path: answers[path]) as api:
            n = [1]

            def handler(fn, a, b, k):
                n[0] += 1
                return Response(200, pair(n[0]))
            t = FakeTransport(handler)
            c = TokenClient(transport=t)
            c.set_session(pair(1))
            for _ in range(5):
                self.assertEqual(c.request(api.url + "/doc")[0], 401)
            self.assertEqual(len(t.calls), 0, "a 401 that is not about the token")
            self.assertEqual(c.request(api.url + "/old")[0], 401)
            self.assertEqual([h["authorization"] for p, h in api.seen if p == "/old"],
                             ["Bearer " + A(1), "Bearer " + A(2)], "refreshed once, sent again")
            c.request(api.url + "/old")
            self.assertEqual(len(t.calls), 1, "the token a refresh after a 401 got is not refreshed on a 401")


def device_server(script):
    it = iter(script)

    def handler(fn, args, bearer, n):
        if fn == "extension_token_device_start":
            return Response(200, {"device_code": "dc", "user_code": "BDWP-HQPK", "expires_in": 600, "interval": 5,
                                  "verification_uri_complete": "https://d.example/device?code=BDWP-HQPK"})
        assert fn == "extension_token_device_poll" and args == {"p_device_code": "dc"}, (fn, args)
        s = next(it)
        if s == "ok":
            return Response(200, pair(9))
        if s == "net":
            return Response(0, error={"message": "reset"}, network=True)
        details = {"pending": "authorization_pending", "slow_down": "slow_down", "denied": "access_denied",
                   "expired": "expired_token"}[s]
        return Response(400, error=body("PT400", details))
    return FakeTransport(handler)


class DeviceFlow(unittest.TestCase):
    def test_interval_slow_down_backoff_and_pair(self):
        clock = [0.0]
        slept = []

        def sleep(s):
            slept.append(s)
            clock[0] += s
        t = device_server(["pending", "slow_down", "pending", "net", "pending", "ok"])
        c = TokenClient(transport=t, clock=lambda: clock[0], sleep=sleep)
        shown, pending = [], []
        rec = c.sign_in_with_device("Fusion add-in", ["files:read"], on_code=shown.append,
                                    on_pending=lambda: pending.append(1))
        self.assertEqual(shown[0]["user_code"], "BDWP-HQPK")
        self.assertEqual(t.calls[0], ("extension_token_device_start",
                                      {"p_name": "Fusion add-in", "p_scopes": ["files:read"]}, None))
        self.assertEqual(slept, [5, 5, 10, 10, 20, 10])
        self.assertEqual(len(pending), 3)
        self.assertEqual(rec["access_token"], A(9))
        self.assertEqual(c.get_session()["refresh_token"], R(9))
        self.assertTrue(all(b is None for _, _, b in t.calls), "the device flow is anonymous")

    def test_denied_and_expired(self):
        for script, cls in ((["pending", "denied"], AccessDeniedError), (["expired"], DeviceCodeExpiredError)):
            c = TokenClient(transport=device_server(script), sleep=lambda s: None)
            d = c.start_device_authorization()
            self.assertRaises(cls, c.poll_device_authorization, d)
            self.assertIsNone(c.get_session())

    def test_deadline_and_cancel(self):
        clock = [0.0]
        t = device_server(["pending"] * 1000)
        c = TokenClient(transport=t, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
        d = c.start_device_authorization()
        self.assertRaises(DeviceCodeExpiredError, c.poll_device_authorization, d)
        self.assertEqual(len(t.calls) - 1, 119)
        cancel = threading.Event()
        cancel.set()
        c2 = TokenClient(transport=device_server(["pending"] * 10))
        self.assertRaises(CancelledError, c2.poll_device_authorization, c2.start_device_authorization(), None, cancel)


LOCKER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from extension_tokens_client import FileStore
with FileStore(sys.argv[2]).lock("session"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


class Stores(unittest.TestCase):
    def test_memory_store_copies(self):
        s = MemoryStore()
        r = {"a": [1]}
        s.set("k", r)
        r["a"].append(2)
        self.assertEqual(s.get("k"), {"a": [1]})
        s.delete("k")
        self.assertIsNone(s.get("k"))

    def test_file_store_files(self):
        d = tempfile.mkdtemp()
        s = FileStore(os.path.join(d, "sub"))
        self.assertIsNone(s.get("a/b"))
        s.set("a/b", {"x": 1})
        self.assertEqual(s.get("a/b"), {"x": 1})
        self.assertEqual(os.listdir(os.path.join(d, "sub")), ["a%2fb.json"])
        self.assertEqual(os.stat(os.path.join(d, "sub", "a%2fb.json")).st_mode & 0o777, 0o600)
        s.delete("a/b")
        self.assertIsNone(s.get("a/b"))

    def test_file_lock_across_processes_released_when_the_holder_dies(self):
        d = tempfile.mkdtemp()
        pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        p = subprocess.Popen([sys.executable, "-c", LOCKER, pkg, d, "30"], stdout=subprocess.PIPE)
        self.assertEqual(p.stdout.readline().strip(), b"locked")
        with self.assertRaises(LockTimeoutError):
            with FileStore(d, wait=0.3).lock("session"):
                pass
        t = time.time()
        threading.Timer(0.3, p.kill).start()
        with FileStore(d, wait=10).lock("session"):
            waited = time.time() - t
        p.wait()
        self.assertTrue(0.25 <= waited < 5, waited)

    def test_file_lock_between_threads(self):
        d = tempfile.mkdtemp()
        s = FileStore(d)
        log = []

        def job(n):
            with s.lock("k"):
                log.append("+%d" % n)
                time.sleep(0.05)
                log.append("-%d" % n)
        threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for i in range(0, 8, 2):
            self.assertEqual(log[i][1:], log[i + 1][1:])


if __name__ == "__main__":
    unittest.main()
