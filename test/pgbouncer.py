#!/usr/bin/python3
"""A backend's driver (psycopg2) through PgBouncer in transaction pooling mode.

Run by test/pgbouncer.sh (through test/postgrest.sh with ET_POOLER=pgbouncer),
after PostgREST's requests went through the same pooler.  Many client
connections share ET_PGBOUNCER_POOL_SIZE server connections, so every check
here is about what one client's transaction may leave to another's, and
whether a per-backend cache stays right when a backend serves many clients.

  many_clients        40 client connections of the login role `backend` (a
                      member of service_role) issue, validate their own and
                      each other's tokens; server connections stay within the
                      pool; answers are right; the verified-token cache serves
                      most validations
  revocation_at_once  a revocation committed through one client: every client's
                      very next validate says revoked (each server connection
                      had the token cached), its refresh is refused
  refresh_reuse       refresh through one client, reuse of the old refresh
                      token through another: PT401 refresh_token_already_used,
                      and the new pair is dead on every client
  api_keys            create, validate (kind api_key), revoke_session by key
                      id, refused everywhere
  no_leaked_identity  PostgREST's login role through the pooler, after
                      PostgREST's requests ran on those server connections: no
                      role, claims or identity of theirs is left, and issue /
                      list without a user are refused
  sql_prepare         SQL-level PREPARE and EXECUTE in separate transactions:
                      an EXECUTE lands on another server connection and fails
                      (26000), or runs the statement this client prepared;
                      never another's

Environment: ET_PGBOUNCER_PORT, ET_PGBOUNCER_POOL_SIZE, ET_DB_PASSWORD; PGHOST,
PGPORT (the server itself, for a superuser's look at pg_stat_activity).
Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed".
"""
import os
import sys
import traceback
import uuid

import psycopg2
import psycopg2.extensions

PORT = int(os.environ["ET_PGBOUNCER_PORT"])
POOL = int(os.environ["ET_PGBOUNCER_POOL_SIZE"])
PASSWORD = os.environ["ET_DB_PASSWORD"]

passed = 0
failed = 0


def pooled(role="backend"):
    c = psycopg2.connect(host="127.0.0.1", port=PORT, dbname="postgres", user=role,
                         password=PASSWORD, connect_timeout=10)
    c.autocommit = True
    return c


def direct():
    c = psycopg2.connect(dbname="postgres", user="postgres")
    c.autocommit = True
    return c


def one(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def run(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)


def sqlstate(conn, sql, args=()):
    try:
        one(conn, sql, args)
        return None
    except psycopg2.Error as e:
        return (e.pgcode, e.diag.message_detail)


def check(name):
    def wrap(fn):
        global passed, failed
        try:
            fn()
            print(f"ok - {name}")
            passed += 1
        except Exception:  # noqa: BLE001 - any failure is the test's
            print(f"not ok - {name}")
            for line in traceback.format_exc().splitlines():
                print(f"#   {line}")
            failed += 1
        return fn
    return wrap


ADMIN = direct()


def server_connections(role):
    return one(ADMIN, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                      "AND backend_type = 'client backend'", (role,))[0]


def cached():
    return one(ADMIN, "SELECT validations_cached FROM extension_token_stats()")[0]


def issue(conn, user):
    row = one(conn, "SELECT access_token, refresh_token, session_id FROM extension_token_issue(%s)", (user,))
    return {"user": user, "access": row[0], "refresh": row[1], "session": row[2]}


def validate(conn, token):
    return one(conn, "SELECT valid, error, user_id, session_id::text, kind FROM extension_token_validate(%s)",
               (token,))


CLIENTS = [pooled() for _ in range(40)]


@check("40 clients over the pool: right answers, server connections within the pool, the cache serves most")
def many_clients():
    pairs = [issue(c, f"pool-user-{i}-{uuid.uuid4()}") for i, c in enumerate(CLIENTS)]
    before = cached()
    n = 0
    for c in CLIENTS:
        for p in pairs[::4]:
            v = validate(c, p["access"])
            n += 1
            assert v[0] is True and v[2] == p["user"] and v[3] == p["session"], (v, p["user"])
    hits = cached() - before
    servers = server_connections("backend")
    print(f"#   {len(CLIENTS)} clients, {servers} server connections, {n} validations, {hits} from the cache")
    assert 1 <= servers <= POOL, servers
    assert hits >= n - POOL * len(pairs[::4]), (hits, n)


@check("a revocation through one client: every other client's next validate says revoked, its refresh is refused")
def revocation_at_once():
    for round_ in range(10):
        a = CLIENTS[round_]
        p = issue(a, f"revoked-{uuid.uuid4()}")
        for c in CLIENTS:              # every server connection caches it
            assert validate(c, p["access"])[0] is True
        b = CLIENTS[-1 - round_]
        fn = ("extension_token_revoke(%s)", p["access"]) if round_ % 2 else \
             ("revoke_user_extension_tokens(%s)", p["user"])
        r = one(b, "SELECT " + fn[0], (fn[1],))[0]
        assert r in (True, 1), r
        for c in CLIENTS:
            v = validate(c, p["access"])
            assert v[0] is False and v[1] == "revoked", v
        state = sqlstate(CLIENTS[round_ + 10], "SELECT * FROM extension_token_refresh(%s)", (p["refresh"],))
        assert state == ("PT401", "session_revoked"), state


@check("refresh through one client, reuse through another: PT401 refresh_token_already_used, the new pair dead everywhere")
def refresh_reuse():
    p = issue(CLIENTS[0], f"reuse-{uuid.uuid4()}")
    new = one(CLIENTS[1], "SELECT access_token, refresh_token FROM extension_token_refresh(%s)", (p["refresh"],))
    assert validate(CLIENTS[2], new[0])[0] is True
    v = validate(CLIENTS[3], p["access"])
    assert v[0] is False and v[1] == "revoked", v
    state = sqlstate(CLIENTS[4], "SELECT * FROM extension_token_refresh(%s)", (p["refresh"],))
    assert state == ("PT401", "refresh_token_already_used"), state
    for c in CLIENTS:
        v = validate(c, new[0])
        assert v[0] is False and v[1] == "revoked", v
    state = sqlstate(CLIENTS[5], "SELECT * FROM extension_token_refresh(%s)", (new[1],))
    assert state == ("PT401", "session_revoked"), state


@check("API keys through the pool: created, validated on every client, revoked by key id, refused everywhere")
def api_keys():
    user = f"key-{uuid.uuid4()}"
    key, key_id = one(CLIENTS[6], "SELECT api_key, key_id::text FROM extension_token_api_key_create(%s, 'ci', "
                                  "ARRAY['orders:read'])", (user,))
    for c in CLIENTS:
        v = validate(c, key)
        assert v[0] is True and v[2] == user and v[4] == "api_key", v
    assert one(CLIENTS[7], "SELECT extension_token_revoke_session(%s)", (key_id,))[0] is True
    for c in CLIENTS:
        v = validate(c, key)
        assert v[0] is False and v[1] == "revoked", v


@check("PostgREST's login role through the pool after PostgREST's requests: no role, claims or identity left")
def no_leaked_identity():
    # The server connections of PostgREST's role served its requests, each of
    # which switched the role and set request.jwt.claims for its transaction.
    assert server_connections("authenticator") >= 1
    conns = [pooled("authenticator") for _ in range(2 * POOL)]
    try:
        for c in conns * 3:
            who = one(c, "SELECT current_user::text, session_user::text, current_setting('role'), "
                         "coalesce(current_setting('request.jwt.claims', true), ''), "
                         "coalesce(current_setting('request.headers', true), '')")
            assert who == ("authenticator", "authenticator", "none", "", ""), who
            state = sqlstate(c, "SELECT * FROM extension_token_issue()")
            assert state is not None and state[0] in ("42501", "22023"), state
            state = sqlstate(c, "SELECT * FROM extension_token_list()")
            assert state is not None and state[0] in ("42501", "22023"), state
    finally:
        for c in conns:
            c.close()


@check("SQL PREPARE across transactions: EXECUTE fails on another server connection, never runs another's statement")
def sql_prepare():
    a, b = pooled(), pooled()
    try:
        run(a, "PREPARE et_probe(text) AS SELECT 'a:' || $1")
        # b holds a server connection in a transaction (PgBouncer hands out
        # the one used last), so a's next transaction may get another one.
        b.autocommit = False
        run(b, "SELECT 1")
        try:
            got = one(a, "EXECUTE et_probe('x')")[0]
            outcome = "ran on the same server connection"
            assert got == "a:x", got
        except psycopg2.Error as e:
            assert e.pgcode == "26000", (e.pgcode, str(e))
            outcome = "failed with 26000 (prepared statement does not exist)"
        b.rollback()
        print(f"#   EXECUTE of a statement PREPAREd in an earlier transaction: {outcome}")
    finally:
        a.close()
        b.close()


for c in CLIENTS:
    c.close()
print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
