/*-------------------------------------------------------------------------
 *
 * token.c
 *	  The token core: access tokens (HS256, ES256, EdDSA) and opaque refresh
 *	  tokens.
 *
 * Building uses libjwt, which writes a standard compact JWS (under ES256
 * and EdDSA libjwt builds the claims and OpenSSL signs: see token_keys.c).
 * Verifying does not: libjwt 1.10 takes the algorithm from the header case-insensitively,
 * skips the signature for an empty key, compares MACs with strcmp, alloca()s
 * the token's length and checks no claim at all.  So every decision here is
 * ours, in this order (RFC 8725):
 *
 *	1. length cap and syntax: [A-Za-z0-9_-] in three segments that are
 *	   canonical base64url, only the signature may be empty;
 *	2. header: a JSON object (duplicate keys refused) whose "alg" is exactly
 *	   the configured algorithm ("HS256", or from 1.2 "ES256" or "EdDSA"),
 *	   whose "typ", if present, is "JWT", and with no "crit";
 *	3. signature: under HS256 exactly 32 bytes, HMAC-SHA256 over the raw
 *	   "header.payload" bytes, compared in constant time; under ES256 and
 *	   EdDSA exactly 64 bytes, verified with OpenSSL by token_keys.c (low-S
 *	   ECDSA only, canonical Ed25519) with the public key of the configured
 *	   key file, never a key the token brings;
 *	4. claims: the payload parsed once, strictly, by PostgreSQL's JSON
 *	   parser (token_payload.c), which also hands each value to the caller's
 *	   visitor (the backend builds the claims jsonb in that same pass);
 *	   then integers where integers are due, iss, aud, type, exp, nbf, iat.
 *
 * The database checks (the token's hash is known, unrevoked and unexpired)
 * come after this, outside this file.  Nothing here touches the database or
 * raises an error (the parse allocates with palloc: the caller's memory
 * context in a backend, malloc in the fuzzer), so a fuzzer drives it alone.
 *
 *-------------------------------------------------------------------------
 */
#include <dlfcn.h>
#include <string.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "token.h"

static const char *const status_names[TOKEN_STATUS_COUNT] = {
	[TOKEN_OK] = NULL,
	[TOKEN_MISSING] = "missing",
	[TOKEN_MALFORMED] = "malformed",
	[TOKEN_INVALID_SIGNATURE] = "invalid_signature",
	[TOKEN_UNSUPPORTED_ALGORITHM] = "unsupported_algorithm",
	[TOKEN_EXPIRED] = "expired",
	[TOKEN_NOT_YET_VALID] = "not_yet_valid",
	[TOKEN_WRONG_TOKEN_TYPE] = "wrong_token_type",
	[TOKEN_WRONG_ISSUER] = "wrong_issuer",
	[TOKEN_WRONG_AUDIENCE] = "wrong_audience",
	[TOKEN_NOT_FOUND] = "not_found",
	[TOKEN_REVOKED] = "revoked",
	[TOKEN_INSUFFICIENT_SCOPE] = "insufficient_scope",
};

/* Claims that only the issuer writes; a caller's extra claims may not. */
const char	token_too_long[] = "the token would be longer than the verifier accepts";
const char	token_bad_claims[] = "extra claims are not a JSON object libjwt can carry";

const char *token_reserved_claims[] = {
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "type", "session_id",
	"role", "scope", NULL
};

static const char base62_alphabet[] =
"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const char *
token_status_name(TokenStatus status)
{
	if (status < 0 || status >= TOKEN_STATUS_COUNT)
		return "malformed";
	return status_names[status];
}

bool
token_is_reserved_claim(const char *name)
{
	for (int i = 0; token_reserved_claims[i] != NULL; i++)
		if (strcmp(name, token_reserved_claims[i]) == 0)
			return true;
	return false;
}

/* ---------------------------------------------------------------------
 * Primitives
 * ---------------------------------------------------------------------
 */

bool
token_random_bytes(unsigned char *buf, size_t len)
{
	return RAND_bytes(buf, (int) len) == 1;
}

/* RFC 9562 version 4 UUID. */
bool
token_random_uuid(unsigned char uuid[TOKEN_UUID_LENGTH])
{
	if (!token_random_bytes(uuid, TOKEN_UUID_LENGTH))
		return false;
	uuid[6] = (uuid[6] & 0x0f) | 0x40;
	uuid[8] = (uuid[8] & 0x3f) | 0x80;
	return true;
}

void
token_uuid_format(const unsigned char uuid[TOKEN_UUID_LENGTH], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int			o = 0;

	for (int i = 0; i < TOKEN_UUID_LENGTH; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[uuid[i] >> 4];
		out[o++] = hex[uuid[i] & 0x0f];
	}
	out[o] = '\0';
}

/* A hex digit's value plus one; 0 for anything else (a table: no branches). */
static const unsigned char hex_values[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
	['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
	['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
	['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static int
hex_value(char c)
{
	return (int) hex_values[(unsigned char) c] - 1;
}

/* Only the canonical 8-4-4-4-12 form. */
bool
token_uuid_parse(const char *text, size_t len, unsigned char uuid[TOKEN_UUID_LENGTH])
{
	size_t		p = 0;

	if (len != 36)
		return false;
	for (int i = 0; i < TOKEN_UUID_LENGTH; i++)
	{
		int			hi,
					lo;

		if (i == 4 || i == 6 || i == 8 || i == 10)
		{
			if (text[p] != '-')
				return false;
			p++;
		}
		hi = hex_value(text[p]);
		lo = hex_value(text[p + 1]);
		if (hi < 0 || lo < 0)
			return false;
		uuid[i] = (unsigned char) ((hi << 4) | lo);
		p += 2;
	}
	return true;
}

/*
 * OpenSSL 3 looks an algorithm up by name on every implicit fetch
 * (EVP_sha256() in a one-shot call); the hot path fetches SHA-256 and HMAC
 * once per process and keeps its contexts.  A failure to set them up falls
 * back to the one-shot calls.
 */
static EVP_MD *sha256_md;
static EVP_MD_CTX *sha256_ctx;
static EVP_MAC *hmac_mac;

static bool
sha256_ready(void)
{
	if (sha256_ctx != NULL)
		return true;
	if (sha256_md == NULL)
		sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (sha256_md != NULL)
		sha256_ctx = EVP_MD_CTX_new();
	return sha256_ctx != NULL;
}

bool
token_sha256(const void *data, size_t len, unsigned char out[TOKEN_HASH_LENGTH])
{
	unsigned int outlen = 0;

	if (sha256_ready())
		return EVP_DigestInit_ex(sha256_ctx, sha256_md, NULL) == 1 &&
			EVP_DigestUpdate(sha256_ctx, data, len) == 1 &&
			EVP_DigestFinal_ex(sha256_ctx, out, &outlen) == 1 &&
			outlen == TOKEN_HASH_LENGTH;
	return EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) == 1 &&
		outlen == TOKEN_HASH_LENGTH;
}

/*
 * A key's public name, for the "kid" header: it says which secret signed a
 * token (so that a secret can be rotated) and reveals 64 bits of a hash of
 * it, nothing usable.
 */
void
token_key_id(const unsigned char *key, size_t keylen, char out[TOKEN_KID_LENGTH + 1])
{
	static const char hex[] = "0123456789abcdef";
	static const char label[] = "extension_tokens kid:";
	unsigned char digest[TOKEN_HASH_LENGTH];
	unsigned int dlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	memset(digest, 0, sizeof(digest));
	if (ctx != NULL)
	{
		if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
			EVP_DigestUpdate(ctx, label, sizeof(label) - 1) != 1 ||
			EVP_DigestUpdate(ctx, key, keylen) != 1 ||
			EVP_DigestFinal_ex(ctx, digest, &dlen) != 1)
			memset(digest, 0, sizeof(digest));
		EVP_MD_CTX_free(ctx);
	}
	for (int i = 0; i < TOKEN_KID_LENGTH / 2; i++)
	{
		out[2 * i] = hex[digest[i] >> 4];
		out[2 * i + 1] = hex[digest[i] & 0x0f];
	}
	out[TOKEN_KID_LENGTH] = '\0';
}

/* ---------------------------------------------------------------------
 * base64url (RFC 4648 section 5), without padding, canonical only
 * ---------------------------------------------------------------------
 */

/* The value of each base64url character, -1 for every other byte. */
static const signed char b64url_values[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/*
 * Decodes `len` characters into `out` (room for len * 3 / 4 bytes).  Refuses
 * any character outside the alphabet, a length that no byte string encodes
 * to (len % 4 == 1), and non-zero trailing bits, so that each byte string
 * has exactly one accepted encoding.  Returns the decoded length, or
 * B64_BAD_CHARACTER when a character is outside the alphabet (whatever
 * else is wrong), else B64_NOT_CANONICAL for a length or trailing bits no
 * encoding has.
 */
#define B64_NOT_CANONICAL	(-1)
#define B64_BAD_CHARACTER	(-2)

static long
b64url_bad(const unsigned char *u, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (b64url_values[u[i]] < 0)
			return B64_BAD_CHARACTER;
	return B64_NOT_CANONICAL;
}

static long
b64url_decode(const char *in, size_t len, unsigned char *out)
{
	const unsigned char *u = (const unsigned char *) in;
	size_t		full = len / 4 * 4;
	size_t		o = 0;
	int			bad = 0;
	uint32_t	acc;

	if (len % 4 == 1)
		return b64url_bad(u, len);
	/* Four characters, three bytes at a time; a bad one shows as a sign bit. */
	for (size_t i = 0; i < full; i += 4)
	{
		int			a = b64url_values[u[i]],
					b = b64url_values[u[i + 1]],
					c = b64url_values[u[i + 2]],
					d = b64url_values[u[i + 3]];

		bad |= a | b | c | d;
		acc = ((uint32_t) a << 18) | ((uint32_t) b << 12) |
			((uint32_t) c << 6) | (uint32_t) d;
		out[o] = (unsigned char) (acc >> 16);
		out[o + 1] = (unsigned char) (acc >> 8);
		out[o + 2] = (unsigned char) acc;
		o += 3;
	}
	if (bad < 0)
		return B64_BAD_CHARACTER;
	/* Two or three characters left: one or two bytes, and zero spare bits. */
	if (len > full)
	{
		int			a = b64url_values[u[full]],
					b = b64url_values[u[full + 1]],
					c = len - full == 3 ? b64url_values[u[full + 2]] : 0;

		if ((a | b | c) < 0)
			return B64_BAD_CHARACTER;
		acc = ((uint32_t) a << 18) | ((uint32_t) b << 12) | ((uint32_t) c << 6);
		out[o++] = (unsigned char) (acc >> 16);
		if (len - full == 3)
		{
			if (acc & 0xff)		/* the last character's 2 spare bits */
				return B64_NOT_CANONICAL;
			out[o++] = (unsigned char) (acc >> 8);
		}
		else if (acc & 0xffff)	/* the second character's 4 spare bits */
			return B64_NOT_CANONICAL;
	}
	return (long) o;
}

/* ---------------------------------------------------------------------
 * libjwt
 *
 * The postgres executable exports a function named json_object (the SQL
 * function), and the dynamic linker resolves every library's calls by name
 * in the executable first.  libjwt calls jansson's json_object() to make
 * its claim sets, and inside a backend that call would land in PostgreSQL's
 * function and crash.  So libjwt is opened with RTLD_DEEPBIND, which makes
 * its own dependencies (jansson) win over the executable, and its entry
 * points are called through pointers.  Our own code never calls
 * json_object() for the same reason.
 * ---------------------------------------------------------------------
 */

#ifndef LIBJWT_SONAME
#define LIBJWT_SONAME "libjwt.so.0"
#endif

static struct
{
	bool		loaded;
	int			(*new) (jwt_t **jwt);
	void		(*free) (jwt_t *jwt);
	int			(*add_grants_json) (jwt_t *jwt, const char *json);
	int			(*add_grant) (jwt_t *jwt, const char *grant, const char *val);
	int			(*add_grant_int) (jwt_t *jwt, const char *grant, long val);
	int			(*del_grants) (jwt_t *jwt, const char *grant);
	int			(*set_alg) (jwt_t *jwt, jwt_alg_t alg, const unsigned char *key, int len);
	int			(*add_header) (jwt_t *jwt, const char *header, const char *val);
	char	   *(*encode_str) (jwt_t *jwt);
	char	   *(*get_grants_json) (jwt_t *jwt, const char *grant);
}			libjwt;

static bool
load_libjwt(void)
{
	void	   *h;

	if (libjwt.loaded)
		return true;
	h = dlopen(LIBJWT_SONAME, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
	if (h == NULL)
		return false;
	libjwt.new = (int (*) (jwt_t **)) dlsym(h, "jwt_new");
	libjwt.free = (void (*) (jwt_t *)) dlsym(h, "jwt_free");
	libjwt.add_grants_json = (int (*) (jwt_t *, const char *)) dlsym(h, "jwt_add_grants_json");
	libjwt.set_alg = (int (*) (jwt_t *, jwt_alg_t, const unsigned char *, int)) dlsym(h, "jwt_set_alg");
	libjwt.encode_str = (char *(*) (jwt_t *)) dlsym(h, "jwt_encode_str");
	libjwt.add_header = (int (*) (jwt_t *, const char *, const char *)) dlsym(h, "jwt_add_header");
	libjwt.add_grant = (int (*) (jwt_t *, const char *, const char *)) dlsym(h, "jwt_add_grant");
	libjwt.add_grant_int = (int (*) (jwt_t *, const char *, long)) dlsym(h, "jwt_add_grant_int");
	libjwt.del_grants = (int (*) (jwt_t *, const char *)) dlsym(h, "jwt_del_grants");
	libjwt.get_grants_json = (char *(*) (jwt_t *, const char *)) dlsym(h, "jwt_get_grants_json");
	if (!libjwt.get_grants_json || !libjwt.new || !libjwt.free || !libjwt.add_grants_json ||
		!libjwt.set_alg || !libjwt.encode_str || !libjwt.add_header ||
		!libjwt.add_grant || !libjwt.add_grant_int || !libjwt.del_grants)
		return false;
	libjwt.loaded = true;
	return true;
}

/* ---------------------------------------------------------------------
 * Access tokens: building
 * ---------------------------------------------------------------------
 */

/* libjwt takes integer claims as long: iat and exp need 64 bits. */
_Static_assert(sizeof(long) >= 8, "long must hold a 64-bit timestamp");

/* The claims every access token carries, which no extra claim may replace. */
static const char *const own_claims[] = {
	"iss", "aud", "sub", "session_id", "jti", "type", "iat", "exp", "role", "scope"
};

static const char *signing_key_id(const unsigned char *key, size_t keylen,
								  char buf[TOKEN_KID_LENGTH + 1]);
static TokenKeyPair *signing_keypair(TokenAlg alg, const unsigned char *key, size_t keylen);

/*
 * The compact JWS of the claims libjwt built in `jwt`, assembled here and
 * signed with OpenSSL: for HS256 one HMAC-SHA256 with the secret (rather than
 * jwt_encode_str(), which builds the header again with jansson, encodes with
 * libb64 and sets up an HMAC context of its own: a fifth of an issue's time),
 * for ES256 and EdDSA the key pair's signature (see token_keys.c for why).
 * The header is {"alg":...,"typ":"JWT"} with a "kid": the secret's key id
 * (HS256, when asked) or the RFC 7638 thumbprint of the public key.
 */
static char *
sign_compact(jwt_t *jwt, const TokenAccessSpec *spec, const unsigned char *key,
			 size_t keylen, const char **errmsg)
{
	TokenKeyPair *kp = NULL;
	char		kidbuf[TOKEN_KID_LENGTH + 1];
	const char *kid = NULL;
	char		header[128];
	char	   *payload;
	size_t		hlen,
				plen,
				siglen,
				total,
				o;
	char	   *out;
	unsigned char sig[EVP_MAX_MD_SIZE > TOKEN_ASYM_SIG_LENGTH ? EVP_MAX_MD_SIZE : TOKEN_ASYM_SIG_LENGTH];
	bool		signed_ok;

	if (spec->alg == TOKEN_ALG_HS256)
	{
		siglen = 32;
		if (spec->with_kid)
			kid = signing_key_id(key, keylen, kidbuf);
	}
	else
	{
		kp = signing_keypair(spec->alg, key, keylen);
		if (kp == NULL)
		{
			*errmsg = "the signing key is not usable for this algorithm";
			return NULL;
		}
		siglen = TOKEN_ASYM_SIG_LENGTH;
		kid = token_keypair_kid(kp);
	}
	if (kid)
		snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
				 token_alg_name(spec->alg), kid);
	else
		snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}",
				 token_alg_name(spec->alg));
	payload = libjwt.get_grants_json(jwt, NULL);
	if (payload == NULL)
	{
		*errmsg = "could not build the token's claims";
		return NULL;
	}
	hlen = strlen(header);
	plen = strlen(payload);
	total = (hlen + 2) / 3 * 4 + 1 + (plen + 2) / 3 * 4 + 1 + (siglen + 2) / 3 * 4 + 1;
	if (total > TOKEN_MAX_LENGTH + 16)
	{
		free(payload);
		*errmsg = token_too_long;
		return NULL;
	}
	out = malloc(total);
	if (out == NULL)
	{
		free(payload);
		*errmsg = "out of memory";
		return NULL;
	}
	o = token_b64url_encode((const unsigned char *) header, hlen, out);
	out[o++] = '.';
	o += token_b64url_encode((const unsigned char *) payload, plen, out + o);
	free(payload);
	if (kp == NULL)
	{
		unsigned int maclen = 0;

		signed_ok = HMAC(EVP_sha256(), key, (int) keylen, (const unsigned char *) out, o,
						 sig, &maclen) != NULL && maclen == siglen;
	}
	else
		signed_ok = token_keypair_sign(kp, (const unsigned char *) out, o, sig);
	if (!signed_ok)
	{
		free(out);
		*errmsg = "could not sign the token";
		return NULL;
	}
	out[o++] = '.';
	o += token_b64url_encode(sig, siglen, out + o);
	OPENSSL_cleanse(sig, sizeof(sig));
	if (o > TOKEN_MAX_LENGTH)
	{
		OPENSSL_cleanse(out, o);
		free(out);
		*errmsg = token_too_long;
		return NULL;
	}
	if (kid && spec->kid_out && strlen(kid) <= TOKEN_KID_MAX_LENGTH)
		memcpy(spec->kid_out, kid, strlen(kid) + 1);
	return out;
}

char *
token_sign_access(const TokenAccessSpec *spec, const unsigned char *key,
				  size_t keylen, const char **errmsg)
{
	json_t	   *claims = NULL;
	json_error_t jerr;
	char		session_text[37];
	char		jti_text[37];
	unsigned char jti[TOKEN_UUID_LENGTH];
	char	   *claims_text = NULL;
	jwt_t	   *jwt = NULL;
	char	   *result = NULL;

	*errmsg = NULL;
	if (key == NULL || keylen < TOKEN_SECRET_MIN_LENGTH)
	{
		*errmsg = "signing key too short";
		return NULL;
	}
	if (!token_random_uuid(jti))
	{
		*errmsg = "could not generate random bytes";
		return NULL;
	}
	token_uuid_format(jti, jti_text);
	token_uuid_format(spec->session_id, session_text);

	if (!load_libjwt())
	{
		*errmsg = "could not load libjwt (" LIBJWT_SONAME ")";
		goto done;
	}
	if (libjwt.new(&jwt) != 0)
	{
		*errmsg = "out of memory";
		goto done;
	}
	/* The extra claims first: checked to be one object, duplicates refused. */
	if (spec->extra_claims_json != NULL)
	{
		claims = json_loadb(spec->extra_claims_json, spec->extra_claims_len,
							JSON_REJECT_DUPLICATES, &jerr);
		if (claims == NULL || !json_is_object(claims))
		{
			*errmsg = token_bad_claims;
			goto done;
		}
		claims_text = json_dumps(claims, JSON_COMPACT);
		if (claims_text == NULL || libjwt.add_grants_json(jwt, claims_text) != 0)
		{
			*errmsg = "could not build the token's claims";
			goto done;
		}
		/* ours replace any extra of the same name: none can stand for them */
		for (size_t i = 0; i < sizeof(own_claims) / sizeof(own_claims[0]); i++)
			(void) libjwt.del_grants(jwt, own_claims[i]);
	}
	/* Then ours. */
	if (libjwt.add_grant(jwt, "iss", spec->issuer) != 0 ||
		libjwt.add_grant(jwt, "aud", spec->audience) != 0 ||
		libjwt.add_grant(jwt, "sub", spec->sub) != 0 ||
		libjwt.add_grant(jwt, "session_id", session_text) != 0 ||
		libjwt.add_grant(jwt, "jti", jti_text) != 0 ||
		libjwt.add_grant(jwt, "type", "access") != 0 ||
		libjwt.add_grant_int(jwt, "iat", (long) spec->iat) != 0 ||
		libjwt.add_grant_int(jwt, "exp", (long) spec->exp) != 0 ||
		(spec->role != NULL && libjwt.add_grant(jwt, "role", spec->role) != 0) ||
		(spec->scope != NULL && libjwt.add_grant(jwt, "scope", spec->scope) != 0))
	{
		*errmsg = "could not build the token's claims";
		goto done;
	}
	result = sign_compact(jwt, spec, key, keylen, errmsg);
	if (result != NULL && spec->jti_out)
		memcpy(spec->jti_out, jti, TOKEN_UUID_LENGTH);

done:
	if (jwt)
		libjwt.free(jwt);
	free(claims_text);
	json_decref(claims);
	OPENSSL_cleanse(jti, sizeof(jti));
	return result;
}

/* ---------------------------------------------------------------------
 * Access tokens: verifying
 * ---------------------------------------------------------------------
 */

/*
 * What verification keeps of each key (the current one and the one being
 * retired) between calls: its key id, and an HMAC context keyed once, which
 * each verification re-initializes from the key's precomputed state instead
 * of hashing the key again.  A copy of the key says whether the caller's key
 * is still the one cached; when it changes, the entry is rebuilt and the
 * header memo below is forgotten.
 */
/* Changes whenever a key, the issuer or the audience does (see below). */
static uint64_t verify_generation = 1;

typedef struct KeyCache
{
	unsigned char *key;			/* malloc'd copy, or NULL */
	size_t		keylen;
	TokenAlg	alg;			/* what the key is for */
	char		kid[TOKEN_KID_MAX_LENGTH + 1];
	EVP_MAC_CTX *mac;			/* HS256: keyed with key, or NULL */
	TokenKeyPair *kp;			/* ES256, EdDSA: the parsed key of that
								 * algorithm, or NULL (unusable) */
} KeyCache;

static KeyCache key_cache[2];	/* 0: current key, 1: previous key */

/*
 * Headers already judged: check_header() is a function of the header's bytes
 * and the two keys, so a header seen before with the same keys gets the same
 * answer.  Every token one key signs has the same header, so this spares
 * parsing it again.  Only accepted headers are kept.
 */
#define HEADER_MEMO_MAX 128
static struct
{
	size_t		len;			/* 0: empty slot */
	int			kid_state;
	unsigned char bytes[HEADER_MEMO_MAX];
}			header_memo[2];

static void
key_cache_reset(KeyCache *kc)
{
	if (kc->key != NULL)
	{
		OPENSSL_cleanse(kc->key, kc->keylen);
		free(kc->key);
	}
	EVP_MAC_CTX_free(kc->mac);
	token_keypair_free(kc->kp);
	memset(kc, 0, sizeof(*kc));
	memset(header_memo, 0, sizeof(header_memo));
	verify_generation++;
}

/*
 * The cache entry for `key` in `slot`, rebuilt if the key or the algorithm
 * changed.  For ES256 and EdDSA the key is PEM text, parsed once here; a key
 * that does not parse, or is of another algorithm, is kept as unusable (no
 * kid, no key pair), so that it matches nothing.
 */
static KeyCache *
key_cache_get(int slot, TokenAlg alg, const unsigned char *key, size_t keylen)
{
	KeyCache   *kc = &key_cache[slot];

	if (key == NULL)
	{
		if (kc->key != NULL)
			key_cache_reset(kc);
		return NULL;
	}
	if (kc->key != NULL && kc->alg == alg && kc->keylen == keylen &&
		CRYPTO_memcmp(kc->key, key, keylen) == 0)
		return kc;
	key_cache_reset(kc);
	kc->key = malloc(keylen > 0 ? keylen : 1);
	if (kc->key == NULL)
		return NULL;
	memcpy(kc->key, key, keylen);
	kc->keylen = keylen;
	kc->alg = alg;
	if (alg != TOKEN_ALG_HS256)
	{
		const char *why;

		kc->kp = token_keypair_load((const char *) key, keylen, &why);
		if (kc->kp != NULL && token_keypair_alg(kc->kp) != alg)
		{
			token_keypair_free(kc->kp);
			kc->kp = NULL;
		}
		if (kc->kp != NULL)
			memcpy(kc->kid, token_keypair_kid(kc->kp), TOKEN_THUMBPRINT_LENGTH + 1);
		return kc;
	}
	token_key_id(key, keylen, kc->kid);
	if (hmac_mac == NULL)
		hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (hmac_mac != NULL && keylen > 0 &&
		(kc->mac = EVP_MAC_CTX_new(hmac_mac)) != NULL)
	{
		OSSL_PARAM	params[2];

		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
													 (char *) "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		if (EVP_MAC_init(kc->mac, key, keylen, params) != 1)
		{
			EVP_MAC_CTX_free(kc->mac);
			kc->mac = NULL;
		}
	}
	return kc;
}

/* The key id of the current (slot 0) or previous (1) key, or NULL. */
static const char *
key_id_of(int slot, const TokenVerifyParams *params, char buf[TOKEN_KID_LENGTH + 1])
{
	const unsigned char *key = slot == 0 ? params->key : params->prev_key;
	size_t		keylen = slot == 0 ? params->keylen : params->prev_keylen;
	KeyCache   *kc;

	if (key == NULL)
		return NULL;
	kc = key_cache_get(slot, params->alg, key, keylen);
	if (kc != NULL)
		return kc->kid[0] ? kc->kid : NULL;
	if (params->alg != TOKEN_ALG_HS256)
		return NULL;
	token_key_id(key, keylen, buf);
	return buf;
}

/* The parsed key that signs under ES256 or EdDSA, kept in its cache entry. */
static TokenKeyPair *
signing_keypair(TokenAlg alg, const unsigned char *key, size_t keylen)
{
	KeyCache   *kc = key_cache_get(0, alg, key, keylen);

	return kc != NULL ? kc->kp : NULL;
}

/* The key id of the key that signs: the current key's, kept in its cache entry. */
static const char *
signing_key_id(const unsigned char *key, size_t keylen, char buf[TOKEN_KID_LENGTH + 1])
{
	KeyCache   *kc = key_cache_get(0, TOKEN_ALG_HS256, key, keylen);

	if (kc != NULL)
		return kc->kid;
	token_key_id(key, keylen, buf);
	return buf;
}

/*
 * Checks the header; on success says which key to verify with: *kid_state
 * is 0 without a "kid", 1 when it names the current key, 2 the previous one,
 * -1 when it names neither.
 */
static TokenStatus
parse_header(const unsigned char *json, size_t len,
			 const TokenVerifyParams *params, int *kid_state)
{
	json_error_t jerr;
	json_t	   *header = json_loadb((const char *) json, len,
									JSON_REJECT_DUPLICATES, &jerr);
	json_t	   *alg;
	json_t	   *typ;
	json_t	   *kid;
	TokenStatus status = TOKEN_OK;

	*kid_state = 0;
	if (header == NULL)
		return TOKEN_MALFORMED;
	if (!json_is_object(header))
	{
		status = TOKEN_MALFORMED;
		goto done;
	}
	alg = json_object_get(header, "alg");
	if (alg == NULL || !json_is_string(alg))
	{
		status = TOKEN_MALFORMED;
		goto done;
	}
	/* Exactly the configured algorithm ("HS256", "ES256" or "EdDSA"): case,
	 * "none" in any spelling and every other algorithm are refused, whatever
	 * the signature says. */
	if (json_string_length(alg) != strlen(token_alg_name(params->alg)) ||
		memcmp(json_string_value(alg), token_alg_name(params->alg),
			   json_string_length(alg)) != 0)
	{
		status = TOKEN_UNSUPPORTED_ALGORITHM;
		goto done;
	}
	typ = json_object_get(header, "typ");
	if (typ != NULL &&
		(!json_is_string(typ) || json_string_length(typ) != 3 ||
		 strncasecmp(json_string_value(typ), "JWT", 3) != 0))
	{
		status = TOKEN_MALFORMED;
		goto done;
	}
	/* We understand no critical extension (RFC 7515 4.1.11). */
	if (json_object_get(header, "crit") != NULL)
	{
		status = TOKEN_MALFORMED;
		goto done;
	}
	kid = json_object_get(header, "kid");
	if (kid != NULL)
	{
		char		mine[TOKEN_KID_LENGTH + 1];

		if (!json_is_string(kid))
		{
			status = TOKEN_MALFORMED;
			goto done;
		}
		*kid_state = -1;
		for (int slot = 0; slot < 2 && *kid_state < 0; slot++)
		{
			const char *id = key_id_of(slot, params, mine);

			if (id != NULL && json_string_length(kid) == strlen(id) &&
				memcmp(id, json_string_value(kid), strlen(id)) == 0)
				*kid_state = slot + 1;
		}
	}

done:
	json_decref(header);
	return status;
}

/* parse_header(), remembering the headers it accepted (see header_memo). */
static TokenStatus
check_header(const unsigned char *json, size_t len,
			 const TokenVerifyParams *params, int *kid_state)
{
	TokenStatus status;
	static int	next_slot;

	/* The keys first: a change of key (or algorithm) forgets the memo. */
	(void) key_cache_get(0, params->alg, params->key, params->keylen);
	(void) key_cache_get(1, params->alg, params->prev_key, params->prev_keylen);
	for (int i = 0; i < 2; i++)
		if (header_memo[i].len == len && memcmp(header_memo[i].bytes, json, len) == 0)
		{
			*kid_state = header_memo[i].kid_state;
			return TOKEN_OK;
		}
	status = parse_header(json, len, params, kid_state);
	if (status == TOKEN_OK && len > 0 && len <= HEADER_MEMO_MAX)
	{
		header_memo[next_slot].len = len;
		header_memo[next_slot].kid_state = *kid_state;
		memcpy(header_memo[next_slot].bytes, json, len);
		next_slot = (next_slot + 1) % 2;
	}
	return status;
}

typedef struct TokenTimes
{
	int64_t		exp;
	int64_t		nbf;
	int64_t		iat;
	bool		has_nbf;
} TokenTimes;

/*
 * Every claim but the times (see check_times), from the parse of the
 * payload: their presence and types, issuer, audience and token type.
 * Fills *claims and *times.
 */
static TokenStatus
check_claims(const TokenPayload *p, const TokenVerifyParams *params,
			 TokenAccessClaims *claims, TokenTimes *times)
{
	size_t		sub_len;

	/* Shape first: every claim we rely on present and of the right type. */
	if (!p->has_exp || !p->exp_ok || !p->has_iat || !p->iat_ok ||
		(p->has_nbf && !p->nbf_ok))
		return TOKEN_MALFORMED;
	if (p->sub == NULL || p->session_id == NULL || p->jti == NULL)
		return TOKEN_MALFORMED;
	sub_len = strlen(p->sub);
	if (sub_len == 0 || sub_len > TOKEN_SUB_MAX_LENGTH)
		return TOKEN_MALFORMED;
	if (!token_uuid_parse(p->session_id, strlen(p->session_id), claims->session_id))
		return TOKEN_MALFORMED;

	/* NULL issuer or audience: any (revocation by token, see token.h) */
	if (p->iss == NULL ||
		(params->issuer != NULL && strcmp(p->iss, params->issuer) != 0))
		return TOKEN_WRONG_ISSUER;

	if (!p->has_aud || (params->audience != NULL && !p->aud_matches))
		return TOKEN_WRONG_AUDIENCE;

	if (p->type == NULL || strcmp(p->type, "access") != 0)
		return TOKEN_WRONG_TOKEN_TYPE;

	memcpy(claims->sub, p->sub, sub_len + 1);
	claims->exp = p->exp;
	times->exp = p->exp;
	times->nbf = p->nbf;
	times->iat = p->iat;
	times->has_nbf = p->has_nbf;
	return TOKEN_OK;
}

/* The time claims, last: they are all that can change for a given token. */
static TokenStatus
check_times(const TokenTimes *times, const TokenVerifyParams *params)
{
	if (!params->check_times)
		return TOKEN_OK;
	/* exp is exclusive: a token is dead at its exp second (RFC 7519). */
	if (times->exp <= params->now - params->leeway)
		return TOKEN_EXPIRED;
	if (times->has_nbf && times->nbf > params->now + params->leeway)
		return TOKEN_NOT_YET_VALID;
	if (times->iat > params->now + params->leeway)
		return TOKEN_NOT_YET_VALID;
	return TOKEN_OK;
}

/*
 * HMAC-SHA256 of data under the key in `slot` (0 current, 1 previous)
 * equals sig (32 bytes), in constant time; under ES256 and EdDSA, sig (64
 * bytes) is a valid signature of data by that key's public key.
 */
static bool
signature_matches(int slot, const TokenVerifyParams *params, const char *data,
				  size_t datalen, const unsigned char *sig)
{
	const unsigned char *key = slot == 0 ? params->key : params->prev_key;
	size_t		keylen = slot == 0 ? params->keylen : params->prev_keylen;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	size_t		outlen = 0;
	KeyCache   *kc;

	if (key == NULL || keylen < TOKEN_SECRET_MIN_LENGTH)
		return false;
	kc = key_cache_get(slot, params->alg, key, keylen);
	if (params->alg != TOKEN_ALG_HS256)
		return kc != NULL && kc->kp != NULL &&
			token_keypair_verify(kc->kp, (const unsigned char *) data, datalen,
								 sig, TOKEN_ASYM_SIG_LENGTH);
	if (kc != NULL && kc->mac != NULL &&
		EVP_MAC_init(kc->mac, NULL, 0, NULL) == 1 &&
		EVP_MAC_update(kc->mac, (const unsigned char *) data, datalen) == 1 &&
		EVP_MAC_final(kc->mac, mac, &outlen, sizeof(mac)) == 1)
		maclen = (unsigned int) outlen;
	else if (HMAC(EVP_sha256(), key, (int) keylen, (const unsigned char *) data,
				  datalen, mac, &maclen) == NULL)
		return false;
	if (maclen != 32)
		return false;
	return CRYPTO_memcmp(mac, sig, 32) == 0;
}

/*
 * The verified-token cache.  A client sends the same access token with every
 * request, and everything verification decides about a token but its times
 * is a function of the token's bytes, the keys, the issuer and the
 * audience.  So a token that passed once, identified by the SHA-256 of all
 * its bytes (which validation computes anyway, as the table's key), is not
 * parsed and HMAC'ed again while those settings stay the same: a hit costs
 * the hash, a re-decode of the payload and the time checks, which are
 * always made afresh, as are the database's.  Only tokens that passed are
 * kept, with payloads up to VERIFIED_MAX_PAYLOAD bytes.  The caller may
 * attach its own rendering of the claims (the backend: their jsonb) to an
 * entry, which a hit hands back instead of a parse of the payload (the
 * backend attaches it at the first hit, so that a token seen once does not
 * pay for a copy it never uses).
 *
 * Sized for a pool: a backend of PostgREST's pool sees the tokens of every
 * user in turn, so the cache holds token_cache_entries tokens (the setting
 * extension_tokens.token_cache_size, TOKEN_CACHE_DEFAULT_ENTRIES unless
 * told), in sets of VERIFIED_WAYS; a token may be kept in either of two
 * sets, and the least recently used of their ways gives way to it; bench/
 * measures the hit rate with many users over a pool.
 * A lookup reads the ways, kept apart from the entries (VerifiedWay), so
 * that a miss, which every first sight of a token is, costs two cache lines
 * of memory rather than eight entries.
 * The table is allocated at its first use and freed when the size changes.
 * Memory per process: 160 bytes an entry (its way included), plus the sub,
 * the attached claims and the note of each token cached (malloc'ed: a few
 * hundred bytes), about 0.5 kB per token cached in all.
 */
#define VERIFIED_WAYS 4
#define VERIFIED_MAX_PAYLOAD 1024

/*
 * What a lookup reads of each way, apart from the entries: a set's four
 * ways in one cache line.  A miss, which every first sight of a token is,
 * reads that line for each of its two sets and no entry; an entry is read
 * only when its tag (bytes 8 to 11 of the hash, 0 meaning empty) matches,
 * and matches only if its whole hash does.
 */
typedef struct VerifiedWay
{
	uint32_t	tag;			/* 0: empty */
	uint32_t	last_used;		/* verified_clock then, for the LRU choice */
	uint64_t	generation;		/* verify_generation when stored: all of it,
								 * so that no count of changes brings an
								 * outdated entry back */
} VerifiedWay;

typedef struct VerifiedToken
{
	unsigned char hash[TOKEN_HASH_LENGTH];
	TokenTimes	times;
	unsigned char session_id[TOKEN_UUID_LENGTH];
	char	   *sub;			/* malloc'ed, sub_room bytes */
	unsigned char *blob;		/* the caller's rendering of the claims */
	size_t		blob_len;		/* 0: none yet */
	unsigned char *note;		/* the caller's note of it (token_cache_note) */
	size_t		note_len;		/* 0: none */
	size_t		sub_room;		/* what the allocations hold: an evicted */
	size_t		blob_room;		/* entry's are reused, not freed */
	size_t		note_room;
} VerifiedToken;

static VerifiedWay *verified_ways;	/* verified_sets x VERIFIED_WAYS, or NULL */
static VerifiedToken *verified;	/* the entries, way for way */
static size_t verified_sets;	/* of the table allocated */
static size_t token_cache_entries = TOKEN_CACHE_DEFAULT_ENTRIES;
static uint32_t verified_clock;	/* wraps: ages are differences */
static char *verified_issuer;	/* malloc'd copies of the settings cached under */
static char *verified_audience;

static bool
same_setting(char **copy, const char *value)
{
	if (*copy == NULL ? value == NULL : value != NULL && strcmp(*copy, value) == 0)
		return true;
	free(*copy);
	*copy = value ? strdup(value) : NULL;
	return false;
}

/* Brings verify_generation up to date with the caller's settings. */
static void
verified_sync(const TokenVerifyParams *params)
{
	bool		same_issuer,
				same_audience;

	(void) key_cache_get(0, params->alg, params->key, params->keylen);
	(void) key_cache_get(1, params->alg, params->prev_key, params->prev_keylen);
	/* both calls, so that both copies are brought up to date */
	same_issuer = same_setting(&verified_issuer, params->issuer);
	same_audience = same_setting(&verified_audience, params->audience);
	if (!same_issuer || !same_audience)
		verify_generation++;
}

/* Frees the table and everything its entries hold. */
static void
verified_free(void)
{
	if (verified == NULL)
		return;
	for (size_t i = 0; i < verified_sets * VERIFIED_WAYS; i++)
	{
		free(verified[i].sub);
		free(verified[i].blob);
		free(verified[i].note);
	}
	free(verified);
	free(verified_ways);
	verified = NULL;
	verified_ways = NULL;
	verified_sets = 0;
}

void
token_cache_resize(size_t entries)
{
	if (entries == token_cache_entries)
		return;
	verified_free();
	token_cache_entries = entries;
}

/*
 * The first ways of the two sets the token whose SHA-256 this is may be kept
 * in (from two independent parts of the hash: with two choices, a set
 * overflows far less often than with one) and its tag, or false: no cache
 * (size 0, or no memory).  The table is allocated at its first use.
 */
static bool
verified_sets_of(const unsigned char *hash, size_t *a, size_t *b, uint32_t *tag)
{
	uint32_t	h1,
				h2;

	if (verified == NULL)
	{
		size_t		sets = (token_cache_entries + VERIFIED_WAYS - 1) / VERIFIED_WAYS;
		size_t		bytes = sets * VERIFIED_WAYS * sizeof(VerifiedWay);
		void	   *ways = NULL;

		if (sets == 0 || posix_memalign(&ways, 64, bytes) != 0)
			return false;
		if ((verified = calloc(sets * VERIFIED_WAYS, sizeof(VerifiedToken))) == NULL)
		{
			free(ways);
			return false;
		}
		memset(ways, 0, bytes);
		verified_ways = ways;
		verified_sets = sets;
	}
	h1 = ((uint32_t) hash[0] << 24) | ((uint32_t) hash[1] << 16) |
		((uint32_t) hash[2] << 8) | hash[3];
	h2 = ((uint32_t) hash[4] << 24) | ((uint32_t) hash[5] << 16) |
		((uint32_t) hash[6] << 8) | hash[7];
	*a = (h1 % verified_sets) * VERIFIED_WAYS;
	*b = (h2 % verified_sets) * VERIFIED_WAYS;
	memcpy(tag, hash + 8, sizeof(*tag));
	if (*tag == 0)
		*tag = 1;
	return true;
}

/*
 * The way a token of the sets from `a` and `b` would be stored in: an empty
 * or outdated way of either set, else the least recently used.  Reads only
 * the ways.
 */
static size_t
verified_victim(size_t a, size_t b)
{
	size_t		sets[2] = {a, b};
	size_t		best = a;
	uint32_t	best_age = 0;

	for (int i = 0; i < 2; i++)
		for (size_t w = sets[i]; w < sets[i] + VERIFIED_WAYS; w++)
		{
			uint32_t	age = verified_clock - verified_ways[w].last_used;

			if (verified_ways[w].tag == 0 ||
				verified_ways[w].generation != verify_generation)
				return w;
			if (age > best_age)
			{
				best = w;
				best_age = age;
			}
		}
	return best;
}

/* The way of the live entry of the token whose SHA-256 this is, or -1. */
static ssize_t
verified_find(const unsigned char *hash)
{
	size_t		sets[2];
	uint32_t	tag;

	if (!verified_sets_of(hash, &sets[0], &sets[1], &tag))
		return -1;
	for (int i = 0; i < 2; i++)
		for (size_t w = sets[i]; w < sets[i] + VERIFIED_WAYS; w++)
			if (verified_ways[w].tag == tag &&
				verified_ways[w].generation == verify_generation &&
				memcmp(verified[w].hash, hash, TOKEN_HASH_LENGTH) == 0)
				return (ssize_t) w;
	return -1;
}

/* Makes *p hold at least `len` bytes (keeping an allocation that does). */
static bool
room_for(void **p, size_t *room, size_t len)
{
	void	   *more;
	size_t		want = len < 64 ? 64 : len;

	if (*p != NULL && *room >= len)
		return true;
	more = malloc(want);
	if (more == NULL)
		return false;
	free(*p);
	*p = more;
	*room = want;
	return true;
}

static void
verified_store(const unsigned char *hash, const TokenTimes *times,
			   const TokenAccessClaims *claims)
{
	size_t		sets[2];
	uint32_t	tag;
	size_t		best;
	VerifiedToken *e;
	size_t		sub_len = strlen(claims->sub) + 1;

	if (!verified_sets_of(hash, &sets[0], &sets[1], &tag))
		return;
	best = verified_victim(sets[0], sets[1]);
	e = &verified[best];
	verified_ways[best].tag = 0;	/* empty until it is whole */
	e->blob_len = 0;
	e->note_len = 0;
	if (!room_for((void **) &e->sub, &e->sub_room, sub_len))
		return;
	memcpy(e->sub, claims->sub, sub_len);
	memcpy(e->hash, hash, TOKEN_HASH_LENGTH);
	e->times = *times;
	memcpy(e->session_id, claims->session_id, TOKEN_UUID_LENGTH);
	verified_ways[best].generation = verify_generation;
	verified_ways[best].last_used = ++verified_clock;
	verified_ways[best].tag = tag;
}

void
token_cache_attach(const unsigned char *hash, const void *blob, size_t len)
{
	ssize_t		w = verified_find(hash);
	VerifiedToken *e;

	if (w < 0)
		return;
	e = &verified[w];
	if (e->blob_len != 0 || len == 0 ||
		!room_for((void **) &e->blob, &e->blob_room, len))
		return;
	memcpy(e->blob, blob, len);
	e->blob_len = len;
}

void
token_cache_note(const unsigned char *hash, const void *note, size_t len)
{
	ssize_t		w = verified_find(hash);
	VerifiedToken *e;

	if (w < 0)
		return;
	e = &verified[w];
	e->note_len = 0;
	if (len == 0 || !room_for((void **) &e->note, &e->note_room, len))
		return;
	memcpy(e->note, note, len);
	e->note_len = len;
}

TokenStatus
token_verify_access(const char *token, size_t len,
					const TokenVerifyParams *params, TokenAccessClaims *claims)
{
	const char *dot1 = NULL;
	const char *dot2 = NULL;
	size_t		hlen,
				plen,
				slen;
	unsigned char buf[TOKEN_MAX_LENGTH];
	unsigned char sig[TOKEN_MAX_LENGTH];
	long		n,
				hn,
				sn,
				pn;
	int			kid_state;
	TokenStatus status;
	TokenTimes	times;

	memset(&claims->parsed, 0, sizeof(claims->parsed));
	claims->cached_blob = NULL;
	claims->cached_blob_len = 0;
	claims->cached_note = NULL;
	claims->cached_note_len = 0;
	claims->has_hash = false;
	claims->cache_hit = false;
	if (token == NULL || len == 0)
		return TOKEN_MISSING;
	if (len > TOKEN_MAX_LENGTH)
		return TOKEN_MALFORMED;
	if (token_looks_like_refresh(token, len))
		return TOKEN_WRONG_TOKEN_TYPE;

	/* 0. A token verified before, under the same settings: see above. */
	if (params->use_cache && token_sha256(token, len, claims->hash))
	{
		ssize_t		w;

		claims->has_hash = true;
		verified_sync(params);
		w = verified_find(claims->hash);
		if (w >= 0)
		{
			VerifiedToken *e = &verified[w];

			verified_ways[w].last_used = ++verified_clock;
			claims->cache_hit = true;
			if (e->note_len != 0)
			{
				claims->cached_note = e->note;
				claims->cached_note_len = e->note_len;
			}
			/* the payload's text, unless the cached jsonb is all that is asked */
			claims->payload_len = 0;
			if (params->visitor == NULL || e->blob_len == 0)
			{
				dot1 = memchr(token, '.', len);
				dot2 = memchr(dot1 + 1, '.', len - (size_t) (dot1 + 1 - token));
				n = b64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1),
								  (unsigned char *) claims->payload);
				claims->payload_len = (size_t) n;
			}
			memcpy(claims->session_id, e->session_id, TOKEN_UUID_LENGTH);
			strcpy(claims->sub, e->sub);	/* stored from a claims->sub */
			claims->exp = e->times.exp;
			status = check_times(&e->times, params);
			if (status == TOKEN_OK && params->visitor != NULL)
			{
				if (e->blob_len != 0)
				{
					claims->cached_blob = e->blob;
					claims->cached_blob_len = e->blob_len;
				}
				else if (!token_payload_parse(claims->payload, claims->payload_len,
											  params->audience,
											  params->visitor->visit,
											  params->visitor->arg,
											  &claims->parsed))
				{
					/* parsed before, so this cannot happen: refuse */
					token_payload_release(&claims->parsed);
					return TOKEN_MALFORMED;
				}
			}
			return status;
		}
	}

	/*
	 * 1. Syntax: exactly two dots, every other byte base64url.  The three
	 * parts are decoded here at once (a third dot, like any byte outside the
	 * alphabet, fails its part's decode); what else a decode refuses is
	 * reported at its step below, as before.  Nothing decoded is believed
	 * before the signature is checked.
	 */
	dot1 = memchr(token, '.', len);
	if (dot1 == NULL)
		return TOKEN_MALFORMED;
	dot2 = memchr(dot1 + 1, '.', len - (size_t) (dot1 + 1 - token));
	if (dot2 == NULL)
		return TOKEN_MALFORMED;
	hlen = (size_t) (dot1 - token);
	plen = (size_t) (dot2 - dot1 - 1);
	slen = len - (size_t) (dot2 - token) - 1;
	hn = b64url_decode(token, hlen, buf);
	sn = b64url_decode(dot2 + 1, slen, sig);
	pn = b64url_decode(dot1 + 1, plen, (unsigned char *) claims->payload);
	if (hn == B64_BAD_CHARACTER || sn == B64_BAD_CHARACTER || pn == B64_BAD_CHARACTER)
		return TOKEN_MALFORMED;
	/*
	 * An empty signature is let through to the header check, so that the
	 * classic unsigned token ({"alg":"none"}, "h.p.") is reported as the
	 * algorithm it uses; under HS256 it then fails as a signature.
	 */
	if (hlen == 0 || plen == 0)
		return TOKEN_MALFORMED;

	/* 2. Header. */
	if (hn <= 0)
		return TOKEN_MALFORMED;
	status = check_header(buf, (size_t) hn, params, &kid_state);
	if (status != TOKEN_OK)
		return status;

	/*
	 * 3. Signature, before anything in the payload is believed: with the key
	 * the "kid" names, or, without one (tokens signed before key ids), with
	 * the current key and then the previous one.  An unknown kid matches no
	 * key.
	 */
	if (sn < 0)
		return TOKEN_MALFORMED;
	if (sn != (params->alg == TOKEN_ALG_HS256 ? 32 : TOKEN_ASYM_SIG_LENGTH) ||
		kid_state < 0)
		return TOKEN_INVALID_SIGNATURE;
	if (!((kid_state != 2 &&
		   signature_matches(0, params, token, hlen + 1 + plen, sig)) ||
		  (kid_state != 1 &&
		   signature_matches(1, params, token, hlen + 1 + plen, sig))))
		return TOKEN_INVALID_SIGNATURE;

	/* 4. Claims. */
	if (pn <= 0)
		return TOKEN_MALFORMED;
	claims->payload_len = (size_t) pn;
	if (!token_payload_parse(claims->payload, claims->payload_len, params->audience,
							 params->visitor ? params->visitor->visit : NULL,
							 params->visitor ? params->visitor->arg : NULL,
							 &claims->parsed))
		status = TOKEN_MALFORMED;
	else
		status = check_claims(&claims->parsed, params, claims, &times);
	if (status == TOKEN_OK && claims->has_hash &&
		claims->payload_len <= VERIFIED_MAX_PAYLOAD)
		verified_store(claims->hash, &times, claims);
	if (status == TOKEN_OK)
		status = check_times(&times, params);
	if (status != TOKEN_OK || params->visitor == NULL)
		token_payload_release(&claims->parsed);
	return status;
}

/* ---------------------------------------------------------------------
 * Refresh tokens
 * ---------------------------------------------------------------------
 */

/* The checksum of the `len` characters before it. */
static void
refresh_checksum(const char *token, size_t len, char out[REFRESH_TOKEN_CHECKSUM_LENGTH])
{
	unsigned char digest[TOKEN_HASH_LENGTH];
	uint32_t	v;

	token_sha256(token, len, digest);
	v = ((uint32_t) digest[0] << 24) | ((uint32_t) digest[1] << 16) |
		((uint32_t) digest[2] << 8) | (uint32_t) digest[3];
	for (int i = REFRESH_TOKEN_CHECKSUM_LENGTH - 1; i >= 0; i--)
	{
		out[i] = base62_alphabet[v % 62];
		v /= 62;
	}
}

/* The value of a base62 digit, or -1. */
static int
base62_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 36;
	return -1;
}

/*
 * An opaque token of session `session_id`: `prefix`, the session id in 22
 * base62 digits (the 128-bit big-endian number, most significant digit
 * first), 43 random base62 characters, the checksum; NUL-terminated.
 */
static bool
make_opaque(const char *prefix, size_t prefix_len,
			const unsigned char session_id[TOKEN_UUID_LENGTH], char *out)
{
	unsigned char rnd[64];
	unsigned char n[TOKEN_UUID_LENGTH];
	char	   *sid = out + prefix_len;
	char	   *body = sid + REFRESH_TOKEN_SID_LENGTH;
	size_t		total = prefix_len + REFRESH_TOKEN_SID_LENGTH + REFRESH_TOKEN_RANDOM_LENGTH +
		REFRESH_TOKEN_CHECKSUM_LENGTH;
	int			filled = 0;

	memcpy(out, prefix, prefix_len);
	/* repeated division of the number by 62 */
	memcpy(n, session_id, TOKEN_UUID_LENGTH);
	for (int d = REFRESH_TOKEN_SID_LENGTH - 1; d >= 0; d--)
	{
		unsigned int rem = 0;

		for (int i = 0; i < TOKEN_UUID_LENGTH; i++)
		{
			unsigned int cur = (rem << 8) | n[i];

			n[i] = (unsigned char) (cur / 62);
			rem = cur % 62;
		}
		sid[d] = base62_alphabet[rem];
	}

	/*
	 * Rejection sampling keeps every character uniform over base62: 43
	 * characters of log2(62) bits each carry 256 bits.
	 */
	while (filled < REFRESH_TOKEN_RANDOM_LENGTH)
	{
		if (!token_random_bytes(rnd, sizeof(rnd)))
			return false;
		for (size_t i = 0; i < sizeof(rnd) && filled < REFRESH_TOKEN_RANDOM_LENGTH; i++)
			if (rnd[i] < 248)
				body[filled++] = base62_alphabet[rnd[i] % 62];
	}
	OPENSSL_cleanse(rnd, sizeof(rnd));
	refresh_checksum(out, total - REFRESH_TOKEN_CHECKSUM_LENGTH,
					 out + total - REFRESH_TOKEN_CHECKSUM_LENGTH);
	out[total] = '\0';
	return true;
}

/* Prefix, length, alphabet and checksum of an opaque token. */
static bool
opaque_well_formed(const char *prefix, size_t prefix_len, const char *token, size_t len)
{
	char		sum[REFRESH_TOKEN_CHECKSUM_LENGTH];

	if (len <= prefix_len + REFRESH_TOKEN_CHECKSUM_LENGTH ||
		memcmp(token, prefix, prefix_len) != 0)
		return false;
	for (size_t i = prefix_len; i < len; i++)
		if (base62_value(token[i]) < 0)
			return false;
	refresh_checksum(token, len - REFRESH_TOKEN_CHECKSUM_LENGTH, sum);
	return memcmp(sum, token + len - REFRESH_TOKEN_CHECKSUM_LENGTH,
				  REFRESH_TOKEN_CHECKSUM_LENGTH) == 0;
}

/* The session id after `prefix_len` characters; false beyond 128 bits. */
static bool
opaque_session(const char *token, size_t prefix_len, unsigned char session_id[TOKEN_UUID_LENGTH])
{
	unsigned char n[TOKEN_UUID_LENGTH] = {0};

	/* n = n * 62 + digit, refusing a carry out of the 128 bits */
	for (int d = 0; d < REFRESH_TOKEN_SID_LENGTH; d++)
	{
		unsigned int carry = (unsigned int) base62_value(token[prefix_len + d]);

		for (int i = TOKEN_UUID_LENGTH - 1; i >= 0; i--)
		{
			unsigned int cur = (unsigned int) n[i] * 62 + carry;

			n[i] = (unsigned char) (cur & 0xff);
			carry = cur >> 8;
		}
		if (carry != 0)
			return false;
	}
	memcpy(session_id, n, TOKEN_UUID_LENGTH);
	return true;
}

bool
token_make_refresh(const unsigned char session_id[TOKEN_UUID_LENGTH],
				   char out[REFRESH_TOKEN_LENGTH + 1])
{
	return make_opaque(REFRESH_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX_LENGTH, session_id, out);
}

bool
token_refresh_session(const char *token, size_t len,
					  unsigned char session_id[TOKEN_UUID_LENGTH])
{
	return len == REFRESH_TOKEN_LENGTH && token_refresh_well_formed(token, len) &&
		opaque_session(token, REFRESH_TOKEN_PREFIX_LENGTH, session_id);
}

bool
token_make_api_key(const unsigned char session_id[TOKEN_UUID_LENGTH],
				   char out[API_KEY_LENGTH + 1])
{
	return make_opaque(API_KEY_PREFIX, API_KEY_PREFIX_LENGTH, session_id, out);
}

bool
token_looks_like_api_key(const char *token, size_t len)
{
	return len >= API_KEY_PREFIX_LENGTH &&
		memcmp(token, API_KEY_PREFIX, API_KEY_PREFIX_LENGTH) == 0;
}

bool
token_api_key_session(const char *token, size_t len,
					  unsigned char session_id[TOKEN_UUID_LENGTH])
{
	return len == API_KEY_LENGTH &&
		opaque_well_formed(API_KEY_PREFIX, API_KEY_PREFIX_LENGTH, token, len) &&
		opaque_session(token, API_KEY_PREFIX_LENGTH, session_id);
}

/* ---------------------------------------------------------------------
 * Device authorization codes
 * ---------------------------------------------------------------------
 */

/* RFC 8628 6.1: no vowels (no words), no look-alikes. */
static const char user_code_alphabet[] = "BCDFGHJKLMNPQRSTVWXZ";

/* `n` characters uniform over `alphabet` (rejection sampling). */
static bool
random_chars(char *out, size_t n, const char *alphabet, unsigned int size)
{
	unsigned char rnd[64];
	size_t		filled = 0;
	unsigned int limit = 256 - 256 % size;

	while (filled < n)
	{
		if (!token_random_bytes(rnd, sizeof(rnd)))
			return false;
		for (size_t i = 0; i < sizeof(rnd) && filled < n; i++)
			if (rnd[i] < limit)
				out[filled++] = alphabet[rnd[i] % size];
	}
	OPENSSL_cleanse(rnd, sizeof(rnd));
	return true;
}

bool
token_make_device_code(char out[DEVICE_CODE_LENGTH + 1])
{
	memcpy(out, DEVICE_CODE_PREFIX, 7);
	if (!random_chars(out + 7, DEVICE_CODE_LENGTH - 7, base62_alphabet, 62))
		return false;
	out[DEVICE_CODE_LENGTH] = '\0';
	return true;
}

bool
token_make_user_code(char out[USER_CODE_LETTERS + 2])
{
	char		letters[USER_CODE_LETTERS];

	if (!random_chars(letters, USER_CODE_LETTERS, user_code_alphabet,
					  sizeof(user_code_alphabet) - 1))
		return false;
	memcpy(out, letters, 4);
	out[4] = '-';
	memcpy(out + 5, letters + 4, 4);
	out[USER_CODE_LETTERS + 1] = '\0';
	return true;
}

bool
token_normalize_user_code(const char *in, size_t len, char out[USER_CODE_LETTERS + 1])
{
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = in[i];

		if (c == ' ' || c == '-' || c == '\t')
			continue;
		if (c >= 'a' && c <= 'z')
			c = (char) (c - 'a' + 'A');
		if (n == USER_CODE_LETTERS || strchr(user_code_alphabet, c) == NULL || c == '\0')
			return false;
		out[n++] = c;
	}
	out[n] = '\0';
	return n == USER_CODE_LETTERS;
}

/* The prefix alone: enough to tell a refresh token from a JWT. */
bool
token_looks_like_refresh(const char *token, size_t len)
{
	return len >= REFRESH_TOKEN_PREFIX_LENGTH &&
		memcmp(token, REFRESH_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX_LENGTH) == 0;
}

/* Prefix, length, alphabet and checksum: the offline check. */
bool
token_refresh_well_formed(const char *token, size_t len)
{
	return (len == REFRESH_TOKEN_LENGTH || len == REFRESH_TOKEN_LEGACY_LENGTH) &&
		opaque_well_formed(REFRESH_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX_LENGTH, token, len);
}

/* ---------------------------------------------------------------------
 * request.jwt.claims
 * ---------------------------------------------------------------------
 */

/* A JSON string member that is a uuid, into `out`. */
static bool
json_uuid_member(json_t *obj, const char *key, unsigned char out[TOKEN_UUID_LENGTH])
{
	json_t	   *v = json_object_get(obj, key);

	return json_is_string(v) &&
		token_uuid_parse(json_string_value(v), json_string_length(v), out);
}

/* Whether a space-separated scope string names `scope` (RFC 9068). */
static bool
scope_names(json_t *v, const char *scope)
{
	const char *s;
	size_t		len,
				n = strlen(scope);

	if (!json_is_string(v))
		return false;
	s = json_string_value(v);
	len = json_string_length(v);
	for (size_t i = 0; i < len;)
	{
		size_t		j = i;

		while (j < len && s[j] != ' ')
			j++;
		if (j - i == n && memcmp(s + i, scope, n) == 0)
			return true;
		i = j + 1;
	}
	return false;
}

TokenClaimsKind
token_request_claims(const char *text, size_t len, TokenRequestClaims *out)
{
	json_error_t jerr;
	json_t	   *claims;
	json_t	   *type,
			   *sub,
			   *exp,
			   *iat;
	TokenClaimsKind kind = TOKEN_CLAIMS_UNREADABLE;

	memset(out, 0, sizeof(*out));
	/* PostgREST's text: other issuers' claims may hold any string */
	claims = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (claims == NULL)
		return TOKEN_CLAIMS_UNREADABLE;
	if (!json_is_object(claims))
		goto done;
	type = json_object_get(claims, "type");
	out->api_key = json_is_string(type) && json_string_length(type) == 7 &&
		strcmp(json_string_value(type), "api_key") == 0;
	if (!((json_is_string(type) && strcmp(json_string_value(type), "access") == 0 &&
		   json_string_length(type) == 6) || out->api_key) ||
		json_object_get(claims, "session_id") == NULL)
	{
		kind = TOKEN_CLAIMS_FOREIGN;
		goto done;
	}
	/* Ours: everything ours always carry, or we cannot tell. */
	sub = json_object_get(claims, "sub");
	exp = json_object_get(claims, "exp");
	iat = json_object_get(claims, "iat");
	if (!json_uuid_member(claims, "session_id", out->session_id) ||
		!json_is_string(sub) || json_string_length(sub) == 0 ||
		json_string_length(sub) > TOKEN_SUB_MAX_LENGTH ||
		memchr(json_string_value(sub), '\0', json_string_length(sub)) != NULL)
		goto done;
	/* an API key's claims (set by extension_token_pre_request()) have no times */
	if (!out->api_key &&
		(!json_uuid_member(claims, "jti", out->jti) ||
		 !json_is_integer(exp) || !json_is_integer(iat)))
		goto done;
	memcpy(out->sub, json_string_value(sub), json_string_length(sub));
	out->exp = out->api_key ? 0 : json_integer_value(exp);
	out->iat = out->api_key ? 0 : json_integer_value(iat);
	out->manage_scope = scope_names(json_object_get(claims, "scope"), "tokens:manage");
	out->scoped = json_object_get(claims, "scope") != NULL;
	kind = TOKEN_CLAIMS_OURS;
done:
	json_decref(claims);
	return kind;
}

/* ---------------------------------------------------------------------
 * The retry window's sealed successor
 * ---------------------------------------------------------------------
 */

static const char seal_label[] = "extension_tokens retry window v2";

/*
 * The box's key: HMAC-SHA256 keyed with (HMAC-SHA256 of the label keyed
 * with the server's key), over the opener.  (v1 keyed it with the opener
 * alone: a dump and an exchanged refresh token opened it.)
 */
static bool
seal_key(const unsigned char *server_key, size_t server_key_len, const char *opener,
		 size_t opener_len, unsigned char key[32])
{
	unsigned char inner[32];
	unsigned int len = 32;
	bool		ok;

	if (server_key == NULL || server_key_len == 0 || server_key_len > INT32_MAX ||
		opener_len > INT32_MAX)
		return false;
	ok = HMAC(EVP_sha256(), server_key, (int) server_key_len,
			  (const unsigned char *) seal_label, sizeof(seal_label) - 1,
			  inner, &len) != NULL && len == 32;
	len = 32;
	ok = ok && HMAC(EVP_sha256(), inner, 32, (const unsigned char *) opener, opener_len,
					key, &len) != NULL && len == 32;
	OPENSSL_cleanse(inner, sizeof(inner));
	return ok;
}

bool
token_seal(const unsigned char *server_key, size_t server_key_len, const char *opener,
		   size_t opener_len, const unsigned char *aad, size_t aad_len,
		   const void *plain, size_t plain_len, unsigned char *out)
{
	unsigned char key[32];
	EVP_CIPHER_CTX *ctx = NULL;
	int			n;
	bool		ok = false;

	if (plain_len > INT32_MAX - TOKEN_SEAL_OVERHEAD ||
		!seal_key(server_key, server_key_len, opener, opener_len, key) ||
		!token_random_bytes(out, 12) ||
		(ctx = EVP_CIPHER_CTX_new()) == NULL)
		goto done;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) != 1 ||
		EVP_EncryptUpdate(ctx, NULL, &n, aad, (int) aad_len) != 1 ||
		EVP_EncryptUpdate(ctx, out + 12, &n, plain, (int) plain_len) != 1 ||
		(size_t) n != plain_len ||
		EVP_EncryptFinal_ex(ctx, out + 12 + n, &n) != 1 || n != 0 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 12 + plain_len) != 1)
		goto done;
	ok = true;
done:
	if (ctx)
		EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(key, sizeof(key));
	return ok;
}

/*
 * Opens what token_seal() sealed: false unless `server_key` and `opener` are
 * the same.
 */
bool
token_unseal(const unsigned char *server_key, size_t server_key_len, const char *opener,
			 size_t opener_len, const unsigned char *aad, size_t aad_len,
			 const unsigned char *sealed, size_t sealed_len, void *out)
{
	unsigned char key[32];
	EVP_CIPHER_CTX *ctx = NULL;
	size_t		plain_len;
	int			n;
	bool		ok = false;

	if (sealed_len < TOKEN_SEAL_OVERHEAD || sealed_len > INT32_MAX ||
		!seal_key(server_key, server_key_len, opener, opener_len, key) ||
		(ctx = EVP_CIPHER_CTX_new()) == NULL)
		goto done;
	plain_len = sealed_len - TOKEN_SEAL_OVERHEAD;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, sealed) != 1 ||
		EVP_DecryptUpdate(ctx, NULL, &n, aad, (int) aad_len) != 1 ||
		EVP_DecryptUpdate(ctx, out, &n, sealed + 12, (int) plain_len) != 1 ||
		(size_t) n != plain_len ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16,
							(void *) (sealed + 12 + plain_len)) != 1 ||
		EVP_DecryptFinal_ex(ctx, (unsigned char *) out + n, &n) != 1)
	{
		OPENSSL_cleanse(out, plain_len);
		goto done;
	}
	ok = true;
done:
	if (ctx)
		EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(key, sizeof(key));
	return ok;
}

/* ---------------------------------------------------------------------
 * JSON helper for callers that cannot include jansson (its json_object()
 * collides with PostgreSQL's fmgrprotos.h)
 * ---------------------------------------------------------------------
 */

int
token_json_string_member(const char *json, const char *key, char *out,
						 size_t outsize)
{
	json_error_t jerr;
	json_t	   *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	json_t	   *v;
	int			result = 0;

	if (root == NULL)
		return 0;
	v = json_is_object(root) ? json_object_get(root, key) : NULL;
	if (v != NULL)
	{
		if (json_is_string(v) && json_string_length(v) < outsize)
		{
			memcpy(out, json_string_value(v), json_string_length(v));
			out[json_string_length(v)] = '\0';
			result = 1;
		}
		else
			result = -1;
	}
	json_decref(root);
	return result;
}

bool
token_is_ours(const char *token, size_t len, const char *issuer)
{
	const char *dot1,
			   *dot2;
	unsigned char payload[TOKEN_MAX_LENGTH];
	long		n;
	json_t	   *root;
	json_t	   *iss,
			   *type;
	json_error_t jerr;
	bool		ours = false;

	if (token == NULL || len == 0 || len > TOKEN_MAX_LENGTH)
		return false;
	dot1 = memchr(token, '.', len);
	if (dot1 == NULL)
		return false;
	dot2 = memchr(dot1 + 1, '.', len - (size_t) (dot1 + 1 - token));
	if (dot2 == NULL)
		return false;
	n = b64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1), payload);
	if (n <= 0)
		return false;
	root = json_loadb((const char *) payload, (size_t) n, 0, &jerr);
	if (root == NULL)
		return false;
	iss = json_object_get(root, "iss");
	type = json_object_get(root, "type");
	ours = json_is_string(iss) && json_is_string(type) &&
		strlen(issuer) == json_string_length(iss) &&
		strcmp(json_string_value(iss), issuer) == 0 &&
		strcmp(json_string_value(type), "access") == 0;
	json_decref(root);
	return ours;
}
