"""The Python client without a server: the refusal -> exception mapping, refresh
timing with jitter, a short Retry-After waited out, a lost answer retried, the
device-flow poll loop, the stores and the file lock across processes."""

import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import helpers  # noqa: F401  (puts the package on sys.path)
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


def pair(n, expires_in=3600):
    return {"access_token": "a%d" % n, "refresh_token": "r%d" % n, "token_type": "Bearer",
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
            self.assertEqual(c.get_access_token(), "a1", rnd)
            clock[0] = exp - before
            self.assertEqual(c.get_access_token(), "a2", rnd)
            self.assertEqual(len(t.calls), 1)

    def test_short_retry_after_waited_long_one_raised(self):
        slept = []
        t = FakeTransport(lambda fn, a, b, n: Response(429, error=body("PT429"), headers={"retry-after": "3"})
                          if n == 1 else Response(200, pair(2)))
        c = TokenClient(transport=t, sleep=slept.append)
        c.set_session(pair(1))
        self.assertEqual(c.refresh()["access_token"], "a2")
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
        self.assertEqual(c.refresh()["access_token"], "a2")
        self.assertEqual(slept, [0.25, 0.5])
        self.assertEqual([a["p_refresh_token"] for _, a, _ in t.calls], ["r1"] * 3)
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
        self.assertEqual(c.get_session()["refresh_token"], "r1")


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
        self.assertEqual(rec["access_token"], "a9")
        self.assertEqual(c.get_session()["refresh_token"], "r9")
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
