/*-------------------------------------------------------------------------
 *
 * logfilter.c
 *	  Keeps tokens out of the server log and out of pg_stat_activity.
 *
 * When a statement fails, PostgreSQL writes its text to the log
 * (log_min_error_statement, default ERROR), and PL/pgSQL adds the text of
 * the inner statement as CONTEXT.  A client that passes a token as a
 * literal ("SELECT extension_token_refresh('ext_rt_...')"), directly or
 * through EXECUTE, would leave the token in the log whenever the statement
 * fails.  This emit_log_hook drops the STATEMENT and CONTEXT parts of any
 * message whose statement or context contains something shaped like one of
 * our tokens: the refresh prefix, or a JWS, which always starts with "eyJ"
 * (the base64url of '{"').  Our messages themselves never contain a token.
 *
 * The text of the running statement is also what pg_stat_activity shows and
 * what the postmaster logs when a backend crashes ("Failed process was
 * running: ...").  So the functions that take a token call
 * LogFilterRedactActivity(), which replaces the reported activity with a
 * placeholder when the statement text contains a token.
 *
 * Statement logging that an administrator turns on (log_statement,
 * log_min_duration_statement, auto_explain) is outside this file's reach;
 * the README says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/elog.h"

#include "logfilter.h"
#include "token.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* The statement whose reported activity was last redacted (the text's
 * address alone is reused from one statement to the next). */
static const char *redacted_query = NULL;
static TimestampTz redacted_at = 0;

static bool
has_token(const char *text)
{
	return text != NULL &&
		(strstr(text, REFRESH_TOKEN_PREFIX) != NULL || strstr(text, "eyJ") != NULL);
}

static void
logfilter_emit_log(ErrorData *edata)
{
	bool		leak = has_token(debug_query_string) || has_token(edata->context) ||
		has_token(edata->internalquery);

	if (leak)
	{
		edata->hide_stmt = true;
		edata->hide_ctx = true;
		edata->internalquery = NULL;
		edata->internalpos = 0;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
LogFilterRedactActivity(void)
{
	TimestampTz started = GetCurrentStatementStartTimestamp();

	if (debug_query_string == NULL ||
		(debug_query_string == redacted_query && started == redacted_at))
		return;
	if (has_token(debug_query_string))
	{
		pgstat_report_activity(STATE_RUNNING,
							   "<statement hidden by extension_tokens: it contains a token>");
		redacted_query = debug_query_string;
		redacted_at = started;
	}
}

void
LogFilterInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = logfilter_emit_log;
}
