/*-------------------------------------------------------------------------
 *
 * extension_tokens.c
 *	  Module entry point and the SQL-callable functions.
 *
 * This file is glue only: it turns SQL arguments into C values, calls the
 * policy, storage and token subsystems in that order, and builds the result
 * rows.  The rules live in policy.c, the tables in storage.c and the token
 * formats in token.c.
 *
 * Memory from libjwt and jansson is released inside token.c before control
 * returns here, so nothing malloc'ed is live when these functions raise.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>

#include "access/detoast.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "common/int.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "config.h"
#include "logfilter.h"
#include "policy.h"
#include "replication.h"
#include "revoker.h"
#include "usage.h"
#include "verdict.h"
#include "uninstall.h"
#include "stats.h"
#include "storage.h"
#include "token.h"
#include "worker.h"
#include "access/transam.h"

PG_MODULE_MAGIC;

#define DEFAULT_TOKEN_NAME	"Extension Token"
#define MAX_NAME_LENGTH		200
#define MAX_CLAIMS_LENGTH	4096

/* Seconds between the Unix and PostgreSQL epochs. */
#define UNIX_TO_PG_SECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)

void		_PG_init(void);

void
_PG_init(void)
{
	ConfigInit();
	StatsInit();
	PolicyInit();
	StorageInit();
	RevokerInit();
	ReplicationInit();
	UsageInit();
	LogFilterInit();
	UninstallInit();
	VerdictInit();

	/*
	 * Last, once every module has defined its settings: reserving the prefix
	 * removes the placeholders of any not defined yet, and with them the
	 * values postgresql.conf gave them at startup.
	 */
	MarkGUCPrefixReserved("extension_tokens");
}

static int64
unix_seconds(TimestampTz ts)
{
	/* floor division: TimestampTz may be negative in principle */
	int64		s = ts / USECS_PER_SEC;

	if (ts < 0 && ts % USECS_PER_SEC != 0)
		s--;
	return s + UNIX_TO_PG_SECS;
}

static TimestampTz
from_unix_seconds(int64 s)
{
	return (TimestampTz) (s - UNIX_TO_PG_SECS) * USECS_PER_SEC;
}

static TupleDesc
result_tupdesc(FunctionCallInfo fcinfo)
{
	TupleDesc	tupdesc = fcinfo->flinfo->fn_extra;

	/* Looked up once per call site: validate runs once per request. */
	if (tupdesc == NULL)
	{
		MemoryContext old;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "extension_tokens: function must return a composite type");
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = tupdesc;
	}
	return tupdesc;
}

/* Copies a malloc'ed C string into a text datum and frees the original. */
static Datum
take_malloced_text(char *s)
{
	size_t		n = strlen(s);
	text	   *t = palloc_extended(VARHDRSZ + n, MCXT_ALLOC_NO_OOM);

	if (t != NULL)
	{
		SET_VARSIZE(t, VARHDRSZ + n);
		memcpy(VARDATA(t), s, n);
	}
	OPENSSL_cleanse(s, n);
	free(s);
	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return PointerGetDatum(t);
}

/* Writes need a read-write transaction on the primary: say so plainly. */
static void
require_read_write(const char *what)
{
	if (RecoveryInProgress() || XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s in a read-only transaction", what),
				 errhint("Call it on the primary, in a read-write transaction (PostgREST: POST, not GET).")));
}

/* Everything a new pair needs that is not stored. */
typedef struct PairTokens
{
	Datum		access;
	char		refresh[REFRESH_TOKEN_LENGTH + 1];
} PairTokens;

/*
 * Scopes (1.2): each [a-z0-9:._-]{1,64}, at most 32, no NULL, no repeat.
 * Returns the text[] to store (0 for none: NULL or empty).
 */
#define MAX_SCOPES			32
#define MAX_SCOPE_LENGTH	64
static Datum
checked_scopes(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_scopes must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		return (Datum) 0;
	if (n > MAX_SCOPES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_scopes may name at most %d scopes", MAX_SCOPES)));
	for (int i = 0; i < n; i++)
	{
		text	   *t;
		const char *p;
		int			len;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_scopes must not contain NULL")));
		t = DatumGetTextPP(elems[i]);
		p = VARDATA_ANY(t);
		len = VARSIZE_ANY_EXHDR(t);
		for (int c = 0; c < len; c++)
			if (!((p[c] >= 'a' && p[c] <= 'z') || (p[c] >= '0' && p[c] <= '9') ||
				  p[c] == ':' || p[c] == '.' || p[c] == '_' || p[c] == '-'))
				len = -1;
		if (len < 1 || len > MAX_SCOPE_LENGTH)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_scopes contains an invalid scope"),
					 errdetail("A scope is 1 to %d characters of a-z, 0-9, \":\", \".\", \"_\" and \"-\".",
							   MAX_SCOPE_LENGTH)));
		for (int j = 0; j < i; j++)
			if (DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, elems[i], elems[j])))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("p_scopes names a scope twice")));
	}
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* The scope claim: the scopes, space-separated (RFC 9068); NULL for none. */
static const char *
scopes_text(Datum scopes)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	StringInfoData buf;

	if (scopes == (Datum) 0)
		return NULL;
	deconstruct_array(DatumGetArrayTypeP(scopes), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		return NULL;
	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			appendStringInfo(&buf, "%s%s", buf.len ? " " : "", TextDatumGetCString(elems[i]));
	return buf.data;
}

/* Whether the session's scopes include every one of `required`. */
static bool
has_scopes(Datum scopes, ArrayType *required)
{
	Datum	   *need,
			   *have = NULL;
	bool	   *need_nulls,
			   *have_nulls = NULL;
	int			nneed,
				nhave = 0;

	deconstruct_array(required, TEXTOID, -1, false, TYPALIGN_INT, &need, &need_nulls, &nneed);
	if (scopes != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(scopes), TEXTOID, -1, false, TYPALIGN_INT,
						  &have, &have_nulls, &nhave);
	for (int i = 0; i < nneed; i++)
	{
		bool		found = false;

		if (need_nulls[i])
			return false;
		for (int j = 0; j < nhave && !found; j++)
			found = !have_nulls[j] &&
				DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, need[i], have[j]));
		if (!found)
			return false;
	}
	return true;
}

/* Signs the access token of `pair` (times and identity filled in). */
static void
mint_access(NewPair *pair, PairTokens *out)
{
	size_t		keylen;
	TokenAlg	alg;
	const char *key = ConfigSigningKey(&alg, &keylen);
	TokenAccessSpec spec;
	const char *why = NULL;
	char	   *jwt;

	spec.issuer = et_jwt_issuer;
	spec.audience = et_jwt_audience;
	spec.sub = pair->user_id;
	spec.session_id = pair->session_id.data;
	spec.iat = unix_seconds(pair->created_at);
	spec.exp = unix_seconds(pair->expires_at);
	spec.extra_claims_json = pair->claims_json;
	spec.extra_claims_len = pair->claims_json ? strlen(pair->claims_json) : 0;
	spec.alg = alg;
	spec.with_kid = true;
	spec.role = (et_postgrest_role && et_postgrest_role[0]) ? et_postgrest_role : NULL;
	spec.scope = scopes_text(pair->scopes);
	spec.jti_out = pair->access_jti;
	spec.kid_out = pair->key_id;

	jwt = token_sign_access(&spec, (const unsigned char *) key, keylen, &why);
	if (jwt == NULL && why == token_too_long)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_claims is too large"),
				 errdetail("The access token would be longer than %d bytes.", TOKEN_MAX_LENGTH),
				 errhint("Send fewer or shorter extra claims (numbers with fractions are written with 17 digits).")));
	if (jwt == NULL && why == token_bad_claims)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_claims cannot be carried in a token"),
				 errdetail("Numbers in extra claims must be integers that fit in 64 bits, or finite reals.")));
	if (jwt == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not create an access token: %s", why)));
	(void) token_sha256(jwt, strlen(jwt), pair->access_hash);
	out->access = take_malloced_text(jwt);
}

/* Makes a refresh token and stores its hash in `pair`. */
static void
mint_refresh(NewPair *pair, PairTokens *out)
{
	if (!token_make_refresh(pair->session_id.data, out->refresh) ||
		!token_sha256(out->refresh, REFRESH_TOKEN_LENGTH, pair->refresh_hash))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a refresh token")));
}

static Datum
pair_result(FunctionCallInfo fcinfo, const NewPair *pair, PairTokens *tokens,
			int revoked_sessions)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo);
	Datum		values[9];
	bool		nulls[9] = {false};
	pg_uuid_t  *sid = palloc(sizeof(pg_uuid_t));
	int64		expires_in = unix_seconds(pair->expires_at) - unix_seconds(pair->created_at);

	*sid = pair->session_id;
	values[0] = tokens->access;
	values[1] = CStringGetTextDatum(tokens->refresh);
	OPENSSL_cleanse(tokens->refresh, sizeof(tokens->refresh));
	values[2] = CStringGetTextDatum("Bearer");
	values[3] = Int32GetDatum((int32) Min(expires_in, PG_INT32_MAX));
	values[4] = TimestampTzGetDatum(pair->expires_at);
	values[5] = TimestampTzGetDatum(pair->refresh_expires_at);
	values[6] = UUIDPGetDatum(sid);
	values[7] = pair->scopes;
	nulls[7] = pair->scopes == (Datum) 0;
	values[8] = Int32GetDatum(revoked_sessions);
	if (tupdesc->natts != 9)
		elog(ERROR, "extension_tokens: extension_token_pair has %d attributes, not 9",
			 tupdesc->natts);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/* p_lifetime in whole seconds; 22023 unless 1 s <= it <= refresh lifetime. */
static int64
lifetime_seconds(Interval *iv)
{
	int64		usecs;
	int64		secs;

	if (pg_mul_s64_overflow((int64) iv->month * DAYS_PER_MONTH + iv->day,
							USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, iv->time, &usecs))
		usecs = PG_INT64_MAX;
	secs = usecs / USECS_PER_SEC;
	if (secs < 1 || secs > et_refresh_token_lifetime)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_lifetime must be between 1 second and the refresh token lifetime"),
				 errdetail("The refresh token lifetime (extension_tokens.refresh_token_lifetime) is %d seconds.",
						   et_refresh_token_lifetime)));
	return secs;
}

static char *
checked_claims(Jsonb *claims, bool admin)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			level = 0;
	char	   *text;

	if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_claims must be a JSON object")));
	it = JsonbIteratorInit(&claims->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_OBJECT || tok == WJB_BEGIN_ARRAY)
			level++;
		else if (tok == WJB_END_OBJECT || tok == WJB_END_ARRAY)
			level--;
		else if (tok == WJB_KEY && level == 1)
		{
			char	   *key = pnstrdup(v.val.string.val, v.val.string.len);

			PolicyCheckExtraClaim(key, admin);
			pfree(key);
		}
	}
	text = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	if (strlen(text) > MAX_CLAIMS_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_claims is too large"),
				 errdetail("Extra claims may take at most %d bytes of JSON.",
						   MAX_CLAIMS_LENGTH)));
	return text;
}

static char *
checked_name(text *name)
{
	char	   *s = text_to_cstring(name);
	int			chars = pg_mbstrlen(s);
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	if (chars < 1 || chars > MAX_NAME_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_name must be between 1 and %d characters long",
						MAX_NAME_LENGTH)));
	/*
	 * A name is shown to the user (the session list, the device approval
	 * page) and may be chosen by whoever starts a device authorization:
	 * no control characters (C0, DEL, and in UTF-8 C1) and no bidirectional
	 * embedding, override or isolate, which make the text read otherwise
	 * than it is.
	 */
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		bool		bad = *p < 0x20 || *p == 0x7f;

		if (utf8)
			bad = bad || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) ||
				(p[0] == 0xe2 && p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) ||
				(p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9);
		if (bad)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_name must not contain control characters or bidirectional formatting characters")));
	}
	return s;
}

/*
 * Both expiry times of a pair minted at `now` in a session that ends at
 * `ends_at` (DT_NOEND: never): capped at the session's end.
 */
static void
pair_times(NewPair *pair, TimestampTz now, TimestampTz ends_at, int64 lifetime)
{
	int64		end = TIMESTAMP_NOT_FINITE(ends_at) ? PG_INT64_MAX : unix_seconds(ends_at);

	pair->created_at = now;
	pair->expires_at = from_unix_seconds(Min(unix_seconds(now) + lifetime, end));
	pair->refresh_expires_at =
		from_unix_seconds(Min(unix_seconds(now) + et_refresh_token_lifetime, end));
}

/*
 * The client of the current PostgREST request, for the session list: its
 * user-agent (at most 512 bytes, or NULL) and the first address of its
 * x-forwarded-for (NULL unless it is an IPv4 or IPv6 address).  Headers
 * PostgREST did not set, or that cannot be read, give NULL: this is
 * information for the user, never a security decision.
 */
#define MAX_USER_AGENT_LENGTH 512
static void
request_client(NewPair *pair)
{
	const char *headers = GetConfigOption("request.headers", true, false);
	char	   *ua = palloc(MAX_USER_AGENT_LENGTH + 1);
	char	   *xff = palloc(256);
	unsigned char addr[16];

	pair->user_agent = NULL;
	pair->ip = NULL;
	if (headers == NULL || headers[0] == '\0')
		return;
	if (token_json_string_member(headers, "user-agent", ua, MAX_USER_AGENT_LENGTH + 1) == 1 &&
		pg_verifymbstr(ua, strlen(ua), true))
		pair->user_agent = ua;
	if (token_json_string_member(headers, "x-forwarded-for", xff, 256) == 1)
	{
		char	   *first = xff + strspn(xff, " \t");

		first[strcspn(first, ", \t")] = '\0';
		if (inet_pton(AF_INET, first, addr) == 1 || inet_pton(AF_INET6, first, addr) == 1)
			pair->ip = first;
	}
}

/* A text argument as a C string, or NULL for SQL NULL. */
static char *
text_arg(FunctionCallInfo fcinfo, int n)
{
	/*
	 * Only once the tables are of this library's version: after a library
	 * upgrade and before ALTER EXTENSION UPDATE, an old function definition
	 * may pass an argument of another type (uuid user ids in 1.1).
	 */
	StorageCheckVersion();
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * A refusal that is a rate limit, before its error: one LOG line and the
 * rate_limited event, committed by the revoker's worker, since the error
 * rolls back this transaction.  reason: issue_rate_limit,
 * refresh_rate_limit, device_approval_failures, device_poll_interval.
 * user_id and session_id may be NULL (not known yet).
 */
static void
record_rate_limit(const char *reason, const char *user_id, const pg_uuid_t *session_id)
{
	ereport(LOG,
			(errmsg("extension_tokens: rate limit tripped: user \"%s\", session %s, %s",
					user_id ? user_id : "(none)",
					session_id ? DatumGetCString(DirectFunctionCall1(uuid_out,
																	 UUIDPGetDatum((pg_uuid_t *) session_id)))
					: "none", reason),
			 errhidestmt(true)));
	RevokerRecordEvent("rate_limited", session_id, user_id, reason);
}

/* Refuses an issue or refresh over the user's hourly rate limit (PT429). */
ET_NORETURN_BEGIN static void
rate_limited(bool refresh, const char *user_id, const pg_uuid_t *session_id,
			 TimestampTz now, TimestampTz retry_at)
ET_NORETURN_END;

static void
rate_limited(bool refresh, const char *user_id, const pg_uuid_t *session_id,
			 TimestampTz now, TimestampTz retry_at)
{
	record_rate_limit(refresh ? "refresh_rate_limit" : "issue_rate_limit", user_id, session_id);
	PolicyRateLimited(refresh, now, retry_at);
}

/*
 * A new session id: a random version 4 UUID whose first 16 bits are
 * extension_tokens.shard_tag when one is set, so that a proxy routes any
 * token of the session (access, refresh, API key: each carries the id) to
 * this shard without a lookup.  106 random bits remain.
 */
static bool
new_session_id(pg_uuid_t *sid)
{
	if (!token_random_uuid(sid->data))
		return false;
	if (et_shard_tag >= 0)
	{
		sid->data[0] = (unsigned char) (et_shard_tag >> 8);
		sid->data[1] = (unsigned char) (et_shard_tag & 0xff);
	}
	return true;
}

/*
 * Creates the session of `pair` (user, name, claims, scopes and client
 * filled in) with access tokens of `lifetime` seconds: the new row in one
 * statement with the user's rate slot, then the session limit.  Returns the
 * pair as the function's result.
 */
static Datum
issue_session(FunctionCallInfo fcinfo, NewPair *pair, int64 lifetime)
{
	PairTokens	tokens;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz retry_at;
	int			revoked_sessions;

	if (!new_session_id(&pair->session_id))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a session id")));
	pair->access_lifetime = lifetime;
	/* The session's own limits, fixed now (see PolicySessionEnd()). */
	pair->ends_at = et_session_max_lifetime > 0
		? now + (int64) et_session_max_lifetime * USECS_PER_SEC : DT_NOEND;
	pair->idle_timeout = et_session_inactivity_timeout;
	pair_times(pair, now, pair->ends_at, lifetime);
	mint_access(pair, &tokens);
	mint_refresh(pair, &tokens);
	if (!StorageIssue(pair, et_issue_rate_limit, et_max_sessions_per_user, &retry_at,
					  &revoked_sessions))
		rate_limited(false, pair->user_id, NULL, now, retry_at);
	StatsCount(STATS_ISSUED);
	return pair_result(fcinfo, pair, &tokens, revoked_sessions);
}

/*
 * extension_token_issue(p_user_id text, p_name text, p_lifetime interval,
 *						 p_claims jsonb) RETURNS extension_token_pair
 */
PG_FUNCTION_INFO_V1(extension_token_issue);
Datum
extension_token_issue(PG_FUNCTION_ARGS)
{
	NewPair		pair;
	int64		lifetime;

	ConfigRequireSigning();
	require_read_write("issue a token");
	memset(&pair, 0, sizeof(pair));
	pair.name = PG_ARGISNULL(1) ? DEFAULT_TOKEN_NAME : checked_name(PG_GETARG_TEXT_PP(1));
	lifetime = PG_ARGISNULL(2) ? et_access_token_lifetime
		: lifetime_seconds(PG_GETARG_INTERVAL_P(2));
	if (lifetime > et_refresh_token_lifetime)
		lifetime = et_refresh_token_lifetime;
	pair.user_id = PolicyResolveUser(text_arg(fcinfo, 0), "issue");
	PolicyRequireManageScope("issue sessions");
	pair.claims_json = PG_ARGISNULL(3) ? NULL
		: checked_claims(PG_GETARG_JSONB_P(3), PolicyCallerIsAdmin());
	pair.scopes = (PG_NARGS() > 4 && !PG_ARGISNULL(4))
		? checked_scopes(PG_GETARG_ARRAYTYPE_P(4)) : (Datum) 0;
	request_client(&pair);
	PG_RETURN_DATUM(issue_session(fcinfo, &pair, lifetime));
}

/* ---------------------------------------------------------------------
 * API keys
 * ---------------------------------------------------------------------
 */

#define DEFAULT_API_KEY_NAME	"API key"
#define ERRCODE_ET_CONFLICT		MAKE_SQLSTATE('P','T','4','0','9')

/*
 * extension_token_api_key_create(p_user_id text, p_name text, p_scopes text[],
 *		p_expires_in interval, p_claims jsonb) RETURNS extension_token_api_key
 *
 * An API key is a session of kind 'api_key' whose access_hash is the key's
 * SHA-256; it has no refresh token (its refresh_hash is the hash of nothing
 * ever handed out) and lives until its expiry (never, without one) or its
 * revocation.  The key names its session, so validation reads the row by
 * primary key, as for an access token.  The user's row serializes a user's
 * creations, so that max_api_keys_per_user holds under concurrency.
 */
PG_FUNCTION_INFO_V1(extension_token_api_key_create);
Datum
extension_token_api_key_create(PG_FUNCTION_ARGS)
{
	NewPair		pair;
	size_t		keylen;
	char		key[API_KEY_LENGTH + 1];
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz expires = DT_NOEND;
	TimestampTz retry_at;
	int			over;
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false};
	pg_uuid_t  *kid;

	(void) ConfigRequireSecret(&keylen);
	require_read_write("create an API key");
	memset(&pair, 0, sizeof(pair));
	pair.api_key = true;
	pair.name = PG_ARGISNULL(1) ? DEFAULT_API_KEY_NAME : checked_name(PG_GETARG_TEXT_PP(1));
	pair.user_id = PolicyResolveUser(text_arg(fcinfo, 0), "create");
	PolicyRequireManageScope("create API keys");
	pair.scopes = PG_ARGISNULL(2) ? (Datum) 0 : checked_scopes(PG_GETARG_ARRAYTYPE_P(2));
	if (!PG_ARGISNULL(3))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(3);
		int64		usecs;

		if (pg_mul_s64_overflow((int64) iv->month * DAYS_PER_MONTH + iv->day,
								USECS_PER_DAY, &usecs) ||
			pg_add_s64_overflow(usecs, iv->time, &usecs) ||
			usecs < USECS_PER_SEC ||
			/* 100 years as PostgreSQL compares intervals: months of 30 days */
			usecs > (int64) 100 * MONTHS_PER_YEAR * DAYS_PER_MONTH * USECS_PER_DAY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_expires_in must be between 1 second and 100 years"),
					 errhint("Pass NULL for a key that does not expire.")));
		expires = now + usecs;
	}
	pair.claims_json = PG_ARGISNULL(4) ? NULL
		: checked_claims(PG_GETARG_JSONB_P(4), PolicyCallerIsAdmin());
	request_client(&pair);

	if (!new_session_id(&pair.session_id) ||
		!token_random_uuid(pair.access_jti) ||
		!token_random_bytes(pair.refresh_hash, TOKEN_HASH_LENGTH) ||
		!token_make_api_key(pair.session_id.data, key))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for an API key")));
	(void) token_sha256(key, API_KEY_LENGTH, pair.access_hash);
	pair.created_at = now;
	pair.expires_at = expires;
	pair.refresh_expires_at = expires;
	pair.ends_at = expires;
	pair.access_lifetime = 0;
	pair.idle_timeout = 0;
	if (!StorageIssue(&pair, et_issue_rate_limit, et_max_api_keys_per_user, &retry_at, &over))
		rate_limited(false, pair.user_id, NULL, now, retry_at);
	if (over < 0)
		ereport(ERROR,
				(errcode(ERRCODE_ET_CONFLICT),
				 errmsg("user has too many API keys"),
				 errdetail("A user may have %d live API keys (extension_tokens.max_api_keys_per_user).",
						   et_max_api_keys_per_user),
				 errhint("Revoke a key (extension_token_revoke_session) before creating another.")));

	tupdesc = result_tupdesc(fcinfo);
	if (tupdesc->natts != 5)
		elog(ERROR, "extension_tokens: extension_token_api_key has %d attributes, not 5",
			 tupdesc->natts);
	kid = palloc(sizeof(pg_uuid_t));
	*kid = pair.session_id;
	values[0] = CStringGetTextDatum(key);
	OPENSSL_cleanse(key, sizeof(key));
	values[1] = UUIDPGetDatum(kid);
	values[2] = CStringGetTextDatum(pair.name);
	values[3] = pair.scopes;
	nulls[3] = pair.scopes == (Datum) 0;
	values[4] = TimestampTzGetDatum(expires);
	nulls[4] = TIMESTAMP_NOT_FINITE(expires);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * The claims of an API key: its session's extra claims, then sub, scope,
 * type "api_key", session_id (the key id) and, when postgrest_role is set,
 * role: what validate returns, and what extension_token_pre_request() puts
 * in request.jwt.claims for a request carrying the key.
 */
static Jsonb *
api_key_claims(const SessionRow *row)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res;
	const char *scope = scopes_text(row->scopes);
	Datum		fixed;

#define PUT_STRING(k, str) \
	do { \
		v.type = jbvString; v.val.string.val = (char *) (k); \
		v.val.string.len = strlen(k); pushJsonbValue(&state, WJB_KEY, &v); \
		v.type = jbvString; v.val.string.val = (char *) (str); \
		v.val.string.len = strlen(str); pushJsonbValue(&state, WJB_VALUE, &v); \
	} while (0)
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	PUT_STRING("sub", row->user_id);
	PUT_STRING("type", "api_key");
	PUT_STRING("session_id",
			   DatumGetCString(DirectFunctionCall1(uuid_out,
												   UUIDPGetDatum((pg_uuid_t *) &row->session_id))));
	if (scope)
		PUT_STRING("scope", scope);
	if (et_postgrest_role && et_postgrest_role[0])
		PUT_STRING("role", et_postgrest_role);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
#undef PUT_STRING
	fixed = JsonbPGetDatum(JsonbValueToJsonb(res));
	if (row->claims_json == NULL)
		return DatumGetJsonbP(fixed);
	/* the fixed members last: they win (reserved names cannot be extra) */
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
											  DirectFunctionCall1(jsonb_in,
																  CStringGetDatum(row->claims_json)),
											  fixed));
}

/*
 * Validation of an API key: the offline checks (prefix, length, alphabet,
 * checksum), then the row of the session it names, which must be a key's
 * whose hash is this key's, and live.
 */
static TokenStatus
validate_api_key(const char *key, size_t len, SessionRow *row, TimestampTz now)
{
	pg_uuid_t	sid;
	unsigned char hash[TOKEN_HASH_LENGTH];

	if (!token_api_key_session(key, len, sid.data))
		return TOKEN_MALFORMED;
	token_sha256(key, len, hash);
	StorageLookupSession(&sid, true, row);
	if (!row->found)
		return TOKEN_NOT_FOUND;
	return PolicySessionVerdict(row, row->user_id,
						   row->api_key &&
						   CRYPTO_memcmp(hash, row->access_hash, TOKEN_HASH_LENGTH) == 0,
						   0, now);
}

/* ---------------------------------------------------------------------
 * validate
 * ---------------------------------------------------------------------
 */

static Datum
validation_result(FunctionCallInfo fcinfo, TokenStatus status,
				  const SessionRow *row, Jsonb *claims)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo);
	Datum		values[9];
	bool		nulls[9] = {false, false, true, true, true, true, true, true, true};

	if (tupdesc->natts != 9)
		elog(ERROR, "extension_tokens: extension_token_validation has %d attributes, not 9",
			 tupdesc->natts);
	values[0] = BoolGetDatum(status == TOKEN_OK);
	if (status != TOKEN_OK)
		values[1] = CStringGetTextDatum(token_status_name(status));
	else
	{
		pg_uuid_t  *sid = palloc(sizeof(pg_uuid_t));

		*sid = row->session_id;
		nulls[1] = true;
		values[2] = CStringGetTextDatum(row->user_id);
		values[3] = UUIDPGetDatum(sid);
		values[4] = CStringGetTextDatum(row->name);
		values[5] = TimestampTzGetDatum(row->expires_at);
		values[6] = JsonbPGetDatum(claims);
		for (int i = 2; i < 7; i++)
			nulls[i] = false;
		values[7] = row->scopes;
		nulls[7] = row->scopes == (Datum) 0;
		values[8] = CStringGetTextDatum(row->api_key ? "api_key" : "access");
		nulls[8] = false;
	}
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * The claims as jsonb, built by the verifier's one parse of the payload
 * (token_payload.c: PostgreSQL's JSON parser), which hands each value to
 * jsonb_build_visit() as it goes, as jsonb_in's own parse does.  In a
 * database whose encoding is not UTF-8 the payload's text is converted and
 * read by jsonb_in instead.
 */
typedef struct JsonbBuild
{
	JsonbValue *open;			/* the containers open, innermost last */
	int		   *caps;			/* the room in each one's pairs or elems */
	int			depth;
	int			open_cap;
	JsonbValue *result;			/* the payload's object, once closed */
} JsonbBuild;

/*
 * jsonb's order of an object's keys (as its own uniqueifyJsonbObject()
 * sorts them): shorter first, then bytewise.
 */
static int
jsonb_key_cmp(const void *a, const void *b)
{
	const JsonbValue *ka = &((const JsonbPair *) a)->key;
	const JsonbValue *kb = &((const JsonbPair *) b)->key;

	if (ka->val.string.len != kb->val.string.len)
		return ka->val.string.len < kb->val.string.len ? -1 : 1;
	return memcmp(ka->val.string.val, kb->val.string.val, ka->val.string.len);
}

static void
jsonb_sort_pairs(JsonbValue *object)
{
	JsonbPair  *pairs = object->val.object.pairs;
	int			n = object->val.object.nPairs;

	/* a token's objects are small: an insertion sort, up to a point */
	if (n > 32)
	{
		qsort(pairs, n, sizeof(JsonbPair), jsonb_key_cmp);
		return;
	}
	for (int i = 1; i < n; i++)
	{
		JsonbPair	p = pairs[i];
		int			j = i;

		while (j > 0 && jsonb_key_cmp(&pairs[j - 1], &p) > 0)
		{
			pairs[j] = pairs[j - 1];
			j--;
		}
		pairs[j] = p;
	}
}

/* Puts a finished value where it belongs: the open container, or the result. */
static void
jsonb_build_place(JsonbBuild *b, const JsonbValue *v)
{
	JsonbValue *c;

	if (b->depth == 0)
	{
		b->result = palloc(sizeof(JsonbValue));
		*b->result = *v;
		return;
	}
	c = &b->open[b->depth - 1];
	if (c->type == jbvObject)
	{
		/* the value of the key just added (TJ_KEY) */
		Assert(c->val.object.nPairs > 0);
		c->val.object.pairs[c->val.object.nPairs - 1].value = *v;
		return;
	}
	if (c->val.array.nElems == b->caps[b->depth - 1])
	{
		b->caps[b->depth - 1] *= 2;
		c->val.array.elems = repalloc(c->val.array.elems,
									  b->caps[b->depth - 1] * sizeof(JsonbValue));
	}
	c->val.array.elems[c->val.array.nElems++] = *v;
}

/*
 * Builds the claims' JsonbValue tree as the parse goes, and sorts each
 * object's keys as jsonb stores them; JsonbValueToJsonb() then lays it out.
 * The parse has refused duplicate keys, so nothing is left to unify (which
 * is what pushJsonbValue() would add, with a qsort of every object).
 */
static void
jsonb_build_visit(void *arg, TokenJsonEvent event, bool in_array,
				  const char *str, size_t len)
{
	JsonbBuild *b = arg;
	JsonbValue	v;
	JsonbValue *c;
	int64_t		i;

	(void) in_array;
	switch (event)
	{
		case TJ_OBJECT_START:
		case TJ_ARRAY_START:
			if (b->depth == b->open_cap)
			{
				b->open_cap = b->open_cap ? b->open_cap * 2 : 8;
				b->open = b->open ? repalloc(b->open, b->open_cap * sizeof(JsonbValue))
					: palloc(b->open_cap * sizeof(JsonbValue));
				b->caps = b->caps ? repalloc(b->caps, b->open_cap * sizeof(int))
					: palloc(b->open_cap * sizeof(int));
			}
			c = &b->open[b->depth];
			b->caps[b->depth] = 8;
			if (event == TJ_OBJECT_START)
			{
				c->type = jbvObject;
				c->val.object.nPairs = 0;
				c->val.object.pairs = palloc(8 * sizeof(JsonbPair));
			}
			else
			{
				c->type = jbvArray;
				c->val.array.nElems = 0;
				c->val.array.rawScalar = false;
				c->val.array.elems = palloc(8 * sizeof(JsonbValue));
			}
			b->depth++;
			return;
		case TJ_OBJECT_END:
		case TJ_ARRAY_END:
			Assert(b->depth > 0);
			b->depth--;
			v = b->open[b->depth];
			if (v.type == jbvObject)
				jsonb_sort_pairs(&v);
			jsonb_build_place(b, &v);
			return;
		case TJ_KEY:
			Assert(b->depth > 0 && b->open[b->depth - 1].type == jbvObject);
			c = &b->open[b->depth - 1];
			if (c->val.object.nPairs == b->caps[b->depth - 1])
			{
				b->caps[b->depth - 1] *= 2;
				c->val.object.pairs = repalloc(c->val.object.pairs,
											   b->caps[b->depth - 1] * sizeof(JsonbPair));
			}
			c->val.object.pairs[c->val.object.nPairs].key.type = jbvString;
			c->val.object.pairs[c->val.object.nPairs].key.val.string.val = (char *) str;
			c->val.object.pairs[c->val.object.nPairs].key.val.string.len = (int) len;
			c->val.object.pairs[c->val.object.nPairs].order = c->val.object.nPairs;
			c->val.object.pairs[c->val.object.nPairs].value.type = jbvNull;
			c->val.object.nPairs++;
			return;
		case TJ_STRING:
			v.type = jbvString;
			v.val.string.val = (char *) str;
			v.val.string.len = (int) len;
			break;
		case TJ_NUMBER:
			/* the parse refused what numeric_in could not take */
			v.type = jbvNumeric;
			if (token_json_integer(str, &i))
				v.val.numeric = int64_to_numeric(i);
			else
				v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	CStringGetDatum(str),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));
			break;
		case TJ_TRUE:
		case TJ_FALSE:
			v.type = jbvBool;
			v.val.boolean = (event == TJ_TRUE);
			break;
		case TJ_NULL:
			v.type = jbvNull;
			break;
	}
	jsonb_build_place(b, &v);
}

/*
 * The claims of a verified token: from the cache, from the parse's build,
 * or (not UTF-8) from jsonb_in.  Releases the parse's strings.
 */
static Jsonb *
claims_jsonb(TokenAccessClaims *claims, JsonbBuild *b)
{
	Jsonb	   *result;

	/* Rendered before: the verified-token cache kept our jsonb. */
	if (claims->cached_blob != NULL)
	{
		result = palloc(claims->cached_blob_len);
		memcpy(result, claims->cached_blob, claims->cached_blob_len);
	}
	else if (b != NULL && b->result != NULL)
	{
		result = JsonbValueToJsonb(b->result);
		/* kept from a token's first hit: a token seen once pays no copy */
		if (claims->has_hash && claims->cache_hit)
			token_cache_attach(claims->hash, result, VARSIZE(result));
	}
	else
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													CStringGetDatum(pg_any_to_server(claims->payload,
																					 (int) claims->payload_len,
																					 PG_UTF8))));
	token_payload_release(&claims->parsed);
	return result;
}

static void
verify_params(TokenVerifyParams *params, TimestampTz now, bool check_times)
{
	size_t		keylen;

	params->key = (const unsigned char *) ConfigSigningKey(&params->alg, &keylen);
	params->keylen = keylen;
	params->prev_key = (const unsigned char *) ConfigPreviousSigningKey(&keylen);
	params->prev_keylen = params->prev_key ? keylen : 0;
	params->issuer = et_jwt_issuer;
	params->audience = et_jwt_audience;
	params->now = unix_seconds(now);
	params->leeway = et_clock_skew;
	params->check_times = check_times;
	params->visitor = NULL;
	params->use_cache = false;
}

/*
 * Records a use of a validated token's session: counted in shared memory
 * and written by the worker (usage.c), so validation never writes in the
 * caller's transaction.  Only when that cannot be done (not preloaded, or
 * the table full) does it write last_used_at itself, at most once per
 * last_used_interval, and never in a read-only transaction.
 */
static void
record_use(const SessionRow *row, TimestampTz now)
{
	TimestampTz older_than;

	if (UsageRecord(&row->session_id, now) || XactReadOnly || RecoveryInProgress())
		return;
	older_than = now - (int64) et_last_used_interval * USECS_PER_SEC;
	if (row->last_used_at == 0 || row->last_used_at < older_than ||
		et_last_used_interval == 0)
		StorageTouchSession(&row->session_id, now,
							et_last_used_interval == 0 ? now + 1 : older_than);
}

/*
 * The whole validation of a token of `len` bytes: the token core's checks,
 * then the session's row, read by the session id that the signature vouches
 * for: the token must be the session's current access token (its hash is
 * the row's access_hash: a correctly signed token that was never issued is
 * not found), and the session must not have ended.  A token seen before
 * may be answered from its session's kept verdict instead of the row
 * (verdict.c).  Counts the outcome and records the use (see record_use()).
 */
static TokenStatus
validate_token(const char *token, size_t len, SessionRow *row,
			   TokenAccessClaims *claims, Jsonb **claims_out, ArrayType *required)
{
	TimestampTz now = GetCurrentTimestamp();
	TokenVerifyParams params;
	TokenStatus status;
	unsigned char hash[TOKEN_HASH_LENGTH];
	JsonbBuild	build = {NULL, NULL, 0, 0, NULL};
	TokenJsonVisitor visitor = {jsonb_build_visit, &build};

	verify_params(&params, now, true);
	if (claims_out != NULL && GetDatabaseEncoding() == PG_UTF8)
		params.visitor = &visitor;
	params.use_cache = true;
	memset(row, 0, sizeof(*row));
	if (token_looks_like_api_key(token, len))
	{
		status = validate_api_key(token, len, row, now);
		if (status == TOKEN_OK && claims_out != NULL)
			*claims_out = api_key_claims(row);
		goto checked;
	}
	status = token_verify_access(token, len, &params, claims);
	if (claims->cache_hit)
		StatsCount(STATS_VALIDATION_CACHED);
	if (status == TOKEN_OK && claims_out != NULL)
		*claims_out = claims_jsonb(claims, params.visitor ? &build : NULL);
	if (status == TOKEN_OK)
	{
		pg_uuid_t	sid;

		if (claims->has_hash)
			memcpy(hash, claims->hash, TOKEN_HASH_LENGTH);
		else
			token_sha256(token, len, hash);
		memcpy(sid.data, claims->session_id, UUID_LEN);
		if (VerdictRecall(claims->cached_note, claims->cached_note_len, &sid,
						  claims->sub, now, row))
			StatsCount(STATS_VALIDATION_KEPT);
		else
		{
			VerdictEpochs epochs;

			/*
			 * Kept from a token's second sight on: a token seen once (most
			 * of a cold cache) does not pay for keeping what it never uses.
			 */
			bool		keep = claims->cache_hit && VerdictReadEpochs(&sid, &epochs);

			StorageLookupSession(&sid, false, row);
			status = PolicySessionVerdict(row, claims->sub,
										  row->found && !row->api_key &&
										  CRYPTO_memcmp(hash, row->access_hash, TOKEN_HASH_LENGTH) == 0,
										  claims->exp, now);
			if (status == TOKEN_OK && keep)
				VerdictRemember(hash, row, &epochs);
		}
	}
checked:
	/* last, after every other check passed */
	if (status == TOKEN_OK && required != NULL && !has_scopes(row->scopes, required))
		status = TOKEN_INSUFFICIENT_SCOPE;
	StatsCountValidation(status);
	if (status == TOKEN_OK)
		record_use(row, now);
	return status;
}

/* extension_token_validate(p_token text) RETURNS extension_token_validation */
PG_FUNCTION_INFO_V1(extension_token_validate);
Datum
extension_token_validate(PG_FUNCTION_ARGS)
{
	TokenAccessClaims claims;	/* on the stack: palloc of 8 kB would malloc */
	TokenStatus status;
	SessionRow	row;
	text	   *token;
	size_t		len;

	LogFilterRedactActivity();
	ConfigRequireSigning();
	memset(&row, 0, sizeof(row));
	if (PG_ARGISNULL(0))
		status = TOKEN_MISSING;
	/* Look at the size before detoasting a possibly huge value. */
	else if (toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ > TOKEN_MAX_LENGTH)
		status = TOKEN_MALFORMED;
	else
	{
		Jsonb	   *claims_jsonb = NULL;

		token = PG_GETARG_TEXT_PP(0);
		len = VARSIZE_ANY_EXHDR(token);
		status = validate_token(VARDATA_ANY(token), len, &row, &claims,
								&claims_jsonb,
								(PG_NARGS() > 1 && !PG_ARGISNULL(1))
								? PG_GETARG_ARRAYTYPE_P(1) : NULL);
		PG_RETURN_DATUM(validation_result(fcinfo, status, &row, claims_jsonb));
	}
	StatsCountValidation(status);
	PG_RETURN_DATUM(validation_result(fcinfo, status, NULL, NULL));
}

/*
 * extension_token_pre_request() RETURNS void, for PostgREST's db-pre-request.
 *
 * PostgREST checks the signature and expiry of a bearer token itself, but
 * knows nothing of revocation.  This decides on what PostgREST verified,
 * request.jwt.claims, and never on a parse of its own of request.headers:
 * PostgREST authenticates with the first Authorization header while
 * request.headers keeps the last, and hostile bytes in any header can make
 * the header JSON unparseable.  A token of ours is told apart by its shape
 * (type "access" and a session_id: see token_request_claims()), not by any
 * setting, so tokens minted before a change of issuer, audience or secret
 * are still recognised.  For ours, the session's row decides: the claims'
 * jti must be that of the session's current access token (for a pair made
 * before 1.2, which has none stored, its exp and iat), the user the row's,
 * and the session not ended.  Anything else, and claims that cannot be
 * read, are refused with PT401 and the reason in DETAIL, so that a
 * revocation takes effect on the very next request.  No claims at all (an
 * anonymous request, or a call outside PostgREST) is left alone.
 */
ET_NORETURN_BEGIN static void
refuse_request(TokenStatus status)
ET_NORETURN_END;

static void
refuse_request(TokenStatus status)
{
	ereport(ERROR,
			(errcode(ERRCODE_ET_UNAUTHORIZED),
			 errmsg("access token rejected"),
			 errdetail("%s", token_status_name(status)),
			 errhidestmt(true)));
}

/*
 * The API key a PostgREST request carries in the api_key_header, if any:
 * true with the key in `key` (NUL-terminated).  A header that is there but
 * cannot be read (not a string, too long, or request.headers unparseable
 * where it names the header) is refused: the caller cannot tell what the
 * client meant.
 */
static bool
request_api_key(char *key, size_t keysize)
{
	const char *headers;
	char		quoted[80];

	if (et_api_key_header == NULL || et_api_key_header[0] == '\0')
		return false;
	headers = GetConfigOption("request.headers", true, false);
	if (headers == NULL || headers[0] == '\0')
		return false;
	switch (token_json_string_member(headers, et_api_key_header, key, keysize))
	{
		case 1:
			return true;
		case 0:
			snprintf(quoted, sizeof(quoted), "\"%s\"", et_api_key_header);
			if (strstr(headers, quoted) == NULL)
				return false;
			/* named, yet not found: request.headers did not parse */
			refuse_request(TOKEN_MALFORMED);
		default:
			refuse_request(TOKEN_MALFORMED);
	}
}

/*
 * A request carrying an API key: the key must be good, and the request must
 * carry no user of its own (an anonymous request, or one whose bearer names
 * no user, as Supabase's anon key): two identities are refused.  Then the
 * request runs as postgrest_role with the key's claims, as PostgREST would
 * run it for that user's own JWT, so that row level security sees the key's
 * user and scopes.
 */
static void
pre_request_api_key(const char *key, const char *claims, TimestampTz now)
{
	SessionRow	row;
	TokenStatus status;
	Jsonb	   *kc;

	if (claims != NULL && claims[0] != '\0')
	{
		char		sub[8];

		if (token_json_string_member(claims, "sub", sub, sizeof(sub)) != 0)
		{
			StatsCountValidation(TOKEN_MALFORMED);
			ereport(ERROR,
					(errcode(ERRCODE_ET_UNAUTHORIZED),
					 errmsg("access token rejected"),
					 errdetail("%s", token_status_name(TOKEN_MALFORMED)),
					 errhint("The request carries both an API key and a user's token: send one of them."),
					 errhidestmt(true)));
		}
	}
	if (et_postgrest_role == NULL || et_postgrest_role[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("API keys in requests need extension_tokens.postgrest_role"),
				 errhint("Set extension_tokens.postgrest_role to the role key requests run as (e.g. authenticated).")));
	status = validate_api_key(key, strlen(key), &row, now);
	StatsCountValidation(status);
	if (status != TOKEN_OK)
		refuse_request(status);
	record_use(&row, now);
	kc = api_key_claims(&row);
	(void) DirectFunctionCall3(set_config_by_name,
							   CStringGetTextDatum("request.jwt.claims"),
							   CStringGetTextDatum(JsonbToCString(NULL, &kc->root, VARSIZE(kc))),
							   BoolGetDatum(true));
	(void) DirectFunctionCall3(set_config_by_name,
							   CStringGetTextDatum("role"),
							   CStringGetTextDatum(et_postgrest_role),
							   BoolGetDatum(true));
}

PG_FUNCTION_INFO_V1(extension_token_pre_request);
Datum
extension_token_pre_request(PG_FUNCTION_ARGS)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	TimestampTz now = GetCurrentTimestamp();
	TokenRequestClaims rc;
	SessionRow	row;
	TokenStatus status = TOKEN_OK;
	pg_uuid_t	sid;
	char		key[API_KEY_LENGTH + 2];

	if (request_api_key(key, sizeof(key)))
	{
		pre_request_api_key(key, claims, now);
		OPENSSL_cleanse(key, sizeof(key));
		PG_RETURN_VOID();
	}
	if (claims == NULL || claims[0] == '\0')
		PG_RETURN_VOID();
	switch (token_request_claims(claims, strlen(claims), &rc))
	{
		case TOKEN_CLAIMS_FOREIGN:
			PG_RETURN_VOID();
		case TOKEN_CLAIMS_UNREADABLE:
			status = TOKEN_MALFORMED;
			break;
		case TOKEN_CLAIMS_OURS:
			break;
	}
	/* an API key's claims come from above, never from a verified JWT */
	if (status == TOKEN_OK && rc.api_key)
		status = TOKEN_NOT_FOUND;
	if (status == TOKEN_OK)
	{
		memcpy(sid.data, rc.session_id, UUID_LEN);
		StorageLookupSession(&sid, false, &row);
		if (row.api_key)
			row.found = false;
		/* current: its jti (a pair made before 1.2 has none: exp and iat) */
		status = PolicySessionVerdict(&row, rc.sub,
								 row.found &&
								 (row.has_jti
								  ? memcmp(rc.jti, row.access_jti, TOKEN_UUID_LENGTH) == 0
								  : (rc.exp == unix_seconds(row.expires_at) &&
									 rc.iat == unix_seconds(row.last_refresh_at ? row.last_refresh_at
															: row.created_at))),
								 rc.exp, now);
		if (status == TOKEN_OK && rc.exp <= unix_seconds(now) - et_clock_skew)
			status = TOKEN_EXPIRED;
	}
	StatsCountValidation(status);
	if (status != TOKEN_OK)
		refuse_request(status);
	record_use(&row, now);
	PG_RETURN_VOID();
}
/* ---------------------------------------------------------------------
 * refresh
 * ---------------------------------------------------------------------
 */

/*
 * Refuses a refresh: counts it, and raises PT401.  For a known session the
 * refusal is recorded on it (last_refresh_error) by the revoker's worker,
 * unless the session recorded one in the last 10 seconds, so that a client
 * hammering with a dead token costs nothing; for reuse, the session is
 * revoked: queued before the error is raised, so that from this moment on
 * no token of the session is accepted (RevokerPending()), and committed by
 * the worker, which this call waits for unless its transaction holds locks
 * the worker may need.
 */
ET_NORETURN_BEGIN static void
refuse_refresh(const SessionRow *row, TimestampTz now, const char *reason,
			   bool reuse)
ET_NORETURN_END;

static void
refuse_refresh(const SessionRow *row, TimestampTz now, const char *reason, bool reuse)
{
	StatsCount(STATS_REFRESH_FAILED);
	if (row != NULL && row->found &&
		(reuse || row->last_refresh_error_at == 0 ||
		 row->last_refresh_error_at < now - 10 * USECS_PER_SEC))
		RevokerSubmit(&row->session_id, reuse, "refresh_token_reuse", reason,
					  row->user_id, NULL,
					  !TransactionIdIsValid(GetTopTransactionIdIfAny()));
	PolicyRefreshRefused(reason);
}

/* Proof of possession of the session's access token, if offered. */
static void
check_current_token(FunctionCallInfo fcinfo, const SessionRow *row, TimestampTz now)
{
	TokenVerifyParams params;
	TokenAccessClaims *claims;
	text	   *current;
	TokenStatus status;

	if (PG_ARGISNULL(1))
		return;
	claims = palloc(sizeof(TokenAccessClaims));
	current = PG_GETARG_TEXT_PP(1);
	verify_params(&params, now, false);
	status = token_verify_access(VARDATA_ANY(current), VARSIZE_ANY_EXHDR(current),
								 &params, claims);
	if (status != TOKEN_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_current_token is not a valid access token"),
				 errdetail("%s", token_status_name(status))));
	if (memcmp(claims->session_id, row->session_id.data, UUID_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_current_token belongs to another session than p_refresh_token")));
	pfree(claims);
}

/*
 * The retry window: the successor pair sealed at the exchange, opened with
 * the signing key (the current one, or the previous one: a rotation within
 * the window) and the presented (exchanged) refresh token.  False if it
 * does not open.
 */
static bool
unseal_with_keys(const char *refresh, size_t len, const SessionRow *row, size_t sealed_len,
				 char *plain)
{
	TokenAlg	alg;
	size_t		keylen;
	const char *key = ConfigSigningKey(&alg, &keylen);

	if (token_unseal((const unsigned char *) key, keylen, refresh, len,
					 row->session_id.data, UUID_LEN,
					 (const unsigned char *) VARDATA_ANY(row->retry_box), sealed_len, plain))
		return true;
	key = ConfigPreviousSigningKey(&keylen);
	return key != NULL &&
		token_unseal((const unsigned char *) key, keylen, refresh, len,
					 row->session_id.data, UUID_LEN,
					 (const unsigned char *) VARDATA_ANY(row->retry_box), sealed_len, plain);
}

static bool
open_retry_box(const SessionRow *row, const char *refresh, size_t len,
			   PairTokens *tokens, NewPair *pair)
{
	size_t		sealed_len = VARSIZE_ANY_EXHDR(row->retry_box);
	size_t		plain_len;
	char	   *plain;
	char	   *nl;
	bool		ok = false;

	if (sealed_len <= TOKEN_SEAL_OVERHEAD + REFRESH_TOKEN_LENGTH + 1)
		return false;
	plain_len = sealed_len - TOKEN_SEAL_OVERHEAD;
	plain = palloc(plain_len + 1);
	if (unseal_with_keys(refresh, len, row, sealed_len, plain))
	{
		plain[plain_len] = '\0';
		nl = memchr(plain, '\n', plain_len);
		if (nl != NULL && plain + plain_len - (nl + 1) == REFRESH_TOKEN_LENGTH)
		{
			*nl = '\0';
			tokens->access = CStringGetTextDatum(plain);
			memcpy(tokens->refresh, nl + 1, REFRESH_TOKEN_LENGTH + 1);
			memset(pair, 0, sizeof(*pair));
			pair->session_id = row->session_id;
			pair->created_at = row->last_refresh_at ? row->last_refresh_at : row->created_at;
			pair->expires_at = row->expires_at;
			pair->refresh_expires_at = row->refresh_expires_at;
			pair->scopes = row->scopes;
			ok = true;
		}
	}
	OPENSSL_cleanse(plain, plain_len + 1);
	pfree(plain);
	return ok;
}

/*
 * Seals the new pair under the signing key and the refresh token it
 * replaces (the retry box).
 */
static unsigned char *
seal_retry_box(const NewPair *pair, const PairTokens *tokens, const char *refresh,
			   size_t len, size_t *box_len)
{
	text	   *access = DatumGetTextPP(tokens->access);
	size_t		alen = VARSIZE_ANY_EXHDR(access);
	size_t		plain_len = alen + 1 + REFRESH_TOKEN_LENGTH;
	char	   *plain = palloc(plain_len);
	unsigned char *box = palloc(plain_len + TOKEN_SEAL_OVERHEAD);
	TokenAlg	alg;
	size_t		keylen;
	const char *key = ConfigSigningKey(&alg, &keylen);
	bool		ok;

	memcpy(plain, VARDATA_ANY(access), alen);
	plain[alen] = '\n';
	memcpy(plain + alen + 1, tokens->refresh, REFRESH_TOKEN_LENGTH);
	ok = token_seal((const unsigned char *) key, keylen, refresh, len, pair->session_id.data,
					UUID_LEN, plain, plain_len, box);
	OPENSSL_cleanse(plain, plain_len);
	pfree(plain);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not seal the new pair for the refresh retry window")));
	*box_len = plain_len + TOKEN_SEAL_OVERHEAD;
	return box;
}

/*
 * extension_token_refresh(p_refresh_token text, p_current_token text)
 *		RETURNS extension_token_pair
 *
 * The presented token leads to its session's row (as its current refresh
 * token, or as an exchanged one), and the row decides (PolicyRefreshDecide()).
 * An exchange is one UPDATE that requires the token to still be the row's
 * current one; when a concurrent call got there first (REFRESH_LOST), the
 * row is read again under a new snapshot and decided again: within the retry
 * window the loser gets the winner's pair, after it (or with a window of 0)
 * the loser's presentation is reuse.
 */
PG_FUNCTION_INFO_V1(extension_token_refresh);
Datum
extension_token_refresh(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTimestamp();
	text	   *refresh;
	const char *rtoken;
	size_t		len;
	unsigned char hash[TOKEN_HASH_LENGTH];
	SessionRow	row;
	NewPair		pair;
	PairTokens	tokens;

	LogFilterRedactActivity();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_refresh_token must not be null")));
	ConfigRequireSigning();
	require_read_write("refresh a token");
	/* Reuse must revoke, whatever happens to this call: see revoker.c. */
	if (!RevokerAvailable())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_tokens must be in shared_preload_libraries to refresh tokens"),
				 errdetail("Refresh-token reuse detection needs the revocation queue that a preloaded library sets up."),
				 errhint("Add extension_tokens to shared_preload_libraries and restart the server.")));

	len = toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ;
	if (len != REFRESH_TOKEN_LENGTH && len != REFRESH_TOKEN_LEGACY_LENGTH)
		refuse_refresh(NULL, now, "refresh_token_not_found", false);
	refresh = PG_GETARG_TEXT_PP(0);
	rtoken = VARDATA_ANY(refresh);
	len = VARSIZE_ANY_EXHDR(refresh);
	if (!token_refresh_well_formed(rtoken, len))
		refuse_refresh(NULL, now, "refresh_token_not_found", false);
	token_sha256(rtoken, len, hash);

	for (int attempt = 0;; attempt++)
	{
		const char *reason;
		TimestampTz retry_at;
		unsigned char *box = NULL;
		size_t		box_len = 0;

		if (!StorageFindRefresh(rtoken, len, hash, &row) || attempt > 1)
			refuse_refresh(NULL, now, "refresh_token_not_found", false);
		switch (PolicyRefreshDecide(&row, hash, now, &reason))
		{
			case RD_REFUSE:
				refuse_refresh(&row, now, reason, false);
				break;
			case RD_REUSE:
				refuse_refresh(&row, now, reason, true);
				break;
			case RD_RETRY:
				check_current_token(fcinfo, &row, now);
				if (!open_retry_box(&row, rtoken, len, &tokens, &pair))
					refuse_refresh(&row, now, "refresh_token_already_used", true);
				StatsCount(STATS_REFRESH_OK);
				PG_RETURN_DATUM(pair_result(fcinfo, &pair, &tokens, 0));
			case RD_EXCHANGE:
				break;
		}
		check_current_token(fcinfo, &row, now);

		/*
		 * The new pair is made from the session's row (its user, name,
		 * claims, lifetime and end never change); the statement that takes
		 * the rate slot and makes the exchange writes it.
		 */
		memset(&pair, 0, sizeof(pair));
		pair.session_id = row.session_id;
		pair.user_id = row.user_id;
		pair.name = row.name;
		pair.claims_json = row.claims_json;
		pair.scopes = row.scopes;
		pair.access_lifetime = row.access_lifetime;
		request_client(&pair);
		pair_times(&pair, now, row.ends_at,
				   Min(row.access_lifetime, (int64) et_refresh_token_lifetime));
		mint_access(&pair, &tokens);
		mint_refresh(&pair, &tokens);
		if (et_refresh_retry_window > 0)
			box = seal_retry_box(&pair, &tokens, rtoken, len, &box_len);
		switch (StorageRefresh(hash, &pair, et_refresh_rate_limit, box, box_len,
							   now + (int64) et_refresh_retry_window * USECS_PER_SEC,
							   &retry_at))
		{
			case REFRESH_DONE:
				StatsCount(STATS_REFRESH_OK);
				PG_RETURN_DATUM(pair_result(fcinfo, &pair, &tokens, 0));
			case REFRESH_RATE_LIMITED:
				StatsCount(STATS_REFRESH_FAILED);
				rate_limited(true, row.user_id, &row.session_id, now, retry_at);
				break;
			case REFRESH_LOST:
				/* Someone else exchanged, revoked or expired it meanwhile. */
				now = GetCurrentTimestamp();
				break;
		}
	}
}

/* ---------------------------------------------------------------------
 * revoke, revoke_session, revoke_user, list, the session rule
 * ---------------------------------------------------------------------
 */

/*
 * The session a presented token belongs to: a refresh token's (current or
 * exchanged, found by its hash), or an access token's whose signature
 * verifies (its session_id claim; neither expiry nor the issuer and audience
 * settings, which may have changed since it was minted, matter here).  A token
 * stays a member of its session whatever happens to the session after: so a
 * revocation racing a refresh that rotates the pair still finds the session,
 * and revokes it after the refresh (one row: the new pair ends with it).
 */
static bool
token_session(const char *token, size_t len, pg_uuid_t *sid)
{
	unsigned char hash[TOKEN_HASH_LENGTH];

	if (token_looks_like_api_key(token, len))
	{
		SessionRow	row;

		if (!token_api_key_session(token, len, sid->data))
			return false;
		token_sha256(token, len, hash);
		StorageLookupSession(sid, false, &row);
		return row.found && row.api_key &&
			CRYPTO_memcmp(hash, row.access_hash, TOKEN_HASH_LENGTH) == 0;
	}
	if (token_looks_like_refresh(token, len))
	{
		SessionRow	row;

		if (!token_refresh_well_formed(token, len))
			return false;
		token_sha256(token, len, hash);
		if (!StorageFindRefresh(token, len, hash, &row))
			return false;
		*sid = row.session_id;
		return true;
	}
	else
	{
		TokenVerifyParams params;
		TokenAccessClaims *claims = palloc(sizeof(TokenAccessClaims));
		bool		ok;
		TokenStatus status;
		size_t		keylen;

		verify_params(&params, GetCurrentTimestamp(), false);
		/* ours whatever issuer or audience was in force when minted */
		params.issuer = NULL;
		params.audience = NULL;
		status = token_verify_access(token, len, &params, claims);

		/*
		 * And whatever algorithm signed it: after a switch from HS256 to
		 * ES256 or EdDSA, an add-in that signs out with its last HS256 access
		 * token must still end its session.  Only a token correctly signed
		 * with a secret still configured counts, and it can only revoke.
		 */
		if (status == TOKEN_UNSUPPORTED_ALGORITHM && params.alg != TOKEN_ALG_HS256 &&
			(params.key = (const unsigned char *) ConfigSecretIfAny(&keylen)) != NULL)
		{
			params.alg = TOKEN_ALG_HS256;
			params.keylen = keylen;
			params.prev_key = (const unsigned char *) ConfigPreviousSecret(&keylen);
			params.prev_keylen = params.prev_key ? keylen : 0;
			status = token_verify_access(token, len, &params, claims);
		}
		ok = status == TOKEN_OK;
		if (ok)
			memcpy(sid->data, claims->session_id, UUID_LEN);
		pfree(claims);
		return ok;
	}
}

/* extension_token_revoke(p_token text) RETURNS boolean (RFC 7009) */
PG_FUNCTION_INFO_V1(extension_token_revoke);
Datum
extension_token_revoke(PG_FUNCTION_ARGS)
{
	text	   *token;
	pg_uuid_t	sid;

	LogFilterRedactActivity();
	require_read_write("revoke a token");
	if (PG_ARGISNULL(0) ||
		toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ > TOKEN_MAX_LENGTH)
		PG_RETURN_BOOL(false);
	token = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(token) == 0)
		PG_RETURN_BOOL(false);
	ConfigRequireSigning();
	if (!token_session(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &sid))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(StorageRevokeSession(sid, GetCurrentTimestamp(), "revoked") > 0);
}

/* extension_token_revoke_session(p_session_id uuid) RETURNS boolean */
PG_FUNCTION_INFO_V1(extension_token_revoke_session);
Datum
extension_token_revoke_session(PG_FUNCTION_ARGS)
{
	SessionRow	row;
	pg_uuid_t	sid;

	require_read_write("revoke a session");
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	sid = *PG_GETARG_UUID_P(0);
	StorageLookupSession(&sid, false, &row);
	if (!row.found)
		PG_RETURN_BOOL(false);
	/* who may act for whom, as for list: raises 42501 otherwise */
	(void) PolicyResolveUser(row.user_id, "revoke");
	PolicyRequireScopeToManage("revoke other sessions", &sid);
	if (!PolicyCallerIsAdmin())
		PG_RETURN_BOOL(StorageRevokeSession(sid, GetCurrentTimestamp(), "revoked") > 0);
	if (StorageRevokeSession(sid, GetCurrentTimestamp(), "admin_revoked") == 0)
		PG_RETURN_BOOL(false);
	ereport(LOG,
			(errmsg("extension_tokens: session %s of user \"%s\" revoked by administrator \"%s\"",
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&sid))),
					row.user_id, GetUserNameFromId(GetUserId(), false)),
			 errhidestmt(true)));
	PG_RETURN_BOOL(true);
}

/*
 * revoke_user_extension_tokens(p_user_id text, p_except_session_id uuid)
 *		RETURNS integer
 */
PG_FUNCTION_INFO_V1(revoke_user_extension_tokens);
Datum
revoke_user_extension_tokens(PG_FUNCTION_ARGS)
{
	const char *user = PolicyResolveUser(text_arg(fcinfo, 0), "revoke");
	pg_uuid_t  *except = PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1);
	uint64		n;

	PolicyRequireScopeToManage("revoke sessions", NULL);
	require_read_write("revoke tokens");
	n = StorageRevokeUser(user, except, GetCurrentTimestamp(), "user_revoked_all");
	if (n > 0 && PolicyCallerIsAdmin())
		ereport(LOG,
				(errmsg("extension_tokens: %llu sessions of user \"%s\" revoked by administrator \"%s\"",
						(unsigned long long) n, user, GetUserNameFromId(GetUserId(), false)),
				 errhidestmt(true)));
	PG_RETURN_INT32((int32) Min(n, (uint64) PG_INT32_MAX));
}

/* extension_token_list(p_user_id text) RETURNS SETOF extension_token_session */
PG_FUNCTION_INFO_V1(extension_token_list);
Datum
extension_token_list(PG_FUNCTION_ARGS)
{
	const char *user = PolicyResolveUser(text_arg(fcinfo, 0), "list");

	PolicyRequireScopeToManage("list sessions", NULL);
	InitMaterializedSRF(fcinfo, 0);
	StorageListSessions(user, GetCurrentTimestamp(), (ReturnSetInfo *) fcinfo->resultinfo);
	return (Datum) 0;
}

/*
 * extension_token_events(p_user_id text, p_since timestamptz)
 *		RETURNS SETOF extension_token_event
 *
 * A user's own events; for an administrator p_user_id's, or with NULL
 * everyone's.
 */
PG_FUNCTION_INFO_V1(extension_token_events);
Datum
extension_token_events(PG_FUNCTION_ARGS)
{
	const char *p_user_id = text_arg(fcinfo, 0);
	const char *user;
	TimestampTz since = PG_ARGISNULL(1) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(1);

	if (p_user_id == NULL && PolicyCallerIsAdmin())
		user = NULL;
	else
		user = PolicyResolveUser(p_user_id, "audit");
	PolicyRequireScopeToManage("read the audit trail", NULL);
	InitMaterializedSRF(fcinfo, 0);
	StorageListEvents(user, since, (ReturnSetInfo *) fcinfo->resultinfo);
	return (Datum) 0;
}

/*
 * extension_token_events_by_token(p_token text)
 *		RETURNS SETOF extension_token_event
 *
 * Incident response, administrators only: the events of the session the
 * token belongs to, found by its SHA-256 (and, for a token that still
 * proves its session, by that session).  The token is kept out of the
 * activity shown to others, and never stored or logged.
 */
PG_FUNCTION_INFO_V1(extension_token_events_by_token);
Datum
extension_token_events_by_token(PG_FUNCTION_ARGS)
{
	text	   *token;
	unsigned char hash[TOKEN_HASH_LENGTH];
	pg_uuid_t	sid;
	bool		has_sid = false;
	size_t		keylen;
	size_t		len;

	LogFilterRedactActivity();
	if (!PolicyCallerIsAdmin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to look up events by token"),
				 errhint("Call it as a role named in extension_tokens.admin_roles.")));
	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0) ||
		toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ > TOKEN_MAX_LENGTH)
		return (Datum) 0;
	token = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(token);
	if (len == 0)
		return (Datum) 0;
	token_sha256(VARDATA_ANY(token), len, hash);
	(void) ConfigRequireSecret(&keylen);
	has_sid = token_session(VARDATA_ANY(token), len, &sid);
	StorageEventsByToken(hash, has_sid ? &sid : NULL, (ReturnSetInfo *) fcinfo->resultinfo);
	return (Datum) 0;
}

/*
 * extension_token_session_state(p_revoked_at, p_refresh_expires_at,
 *		p_ends_at, p_idle_timeout, p_last_active, p_at) RETURNS text
 *
 * The SQL face of PolicySessionEnd(), for list, stats and the admin view.
 * NULL ends, idle timeout or revocation mean none; NULL p_at gives NULL.
 */
PG_FUNCTION_INFO_V1(extension_token_session_state);
Datum
extension_token_session_state(PG_FUNCTION_ARGS)
{
	TimestampTz refresh_expires = PG_ARGISNULL(1) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz ends = PG_ARGISNULL(2) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(2);
	int64		idle = 0;
	TimestampTz last_active = PG_ARGISNULL(4) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(4);

	if (PG_ARGISNULL(5))
		PG_RETURN_NULL();
	if (!PG_ARGISNULL(3))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(3);

		if (pg_mul_s64_overflow((int64) iv->month * DAYS_PER_MONTH + iv->day,
								USECS_PER_DAY, &idle) ||
			pg_add_s64_overflow(idle, iv->time, &idle))
			idle = PG_INT64_MAX;
	}
	PG_RETURN_TEXT_P(cstring_to_text(PolicySessionStatus(
		PolicySessionEnd(!PG_ARGISNULL(0), refresh_expires, ends, Max(idle, 0),
						 last_active, PG_GETARG_TIMESTAMPTZ(5)))));
}

/* ---------------------------------------------------------------------
 * Operations: cleanup, pg_cron, statistics
 * ---------------------------------------------------------------------
 */

/*
 * Compares the signing keys in force with those this database last
 * recorded, and records a secret_rotated event when they differ (one LOG
 * line, key ids only).  A backend takes a reload between statements, the
 * revoker's worker within a second; one busy in a long statement may not
 * have yet.  So a rotation is recorded here only when this backend and the
 * worker agree on the keys in force (else a reload is under way, and the
 * sweep it starts records it); a database with no record yet (the install)
 * starts from this backend's keys.  Without the worker, this backend's keys
 * are the keys.
 */
static bool
check_signing_keys(void)
{
	SigningIds	ids;
	SigningIds	seen;
	TimestampTz at = GetCurrentTimestamp();
	bool		agreed = true;
	char	   *reason;
	char	   *actor = GetUserNameFromId(GetUserId(), false);

	ConfigSigningIds(&ids);
	if (RevokerKeysSeen(&seen, &at))
		agreed = memcmp(&ids, &seen, sizeof(ids)) == 0;
	if (!StorageCheckSigningKeys(ids.algorithm, ids.secret_id, ids.key_id, at, actor,
								 agreed, false, &reason))
		return false;
	ereport(LOG,
			(errmsg("extension_tokens: signing keys rotated in database \"%s\": %s",
					get_database_name(MyDatabaseId), reason),
			 errhidestmt(true)));
	return true;
}

/*
 * extension_tokens_check_signing_keys() RETURNS boolean, for administrators:
 * true when it recorded a rotation.  The 1.2 script calls it last, so that a
 * database starts from the keys in force when the extension was installed.
 */
PG_FUNCTION_INFO_V1(extension_tokens_check_signing_keys);
Datum
extension_tokens_check_signing_keys(PG_FUNCTION_ARGS)
{
	if (!PolicyCallerIsAdmin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to record the signing keys"),
				 errhint("Call it as a role named in extension_tokens.admin_roles.")));
	require_read_write("record the signing keys");
	PG_RETURN_BOOL(check_signing_keys());
}

/* extension_tokens_cleanup(p_retention interval) RETURNS bigint */
PG_FUNCTION_INFO_V1(extension_tokens_cleanup);
Datum
extension_tokens_cleanup(PG_FUNCTION_ARGS)
{
	int64		retention = et_cleanup_retention;
	uint64		deleted;

	if (!PG_ARGISNULL(0))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(0);
		int64		usecs;

		if (pg_mul_s64_overflow((int64) iv->month * DAYS_PER_MONTH + iv->day,
								USECS_PER_DAY, &usecs) ||
			pg_add_s64_overflow(usecs, iv->time, &usecs) || usecs < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_retention must be a non-negative interval")));
		retention = usecs / USECS_PER_SEC;
	}
	deleted = StorageCleanup(GetCurrentTimestamp() - retention * USECS_PER_SEC,
							 et_event_retention > 0
							 ? GetCurrentTimestamp() - (int64) et_event_retention * USECS_PER_SEC
							 : 0,
							 et_cleanup_batch_size,
							 et_cleanup_batch_delay);
	/*
	 * A rotation the revoker's worker could not record here is, now; last,
	 * so that the record's lock is held for a moment only.
	 */
	(void) check_signing_keys();
	PG_RETURN_INT64((int64) deleted);
}

/*
 * What extension_tokens_cleanup_schedule(p_schedule text, p_quiet boolean)
 * and extension_tokens_cleanup_unschedule() return (text): the job
 * scheduled or removed (`schedule` NULL: the jobs there brought up to date),
 * through a worker in the cron database.  A failure
 * raises, or with `raise` false (p_quiet) is a WARNING and "not scheduled".
 */
static Datum
cron_call(bool unschedule, const char *schedule, bool raise)
{
	int64		jobs = 0;
	char	   *message = NULL;

	if (!unschedule && schedule == NULL ?
		!WorkerCronRenamed(NULL, NULL, &jobs, &message) :
		!WorkerCron(unschedule, schedule, &jobs, &message))
	{
		if (raise)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("could not %s the cleanup job: %s",
							unschedule ? "remove" : "schedule", message)));
		ereport(WARNING,
				(errmsg("extension_tokens cleanup is not scheduled: %s", message),
				 errhint("Run SELECT extension_tokens_cleanup() periodically, or install pg_cron and run SELECT extension_tokens_cleanup_schedule().")));
		return CStringGetTextDatum("not scheduled");
	}
	return CStringGetTextDatum(message);
}

PG_FUNCTION_INFO_V1(extension_tokens_cleanup_schedule);
Datum
extension_tokens_cleanup_schedule(PG_FUNCTION_ARGS)
{
	bool		quiet = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);

	if (!PolicyCallerIsAdmin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to schedule the cleanup")));
	/* NULL: the jobs there are made this version's, schedules kept (an update) */
	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(cron_call(false, NULL, !quiet));
	PG_RETURN_DATUM(cron_call(false, text_to_cstring(PG_GETARG_TEXT_PP(0)), !quiet));
}

PG_FUNCTION_INFO_V1(extension_tokens_cleanup_unschedule);
Datum
extension_tokens_cleanup_unschedule(PG_FUNCTION_ARGS)
{
	if (!PolicyCallerIsAdmin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to unschedule the cleanup")));
	PG_RETURN_DATUM(cron_call(true, NULL, true));
}

/* extension_token_stats() RETURNS extension_token_statistics */
PG_FUNCTION_INFO_V1(extension_token_stats);
Datum
extension_token_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo);
	TimestampTz now = GetCurrentTimestamp();
	StatsSnapshot snap;
	StoredCounts counts;
	bool		have = StatsRead(&snap);
	Datum		values[15];
	bool		nulls[15] = {false};
	uint64		failed = 0;
	JsonbParseState *state = NULL;
	JsonbValue *res;

	StorageCounts(now, &counts);
	values[0] = TimestampTzGetDatum(snap.since);
	values[1] = BoolGetDatum(have);
	values[2] = Int64GetDatum((int64) snap.events[STATS_ISSUED]);
	values[3] = Int64GetDatum(counts.issued_24h);
	values[4] = Int64GetDatum(counts.sessions_active);
	values[5] = Int64GetDatum(counts.sessions_revoked);
	values[6] = Int64GetDatum(counts.sessions_expired);
	values[7] = Int64GetDatum((int64) snap.events[STATS_REFRESH_OK]);
	values[8] = Int64GetDatum((int64) snap.events[STATS_REFRESH_FAILED]);
	values[9] = Int64GetDatum((int64) snap.validations[TOKEN_OK]);

	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = TOKEN_OK + 1; i < TOKEN_STATUS_COUNT; i++)
	{
		JsonbValue	k,
					v;
		const char *name = token_status_name((TokenStatus) i);

		failed += snap.validations[i];
		k.type = jbvString;
		k.val.string.val = (char *) name;
		k.val.string.len = strlen(name);
		v.type = jbvNumeric;
		v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric,
															Int64GetDatum((int64) snap.validations[i])));
		(void) pushJsonbValue(&state, WJB_KEY, &k);
		(void) pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	values[10] = Int64GetDatum((int64) failed);
	values[11] = JsonbPGetDatum(JsonbValueToJsonb(res));
	values[12] = TimestampTzGetDatum(now);
	values[13] = Int64GetDatum((int64) snap.events[STATS_VALIDATION_CACHED]);
	values[14] = Int64GetDatum((int64) snap.events[STATS_VALIDATION_KEPT]);
	if (!have)
	{
		/* without shared memory there are no counters: unknown, not zero */
		nulls[0] = nulls[2] = nulls[7] = nulls[8] = nulls[9] = nulls[10] = nulls[11] = true;
		nulls[13] = nulls[14] = true;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* extension_token_stats_reset() RETURNS timestamptz */
PG_FUNCTION_INFO_V1(extension_token_stats_reset);
Datum
extension_token_stats_reset(PG_FUNCTION_ARGS)
{
	TimestampTz since = StatsReset();

	if (since == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_tokens statistics are not available"),
				 errhint("Add extension_tokens to shared_preload_libraries and restart the server.")));
	PG_RETURN_TIMESTAMPTZ(since);
}

/* The RFC 7638 thumbprint of an asymmetric key (PEM), as its key id. */
static void
signing_key_thumbprint(const char *pem, size_t len, char out[TOKEN_KID_MAX_LENGTH + 1])
{
	const char *why;
	TokenKeyPair *kp = token_keypair_load(pem, len, &why);

	if (kp == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the signing key cannot be used: %s", why)));
	memcpy(out, token_keypair_kid(kp), TOKEN_THUMBPRINT_LENGTH + 1);
	token_keypair_free(kp);
}

/*
 * extension_tokens_signing_keys() RETURNS TABLE (key_id text, status text,
 *		live_sessions bigint), for administrators: the key ids (never the
 * secrets) of the current and the previous secret (under ES256 and EdDSA:
 * the RFC 7638 thumbprints of the current and previous keys), and how many live
 * sessions' unexpired access tokens each signed; then those signed by any
 * other key ('retired'; key_id NULL for pairs made before 1.2).  A rotation
 * is done when the previous key signs no live session.
 */
PG_FUNCTION_INFO_V1(extension_tokens_signing_keys);
Datum
extension_tokens_signing_keys(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		kid[2][TOKEN_KID_MAX_LENGTH + 1];
	const char *keys[2];
	TokenAlg	alg;
	size_t		lens[2] = {0, 0};
	char	   *kids[64];
	int64		counts[64];
	int			n;
	bool		shown[64] = {false};

	if (!PolicyCallerIsAdmin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read the signing keys")));
	keys[0] = ConfigSigningKey(&alg, &lens[0]);
	keys[1] = ConfigPreviousSigningKey(&lens[1]);
	InitMaterializedSRF(fcinfo, 0);
	n = StorageKeyCounts(GetCurrentTimestamp(), kids, counts, lengthof(kids));
	for (int k = 0; k < 2; k++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		int64		live = 0;

		if (keys[k] == NULL)
			continue;
		if (alg == TOKEN_ALG_HS256)
			token_key_id((const unsigned char *) keys[k], lens[k], kid[k]);
		else
			signing_key_thumbprint(keys[k], lens[k], kid[k]);
		for (int i = 0; i < n; i++)
			if (kids[i] && strcmp(kids[i], kid[k]) == 0)
			{
				live += counts[i];
				shown[i] = true;
			}
		values[0] = CStringGetTextDatum(kid[k]);
		values[1] = CStringGetTextDatum(k == 0 ? "current" : "previous");
		values[2] = Int64GetDatum(live);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	for (int i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		if (shown[i])
			continue;
		values[0] = kids[i] ? CStringGetTextDatum(kids[i]) : (Datum) 0;
		nulls[0] = kids[i] == NULL;
		values[1] = CStringGetTextDatum("retired");
		values[2] = Int64GetDatum(counts[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * extension_token_jwks() RETURNS jsonb: the public JWK Set of the signing
 * keys (current, then previous) under ES256 or EdDSA, for anyone (PostgREST's
 * jwt-secret, any JWT library).  Under HS256 the set is empty: a secret is
 * never published.  Never raises for a misconfiguration: a key that is not
 * usable is simply not in the set.
 */
PG_FUNCTION_INFO_V1(extension_token_jwks);
Datum
extension_token_jwks(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	int			n = 0;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"keys\": [");
	for (int which = 0; which < 2; which++)
	{
		size_t		len;
		const char *pem = ConfigSigningKeyFile(which, &len);
		const char *why;
		TokenKeyPair *kp;
		char		jwk[TOKEN_JWK_MAX_LENGTH];

		if (pem == NULL)
			continue;
		kp = token_keypair_load(pem, len, &why);
		if (kp == NULL)
			continue;
		/* freed before anything that can raise */
		strlcpy(jwk, token_keypair_jwk(kp), sizeof(jwk));
		token_keypair_free(kp);
		if (n++ > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, jwk);
	}
	appendStringInfoString(&buf, "]}");
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* ---------------------------------------------------------------------
 * Device authorization (RFC 8628): the hand-off from dashboard to add-in
 * ---------------------------------------------------------------------
 */

#define DEVICE_POLL_INTERVAL	5
/* Failed approvals a user may make per hour (the guard against guessing). */
#define DEVICE_MAX_FAILURES		10

ET_NORETURN_BEGIN static void device_refuse(const char *reason) ET_NORETURN_END;

static void
device_refuse(const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_ET_BAD_REQUEST),
			 errmsg("device authorization refused"),
			 errdetail("%s", reason)));
}

/*
 * extension_token_device_start(p_name text, p_scopes text[])
 *		RETURNS extension_token_device
 */
PG_FUNCTION_INFO_V1(extension_token_device_start);
Datum
extension_token_device_start(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo);
	char		device_code[DEVICE_CODE_LENGTH + 1];
	char		user_code[USER_CODE_LETTERS + 2];
	char		normal[USER_CODE_LETTERS + 1];
	unsigned char device_hash[TOKEN_HASH_LENGTH];
	unsigned char user_hash[TOKEN_HASH_LENGTH];
	const char *name;
	Datum		scopes;
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	StorageCheckVersion();
	ConfigRequireSigning();
	require_read_write("start a device authorization");
	name = PG_ARGISNULL(0) ? DEFAULT_TOKEN_NAME : checked_name(PG_GETARG_TEXT_PP(0));
	scopes = PG_ARGISNULL(1) ? (Datum) 0 : checked_scopes(PG_GETARG_ARRAYTYPE_P(1));
	if (!token_make_device_code(device_code) || !token_make_user_code(user_code))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a device code")));
	(void) token_normalize_user_code(user_code, strlen(user_code), normal);
	token_sha256(device_code, DEVICE_CODE_LENGTH, device_hash);
	token_sha256(normal, USER_CODE_LETTERS, user_hash);
	StorageDeviceStart(device_hash, user_hash, name, scopes, now,
					   now + (int64) PolicyDeviceCodeLifetime() * USECS_PER_SEC,
					   DEVICE_POLL_INTERVAL);
	values[0] = CStringGetTextDatum(device_code);
	values[1] = CStringGetTextDatum(user_code);
	if (PolicyDeviceVerificationUri() != NULL)
		values[2] = CStringGetTextDatum(psprintf("%s%suser_code=%s",
												 PolicyDeviceVerificationUri(),
												 strchr(PolicyDeviceVerificationUri(), '?') ? "&" : "?",
												 user_code));
	else
		nulls[2] = true;
	values[3] = Int32GetDatum(PolicyDeviceCodeLifetime());
	values[4] = Int32GetDatum(DEVICE_POLL_INTERVAL);
	OPENSSL_cleanse(device_code, sizeof(device_code));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * Approve or deny, by the signed-in user: the code as a person types it.
 * Failed attempts are counted per user, and refused (PT429) beyond
 * DEVICE_MAX_FAILURES an hour: 20^8 codes, so guessing a live one takes
 * far more tries than anyone gets.
 */
static bool
device_decide(FunctionCallInfo fcinfo, bool approve)
{
	const char *user;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz oldest;
	char		normal[USER_CODE_LETTERS + 1];
	unsigned char user_hash[TOKEN_HASH_LENGTH];
	text	   *code;

	StorageCheckVersion();
	user = PolicyResolveUser(approve ? text_arg(fcinfo, 1) : NULL, approve ? "approve" : "deny");
	PolicyRequireManageScope(approve ? "approve device authorizations" : "deny device authorizations");
	require_read_write("decide a device authorization");
	if (StorageDeviceFailures(user, now - USECS_PER_HOUR, &oldest) >= DEVICE_MAX_FAILURES)
	{
		record_rate_limit("device_approval_failures", user, NULL);
		PolicyTooManyAttempts(now, oldest ? oldest + USECS_PER_HOUR : 0);
	}
	if (PG_ARGISNULL(0))
		return false;
	code = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(code) > 64 ||
		!token_normalize_user_code(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code), normal))
		memset(normal, 0, sizeof(normal));	/* counts as a failed attempt */
	token_sha256(normal, USER_CODE_LETTERS, user_hash);
	return StorageDeviceDecide(user_hash, user, approve, now);
}

/* extension_token_device_approve(p_user_code text, p_user_id text) RETURNS boolean */
PG_FUNCTION_INFO_V1(extension_token_device_approve);
Datum
extension_token_device_approve(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(device_decide(fcinfo, true));
}

/* extension_token_device_deny(p_user_code text) RETURNS boolean */
PG_FUNCTION_INFO_V1(extension_token_device_deny);
Datum
extension_token_device_deny(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(device_decide(fcinfo, false));
}

/*
 * extension_token_device_poll(p_device_code text) RETURNS extension_token_pair
 *
 * The add-in's poll.  Approved: the session is created for the user who
 * approved it (with the name and scopes the add-in asked for, under that
 * user's limits) and its pair returned, once: the code is consumed in the
 * same transaction.  Otherwise PT400: authorization_pending, slow_down
 * (polled again within the interval: counted in shared memory, since the
 * refusal rolls back what it writes), access_denied, expired_token (also
 * for an unknown or consumed code).
 */
PG_FUNCTION_INFO_V1(extension_token_device_poll);
Datum
extension_token_device_poll(PG_FUNCTION_ARGS)
{
	unsigned char device_hash[TOKEN_HASH_LENGTH];
	StoredDevice dev;
	TimestampTz now = GetCurrentTimestamp();
	NewPair		pair;
	text	   *code;
	Datum		result;
	bool		first_too_soon;

	LogFilterRedactActivity();
	StorageCheckVersion();
	ConfigRequireSigning();
	require_read_write("poll a device authorization");
	if (PG_ARGISNULL(0) ||
		toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ != DEVICE_CODE_LENGTH)
		device_refuse("expired_token");
	code = PG_GETARG_TEXT_PP(0);
	token_sha256(VARDATA_ANY(code), VARSIZE_ANY_EXHDR(code), device_hash);
	/* past its lifetime, approved or not: RFC 8628 3.5, and README */
	if (!StorageDevicePoll(device_hash, &dev) || strcmp(dev.status, "consumed") == 0 ||
		now >= dev.expires_at)
		device_refuse("expired_token");
	if (strcmp(dev.status, "denied") == 0)
		device_refuse("access_denied");
	if (UsagePolledTooSoon(device_hash, now, dev.interval_s, &first_too_soon))
	{
		/*
		 * The polling interval is a rate limit too, though RFC 8628 answers
		 * it with a PT400: recorded once per code (the first slow_down), as
		 * anyone may poll a code they started, as often as they like.
		 */
		if (first_too_soon)
			record_rate_limit("device_poll_interval",
							  strcmp(dev.status, "approved") == 0 ? dev.user_id : NULL, NULL);
		device_refuse("slow_down");
	}
	if (strcmp(dev.status, "pending") == 0)
		device_refuse("authorization_pending");

	/* approved: the session, once */
	memset(&pair, 0, sizeof(pair));
	pair.user_id = dev.user_id;
	pair.name = dev.name;
	pair.scopes = dev.scopes;
	request_client(&pair);
	result = issue_session(fcinfo, &pair, et_access_token_lifetime);
	StorageDeviceConsume(device_hash, &pair.session_id);
	PG_RETURN_DATUM(result);
}
