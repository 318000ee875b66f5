"""The Python client against the real PostgREST (test/clients.sh): the strict one
(refresh_retry_window = 0: a second refresh of one token is reuse and revokes
the session), the one with the default 30 s window, the rate-limited one.
"Exactly one refresh" is read from the server (refresh_count) and the wire."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from helpers import (BASE, DEVICE, RATELIMIT_BASE, RETRY_BASE, HERE, TMP, Recorder, anon_key, call, issue,
                     needs_server, new_user, session_row, user_jwt, with_claims, now)
from extension_tokens_client import (AccessDeniedError, AuthorizationPendingError, DeviceCodeExpiredError,
                                     SlowDownError, BadRequestError, FileStore, ForbiddenError, MemoryStore, NetworkError,
                                     RateLimitedError, SignedOutError, TokenClient, UrllibTransport,
                                     error_from_response, pair_to_record, format_time)


def client_for(base, store=None, anon=None, **kw):
    rec = Recorder()
    anon = anon or anon_key()
    c = TokenClient(transport=UrllibTransport(base, anon, urlopen=rec), store=store or MemoryStore(), **kw)
    return c, rec, anon


def refused_store(pair, **claims):
    """A store whose access token the server refuses while the record says it is valid for an hour."""
    store = MemoryStore()
    rec = pair_to_record(pair)
    rec["access_token"] = with_claims(pair["access_token"], **claims)
    rec["expires_at"] = format_time(time.time() + 3600)
    store.set("session", rec)
    return store


def in_threads(n, fn):
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = ("ok", fn())
        except Exception as e:
            results[i] = ("error", e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@needs_server
class Refresh(unittest.TestCase):
    def ten_threads_hit_401(self, **claims):
        sub = new_user()
        pair = issue(BASE, sub)
        reports = []
        client, rec, anon = client_for(BASE, refused_store(pair, **claims), on_signed_out=reports.append)
        results = in_threads(10, lambda: client.rpc("whoami"))
        for kind, r in results:
            self.assertEqual(kind, "ok", r)
            self.assertEqual(r["sub"], sub)
            self.assertEqual(r["session_id"], pair["session_id"])
        # each thread's call is refused at most once: a thread released by the
        # barrier after the one refresh has finished (a loaded machine) sends
        # the new token at once; at least one was refused, none twice
        whoami = len([c for c in rec.calls if c["url"].endswith("/rpc/whoami")])
        self.assertGreaterEqual(whoami, 11)
        self.assertLessEqual(whoami, 20)
        self.assertEqual(len(rec.refreshes()), 1, "one refresh request")
        row = session_row(BASE, sub, pair["session_id"])
        self.assertEqual(row["refresh_count"], 1, "the server counted one refresh")
        self.assertEqual(row["status"], "active")
        self.assertEqual(reports, [])
        r = rec.refreshes()[0]
        self.assertEqual(r["headers"]["authorization"], "Bearer " + anon, "refresh sent with the anon key")
        self.assertEqual(r["headers"]["apikey"], anon)
        self.assertEqual(json.loads(r["body"]), {"p_refresh_token": pair["refresh_token"]})

    def test_ten_threads_refused_by_pre_request_PT401_one_refresh(self):
        t = now()
        self.ten_threads_hit_401(iat=t - 60, exp=t - 5)

    def test_ten_threads_refused_by_postgrest_PGRST301_one_refresh(self):
        t = now()
        self.ten_threads_hit_401(iat=t - 600, exp=t - 300)

    def test_request_to_an_api_of_ones_own_refreshes_on_401(self):
        sub = new_user()
        pair = issue(BASE, sub)
        t = now()
        client, rec, _ = client_for(BASE, refused_store(pair, iat=t - 600, exp=t - 300))
        status, headers, body = client.request(BASE + "/rpc/whoami", "POST", b"{}",
                                               {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body.decode())["sub"], sub)
        self.assertEqual(len(rec.refreshes()), 1)

    def test_refresh_ahead_when_due(self):
        sub = new_user()
        pair = issue(BASE, sub, p_lifetime="1 hour")
        offset = [0]
        client, rec, _ = client_for(BASE, clock=lambda: time.time() + offset[0])
        client.set_session(pair)
        offset[0] = 58 * 60  # due (margin 5 min + jitter up to 1 min), still valid
        results = in_threads(5, lambda: client.rpc("whoami"))
        self.assertTrue(all(k == "ok" and r["sub"] == sub for k, r in results), results)
        self.assertEqual(len(rec.refreshes()), 1)
        self.assertEqual(len([c for c in rec.calls if c["url"].endswith("/rpc/whoami")]), 5)
        self.assertEqual(session_row(BASE, sub, pair["session_id"])["refresh_count"], 1)

    def test_two_processes_sharing_a_store_one_refresh_neither_signs_out(self):
        sub = new_user()
        pair = issue(BASE, sub)
        directory = tempfile.mkdtemp(prefix="pystore-", dir=TMP)
        record = pair_to_record(pair)
        record["expires_at"] = format_time(time.time() - 1)  # due for both
        FileStore(directory).set("session", record)
        anon = anon_key()
        start_at = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "worker.py"), BASE, anon, directory,
                                   str(start_at), "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err.decode())
            outs.append(json.loads(out.decode().strip().splitlines()[-1]))
        for o in outs:
            self.assertNotIn("error", o, o)
            self.assertEqual(o["sub"], sub)
            self.assertEqual(o["signed_out"], [])
        self.assertEqual(sum(o["refreshes"] for o in outs), 1, outs)
        row = session_row(BASE, sub, pair["session_id"])
        self.assertEqual(row["refresh_count"], 1)
        self.assertEqual(row["status"], "active")
        self.assertNotEqual(FileStore(directory).get("session")["refresh_token"], pair["refresh_token"])

    def test_reuse_elsewhere_signs_out(self):
        sub = new_user()
        pair = issue(BASE, sub)
        other, _, _ = client_for(BASE)
        other.set_session(pair)
        other.refresh()
        reports = []
        client, _, _ = client_for(BASE, on_signed_out=lambda e: reports.append(e.reason))
        client.set_session(pair)
        with self.assertRaises(SignedOutError) as cm:
            client.refresh()
        self.assertEqual(cm.exception.reason, "refresh_token_already_used")
        self.assertEqual(reports, ["refresh_token_already_used"])
        self.assertEqual(session_row(BASE, sub, pair["session_id"])["status"], "revoked")


@needs_server
class LostAnswer(unittest.TestCase):
    def test_lost_refresh_answer_retried_within_window_recovers_the_same_pair(self):
        sub = new_user()
        pair = issue(RETRY_BASE, sub)
        reports = []
        client, rec, _ = client_for(RETRY_BASE, on_signed_out=reports.append)
        client.set_session(pair)
        rec.lose(1)
        got = client.refresh()
        self.assertEqual(len(rec.lost), 1)
        status, lost_pair = rec.lost[0]
        self.assertEqual(status, 200, "the server did exchange the token the first time")
        self.assertEqual(len(rec.refreshes()), 2)
        self.assertEqual(rec.refreshes()[0]["body"], rec.refreshes()[1]["body"], "the same refresh token twice")
        self.assertEqual(got["access_token"], lost_pair["access_token"])
        self.assertEqual(got["refresh_token"], lost_pair["refresh_token"])
        row = session_row(RETRY_BASE, sub, pair["session_id"])
        self.assertEqual(row["refresh_count"], 1)
        self.assertEqual(row["status"], "active")
        self.assertEqual(client.rpc("whoami")["sub"], sub)
        self.assertEqual(reports, [])

    def test_same_lost_answer_on_strict_server_signs_out(self):
        sub = new_user()
        pair = issue(BASE, sub)
        reports = []
        client, rec, _ = client_for(BASE, on_signed_out=lambda e: reports.append(e.reason))
        client.set_session(pair)
        rec.lose(1)
        with self.assertRaises(SignedOutError) as cm:
            client.refresh()
        self.assertEqual(cm.exception.reason, "refresh_token_already_used")
        self.assertEqual(reports, ["refresh_token_already_used"])

    def test_lost_for_longer_than_the_window_keeps_the_tokens(self):
        sub = new_user()
        pair = issue(RETRY_BASE, sub)
        client, rec, _ = client_for(RETRY_BASE, retry_window=1)
        client.set_session(pair)
        rec.lose(100)
        with self.assertRaises(NetworkError) as cm:
            client.refresh()
        self.assertEqual(cm.exception.action, "retry")
        self.assertTrue(2 <= len(rec.refreshes()) <= 4, len(rec.refreshes()))
        self.assertEqual(client.get_session()["refresh_token"], pair["refresh_token"])
        self.assertIsNone(client.signed_out)


@needs_server
class Revoked(unittest.TestCase):
    def test_after_revocation_reports_signed_out_once_and_stops(self):
        sub = new_user()
        pair = issue(BASE, sub)
        reports = []
        client, rec, _ = client_for(BASE, on_signed_out=reports.append)
        client.set_session(pair)
        self.assertEqual(client.rpc("whoami")["sub"], sub)
        status, body, _ = call(BASE, "extension_token_revoke_session", {"p_session_id": pair["session_id"]},
                               user_jwt(sub))
        self.assertEqual((status, body), (200, True))
        before = len(rec.calls)
        results = in_threads(10, lambda: client.rpc("whoami"))
        for kind, e in results:
            self.assertEqual(kind, "error")
            self.assertIsInstance(e, SignedOutError)
            self.assertEqual(e.reason, "session_revoked")
            self.assertEqual(e.action, "sign_in")
        self.assertEqual(len(reports), 1, "reported once")
        self.assertEqual(reports[0].reason, "session_revoked")
        self.assertEqual(len(rec.refreshes()), 1)
        self.assertEqual(len(rec.calls) - before, 11, "ten refused calls, one refresh")
        after = len(rec.calls)
        for f in (lambda: client.rpc("whoami"), client.get_access_token, client.refresh,
                  client.authorization_header):
            self.assertRaises(SignedOutError, f)
        self.assertEqual(len(rec.calls), after, "no request after signed out")
        self.assertEqual(len(reports), 1)
        self.assertEqual(client.store.get("session")["signed_out"]["reason"], "session_revoked")

    def test_sign_out_with_anon_key_and_another_process_sees_it(self):
        sub = new_user()
        pair = issue(BASE, sub)
        directory = tempfile.mkdtemp(prefix="pysignout-", dir=TMP)
        a, rec_a, anon = client_for(BASE, FileStore(directory))
        reports = []
        b, rec_b, _ = client_for(BASE, FileStore(directory), on_signed_out=lambda e: reports.append(e.reason))
        a.set_session(pair)
        self.assertEqual(b.rpc("whoami")["sub"], sub)
        out = a.sign_out()
        self.assertTrue(out.revoked)
        self.assertIsNone(out.error)
        revoke = [c for c in rec_a.calls if c["url"].endswith("/rpc/extension_token_revoke")][0]
        self.assertEqual(revoke["headers"]["authorization"], "Bearer " + anon)
        self.assertEqual(session_row(BASE, sub, pair["session_id"])["status"], "revoked")
        n = len(rec_b.calls)
        with self.assertRaises(SignedOutError) as cm:
            b.rpc("whoami")
        self.assertEqual(cm.exception.reason, "signed_out")
        self.assertRaises(SignedOutError, b.rpc, "whoami")
        self.assertEqual(len(rec_b.calls), n)
        self.assertEqual(reports, ["signed_out"])

    def test_sign_out_unreachable_forgets_the_tokens(self):
        sub = new_user()
        pair = issue(BASE, sub)
        client = TokenClient(url="http://127.0.0.1:1", anon_key=anon_key())
        client.set_session(pair)
        out = client.sign_out()
        self.assertFalse(out.revoked)
        self.assertIsInstance(out.error, NetworkError)
        self.assertIsNone(client.get_session())
        self.assertEqual(session_row(BASE, sub, pair["session_id"])["status"], "active")


@needs_server
class RateLimit(unittest.TestCase):
    def test_429_retry_after_honoured(self):
        sub = new_user()
        pair = issue(RATELIMIT_BASE, sub, p_lifetime="30 minutes")
        offset = [0]
        client, rec, _ = client_for(RATELIMIT_BASE, clock=lambda: time.time() + offset[0])
        client.set_session(pair)
        client.refresh()
        client.refresh()
        t0 = time.time()
        with self.assertRaises(RateLimitedError) as cm:
            client.refresh()
        e = cm.exception
        self.assertEqual((e.code, e.status, e.action), ("PT429", 429, "wait"))
        self.assertTrue(3000 < e.retry_after <= 3601, e.retry_after)
        self.assertLess(abs(e.retry_at - (t0 + e.retry_after)), 5)
        self.assertEqual(len(rec.refreshes()), 3)
        self.assertRaises(RateLimitedError, client.refresh)          # refused locally
        current = client.get_session()
        offset[0] = 28 * 60                                            # due but valid
        self.assertEqual(client.get_access_token(), current["access_token"])
        self.assertEqual(client.rpc("whoami")["sub"], sub)
        offset[0] = 31 * 60                                            # expired, inside Retry-After
        self.assertRaises(RateLimitedError, client.get_access_token)
        self.assertEqual(len(rec.refreshes()), 3, "no refresh request inside Retry-After")
        offset[0] = e.retry_after + 5                                  # after it: asks again
        self.assertRaises(RateLimitedError, client.refresh)
        self.assertEqual(len(rec.refreshes()), 4)
        self.assertEqual(session_row(RATELIMIT_BASE, sub, pair["session_id"])["refresh_count"], 2)


@needs_server
class Refusals(unittest.TestCase):
    def test_real_refusals_map_to_their_classes(self):
        t = UrllibTransport(BASE, anon_key())
        e = error_from_response(t.rpc("extension_token_refresh", {"p_refresh_token": None}))
        self.assertIsInstance(e, BadRequestError)
        self.assertEqual((e.code, e.action), ("22023", "fix_request"))
        e = error_from_response(t.rpc("extension_token_list", {"p_user_id": "someone"}))
        self.assertIsInstance(e, ForbiddenError)
        self.assertEqual(e.code, "42501")
        e = error_from_response(t.rpc("extension_token_refresh", {"p_refresh_token": "ext_rt_nonsense"}))
        self.assertIsInstance(e, SignedOutError)
        self.assertEqual(e.reason, "refresh_token_not_found")
        e = error_from_response(UrllibTransport(BASE, "not.a.jwt").rpc("whoami"))
        self.assertEqual((type(e).__name__, e.code, e.action), ("ExpiredBearerError", "PGRST301", "refresh"))


@needs_server
@unittest.skipUnless(DEVICE, "the installed extension has no extension_token_device_start/poll")
class DeviceFlow(unittest.TestCase):
    def test_start_pending_slow_down_approve_pair_once(self):
        sub = new_user()
        client, rec, anon = client_for(BASE)
        device = client.start_device_authorization("Fusion 360 on desktop", ["files:read"])
        self.assertRegex(device["user_code"], r"^[B-DF-HJ-NP-TV-Z]{4}-[B-DF-HJ-NP-TV-Z]{4}$")
        self.assertEqual(device["interval"], 5)
        self.assertEqual(device["verification_uri_complete"],
                         "https://dashboard.example/device?user_code=" + device["user_code"])
        self.assertRaises(AuthorizationPendingError, client.poll_device_once, device)
        self.assertRaises(SlowDownError, client.poll_device_once, device)
        typed = " ".join(device["user_code"].lower().split("-"))
        status, body, _ = call(BASE, "extension_token_device_approve", {"p_user_code": typed}, user_jwt(sub))
        self.assertEqual((status, body), (200, True))
        t0 = time.time()
        got = client.poll_device_authorization(device)
        self.assertGreaterEqual(time.time() - t0, 4.9)
        me = client.rpc("whoami")
        self.assertEqual((me["sub"], me["scope"]), (sub, "files:read"))
        row = session_row(BASE, sub, got["session_id"])
        self.assertEqual(row["name"], "Fusion 360 on desktop")
        for c in rec.calls:
            if "/rpc/extension_token_device_" in c["url"]:
                self.assertEqual(c["headers"]["authorization"], "Bearer " + anon)
        time.sleep(5.1)
        self.assertRaises(DeviceCodeExpiredError, client.poll_device_once, device)

    def test_denied_and_unknown(self):
        sub = new_user()
        client, _, _ = client_for(BASE, sleep=lambda s: None)
        shown = []

        def deny(d):
            shown.append(d["user_code"])
            call(BASE, "extension_token_device_deny", {"p_user_code": d["user_code"]}, user_jwt(sub))
        with self.assertRaises(AccessDeniedError) as cm:
            client.sign_in_with_device("denied", on_code=deny)
        self.assertEqual((cm.exception.code, cm.exception.action), ("PT400", "stop"))
        self.assertEqual(len(shown), 1)
        self.assertIsNone(client.get_session())
        self.assertRaises(DeviceCodeExpiredError, client.poll_device_once, {"device_code": "x" * 43})


if __name__ == "__main__":
    unittest.main()
