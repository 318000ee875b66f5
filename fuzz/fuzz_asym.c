/*-------------------------------------------------------------------------
 *
 * fuzz_asym.c
 *	  libFuzzer harness for the ES256 and EdDSA paths of the token core
 *	  (src/token.c, src/token_keys.c): no PostgreSQL.
 *
 * Every input is used in all of these ways, under both algorithms:
 *
 *	A. as a token: token_verify_access() with a fixed key pair (and with the
 *	   other algorithm's key as the previous one);
 *	B. as the signature of a token we signed (header.payload kept): it must
 *	   verify only when it is byte for byte our own (low-S) signature; a
 *	   fuzzer that found another accepted signature would have found a
 *	   forgery or an accepted malleated (high-S, S + L) form;
 *	C. (one input in eight) as the claims of a token we sign
 *	   (token_sign_access() with the input as extra claims): what it returns
 *	   must verify, and fail under the other algorithm (unsupported_algorithm)
 *	   and with one signature byte changed;
 *	D. (inputs that begin as PEM does, and one other in sixteen) as PEM text
 *	   for token_keypair_load(): whatever loads must sign and verify its own
 *	   signature, and its JWK and kid must be well formed.
 *
 * Invariants abort() on violation.  token.c is #included, as in
 * fuzz_token.c, for the same reasons (see there).
 *
 *-------------------------------------------------------------------------
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *
fuzz_dlopen_no_deepbind(const char *file, int mode)
{
	return dlopen(file, mode & ~RTLD_DEEPBIND);
}

#define dlopen fuzz_dlopen_no_deepbind
#include "../src/token.c"
#undef dlopen

#define FUZZ_NOW	INT64_C(1700000000)

/* Test keys, made with openssl genpkey for this harness only. */
static const char es256_pem[] =
"-----BEGIN PRIVATE KEY-----\n"
"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6ezTKSswkH7gpolh\n"
"0/BfbYaW/DtYN0DS5I3N/3vH7xOhRANCAASH1rctRlcYM0w4xOJ5VE5KZyNbL3z2\n"
"XdKMj7Gk4GZQDdtvfQSAU0kVLAreB8fg/atJsxuVOW/fLfpNYcQYf6Fw\n"
"-----END PRIVATE KEY-----\n";
static const char eddsa_pem[] =
"-----BEGIN PRIVATE KEY-----\n"
"MC4CAQAwBQYDK2VwBCIEIPEZIfL7w2w8f+m32kZx4pkObAwBmgo7aGXGZnOAgZes\n"
"-----END PRIVATE KEY-----\n";

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_asym: invariant violated at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

static const char *
pem_of(TokenAlg alg, size_t *len)
{
	const char *pem = alg == TOKEN_ALG_ES256 ? es256_pem : eddsa_pem;

	*len = strlen(pem);
	return pem;
}

static void
params_init(TokenVerifyParams *p, TokenAlg alg)
{
	size_t		len;

	memset(p, 0, sizeof(*p));
	p->alg = alg;
	p->key = (const unsigned char *) pem_of(alg, &len);
	p->keylen = len;
	p->issuer = "https://issuer.example";
	p->audience = "api.example";
	p->now = FUZZ_NOW;
	p->leeway = 30;
	p->check_times = true;
}

/* A token of ours under alg, with extra claims (NULL: none); malloc'ed. */
static char *
sign(TokenAlg alg, const char *extra, size_t extra_len, const char **why)
{
	TokenAccessSpec spec;
	unsigned char sid[TOKEN_UUID_LENGTH] = {1, 2, 3, 4};
	size_t		len;
	const char *pem = pem_of(alg, &len);

	memset(&spec, 0, sizeof(spec));
	spec.issuer = "https://issuer.example";
	spec.audience = "api.example";
	spec.sub = "fuzz-user";
	spec.session_id = sid;
	spec.iat = FUZZ_NOW;
	spec.exp = FUZZ_NOW + 3600;
	spec.alg = alg;
	spec.with_kid = true;
	spec.extra_claims_json = extra;
	spec.extra_claims_len = extra_len;
	return token_sign_access(&spec, (const unsigned char *) pem, len, why);
}

static TokenStatus
verify(const char *token, size_t len, const TokenVerifyParams *p)
{
	static TokenAccessClaims claims;
	TokenStatus st = token_verify_access(token, len, p, &claims);

	token_payload_release(&claims.parsed);
	return st;
}

/* The fixed token of each algorithm, signed once. */
static char *fixed[2];

/*
 * FUZZ_ASYM_ALG=ES256 or EdDSA: one algorithm for the whole run.  The token
 * core caches the parsed key of each slot (current, previous) and parses a
 * PEM again when the key or algorithm changes, as a server does once per
 * reload; alternating the two algorithms on every input made this harness
 * spend nearly all its time in OpenSSL's PEM decoders.  Unset: both, each
 * input (the seeds' and CI's smoke), slower.
 */
static int	alg_first = 0,
			alg_last = 1;

int			LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *only = getenv("FUZZ_ASYM_ALG");

	if (only != NULL && strcmp(only, "ES256") == 0)
		alg_last = 0;
	else if (only != NULL && strcmp(only, "EdDSA") == 0)
		alg_first = 1;
	else if (only != NULL && *only != '\0')
	{
		fprintf(stderr, "fuzz_asym: FUZZ_ASYM_ALG must be ES256 or EdDSA\n");
		exit(2);
	}
	return 0;
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int a = alg_first; a <= alg_last; a++)
	{
		TokenAlg	alg = a == 0 ? TOKEN_ALG_ES256 : TOKEN_ALG_EDDSA;
		TokenAlg	other = a == 0 ? TOKEN_ALG_EDDSA : TOKEN_ALG_ES256;
		TokenVerifyParams p;
		const char *why = NULL;
		size_t		olen;

		params_init(&p, alg);
		if (fixed[a] == NULL)
		{
			fixed[a] = sign(alg, NULL, 0, &why);
			CHECK(fixed[a] != NULL);
			CHECK(verify(fixed[a], strlen(fixed[a]), &p) == TOKEN_OK);
		}

		/* A: the input as a token, with the other key as the previous one */
		p.prev_key = (const unsigned char *) pem_of(other, &olen);
		p.prev_keylen = olen;
		(void) verify((const char *) data, size, &p);
		p.prev_key = NULL;
		p.prev_keylen = 0;

		/* B: the input as the signature of our token */
		if (size <= 200)
		{
			const char *dot = strrchr(fixed[a], '.');
			size_t		prefix = (size_t) (dot - fixed[a]) + 1;
			char		token[1024];
			size_t		n;
			unsigned char own[TOKEN_MAX_LENGTH];
			long		ownlen = b64url_decode(dot + 1, strlen(dot + 1), own);

			memcpy(token, fixed[a], prefix);
			n = prefix + token_b64url_encode(data, size, token + prefix);
			if (verify(token, n, &p) == TOKEN_OK)
				CHECK(ownlen == (long) size && memcmp(own, data, size) == 0);
		}

		/*
		 * C: the input as extra claims of a token we sign; one input in
		 * eight (by its length: reproducible), as signing and three more
		 * verifications cost ten times what A and B do.
		 */
		if (size % 8 == 0)
		{
			char	   *t = sign(alg, (const char *) data, size, &why);

			if (t != NULL)
			{
				size_t		n = strlen(t);
				TokenStatus st = verify(t, n, &p);

				CHECK(n <= TOKEN_MAX_LENGTH);
				CHECK(st == TOKEN_OK);
				p.alg = other;
				p.key = (const unsigned char *) pem_of(other, &olen);
				p.keylen = olen;
				CHECK(verify(t, n, &p) == TOKEN_UNSUPPORTED_ALGORITHM);
				params_init(&p, alg);
				t[n - 5] = t[n - 5] == 'A' ? 'B' : 'A';
				CHECK(verify(t, n, &p) != TOKEN_OK);
				free(t);
			}
		}
	}

	/*
	 * D: the input as a PEM key: those that look like one, and one other
	 * input in sixteen (OpenSSL's decoders try every format they know on
	 * whatever they are given, at a thousand times the cost of A).
	 */
	if ((size >= 10 && memcmp(data, "-----BEGIN", 10) == 0) || size % 16 == 1)
	{
		const char *why = NULL;
		TokenKeyPair *kp = token_keypair_load((const char *) data, size, &why);

		if (kp != NULL)
		{
			unsigned char sig[TOKEN_ASYM_SIG_LENGTH];

			CHECK(strlen(token_keypair_kid(kp)) == TOKEN_THUMBPRINT_LENGTH);
			CHECK(token_keypair_sign(kp, data, size, sig));
			CHECK(token_keypair_verify(kp, data, size, sig, sizeof(sig)));
			sig[0] ^= 1;
			CHECK(!token_keypair_verify(kp, data, size, sig, sizeof(sig)));
			token_keypair_free(kp);
		}
		else
			CHECK(why != NULL);
	}
	return 0;
}
