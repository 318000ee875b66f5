#!/usr/bin/python3
"""Race stress test of extension_tokens: revocations racing refreshes.

Each race runs STRESS_ROUNDS rounds (default 1000).  In a round, two
connections of the race's pool (autocommit, each with its statements
PREPAREd once) meet at a threading.Barrier and then EXECUTE together:

  revoke_vs_refresh          extension_token_revoke(access) | refresh(refresh)
  revoke_user_vs_refresh     revoke_user_extension_tokens(user) | refresh
  session_limit_vs_refresh   a second issue with max_sessions_per_user = 1 |
                             a refresh of the user's first session
  reuse_vs_refresh           after r0 -> r1: r0 presented again (reuse, must
                             fail PT401 and revoke the session) | refresh(r1)
  revoke_session_vs_refresh  extension_token_revoke_session(session) | refresh
                             (skipped where the function does not exist)
  double_refresh             the same live refresh token presented twice at
                             once, reuse grace / retry window 0

After every round, on a connection that took no part in the round, every
access and refresh token that anybody obtained in the round (the original
pair and each pair a refresh returned) must be dead:
  (a) extension_token_validate(access) is not valid;
  (b) extension_token_refresh(refresh) fails (in a transaction rolled back;
      the newest refresh tokens are tried first, so that presenting an
      exchanged one, which revokes the session as reuse, cannot hide a live
      successor);
  (c) extension_token_pre_request() with the access token as bearer raises
      PT401.
A round where any token passes any check is a VIOLATION, and so is a round
where the racing calls' outcomes are impossible (a revoke that revoked
nothing while the refresh succeeded; a reuse that was not refused; a first
session that is not revoked after a second issue with the limit at 1).  A
round with SQLSTATE 40P01 anywhere is a DEADLOCK; a round with any other
unexpected error (anything but PT401 from a refresh that lost) is an ERROR.

Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (a superuser; libpq reads
them); STRESS_ROUNDS (default 1000); STRESS_SECONDS (default 240: the time
bound of the whole run, shared out among the races still to run; a race that
runs out of time stops and reports the rounds it ran); STRESS_ALLOW_SHORT=1
(fewer rounds than asked is then not a failure).

Prints one line per race, then "N passed, M failed" (each race is one test:
passed when it ran every round with no violation, deadlock or error); exits
1 if any race failed.
"""
import base64
import collections
import os
import secrets
import sys
import threading
import time

import psycopg2

ROUNDS = int(os.environ.get("STRESS_ROUNDS", "1000"))
SECONDS = float(os.environ.get("STRESS_SECONDS", "240"))
ALLOW_SHORT = os.environ.get("STRESS_ALLOW_SHORT", "") == "1"
START = time.monotonic()
DEADLINE = START + SECONDS
DETAILS_PER_RACE = 5            # problem rounds described per race
PROGRESS_EVERY = 250

UNAUTHORIZED = "PT401"
DEADLOCK = "40P01"
# A setting that does not exist in this version: unknown, or unknown under
# the extension's reserved prefix.
UNKNOWN_SETTING = ("42704", "42602")

BASE_SETTINGS = [
    "SET statement_timeout = '20s'",
    "SET extension_tokens.issue_rate_limit = 0",
    "SET extension_tokens.refresh_rate_limit = 0",
]
STRICT_REFRESH = [
    "SET extension_tokens.refresh_reuse_grace = 0",
    "SET extension_tokens.refresh_retry_window = 0",
]
# Settings that exist in only one of the versions.
OPTIONAL_SETTINGS = set(STRICT_REFRESH)

# Users: distinct for every round of every race, and for every run.
RUN_NONCE = secrets.randbelow(10000)


def uid(n):
    """A user id that is a uuid (1.1) and a fine text id (1.2)."""
    return "00000000-0000-4000-8000-%012d" % n


def user_for(race_no, round_no):
    return uid(RUN_NONCE * 10**8 + race_no * 10**7 + round_no)


def jwt_payload(token):
    """The claims of a compact JWS, as PostgREST puts them in request.jwt.claims."""
    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8")


def short(token):
    return (token or "")[:12] + "..."


class Failure(Exception):
    """A call that failed: its SQLSTATE and message."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def failure(exc):
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) if diag else None
    detail = getattr(diag, "message_detail", None) if diag else None
    if not text:
        lines = (getattr(exc, "pgerror", None) or str(exc)).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
    if detail:
        text += f" ({detail})"
    return Failure(getattr(exc, "pgcode", None) or "conn", text)


class Client:
    """One autocommit connection with its settings and prepared statements;
    reconnects (and prepares again) after the connection was lost."""

    def __init__(self, settings=(), prepares=()):
        self.settings = list(BASE_SETTINGS) + list(settings)
        self.prepares = list(prepares)
        self.conn = None
        self.connect()

    def connect(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = psycopg2.connect("", application_name="extension_tokens stress")
        self.conn.autocommit = True
        cur = self.conn.cursor()
        for stmt in self.settings:
            try:
                cur.execute(stmt)
            except psycopg2.Error as exc:
                if stmt in OPTIONAL_SETTINGS and exc.pgcode in UNKNOWN_SETTING:
                    continue
                raise
        for stmt in self.prepares:
            cur.execute(stmt)

    def run(self, sql, args=None):
        """Rows of sql, or raises Failure."""
        try:
            if self.conn.closed:
                self.connect()
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                if cur.description is None:
                    return []
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        except psycopg2.Error as exc:
            raise failure(exc) from None

    def rollback(self):
        try:
            if not self.conn.closed:
                with self.conn.cursor() as cur:
                    cur.execute("ROLLBACK")
        except psycopg2.Error:
            pass

    def close(self):
        try:
            self.conn.close()
        except psycopg2.Error:
            pass


class Outcome:
    def __init__(self, rows=None, error=None):
        self.rows = rows
        self.error = error

    @property
    def ok(self):
        return self.error is None

    @property
    def code(self):
        return self.error.code if self.error else None

    def value(self):
        """The first column of the first row."""
        return next(iter(self.rows[0].values())) if self.rows else None

    def __repr__(self):
        if self.error:
            return f"error {self.error}"
        if self.rows and "refresh_token" in self.rows[0]:
            return "new pair"
        return repr(self.value())


def race(calls):
    """calls: [(client, sql, args)]; each in a thread of its own, released
    together by a barrier.  Returns their Outcomes in order."""
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def party(i):
        client, sql, args = calls[i]
        if client.conn.closed:
            try:
                client.connect()
            except psycopg2.Error as exc:
                outcomes[i] = Outcome(error=failure(exc))
                barrier.abort()
                return
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            if outcomes[i] is None:
                outcomes[i] = Outcome(error=Failure("barrier", "barrier broken"))
            return
        try:
            outcomes[i] = Outcome(rows=client.run(sql, args))
        except Failure as exc:
            outcomes[i] = Outcome(error=exc)

    threads = [threading.Thread(target=party, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


class Round:
    """What one round saw: the tokens to check and its problems."""

    def __init__(self, user):
        self.user = user
        self.access = []        # every access token obtained, oldest first
        self.refresh = []       # every refresh token obtained, oldest first
        self.violations = []
        self.deadlocks = []
        self.errors = []
        self.outcome = None
        self.racing = []        # "what: outcome" of each racing call

    def add_pair(self, row):
        if row and row.get("access_token"):
            self.access.append(row["access_token"])
        if row and row.get("refresh_token"):
            self.refresh.append(row["refresh_token"])

    def unexpected(self, what, exc):
        (self.deadlocks if exc.code == DEADLOCK else self.errors).append(f"{what}: {exc}")

    def refresh_outcome(self, what, out):
        """A racing refresh: a new pair, or PT401 (it lost)."""
        self.racing.append(f"{what}: {out!r}")
        if out.ok:
            if out.rows:
                self.add_pair(out.rows[0])
            else:
                self.errors.append(f"{what}: no row")
        elif out.code != UNAUTHORIZED:
            self.unexpected(what, out.error)

    def call_outcome(self, what, out):
        """A racing call that must not fail."""
        self.racing.append(f"{what}: {out!r}")
        if not out.ok:
            self.unexpected(what, out.error)


def check_tokens(chk, rnd):
    """The token-level invariant: nothing obtained in the round still works."""
    # (a) validate, every access token in one statement
    if rnd.access:
        try:
            rows = chk.run("SELECT t.n, v.valid, v.error "
                           "  FROM unnest(%s::text[]) WITH ORDINALITY AS t(tok, n), "
                           "       extension_token_validate(t.tok) AS v ORDER BY t.n",
                           (rnd.access,))
            for row in rows:
                if row["valid"] is not False:
                    rnd.violations.append(
                        f"access token #{row['n']} {short(rnd.access[row['n'] - 1])} validates "
                        f"(valid={row['valid']}, error={row['error']})")
        except Failure as exc:
            rnd.unexpected("validate", exc)
    # (c) pre_request must refuse each access token with PT401
    for n, tok in enumerate(rnd.access, 1):
        try:
            # As PostgREST calls it: the token's verified claims in
            # request.jwt.claims (and the header, which 1.2 does not read).
            chk.run("BEGIN; "
                    "SELECT set_config('request.headers', "
                    "json_build_object('authorization', 'Bearer ' || %s)::text, true), "
                    "set_config('request.jwt.claims', %s, true); "
                    "SELECT extension_token_pre_request()", (tok, jwt_payload(tok)))
            rnd.violations.append(f"pre_request accepts access token #{n} {short(tok)}")
        except Failure as exc:
            if exc.code != UNAUTHORIZED:
                rnd.unexpected(f"pre_request of access token #{n}", exc)
        finally:
            chk.rollback()
    # (b) refresh must fail for each refresh token; newest first, in a
    # transaction rolled back so that a successful one changes nothing
    for n in range(len(rnd.refresh), 0, -1):
        tok = rnd.refresh[n - 1]
        try:
            chk.run("BEGIN; SELECT * FROM extension_token_refresh(%s)", (tok,))
            rnd.violations.append(f"refresh token #{n} {short(tok)} still refreshes")
        except Failure as exc:
            if exc.code == DEADLOCK:
                rnd.unexpected(f"refresh of refresh token #{n}", exc)
        finally:
            chk.rollback()


def later(chk, rnd):
    """For a round described: do its access tokens still validate a little
    later (a lasting hole, or a revocation that became visible late)?"""
    if not rnd.violations or not rnd.access:
        return ""
    time.sleep(0.5)
    try:
        rows = chk.run("SELECT count(*) FILTER (WHERE v.valid) AS n "
                       "  FROM unnest(%s::text[]) AS t(tok), extension_token_validate(t.tok) AS v",
                       (rnd.access,))
    except Failure as exc:
        return f" [re-check failed: {exc}]"
    return f" [0.5 s later, {rows[0]['n']} of {len(rnd.access)} access tokens still validate]"


def first_session_status(chk, rnd, session_id):
    try:
        rows = chk.run("SELECT status FROM extension_token_list(%s) WHERE session_id = %s",
                       (rnd.user, session_id))
    except Failure as exc:
        rnd.unexpected("extension_token_list", exc)
        return
    if not rows:
        rnd.violations.append("first session missing from extension_token_list")
    elif rows[0]["status"] != "revoked":
        rnd.violations.append(f"first session is {rows[0]['status']}, not revoked")


# ---------------------------------------------------------------------------
# The races.  Each takes (setup, chk, a, b, rnd) and plays one round:
# setup issues on a connection of its own, a and b race, chk checks.
# ---------------------------------------------------------------------------

PREP_REFRESH = "PREPARE et_refresh AS SELECT * FROM extension_token_refresh($1)"
PREP_REVOKE = "PREPARE et_revoke AS SELECT extension_token_revoke($1)"
PREP_REVOKE_USER = "PREPARE et_revoke_user AS SELECT revoke_user_extension_tokens($1)"
PREP_REVOKE_SESSION = "PREPARE et_revoke_session AS SELECT extension_token_revoke_session($1)"
PREP_ISSUE = "PREPARE et_issue AS SELECT * FROM extension_token_issue($1)"


def issue(setup, rnd, chk):
    """The round's first pair, or None (counted as an error).  The checking
    connection validates its access token three times first, so that it
    holds the session's verdict and has used it (1.2: from its second
    validation of a token on, a backend keeps the session's verdict and does
    not read the row while no change to the session has committed): the
    checks after the race then attack that verdict."""
    try:
        row = setup.run("SELECT * FROM extension_token_issue(%s)", (rnd.user,))[0]
    except Failure as exc:
        rnd.unexpected("setup issue", exc)
        return None
    rnd.add_pair(row)
    try:
        for _ in (1, 2, 3):
            if not chk.run("SELECT valid FROM extension_token_validate(%s)",
                           (row["access_token"],))[0]["valid"]:
                rnd.errors.append("a fresh access token does not validate")
    except Failure as exc:
        rnd.unexpected("validate before the race", exc)
    return row


def revoked_something(value):
    return value is True or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def revocation_round(rnd, revoke_out, refresh_out, revoke_name):
    rnd.call_outcome(revoke_name, revoke_out)
    rnd.refresh_outcome("refresh", refresh_out)
    if not revoke_out.ok or not (refresh_out.ok or refresh_out.code == UNAUTHORIZED):
        rnd.outcome = "error"
    elif not refresh_out.ok:
        rnd.outcome = "revoke first"
    elif revoked_something(revoke_out.value()):
        rnd.outcome = "refresh first"
    else:
        rnd.outcome = "refresh won, revoke revoked nothing"
        rnd.violations.append(f"{revoke_name} returned {revoke_out.value()!r} "
                              "and the refresh succeeded")


def play_revoke(setup, chk, a, b, rnd):
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    rv, rf = race([(a, "EXECUTE et_revoke(%s)", (pair["access_token"],)),
                   (b, "EXECUTE et_refresh(%s)", (pair["refresh_token"],))])
    revocation_round(rnd, rv, rf, "extension_token_revoke")
    check_tokens(chk, rnd)


def play_revoke_user(setup, chk, a, b, rnd):
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    rv, rf = race([(a, "EXECUTE et_revoke_user(%s)", (rnd.user,)),
                   (b, "EXECUTE et_refresh(%s)", (pair["refresh_token"],))])
    revocation_round(rnd, rv, rf, "revoke_user_extension_tokens")
    check_tokens(chk, rnd)


def play_revoke_session(setup, chk, a, b, rnd):
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    rv, rf = race([(a, "EXECUTE et_revoke_session(%s)", (str(pair["session_id"]),)),
                   (b, "EXECUTE et_refresh(%s)", (pair["refresh_token"],))])
    revocation_round(rnd, rv, rf, "extension_token_revoke_session")
    check_tokens(chk, rnd)


def play_session_limit(setup, chk, a, b, rnd):
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    iss, rf = race([(a, "EXECUTE et_issue(%s)", (rnd.user,)),
                    (b, "EXECUTE et_refresh(%s)", (pair["refresh_token"],))])
    # the second session's own pair is not the round's to check: it lives
    rnd.call_outcome("second extension_token_issue", iss)
    rnd.refresh_outcome("refresh", rf)
    if not iss.ok or not (rf.ok or rf.code == UNAUTHORIZED):
        rnd.outcome = "error"
    else:
        rnd.outcome = "refresh first" if rf.ok else "issue first"
    first_session_status(chk, rnd, str(pair["session_id"]))
    check_tokens(chk, rnd)


def play_reuse(setup, chk, a, b, rnd):
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    try:
        second = setup.run("SELECT * FROM extension_token_refresh(%s)", (pair["refresh_token"],))[0]
    except Failure as exc:
        rnd.unexpected("setup refresh", exc)
        return
    rnd.add_pair(second)
    reuse, rf = race([(a, "EXECUTE et_refresh(%s)", (pair["refresh_token"],)),
                      (b, "EXECUTE et_refresh(%s)", (second["refresh_token"],))])
    rnd.racing.append(f"reuse of r0: {reuse!r}")
    if reuse.ok:
        rnd.add_pair(reuse.rows[0] if reuse.rows else None)
        rnd.violations.append("the exchanged refresh token r0 was exchanged again")
    elif reuse.code != UNAUTHORIZED:
        rnd.unexpected("reuse of r0", reuse.error)
    rnd.refresh_outcome("refresh of r1", rf)
    if rnd.errors or rnd.deadlocks:
        rnd.outcome = "error"
    else:
        rnd.outcome = "r1 refreshed" if rf.ok else "r1 refused"
    check_tokens(chk, rnd)


def play_double_refresh(setup, chk, a, b, rnd):
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    r1, r2 = race([(a, "EXECUTE et_refresh(%s)", (pair["refresh_token"],)),
                   (b, "EXECUTE et_refresh(%s)", (pair["refresh_token"],))])
    rnd.refresh_outcome("refresh A", r1)
    rnd.refresh_outcome("refresh B", r2)
    if rnd.errors or rnd.deadlocks:
        rnd.outcome = "error"
    else:
        rnd.outcome = {2: "both refreshed", 1: "one refreshed", 0: "both refused"}[r1.ok + r2.ok]
    check_tokens(chk, rnd)



def play_retry_window(setup, chk, a, b, rnd):
    """Two windows refresh with the same token at once, retry window on: both
    must get the same pair (one successor), which works, while the first
    pair is done."""
    pair = issue(setup, rnd, chk)
    if pair is None:
        return
    r1, r2 = race([(a, "EXECUTE et_refresh(%s)", (pair["refresh_token"],)),
                   (b, "EXECUTE et_refresh(%s)", (pair["refresh_token"],))])
    for what, out in (("refresh A", r1), ("refresh B", r2)):
        rnd.racing.append(f"{what}: {out!r}")
        if not out.ok:
            if out.code == DEADLOCK:
                rnd.deadlocks.append(what)
            else:
                rnd.violations.append(f"{what} was refused within the retry window ({out.code})")
    if not (r1.ok and r2.ok):
        rnd.outcome = "refused"
        return
    p1, p2 = r1.rows[0], r2.rows[0]
    if (p1["access_token"], p1["refresh_token"]) != (p2["access_token"], p2["refresh_token"]):
        rnd.violations.append("two different successor pairs")
    rnd.outcome = "same pair"
    try:
        if not chk.run("SELECT valid FROM extension_token_validate(%s)", (p1["access_token"],))[0]["valid"]:
            rnd.violations.append("the shared successor does not validate")
        if chk.run("SELECT valid FROM extension_token_validate(%s)", (pair["access_token"],))[0]["valid"]:
            rnd.violations.append("the first access token still validates")
    except Failure as exc:
        rnd.unexpected("check", exc)


RACES = [
    # name, play, settings of a, prepares of a, settings of b, prepares of b
    ("revoke_vs_refresh", play_revoke,
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REVOKE],
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REFRESH]),
    ("revoke_user_vs_refresh", play_revoke_user,
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REVOKE_USER],
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REFRESH]),
    ("session_limit_vs_refresh", play_session_limit,
     ["SET extension_tokens.max_sessions_per_user = 1"], [PREP_ISSUE],
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REFRESH]),
    ("reuse_vs_refresh", play_reuse,
     ["SET extension_tokens.max_sessions_per_user = 0"] + STRICT_REFRESH, [PREP_REFRESH],
     ["SET extension_tokens.max_sessions_per_user = 0"] + STRICT_REFRESH, [PREP_REFRESH]),
    ("revoke_session_vs_refresh", play_revoke_session,
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REVOKE_SESSION],
     ["SET extension_tokens.max_sessions_per_user = 0"], [PREP_REFRESH]),
    ("double_refresh", play_double_refresh,
     ["SET extension_tokens.max_sessions_per_user = 0"] + STRICT_REFRESH, [PREP_REFRESH],
     ["SET extension_tokens.max_sessions_per_user = 0"] + STRICT_REFRESH, [PREP_REFRESH]),
    ("retry_window_double_refresh", play_retry_window,
     ["SET extension_tokens.max_sessions_per_user = 0",
      "SET extension_tokens.refresh_retry_window = 30"], [PREP_REFRESH],
     ["SET extension_tokens.max_sessions_per_user = 0",
      "SET extension_tokens.refresh_retry_window = 30"], [PREP_REFRESH]),
]
NEEDS = {"revoke_session_vs_refresh": "extension_token_revoke_session",
         "retry_window_double_refresh": "extension_token_revoke_session"}


def run_race(race_no, name, play, a_set, a_prep, b_set, b_prep, budget_end):
    stats = collections.Counter()
    outcomes = collections.Counter()
    described = 0
    no_limit = ["SET extension_tokens.max_sessions_per_user = 0"]
    clients = []
    started = time.monotonic()
    rounds = 0
    try:
        # setup issues, chk checks, a and b race: four backends
        for settings, prepares in ((no_limit, ()), (no_limit, ()), (a_set, a_prep), (b_set, b_prep)):
            clients.append(Client(settings, prepares))
        setup, chk, a, b = clients
        for i in range(1, ROUNDS + 1):
            if time.monotonic() >= budget_end:
                break
            rnd = Round(user_for(race_no, i))
            play(setup, chk, a, b, rnd)
            rounds += 1
            outcomes[rnd.outcome or "error"] += 1
            for kind in ("violations", "deadlocks", "errors"):
                if getattr(rnd, kind):
                    stats[kind] += 1
            problems = rnd.violations + rnd.deadlocks + rnd.errors
            if problems and described < DETAILS_PER_RACE:
                described += 1
                print(f"  {name} round {i} ({'; '.join(rnd.racing) or rnd.outcome}): "
                      + "; ".join(problems)
                      + (later(chk, rnd) if time.monotonic() + 1 < budget_end else ""),
                      flush=True)
            if i % PROGRESS_EVERY == 0 and i < ROUNDS:
                print(f"  {name}: {i}/{ROUNDS} rounds, {time.monotonic() - started:.1f} s",
                      flush=True)
    finally:
        for client in clients:
            client.close()
    return rounds, stats, outcomes, time.monotonic() - started


def prepare_database():
    """The extension, and a secret that issues; the functions that exist."""
    admin = Client(["SET extension_tokens.max_sessions_per_user = 0"])
    admin.run("CREATE EXTENSION IF NOT EXISTS extension_tokens")
    probe = uid(RUN_NONCE * 10**8 + 99 * 10**6)
    for attempt in (1, 2):
        try:
            admin.run("SELECT * FROM extension_token_issue(%s)", (probe,))
            break
        except Failure as exc:
            if exc.code != "55000" or attempt == 2:
                raise
            admin.run("ALTER SYSTEM SET extension_tokens.jwt_secret = %s", (secrets.token_hex(32),))
            admin.run("SELECT pg_reload_conf()")
            time.sleep(0.5)
            admin.connect()
    admin.run("SELECT revoke_user_extension_tokens(%s)", (probe,))
    version = admin.run("SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens'")
    functions = {r["proname"] for r in admin.run(
        "SELECT proname FROM pg_proc WHERE proname LIKE '%%extension_token%%'")}
    admin.close()
    return version[0]["extversion"] if version else "?", functions


def main():
    try:
        version, functions = prepare_database()
    except (Failure, psycopg2.Error) as exc:
        print(f"setup failed: {exc}")
        print(f"0 passed, {len(RACES)} failed")
        return 1
    print(f"extension_tokens {version}: {ROUNDS} rounds per race, at most {SECONDS:.0f} s in all",
          flush=True)
    runnable = [r for r in RACES if r[0] not in NEEDS or NEEDS[r[0]] in functions]
    passed = failed = 0
    left = len(runnable)
    for race_no, (name, play, a_set, a_prep, b_set, b_prep) in enumerate(RACES, 1):
        if name in NEEDS and NEEDS[name] not in functions:
            print(f"{name}: skipped ({NEEDS[name]}() does not exist in this version)", flush=True)
            continue
        budget_end = time.monotonic() + max(DEADLINE - time.monotonic(), 0) / left
        left -= 1
        try:
            rounds, stats, outcomes, took = run_race(race_no, name, play, a_set, a_prep,
                                                     b_set, b_prep, budget_end)
        except (Failure, psycopg2.Error) as exc:
            print(f"{name}: could not run: {exc}", flush=True)
            failed += 1
            continue
        short_run = rounds < ROUNDS
        dist = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
        rounds_text = f"{rounds} rounds"
        if short_run:
            rounds_text += f" (of {ROUNDS}: time bound reached)"
        print(f"{name}: {rounds_text}, {stats['violations']} violations, "
              f"{stats['deadlocks']} deadlocks, {stats['errors']} errors ({dist}) "
              f"in {took:.1f} s", flush=True)
        if (short_run and not ALLOW_SHORT) or stats["violations"] or stats["deadlocks"] \
                or stats["errors"]:
            failed += 1
        else:
            passed += 1
    kept = kept_verdicts()
    if kept is not None:
        # The checks above attack kept verdicts only if validation used them.
        print(f"kept verdicts: {kept} validations answered without reading the session's row",
              flush=True)
        if kept > 0:
            passed += 1
        else:
            print("kept verdicts: none used: the races did not reach the path they attack",
                  flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def kept_verdicts():
    """validations_session_cached, or None where this version has no such
    counter (or the library is not preloaded: no counters)."""
    admin = Client()
    try:
        has = admin.run("SELECT count(*) AS n FROM pg_attribute "
                        "WHERE attrelid = 'extension_token_statistics'::regclass "
                        "AND attname = 'validations_session_cached'")[0]["n"]
        if not has:
            return None
        row = admin.run("SELECT counters_available, validations_session_cached AS n "
                        "FROM extension_token_stats()")[0]
        return row["n"] if row["counters_available"] else None
    finally:
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
