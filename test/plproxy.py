#!/usr/bin/python3
"""extension_tokens sharded on PL/Proxy (test/plproxy.sh sets it up).

Every function is called through the proxy database the way PostgREST calls
it: in a transaction that switched to anon, authenticated (with the user's
claims in request.jwt.claims) or service_role.  Where each session landed is
checked on the shards directly, as a superuser:

  placement        200 users issued through the proxy: every session is on the
                   shard of hashtext(user) & (shards - 1), its id carries that
                   shard's tag, and every shard holds some
  tokens           validate, refresh (and the old pair dead), reuse (PT401
                   refresh_token_already_used, the new pair dead), revoke by
                   access token, by refresh token, on the right shard
  users            list and revoke_user as the user (claims) and as the service
                   role; another user's sessions are refused (42501); anon
                   cannot issue
  sessions_keys    revoke_session by id; API keys created, listed, validated
                   and revoked through the proxy
  admin            stats add up every shard's counters; cleanup runs on every
                   shard; jwks answers
  hostile          garbage, forged and cross-shard tokens get the single
                   server's answers
  more_shards      the server grows to twice the partitions: every token issued
                   before still validates, refreshes and revokes through the
                   proxy (the tag names its shard exactly)

Environment: PGHOST, PGPORT (superuser postgres), ET_PROXY_DB, ET_SHARD_PREFIX,
ET_SHARDS.  Prints "ok - ..." per check and "N passed, M failed".
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import traceback
import uuid

import psycopg2

PROXY = os.environ["ET_PROXY_DB"]
PREFIX = os.environ["ET_SHARD_PREFIX"]
SHARDS = int(os.environ["ET_SHARDS"])

passed = 0
failed = 0


def connect(db):
    c = psycopg2.connect(dbname=db, user="postgres")
    c.autocommit = True
    return c


proxy = connect(PROXY)
shard = [connect(f"{PREFIX}{i}") for i in range(SHARDS)]


class Refused(Exception):
    def __init__(self, e):
        super().__init__(f"{e.pgcode} {e.diag.message_primary} ({e.diag.message_detail})")
        self.code = e.pgcode
        self.detail = e.diag.message_detail


def call(sql, args=(), role="anon", sub=None, many=False):
    """One request as PostgREST makes it: role and claims for one transaction."""
    claims = json.dumps({"sub": sub, "role": role}) if sub else ""
    with proxy.cursor() as cur:
        cur.execute("BEGIN")
        try:
            cur.execute("SELECT set_config('request.jwt.claims', %s, true), set_config('role', %s, true)",
                        (claims, role))
            cur.execute(sql, args)
            rows = cur.fetchall()
            cur.execute("COMMIT")
        except psycopg2.Error as e:
            cur.execute("ROLLBACK")
            raise Refused(e) from None
    return rows if many else (rows[0] if rows else None)


def refused(sql, args=(), **kw):
    try:
        call(sql, args, **kw)
    except Refused as e:
        return (e.code, e.detail)
    return None


def shard_of_user(user):
    with shard[0].cursor() as cur:
        cur.execute("SELECT hashtext(%s) & %s", (user, SHARDS - 1))
        return cur.fetchone()[0]


def tag(session_id):
    return int(str(session_id)[:4], 16)


def on_shard(i, sql, args=()):
    with shard[i].cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def check(name):
    def wrap(fn):
        global passed, failed
        try:
            fn()
            print(f"ok - {name}")
            passed += 1
        except Exception:  # noqa: BLE001
            print(f"not ok - {name}")
            for line in traceback.format_exc().splitlines():
                print(f"#   {line}")
            failed += 1
        return fn
    return wrap


def issue(user, role="service_role", **kw):
    sub = user if role == "authenticated" else None
    arg = None if role == "authenticated" else user
    r = call("SELECT access_token, refresh_token, session_id::text FROM extension_token_issue(%s)", (arg,),
             role=role, sub=sub)
    return {"user": user, "access": r[0], "refresh": r[1], "session": r[2]}


def validate(token):
    return call("SELECT valid, error, user_id, session_id::text, kind FROM extension_token_validate(%s)", (token,))


RUN = uuid.uuid4().hex[:8]
PAIRS = []


@check(f"200 users through the proxy: each session on the shard of its user's hash, tagged with it, {SHARDS} shards used")
def placement():
    for i in range(200):
        PAIRS.append(issue(f"user-{RUN}-{i}"))
    for p in PAIRS:
        want = shard_of_user(p["user"])
        assert tag(p["session"]) == want, (p["session"], want)
    for i in range(SHARDS):
        rows = on_shard(i, "SELECT user_id, session_id::text FROM extension_token_sessions")
        mine = [r for r in rows if r[0].startswith(f"user-{RUN}-")]
        assert mine, f"shard {i} holds none of the users"
        for user, sid in rows:
            assert shard_of_user(user) == i and tag(sid) == i, (i, user, sid)
        print(f"#   shard {i}: {len(mine)} of the 200 users' sessions, every row its own")
    assert sum(len(on_shard(i, "SELECT 1 FROM extension_token_sessions")) for i in range(SHARDS)) >= 200


@check("validate, refresh, reuse and revoke through the proxy, each on the token's shard")
def tokens():
    for p in PAIRS[:40]:
        v = validate(p["access"])
        assert v == (True, None, p["user"], p["session"], "access"), v
    for n, p in enumerate(PAIRS[:20]):
        new = call("SELECT access_token, refresh_token, session_id::text FROM extension_token_refresh(%s)",
                   (p["refresh"],))
        assert new[2] == p["session"]
        assert validate(p["access"])[1] == "revoked"
        assert validate(new[0])[0] is True
        if n % 2 == 0:
            # reuse of the exchanged refresh token: PT401 through the proxy, the session ends
            r = refused("SELECT * FROM extension_token_refresh(%s)", (p["refresh"],))
            assert r == ("PT401", "refresh_token_already_used"), r
            assert validate(new[0])[1] == "revoked"
        else:
            assert call("SELECT extension_token_revoke(%s)", (new[1],))[0] is True  # by refresh token
            assert validate(new[0])[1] == "revoked"
            assert call("SELECT extension_token_revoke(%s)", (new[1],))[0] is False
            r = refused("SELECT * FROM extension_token_refresh(%s)", (new[1],))
            assert r == ("PT401", "session_revoked"), r
    p = PAIRS[20]
    assert call("SELECT extension_token_revoke(%s)", (p["access"],))[0] is True
    assert validate(p["access"])[1] == "revoked"
    row = on_shard(tag(p["session"]), "SELECT revoked_at IS NOT NULL FROM extension_token_sessions "
                                      "WHERE session_id = %s", (p["session"],))
    assert row == [(True,)], row


@check("list and revoke_user as the user and as the service role; another user's sessions refused; anon cannot issue")
def users():
    alice, bob = f"alice-{RUN}", f"bob-{RUN}"
    a = issue(alice, role="authenticated")
    issue(bob, role="authenticated")
    rows = call("SELECT session_id::text, user_id FROM extension_token_list()", role="authenticated",
                sub=alice, many=True)
    assert rows == [(a["session"], alice)], rows
    assert refused("SELECT * FROM extension_token_list(%s)", (bob,), role="authenticated", sub=alice)[0] == "42501"
    assert refused("SELECT * FROM extension_token_issue(%s)", (alice,), role="anon")[0] == "42501"
    assert refused("SELECT * FROM extension_token_issue()", role="anon")[0] == "42501"
    n = call("SELECT revoke_user_extension_tokens()", role="authenticated", sub=alice)[0]
    assert n == 1, n
    assert validate(a["access"])[1] == "revoked"
    # the service role, for any user
    b2 = issue(bob)
    assert call("SELECT revoke_user_extension_tokens(%s)", (bob,), role="service_role")[0] == 1
    assert validate(b2["access"])[1] == "revoked"
    # revoke_user of a user whose sessions are on the other shard revokes nothing there
    listed = call("SELECT count(*) FROM extension_token_list(%s)", (bob,), role="service_role")[0]
    assert listed >= 1


@check("revoke_session by id, and API keys created, listed, validated and revoked through the proxy")
def sessions_keys():
    carol = f"carol-{RUN}"
    c = issue(carol, role="authenticated")
    assert refused("SELECT extension_token_revoke_session(%s)", (c["session"],), role="authenticated",
                   sub=f"mallory-{RUN}")[0] == "42501"
    assert call("SELECT extension_token_revoke_session(%s)", (c["session"],), role="authenticated",
                sub=carol)[0] is True
    assert validate(c["access"])[1] == "revoked"
    key = call("SELECT api_key, key_id::text FROM extension_token_api_key_create(p_name => 'ci', "
               "p_scopes => ARRAY['orders:read'])", role="authenticated", sub=carol)
    assert tag(key[1]) == shard_of_user(carol)
    v = validate(key[0])
    assert v[0] is True and v[2] == carol and v[4] == "api_key", v
    keys = call("SELECT session_id::text, kind FROM extension_token_api_key_list()", role="authenticated",
                sub=carol, many=True)
    assert keys == [(key[1], "api_key")], keys
    assert call("SELECT extension_token_revoke(%s)", (key[0],))[0] is True
    assert validate(key[0])[1] == "revoked"


@check("stats add up every shard's counters, cleanup runs on every shard, jwks answers; both for the service role only")
def admin():
    total = call("SELECT tokens_issued, sessions_active, counters_available FROM extension_token_stats()",
                 role="service_role")
    per = [on_shard(i, "SELECT tokens_issued, sessions_active FROM extension_token_stats()")[0]
           for i in range(SHARDS)]
    assert total[0] == sum(p[0] for p in per) and total[1] == sum(p[1] for p in per), (total, per)
    assert total[2] is True
    assert call("SELECT extension_tokens_cleanup('0 seconds')", role="service_role")[0] >= 1
    assert refused("SELECT * FROM extension_token_stats()", role="authenticated", sub="x")[0] == "42501"
    assert refused("SELECT extension_tokens_cleanup()", role="anon")[0] == "42501"
    jwks = call("SELECT extension_token_jwks()")[0]
    assert "keys" in jwks, jwks


def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


@check("garbage, forged and cross-shard tokens get the answers of a single server")
def hostile():
    for garbage in ["", "x", "a.b.c", "ext_rt_" + "!" * 71, "ext_pat_" + "z" * 71, "\u00e9" * 5000]:
        v = validate(garbage)
        single = on_shard(0, "SELECT valid, error, user_id, session_id::text, kind "
                             "FROM extension_token_validate(%s)", (garbage,))[0]
        assert v == single and v[0] is False, (garbage[:20], v, single)
        r = refused("SELECT * FROM extension_token_refresh(%s)", (garbage,))
        assert r == ("PT401", "refresh_token_not_found"), r
        assert call("SELECT extension_token_revoke(%s)", (garbage,))[0] is False
    # an access token whose session_id names the other shard, signed with a wrong key
    live = PAIRS[100]
    header, payload, _ = live["access"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    other = (tag(live["session"]) + 1) % SHARDS
    claims["session_id"] = f"{other:04x}" + claims["session_id"][4:]
    body = f"{header}.{b64(json.dumps(claims).encode())}"
    forged = body + "." + b64(hmac.new(b"not the secret" * 3, body.encode(), hashlib.sha256).digest())
    assert validate(forged)[1] == "invalid_signature"
    # the live token still validates; its refresh token with its session id moved is not found
    assert validate(live["access"])[0] is True
    moved = live["refresh"][:7] + ("1" if live["refresh"][7] == "0" else "0") + live["refresh"][8:]
    r = refused("SELECT * FROM extension_token_refresh(%s)", (moved,))
    assert r[0] == "PT401", r


@check("the proxy grows to twice the partitions: every token issued before still validates, refreshes and revokes")
def more_shards():
    grown = SHARDS * 2
    for i in range(SHARDS, grown):
        with proxy.cursor() as cur:
            cur.execute(f"CREATE DATABASE {PREFIX}{i}")
    for i in range(SHARDS, grown):
        c = connect(f"{PREFIX}{i}")
        with c.cursor() as cur:
            cur.execute(f"ALTER DATABASE {PREFIX}{i} SET extension_tokens.shard_tag = {i}")
            cur.execute("CREATE EXTENSION extension_tokens")
            cur.execute("SELECT extension_tokens_grant_api_roles()")
            cur.execute(open(os.path.join(os.path.dirname(__file__), "..", "examples", "plproxy",
                                          "shard.sql")).read())
        c.close()
    host, port = os.environ["PGHOST"], os.environ["PGPORT"]
    adds = ", ".join(f"ADD p{i} 'dbname={PREFIX}{i} host={host} port={port}'" for i in range(SHARDS, grown))
    with proxy.cursor() as cur:
        cur.execute(f"ALTER SERVER extension_tokens OPTIONS ({adds})")
    time.sleep(0.5)
    live = [p for p in PAIRS[30:] if validate(p["access"])[0]]
    assert len(live) > 100, len(live)
    for p in live[:60]:
        v = validate(p["access"])
        assert v[0] is True and v[2] == p["user"], v
    for p in live[60:80]:
        new = call("SELECT access_token, refresh_token FROM extension_token_refresh(%s)", (p["refresh"],))
        assert validate(new[0])[0] is True
        assert call("SELECT extension_token_revoke(%s)", (new[0],))[0] is True
        assert validate(new[0])[1] == "revoked"
    # new users land on all four, each on its own shard
    fresh = [issue(f"late-{RUN}-{i}") for i in range(40)]
    with shard[0].cursor() as cur:
        for p in fresh:
            cur.execute("SELECT hashtext(%s) & %s", (p["user"], grown - 1))
            assert tag(p["session"]) == cur.fetchone()[0]
            assert validate(p["access"])[0] is True
    print(f"#   {len(live)} tokens issued on {SHARDS} shards still routed after growing to {grown}; "
          f"new users on {len(set(tag(p['session']) for p in fresh))} shards")


print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
