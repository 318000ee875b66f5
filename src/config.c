/*-------------------------------------------------------------------------
 *
 * config.c
 *	  The extension_tokens.* server settings.
 *
 * The signing secret is server configuration and nothing else: PGC_SIGHUP so
 * that no session can SET it and ALTER ROLE/DATABASE ... SET (whose values
 * every role can read in pg_db_role_setting) is refused, GUC_SUPERUSER_ONLY
 * so that SHOW, current_setting() and pg_settings show it to superusers
 * only, GUC_NO_SHOW_ALL and GUC_NOT_IN_SAMPLE so that SHOW ALL and the
 * sample file never list it.
 *
 * Nor does the setting's own text ever hold the secret.  PostgreSQL reads
 * that text directly in places no show hook reaches: above all the
 * postmaster, which on a reload logs 'parameter "..." changed to "..."' with
 * the new value whenever the text changed.  So the check hook copies each
 * secret into the setting's "extra" and blanks the text in place; the assign
 * hook keeps the extra, which is what the extension signs and verifies with.
 * The text is always empty, never changes, and is never logged.  (This holds
 * in the postmaster only when the library is preloaded, as the README
 * requires; a parallel worker, which gets settings as text, would see no
 * secret, and every function of the extension is PARALLEL UNSAFE.)
 *
 * A secret shorter than 32 bytes is refused by the check hook, when it is
 * set: ALTER SYSTEM fails, a reload keeps the secret in force and logs why.
 * PostgreSQL's own message for a refused value echoes it ('invalid value for
 * parameter "...": "..."'), so the hook supplies its own message, and blanks
 * the refused text as well.  The statement that carried it is kept out of
 * the log by logfilter.c.
 *
 * The secrets can also live in files, so that they never travel in SQL:
 * extension_tokens.jwt_secret_file and jwt_secret_previous_file name them.
 * The check hook of each reads the file (at server start, at every reload,
 * and at ALTER SYSTEM) and refuses, with the old secret kept, a file that
 * is missing or unreadable, not a regular file, readable or writable by
 * others (the rule PostgreSQL applies to ssl_key_file), larger than
 * SECRET_FILE_MAX_SIZE, holding a NUL byte, empty or shorter than 32 bytes
 * once trailing line breaks are stripped.  A file setting, when set, takes
 * precedence over jwt_secret / jwt_secret_previous.  A file that is set but
 * was refused when the library loaded (no earlier secret to keep) leaves the
 * extension without that secret: it does not fall back to the setting,
 * which may hold a stale one.
 *
 * The prefix is reserved, so a misspelt extension_tokens.* setting is
 * reported instead of silently creating a placeholder anyone could set.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utils/guc.h"

#include "compat.h"

#include "config.h"
#include "token.h"

static char *et_jwt_secret = NULL;	/* always "": see above */
char	   *et_jwt_issuer = NULL;
char	   *et_jwt_audience = NULL;
int			et_access_token_lifetime = 30 * 86400;
int			et_refresh_token_lifetime = 90 * 86400;
int			et_clock_skew = 30;
int			et_max_sessions_per_user = 1;
int			et_issue_rate_limit = 5;
int			et_refresh_rate_limit = 10;
int			et_last_used_interval = 300;
int			et_refresh_retry_window = 30;
char	   *et_admin_roles = NULL;
static char *et_jwt_secret_previous = NULL;	/* always "" */
int			et_cleanup_retention = 7 * 86400;
int			et_cleanup_batch_size = 1000;
int			et_cleanup_batch_delay = 50;
int			et_session_max_lifetime = 0;
int			et_session_inactivity_timeout = 0;
char	   *et_postgrest_role = NULL;

/* A secret, as the check hook hands it to the assign hook. */
typedef struct SecretValue
{
	size_t		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} SecretValue;

static const SecretValue *secret_current = NULL;
static const SecretValue *secret_previous = NULL;

static bool
check_secret(char **newval, void **extra, GucSource source)
{
	size_t		len = *newval ? strlen(*newval) : 0;
	SecretValue *v = ET_GUC_MALLOC(offsetof(SecretValue, data) + len + 1);

	if (v != NULL)
	{
		v->len = len;
		if (len > 0)
			memcpy(v->data, *newval, len);
		v->data[len] = '\0';
		*extra = v;
	}
	/* Blank the text in place (no allocation can fail here). */
	if (*newval)
		explicit_bzero(*newval, len);
	if (v == NULL)
	{
		GUC_check_errdetail("out of memory");
		return false;
	}
	return true;
}

static void
assign_secret(const char *newval, void *extra)
{
	secret_current = extra;
}

static void
assign_previous_secret(const char *newval, void *extra)
{
	secret_previous = extra;
}

/*
 * What SHOW, current_setting() and pg_settings print for the secret, to
 * everyone: GUC_SUPERUSER_ONLY alone still lets members of
 * pg_read_all_settings read it.
 */
static const char *
show_secret(void)
{
	return (secret_current && secret_current->len > 0) ? "(hidden)" : "";
}

static const char *
show_previous_secret(void)
{
	return (secret_previous && secret_previous->len > 0) ? "(hidden)" : "";
}

void
ConfigInit(void)
{
	DefineCustomStringVariable("extension_tokens.jwt_secret",
							   "HS256 signing secret for access tokens (at least 32 bytes).",
							   "Readable by superusers only; set it in postgresql.conf or with ALTER SYSTEM.",
							   &et_jwt_secret,
							   NULL,
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   check_secret, assign_secret, show_secret);

	DefineCustomStringVariable("extension_tokens.jwt_issuer",
							   "The iss claim written into and required of access tokens.",
							   NULL,
							   &et_jwt_issuer,
							   "extension_tokens",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("extension_tokens.jwt_audience",
							   "The aud claim written into and required of access tokens.",
							   NULL,
							   &et_jwt_audience,
							   "extension",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.access_token_lifetime",
							"Default lifetime of an access token.",
							NULL,
							&et_access_token_lifetime,
							30 * 86400, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.refresh_token_lifetime",
							"Lifetime of a refresh token.",
							NULL,
							&et_refresh_token_lifetime,
							90 * 86400, 1, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.clock_skew",
							"Leeway allowed for the exp, nbf and iat claims.",
							NULL,
							&et_clock_skew,
							30, 0, 300,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.max_sessions_per_user",
							"Active sessions a user may have; issuing more revokes the oldest. 0 means unlimited.",
							NULL,
							&et_max_sessions_per_user,
							1, 0, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.issue_rate_limit",
							"Token issues allowed per user per hour. 0 means unlimited.",
							NULL,
							&et_issue_rate_limit,
							5, 0, 10000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.refresh_rate_limit",
							"Token refreshes allowed per user per hour. 0 means unlimited.",
							NULL,
							&et_refresh_rate_limit,
							10, 0, 10000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.last_used_interval",
							"Validation records a token's last use at most once per this interval.",
							"0 records every use (every validation then writes).",
							&et_last_used_interval,
							300, 0, 86400,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.refresh_retry_window",
							"Window after an exchange in which presenting the same refresh token again returns the same new pair.",
							"A retry after a lost response, or a second window racing the first, both end up holding one pair; any other re-presentation revokes the session. 0 makes every re-presentation reuse.",
							&et_refresh_retry_window,
							30, 0, 300,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("extension_tokens.admin_roles",
							   "Roles (comma-separated) whose members may act for any user.",
							   "Superusers and the extension's owner always may.",
							   &et_admin_roles,
							   "",
							   PGC_SIGHUP, GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("extension_tokens.jwt_secret_previous",
							   "The signing secret being retired: tokens it signed still validate, nothing new is signed with it.",
							   "Readable by superusers only; empty once every token it signed has expired.",
							   &et_jwt_secret_previous,
							   NULL,
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   check_secret, assign_previous_secret, show_previous_secret);

	DefineCustomIntVariable("extension_tokens.cleanup_retention",
							"How long expired and revoked sessions are kept before extension_tokens_cleanup() deletes them.",
							NULL,
							&et_cleanup_retention,
							7 * 86400, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.cleanup_batch_size",
							"Sessions deleted per statement by extension_tokens_cleanup().",
							NULL,
							&et_cleanup_batch_size,
							1000, 1, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.cleanup_batch_delay",
							"Pause of extension_tokens_cleanup() after each full batch, so that a large backlog does not take the server's CPU from other work. 0 means none.",
							NULL,
							&et_cleanup_batch_delay,
							50, 0, 10000,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.session_max_lifetime",
							"Longest a session may live, however often it is refreshed. 0 means no limit.",
							NULL,
							&et_session_max_lifetime,
							0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.session_inactivity_timeout",
							"A session not used (validated or refreshed) for this long ends. 0 means never.",
							"Use is recorded at most once per extension_tokens.last_used_interval, which should be well below this.",
							&et_session_inactivity_timeout,
							0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("extension_tokens.postgrest_role",
							   "A role claim written into access tokens, so that PostgREST accepts them as its own JWTs (e.g. authenticated).",
							   "Empty: no role claim (the default).",
							   &et_postgrest_role,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("extension_tokens");
}

const char *
ConfigRequireSecret(size_t *len)
{
	size_t		n = secret_current ? secret_current->len : 0;

	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_tokens.jwt_secret is not set"),
				 errhint("Set extension_tokens.jwt_secret (at least %d bytes) in postgresql.conf or with ALTER SYSTEM, then reload the configuration.",
						 TOKEN_SECRET_MIN_LENGTH)));
	if (n < TOKEN_SECRET_MIN_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension_tokens.jwt_secret is too short"),
				 errdetail("The secret must be at least %d bytes long.",
						   TOKEN_SECRET_MIN_LENGTH),
				 errhint("Set a longer secret in postgresql.conf or with ALTER SYSTEM, then reload the configuration.")));
	*len = n;
	return secret_current->data;
}

const char *
ConfigPreviousSecret(size_t *len)
{
	size_t		n = secret_previous ? secret_previous->len : 0;

	if (n < TOKEN_SECRET_MIN_LENGTH)
		return NULL;
	*len = n;
	return secret_previous->data;
}
