#!/usr/bin/python3
"""Interoperability of extension_tokens with an independent JWT library.

Proves, against a running server, with PyJWT as the other implementation:
  * an access token the extension issues is a standard HS256 JWS that PyJWT
    verifies, with the expected header and claims (30-day lifetime);
  * a token PyJWT signs correctly but the extension never issued is refused
    as not_found: validation is an allow-list of issued tokens, not just a
    signature check;
  * other algorithms (HS384, HS512, "none" in any spelling, lower-case
    "hs256"), a wrong key, and a tampered payload are refused with the
    right error;
  * the claim checks (issuer, audience, type, exp, nbf, integer types,
    required exp) answer with the documented error codes;
  * the issued token itself validates, with its extra claims;
  * user ids are text (1.2): a token issued for an Auth0- or Clerk-style id
    carries it as its sub, verified by PyJWT and returned by validate.

Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (a superuser; psql is the
only client used) and ET_SECRET (the server's extension_tokens.jwt_secret).
Prints "ok - name" / "not ok - name: why" per check, then "N passed, M failed";
exits 1 if any check failed.
"""
import re
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid

import jwt

ISSUER, AUDIENCE = "extension_tokens", "extension"
SECRET = os.environ.get("ET_SECRET", "")
WRONG_KEY = "this-is-not-the-secret-but-it-is-long-enough-0123456789"
results = []


def check(name, ok, why=""):
    results.append(ok)
    print(f"ok - {name}" if ok else f"not ok - {name}: {why}", flush=True)


def psql(script, variables=None):
    """Runs script on stdin; variables become psql variables (use :'name')."""
    lines = []
    for key, value in (variables or {}).items():
        quoted = value.replace("\\", "\\\\").replace("'", "''")
        lines.append(f"\\set {key} '{quoted}'")
    proc = subprocess.run(
        ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"],
        input="\n".join(lines + [script]) + "\n",
        capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(obj):
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hs256(signing_input, key=SECRET):
    return b64url(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())


def hand_signed(header, payload):
    """A JWS with any header, carrying a real HMAC-SHA256 over header.payload."""
    signing_input = f"{compact(header)}.{compact(payload)}"
    return f"{signing_input}.{hs256(signing_input)}"


def is_uuid(value):
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def claims(**changes):
    """Our claim set, valid now; a value of None removes the claim."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()),
            "session_id": str(uuid.uuid4()), "jti": str(uuid.uuid4()),
            "type": "access", "iat": now, "exp": now + 3600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def validate_all(tokens):
    """Validates every token in one session; returns one result dict each."""
    names = {f"t{i}": token for i, token in enumerate(tokens)}
    script = "\n".join(
        f"SELECT row_to_json(v) FROM extension_token_validate(:'{n}') AS v;"
        for n in names)
    return [json.loads(line) for line in psql(script, names).splitlines() if line]


def main():
    if not SECRET:
        raise RuntimeError("ET_SECRET is not set")
    psql("SET client_min_messages = warning;\n"
         "CREATE EXTENSION IF NOT EXISTS extension_tokens;")

    # Issue one real token for a fresh user.
    user = str(uuid.uuid4())
    real = psql(
        "SET extension_tokens.issue_rate_limit = 0;\n"
        "SET extension_tokens.max_sessions_per_user = 0;\n"
        "SELECT access_token FROM extension_token_issue("
        "p_user_id => :'user', p_claims => '{\"plan\":\"pro\"}');",
        {"user": user}).strip()

    # a. PyJWT verifies the issued token.
    decoded = {}
    try:
        decoded = jwt.decode(real, SECRET, algorithms=["HS256"],
                             audience=AUDIENCE, issuer=ISSUER)
        check("pyjwt verifies an issued token", True)
    except jwt.PyJWTError as e:
        check("pyjwt verifies an issued token", False, repr(e))
    header = jwt.get_unverified_header(real)
    check("issued header is HS256/JWT with a 16-hex-digit key id",
          set(header) == {"alg", "typ", "kid"} and header["alg"] == "HS256"
          and header["typ"] == "JWT" and re.fullmatch(r"[0-9a-f]{16}", header["kid"]) is not None,
          f"header {header}")
    problems = [k for k, ok in [
        ("sub", decoded.get("sub") == user),
        ("type", decoded.get("type") == "access"),
        ("plan", decoded.get("plan") == "pro"),
        ("session_id", is_uuid(decoded.get("session_id"))),
        ("jti", is_uuid(decoded.get("jti"))),
        ("iat", type(decoded.get("iat")) is int),
        ("exp", type(decoded.get("exp")) is int),
        ("exp - iat", type(decoded.get("exp")) is int and type(decoded.get("iat")) is int
         and decoded["exp"] - decoded["iat"] == 30 * 86400),
    ] if not ok]
    check("issued claims are as specified", not problems,
          f"wrong {', '.join(problems)} in {decoded}")

    # e. Tamper with the real token's payload.
    head, body, sig = real.split(".")
    altered = json.loads(b64url_decode(body))
    altered["sub"] = str(uuid.uuid4())
    altered_body = compact(altered)
    tampered = f"{head}.{altered_body}.{sig}"
    resigned = f"{head}.{altered_body}.{hs256(f'{head}.{altered_body}')}"

    cases = [
        # b. allow-list: right secret, right claims, never issued.
        ("pyjwt-signed token that was never issued", "not_found",
         jwt.encode(claims(), SECRET, algorithm="HS256")),
        # c. algorithms.
        ("HS384 with the right secret", "unsupported_algorithm",
         jwt.encode(claims(), SECRET, algorithm="HS384")),
        ("HS512 with the right secret", "unsupported_algorithm",
         jwt.encode(claims(), SECRET, algorithm="HS512")),
        # PyJWT's "none" token has an empty third segment; the header is
        # judged first, so it is reported by its algorithm.
        ("alg none from pyjwt (empty signature)", "unsupported_algorithm",
         jwt.encode(claims(), None, algorithm="none")),
        ("alg none with a signature", "unsupported_algorithm",
         hand_signed({"alg": "none", "typ": "JWT"}, claims())),
        ("alg NONE", "unsupported_algorithm", hand_signed({"alg": "NONE"}, claims())),
        ("alg None", "unsupported_algorithm", hand_signed({"alg": "None"}, claims())),
        ("alg hs256", "unsupported_algorithm", hand_signed({"alg": "hs256"}, claims())),
        # d. wrong key.
        ("HS256 with a wrong key", "invalid_signature",
         jwt.encode(claims(), WRONG_KEY, algorithm="HS256")),
        # e. tampering.
        ("issued token with altered sub", "invalid_signature", tampered),
        ("issued token with altered sub, re-signed", "not_found", resigned),
        # f. claims.
        ("wrong iss", "wrong_issuer", jwt.encode(claims(iss="someone-else"), SECRET)),
        ("wrong aud", "wrong_audience", jwt.encode(claims(aud="other"), SECRET)),
        ("type refresh", "wrong_token_type", jwt.encode(claims(type="refresh"), SECRET)),
        ("exp in the past", "expired",
         jwt.encode(claims(exp=int(time.time()) - 3600), SECRET)),
        ("nbf in the future", "not_yet_valid",
         jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET)),
        ("exp as a string", "malformed", jwt.encode(claims(exp="9999999999"), SECRET)),
        ("exp as a float", "malformed", jwt.encode(claims(exp=9999999999.5), SECRET)),
        ("exp missing", "malformed", jwt.encode(claims(exp=None), SECRET)),
    ]
    outcomes = validate_all([token for _, _, token in cases] + [real])
    if len(outcomes) != len(cases) + 1:
        raise RuntimeError(f"{len(outcomes)} validation results for {len(cases) + 1} tokens")
    for (name, expected, _), got in zip(cases, outcomes):
        check(f"{name} -> {expected}",
              got["valid"] is False and got["error"] == expected,
              f"valid={got['valid']} error={got['error']}")

    # g. the issued token validates, with its claims.
    got = outcomes[-1]
    check("issued token validates",
          got["valid"] is True and got["error"] is None
          and got["user_id"] == user
          and got["session_id"] == decoded.get("session_id")
          and (got["claims"] or {}).get("plan") == "pro",
          f"result {got}")

    # h. text user ids (1.2): whatever an identity provider puts in sub.
    for text_user in (f"auth0|{uuid.uuid4().hex}", f"user_2{uuid.uuid4().hex[:24]}",
                      f"Jörg's \"id\" {uuid.uuid4().hex[:8]}"):
        token = psql(
            "SELECT access_token FROM extension_token_issue(p_user_id => :'user');",
            {"user": text_user}).strip()
        try:
            sub = jwt.decode(token, SECRET, algorithms=["HS256"],
                             audience=AUDIENCE, issuer=ISSUER).get("sub")
        except jwt.PyJWTError as e:
            sub = repr(e)
        got = validate_all([token])[0]
        check(f"text user id {text_user[:12]}...: pyjwt reads it as sub, validate returns it",
              sub == text_user and got["valid"] is True and got["user_id"] == text_user,
              f"sub {sub!r}, validate {got}")

    # i. Opaque tokens checked offline from the README's description alone:
    # prefix, the session (key) id in 22 base62 digits, 43 random base62
    # characters, and a checksum: the first 32 bits of SHA-256 of everything
    # before it, as one number in 6 base62 digits (alphabet 0-9, A-Z, a-z).
    b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

    def checksum(head):
        v = int.from_bytes(hashlib.sha256(head.encode()).digest()[:4], "big")
        out = ""
        for _ in range(6):
            out = b62[v % 62] + out
            v //= 62
        return out

    def session_of(token, prefix):
        digits = token[len(prefix):len(prefix) + 22]
        n = 0
        for c in digits:
            n = n * 62 + b62.index(c)
        return str(uuid.UUID(int=n))

    row = psql(
        "SET extension_tokens.issue_rate_limit = 0;\n"
        "SET extension_tokens.max_sessions_per_user = 0;\n"
        "SELECT refresh_token || ' ' || session_id FROM extension_token_issue(p_user_id => :'user');\n"
        "SELECT api_key || ' ' || key_id FROM extension_token_api_key_create(p_user_id => :'user');",
        {"user": user}).split()
    for (token, sid), prefix, length in (((row[0], row[1]), "ext_rt_", 78),
                                         ((row[2], row[3]), "ext_pat_", 79)):
        check(f"{prefix} token: {length} characters, the README's checksum matches, the id decodes",
              len(token) == length and token.startswith(prefix)
              and all(c in b62 for c in token[len(prefix):])
              and checksum(token[:-6]) == token[-6:]
              and session_of(token, prefix) == sid,
              f"{token[:12]}... ({len(token)}), session {sid}")
        typo = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
        check(f"{prefix} token with one character changed: the checksum says so",
              checksum(typo[:-6]) != typo[-6:])

    # The retry window's box (AES-256-GCM, nonce || ciphertext || tag, the
    # session id bound): within the window, a retry with the exchanged refresh
    # token gets the successor pair from it.  It was sealed under a key made
    # from that token alone, so a dump or backup and an old refresh token
    # opened it offline and gave the current pair, unseen by reuse detection.
    # Now the server's secret is in the key too; opened here with it, to show
    # that this check can see a box open.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    r0, sid = psql(
        "SET extension_tokens.issue_rate_limit = 0;\n"
        "SET extension_tokens.max_sessions_per_user = 0;\n"
        "SELECT refresh_token || ' ' || session_id FROM extension_token_issue(p_user_id => :'user');",
        {"user": user}).split()
    a1, r1 = psql("SELECT access_token || ' ' || refresh_token FROM extension_token_refresh(:'r0');",
                  {"r0": r0}).split()
    box = bytes.fromhex(psql(
        "SELECT encode(retry_box, 'hex') FROM extension_token_sessions WHERE session_id = :'sid';",
        {"sid": sid}).strip())

    def opened(key):
        try:
            return AESGCM(key).decrypt(box[:12], box[12:], uuid.UUID(sid).bytes)
        except Exception:  # noqa: BLE001 - any failure is "does not open"
            return None

    def mac(key, data):
        return hmac.new(key, data, hashlib.sha256).digest()

    label_v1, label_v2 = b"extension_tokens retry window v1", b"extension_tokens retry window v2"
    check("the retry window's box does not open with the exchanged refresh token alone "
          "(a dump or backup and an old refresh token)",
          len(box) > 28 and opened(mac(r0.encode(), label_v1)) is None
          and opened(mac(r0.encode(), label_v2)) is None, f"{len(box)} bytes")
    check("it opens with the server's secret and that token, to the successor pair",
          opened(mac(mac(SECRET.encode(), label_v2), r0.encode())) == f"{a1}\n{r1}".encode())


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report, then still print the tally
        check("run to completion", False, f"{type(e).__name__}: {e}")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if results and passed == len(results) else 1)
