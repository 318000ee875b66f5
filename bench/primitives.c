/*
 * bench/primitives.c: the cost of the two crypto primitives a validation
 * cannot avoid, measured in C with OpenSSL 3 (the library the extension
 * links): SHA-256 of the whole token, and HMAC-SHA256 of its signing input
 * (header.payload) with the key set once (a context keyed once and
 * re-initialised per message) and re-keyed per call.
 *
 *   primitives TOKEN_BYTES SIGNING_INPUT_BYTES [SECONDS [PAYLOAD_FILE]]
 *
 * Prints "name microseconds_per_op" lines:
 *   sha256_us, hmac_keyed_us, hmac_rekey_us
 * and, given a file holding a token's decoded payload (JSON), the third
 * cost SECURITY.md fixes: parsing it with jansson, duplicate keys refused;
 * and what issuing pays libjwt (which SECURITY.md keeps for building
 * tokens) to build and sign a token with that payload: jwt_new,
 * jwt_add_grants_json, jwt_set_alg (HS256, the 32-byte key), jwt_encode_str:
 *   jansson_parse_us, libjwt_sign_us
 */
#include <jansson.h>
#include <jwt.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	fprintf(stderr, "primitives: %s failed\n", what);
	exit(1);
}

/* Keeps the compiler from dropping the work. */
static volatile unsigned char sink;

int
main(int argc, char **argv)
{
	size_t		token_len = argc > 1 ? strtoul(argv[1], NULL, 10) : 339;
	size_t		input_len = argc > 2 ? strtoul(argv[2], NULL, 10) : 295;
	double		seconds = argc > 3 ? atof(argv[3]) : 0.5;
	unsigned char *buf;
	unsigned char key[32];
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned char ref[EVP_MAX_MD_SIZE];
	unsigned int outlen;
	size_t		maclen;
	EVP_MD	   *md;
	EVP_MD_CTX *mdctx;
	EVP_MAC    *mac;
	EVP_MAC_CTX *macctx;
	OSSL_PARAM	params[2];
	long		n, iters;
	double		t0, t;

	if (token_len < 16 || input_len < 1 || input_len > token_len || seconds <= 0)
	{
		fprintf(stderr, "usage: primitives TOKEN_BYTES SIGNING_INPUT_BYTES [SECONDS]\n");
		return 2;
	}
	buf = malloc(token_len);
	for (size_t i = 0; i < token_len; i++)
		buf[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[(i * 7 + 3) % 64];
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (unsigned char) ('0' + i % 10);

	/* SHA-256, the digest fetched once, one context reused. */
	md = EVP_MD_fetch(NULL, "SHA256", NULL);
	mdctx = EVP_MD_CTX_new();
	if (!md || !mdctx)
		die("EVP_MD_fetch");
	iters = 0;
	t0 = now_s();
	do
	{
		for (n = 0; n < 10000; n++)
		{
			if (!EVP_DigestInit_ex(mdctx, md, NULL) ||
				!EVP_DigestUpdate(mdctx, buf, token_len) ||
				!EVP_DigestFinal_ex(mdctx, out, &outlen))
				die("SHA-256");
			sink ^= out[0];
		}
		iters += n;
		t = now_s() - t0;
	} while (t < seconds);
	printf("sha256_us %.4f\n", t * 1e6 / iters);

	/* HMAC-SHA256, key set once: EVP_MAC_init with a NULL key re-uses it. */
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	macctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	if (!macctx)
		die("EVP_MAC_fetch");
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(macctx, key, sizeof(key), params))
		die("EVP_MAC_init");
	/* Check that re-initialising without a key gives the keyed result. */
	if (!HMAC(EVP_sha256(), key, sizeof(key), buf, input_len, ref, &outlen))
		die("HMAC");
	if (!EVP_MAC_init(macctx, NULL, 0, NULL) ||
		!EVP_MAC_update(macctx, buf, input_len) ||
		!EVP_MAC_final(macctx, out, &maclen, sizeof(out)) ||
		maclen != 32 || memcmp(out, ref, 32) != 0)
		die("HMAC key reuse check");
	iters = 0;
	t0 = now_s();
	do
	{
		for (n = 0; n < 10000; n++)
		{
			if (!EVP_MAC_init(macctx, NULL, 0, NULL) ||
				!EVP_MAC_update(macctx, buf, input_len) ||
				!EVP_MAC_final(macctx, out, &maclen, sizeof(out)))
				die("HMAC (keyed)");
			sink ^= out[0];
		}
		iters += n;
		t = now_s() - t0;
	} while (t < seconds);
	printf("hmac_keyed_us %.4f\n", t * 1e6 / iters);

	/* HMAC-SHA256, re-keyed on every call. */
	iters = 0;
	t0 = now_s();
	do
	{
		for (n = 0; n < 10000; n++)
		{
			if (!EVP_MAC_init(macctx, key, sizeof(key), NULL) ||
				!EVP_MAC_update(macctx, buf, input_len) ||
				!EVP_MAC_final(macctx, out, &maclen, sizeof(out)))
				die("HMAC (re-keyed)");
			sink ^= out[0];
		}
		iters += n;
		t = now_s() - t0;
	} while (t < seconds);
	printf("hmac_rekey_us %.4f\n", t * 1e6 / iters);

	/* jansson, as the verifier calls it on a token's payload. */
	if (argc > 4)
	{
		FILE	   *f = fopen(argv[4], "rb");
		char		json[8192];
		size_t		len;
		json_error_t jerr;
		json_t	   *v;

		if (f == NULL)
			die("opening the payload file");
		len = fread(json, 1, sizeof(json) - 1, f);
		fclose(f);
		while (len > 0 && (json[len - 1] == '\n' || json[len - 1] == '\r'))
			len--;
		v = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
		if (v == NULL || !json_is_object(v))
			die("parsing the payload");
		json_decref(v);
		iters = 0;
		t0 = now_s();
		do
		{
			for (n = 0; n < 10000; n++)
			{
				v = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
				if (v == NULL)
					die("json_loadb");
				sink ^= (unsigned char) json_object_size(v);
				json_decref(v);
			}
			iters += n;
			t = now_s() - t0;
		} while (t < seconds);
		printf("jansson_parse_us %.4f (%zu bytes)\n", t * 1e6 / iters, len);

		json[len] = '\0';
		iters = 0;
		t0 = now_s();
		do
		{
			for (n = 0; n < 1000; n++)
			{
				jwt_t	   *jwt = NULL;
				char	   *tok;

				if (jwt_new(&jwt) != 0 ||
					jwt_add_grants_json(jwt, json) != 0 ||
					jwt_set_alg(jwt, JWT_ALG_HS256, key, sizeof(key)) != 0 ||
					(tok = jwt_encode_str(jwt)) == NULL)
					die("libjwt signing");
				sink ^= (unsigned char) tok[0];
				free(tok);
				jwt_free(jwt);
			}
			iters += n;
			t = now_s() - t0;
		} while (t < seconds);
		printf("libjwt_sign_us %.4f\n", t * 1e6 / iters);
	}

	EVP_MAC_CTX_free(macctx);
	EVP_MAC_free(mac);
	EVP_MD_CTX_free(mdctx);
	EVP_MD_free(md);
	free(buf);
	return 0;
}
