/*-------------------------------------------------------------------------
 *
 * fuzz_token.c
 *	  libFuzzer harness for the token core (src/token.c): no PostgreSQL.
 *
 * Every input is used in all of these ways:
 *
 *	A. as a token: token_verify_access() with check_times true and false,
 *	   token_is_ours(), token_looks_like_refresh(),
 *	   token_refresh_well_formed();
 *	B. NUL-terminated, as JSON text: token_json_string_member();
 *	C. as base64url text: b64url_decode() (static in token.c) must be
 *	   canonical, i.e. re-encoding what it accepted gives the input back;
 *	D. with its signature replaced by the right HMAC under the fixed key, and
 *	   as the raw header or the raw payload of a correctly signed token, so
 *	   that the header and claim checks see fuzzed JSON (a fuzzer cannot
 *	   forge HMAC-SHA256, so without this they would only see the seeds);
 *	E. sign round trip: the first 4 bytes pick issuer/audience, sub, times,
 *	   a "kid", a "role" and whether there are extra claims, the rest is
 *	   extra_claims_json; token_sign_access() then token_verify_access() on
 *	   its output.
 *
 * Invariants that abort() on violation (the crash file is the evidence):
 *	- a token verified TOKEN_OK has exactly 3 parts, payload_len <=
 *	  TOKEN_MAX_LENGTH, a sub of 1..TOKEN_SUB_MAX_LENGTH bytes, and the same
 *	  outcome without time checks; time checks only ever add EXPIRED or
 *	  NOT_YET_VALID; and token_is_ours() says it is ours;
 *	- token_is_ours() on a signed token whose payload is the input agrees
 *	  with an independent reading of "iss" and "type" by jansson;
 *	- token_refresh_well_formed() true implies length REFRESH_TOKEN_LENGTH,
 *	  the prefix, and token_looks_like_refresh(); token_make_refresh() output
 *	  is always well-formed, and stops being so when its checksum changes;
 *	- a re-signed token never fails as INVALID_SIGNATURE unless its header
 *	  names another key ("kid"); a signed payload that verifies is
 *	  byte-for-byte the input; a header that passes has "alg" exactly
 *	  "HS256" and no "crit" (checked with jansson independently);
 *	- b64url_decode() accepts only canonical text: re-encoding gives it back;
 *	- whatever token_sign_access() returns is at most TOKEN_MAX_LENGTH long
 *	  and token_is_ours(); with extra claims within the extension's
 *	  contract (a JSON object of at most MAX_CLAIMS_LENGTH bytes with no
 *	  reserved claim at the top level, as checked_claims() in
 *	  src/extension_tokens.c enforces) it fails only as token_too_long
 *	  (extra claims jansson cannot read as an object: token_bad_claims), and
 *	  what it returns verifies TOKEN_OK with the claims it was given (role
 *	  included) when exp is in the future; is EXPIRED / NOT_YET_VALID when it
 *	  should be; verifies OK with check_times false; and (one input in four)
 *	  fails with the wrong key, issuer or audience, without its signature
 *	  or with one character changed.  Half the tokens carry a "kid"; one
 *	  signed with the key being retired (prev_key) still verifies;
 *	- every TokenVerifyParams / TokenAccessSpec is zeroed first, so fields
 *	  added to token.h later start out off.
 *
 * fuzz/findings/README: what this harness found (a token longer than its
 * verifier reads, since fixed with token_too_long; the seed
 * corpus/sign_reals_oversize keeps that path covered).
 *
 * token.c is #included (not linked) so that the static b64url_decode() can
 * be reached, and so that dlopen() can be wrapped: token.c opens libjwt with
 * RTLD_DEEPBIND, which AddressSanitizer refuses outright (google/sanitizers
 * issue 611).  DEEPBIND only matters inside a postgres backend, whose
 * executable exports its own json_object(); this binary has none, so the
 * wrapper drops the flag and nothing else changes.
 *
 * Build and run: `make fuzz`, `make fuzz-smoke` (see the Makefile's end).
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE				/* memrchr */
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

/* src/extension_tokens.c: the longest p_claims text the extension signs. */
#define FUZZ_MAX_CLAIMS_LENGTH 4096

#define FUZZ_NOW	INT64_C(1700000000)

/* 40 bytes: what the fixed-key seeds in fuzz/corpus/ are signed with. */
static const unsigned char fuzz_key[40] =
"fuzz-key-0123456789-abcdefghij-ABCDEFGHI";
static const unsigned char other_key[40] =
"fuzz-key-0123456789-abcdefghij-ABCDEFGHJ";

#define FUZZ_ISSUER		"https://issuer.example"
#define FUZZ_AUDIENCE	"api.example"

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_token: invariant violated at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* ---------------------------------------------------------------------
 * The parse's allocations
 * ---------------------------------------------------------------------
 *
 * PostgreSQL's JSON parser (libpgcommon, frontend) leaves a copy behind
 * when it meets a syntax error right after making it: a backend's memory
 * context frees it, a program leaks it, and a leak makes libFuzzer scan
 * the heap after that input, which slowed this harness down a hundredfold.
 * So the link wraps the allocator the parser uses (-Wl,--wrap=palloc,...:
 * see the Makefile) and keeps a list of what is live; at the end of each
 * input what is left is freed.  The list also checks our own bookkeeping:
 * after a parse that succeeded and its release, nothing may be left (the
 * parser leaks only on errors).
 */
extern void *__real_palloc(size_t size);
extern void *__real_palloc0(size_t size);
extern char *__real_pstrdup(const char *in);
extern void *__real_repalloc(void *pointer, size_t size);
extern void __real_pfree(void *pointer);
void	   *__wrap_palloc(size_t size);
void	   *__wrap_palloc0(size_t size);
char	   *__wrap_pstrdup(const char *in);
void	   *__wrap_repalloc(void *pointer, size_t size);
void		__wrap_pfree(void *pointer);

static void **arena;
static size_t arena_n,
			arena_cap;

static void *
arena_add(void *p)
{
	if (arena_n == arena_cap)
	{
		arena_cap = arena_cap ? arena_cap * 2 : 1024;
		arena = realloc(arena, arena_cap * sizeof(void *));
		if (arena == NULL)
			abort();
	}
	arena[arena_n++] = p;
	return p;
}

/* Removes p from the list; false when it is not there. */
static bool
arena_remove(void *p)
{
	for (size_t i = arena_n; i-- > 0;)
		if (arena[i] == p)
		{
			arena[i] = arena[--arena_n];
			return true;
		}
	return false;
}

/* Frees what the parser left behind. */
static void
arena_flush(void)
{
	while (arena_n > 0)
		__real_pfree(arena[--arena_n]);
}

void *
__wrap_palloc(size_t size)
{
	return arena_add(__real_palloc(size));
}

void *
__wrap_palloc0(size_t size)
{
	return arena_add(__real_palloc0(size));
}

char *
__wrap_pstrdup(const char *in)
{
	return arena_add(__real_pstrdup(in));
}

void *
__wrap_repalloc(void *pointer, size_t size)
{
	/* the parser's buffers only: every pointer it grows is one it made */
	if (!arena_remove(pointer))
		abort();
	return arena_add(__real_repalloc(pointer, size));
}

void
__wrap_pfree(void *pointer)
{
	/* freeing what was not allocated here (or twice) is a bug of ours */
	if (!arena_remove(pointer))
		abort();
	__real_pfree(pointer);
}

/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

static const char b64url_chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url; `out` has room for 4 * ceil(len / 3) + 1. */
static size_t
b64url_encode(const unsigned char *in, size_t len, char *out)
{
	size_t		o = 0;
	size_t		i = 0;

	for (; i + 2 < len; i += 3)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8) | in[i + 2];

		out[o++] = b64url_chars[(v >> 18) & 63];
		out[o++] = b64url_chars[(v >> 12) & 63];
		out[o++] = b64url_chars[(v >> 6) & 63];
		out[o++] = b64url_chars[v & 63];
	}
	if (len - i == 1)
	{
		uint32_t	v = (uint32_t) in[i] << 16;

		out[o++] = b64url_chars[(v >> 18) & 63];
		out[o++] = b64url_chars[(v >> 12) & 63];
	}
	else if (len - i == 2)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8);

		out[o++] = b64url_chars[(v >> 18) & 63];
		out[o++] = b64url_chars[(v >> 12) & 63];
		out[o++] = b64url_chars[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

static size_t
b64url_encoded_length(size_t len)
{
	return (len / 3) * 4 + (len % 3 ? len % 3 + 1 : 0);
}

static void
params_init(TokenVerifyParams *p, bool check_times)
{
	/* zeroed: fields this harness does not know of stay off */
	memset(p, 0, sizeof(*p));
	p->key = fuzz_key;
	p->keylen = sizeof(fuzz_key);
	p->issuer = FUZZ_ISSUER;
	p->audience = FUZZ_AUDIENCE;
	p->now = FUZZ_NOW;
	p->leeway = 30;
	p->check_times = check_times;
}

static int
count_dots(const char *s, size_t len)
{
	int			n = 0;

	for (size_t i = 0; i < len; i++)
		n += (s[i] == '.');
	return n;
}

/*
 * Whether a header (JSON text) names a key by "kid" that is not fuzz_key:
 * such a token may fail as INVALID_SIGNATURE however it is signed.
 */
static bool
header_names_other_key(const unsigned char *json, size_t len)
{
	json_error_t jerr;
	json_t	   *h = json_loadb((const char *) json, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t	   *kid;
	bool		other = false;

	if (h == NULL)
		return false;
	kid = json_is_object(h) ? json_object_get(h, "kid") : NULL;
	if (kid != NULL)
	{
		char		mine[TOKEN_KID_LENGTH + 1];

		token_key_id(fuzz_key, sizeof(fuzz_key), mine);
		other = !json_is_string(kid) || json_string_length(kid) != TOKEN_KID_LENGTH ||
			memcmp(json_string_value(kid), mine, TOKEN_KID_LENGTH) != 0;
	}
	json_decref(h);
	return other;
}

/*
 * token_is_ours() as it should be, read independently: the payload is a
 * JSON object (duplicate keys allowed, the last one wins, as jansson does
 * without JSON_REJECT_DUPLICATES) whose "iss" is `issuer` and whose "type"
 * is "access".
 */
static bool
payload_is_ours(const unsigned char *json, size_t len, const char *issuer)
{
	json_error_t jerr;
	json_t	   *o = json_loadb((const char *) json, len, 0, &jerr);
	json_t	   *iss,
			   *type;
	bool		ours;

	if (o == NULL)
		return false;
	iss = json_object_get(o, "iss");	/* NULL unless an object */
	type = json_object_get(o, "type");
	ours = json_is_string(iss) && json_is_string(type) &&
		json_string_length(iss) == strlen(issuer) &&
		memcmp(json_string_value(iss), issuer, strlen(issuer)) == 0 &&
		json_string_length(type) == 6 &&
		memcmp(json_string_value(type), "access", 6) == 0;
	json_decref(o);
	return ours;
}

static bool
status_valid(TokenStatus s)
{
	return s >= TOKEN_OK && s < TOKEN_STATUS_COUNT &&
		s != TOKEN_NOT_FOUND && s != TOKEN_REVOKED &&
		(s == TOKEN_OK || token_status_name(s) != NULL);
}

/*
 * A visitor that checks the event stream of token_payload_parse(): nesting
 * balanced, a key only directly in an object and followed by one value,
 * in_array exactly when the value is an array element, strings NUL-free of
 * the length given; it counts what it saw, for the comparison with jansson.
 */
typedef struct VisitCheck
{
	int			events;
	int			depth;
	bool		is_array[TOKEN_PAYLOAD_MAX_DEPTH + 2];
	bool		want_value;		/* a key was seen, its value is due */
	bool		bad;
	int			keys,
				strings,
				numbers,
				literals,
				objects,
				arrays;
} VisitCheck;

static void
check_visit(void *arg, TokenJsonEvent event, bool in_array, const char *str, size_t len)
{
	VisitCheck *v = arg;
	bool		container = (event == TJ_OBJECT_START || event == TJ_ARRAY_START);
	bool		end = (event == TJ_OBJECT_END || event == TJ_ARRAY_END);

	v->events++;
	if (str != NULL && strlen(str) != len)
		v->bad = true;
	if (event == TJ_KEY)
	{
		if (v->depth == 0 || v->is_array[v->depth] || v->want_value || str == NULL)
			v->bad = true;
		v->want_value = true;
		v->keys++;
		return;
	}
	if (end)
	{
		if (v->depth == 0 || v->want_value ||
			v->is_array[v->depth] != (event == TJ_ARRAY_END))
			v->bad = true;
		else
			v->depth--;
		if (in_array != (v->depth > 0 && v->is_array[v->depth]))
			v->bad = true;
		return;
	}
	/* a value: an element, a member's value, or the top level */
	if (v->depth > 0 && !v->is_array[v->depth] && !v->want_value)
		v->bad = true;
	if (in_array != (v->depth > 0 && v->is_array[v->depth]))
		v->bad = true;
	v->want_value = false;
	if (container)
	{
		if (v->depth > TOKEN_PAYLOAD_MAX_DEPTH)
			v->bad = true;
		else
			v->is_array[++v->depth] = (event == TJ_ARRAY_START);
		if (event == TJ_ARRAY_START)
			v->arrays++;
		else
			v->objects++;
	}
	else if (event == TJ_STRING)
		v->strings += (str != NULL) ? 1 : (v->bad = true, 0);
	else if (event == TJ_NUMBER)
		v->numbers += (str != NULL) ? 1 : (v->bad = true, 0);
	else
		v->literals++;
}

/* What jansson counts in a value, in VisitCheck's terms. */
static void
count_jansson(json_t *j, VisitCheck *c)
{
	const char *key;
	json_t	   *item;
	size_t		i;

	switch (json_typeof(j))
	{
		case JSON_OBJECT:
			c->objects++;
			json_object_foreach(j, key, item)
			{
				c->keys++;
				count_jansson(item, c);
			}
			break;
		case JSON_ARRAY:
			c->arrays++;
			json_array_foreach(j, i, item)
				count_jansson(item, c);
			break;
		case JSON_STRING:
			c->strings++;
			break;
		case JSON_INTEGER:
		case JSON_REAL:
			c->numbers++;
			break;
		default:
			c->literals++;
			break;
	}
}

/* The top-level integer claim `name` as jansson reads it against ours. */
static void
check_int_claim(json_t *j, const char *name, bool has, bool ok, int64_t value)
{
	json_t	   *v = json_object_get(j, name);

	CHECK(has == (v != NULL));
	CHECK(ok == json_is_integer(v));
	if (ok)
		CHECK(value == (int64_t) json_integer_value(v));
}

static void
check_str_claim(json_t *j, const char *name, const char *ours)
{
	json_t	   *v = json_object_get(j, name);

	if (!json_is_string(v))
		CHECK(ours == NULL);
	else
		CHECK(ours != NULL && strlen(ours) == json_string_length(v) &&
			  strcmp(ours, json_string_value(v)) == 0);
}

/* What a TOKEN_OK verification must have produced. */
static void
check_ok_claims(const char *token, size_t len, const TokenAccessClaims *c)
{
	size_t		sublen = strnlen(c->sub, sizeof(c->sub));

	CHECK(len <= TOKEN_MAX_LENGTH);
	CHECK(count_dots(token, len) == 2);
	CHECK(c->payload_len > 0 && c->payload_len <= TOKEN_MAX_LENGTH);
	CHECK(sublen < sizeof(c->sub));
	/* sub may hold an escaped NUL, so only the upper bound is exact */
	CHECK(sublen <= TOKEN_SUB_MAX_LENGTH);
}

/*
 * The verified-token cache: a verification through it (a miss, then, for a
 * token that passed, two hits) says what the uncached one said.  As the
 * backend does, this attaches to an entry at its first hit, which decodes
 * and parses the payload again; the hit after it hands back the attachment.
 */
static void
check_cache(const char *token, size_t len, const TokenAccessClaims *plain,
			TokenStatus expected)
{
	static TokenAccessClaims c;
	static const char blob[] = "attached";
	TokenVerifyParams p;

	for (int round = 0; round < 3; round++)
	{
		TokenStatus st;

		VisitCheck vc;

		memset(&vc, 0, sizeof(vc));
		params_init(&p, true);
		p.use_cache = true;
		p.visitor = &(TokenJsonVisitor) {check_visit, &vc};
		st = token_verify_access(token, len, &p, &c);
		CHECK(st == expected);
		if (st != TOKEN_OK)
		{
			CHECK(c.parsed.owned == NULL && c.cached_blob == NULL);
			continue;
		}
		CHECK(c.has_hash);
		CHECK(c.exp == plain->exp);
		CHECK(strcmp(c.sub, plain->sub) == 0);
		CHECK(memcmp(c.session_id, plain->session_id, TOKEN_UUID_LENGTH) == 0);
		if (c.cached_blob != NULL)
		{
			/*
			 * a hit (this round's, or an earlier input's): the attachment,
			 * and no payload decoded, since the attachment is all a caller
			 * with a visitor needs
			 */
			CHECK(c.payload_len == 0 && plain->payload_len <= 1024 &&
				  c.parsed.owned == NULL && vc.events == 0);
			CHECK(c.cached_blob_len == sizeof(blob) &&
				  memcmp(c.cached_blob, blob, sizeof(blob)) == 0);
		}
		else
		{
			/*
			 * a miss, a first hit (nothing attached yet), or a payload too
			 * big to cache: the payload decoded and parsed
			 */
			CHECK(c.payload_len == plain->payload_len &&
				  memcmp(c.payload, plain->payload, c.payload_len) == 0);
			CHECK(round == 0 || c.cache_hit || c.payload_len > 1024);
			CHECK(round < 2 || c.payload_len > 1024);
			CHECK(c.parsed.owned != NULL && vc.events > 0 && vc.depth == 0 && !vc.bad);
			token_payload_release(&c.parsed);
			if (c.cache_hit)
				token_cache_attach(c.hash, blob, sizeof(blob));
		}
	}
}

/*
 * Verifies with and without time checks and checks what the two outcomes
 * must have in common.  Returns the check_times = true outcome.
 */
static TokenStatus
verify_both(const char *token, size_t len, TokenAccessClaims *claims,
			TokenStatus *untimed)
{
	TokenVerifyParams p;
	TokenStatus timed,
				plain;

	params_init(&p, true);
	timed = token_verify_access(token, len, &p, claims);
	CHECK(status_valid(timed));
	CHECK(claims->parsed.owned == NULL);	/* no visitor: released inside */
	if (timed == TOKEN_OK)
	{
		check_ok_claims(token, len, claims);
		CHECK(claims->exp > FUZZ_NOW - p.leeway);
	}

	check_cache(token, len, claims, timed);

	params_init(&p, false);
	plain = token_verify_access(token, len, &p, claims);
	CHECK(status_valid(plain));
	CHECK(claims->parsed.owned == NULL);
	if (plain == TOKEN_OK)
	{
		check_ok_claims(token, len, claims);
		CHECK(timed == TOKEN_OK || timed == TOKEN_EXPIRED ||
			  timed == TOKEN_NOT_YET_VALID);
	}
	else
		CHECK(timed == plain);
	if (plain == TOKEN_OK)
		CHECK(token_is_ours(token, len, FUZZ_ISSUER));

	if (len > 0 && len <= TOKEN_MAX_LENGTH && token_looks_like_refresh(token, len))
		CHECK(timed == TOKEN_WRONG_TOKEN_TYPE);
	if (untimed)
		*untimed = plain;
	return timed;
}

/* Only the check_times = true outcome: half the cost of verify_both(). */
static TokenStatus
verify_timed(const char *token, size_t len, TokenAccessClaims *claims)
{
	TokenVerifyParams p;
	TokenStatus st;

	params_init(&p, true);
	st = token_verify_access(token, len, &p, claims);
	CHECK(status_valid(st));
	CHECK(claims->parsed.owned == NULL);
	if (st == TOKEN_OK)
	{
		check_ok_claims(token, len, claims);
		CHECK(claims->exp > FUZZ_NOW - p.leeway);
	}
	return st;
}

/* ---------------------------------------------------------------------
 * A. the input as a token
 * ---------------------------------------------------------------------
 */

static TokenAccessClaims claims_buf;

static void
fuzz_as_token(const uint8_t *data, size_t size)
{
	const char *tok = (const char *) data;
	bool		looks = token_looks_like_refresh(tok, size);
	bool		well = token_refresh_well_formed(tok, size);

	bool		ours = token_is_ours(tok, size, FUZZ_ISSUER);

	(void) verify_both(tok, size, &claims_buf, NULL);
	if (ours)
		CHECK(size <= TOKEN_MAX_LENGTH && count_dots(tok, size) >= 2);

	/* API keys: well-formed only at their length, and round-tripping */
	{
		unsigned char kid[TOKEN_UUID_LENGTH];
		char		again[API_KEY_LENGTH + 1];

		if (token_api_key_session(tok, size, kid))
		{
			CHECK(size == API_KEY_LENGTH && token_looks_like_api_key(tok, size));
			CHECK(token_make_api_key(kid, again));
			CHECK(memcmp(again, tok, API_KEY_PREFIX_LENGTH + REFRESH_TOKEN_SID_LENGTH) == 0);
		}
	}
	CHECK(looks == (size >= REFRESH_TOKEN_PREFIX_LENGTH &&
					memcmp(tok, REFRESH_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX_LENGTH) == 0));
	if (well)
	{
		unsigned char sid[TOKEN_UUID_LENGTH];
		char		again[REFRESH_TOKEN_LENGTH + 1];

		CHECK(size == REFRESH_TOKEN_LENGTH || size == REFRESH_TOKEN_LEGACY_LENGTH);
		CHECK(looks);
		/*
		 * A session id read from a token is the one a token made for it
		 * carries: the same 22 characters.
		 */
		if (token_refresh_session(tok, size, sid))
		{
			CHECK(size == REFRESH_TOKEN_LENGTH);
			CHECK(token_make_refresh(sid, again));
			CHECK(memcmp(again, tok, REFRESH_TOKEN_PREFIX_LENGTH + REFRESH_TOKEN_SID_LENGTH) == 0);
		}
		for (size_t i = REFRESH_TOKEN_PREFIX_LENGTH; i < size; i++)
			CHECK(strchr(base62_alphabet, tok[i]) != NULL && tok[i] != '\0');
	}
}

/* ---------------------------------------------------------------------
 * Refresh tokens we make ourselves
 * ---------------------------------------------------------------------
 */

static void
fuzz_make_refresh(const uint8_t *data, size_t size)
{
	char		rt[REFRESH_TOKEN_LENGTH + 1];
	unsigned char sid[TOKEN_UUID_LENGTH] = {0};
	unsigned char back[TOKEN_UUID_LENGTH];
	char		c;
	int			pos;

	memcpy(sid, data, size < sizeof(sid) ? size : sizeof(sid));
	CHECK(token_make_refresh(sid, rt));
	/* the session id comes back out, whatever its bits */
	CHECK(token_refresh_session(rt, REFRESH_TOKEN_LENGTH, back));
	CHECK(memcmp(back, sid, TOKEN_UUID_LENGTH) == 0);
	{
		char		key[API_KEY_LENGTH + 1];

		CHECK(token_make_api_key(sid, key));
		CHECK(token_api_key_session(key, API_KEY_LENGTH, back));
		CHECK(memcmp(back, sid, TOKEN_UUID_LENGTH) == 0);
		/* a key is never a refresh token, nor a refresh token a key */
		CHECK(!token_refresh_well_formed(key, API_KEY_LENGTH));
		CHECK(!token_api_key_session(rt, REFRESH_TOKEN_LENGTH, back));
	}
	CHECK(strlen(rt) == REFRESH_TOKEN_LENGTH);
	CHECK(token_refresh_well_formed(rt, REFRESH_TOKEN_LENGTH));
	CHECK(token_looks_like_refresh(rt, REFRESH_TOKEN_LENGTH));
	/* Never mistaken for an access token. */
	{
		TokenVerifyParams p;

		params_init(&p, true);
		CHECK(token_verify_access(rt, REFRESH_TOKEN_LENGTH, &p, &claims_buf) ==
			  TOKEN_WRONG_TOKEN_TYPE);
	}
	/* Any other checksum character is refused. */
	pos = REFRESH_TOKEN_LENGTH - REFRESH_TOKEN_CHECKSUM_LENGTH +
		(size > 0 ? data[0] % REFRESH_TOKEN_CHECKSUM_LENGTH : 0);
	c = base62_alphabet[size > 1 ? data[1] % 62 : 0];
	if (c == rt[pos])
		c = base62_alphabet[(strchr(base62_alphabet, c) - base62_alphabet + 1) % 62];
	rt[pos] = c;
	CHECK(!token_refresh_well_formed(rt, REFRESH_TOKEN_LENGTH));
	/* A prefix of it, or it with one more character, is not well-formed. */
	CHECK(!token_refresh_well_formed(rt, REFRESH_TOKEN_LENGTH - 1));
}

/* ---------------------------------------------------------------------
 * B. the input as JSON text
 * ---------------------------------------------------------------------
 */

static void
fuzz_json_member(const uint8_t *data, size_t size)
{
	static const char *const keys[] = {"sub", "alg", "typ", "", "a"};
	static const size_t sizes[] = {0, 1, 8, 300};
	char	   *text = malloc(size + 1);
	const uint8_t *sel = size > 0 ? data : (const uint8_t *) "";

	CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
	{
		size_t		outsize = sizes[(sel[0] + k) % (sizeof(sizes) / sizeof(sizes[0]))];
		/* exactly outsize bytes, so that ASan sees any overrun */
		char	   *out = malloc(outsize > 0 ? outsize : 1);
		int			r;

		CHECK(out != NULL);
		r = token_json_string_member(text, keys[k], out, outsize);
		CHECK(r == -1 || r == 0 || r == 1);
		if (r == 1)
		{
			CHECK(outsize > 0);
			CHECK(strnlen(out, outsize) < outsize);
		}
		free(out);
	}
	free(text);
}

/* ---------------------------------------------------------------------
 * C. the input as base64url text
 * ---------------------------------------------------------------------
 */

static unsigned char b64_out[TOKEN_MAX_LENGTH];
static char b64_again[TOKEN_MAX_LENGTH * 2];

static void
fuzz_b64(const uint8_t *data, size_t size)
{
	long		n;

	if (size > TOKEN_MAX_LENGTH)
		return;
	n = b64url_decode((const char *) data, size, b64_out);
	if (n < 0)
		return;
	CHECK((size_t) n == size * 3 / 4);
	CHECK(b64url_encode(b64_out, (size_t) n, b64_again) == size);
	CHECK(memcmp(b64_again, data, size) == 0);
}

/* ---------------------------------------------------------------------
 * D. correctly signed tokens around fuzzed parts
 * ---------------------------------------------------------------------
 */

static char tokbuf[TOKEN_MAX_LENGTH * 2 + 128];

/* Appends ".<HMAC of tokbuf[0..len)>" and returns the new length. */
static size_t
append_signature(size_t len, const unsigned char *key, size_t keylen)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	CHECK(HMAC(EVP_sha256(), key, (int) keylen, (const unsigned char *) tokbuf,
			   len, mac, &maclen) != NULL && maclen == 32);
	tokbuf[len++] = '.';
	return len + b64url_encode(mac, 32, tokbuf + len);
}

static void
fuzz_resigned(const uint8_t *data, size_t size)
{
	static const char good_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	static const char good_payload[] =
	"{\"iss\":\"" FUZZ_ISSUER "\",\"aud\":\"" FUZZ_AUDIENCE "\","
	"\"sub\":\"00000000-0000-4000-8000-000000000001\","
	"\"session_id\":\"00000000-0000-4000-8000-000000000002\","
	"\"jti\":\"00000000-0000-4000-8000-000000000003\",\"type\":\"access\","
	"\"iat\":1699999000,\"exp\":1700003600}";
	const char *s = (const char *) data;
	const char *d2;
	size_t		len;
	TokenStatus st,
				untimed;

	/* D1: the input's own header and payload, our signature. */
	d2 = count_dots(s, size) == 2 ? memrchr(s, '.', size) : NULL;
	if (d2 != NULL && (size_t) (d2 - s) + 1 + 43 <= TOKEN_MAX_LENGTH &&
		!token_looks_like_refresh(s, size))
	{
		len = (size_t) (d2 - s);
		memcpy(tokbuf, s, len);
		len = append_signature(len, fuzz_key, sizeof(fuzz_key));
		st = verify_timed(tokbuf, len, &claims_buf);
		if (st == TOKEN_INVALID_SIGNATURE)
		{
			const char *d1 = memchr(s, '.', size);
			long		n = b64url_decode(s, (size_t) (d1 - s), b64_out);

			CHECK(n > 0 && header_names_other_key(b64_out, (size_t) n));
		}
	}

	/* D2: the input as the payload JSON. */
	if (size > 0 && b64url_encoded_length(size) + 43 + 40 + 2 <= TOKEN_MAX_LENGTH)
	{
		len = b64url_encode((const unsigned char *) good_header,
							sizeof(good_header) - 1, tokbuf);
		tokbuf[len++] = '.';
		len += b64url_encode(data, size, tokbuf + len);
		len = append_signature(len, fuzz_key, sizeof(fuzz_key));
		st = verify_both(tokbuf, len, &claims_buf, &untimed);
		CHECK(st != TOKEN_INVALID_SIGNATURE && st != TOKEN_UNSUPPORTED_ALGORITHM &&
			  st != TOKEN_MISSING);
		CHECK(token_is_ours(tokbuf, len, FUZZ_ISSUER) ==
			  payload_is_ours(data, size, FUZZ_ISSUER));
		if (untimed == TOKEN_OK)
		{
			CHECK(claims_buf.payload_len == size);
			CHECK(memcmp(claims_buf.payload, data, size) == 0);
		}
	}

	/* D3: the input as the header JSON, over a payload that is fine. */
	if (size > 0 && b64url_encoded_length(size) + 43 + 400 <= TOKEN_MAX_LENGTH)
	{
		json_error_t jerr;
		json_t	   *h;
		bool		hs256 = false;

		len = b64url_encode(data, size, tokbuf);
		tokbuf[len++] = '.';
		len += b64url_encode((const unsigned char *) good_payload,
							 sizeof(good_payload) - 1, tokbuf + len);
		len = append_signature(len, fuzz_key, sizeof(fuzz_key));
		st = verify_timed(tokbuf, len, &claims_buf);
		CHECK(st == TOKEN_OK || st == TOKEN_MALFORMED ||
			  st == TOKEN_UNSUPPORTED_ALGORITHM ||
			  (st == TOKEN_INVALID_SIGNATURE && header_names_other_key(data, size)));
		/* An independent look at "alg": OK needs exactly "HS256". */
		h = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES, &jerr);
		if (h != NULL)
		{
			json_t	   *alg = json_is_object(h) ? json_object_get(h, "alg") : NULL;

			hs256 = json_is_string(alg) && json_string_length(alg) == 5 &&
				memcmp(json_string_value(alg), "HS256", 5) == 0;
			if (st == TOKEN_OK)
				CHECK(json_object_get(h, "crit") == NULL);
			json_decref(h);
		}
		if (st == TOKEN_OK)
			CHECK(hs256);
		if (st == TOKEN_UNSUPPORTED_ALGORITHM)
			CHECK(!hs256);
	}
}

/* ---------------------------------------------------------------------
 * E. sign, then verify
 * ---------------------------------------------------------------------
 */

static const struct
{
	const char *iss;
	const char *aud;
}			iss_aud[] = {
	{FUZZ_ISSUER, FUZZ_AUDIENCE},
	{"", ""},
	{"issuer \"quoted\" \\ /", "aud\xc3\xbc\t"},
	{"x", "a,b"},
};

#define SUB_255 \
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

static const struct
{
	const char *sub;
	bool		ok;				/* within what verification accepts */
}			subs[] = {
	{"6f1c1a52-2b1e-4d3a-9a55-0c7a3a8f9e01", true},
	{"a", true},
	{SUB_255, true},
	{"\xc3\xbc\"\\/\t\x01", true},
	{"", false},
	{SUB_255 "x", false},
};

static const char *const roles[] = {"authenticated", "anon", "web \"user\"\\"};

/*
 * Whether these extra claims are what src/extension_tokens.c would sign;
 * *object says whether jansson reads them as an object at all.
 */
static bool
extras_in_contract(const char *json, size_t len, bool *object)
{
	json_error_t jerr;
	json_t	   *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *k;
	json_t	   *v;
	bool		ok = len <= FUZZ_MAX_CLAIMS_LENGTH;

	*object = o != NULL && json_is_object(o);
	if (!*object)
		ok = false;
	else
		json_object_foreach(o, k, v)
		{
			if (token_is_reserved_claim(k))
				ok = false;
		}
	json_decref(o);
	return ok;
}

static void
fuzz_sign_roundtrip(const uint8_t *data, size_t size)
{
	TokenAccessSpec spec;
	TokenVerifyParams p;
	unsigned char sid[TOKEN_UUID_LENGTH];
	const char *errmsg = NULL;
	char	   *jwt;
	size_t		len;
	int			si;
	bool		with_extras;
	bool		contract;
	bool		object = true;
	uint8_t		tmode;
	int64_t		k;
	TokenStatus want_timed;
	TokenStatus st;

	if (size < 4)
		return;
	memset(&spec, 0, sizeof(spec));
	spec.issuer = iss_aud[data[0] % 4].iss;
	spec.audience = iss_aud[data[0] % 4].aud;
	si = data[1] % (int) (sizeof(subs) / sizeof(subs[0]));
	spec.sub = subs[si].sub;
	for (int i = 0; i < TOKEN_UUID_LENGTH; i++)
		sid[i] = (unsigned char) (0x11 * i) ^ data[i % 4];
	spec.session_id = sid;

	/* Times: the leeway below is 0, so the boundaries are exact. */
	tmode = data[2] & 3;
	k = data[2] >> 2;
	switch (tmode)
	{
		case 0:					/* live */
			spec.iat = FUZZ_NOW - k;
			spec.exp = FUZZ_NOW + 1 + k * 37;
			want_timed = TOKEN_OK;
			break;
		case 1:					/* dead at or before now */
			spec.iat = FUZZ_NOW - 100000;
			spec.exp = FUZZ_NOW - k * 1000;
			want_timed = TOKEN_EXPIRED;
			break;
		case 2:					/* issued in the future */
			spec.iat = FUZZ_NOW + 1 + k;
			spec.exp = FUZZ_NOW + 100000;
			want_timed = TOKEN_NOT_YET_VALID;
			break;
		default:				/* extremes */
			spec.iat = (data[2] & 4) ? INT64_MIN : FUZZ_NOW;
			spec.exp = INT64_MAX;
			want_timed = TOKEN_OK;
			break;
	}

	spec.with_kid = (data[3] & 2) != 0;
	if (data[3] & 0x10)
		spec.role = roles[(data[0] >> 2) % 3];
	with_extras = !(data[3] & 1);
	if (with_extras)
	{
		spec.extra_claims_json = (const char *) data + 4;
		spec.extra_claims_len = size - 4;
	}
	contract = !with_extras || extras_in_contract(spec.extra_claims_json,
												  spec.extra_claims_len, &object);

	jwt = token_sign_access(&spec, fuzz_key, sizeof(fuzz_key), &errmsg);
	/* Extra claims that are no JSON object are refused as such. */
	if (!object)
		CHECK(jwt == NULL && errmsg == token_bad_claims);
	if (jwt == NULL)
	{
		CHECK(errmsg != NULL);
		/* Within the contract, only a token too long may be refused. */
		if (contract)
		{
			if (errmsg != token_too_long)
				fprintf(stderr, "fuzz_token: signing failed: %s\n", errmsg);
			CHECK(errmsg == token_too_long);
		}
		return;
	}
	CHECK(errmsg == NULL);
	len = strlen(jwt);
	CHECK(len <= TOKEN_MAX_LENGTH);
	CHECK(count_dots(jwt, len) == 2);
	CHECK(token_is_ours(jwt, len, spec.issuer));

	/* Without the contract, only "no crash, a sane status". */
	memset(&p, 0, sizeof(p));
	p.key = fuzz_key;
	p.keylen = sizeof(fuzz_key);
	p.issuer = spec.issuer;
	p.audience = spec.audience;
	p.now = FUZZ_NOW;
	p.leeway = 0;
	p.check_times = true;
	st = token_verify_access(jwt, len, &p, &claims_buf);
	CHECK(status_valid(st));

	if (contract)
	{
		TokenStatus want = subs[si].ok ? want_timed : TOKEN_MALFORMED;

		if (st != want)
			fprintf(stderr, "fuzz_token: round trip: %s (token of %zu bytes), "
					"expected %s\n",
					st == TOKEN_OK ? "ok" : token_status_name(st), len,
					want == TOKEN_OK ? "ok" : token_status_name(want));
		CHECK(st == want);
		if (st == TOKEN_OK)
		{
			check_ok_claims(jwt, len, &claims_buf);
			CHECK(strcmp(claims_buf.sub, spec.sub) == 0);
			CHECK(claims_buf.exp == spec.exp);
			CHECK(memcmp(claims_buf.session_id, sid, TOKEN_UUID_LENGTH) == 0);
			/* "role" is what was asked for, or absent. */
			{
				json_error_t jerr;
				json_t	   *pl = json_loadb(claims_buf.payload, claims_buf.payload_len,
											JSON_REJECT_DUPLICATES, &jerr);
				json_t	   *role;

				CHECK(pl != NULL);
				role = json_object_get(pl, "role");
				if (spec.role == NULL)
					CHECK(role == NULL);
				else
					CHECK(json_is_string(role) &&
						  strcmp(json_string_value(role), spec.role) == 0);
				json_decref(pl);
			}
		}

		p.check_times = false;
		st = token_verify_access(jwt, len, &p, &claims_buf);
		CHECK(st == (subs[si].ok ? TOKEN_OK : TOKEN_MALFORMED));

		/*
		 * The negative checks cost 7 more verifications (HMAC and key id
		 * each, which in OpenSSL 3 are slow): one input in four.
		 */
		if (subs[si].ok && (data[3] & 0x0c) == 0)
		{
			/* The wrong key, issuer or audience. */
			p.key = other_key;
			CHECK(token_verify_access(jwt, len, &p, &claims_buf) ==
				  TOKEN_INVALID_SIGNATURE);
			/* Key rotation: the signing key is now the previous one. */
			p.prev_key = fuzz_key;
			p.prev_keylen = sizeof(fuzz_key);
			CHECK(token_verify_access(jwt, len, &p, &claims_buf) == TOKEN_OK);
			/* ... and still the current one, with another previous key. */
			p.key = fuzz_key;
			p.prev_key = other_key;
			CHECK(token_verify_access(jwt, len, &p, &claims_buf) == TOKEN_OK);
			p.prev_key = NULL;
			p.prev_keylen = 0;
			p.key = fuzz_key;
			p.issuer = "https://other.example";
			CHECK(token_verify_access(jwt, len, &p, &claims_buf) ==
				  TOKEN_WRONG_ISSUER);
			p.issuer = spec.issuer;
			p.audience = "other-audience";
			CHECK(token_verify_access(jwt, len, &p, &claims_buf) ==
				  TOKEN_WRONG_AUDIENCE);
			p.audience = spec.audience;

			/* No signature: "h.p." */
			CHECK(token_verify_access(jwt, (size_t) (strrchr(jwt, '.') - jwt) + 1,
									  &p, &claims_buf) == TOKEN_INVALID_SIGNATURE);

			/* One character of the payload or signature changed. */
			{
				size_t		pos = (size > 4 ? data[4] : 0) % len;
				char		saved = jwt[pos];

				if (jwt[pos] != '.')
				{
					jwt[pos] = (jwt[pos] == 'A') ? 'B' : 'A';
					CHECK(token_verify_access(jwt, len, &p, &claims_buf) != TOKEN_OK);
					jwt[pos] = saved;
				}
			}
		}
	}
	OPENSSL_cleanse(jwt, len);
	free(jwt);
}

/* ---------------------------------------------------------------------
 * Entry point
 * ---------------------------------------------------------------------
 */

/*
 * request.jwt.claims as PostgREST hands them on (1.2's pre_request decides
 * on them): any input is classified without a crash or an overrun, and
 * "ours" only with what ours always carry; user codes as a person types
 * them normalise to 8 letters of the alphabet or are refused; a sealed
 * box opens with its token only.
 */
static void
fuzz_request_claims(const uint8_t *data, size_t size)
{
	TokenRequestClaims rc;
	TokenClaimsKind kind = token_request_claims((const char *) data, size, &rc);
	char		code[USER_CODE_LETTERS + 1];

	CHECK(kind == TOKEN_CLAIMS_FOREIGN || kind == TOKEN_CLAIMS_OURS ||
		  kind == TOKEN_CLAIMS_UNREADABLE);
	if (kind == TOKEN_CLAIMS_OURS)
	{
		size_t		n = strnlen(rc.sub, sizeof(rc.sub));

		CHECK(n > 0 && n <= TOKEN_SUB_MAX_LENGTH);
	}
	if (token_normalize_user_code((const char *) data, size, code))
	{
		CHECK(strlen(code) == USER_CODE_LETTERS);
		for (int i = 0; i < USER_CODE_LETTERS; i++)
			CHECK(strchr("BCDFGHJKLMNPQRSTVWXZ", code[i]) != NULL);
	}
	if (size >= 1 && size <= 512)
	{
		static const unsigned char aad[16] = {1};
		static const unsigned char server[] = "server key";
		static const unsigned char other[] = "server kez";
		unsigned char *box = malloc(size + TOKEN_SEAL_OVERHEAD);
		unsigned char *plain = malloc(size);

		CHECK(box != NULL && plain != NULL);
		CHECK(token_seal(server, 10, "opener", 6, aad, sizeof(aad), data, size, box));
		CHECK(token_unseal(server, 10, "opener", 6, aad, sizeof(aad), box, size + TOKEN_SEAL_OVERHEAD, plain));
		CHECK(memcmp(plain, data, size) == 0);
		CHECK(!token_unseal(server, 10, "openes", 6, aad, sizeof(aad), box, size + TOKEN_SEAL_OVERHEAD, plain));
		/* the opener alone (a dump and an old refresh token) does not open it */
		CHECK(!token_unseal(other, 10, "opener", 6, aad, sizeof(aad), box, size + TOKEN_SEAL_OVERHEAD, plain));
		/* the input itself as a sealed box: never opens, never overruns */
		if (size >= TOKEN_SEAL_OVERHEAD)
			CHECK(!token_unseal(server, 10, "opener", 6, aad, sizeof(aad), data, size, plain));
		free(box);
		free(plain);
	}
}

/* ---------------------------------------------------------------------
 * F. the input as a payload for token_payload_parse(), against jansson
 * ---------------------------------------------------------------------
 *
 * Whatever jansson (duplicate keys refused) reads as an object, ours
 * accepts (unless it holds a NUL byte, which jansson skips, or an exponent,
 * whose underflow jansson takes as 0) with the same shape (counts of keys, strings, numbers, literals,
 * objects, arrays) and the same registered claims; what ours accepts and
 * jansson does not holds a real (jansson refuses those beyond a double).
 */
/* Whether the text holds a digit, then e or E, a sign or not, a digit. */
static bool
has_exponent(const uint8_t *data, size_t size)
{
	for (size_t i = 1; i + 1 < size; i++)
		if ((data[i] == 'e' || data[i] == 'E') && data[i - 1] >= '0' && data[i - 1] <= '9')
		{
			size_t		j = i + 1;

			if (data[j] == '+' || data[j] == '-')
				j++;
			if (j < size && data[j] >= '0' && data[j] <= '9')
				return true;
		}
	return false;
}

static void
fuzz_payload_parse(const uint8_t *data, size_t size)
{
	TokenPayload p;
	VisitCheck	v,
				jc;
	json_error_t jerr;
	json_t	   *j;
	bool		ours,
				theirs;

	if (size > TOKEN_MAX_LENGTH)
		return;
	arena_flush();
	memset(&v, 0, sizeof(v));
	ours = token_payload_parse((const char *) data, size, FUZZ_AUDIENCE,
							   check_visit, &v, &p);
	j = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES, &jerr);
	theirs = (j != NULL && json_is_object(j));
	if (ours)
	{
		CHECK(!v.bad && v.depth == 0 && !v.want_value && v.objects > 0);
		CHECK(theirs || memchr(data, '.', size) || memchr(data, 'e', size) ||
			  memchr(data, 'E', size));
	}
	/*
	 * A NUL byte: jansson reads over it between tokens, we refuse it.  An
	 * exponent of 1000 or more: jansson takes an underflow as 0, we refuse
	 * it (no issuer of ours prints one: reals go out with 17 digits).
	 */
	if (theirs && memchr(data, 0, size) == NULL && !has_exponent(data, size))
	{
		CHECK(ours);
		memset(&jc, 0, sizeof(jc));
		count_jansson(j, &jc);
		CHECK(jc.keys == v.keys && jc.strings == v.strings && jc.numbers == v.numbers &&
			  jc.literals == v.literals && jc.objects == v.objects && jc.arrays == v.arrays);
		check_int_claim(j, "exp", p.has_exp, p.exp_ok, p.exp);
		check_int_claim(j, "nbf", p.has_nbf, p.nbf_ok, p.nbf);
		check_int_claim(j, "iat", p.has_iat, p.iat_ok, p.iat);
		check_str_claim(j, "sub", p.sub);
		check_str_claim(j, "session_id", p.session_id);
		check_str_claim(j, "jti", p.jti);
		check_str_claim(j, "iss", p.iss);
		check_str_claim(j, "type", p.type);
		CHECK(p.has_aud == (json_object_get(j, "aud") != NULL));
		{
			json_t	   *aud = json_object_get(j, "aud");
			bool		match = false;
			size_t		i;
			json_t	   *item;

			if (json_is_string(aud))
				match = strcmp(json_string_value(aud), FUZZ_AUDIENCE) == 0;
			else if (json_is_array(aud))
				json_array_foreach(aud, i, item)
					if (json_is_string(item) && strcmp(json_string_value(item), FUZZ_AUDIENCE) == 0)
					match = true;
			CHECK(p.aud_matches == match);
		}
	}
	/* released, an accepted parse leaves nothing allocated */
	token_payload_release(&p);
	CHECK(!ours || arena_n == 0);
	arena_flush();
	/* without a visitor: the same verdict */
	CHECK(token_payload_parse((const char *) data, size, NULL, NULL, NULL, &p) == ours);
	token_payload_release(&p);
	CHECK(p.owned == NULL);
	CHECK(!ours || arena_n == 0);
	arena_flush();
	if (j != NULL)
		json_decref(j);
}

#ifndef FUZZ_PAYLOAD_ONLY		/* fuzz/fuzz_payload.c: F alone */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_as_token(data, size);
	fuzz_make_refresh(data, size);
	fuzz_json_member(data, size);
	fuzz_b64(data, size);
	fuzz_resigned(data, size);
	fuzz_sign_roundtrip(data, size);
	fuzz_request_claims(data, size);
	fuzz_payload_parse(data, size);
	arena_flush();
	return 0;
}
#endif
