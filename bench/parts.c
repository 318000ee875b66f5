/*
 * bench/parts.c: the benchmark's own server-side probe (not part of the
 * extension).  One C function that does, for a token, only the work a
 * validation cannot leave out beyond the index lookup, with the same
 * libraries and flags the extension uses:
 *
 *   SHA-256 of the whole token (the table is keyed by it);
 *   HMAC-SHA256 of header.payload, the key set once per backend, compared
 *   with the decoded signature in constant time;
 *   and, when `parse` is true, base64url decoding of the payload and its
 *   parse by jansson with JSON_REJECT_DUPLICATES (SECURITY.md's rule).
 *
 *   bench.parts(token text, key bytea, parse bool) RETURNS int
 *
 * Returns the number of members of the payload (0 when not parsed); raises an
 * error when the signature does not match or the payload does not parse, so
 * that a pgbench run over wrong input fails instead of measuring nothing.
 * No syntax checks, no claims checks, no result row: whatever a validation
 * costs beyond the lookup, it costs at least this.
 */
#include "postgres.h"

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fmgr.h"

PG_MODULE_MAGIC;

static EVP_MD *sha256;
static EVP_MD_CTX *md_ctx;
static EVP_MAC_CTX *mac_ctx;
static unsigned char mac_key[256];
static size_t mac_keylen;

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Unpadded base64url into out (room for len * 3 / 4); -1 on a bad character. */
static long
b64url_decode(const char *in, size_t len, unsigned char *out)
{
	uint32		acc = 0;
	int			bits = 0;
	long		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		int			v = b64url_value((unsigned char) in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (unsigned char) (acc >> bits);
		}
	}
	return n;
}

static void
crypto_setup(const unsigned char *key, size_t keylen)
{
	if (sha256 == NULL)
	{
		sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
		md_ctx = EVP_MD_CTX_new();
		if (sha256 == NULL || md_ctx == NULL)
			elog(ERROR, "bench.parts: OpenSSL SHA-256 unavailable");
	}
	if (mac_ctx == NULL || keylen != mac_keylen || memcmp(key, mac_key, keylen) != 0)
	{
		EVP_MAC    *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		OSSL_PARAM	params[2];

		if (keylen > sizeof(mac_key))
			elog(ERROR, "bench.parts: key too long");
		EVP_MAC_CTX_free(mac_ctx);
		mac_ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
		EVP_MAC_free(mac);
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		if (mac_ctx == NULL || EVP_MAC_init(mac_ctx, key, keylen, params) != 1)
			elog(ERROR, "bench.parts: OpenSSL HMAC unavailable");
		memcpy(mac_key, key, keylen);
		mac_keylen = keylen;
	}
}

PG_FUNCTION_INFO_V1(bench_parts);
Datum
bench_parts(PG_FUNCTION_ARGS)
{
	text	   *token = PG_GETARG_TEXT_PP(0);
	bytea	   *key = PG_GETARG_BYTEA_PP(1);
	bool		parse = PG_GETARG_BOOL(2);
	const char *tok = VARDATA_ANY(token);
	size_t		len = VARSIZE_ANY_EXHDR(token);
	const char *dot1,
			   *dot2;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned char sig[64];
	unsigned char payload[8192];
	unsigned int dlen;
	size_t		maclen;
	long		n;
	int			members = 0;

	if (len > 8192)
		elog(ERROR, "bench.parts: token too long");
	crypto_setup((const unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));

	if (EVP_DigestInit_ex(md_ctx, sha256, NULL) != 1 ||
		EVP_DigestUpdate(md_ctx, tok, len) != 1 ||
		EVP_DigestFinal_ex(md_ctx, digest, &dlen) != 1)
		elog(ERROR, "bench.parts: SHA-256 failed");

	dot1 = memchr(tok, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', len - (dot1 + 1 - tok)) : NULL;
	if (dot2 == NULL || len - (dot2 + 1 - tok) > 86)
		elog(ERROR, "bench.parts: not a token");
	if (b64url_decode(dot2 + 1, len - (dot2 + 1 - tok), sig) != 32 ||
		EVP_MAC_init(mac_ctx, NULL, 0, NULL) != 1 ||
		EVP_MAC_update(mac_ctx, (const unsigned char *) tok, dot2 - tok) != 1 ||
		EVP_MAC_final(mac_ctx, mac, &maclen, sizeof(mac)) != 1 ||
		maclen != 32 || CRYPTO_memcmp(mac, sig, 32) != 0)
		elog(ERROR, "bench.parts: signature does not match");

	if (parse)
	{
		json_error_t jerr;
		json_t	   *v;

		n = b64url_decode(dot1 + 1, dot2 - dot1 - 1, payload);
		if (n <= 0)
			elog(ERROR, "bench.parts: bad payload encoding");
		v = json_loadb((const char *) payload, (size_t) n, JSON_REJECT_DUPLICATES, &jerr);
		if (v == NULL || !json_is_object(v))
		{
			json_decref(v);
			elog(ERROR, "bench.parts: payload is not a JSON object");
		}
		members = (int) json_object_size(v);
		json_decref(v);
	}
	PG_RETURN_INT32(members);
}

/*
 * bench.refresh_token(session uuid, seed text) RETURNS text: a refresh token
 * of the extension's format for `session`, made from `seed` (so that pools
 * of well-formed tokens for bulk-written sessions can be made quickly):
 * "ext_rt_", the session id as one 128-bit number in 22 base62 digits, the
 * first 43 hex digits of SHA-256(seed), and the checksum (the first 32 bits
 * of SHA-256 of everything before it, in 6 base62 digits).
 */
static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

PG_FUNCTION_INFO_V1(bench_refresh_token);
Datum
bench_refresh_token(PG_FUNCTION_ARGS)
{
	unsigned char *id = (unsigned char *) PG_GETARG_POINTER(0);
	text	   *seed = PG_GETARG_TEXT_PP(1);
	char		out[7 + 22 + 43 + 6 + 1];
	unsigned char n[16];
	unsigned char d[32];
	unsigned int dlen;
	uint32		v;

	memcpy(out, "ext_rt_", 7);
	memcpy(n, id, 16);
	for (int k = 21; k >= 0; k--)
	{
		unsigned int rem = 0;

		for (int i = 0; i < 16; i++)
		{
			unsigned int cur = (rem << 8) | n[i];

			n[i] = (unsigned char) (cur / 62);
			rem = cur % 62;
		}
		out[7 + k] = b62[rem];
	}
	if (!EVP_Digest(VARDATA_ANY(seed), VARSIZE_ANY_EXHDR(seed), d, &dlen, EVP_sha256(), NULL))
		elog(ERROR, "SHA-256 failed");
	for (int i = 0; i < 43; i++)
		out[29 + i] = "0123456789abcdef"[(i % 2) ? d[i / 2] & 15 : d[i / 2] >> 4];
	if (!EVP_Digest(out, 72, d, &dlen, EVP_sha256(), NULL))
		elog(ERROR, "SHA-256 failed");
	v = ((uint32) d[0] << 24) | ((uint32) d[1] << 16) | ((uint32) d[2] << 8) | d[3];
	for (int i = 5; i >= 0; i--)
	{
		out[72 + i] = b62[v % 62];
		v /= 62;
	}
	{
		text	   *t = palloc(VARHDRSZ + 78);

		SET_VARSIZE(t, VARHDRSZ + 78);
		memcpy(VARDATA(t), out, 78);
		PG_RETURN_TEXT_P(t);
	}
}
