/*-------------------------------------------------------------------------
 *
 * logfilter.c
 *	  Keeps tokens out of the server log.
 *
 * When a statement fails, PostgreSQL writes its text to the log
 * (log_min_error_statement, default ERROR).  A client that passes a token as
 * a literal ("SELECT extension_token_refresh('ext_rt_...')") would leave the
 * token in the log whenever the statement fails: a reused refresh token, a
 * rate limit, or any error at all.  This emit_log_hook drops the STATEMENT
 * part of any message whose statement text contains something shaped like
 * one of our tokens (the refresh prefix, or a JWS, which always starts with
 * "eyJ", the base64url of '{"').  Our messages themselves never contain a
 * token.  Statement logging that an administrator turns on (log_statement,
 * log_min_duration_statement) is outside this hook; the README says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "logfilter.h"
#include "token.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

static void
logfilter_emit_log(ErrorData *edata)
{
	if (!edata->hide_stmt && debug_query_string != NULL &&
		(strstr(debug_query_string, REFRESH_TOKEN_PREFIX) != NULL ||
		 strstr(debug_query_string, "eyJ") != NULL))
		edata->hide_stmt = true;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
LogFilterInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = logfilter_emit_log;
}
