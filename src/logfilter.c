/*-------------------------------------------------------------------------
 *
 * logfilter.c
 *	  Keeps secrets and tokens out of the server log, pg_stat_statements,
 *	  auto_explain's output and pg_stat_activity.
 *
 * A statement "carries a secret" when its text holds something shaped like
 * one of our tokens (a JWS, which always starts with "eyJ", the base64url of
 * '{"'; the refresh-token prefix "ext_rt_"; the API-key prefix "ext_pat_"),
 * one of the secrets this backend knows (jwt_secret, jwt_secret_previous and
 * the files' secrets, also in the form a SQL literal doubles quotes in), or
 * names a secret setting at all ("jwt_secret", in any case: ALTER SYSTEM SET
 * ...jwt_secret = '<a new secret>' holds a secret nobody knows yet, and a
 * refused one is not known either).  Where its text would go:
 *
 * - The server log (emit_log_hook).  A failing statement is logged with its
 *   text (log_min_error_statement, default ERROR), PL/pgSQL adds inner
 *   statements as CONTEXT, log_statement and log_min_duration_statement put
 *   the text in the message, auto_explain puts it ("Query Text") and the
 *   plan's constants in the message, and some messages quote values (a
 *   failing cast, a duplicate key, a syntax error "at or near" a literal).
 *   So for every message: the STATEMENT is hidden when the statement
 *   carries a secret; CONTEXT and the internal query are dropped when they
 *   carry one; in the message, detail, hint and context every copy of such a
 *   statement's text is replaced, then every token-shaped span and every
 *   known secret; and a syntax error in such a statement loses its text
 *   (the position stays).  Messages that only name a setting (ours, or
 *   'parameter "extension_tokens.jwt_secret" cannot be changed now') stay.
 *
 * - pg_stat_statements: a post_parse_analyze_hook sets the query id of a
 *   statement that carries a secret to 0, which pg_stat_statements skips
 *   everywhere (pgss_store() returns at once for query id 0; its planner,
 *   executor and utility hooks all take the id from the Query through the
 *   PlannedStmt).  The id is cleared before the previous hook runs (so that
 *   pg_stat_statements, loaded before us, does not make its early entry
 *   with the normalised text) and again after it (so that a module that
 *   computes its own id does not bring it back), whichever order the
 *   libraries are loaded in.  Such statements are then not counted at all.
 *
 * - pg_stat_activity (and the postmaster's "Failed process was running"):
 *   as soon as a statement carrying a secret is parsed, the reported
 *   activity becomes a placeholder.  The extended protocol reports the text
 *   again at Bind and at Execute, so the ExecutorRun and ProcessUtility
 *   hooks do it again; and the functions that take a token call
 *   LogFilterRedactActivity() themselves.  What remains: the moments between
 *   the text's arrival and the end of its parse analysis (which can wait for
 *   a table lock), and, in the extended protocol, between Bind and Execute.
 *   Bind parameters are never part of the text: they avoid all of this.
 *
 * Nothing here can help in a backend that has not loaded the library (no
 * preload, and no function of the extension called yet): the README says to
 * preload it and to set the secret through a file.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "parser/analyze.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/backend_status.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "config.h"
#include "logfilter.h"
#include "token.h"

/* What pg_stat_activity shows, and what replaces a statement's text. */
#define STATEMENT_HIDDEN \
	"<statement hidden by extension_tokens: it carries a secret or a token>"
#define TOKEN_HIDDEN "[token hidden by extension_tokens]"
#define SECRET_HIDDEN "[secret hidden by extension_tokens]"

/* The beginnings of our tokens: a JWS, a refresh token, an API key. */
static const char *const token_prefixes[] = {"eyJ", REFRESH_TOKEN_PREFIX, "ext_pat_"};

#define NUM_TOKEN_PREFIXES ((int) lengthof(token_prefixes))
#define SETTING_WORD "jwt_secret"
#define MAX_SECRETS 4

static emit_log_hook_type prev_emit_log_hook = NULL;
static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* The running statement's text last checked, when, and the verdict. */
static const char *activity_text = NULL;
static TimestampTz activity_at = 0;
static bool activity_carries = false;

/* Known secrets, and their form inside a SQL literal ('' for '). */
typedef struct Needles
{
	int			n;
	const char *s[MAX_SECRETS * 2];
	size_t		len[MAX_SECRETS * 2];
	bool		owned[MAX_SECRETS * 2];	/* palloc'd here */
} Needles;

static void
needles_get(Needles *nd)
{
	const char *secrets[MAX_SECRETS];
	size_t		lens[MAX_SECRETS];
	int			n = ConfigKnownSecrets(secrets, lens, MAX_SECRETS);

	nd->n = 0;
	for (int i = 0; i < n; i++)
	{
		nd->s[nd->n] = secrets[i];
		nd->len[nd->n] = lens[i];
		nd->owned[nd->n] = false;
		nd->n++;
		if (memchr(secrets[i], '\'', lens[i]) != NULL)
		{
			/* The quoted form (rare): built in the current context. */
			char	   *q = palloc_extended(lens[i] * 2 + 1, MCXT_ALLOC_NO_OOM);
			size_t		k = 0;

			if (q == NULL)
				continue;
			for (size_t j = 0; j < lens[i]; j++)
			{
				q[k++] = secrets[i][j];
				if (secrets[i][j] == '\'')
					q[k++] = '\'';
			}
			q[k] = '\0';
			nd->s[nd->n] = q;
			nd->len[nd->n] = k;
			nd->owned[nd->n] = true;
			nd->n++;
		}
	}
}

static void
needles_free(Needles *nd)
{
	for (int i = 0; i < nd->n; i++)
		if (nd->owned[i])
		{
			explicit_bzero((char *) nd->s[i], nd->len[i]);
			pfree((char *) nd->s[i]);
		}
	nd->n = 0;
}

/* "jwt_secret" in any case; found from its underscore (memchr is fast). */
static bool
mentions_setting(const char *text, size_t len)
{
	const size_t before = 3;	/* "jwt" */
	const size_t wlen = sizeof(SETTING_WORD) - 1;
	const char *p = text;
	const char *end = text + len;

	while ((p = memchr(p, '_', end - p)) != NULL)
	{
		if ((size_t) (p - text) >= before && (size_t) (end - p) >= wlen - before &&
			pg_strncasecmp(p - before, SETTING_WORD, wlen) == 0)
			return true;
		p++;
	}
	return false;
}

static bool
has_token(const char *text, size_t len)
{
	for (int i = 0; i < NUM_TOKEN_PREFIXES; i++)
		if (memmem(text, len, token_prefixes[i], strlen(token_prefixes[i])) != NULL)
			return true;
	return false;
}

static bool
has_secret(const char *text, size_t len, const Needles *nd)
{
	for (int i = 0; i < nd->n; i++)
		if (nd->len[i] > 0 && memmem(text, len, nd->s[i], nd->len[i]) != NULL)
			return true;
	return false;
}

/* Does this text carry a secret or a token (see the top of the file)? */
static bool
carries_secret(const char *text, size_t len)
{
	Needles		nd;
	bool		result;

	if (text == NULL || len == 0)
		return false;
	if (has_token(text, len) || mentions_setting(text, len))
		return true;
	needles_get(&nd);
	result = has_secret(text, len, &nd);
	needles_free(&nd);
	return result;
}

static inline bool
token_char(char c)
{
	/* base64url, base64 and the JWS's dots: the whole span goes */
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
		c == '+' || c == '/' || c == '=';
}

/*
 * A palloc'd copy of text with every copy of stmt (when given) replaced by
 * STATEMENT_HIDDEN, every token-shaped span by TOKEN_HIDDEN, and every known
 * secret by SECRET_HIDDEN; or NULL when there was nothing to replace (or no
 * memory: then *failed is set).
 */
static char *
redact_text(const char *text, const char *stmt, const Needles *nd, bool *failed)
{
	size_t		len = strlen(text);
	size_t		stmt_len = stmt ? strlen(stmt) : 0;
	StringInfoData buf;
	size_t		i = 0;
	bool		changed = false;

	*failed = false;
	if (!(stmt_len > 0 && strstr(text, stmt) != NULL) &&
		!has_token(text, len) && !has_secret(text, len, nd))
		return NULL;

	/* initStringInfo cannot fail softly: size the buffer ourselves. */
	buf.maxlen = len + 256;
	buf.data = palloc_extended(buf.maxlen, MCXT_ALLOC_NO_OOM);
	if (buf.data == NULL)
	{
		*failed = true;
		return NULL;
	}
	buf.len = 0;
	buf.data[0] = '\0';
	buf.cursor = 0;

	while (i < len)
	{
		bool		matched = false;

		if (stmt_len > 0 && len - i >= stmt_len &&
			memcmp(text + i, stmt, stmt_len) == 0)
		{
			appendStringInfoString(&buf, STATEMENT_HIDDEN);
			i += stmt_len;
			changed = true;
			continue;
		}
		for (int p = 0; p < NUM_TOKEN_PREFIXES && !matched; p++)
		{
			size_t		plen = strlen(token_prefixes[p]);

			if (len - i >= plen && memcmp(text + i, token_prefixes[p], plen) == 0)
			{
				i += plen;
				while (i < len && token_char(text[i]))
					i++;
				appendStringInfoString(&buf, TOKEN_HIDDEN);
				matched = true;
			}
		}
		for (int s = 0; s < nd->n && !matched; s++)
		{
			if (nd->len[s] > 0 && len - i >= nd->len[s] &&
				memcmp(text + i, nd->s[s], nd->len[s]) == 0)
			{
				i += nd->len[s];
				appendStringInfoString(&buf, SECRET_HIDDEN);
				matched = true;
			}
		}
		if (matched)
		{
			changed = true;
			continue;
		}
		appendStringInfoChar(&buf, text[i]);
		i++;
	}
	if (!changed)
	{
		pfree(buf.data);
		return NULL;
	}
	return buf.data;
}

/*
 * Redacts one palloc'd field of an ErrorData in place.  Returns false when
 * it could not (no memory): the caller then drops the field.
 */
static bool
redact_field(char **field, const char *stmt, const Needles *nd)
{
	bool		failed;
	char	   *r;

	if (*field == NULL)
		return true;
	r = redact_text(*field, stmt, nd, &failed);
	if (failed)
		return false;
	if (r != NULL)
	{
		pfree(*field);
		*field = r;
	}
	return true;
}

static void
drop_field(char **field)
{
	if (*field != NULL)
	{
		pfree(*field);
		*field = NULL;
	}
}

/*
 * Does the text of the running statement (debug_query_string: the whole
 * string the client sent, as pg_stat_activity shows it) carry a secret?  The
 * verdict is kept per text and statement start (every protocol message sets
 * a new one), so that nested statements cost two comparisons.
 */
static bool
query_text_carries_secret(void)
{
	const char *text = debug_query_string;
	TimestampTz at;

	if (text == NULL)
		return false;
	at = GetCurrentStatementStartTimestamp();
	if (text != activity_text || at != activity_at)
	{
		activity_carries = carries_secret(text, strlen(text));
		activity_text = text;
		activity_at = at;
	}
	return activity_carries;
}

static void
logfilter_emit_log(ErrorData *edata)
{
	const char *stmt = debug_query_string;
	bool		stmt_carries = query_text_carries_secret();
	bool		ctx_carries = edata->context != NULL &&
		carries_secret(edata->context, strlen(edata->context));
	bool		internal_carries = edata->internalquery != NULL &&
		carries_secret(edata->internalquery, strlen(edata->internalquery));
	Needles		nd;

	if (stmt_carries)
		edata->hide_stmt = true;

	/*
	 * A misspelt setting of ours ('invalid configuration parameter name
	 * "extension_tokens.jwt_secre"'): the statement may well hold a secret
	 * under a name that does not say so.
	 */
	if ((edata->sqlerrcode == ERRCODE_INVALID_NAME ||
		 edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT) &&
		edata->message != NULL &&
		strstr(edata->message, "\"extension_tokens.") != NULL)
		edata->hide_stmt = true;

	if (internal_carries)
	{
		drop_field(&edata->internalquery);
		edata->internalpos = 0;
	}
	if (ctx_carries)
	{
		/* CONTEXT holds SQL text ("SQL statement ..."): drop it whole. */
		drop_field(&edata->context);
		edata->hide_ctx = true;
	}

	/*
	 * A syntax error quotes the text "at or near" it: in a statement that
	 * names a secret setting, that can be a piece of an unknown secret.
	 */
	if ((stmt_carries || ctx_carries || internal_carries) &&
		edata->sqlerrcode == ERRCODE_SYNTAX_ERROR)
	{
		char	   *m = pstrdup("syntax error (the text is hidden by extension_tokens: the statement carries a secret or a token)");

		drop_field(&edata->message);
		edata->message = m;
		drop_field(&edata->detail);
		drop_field(&edata->detail_log);
	}

	needles_get(&nd);
	if (!redact_field(&edata->message, stmt_carries ? stmt : NULL, &nd))
		drop_field(&edata->message);
	if (!redact_field(&edata->detail, stmt_carries ? stmt : NULL, &nd))
		drop_field(&edata->detail);
	if (!redact_field(&edata->detail_log, stmt_carries ? stmt : NULL, &nd))
		drop_field(&edata->detail_log);
	if (!redact_field(&edata->hint, stmt_carries ? stmt : NULL, &nd))
		drop_field(&edata->hint);
	needles_free(&nd);

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * Replaces this backend's reported activity with the placeholder when the
 * text of the running statement carries a secret (and it is not already).
 */
static void
redact_activity(void)
{
	if (!pgstat_track_activities || MyBEEntry == NULL)
		return;
	if (query_text_carries_secret() &&
		strncmp(MyBEEntry->st_activity_raw, STATEMENT_HIDDEN,
				sizeof(STATEMENT_HIDDEN)) != 0)
		pgstat_report_activity(STATE_RUNNING, STATEMENT_HIDDEN);
}

void
LogFilterRedactActivity(void)
{
	redact_activity();
}

/* The statement's own part of a (possibly multi-statement) source text. */
static bool
statement_carries_secret(const char *source, int location, int len)
{
	size_t		total;

	if (source == NULL)
		return false;
	total = strlen(source);
	if (location < 0 || (size_t) location > total)
	{
		location = 0;
		len = (int) total;
	}
	else if (len <= 0 || (size_t) location + len > total)
		len = (int) (total - location);
	return carries_secret(source + location, len);
}

static void
logfilter_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	bool		carries;

	redact_activity();

	/* A part of the running statement's text, found clean, is clean. */
	if (pstate->p_sourcetext != NULL &&
		pstate->p_sourcetext == debug_query_string &&
		!query_text_carries_secret())
		carries = false;
	else
		carries = statement_carries_secret(pstate->p_sourcetext,
										   query->stmt_location, query->stmt_len);
	if (carries)
		query->queryId = UINT64CONST(0);
	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);
	if (carries)
		query->queryId = UINT64CONST(0);
}

#if PG_VERSION_NUM >= 180000
static void
logfilter_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count)
{
	redact_activity();
	if (prev_ExecutorRun)
		prev_ExecutorRun(queryDesc, direction, count);
	else
		standard_ExecutorRun(queryDesc, direction, count);
}
#else
static void
logfilter_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
					  bool execute_once)
{
	redact_activity();
	if (prev_ExecutorRun)
		prev_ExecutorRun(queryDesc, direction, count, execute_once);
	else
		standard_ExecutorRun(queryDesc, direction, count, execute_once);
}
#endif

static void
logfilter_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
						 bool readOnlyTree, ProcessUtilityContext context,
						 ParamListInfo params, QueryEnvironment *queryEnv,
						 DestReceiver *dest, QueryCompletion *qc)
{
	redact_activity();
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * Installed whenever the library is loaded, preloaded or not: none of these
 * hooks keeps state across calls that a load in the middle of a statement
 * could unbalance (no Start/End pairs), and the log and parse hooks matter
 * most in exactly the backends that load us late.
 */
void
LogFilterInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = logfilter_emit_log;
	prev_post_parse_analyze_hook = post_parse_analyze_hook;
	post_parse_analyze_hook = logfilter_post_parse_analyze;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = logfilter_ExecutorRun;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = logfilter_ProcessUtility;
}
