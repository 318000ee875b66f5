#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/fuzz_token.c into fuzz/corpus/.

The files are committed; this script only says where they come from and
rebuilds them (deterministically) if the harness's fixed key, issuer,
audience or clock change.  Run: python3 fuzz/make_corpus.py
"""
import base64
import hashlib
import hmac
import json
import os
import random

# Must match fuzz/fuzz_token.c.
KEY = b"fuzz-key-0123456789-abcdefghij-ABCDEFGHI"
ISSUER = "https://issuer.example"
AUDIENCE = "api.example"
NOW = 1700000000

assert len(KEY) == 40
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def kid(key: bytes) -> str:
    return hashlib.sha256(b"extension_tokens kid:" + key).digest()[:8].hex()


def jws(header, payload, key=KEY, digest=hashlib.sha256, sign=True) -> bytes:
    h = header if isinstance(header, bytes) else compact(header)
    p = payload if isinstance(payload, bytes) else compact(payload)
    signing_input = b64(h) + "." + b64(p)
    sig = b64(hmac.new(key, signing_input.encode(), digest).digest()) if sign else ""
    return (signing_input + "." + sig).encode()


def claims(**over):
    c = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "6f1c1a52-2b1e-4d3a-9a55-0c7a3a8f9e01",
        "session_id": "0b0e6a43-7d1c-4f7e-8a2d-5c3b1e9f0a77",
        "jti": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "type": "access",
        "iat": NOW - 60,
        "exp": NOW + 3600,
        "scope": "read",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


HS256 = {"alg": "HS256", "typ": "JWT"}
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def refresh(body: str) -> bytes:
    head = "ext_rt_" + body
    v = int.from_bytes(hashlib.sha256(head.encode()).digest()[:4], "big")
    sum_ = ""
    for _ in range(6):
        sum_ = B62[v % 62] + sum_
        v //= 62
    return (head + sum_).encode()


def seeds():
    rnd = random.Random(20240601)
    s = {}
    # A. tokens
    s["jwt_valid"] = jws(HS256, claims())
    s["jwt_valid_kid"] = jws(dict(HS256, kid=kid(KEY)), claims())
    s["jwt_unknown_kid"] = jws(dict(HS256, kid="0123456789abcdef"), claims())
    s["jwt_expired"] = jws(HS256, claims(exp=NOW - 3600))
    s["jwt_nbf_future"] = jws(HS256, claims(nbf=NOW + 3600))
    s["jwt_aud_array"] = jws(HS256, claims(aud=["other", AUDIENCE]))
    s["jwt_type_refresh"] = jws(HS256, claims(type="refresh"))
    s["jwt_exp_real"] = jws(HS256, claims(exp=1.7e9 + 3600.5))
    s["jwt_sub_nul"] = jws(HS256, b'{"iss":"%s","aud":"%s","sub":"a\\u0000b",'
                           b'"session_id":"0b0e6a43-7d1c-4f7e-8a2d-5c3b1e9f0a77",'
                           b'"jti":"x","type":"access","iat":1,"exp":1800000000}'
                           % (ISSUER.encode(), AUDIENCE.encode()))
    s["jwt_alg_none"] = jws({"alg": "none", "typ": "JWT"}, claims(), sign=False)
    s["jwt_alg_hs384"] = jws({"alg": "HS384", "typ": "JWT"}, claims(), digest=hashlib.sha384)
    s["jwt_alg_lowercase"] = jws({"alg": "hs256"}, claims())
    s["jwt_crit"] = jws(dict(HS256, crit=["exp"]), claims())
    s["jwt_dup_alg"] = jws(b'{"alg":"HS256","alg":"none"}', claims())
    # The signature's last character carries 4 bits and 2 zero bits: set one.
    good = jws(HS256, claims())
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    s["jwt_noncanonical_sig"] = good[:-1] + bytes([alphabet[alphabet.index(good[-1]) ^ 1]])
    # B. JSON text (token_json_string_member, and payload/header of D)
    s["json_payload"] = compact(claims())
    s["json_header_kid"] = compact(dict(HS256, kid=kid(KEY)))
    s["json_members"] = '{"sub":"abc","typ":"JWT","alg":"HS256","a":"x\\u00e9","":1}'.encode()
    s["json_deep"] = b"[" * 2049 + b"]" * 2049
    # Refresh tokens
    body = "".join(rnd.choice(B62) for _ in range(43))
    s["refresh_legacy"] = refresh(body)
    sid = ""
    n = int.from_bytes(rnd.randbytes(16), "big")
    for _ in range(22):
        sid = B62[n % 62] + sid
        n //= 62
    s["refresh_valid"] = refresh(sid + body)
    s["refresh_sid_overflow"] = refresh("z" * 22 + body)
    bad = bytearray(refresh(body))
    bad[-1] = ord("0") if bad[-1] != ord("0") else ord("1")
    s["refresh_bad_checksum"] = bytes(bad)
    # E. sign round trip: 4 selector bytes (issuer/audience, sub, times;
    # flags: 1 no extras, 2 kid, 0x0c negative checks unless 0, 0x10 role),
    # then the extra claims
    s["sign_extras"] = b"\x00\x00\x00\x00" + b'{"scope":"read write","n":1,"r":1.5,"o":{"x":[true,null]}}'
    s["sign_kid_role_extras"] = b"\x01\x02\x03\x12" + b'{"plan":"pro","tags":["a","b"]}'
    s["sign_reserved"] = b"\x00\x00\x00\x00" + b'{"nbf":"soon","role":"admin"}'
    s["sign_reals"] = b"\x00\x00\x00\x00" + b'{"r":[0.1,0.2,1e-7,3.14,2.5e10]}'
    s["sign_bigint"] = b"\x00\x00\x00\x00" + b'{"n":99999999999999999999}'
    # fuzz/findings/README 1: 1.2 KB of claims, a token over TOKEN_MAX_LENGTH
    s["sign_reals_oversize"] = b"\x00\x00\x00\x00" + b'{"a":[' + b",".join([b"0.1"] * 300) + b"]}"
    # Edge cases
    s["empty"] = b""
    s["junk"] = bytes(rnd.randrange(256) for _ in range(48))
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.unlink(os.path.join(OUT, name))
    for name, data in sorted(seeds().items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds())} seeds in {OUT}")


if __name__ == "__main__":
    main()
