/*-------------------------------------------------------------------------
 *
 * token_keys.c
 *	  Asymmetric signing keys (ES256 on P-256, EdDSA on Ed25519): loading a
 *	  PEM private key, its public JWK and RFC 7638 thumbprint, and the raw
 *	  JWS signatures (RFC 7518 3.4, RFC 8037 3.1).
 *
 * Part of the token core: no database, no palloc, no ereport.  Everything
 * OpenSSL allocates is released before a function returns, except the key
 * itself, which the caller frees with token_keypair_free().
 *
 * Signing is OpenSSL's, not libjwt's: libjwt 1.10 (Debian 12) has no EdDSA
 * at all, and neither version normalizes ECDSA signatures.  An ECDSA
 * signature (r, s) also verifies as (r, n - s); we always write the low
 * form (s <= n/2), and the verifier accepts only that form, so that a token
 * has exactly one valid signature, as it has under HS256.  A JWS ES256
 * signature is the raw R || S, 32 bytes each, not DER: OpenSSL's DER is
 * converted both ways here.
 *
 * A key file is refused unless it holds an unencrypted private key of one of
 * the two supported kinds whose public part passes OpenSSL's full key check
 * (for P-256: the point is on the curve, and the private key matches it).
 * Tokens never bring a key of their own (jwk, jku, x5c and x5u are never
 * read): the only public keys used are those derived from these files.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "token.h"

struct TokenKeyPair
{
	EVP_PKEY   *pkey;
	/*
	 * Contexts initialized once for signing and verifying with this key;
	 * each operation works on a copy, which spares OpenSSL 3 the fetch of
	 * the algorithms and the key's export to the provider on every call.
	 */
	EVP_MD_CTX *sign_base;
	EVP_MD_CTX *verify_base;
	TokenAlg	alg;
	char		kid[TOKEN_THUMBPRINT_LENGTH + 1];
	char		jwk[TOKEN_JWK_MAX_LENGTH];
};

/* The order n of the P-256 group (SEC 2, secp256r1), and n / 2 rounded down. */
static const unsigned char p256_order[32] = {
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
	0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51
};
static const unsigned char p256_half_order[32] = {
	0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00,
	0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42,
	0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8
};

const char *
token_alg_name(TokenAlg alg)
{
	switch (alg)
	{
		case TOKEN_ALG_ES256:
			return "ES256";
		case TOKEN_ALG_EDDSA:
			return "EdDSA";
		default:
			return "HS256";
	}
}

/* base64url without padding; out has room for 4 * ceil(len / 3) + 1. */
size_t
token_b64url_encode(const unsigned char *in, size_t len, char *out)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		o = 0;
	size_t		i = 0;

	for (; i + 3 <= len; i += 3)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8) | in[i + 2];

		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = alphabet[(v >> 6) & 63];
		out[o++] = alphabet[v & 63];
	}
	if (len - i == 1)
	{
		uint32_t	v = (uint32_t) in[i] << 16;

		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
	}
	else if (len - i == 2)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8);

		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = alphabet[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

/* Never prompt for a passphrase: an encrypted key is refused. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void) buf;
	(void) size;
	(void) rwflag;
	(void) u;
	return -1;
}

/*
 * The public coordinates as base64url: x (and y for P-256).  Returns false
 * if OpenSSL cannot give them.
 */
static bool
public_coordinates(EVP_PKEY *pkey, TokenAlg alg, char *x, char *y)
{
	unsigned char raw[32];

	if (alg == TOKEN_ALG_EDDSA)
	{
		size_t		len = sizeof(raw);

		if (EVP_PKEY_get_raw_public_key(pkey, raw, &len) != 1 || len != 32)
			return false;
		token_b64url_encode(raw, 32, x);
		y[0] = '\0';
		return true;
	}
	else
	{
		BIGNUM	   *bx = NULL;
		BIGNUM	   *by = NULL;
		bool		ok;

		ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) == 1 &&
			EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) == 1 &&
			BN_bn2binpad(bx, raw, 32) == 32;
		if (ok)
		{
			token_b64url_encode(raw, 32, x);
			ok = BN_bn2binpad(by, raw, 32) == 32;
			if (ok)
				token_b64url_encode(raw, 32, y);
		}
		BN_free(bx);
		BN_free(by);
		return ok;
	}
}

TokenKeyPair *
token_keypair_load(const char *pem, size_t len, const char **errmsg)
{
	BIO		   *bio;
	EVP_PKEY   *pkey;
	EVP_PKEY_CTX *check;
	TokenKeyPair *kp;
	TokenAlg	alg;
	char		x[48];
	char		y[48];
	char		canonical[160];
	unsigned char digest[32];
	unsigned int dlen = 0;

	*errmsg = NULL;
	if (pem == NULL || len == 0 || len > INT32_MAX)
	{
		*errmsg = "the file is empty";
		return NULL;
	}
	bio = BIO_new_mem_buf(pem, (int) len);
	if (bio == NULL)
	{
		*errmsg = "out of memory";
		return NULL;
	}
	pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (pkey == NULL)
	{
		*errmsg = "it holds no unencrypted PEM private key";
		return NULL;
	}

	if (EVP_PKEY_is_a(pkey, "ED25519"))
		alg = TOKEN_ALG_EDDSA;
	else if (EVP_PKEY_is_a(pkey, "EC"))
	{
		char		group[64];
		size_t		glen = 0;

		if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
										   group, sizeof(group), &glen) != 1 ||
			(strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0))
		{
			EVP_PKEY_free(pkey);
			*errmsg = "it holds an EC key on another curve than P-256 (prime256v1)";
			return NULL;
		}
		alg = TOKEN_ALG_ES256;
	}
	else
	{
		EVP_PKEY_free(pkey);
		*errmsg = "it holds a private key of another type than P-256 (ES256) or Ed25519 (EdDSA)";
		return NULL;
	}

	/* The full check: public point on the curve, private key matching it. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (check == NULL || EVP_PKEY_check(check) != 1)
	{
		EVP_PKEY_CTX_free(check);
		EVP_PKEY_free(pkey);
		*errmsg = "the key fails OpenSSL's key check (a public point not on the curve, or a private key that does not match it)";
		return NULL;
	}
	EVP_PKEY_CTX_free(check);

	if (!public_coordinates(pkey, alg, x, y))
	{
		EVP_PKEY_free(pkey);
		*errmsg = "could not read the public key";
		return NULL;
	}

	kp = malloc(sizeof(TokenKeyPair));
	if (kp == NULL)
	{
		EVP_PKEY_free(pkey);
		*errmsg = "out of memory";
		return NULL;
	}
	kp->pkey = pkey;
	kp->alg = alg;
	kp->sign_base = EVP_MD_CTX_new();
	kp->verify_base = EVP_MD_CTX_new();
	if (kp->sign_base == NULL || kp->verify_base == NULL ||
		EVP_DigestSignInit(kp->sign_base, NULL,
						   alg == TOKEN_ALG_ES256 ? EVP_sha256() : NULL, NULL, pkey) != 1 ||
		EVP_DigestVerifyInit(kp->verify_base, NULL,
							 alg == TOKEN_ALG_ES256 ? EVP_sha256() : NULL, NULL, pkey) != 1)
	{
		token_keypair_free(kp);
		*errmsg = "could not set up signing with the key";
		return NULL;
	}

	/*
	 * RFC 7638: SHA-256 of the required members only, in lexicographic
	 * order, no whitespace.
	 */
	if (alg == TOKEN_ALG_ES256)
		snprintf(canonical, sizeof(canonical),
				 "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	else
		snprintf(canonical, sizeof(canonical),
				 "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x);
	if (EVP_Digest(canonical, strlen(canonical), digest, &dlen, EVP_sha256(), NULL) != 1 ||
		dlen != 32)
	{
		token_keypair_free(kp);
		*errmsg = "could not compute the key's thumbprint";
		return NULL;
	}
	token_b64url_encode(digest, 32, kp->kid);

	if (alg == TOKEN_ALG_ES256)
		snprintf(kp->jwk, sizeof(kp->jwk),
				 "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\",\"kid\":\"%s\",\"alg\":\"ES256\",\"use\":\"sig\"}",
				 x, y, kp->kid);
	else
		snprintf(kp->jwk, sizeof(kp->jwk),
				 "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"%s\",\"alg\":\"EdDSA\",\"use\":\"sig\"}",
				 x, kp->kid);
	return kp;
}

void
token_keypair_free(TokenKeyPair *kp)
{
	if (kp == NULL)
		return;
	EVP_MD_CTX_free(kp->sign_base);
	EVP_MD_CTX_free(kp->verify_base);
	EVP_PKEY_free(kp->pkey);
	OPENSSL_cleanse(kp, sizeof(*kp));
	free(kp);
}

TokenAlg
token_keypair_alg(const TokenKeyPair *kp)
{
	return kp->alg;
}

const char *
token_keypair_kid(const TokenKeyPair *kp)
{
	return kp->kid;
}

const char *
token_keypair_jwk(const TokenKeyPair *kp)
{
	return kp->jwk;
}

/* Signs data: TOKEN_ASYM_SIG_LENGTH bytes into sig (R || S for ES256). */
bool
token_keypair_sign(const TokenKeyPair *kp, const unsigned char *data, size_t len,
				   unsigned char sig[TOKEN_ASYM_SIG_LENGTH])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char der[80];
	size_t		derlen = sizeof(der);
	bool		ok = false;

	if (ctx == NULL)
		return false;
	if (kp->alg == TOKEN_ALG_EDDSA)
	{
		size_t		siglen = TOKEN_ASYM_SIG_LENGTH;

		ok = EVP_MD_CTX_copy_ex(ctx, kp->sign_base) == 1 &&
			EVP_DigestSign(ctx, sig, &siglen, data, len) == 1 &&
			siglen == TOKEN_ASYM_SIG_LENGTH;
	}
	else if (EVP_MD_CTX_copy_ex(ctx, kp->sign_base) == 1 &&
			 EVP_DigestSign(ctx, der, &derlen, data, len) == 1)
	{
		const unsigned char *p = der;
		ECDSA_SIG  *es = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
		const BIGNUM *r;
		const BIGNUM *s;
		unsigned char sbytes[32];

		if (es != NULL)
		{
			ECDSA_SIG_get0(es, &r, &s);
			ok = BN_bn2binpad(r, sig, 32) == 32 &&
				BN_bn2binpad(s, sbytes, 32) == 32;
			/* the low form: s > n/2 becomes n - s */
			if (ok && memcmp(sbytes, p256_half_order, 32) > 0)
			{
				BIGNUM	   *n = BN_bin2bn(p256_order, 32, NULL);
				BIGNUM	   *ls = BN_new();

				ok = n != NULL && ls != NULL && BN_sub(ls, n, s) == 1 &&
					BN_bn2binpad(ls, sbytes, 32) == 32;
				BN_free(n);
				BN_free(ls);
			}
			if (ok)
				memcpy(sig + 32, sbytes, 32);
			ECDSA_SIG_free(es);
		}
	}
	EVP_MD_CTX_free(ctx);
	if (!ok)
		OPENSSL_cleanse(sig, TOKEN_ASYM_SIG_LENGTH);
	return ok;
}

/* 0 < v (32 bytes, big-endian) <= limit, or < limit when strict. */
static bool
in_range(const unsigned char *v, const unsigned char *limit, bool strict)
{
	static const unsigned char zero[32];
	int			c = memcmp(v, limit, 32);

	return memcmp(v, zero, 32) != 0 && (strict ? c < 0 : c <= 0);
}

bool
token_keypair_verify(const TokenKeyPair *kp, const unsigned char *data, size_t len,
					 const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX *ctx;
	bool		ok = false;

	if (siglen != TOKEN_ASYM_SIG_LENGTH)
		return false;
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return false;
	if (kp->alg == TOKEN_ALG_EDDSA)
	{
		/* OpenSSL refuses a non-canonical S (S >= L) itself. */
		ok = EVP_MD_CTX_copy_ex(ctx, kp->verify_base) == 1 &&
			EVP_DigestVerify(ctx, sig, siglen, data, len) == 1;
	}
	else if (in_range(sig, p256_order, true) &&
			 in_range(sig + 32, p256_half_order, false))
	{
		ECDSA_SIG  *es = ECDSA_SIG_new();
		BIGNUM	   *r = BN_bin2bn(sig, 32, NULL);
		BIGNUM	   *s = BN_bin2bn(sig + 32, 32, NULL);
		unsigned char *der = NULL;
		int			derlen;

		if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1)
		{
			r = s = NULL;		/* owned by es now */
			derlen = i2d_ECDSA_SIG(es, &der);
			ok = derlen > 0 &&
				EVP_MD_CTX_copy_ex(ctx, kp->verify_base) == 1 &&
				EVP_DigestVerify(ctx, der, (size_t) derlen, data, len) == 1;
			OPENSSL_free(der);
		}
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
	}
	EVP_MD_CTX_free(ctx);
	return ok;
}
