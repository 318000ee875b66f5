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

#include <openssl/crypto.h>

#include "access/detoast.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "common/int.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "config.h"
#include "logfilter.h"
#include "policy.h"
#include "stats.h"
#include "storage.h"
#include "token.h"
#include "worker.h"

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
	StorageInit();
	LogFilterInit();
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

/* Signs the access token of `pair` (times and identity filled in). */
static void
mint_access(NewPair *pair, PairTokens *out)
{
	size_t		keylen;
	const char *key = ConfigRequireSecret(&keylen);
	TokenAccessSpec spec;
	char		sub[37];
	const char *why = NULL;
	char	   *jwt;

	token_uuid_format(pair->user_id.data, sub);
	spec.issuer = et_jwt_issuer;
	spec.audience = et_jwt_audience;
	spec.sub = sub;
	spec.session_id = pair->session_id.data;
	spec.iat = unix_seconds(pair->created_at);
	spec.exp = unix_seconds(pair->expires_at);
	spec.extra_claims_json = pair->claims_json;
	spec.extra_claims_len = pair->claims_json ? strlen(pair->claims_json) : 0;
	spec.with_kid = true;
	spec.role = (et_postgrest_role && et_postgrest_role[0]) ? et_postgrest_role : NULL;

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
	if (!token_make_refresh(out->refresh) ||
		!token_sha256(out->refresh, REFRESH_TOKEN_LENGTH, pair->refresh_hash))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a refresh token")));
}

static Datum
pair_result(FunctionCallInfo fcinfo, const NewPair *pair, PairTokens *tokens)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo);
	Datum		values[7];
	bool		nulls[7] = {false};
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
checked_claims(Jsonb *claims)
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

			if (token_is_reserved_claim(key))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("p_claims may not set the reserved claim \"%s\"", key),
						 errdetail("iss, sub, aud, exp, nbf, iat, jti, type, session_id and role are written by the extension only.")));
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

	if (chars < 1 || chars > MAX_NAME_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_name must be between 1 and %d characters long",
						MAX_NAME_LENGTH)));
	return s;
}

/*
 * The end of a session created at `created`, in whole seconds since the Unix
 * epoch, under session_max_lifetime (PG_INT64_MAX when there is none).
 */
static int64
session_end(TimestampTz created)
{
	return et_session_max_lifetime > 0
		? unix_seconds(created) + et_session_max_lifetime : PG_INT64_MAX;
}

/* Both expiry times of a pair minted at `now` in a session created at `created`. */
static void
pair_times(NewPair *pair, TimestampTz now, TimestampTz created, int64 lifetime)
{
	int64		end = session_end(created);

	pair->created_at = now;
	pair->expires_at = from_unix_seconds(Min(unix_seconds(now) + lifetime, end));
	pair->refresh_expires_at =
		from_unix_seconds(Min(unix_seconds(now) + et_refresh_token_lifetime, end));
}

/*
 * extension_token_issue(p_user_id uuid, p_name text, p_lifetime interval,
 *						 p_claims jsonb) RETURNS extension_token_pair
 */
PG_FUNCTION_INFO_V1(extension_token_issue);
Datum
extension_token_issue(PG_FUNCTION_ARGS)
{
	NewPair		pair;
	PairTokens	tokens;
	size_t		keylen;
	TimestampTz now;
	TimestampTz retry_at;
	int64		lifetime;

	(void) ConfigRequireSecret(&keylen);
	require_read_write("issue a token");
	memset(&pair, 0, sizeof(pair));
	pair.name = PG_ARGISNULL(1) ? DEFAULT_TOKEN_NAME : checked_name(PG_GETARG_TEXT_PP(1));
	lifetime = PG_ARGISNULL(2) ? et_access_token_lifetime
		: lifetime_seconds(PG_GETARG_INTERVAL_P(2));
	if (lifetime > et_refresh_token_lifetime)
		lifetime = et_refresh_token_lifetime;
	pair.claims_json = PG_ARGISNULL(3) ? NULL : checked_claims(PG_GETARG_JSONB_P(3));
	pair.user_id = PolicyResolveUser(!PG_ARGISNULL(0),
									 PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0),
									 "issue");

	now = GetCurrentTimestamp();
	if (!token_random_uuid(pair.session_id.data))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a session id")));
	pair.access_lifetime = lifetime;
	pair_times(&pair, now, now, lifetime);
	mint_access(&pair, &tokens);
	mint_refresh(&pair, &tokens);
	/* the rate slot and the new rows (one statement), then the session limit */
	if (!StorageIssue(&pair, et_issue_rate_limit, et_max_sessions_per_user, &retry_at))
		PolicyRateLimited(false, now, retry_at);
	StatsCount(STATS_ISSUED);
	PG_RETURN_DATUM(pair_result(fcinfo, &pair, &tokens));
}

/* ---------------------------------------------------------------------
 * validate
 * ---------------------------------------------------------------------
 */

static Datum
validation_result(FunctionCallInfo fcinfo, TokenStatus status,
				  const StoredToken *row, Jsonb *claims)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo);
	Datum		values[7];
	bool		nulls[7] = {false, false, true, true, true, true, true};

	values[0] = BoolGetDatum(status == TOKEN_OK);
	if (status != TOKEN_OK)
		values[1] = CStringGetTextDatum(token_status_name(status));
	else
	{
		pg_uuid_t  *uid = palloc(sizeof(pg_uuid_t));
		pg_uuid_t  *sid = palloc(sizeof(pg_uuid_t));

		*uid = row->user_id;
		*sid = row->session_id;
		nulls[1] = true;
		values[2] = UUIDPGetDatum(uid);
		values[3] = UUIDPGetDatum(sid);
		values[4] = CStringGetTextDatum(row->name);
		values[5] = TimestampTzGetDatum(row->expires_at);
		values[6] = JsonbPGetDatum(claims);
		for (int i = 2; i < 7; i++)
			nulls[i] = false;
	}
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/*
 * The claims as jsonb, built from the parse the verifier already made of
 * them (see token_payload_walk) rather than by parsing the text a second
 * time.  Falls back to jsonb_in for what that cannot carry exactly: a real
 * number (jansson keeps its value, not its digits) or a database encoding
 * other than UTF-8.
 */
typedef struct JsonbBuild
{
	JsonbParseState *state;
	JsonbValue *result;
} JsonbBuild;

static void
jsonb_build_visit(void *arg, TokenJsonEvent event, bool in_array,
				  const char *str, size_t len, int64_t integer)
{
	JsonbBuild *b = arg;
	JsonbValue	v;
	JsonbIteratorToken seq = in_array ? WJB_ELEM : WJB_VALUE;

	switch (event)
	{
		case TJ_OBJECT_START:
			b->result = pushJsonbValue(&b->state, WJB_BEGIN_OBJECT, NULL);
			return;
		case TJ_OBJECT_END:
			b->result = pushJsonbValue(&b->state, WJB_END_OBJECT, NULL);
			return;
		case TJ_ARRAY_START:
			b->result = pushJsonbValue(&b->state, WJB_BEGIN_ARRAY, NULL);
			return;
		case TJ_ARRAY_END:
			b->result = pushJsonbValue(&b->state, WJB_END_ARRAY, NULL);
			return;
		case TJ_KEY:
			seq = WJB_KEY;
			/* FALLTHROUGH */
		case TJ_STRING:
			v.type = jbvString;
			v.val.string.val = (char *) str;
			v.val.string.len = (int) len;
			break;
		case TJ_INTEGER:
			v.type = jbvNumeric;
			v.val.numeric = int64_to_numeric(integer);
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
	b->result = pushJsonbValue(&b->state, seq, &v);
}

/* Builds the claims of a verified token, and frees the kept payload. */
static Jsonb *
claims_jsonb(TokenAccessClaims *claims)
{
	Jsonb	   *result = NULL;

	/* Rendered before: the verified-token cache kept our jsonb. */
	if (claims->cached_blob != NULL)
	{
		result = palloc(claims->cached_blob_len);
		memcpy(result, claims->cached_blob, claims->cached_blob_len);
		return result;
	}
	PG_TRY();
	{
		JsonbBuild	b = {NULL, NULL};

		if (GetDatabaseEncoding() == PG_UTF8 &&
			token_payload_walk(claims->payload_json, jsonb_build_visit, &b) &&
			b.result != NULL)
		{
			result = JsonbValueToJsonb(b.result);
			if (claims->has_hash)
				token_cache_attach(claims->hash, result, VARSIZE(result));
		}
		else
			result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
														CStringGetDatum(pnstrdup(claims->payload,
																				 claims->payload_len))));
	}
	PG_FINALLY();
	{
		token_payload_free(claims->payload_json);
		claims->payload_json = NULL;
	}
	PG_END_TRY();
	return result;
}

static void
verify_params(TokenVerifyParams *params, TimestampTz now, bool check_times)
{
	size_t		keylen;

	params->key = (const unsigned char *) ConfigRequireSecret(&keylen);
	params->keylen = keylen;
	params->prev_key = (const unsigned char *) ConfigPreviousSecret(&keylen);
	params->prev_keylen = params->prev_key ? keylen : 0;
	params->issuer = et_jwt_issuer;
	params->audience = et_jwt_audience;
	params->now = unix_seconds(now);
	params->leeway = et_clock_skew;
	params->check_times = check_times;
	params->keep_payload = false;
	params->use_cache = false;
}

/* extension_token_validate(p_token text) RETURNS extension_token_validation */
/*
 * The whole validation of a token of `len` bytes: the token core's checks,
 * then the table's (known, not revoked, not expired, not idle), counting
 * the outcome and recording the use (at most once per last_used_interval,
 * never in a read-only transaction).
 */
static TokenStatus
validate_token(const char *token, size_t len, StoredToken *row,
			   TokenAccessClaims *claims, Jsonb **claims_out)
{
	TimestampTz now = GetCurrentTimestamp();
	TokenVerifyParams params;
	TokenStatus status;
	unsigned char hash[TOKEN_HASH_LENGTH];

	verify_params(&params, now, true);
	params.keep_payload = (claims_out != NULL);
	params.use_cache = true;
	memset(row, 0, sizeof(*row));
	status = token_verify_access(token, len, &params, claims);
	/* Before anything that can raise: the kept payload is malloc'ed. */
	if (status == TOKEN_OK && claims_out != NULL)
		*claims_out = claims_jsonb(claims);
	if (status == TOKEN_OK)
	{
		if (claims->has_hash)
			memcpy(hash, claims->hash, TOKEN_HASH_LENGTH);
		else
			token_sha256(token, len, hash);
		StorageLookupToken(hash, row);
		if (!row->found)
			status = TOKEN_NOT_FOUND;
		else if (!row->is_access)
			status = TOKEN_WRONG_TOKEN_TYPE;
		else if (row->revoked)
			status = TOKEN_REVOKED;
		else if (unix_seconds(row->expires_at) <= params.now - params.leeway)
			status = TOKEN_EXPIRED;
		/* idle past session_inactivity_timeout: the session has ended */
		else if (et_session_inactivity_timeout > 0 && row->last_used_at != 0 &&
				 row->last_used_at < now - (int64) et_session_inactivity_timeout * USECS_PER_SEC)
			status = TOKEN_EXPIRED;
	}
	StatsCountValidation(status);
	if (status == TOKEN_OK && !XactReadOnly && !RecoveryInProgress())
	{
		TimestampTz older_than = now - (int64) et_last_used_interval * USECS_PER_SEC;

		if (row->last_used_at == 0 || row->last_used_at < older_than ||
			et_last_used_interval == 0)
			StorageTouchToken(hash, row->session_id, now,
							  et_last_used_interval == 0 ? now + 1 : older_than);
	}
	return status;
}

/* extension_token_validate(p_token text) RETURNS extension_token_validation */
PG_FUNCTION_INFO_V1(extension_token_validate);
Datum
extension_token_validate(PG_FUNCTION_ARGS)
{
	TokenAccessClaims claims;	/* on the stack: palloc of 8 kB would malloc */
	TokenStatus status;
	StoredToken row;
	text	   *token;
	size_t		len;

	LogFilterRedactActivity();
	(void) ConfigRequireSecret(&len);
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
								&claims_jsonb);
		PG_RETURN_DATUM(validation_result(fcinfo, status, &row, claims_jsonb));
	}
	StatsCountValidation(status);
	PG_RETURN_DATUM(validation_result(fcinfo, status, NULL, NULL));
}

/*
 * extension_token_pre_request() RETURNS void, for PostgREST's db-pre-request.
 *
 * PostgREST checks the signature and expiry of a bearer token itself, but
 * knows nothing of revocation.  When the request's bearer token is an access
 * token of ours (its unverified payload names our issuer and type "access"),
 * this validates it fully and refuses the request (PT401, the validation
 * error in DETAIL) unless it is valid, so that a revocation takes effect on
 * the very next request.  Any other token, or none, is left to PostgREST.
 */
PG_FUNCTION_INFO_V1(extension_token_pre_request);
Datum
extension_token_pre_request(PG_FUNCTION_ARGS)
{
	const char *headers = GetConfigOption("request.headers", true, false);
	char	   *auth;
	const char *token;
	size_t		len;
	StoredToken row;
	TokenAccessClaims *claims;
	TokenStatus status;

	if (headers == NULL || headers[0] == '\0')
		PG_RETURN_VOID();
	auth = palloc(TOKEN_MAX_LENGTH + 64);
	if (token_json_string_member(headers, "authorization", auth, TOKEN_MAX_LENGTH + 64) != 1)
		PG_RETURN_VOID();

	/*
	 * "Bearer", in any case, then any run of blanks (PostgREST takes tabs as
	 * well as spaces), then the token, blanks after it ignored: whatever
	 * PostgREST would take as a bearer token, we must look at.
	 */
	token = auth;
	while (*token == ' ' || *token == '\t')
		token++;
	if (pg_strncasecmp(token, "bearer", 6) != 0 || (token[6] != ' ' && token[6] != '\t'))
		PG_RETURN_VOID();
	token += 6;
	while (*token == ' ' || *token == '\t')
		token++;
	len = strlen(token);
	while (len > 0 && (token[len - 1] == ' ' || token[len - 1] == '\t' ||
					   token[len - 1] == '\r' || token[len - 1] == '\n'))
		len--;
	if (!token_is_ours(token, len, et_jwt_issuer))
		PG_RETURN_VOID();

	claims = palloc(sizeof(TokenAccessClaims));
	status = validate_token(token, len, &row, claims, NULL);
	if (status != TOKEN_OK)
		ereport(ERROR,
				(errcode(ERRCODE_ET_UNAUTHORIZED),
				 errmsg("access token rejected"),
				 errdetail("%s", token_status_name(status)),
				 errhidestmt(true)));
	PG_RETURN_VOID();
}
/* ---------------------------------------------------------------------
 * refresh
 * ---------------------------------------------------------------------
 */

/*
 * Why a refresh token found in the table cannot be exchanged now, or NULL if
 * it can.  *reuse says the session must be revoked for it.
 */
static const char *
refresh_refusal(const StoredToken *row, TimestampTz now, bool *reuse)
{
	*reuse = false;
	if (!row->found || row->is_access)
		return "refresh_token_not_found";
	if (row->revoked)
		return "session_revoked";
	if (row->used)
	{
		/* outside the grace window, a second presentation is theft */
		*reuse = now - row->used_at > (int64) et_refresh_reuse_grace * USECS_PER_SEC;
		return "refresh_token_already_used";
	}
	/* the session's own end first: a refresh token is capped at it */
	if (unix_seconds(now) >= session_end(row->session_created_at))
		return "session_expired";
	if (et_session_inactivity_timeout > 0 && row->session_last_used_at != 0 &&
		row->session_last_used_at < now - (int64) et_session_inactivity_timeout * USECS_PER_SEC)
		return "session_expired";
	if (row->expires_at <= now)
		return "refresh_token_expired";
	return NULL;
}

/*
 * Refuses a refresh: counts it, records it on the session (revoking the
 * session on reuse) in a transaction of its own, and raises PT401/PT429.
 * Recording is skipped when the session recorded a failure in the last 10
 * seconds and nothing is to be revoked, so that a client hammering with a
 * dead token cannot start a worker per call.
 */
static void
refuse_refresh(const StoredToken *row, TimestampTz now, const char *reason,
			   bool reuse, bool rate_limited)
{
	StatsCount(STATS_REFRESH_FAILED);
	if (row->found && !row->is_access &&
		(reuse || row->last_refresh_error_at == 0 ||
		 row->last_refresh_error_at < now - 10 * USECS_PER_SEC))
		WorkerSessionEvent(row->session_id, reuse, "refresh_token_reuse", reason);
	if (!rate_limited)
		PolicyRefreshRefused(reason);
}

/*
 * extension_token_refresh(p_refresh_token text, p_current_token text)
 *		RETURNS extension_token_pair
 */
PG_FUNCTION_INFO_V1(extension_token_refresh);
Datum
extension_token_refresh(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTimestamp();
	text	   *refresh;
	size_t		len;
	unsigned char hash[TOKEN_HASH_LENGTH];
	StoredToken row;
	NewPair		pair;
	PairTokens	tokens;
	const char *refusal;
	bool		reuse;
	TimestampTz retry_at;

	LogFilterRedactActivity();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_refresh_token must not be null")));
	(void) ConfigRequireSecret(&len);
	/* Before anything else: a refresh writes, and on a standby its
	 * bookkeeping worker could never start. */
	require_read_write("refresh a token");

	memset(&row, 0, sizeof(row));
	if (toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ != REFRESH_TOKEN_LENGTH)
		refuse_refresh(&row, now, "refresh_token_not_found", false, false);
	refresh = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(refresh);
	if (!token_refresh_well_formed(VARDATA_ANY(refresh), len))
		refuse_refresh(&row, now, "refresh_token_not_found", false, false);
	token_sha256(VARDATA_ANY(refresh), len, hash);

	StorageLookupRefresh(hash, &row);
	refusal = refresh_refusal(&row, now, &reuse);
	if (refusal)
		refuse_refresh(&row, now, refusal, reuse, false);

	/* Proof of possession of the session's access token, if offered. */
	if (!PG_ARGISNULL(1))
	{
		TokenVerifyParams params;
		TokenAccessClaims *claims = palloc(sizeof(TokenAccessClaims));
		text	   *current = PG_GETARG_TEXT_PP(1);
		TokenStatus status;

		verify_params(&params, now, false);
		status = token_verify_access(VARDATA_ANY(current), VARSIZE_ANY_EXHDR(current),
									 &params, claims);
		if (status != TOKEN_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_current_token is not a valid access token"),
					 errdetail("%s", token_status_name(status))));
		if (memcmp(claims->session_id, row.session_id.data, UUID_LEN) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("p_current_token belongs to another session than p_refresh_token")));
		pfree(claims);
	}

	/*
	 * The new pair is made from what the lookup found of the session (its
	 * user, name, claims, lifetime and creation never change); the statement
	 * that takes the rate slot and claims the refresh token writes it.
	 */
	memset(&pair, 0, sizeof(pair));
	pair.session_id = row.session_id;
	pair.user_id = row.user_id;
	pair.name = row.name;
	pair.claims_json = row.session_claims_json;
	pair.access_lifetime = row.session_access_lifetime;
	pair_times(&pair, now, row.session_created_at,
			   Min(row.session_access_lifetime, (int64) et_refresh_token_lifetime));
	mint_access(&pair, &tokens);
	mint_refresh(&pair, &tokens);
	switch (StorageRefresh(hash, &pair, et_refresh_rate_limit, &retry_at))
	{
		case REFRESH_DONE:
			break;
		case REFRESH_RATE_LIMITED:
			refuse_refresh(&row, now, "rate_limited", false, true);
			PolicyRateLimited(true, now, retry_at);
			break;
		case REFRESH_LOST:
			/* Lost a race: someone else exchanged or revoked it meanwhile. */
			StorageLookupRefresh(hash, &row);
			refusal = refresh_refusal(&row, now, &reuse);
			refuse_refresh(&row, now, refusal ? refusal : "refresh_token_not_found",
						   reuse, false);
			break;
	}
	StatsCount(STATS_REFRESH_OK);
	PG_RETURN_DATUM(pair_result(fcinfo, &pair, &tokens));
}

/* ---------------------------------------------------------------------
 * revoke, revoke_user, list
 * ---------------------------------------------------------------------
 */

/* extension_token_revoke(p_token text) RETURNS boolean (RFC 7009) */
PG_FUNCTION_INFO_V1(extension_token_revoke);
Datum
extension_token_revoke(PG_FUNCTION_ARGS)
{
	unsigned char hash[TOKEN_HASH_LENGTH];
	text	   *token;

	LogFilterRedactActivity();
	require_read_write("revoke a token");
	if (PG_ARGISNULL(0) ||
		toast_raw_datum_size(PG_GETARG_DATUM(0)) - VARHDRSZ > TOKEN_MAX_LENGTH)
		PG_RETURN_BOOL(false);
	token = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(token) == 0)
		PG_RETURN_BOOL(false);
	token_sha256(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), hash);
	PG_RETURN_BOOL(StorageRevokeByToken(hash, GetCurrentTimestamp(), "revoked") > 0);
}

/* revoke_user_extension_tokens(p_user_id uuid) RETURNS integer */
PG_FUNCTION_INFO_V1(revoke_user_extension_tokens);
Datum
revoke_user_extension_tokens(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user = PolicyResolveUser(!PG_ARGISNULL(0),
										 PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0),
										 "revoke");
	uint64		n;

	require_read_write("revoke tokens");
	n = StorageRevokeUser(user, GetCurrentTimestamp(), "user_revoked_all");

	PG_RETURN_INT32((int32) Min(n, (uint64) PG_INT32_MAX));
}

/* The cut-off for a session limit of `seconds` (0: off, -infinity). */
static TimestampTz
session_limit_before(TimestampTz now, int seconds)
{
	return seconds > 0 ? now - (int64) seconds * USECS_PER_SEC : DT_NOBEGIN;
}

/* extension_token_list(p_user_id uuid) RETURNS SETOF extension_token_session */
PG_FUNCTION_INFO_V1(extension_token_list);
Datum
extension_token_list(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user = PolicyResolveUser(!PG_ARGISNULL(0),
										 PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0),
										 "list");

	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);
	StorageListSessions(user, now, session_limit_before(now, et_session_max_lifetime),
						session_limit_before(now, et_session_inactivity_timeout),
						(ReturnSetInfo *) fcinfo->resultinfo);
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Operations: cleanup, pg_cron, statistics
 * ---------------------------------------------------------------------
 */

/* extension_tokens_cleanup(p_retention interval) RETURNS bigint */
PG_FUNCTION_INFO_V1(extension_tokens_cleanup);
Datum
extension_tokens_cleanup(PG_FUNCTION_ARGS)
{
	int64		retention = et_cleanup_retention;

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
	PG_RETURN_INT64((int64) StorageCleanup(GetCurrentTimestamp() - retention * USECS_PER_SEC,
										   et_cleanup_batch_size,
										   et_cleanup_batch_delay));
}

/*
 * extension_tokens_cleanup_schedule(p_schedule text) RETURNS text
 * extension_tokens_cleanup_unschedule() RETURNS text
 */
static Datum
cron_call(bool unschedule, const char *schedule, bool raise)
{
	int64		jobs = 0;
	char	   *message = NULL;

	if (!WorkerCron(unschedule, schedule, &jobs, &message))
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
	const char *schedule = PG_ARGISNULL(0) ? "17 * * * *" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		quiet = PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);

	if (!PolicyCallerIsAdmin())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to schedule the cleanup")));
	PG_RETURN_DATUM(cron_call(false, schedule, !quiet));
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
	Datum		values[13];
	bool		nulls[13] = {false};
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
	if (!have)
	{
		/* without shared memory there are no counters: unknown, not zero */
		nulls[0] = nulls[2] = nulls[7] = nulls[8] = nulls[9] = nulls[10] = nulls[11] = true;
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
