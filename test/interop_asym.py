#!/usr/bin/python3
"""Interoperability of ES256 and EdDSA access tokens with PyJWT (cryptography).

Proves, against a running server whose signing keys are files made with
openssl (ET_KEY_DIR: es1.pem, es2.pem, ed1.pem, readable by the server):
  * PyJWT verifies our ES256 and EdDSA tokens with nothing but the public JWK
    Set that extension_token_jwks() returns (the key picked by "kid"), and
    each kid is the RFC 7638 thumbprint of its key, computed here;
  * the JWK Set holds no private member, and nothing under HS256;
  * tokens that an independent signer makes are refused by ours with the
    right error: another key (invalid_signature), another algorithm (RS256,
    ES384, the other of ES256/EdDSA, "none": unsupported_algorithm), HS256
    keyed with our public key as PEM or JWK (unsupported_algorithm), altered
    claims (invalid_signature); a token correctly signed with our own key but
    never issued is not_found (the signature is accepted, the allow-list is
    not passed);
  * ECDSA malleability: our signature in its high-S form, which the
    cryptography library accepts as valid ECDSA, is refused by ours;
  * rotation with overlap: with the new key current and the old previous,
    PyJWT verifies old and new tokens from the one JWK Set and ours accepts
    both; once the previous key is removed the old token is refused by both.

Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (a superuser), ET_KEY_DIR.
Prints "ok - name" / "not ok - name: why" per check, then "N passed, M failed".
"""
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)

ISSUER, AUDIENCE = "extension_tokens", "extension"
KEY_DIR = os.environ.get("ET_KEY_DIR", "")
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
results = []


def check(name, ok, why=""):
    results.append(ok)
    print(f"ok - {name}" if ok else f"not ok - {name}: {why}", flush=True)


def psql(script, variables=None):
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


def configure(alg, current, previous=None):
    """Sets the algorithm and key files, reloads, waits until in force."""
    sets = [f"ALTER SYSTEM SET extension_tokens.signing_algorithm = '{alg}';"]
    for name, value in (("signing_key_file", current), ("signing_key_previous_file", previous)):
        if value:
            sets.append(f"ALTER SYSTEM SET extension_tokens.{name} = '{KEY_DIR}/{value}';")
        else:
            sets.append(f"ALTER SYSTEM RESET extension_tokens.{name};")
    psql("\n".join(sets) + "\nSELECT pg_reload_conf();")
    want = [] if alg == "HS256" else [kid_of(f) for f in (current, previous) if f]
    for _ in range(50):
        if [k["kid"] for k in jwks()["keys"]] == want and \
                psql("SHOW extension_tokens.signing_algorithm;").strip() == alg:
            return
        time.sleep(0.1)
    raise RuntimeError(f"configuration {alg} {current} {previous} not in force")


def kid_of(key_file):
    """The RFC 7638 thumbprint of a key file's public key, computed here."""
    key = serialization.load_pem_private_key(open(os.path.join(KEY_DIR, key_file), "rb").read(),
                                             password=None).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        n = key.public_numbers()
        return thumbprint({"kty": "EC", "crv": "P-256", "x": b64url(n.x.to_bytes(32, "big")),
                           "y": b64url(n.y.to_bytes(32, "big"))})
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return thumbprint({"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)})


def jwks():
    return json.loads(psql("SELECT extension_token_jwks();"))


def issue(user):
    return psql(
        "SET extension_tokens.issue_rate_limit = 0;\n"
        "SET extension_tokens.max_sessions_per_user = 0;\n"
        "SELECT access_token FROM extension_token_issue(p_user_id => :'user');",
        {"user": user}).strip()


def validate(token):
    out = psql("SELECT row_to_json(v) FROM extension_token_validate(:'t') AS v;", {"t": token})
    return json.loads(out)


def error_of(token):
    return validate(token)["error"]


def thumbprint(jwk):
    """RFC 7638, computed independently of the extension."""
    if jwk["kty"] == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    else:
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def pyjwt_verify(token, keyset):
    """PyJWT, with only the JWK Set: the key the header's kid names."""
    header = jwt.get_unverified_header(token)
    matches = [k for k in keyset.keys if k.key_id == header.get("kid")]
    if not matches:
        raise jwt.InvalidTokenError("no key in the JWK Set has this kid")
    return jwt.decode(token, matches[0].key, algorithms=[header["alg"]],
                      audience=AUDIENCE, issuer=ISSUER)


def claims(sub, **changes):
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "session_id": str(uuid.uuid4()),
            "jti": str(uuid.uuid4()), "type": "access", "iat": now, "exp": now + 3600}
    base.update(changes)
    return base


def ecdsa_sign_low_s(key, signing_input):
    """ES256 with cryptography, R || S with S in its low form (as ours writes)."""
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    if s > P256_N // 2:
        s = P256_N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def run_algorithm(alg, key_file):
    configure(alg, key_file)
    user = f"interop-{alg}-{uuid.uuid4()}"
    token = issue(user)
    header = jwt.get_unverified_header(token)
    keyset_dict = jwks()
    keyset = jwt.PyJWKSet.from_dict(keyset_dict)

    check(f"{alg}: header alg {alg}, typ JWT, a kid", header.get("alg") == alg and
          header.get("typ") == "JWT" and bool(header.get("kid")), str(header))
    check(f"{alg}: the JWK Set holds one public key, no private member",
          len(keyset_dict["keys"]) == 1 and
          not any(m in k for k in keyset_dict["keys"] for m in ("d", "p", "q", "k")),
          json.dumps(keyset_dict))
    check(f"{alg}: kid is the RFC 7638 thumbprint of the JWK and of the key file's public key",
          keyset_dict["keys"][0]["kid"] == thumbprint(keyset_dict["keys"][0]) == header.get("kid")
          == kid_of(key_file), json.dumps(keyset_dict))
    try:
        decoded = pyjwt_verify(token, keyset)
        check(f"{alg}: PyJWT verifies our token with only the JWK Set", decoded.get("sub") == user,
              str(decoded))
    except Exception as e:  # noqa: BLE001
        check(f"{alg}: PyJWT verifies our token with only the JWK Set", False, repr(e))
    check(f"{alg}: ours validates it", validate(token)["valid"] is True, str(validate(token)))

    private = serialization.load_pem_private_key(
        open(os.path.join(KEY_DIR, key_file), "rb").read(), password=None)
    kid = header["kid"]
    hdr = {"alg": alg, "typ": "JWT", "kid": kid}

    # Correctly signed with our own key but never issued: signature accepted.
    if alg == "ES256":
        si = f"{compact(hdr)}.{compact(claims(user))}"
        own = f"{si}.{b64url(ecdsa_sign_low_s(private, si))}"
    else:
        own = jwt.encode(claims(user), private, algorithm=alg, headers={"kid": kid})
    check(f"{alg}: signed by another library with our key, never issued: not_found",
          error_of(own) == "not_found", str(validate(own)))

    # Another key of the same kind, with and without our kid.
    other = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
    for name, extra in (("with our kid", {"kid": kid}), ("without kid", {})):
        forged = jwt.encode(claims(user), other, algorithm=alg, headers=extra)
        if not extra:
            forged = jwt.encode(claims(user), other, algorithm=alg)
        check(f"{alg}: PyJWT token signed with another key ({name}) is invalid_signature",
              error_of(forged) == "invalid_signature", str(validate(forged)))

    # Other algorithms.
    others = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        ("EdDSA" if alg == "ES256" else "ES256"):
            ed25519.Ed25519PrivateKey.generate() if alg == "ES256" else ec.generate_private_key(ec.SECP256R1()),
    }
    for other_alg, other_key in others.items():
        forged = jwt.encode(claims(user), other_key, algorithm=other_alg, headers={"kid": kid})
        check(f"{alg}: PyJWT token signed {other_alg} is unsupported_algorithm",
              error_of(forged) == "unsupported_algorithm", str(validate(forged)))
    none = f"{compact({'alg': 'none', 'typ': 'JWT'})}.{compact(claims(user))}."
    check(f"{alg}: alg none is unsupported_algorithm", error_of(none) == "unsupported_algorithm",
          str(validate(none)))

    # HS256 keyed with our public key (PyJWT itself refuses to do this, so
    # the HMAC is made by hand), as PEM and as the JWK's JSON.
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for name, secret in (("PEM", public_pem),
                         ("JWK", json.dumps(keyset_dict["keys"][0]).encode()),
                         ("JWK Set", json.dumps(keyset_dict).encode())):
        si = f"{compact({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{compact(claims(user))}"
        forged = f"{si}.{b64url(hmac.new(secret, si.encode(), hashlib.sha256).digest())}"
        check(f"{alg}: HS256 keyed with our public key ({name}) is unsupported_algorithm",
              error_of(forged) == "unsupported_algorithm", str(validate(forged)))

    # Altered claims, signature kept.
    h, p, s = token.split(".")
    payload = json.loads(b64url_decode(p))
    payload["sub"] = "mallory"
    altered = f"{h}.{compact(payload)}.{s}"
    check(f"{alg}: our token with altered claims is invalid_signature",
          error_of(altered) == "invalid_signature", str(validate(altered)))

    if alg == "ES256":
        sig = b64url_decode(s)
        r, low = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        check("ES256: our signatures are in the low-S form", low <= P256_N // 2, hex(low))
        high = P256_N - low
        try:
            private.public_key().verify(encode_dss_signature(r, high), f"{h}.{p}".encode(),
                                        ec.ECDSA(hashes.SHA256()))
            valid_for_ecdsa = True
        except Exception:  # noqa: BLE001
            valid_for_ecdsa = False
        malleated = f"{h}.{p}.{b64url(r.to_bytes(32, 'big') + high.to_bytes(32, 'big'))}"
        check("ES256: the high-S form is valid ECDSA (cryptography) but refused by ours",
              valid_for_ecdsa and error_of(malleated) == "invalid_signature",
              f"{valid_for_ecdsa} {validate(malleated)}")
    return token


def main():
    if not KEY_DIR:
        raise RuntimeError("ET_KEY_DIR is not set")
    psql("SET client_min_messages = warning;\nCREATE EXTENSION IF NOT EXISTS extension_tokens;")
    check("HS256: the JWK Set is empty (a secret is never published)", jwks() == {"keys": []},
          json.dumps(jwks()))

    es1_token = run_algorithm("ES256", "es1.pem")
    run_algorithm("EdDSA", "ed1.pem")

    # Rotation with overlap: es2 current, es1 previous.
    configure("ES256", "es2.pem", "es1.pem")
    es2_token = issue(f"interop-rotation-{uuid.uuid4()}")
    keyset = jwt.PyJWKSet.from_dict(jwks())
    for name, token in (("old (previous key)", es1_token), ("new (current key)", es2_token)):
        try:
            pyjwt_verify(token, keyset)
            ok = True
            why = ""
        except Exception as e:  # noqa: BLE001
            ok, why = False, repr(e)
        check(f"rotation: PyJWT verifies the {name} token from the one JWK Set", ok, why)
        check(f"rotation: ours validates the {name} token", validate(token)["valid"] is True,
              str(validate(token)))
    configure("ES256", "es2.pem")
    keyset = jwt.PyJWKSet.from_dict(jwks())
    try:
        pyjwt_verify(es1_token, keyset)
        refused = False
    except jwt.InvalidTokenError:
        refused = True
    check("rotation done: PyJWT finds no key for the old token", refused)
    check("rotation done: ours refuses the old token", error_of(es1_token) == "invalid_signature",
          str(validate(es1_token)))
    check("rotation done: the new token still validates", validate(es2_token)["valid"] is True)

    configure("HS256", None)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001
        print(f"not ok - interop_asym aborted: {e!r}")
        print(f"{sum(results)} passed, {len(results) - sum(results) + 1} failed")
        sys.exit(1)
