/*-------------------------------------------------------------------------
 *
 * token.h
 *	  Token format and cryptography: building, parsing and verifying access
 *	  tokens (JWS: HS256, ES256 or EdDSA) and refresh tokens (opaque,
 *	  checksummed).
 *
 * Nothing declared here touches the database, allocates with palloc or
 * raises errors: every function reports through its return value, and
 * everything a library allocated is released before it returns.  That keeps
 * the token core usable from a unit test or a fuzzer on its own, and makes it
 * safe to call from code that may ereport() afterwards.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_TOKEN_H
#define EXTENSION_TOKENS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nothing longer than this is looked at: libjwt alloca()s token lengths. */
#define TOKEN_MAX_LENGTH		8192
/* Shortest accepted HS256 secret, in bytes (RFC 7518 3.2). */
#define TOKEN_SECRET_MIN_LENGTH	32
#define TOKEN_HASH_LENGTH		32
#define TOKEN_UUID_LENGTH		16
/* Longest `sub` we accept in a token we verify. */
#define TOKEN_SUB_MAX_LENGTH	255

/*
 * Refresh tokens: "ext_rt_" + 22 base62 characters of the session id (its
 * 128 bits as one number, most significant digit first) + 43 base62
 * characters (256 random bits) + 6 base62 characters of checksum (the first
 * 32 bits of SHA-256 over everything before it), 78 characters in all.  The
 * session id lets refresh find the session by its primary key: no index on
 * the refresh token's hash, which every refresh would have to move.
 *
 * Refresh tokens made before 1.2 ("legacy") have no session id: "ext_rt_" +
 * 43 + 6, 56 characters, the same checksum.  They are still accepted.
 */
#define REFRESH_TOKEN_PREFIX	"ext_rt_"
#define REFRESH_TOKEN_PREFIX_LENGTH 7
#define REFRESH_TOKEN_SID_LENGTH 22
#define REFRESH_TOKEN_RANDOM_LENGTH 43
#define REFRESH_TOKEN_CHECKSUM_LENGTH 6
#define REFRESH_TOKEN_LENGTH \
	(REFRESH_TOKEN_PREFIX_LENGTH + REFRESH_TOKEN_SID_LENGTH + \
	 REFRESH_TOKEN_RANDOM_LENGTH + REFRESH_TOKEN_CHECKSUM_LENGTH)
#define REFRESH_TOKEN_LEGACY_LENGTH \
	(REFRESH_TOKEN_PREFIX_LENGTH + REFRESH_TOKEN_RANDOM_LENGTH + \
	 REFRESH_TOKEN_CHECKSUM_LENGTH)

/*
 * Verification outcomes.  The names of the failures are public API: they are
 * what extension_token_validate() reports in its `error` column (see
 * token_status_name()).
 */
typedef enum TokenStatus
{
	TOKEN_OK = 0,
	TOKEN_MISSING,
	TOKEN_MALFORMED,
	TOKEN_INVALID_SIGNATURE,
	TOKEN_UNSUPPORTED_ALGORITHM,
	TOKEN_EXPIRED,
	TOKEN_NOT_YET_VALID,
	TOKEN_WRONG_TOKEN_TYPE,
	TOKEN_WRONG_ISSUER,
	TOKEN_WRONG_AUDIENCE,
	TOKEN_NOT_FOUND,
	TOKEN_REVOKED,
	TOKEN_INSUFFICIENT_SCOPE,	/* 1.2: checked last, by the caller */
	TOKEN_STATUS_COUNT
} TokenStatus;

/* What an access token must satisfy besides its signature. */
/* A key id: hex of the first 8 bytes of SHA-256("extension_tokens kid:" || key). */
#define TOKEN_KID_LENGTH		16

/*
 * The signing algorithm (extension_tokens.signing_algorithm).  Under HS256
 * the keys below are secrets; under ES256 and EdDSA they are the PEM text of
 * private keys (token_keys.c), and key ids are RFC 7638 thumbprints:
 * base64url of a SHA-256, 43 characters.
 */
typedef enum TokenAlg
{
	TOKEN_ALG_HS256 = 0,
	TOKEN_ALG_ES256,
	TOKEN_ALG_EDDSA
} TokenAlg;

#define TOKEN_THUMBPRINT_LENGTH	43
/* The longest key id of any algorithm. */
#define TOKEN_KID_MAX_LENGTH	TOKEN_THUMBPRINT_LENGTH
/* An ES256 signature (R || S) and an Ed25519 one are both 64 bytes. */
#define TOKEN_ASYM_SIG_LENGTH	64
/* Room for one public JWK as JSON text. */
#define TOKEN_JWK_MAX_LENGTH	320

/*
 * The payload's parse (token_payload.c): PostgreSQL's JSON parser, one
 * pass, each value handed to a visitor as it is parsed: the events of a
 * depth-first walk, each value told whether it is an array element (else
 * an object member's value, after its key).  Strings are de-escaped, valid
 * UTF-8 without NUL, NUL-terminated; a number comes as its JSON text.
 */
typedef enum TokenJsonEvent
{
	TJ_OBJECT_START,
	TJ_OBJECT_END,
	TJ_ARRAY_START,
	TJ_ARRAY_END,
	TJ_KEY,
	TJ_STRING,
	TJ_NUMBER,
	TJ_TRUE,
	TJ_FALSE,
	TJ_NULL
} TokenJsonEvent;

typedef void (*TokenJsonVisit) (void *arg, TokenJsonEvent event, bool in_array,
								const char *str, size_t len);

typedef struct TokenJsonVisitor
{
	TokenJsonVisit visit;
	void	   *arg;
} TokenJsonVisitor;

/* As deep as jansson (the issuing side's parser) nests. */
#define TOKEN_PAYLOAD_MAX_DEPTH 2048

/*
 * What the parse found of the registered claims at the top level: for
 * exp, nbf and iat whether present and whether a 64-bit JSON integer; the
 * strings (NULL when absent or not a string); for aud, whether present and
 * whether it names the audience asked for.  The strings are among `owned`.
 */
typedef struct TokenPayload
{
	bool		has_exp,
				has_nbf,
				has_iat;
	bool		exp_ok,
				nbf_ok,
				iat_ok;
	int64_t		exp,
				nbf,
				iat;
	const char *sub;
	const char *session_id;
	const char *jti;
	const char *iss;
	const char *type;
	bool		has_aud;
	bool		aud_matches;
	void	  **owned;
	int			n_owned;
	int			owned_cap;
} TokenPayload;

/*
 * Parses `len` bytes of JSON: true when it is an object within the rules
 * at the top of token_payload.c; fills *out either way (release it).
 */
extern bool token_payload_parse(const char *json, size_t len, const char *audience,
								TokenJsonVisit visit, void *arg, TokenPayload *out);
extern void token_payload_release(TokenPayload *p);
/* A JSON number's text as an int64_t: false for a fraction, an exponent or beyond 64 bits. */
extern bool token_json_integer(const char *text, int64_t *value);

typedef struct TokenVerifyParams
{
	TokenAlg	alg;			/* the one algorithm accepted */
	const unsigned char *key;	/* the current signing key */
	size_t		keylen;
	const unsigned char *prev_key;	/* a key being retired, or NULL */
	size_t		prev_keylen;
	const char *issuer;			/* NULL: any (never with use_cache) */
	const char *audience;		/* NULL: any (never with use_cache) */
	int64_t		now;			/* seconds since the Unix epoch */
	int64_t		leeway;			/* seconds of clock skew tolerated */
	bool		check_times;	/* false: ignore exp/nbf/iat (refresh's
								 * p_current_token) */
	/*
	 * Non-NULL: every value of the payload is handed to
	 * visitor->visit(visitor->arg, ...) in the parse itself (see token_payload_parse), and on TOKEN_OK the
	 * strings it was given stay allocated until the caller's
	 * token_payload_release(&claims->parsed).
	 */
	struct TokenJsonVisitor *visitor;
	bool		use_cache;		/* consult and fill the verified-token cache */
} TokenVerifyParams;

/* What verification returns on success.  Caller-owned storage. */
typedef struct TokenAccessClaims
{
	char		payload[TOKEN_MAX_LENGTH];	/* the decoded payload, JSON */
	size_t		payload_len;
	char		sub[TOKEN_SUB_MAX_LENGTH + 1];
	unsigned char session_id[TOKEN_UUID_LENGTH];
	int64_t		exp;
	/* With a visitor and TOKEN_OK: the strings the visitor was given. */
	TokenPayload parsed;
	/* With use_cache: the SHA-256 of the token (the table's key for it). */
	bool		has_hash;
	bool		cache_hit;		/* answered by the verified-token cache */
	unsigned char hash[TOKEN_HASH_LENGTH];
	/*
	 * With a visitor, on a cache hit: what token_cache_attach() attached to
	 * the token, instead of a parse.  Owned by the cache: copy it before the
	 * next verification.
	 */
	const void *cached_blob;
	size_t		cached_blob_len;
	/*
	 * On a cache hit: what token_cache_note() noted of the token (the
	 * server's verdict of its session, see verdict.c), or NULL.  Owned by
	 * the cache, which lets the caller update it in place.
	 */
	void	   *cached_note;
	size_t		cached_note_len;
} TokenAccessClaims;

/* What an access token says; the extra claims are a JSON object or NULL. */
typedef struct TokenAccessSpec
{
	const char *issuer;
	const char *audience;
	const char *sub;
	const unsigned char *session_id;	/* TOKEN_UUID_LENGTH bytes */
	int64_t		iat;
	int64_t		exp;
	const char *extra_claims_json;
	size_t		extra_claims_len;
	TokenAlg	alg;			/* HS256: key is a secret; else a PEM key */
	bool		with_kid;		/* write the key id into the header (always
								 * written for ES256 and EdDSA) */
	const char *role;			/* a "role" claim for PostgREST, or NULL */
	const char *scope;			/* a "scope" claim (space-separated), or NULL */
	/* outputs, each optional (NULL): the token's jti and key id */
	unsigned char *jti_out;		/* TOKEN_UUID_LENGTH bytes */
	char	   *kid_out;		/* TOKEN_KID_MAX_LENGTH + 1 bytes */
} TokenAccessSpec;

extern const char *token_status_name(TokenStatus status);

extern bool token_random_bytes(unsigned char *buf, size_t len);
extern bool token_random_uuid(unsigned char uuid[TOKEN_UUID_LENGTH]);
extern void token_uuid_format(const unsigned char uuid[TOKEN_UUID_LENGTH], char out[37]);
extern bool token_uuid_parse(const char *text, size_t len, unsigned char uuid[TOKEN_UUID_LENGTH]);
extern bool token_sha256(const void *data, size_t len, unsigned char out[TOKEN_HASH_LENGTH]);

extern void token_key_id(const unsigned char *key, size_t keylen,
						 char out[TOKEN_KID_LENGTH + 1]);

/*
 * Asymmetric keys (token_keys.c).  token_keypair_load() parses a PEM private
 * key (P-256 or Ed25519, unencrypted, passing OpenSSL's key check) and
 * returns it malloc'ed, or NULL with a static reason in *errmsg that never
 * quotes the key.
 */
typedef struct TokenKeyPair TokenKeyPair;

extern const char *token_alg_name(TokenAlg alg);
extern size_t token_b64url_encode(const unsigned char *in, size_t len, char *out);
extern TokenKeyPair *token_keypair_load(const char *pem, size_t len, const char **errmsg);
extern void token_keypair_free(TokenKeyPair *kp);
extern TokenAlg token_keypair_alg(const TokenKeyPair *kp);
extern const char *token_keypair_kid(const TokenKeyPair *kp);
/* The public key as a JWK (kty, crv, x[, y], kid, alg, use): JSON text. */
extern const char *token_keypair_jwk(const TokenKeyPair *kp);
extern bool token_keypair_sign(const TokenKeyPair *kp, const unsigned char *data,
							   size_t len, unsigned char sig[TOKEN_ASYM_SIG_LENGTH]);
extern bool token_keypair_verify(const TokenKeyPair *kp, const unsigned char *data,
								 size_t len, const unsigned char *sig, size_t siglen);

extern const char *token_reserved_claims[];
extern bool token_is_reserved_claim(const char *name);

/*
 * Builds and signs an access token.  Returns a malloc'ed string the caller
 * frees with free(), or NULL and a static message in *errmsg; that message
 * is token_too_long when the token would exceed TOKEN_MAX_LENGTH (libjwt
 * re-prints the extra claims, reals with 17 significant digits), so that
 * every token this returns is one token_verify_access() will look at.
 */
extern const char token_too_long[];
/* The message when the extra claims do not parse (e.g. an integer beyond 64 bits). */
extern const char token_bad_claims[];
extern char *token_sign_access(const TokenAccessSpec *spec,
							   const unsigned char *key, size_t keylen,
							   const char **errmsg);

extern TokenStatus token_verify_access(const char *token, size_t len,
									   const TokenVerifyParams *params,
									   TokenAccessClaims *claims);


/*
 * Notes `len` bytes with the token whose SHA-256 is `hash` if the cache
 * holds it (replacing an earlier note), handed back as cached_note.
 */
extern void token_cache_note(const unsigned char *hash, const void *note, size_t len);
/*
 * Attaches a copy of `len` bytes to the cached verification of the token
 * whose SHA-256 this is (if it is cached and has nothing attached yet); a
 * later hit hands them back in TokenAccessClaims.cached_blob.  (The backend
 * attaches on a hit that had nothing attached: see claims_jsonb().)
 */
extern void token_cache_attach(const unsigned char *hash, const void *blob, size_t len);

/*
 * The verified-token cache's size in tokens per process (0: no cache);
 * a change empties it.
 */
#define TOKEN_CACHE_DEFAULT_ENTRIES 32768
extern void token_cache_resize(size_t entries);

/*
 * The retry window's sealed successor: AES-256-GCM under a key derived from
 * a server secret (`server_key`: the signing key, which no dump holds) and
 * the refresh token it replaces, so that only the server, presented that
 * token, can open it: not whoever holds a dump or a backup and an old
 * refresh token.  `aad` (the session id) is bound to it.  The sealed form is
 * nonce (12) || ciphertext || tag (16): TOKEN_SEAL_OVERHEAD bytes longer
 * than the plaintext.
 */
#define TOKEN_SEAL_OVERHEAD		28
extern bool token_seal(const unsigned char *server_key, size_t server_key_len,
					   const char *opener, size_t opener_len,
					   const unsigned char *aad, size_t aad_len,
					   const void *plain, size_t plain_len, unsigned char *out);
extern bool token_unseal(const unsigned char *server_key, size_t server_key_len,
						 const char *opener, size_t opener_len,
						 const unsigned char *aad, size_t aad_len,
						 const unsigned char *sealed, size_t sealed_len, void *out);

/*
 * Device authorization (RFC 8628): a device code "ext_dc_" + 43 base62
 * characters (256 random bits), and a user code of 8 letters from an
 * alphabet without vowels or look-alikes, shown as XXXX-XXXX.
 */
#define DEVICE_CODE_PREFIX		"ext_dc_"
#define DEVICE_CODE_LENGTH		50
#define USER_CODE_LETTERS		8
extern bool token_make_device_code(char out[DEVICE_CODE_LENGTH + 1]);
extern bool token_make_user_code(char out[USER_CODE_LETTERS + 2]);
/* A user code as typed: case, spaces and dashes ignored; false if not one. */
extern bool token_normalize_user_code(const char *in, size_t len,
									  char out[USER_CODE_LETTERS + 1]);

/*
 * Writes a refresh token of session `session_id`: REFRESH_TOKEN_LENGTH
 * characters and a terminating NUL.
 */
extern bool token_make_refresh(const unsigned char session_id[TOKEN_UUID_LENGTH],
							   char out[REFRESH_TOKEN_LENGTH + 1]);
/* Prefix, length (of either format), alphabet and checksum. */
extern bool token_refresh_well_formed(const char *token, size_t len);
/*
 * The session id a well-formed refresh token carries; false for a legacy
 * token (none) or a number beyond 128 bits.
 */
extern bool token_refresh_session(const char *token, size_t len,
								  unsigned char session_id[TOKEN_UUID_LENGTH]);

/*
 * API keys (personal access tokens): "ext_pat_" + the session (key) id in 22
 * base62 characters + 43 base62 characters (256 random bits) + the checksum
 * of the refresh tokens' scheme, 79 characters in all.
 */
#define API_KEY_PREFIX			"ext_pat_"
#define API_KEY_PREFIX_LENGTH	8
#define API_KEY_LENGTH \
	(API_KEY_PREFIX_LENGTH + REFRESH_TOKEN_SID_LENGTH + \
	 REFRESH_TOKEN_RANDOM_LENGTH + REFRESH_TOKEN_CHECKSUM_LENGTH)
extern bool token_make_api_key(const unsigned char session_id[TOKEN_UUID_LENGTH],
							   char out[API_KEY_LENGTH + 1]);
extern bool token_looks_like_api_key(const char *token, size_t len);
/* Well-formed (prefix, length, alphabet, checksum): its key id; else false. */
extern bool token_api_key_session(const char *token, size_t len,
								  unsigned char session_id[TOKEN_UUID_LENGTH]);
extern bool token_looks_like_refresh(const char *token, size_t len);

/*
 * Whether a compact JWS claims, without any verification, to be an access
 * token of `issuer` (its payload's "iss" and "type").  Only for deciding
 * whether a token is ours to check.
 */
extern bool token_is_ours(const char *token, size_t len, const char *issuer);

/*
 * The claims of a request as PostgREST verified them (request.jwt.claims),
 * told apart without any setting: a token of ours is one whose "type" is
 * "access" and that carries a "session_id" (what every access token this
 * extension ever minted carries, whatever its issuer or audience setting
 * was).  TOKEN_CLAIMS_UNREADABLE when the text is not a JSON object, or
 * claims to be ours but lacks what ours always carry: the caller cannot
 * tell, and must refuse.
 */
typedef enum TokenClaimsKind
{
	TOKEN_CLAIMS_FOREIGN,
	TOKEN_CLAIMS_OURS,
	TOKEN_CLAIMS_UNREADABLE
} TokenClaimsKind;

typedef struct TokenRequestClaims
{
	bool		api_key;		/* "type": "api_key": an API key's claims, as
								 * extension_token_pre_request() sets them
								 * (no jti, exp or iat) */
	unsigned char session_id[TOKEN_UUID_LENGTH];
	unsigned char jti[TOKEN_UUID_LENGTH];
	char		sub[TOKEN_SUB_MAX_LENGTH + 1];
	int64_t		exp;
	int64_t		iat;
	bool		manage_scope;	/* "scope" names tokens:manage */
	bool		scoped;			/* it has a "scope" claim at all */
} TokenRequestClaims;

extern TokenClaimsKind token_request_claims(const char *json, size_t len,
											TokenRequestClaims *out);

/*
 * A string member of a JSON object given as text: 1 and the value in `out`
 * (NUL-terminated) when present, 0 when absent or the text is not an object,
 * -1 when present but not a string or longer than outsize - 1.
 */
extern int	token_json_string_member(const char *json, const char *key,
									 char *out, size_t outsize);

#endif							/* EXTENSION_TOKENS_TOKEN_H */
