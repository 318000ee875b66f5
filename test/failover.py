#!/usr/bin/python3
"""A failover under load (test/failover.sh sets up pg_auto_failover).

Four workers keep issuing, refreshing, revoking and validating through a
multi-host connection string (target_session_attrs=read-write), recording
only what the server acknowledged: a pair returned, an exchange returned, a
revoke that returned true.  After LOAD_SECONDS the primary's keeper and
postgres are killed with SIGKILL; the workers reconnect (to the promoted
secondary) and go on for as long again.  Then, on the new primary:

  promoted        the secondary took over and acknowledged operations after
  revocations     every session whose revocation was acknowledged, before or
                  after the crash: none of its pairs validates, its newest
                  refresh token is refused
  one_successor   no session has two live pairs: of all the pairs acknowledged
                  for it, at most one access token validates
  exchanged       every refresh token whose exchange was acknowledged is
                  refused when presented again (strict mode: retry window 0)

An operation whose answer was lost in the crash is neither counted nor
checked: its outcome is unknown, and the promises are about acknowledged ones.
Prints the counts (operations acknowledged, revocations checked, violations)
and "N passed, M failed".
"""
import os
import random
import signal
import sys
import threading
import time

import psycopg2

DSN = os.environ["ET_FAILOVER_DSN"]
# e.g. "-c synchronous_commit=local": the load's own commits acknowledged
# before the standby has them (what the README's HA section measures)
OPTIONS = os.environ.get("ET_FAILOVER_OPTIONS", "")
if OPTIONS:
    DSN += " options='" + OPTIONS + "'"
NEW_PORT = os.environ["ET_FAILOVER_NEW_PRIMARY_PORT"]
LOAD_SECONDS = float(os.environ.get("ET_FAILOVER_LOAD_SECONDS", "8"))   # before the kill
# operations the new primary must acknowledge before the checks (the smoke:
# fewer, the same checks)
AFTER = int(os.environ.get("ET_FAILOVER_AFTER", "500"))
WORKERS = 4
UNAUTHORIZED = "PT401"

lock = threading.Lock()
sessions = {}          # session id -> {"pairs": [(access, refresh)], "revoked": bool, "uncertain": bool}
exchanged = []         # refresh tokens whose exchange was acknowledged
acked = {"issue": 0, "refresh": 0, "revoke": 0, "validate": 0}
acked_after = [0]
errors = {"lost": 0}
phase = {"after_crash": False, "stop": False}
violations = []


def connect():
    deadline = time.monotonic() + 120
    while True:
        try:
            c = psycopg2.connect(DSN)
            c.autocommit = True
            return c
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def worker(seed):
    rnd = random.Random(seed)
    conn = connect()
    n = 0
    while not phase["stop"]:
        n += 1
        with lock:
            # each worker works on the sessions it issued: no race of ours
            # between two workers can blur what was acknowledged
            live = [s for s, v in sessions.items()
                    if v["owner"] == seed and not v["revoked"] and not v["uncertain"]]
        op = rnd.choice(["issue", "refresh", "refresh", "revoke", "validate", "validate"]) if live else "issue"
        sid = rnd.choice(live) if op != "issue" else None
        try:
            with conn.cursor() as cur:
                if op == "issue":
                    cur.execute("SELECT access_token, refresh_token, session_id::text FROM extension_token_issue(%s)",
                                (f"failover-{seed}-{n}",))
                    a, r, s = cur.fetchone()
                    with lock:
                        sessions[s] = {"pairs": [(a, r)], "revoked": False, "uncertain": False, "owner": seed}
                elif op == "refresh":
                    with lock:
                        old = sessions[sid]["pairs"][-1][1]
                        sessions[sid]["uncertain"] = True       # until the answer comes
                    cur.execute("SELECT access_token, refresh_token FROM extension_token_refresh(%s)", (old,))
                    a, r = cur.fetchone()
                    with lock:
                        sessions[sid]["pairs"].append((a, r))
                        sessions[sid]["uncertain"] = False
                        exchanged.append((sid, old))
                elif op == "revoke":
                    with lock:
                        token = sessions[sid]["pairs"][-1][rnd.randrange(2)]
                        sessions[sid]["uncertain"] = True
                    cur.execute("SELECT extension_token_revoke(%s)", (token,))
                    ok = cur.fetchone()[0]
                    with lock:
                        sessions[sid]["uncertain"] = False
                        if ok:
                            sessions[sid]["revoked"] = True
                        else:
                            violations.append(f"revoke of a live session {sid} returned false")
                else:
                    with lock:
                        token = sessions[sid]["pairs"][-1][0]
                        revoked = sessions[sid]["revoked"]
                    cur.execute("SELECT valid, error FROM extension_token_validate(%s)", (token,))
                    valid, error = cur.fetchone()
                    if revoked and valid:
                        violations.append(f"a revoked session validated during the load: {sid}")
            with lock:
                acked[op] += 1
                if phase["after_crash"]:
                    acked_after[0] += 1
        except psycopg2.Error as e:
            # Lost in the crash (or refused while the secondary was promoted):
            # the outcome is unknown, the session is left out of the checks.
            with lock:
                errors["lost"] += 1
                if sid is not None and op in ("refresh", "revoke"):
                    sessions[sid]["uncertain"] = True
                    sessions[sid]["lost"] = True
            if e.pgcode and not phase["after_crash"] and conn.closed == 0:
                violations.append(f"{op} before the kill: {e.pgcode} {e.diag.message_primary}")
            try:
                conn.close()
            except psycopg2.Error:
                pass
            conn = connect()
    conn.close()


def kill_primary():
    keeper = int(open(os.environ["ET_FAILOVER_KEEPER_PIDFILE"]).readline())
    postmaster = int(open(os.environ["ET_FAILOVER_POSTMASTER_PIDFILE"]).readline())
    children = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == keeper:
                children.append(int(p))
    for pid in [keeper, *children, postmaster]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print(f"# killed the primary: keeper {keeper}, its {len(children)} children, postgres {postmaster}")


threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WORKERS)]
for t in threads:
    t.start()
time.sleep(LOAD_SECONDS)
with lock:
    before = dict(acked)
try:
    kill_primary()
except Exception:
    phase["stop"] = True
    raise
crash = time.monotonic()
phase["after_crash"] = True
# Wait for the promoted secondary to take writes.
promoted_in = None
while time.monotonic() - crash < 120:
    try:
        c = psycopg2.connect(f"host=127.0.0.1 port={NEW_PORT} dbname=postgres user=postgres connect_timeout=2")
        with c.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            if cur.fetchone()[0] is False:
                promoted_in = time.monotonic() - crash
        c.close()
        if promoted_in is not None:
            break
    except psycopg2.Error:
        pass
    time.sleep(0.2)
# Then the load goes on: until the new primary has acknowledged AFTER (500)
# operations (its first writes wait until pg_auto_failover has stopped
# waiting for the lost standby), at most 90 s.
first_write = None
if promoted_in is not None:
    until = time.monotonic() + 90
    while time.monotonic() < until and acked_after[0] < AFTER:
        if first_write is None and acked_after[0] > 0:
            first_write = time.monotonic() - crash
        time.sleep(0.1)
phase["stop"] = True
for t in threads:
    t.join(timeout=60)
load_ended = time.monotonic()

total = sum(acked.values())
print(f"# operations acknowledged: {total} ({', '.join(f'{k} {v}' for k, v in acked.items())}); "
      f"{sum(before.values())} before the kill, {acked_after[0]} after; {errors['lost']} lost in the crash")
if promoted_in is not None:
    print(f"# the secondary was promoted {promoted_in:.1f} s after the kill; the first operation "
          f"acknowledged after it came {first_write or 0:.1f} s after the kill")

passed = failed = 0


def result(name, ok, detail=""):
    global passed, failed
    print(f"{'ok' if ok else 'not ok'} - {name}{(': ' + detail) if detail else ''}")
    if ok:
        passed += 1
    else:
        failed += 1


result("the secondary was promoted and acknowledged operations after the kill",
       promoted_in is not None and acked_after[0] >= AFTER and sum(before.values()) > 0,
       f"promoted: {promoted_in is not None}, after: {acked_after[0]}")
if promoted_in is None:
    print(f"{passed} passed, {failed + 3} failed")
    sys.exit(1)

check = psycopg2.connect(f"host=127.0.0.1 port={NEW_PORT} dbname=postgres user=postgres")
check.autocommit = True
cur = check.cursor()


def valid(token):
    cur.execute("SELECT valid FROM extension_token_validate(%s)", (token,))
    return cur.fetchone()[0]


def refresh_refused(token):
    try:
        cur.execute("SELECT access_token FROM extension_token_refresh(%s)", (token,))
        return False
    except psycopg2.Error as e:
        return e.pgcode == UNAUTHORIZED


# (1) at most one live pair per session (read-only: before anything is presented again)
two = []
checked_sessions = 0
for sid, s in sessions.items():
    live = [a for a, _ in s["pairs"] if valid(a)]
    checked_sessions += 1
    if len(live) > 1:
        two.append(sid)
result("no session has two live successors", not two,
       f"{checked_sessions} sessions, {sum(len(s['pairs']) for s in sessions.values())} pairs checked, "
       f"violations: {len(two)}")

# (2) every acknowledged revocation holds
bad = []
revocations = 0
for sid, s in sessions.items():
    if not s["revoked"]:
        continue
    revocations += 1
    if any(valid(a) for a, _ in s["pairs"]) or not refresh_refused(s["pairs"][-1][1]):
        bad.append(sid)
result("every acknowledged revocation holds after the failover", not bad and revocations > 0,
       f"revocations checked: {revocations}, violations: {len(bad)}")

# (3) no refresh token whose exchange was acknowledged is accepted again
accepted = []
for sid, old in exchanged:
    if not refresh_refused(old):
        accepted.append(sid)
result("no refresh token exchanged before (or after) the crash is accepted again", not accepted and exchanged,
       f"exchanged tokens checked: {len(exchanged)}, violations: {len(accepted)}")

total_violations = len(two) + len(bad) + len(accepted) + len(violations)
print(f"# timings: load and failover {load_ended - crash + LOAD_SECONDS:.1f} s "
      f"(the kill after {LOAD_SECONDS:.1f} s), checks {time.monotonic() - load_ended:.1f} s")
for v in violations[:10]:
    print(f"#   during the load: {v}")
result("no violation during the load", not violations, f"{len(violations)}")
print(f"# operations acknowledged: {total}, revocations checked: {revocations}, "
      f"exchanged refresh tokens checked: {len(exchanged)}, violations: {total_violations}")
print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
