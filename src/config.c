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

#include "miscadmin.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utils/guc.h"

#include "compat.h"

#include "config.h"
#include "revoker.h"
#include "token.h"

static char *et_jwt_secret = NULL;	/* always "": see above */
char	   *et_jwt_issuer = NULL;
char	   *et_jwt_audience = NULL;
int			et_access_token_lifetime = 30 * 86400;
int			et_refresh_token_lifetime = 90 * 86400;
int			et_clock_skew = 30;
int			et_max_sessions_per_user = 1;
int			et_max_api_keys_per_user = 10;
char	   *et_api_key_header = NULL;
int			et_issue_rate_limit = 5;
int			et_refresh_rate_limit = 10;
int			et_last_used_interval = 300;
int			et_token_cache_size = TOKEN_CACHE_DEFAULT_ENTRIES;
int			et_refresh_retry_window = 30;
char	   *et_admin_roles = NULL;
int			et_shard_tag = -1;
static char *et_jwt_secret_previous = NULL;	/* always "" */
int			et_cleanup_retention = 7 * 86400;
int			et_cleanup_batch_size = 1000;
int			et_cleanup_batch_delay = 50;
int			et_session_max_lifetime = 0;
int			et_session_inactivity_timeout = 0;
char	   *et_postgrest_role = NULL;
int			et_event_log = EVENT_LOG_ALL;
int			et_event_retention = 90 * 86400;

static const struct config_enum_entry event_log_options[] = {
	{"all", EVENT_LOG_ALL, false},
	{"security", EVENT_LOG_SECURITY, false},
	{NULL, 0, false}
};

/* A secret, as the check hook hands it to the assign hook. */
typedef struct SecretValue
{
	bool		refused;		/* a file set but refused when loading */
	int			alg;			/* signing key files: the key's TokenAlg */
	size_t		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} SecretValue;

/* Largest secret file read (a secret is 32 bytes to a few hundred). */
#define SECRET_FILE_MAX_SIZE 4096

/* Which secret a hook works for: the signing one, or the previous one. */
#define SECRET_CURRENT 0
#define SECRET_PREVIOUS 1

static const char *const secret_setting_name[2] = {
	"extension_tokens.jwt_secret", "extension_tokens.jwt_secret_previous"
};
static const char *const secret_file_setting_name[2] = {
	"extension_tokens.jwt_secret_file", "extension_tokens.jwt_secret_previous_file"
};

/* From the settings jwt_secret / jwt_secret_previous ("extra"). */
static const SecretValue *secret_setting[2] = {NULL, NULL};

/* From the files (len 0: no file set). */
static const SecretValue *secret_file[2] = {NULL, NULL};
static char *et_jwt_secret_file = NULL;
static char *et_jwt_secret_previous_file = NULL;

/*
 * While ConfigInit() defines the file settings, their values come from the
 * configuration files read before the library was loaded (server start, or
 * the first load in a backend without the preload).  A file refused then has
 * no earlier secret to keep, and falling back to the jwt_secret setting
 * could sign with a stale secret: the check hook logs the refusal itself
 * and accepts the path with a "refused" secret, which stands for none.  A
 * reload re-reads the file; removing the setting resets it.
 */
static bool in_config_init = false;

static SecretValue *
secret_value_make(const char *data, size_t len)
{
	SecretValue *v = ET_GUC_MALLOC(offsetof(SecretValue, data) + len + 1);

	if (v != NULL)
	{
		v->refused = false;
		v->alg = TOKEN_ALG_HS256;
		v->len = len;
		if (len > 0)
			memcpy(v->data, data, len);
		v->data[len] = '\0';
	}
	return v;
}

/*
 * The check hook of jwt_secret and jwt_secret_previous.  Never names the
 * value: on refusal the text is blanked too, so that even PostgreSQL's own
 * message ('invalid value for parameter "...": "..."'), were ours not used,
 * would show nothing.
 */
static bool
check_secret_common(int which, char **newval, void **extra)
{
	size_t		len = *newval ? strlen(*newval) : 0;
	SecretValue *v;

	if (len > 0 && len < TOKEN_SECRET_MIN_LENGTH)
	{
		explicit_bzero(*newval, len);
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		GUC_check_errmsg("%s is too short", secret_setting_name[which]);
		GUC_check_errdetail("A secret must be at least %d bytes long. The value is not shown; the secret in force, if any, stays in force.",
							TOKEN_SECRET_MIN_LENGTH);
		GUC_check_errhint("Put the secret in a file readable only by the server's operating system user and set %s to its path.",
						  secret_file_setting_name[which]);
		return false;
	}

	v = secret_value_make(*newval, len);
	/* Blank the text in place (no allocation can fail here). */
	if (*newval)
		explicit_bzero(*newval, len);
	if (v == NULL)
	{
		GUC_check_errdetail("out of memory");
		return false;
	}
	*extra = v;
	return true;
}

static bool
check_secret(char **newval, void **extra, GucSource source)
{
	return check_secret_common(SECRET_CURRENT, newval, extra);
}

static bool
check_previous_secret(char **newval, void **extra, GucSource source)
{
	return check_secret_common(SECRET_PREVIOUS, newval, extra);
}

static void
assign_token_cache_size(int newval, void *extra)
{
	token_cache_resize((size_t) newval);
}

static void
assign_secret(const char *newval, void *extra)
{
	secret_setting[SECRET_CURRENT] = extra;
}

static void
assign_previous_secret(const char *newval, void *extra)
{
	secret_setting[SECRET_PREVIOUS] = extra;
}

/*
 * What SHOW, current_setting() and pg_settings print for the secret, to
 * everyone: GUC_SUPERUSER_ONLY alone still lets members of
 * pg_read_all_settings read it.
 */
static const char *
show_secret(void)
{
	const SecretValue *v = secret_setting[SECRET_CURRENT];

	return (v && v->len > 0) ? "(hidden)" : "";
}

static const char *
show_previous_secret(void)
{
	const SecretValue *v = secret_setting[SECRET_PREVIOUS];

	return (v && v->len > 0) ? "(hidden)" : "";
}

/*
 * Reads the secret file at path into buf (at least SECRET_FILE_MAX_SIZE + 1
 * bytes) and sets *len, or sets the GUC check error and returns false.  The
 * messages name the file and the rule it broke, never its content.
 */
static bool
read_secret_file(const char *setting, const char *path, char *buf, size_t *len,
				 bool is_key)
{
	int			fd;
	struct stat st;
	size_t		n = 0;
	int			save_errno;
	const char *what = is_key ? "key" : "secret";

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
	{
		save_errno = errno;
		GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
		errno = save_errno;
		GUC_check_errmsg("%s: could not open %s file \"%s\": %m", setting, what, path);
		goto refused;
	}
	if (fstat(fd, &st) != 0)
	{
		save_errno = errno;
		close(fd);
		errno = save_errno;
		GUC_check_errmsg("%s: could not stat %s file \"%s\": %m", setting, what, path);
		goto refused;
	}
	if (!S_ISREG(st.st_mode))
	{
		close(fd);
		GUC_check_errmsg("%s: %s file \"%s\" is not a regular file", setting, what, path);
		goto refused;
	}

	/*
	 * The rule PostgreSQL applies to ssl_key_file: owned by the server's
	 * user and u=rw (0600) or less, or owned by root and u=rw,g=r (0640) or
	 * less.
	 */
	if (st.st_uid != geteuid() && st.st_uid != 0)
	{
		close(fd);
		GUC_check_errmsg("%s: %s file \"%s\" must be owned by the database user or root", setting, what, path);
		goto refused;
	}
	if ((st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO))) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
	{
		close(fd);
		GUC_check_errmsg("%s: %s file \"%s\" has group or world access", setting, what, path);
		GUC_check_errdetail("The file must have permissions u=rw (0600) or less if owned by the database user, or permissions u=rw,g=r (0640) or less if owned by root.");
		goto refused;
	}
	if (st.st_size > SECRET_FILE_MAX_SIZE)
	{
		close(fd);
		GUC_check_errmsg("%s: %s file \"%s\" is larger than %d bytes", setting, what, path, SECRET_FILE_MAX_SIZE);
		goto refused;
	}

	/* Read one byte more than allowed, to notice a file that grew. */
	for (;;)
	{
		ssize_t		r = read(fd, buf + n, SECRET_FILE_MAX_SIZE + 1 - n);

		if (r < 0)
		{
			if (errno == EINTR)
				continue;
			save_errno = errno;
			close(fd);
			explicit_bzero(buf, n);
			errno = save_errno;
			GUC_check_errmsg("%s: could not read %s file \"%s\": %m", setting, what, path);
			goto refused;
		}
		if (r == 0)
			break;
		n += r;
		if (n > SECRET_FILE_MAX_SIZE)
		{
			close(fd);
			explicit_bzero(buf, n);
			GUC_check_errmsg("%s: %s file \"%s\" is larger than %d bytes", setting, what, path, SECRET_FILE_MAX_SIZE);
			goto refused;
		}
	}
	close(fd);

	/* Trailing line breaks ("\n", "\r\n") are not part of the secret. */
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';

	if (n == 0)
	{
		GUC_check_errmsg("%s: %s file \"%s\" is empty", setting, what, path);
		goto refused;
	}
	if (memchr(buf, '\0', n) != NULL)
	{
		explicit_bzero(buf, n);
		GUC_check_errmsg("%s: %s file \"%s\" contains a NUL byte", setting, what, path);
		goto refused;
	}
	if (!is_key && n < TOKEN_SECRET_MIN_LENGTH)
	{
		explicit_bzero(buf, n);
		GUC_check_errmsg("%s: the secret in file \"%s\" is too short", setting, path);
		GUC_check_errdetail("A secret must be at least %d bytes long (trailing line breaks are not counted).",
							TOKEN_SECRET_MIN_LENGTH);
		goto refused;
	}
	*len = n;
	return true;

refused:
	GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
	if (GUC_check_errhint_string == NULL)
		GUC_check_errhint(in_config_init ?
						  (is_key ? "No key is used from this setting until the file is fixed and the configuration is reloaded." :
						   "No secret is used from this setting until the file is fixed and the configuration is reloaded.") :
						  (is_key ? "Nothing was changed: the key in force, if any, stays in force." :
						   "Nothing was changed: the secret in force, if any, stays in force."));
	return false;
}

static bool
check_secret_file_common(int which, char **newval, void **extra)
{
	const char *path = *newval;
	char		buf[SECRET_FILE_MAX_SIZE + 1];
	size_t		len = 0;
	bool		refused = false;
	SecretValue *v;

	if (path != NULL && path[0] != '\0' &&
		!read_secret_file(secret_file_setting_name[which], path, buf, &len, false))
	{
		if (!in_config_init)
			return false;		/* the value in force stays */

		/* Loading: nothing to keep (see above); say why, accept as none. */
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg_internal("%s", GUC_check_errmsg_string),
				 GUC_check_errdetail_string ?
				 errdetail_internal("%s", GUC_check_errdetail_string) : 0,
				 GUC_check_errhint_string ?
				 errhint("%s", GUC_check_errhint_string) : 0));
		refused = true;
		len = 0;
	}
	v = secret_value_make(buf, len);
	explicit_bzero(buf, len);
	if (v == NULL)
	{
		GUC_check_errdetail("out of memory");
		return false;
	}
	v->refused = refused;
	*extra = v;
	return true;
}

static bool
check_secret_file(char **newval, void **extra, GucSource source)
{
	return check_secret_file_common(SECRET_CURRENT, newval, extra);
}

static bool
check_previous_secret_file(char **newval, void **extra, GucSource source)
{
	return check_secret_file_common(SECRET_PREVIOUS, newval, extra);
}

static void
assign_secret_file(const char *newval, void *extra)
{
	secret_file[SECRET_CURRENT] = extra;
}

static void
assign_previous_secret_file(const char *newval, void *extra)
{
	secret_file[SECRET_PREVIOUS] = extra;
}


/* A header name as PostgREST's request.headers has it: lower case. */
static bool
check_api_key_header(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL || p[0] == '\0')
		return true;
	if (strlen(p) > 64)
	{
		GUC_check_errdetail("A header name has at most 64 characters.");
		return false;
	}
	for (; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
		{
			GUC_check_errdetail("A header name here is lower case letters, digits, \"-\" and \"_\".");
			return false;
		}
	return true;
}

/* ---------------------------------------------------------------------
 * Asymmetric signing (ES256, EdDSA): signing_algorithm and the key files
 *
 * The key files follow the secret files' rules (the same reader, the same
 * ownership and mode rules, the old key kept when a reload refuses the new
 * file), and the check hook also parses the key: a file that holds no
 * unencrypted P-256 or Ed25519 private key passing OpenSSL's key check is
 * refused.  The hook cannot refuse a key of the other algorithm than
 * signing_algorithm, as a reload may change both in either order; every
 * function that signs or verifies refuses that combination instead (55000),
 * naming both.
 * ---------------------------------------------------------------------
 */
int			et_signing_algorithm = TOKEN_ALG_HS256;
static char *et_signing_key_file = NULL;
static char *et_signing_key_previous_file = NULL;
static const SecretValue *signing_key[2] = {NULL, NULL};

static const char *const signing_key_setting_name[2] = {
	"extension_tokens.signing_key_file", "extension_tokens.signing_key_previous_file"
};

static const struct config_enum_entry signing_algorithm_options[] = {
	{"HS256", TOKEN_ALG_HS256, false},
	{"ES256", TOKEN_ALG_ES256, false},
	{"EdDSA", TOKEN_ALG_EDDSA, false},
	{NULL, 0, false}
};

static bool
check_signing_key_common(int which, char **newval, void **extra)
{
	const char *path = *newval;
	const char *setting = signing_key_setting_name[which];
	char		buf[SECRET_FILE_MAX_SIZE + 1];
	size_t		len = 0;
	bool		refused = false;
	int			alg = TOKEN_ALG_HS256;
	SecretValue *v;

	if (path != NULL && path[0] != '\0')
	{
		if (read_secret_file(setting, path, buf, &len, true))
		{
			const char *why = NULL;
			TokenKeyPair *kp = token_keypair_load(buf, len, &why);

			if (kp != NULL)
			{
				alg = token_keypair_alg(kp);
				token_keypair_free(kp);
			}
			else
			{
				explicit_bzero(buf, len);
				len = 0;
				GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
				GUC_check_errmsg("%s: key file \"%s\" cannot be used: %s", setting, path, why);
				GUC_check_errhint(in_config_init ?
								  "Generate a key with \"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256\" (ES256) or \"openssl genpkey -algorithm ed25519\" (EdDSA); no key is used from this setting until the file is fixed and the configuration is reloaded." :
								  "Generate a key with \"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256\" (ES256) or \"openssl genpkey -algorithm ed25519\" (EdDSA). Nothing was changed: the key in force, if any, stays in force.");
				refused = true;
			}
		}
		else
			refused = true;
		if (refused)
		{
			if (!in_config_init)
				return false;	/* the key in force stays */
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg_internal("%s", GUC_check_errmsg_string),
					 GUC_check_errdetail_string ?
					 errdetail_internal("%s", GUC_check_errdetail_string) : 0,
					 GUC_check_errhint_string ?
					 errhint("%s", GUC_check_errhint_string) : 0));
		}
	}
	v = secret_value_make(buf, len);
	explicit_bzero(buf, len);
	if (v == NULL)
	{
		GUC_check_errdetail("out of memory");
		return false;
	}
	v->refused = refused;
	v->alg = alg;
	*extra = v;
	return true;
}

static bool
check_signing_key_file(char **newval, void **extra, GucSource source)
{
	return check_signing_key_common(SECRET_CURRENT, newval, extra);
}

static bool
check_signing_key_previous_file(char **newval, void **extra, GucSource source)
{
	return check_signing_key_common(SECRET_PREVIOUS, newval, extra);
}

static void
assign_signing_key_file(const char *newval, void *extra)
{
	signing_key[SECRET_CURRENT] = extra;
}

static void
assign_signing_key_previous_file(const char *newval, void *extra)
{
	signing_key[SECRET_PREVIOUS] = extra;
}

void
ConfigInit(void)
{
	DefineCustomStringVariable("extension_tokens.jwt_secret",
							   "HS256 signing secret for access tokens (at least 32 bytes).",
							   "Readable by superusers only. extension_tokens.jwt_secret_file, when set, takes precedence.",
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

	DefineCustomIntVariable("extension_tokens.max_api_keys_per_user",
							"Live API keys a user may have; creating more is refused. 0 means unlimited.",
							NULL,
							&et_max_api_keys_per_user,
							10, 0, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("extension_tokens.api_key_header",
							   "The HTTP request header that carries an API key through PostgREST (lower case).",
							   "Empty: API keys are not accepted in requests (validate still takes them).",
							   &et_api_key_header,
							   "x-api-key",
							   PGC_SUSET, 0,
							   check_api_key_header, NULL, NULL);

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
							   check_previous_secret, assign_previous_secret, show_previous_secret);

	/*
	 * The check hooks of the file settings run (and read the files) when the
	 * placeholder values from the configuration are applied here.
	 */
	in_config_init = true;
	DefineCustomStringVariable("extension_tokens.jwt_secret_file",
							   "File holding the HS256 signing secret (at least 32 bytes); read at start and at every reload.",
							   "Takes precedence over extension_tokens.jwt_secret. The file must be owned by the server's user with mode 0600 or less, or by root with 0640 or less; trailing line breaks are ignored.",
							   &et_jwt_secret_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   check_secret_file, assign_secret_file, NULL);

	DefineCustomStringVariable("extension_tokens.jwt_secret_previous_file",
							   "File holding the signing secret being retired; read at start and at every reload.",
							   "Takes precedence over extension_tokens.jwt_secret_previous. Same rules as extension_tokens.jwt_secret_file.",
							   &et_jwt_secret_previous_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   check_previous_secret_file, assign_previous_secret_file, NULL);

	DefineCustomStringVariable("extension_tokens.signing_key_file",
							   "File holding the PEM private key that signs access tokens under ES256 (P-256) or EdDSA (Ed25519); read at start and at every reload.",
							   "The file must be owned by the server's user with mode 0600 or less, or by root with 0640 or less. Its public key is published by extension_token_jwks().",
							   &et_signing_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   check_signing_key_file, assign_signing_key_file, NULL);

	DefineCustomStringVariable("extension_tokens.signing_key_previous_file",
							   "File holding the PEM private key being retired: tokens it signed still validate, nothing new is signed with it.",
							   "Same rules as extension_tokens.signing_key_file; the key must be of the same algorithm. Its public key stays in extension_token_jwks() while it is set.",
							   &et_signing_key_previous_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   check_signing_key_previous_file, assign_signing_key_previous_file, NULL);
	in_config_init = false;

	DefineCustomEnumVariable("extension_tokens.signing_algorithm",
							 "Algorithm that signs and, alone, verifies access tokens: HS256 (jwt_secret), ES256 or EdDSA (signing_key_file).",
							 "Tokens signed under another algorithm stop validating when this changes.",
							 &et_signing_algorithm,
							 TOKEN_ALG_HS256,
							 signing_algorithm_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.cleanup_retention",
							"How long expired and revoked sessions are kept before extension_tokens_cleanup() deletes them.",
							NULL,
							&et_cleanup_retention,
							7 * 86400, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("extension_tokens.event_log",
							 "Which events extension_token_events records: all, or security (all but issued and refreshed).",
							 NULL,
							 &et_event_log,
							 EVENT_LOG_ALL, event_log_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.event_retention",
							"How long extension_tokens_cleanup() keeps events. 0 keeps them forever.",
							NULL,
							&et_event_retention,
							90 * 86400, 0, INT_MAX,
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

	DefineCustomIntVariable("extension_tokens.shard_tag",
							"The shard number written into the first 16 bits of every new session id (and so into its access token, refresh token and API key), for routing by a proxy such as PL/Proxy. -1 means none.",
							"Set it per shard database (ALTER DATABASE ... SET); sessions made before keep their ids.",
							&et_shard_tag,
							-1, -1, 65535,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("extension_tokens.token_cache_size",
							"Tokens each backend keeps verified, so that a token seen again skips its signature check and parse.",
							"About 0.5 kB of the backend's memory per token held, allocated as tokens are seen; 0 turns the cache off (and with it kept session verdicts). A change empties the cache.",
							&et_token_cache_size,
							TOKEN_CACHE_DEFAULT_ENTRIES, 0, 1048576,
							PGC_SUSET, 0,
							NULL, assign_token_cache_size, NULL);
}

/* The secret in force: the file's when one is set, else the setting's. */
static const SecretValue *
effective_secret(int which)
{
	const SecretValue *f = secret_file[which];

	if (f != NULL && (f->len > 0 || f->refused))
		return f;
	return secret_setting[which];
}

/*
 * The server is not configured (55000).  Superusers are told what and how
 * to fix it; anyone else (an API client through PostgREST) gets a generic
 * message, and the details go to the server log only.
 */
ET_NORETURN_BEGIN static void config_unavailable(const char *msg, const char *detail,
												 const char *hint) ET_NORETURN_END;

static void
config_unavailable(const char *msg, const char *detail, const char *hint)
{
	if (superuser())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_internal("%s", msg),
				 detail ? errdetail_internal("%s", detail) : 0,
				 hint ? errhint("%s", hint) : 0));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the token service is not available"),
			 errdetail_log("%s%s%s%s%s", msg, detail ? " " : "", detail ? detail : "",
						   hint ? " " : "", hint ? hint : "")));
}

const char *
ConfigRequireSecret(size_t *len)
{
	const SecretValue *v = effective_secret(SECRET_CURRENT);
	size_t		n = v ? v->len : 0;

	if (n == 0 && v != NULL && v->refused)
		config_unavailable("extension_tokens.jwt_secret_file could not be used",
						   "The server log says why.",
						   "Fix the file named by extension_tokens.jwt_secret_file, then reload the configuration.");
	if (n == 0 && !RevokerAvailable())
		config_unavailable("extension_tokens.jwt_secret is not set",
						   "The library is not in shared_preload_libraries.",
						   "Add extension_tokens to shared_preload_libraries, set extension_tokens.jwt_secret_file, and restart the server.");
	if (n == 0)
		config_unavailable("extension_tokens.jwt_secret is not set", NULL,
						   psprintf("Put the secret (at least %d bytes) in a file readable only by the server's operating system user, set extension_tokens.jwt_secret_file to its path, then reload the configuration.",
									TOKEN_SECRET_MIN_LENGTH));
	/* The check hooks refuse short secrets; this stays as a last guard. */
	if (n < TOKEN_SECRET_MIN_LENGTH)
		config_unavailable("extension_tokens.jwt_secret is too short",
						   psprintf("The secret must be at least %d bytes long.",
									TOKEN_SECRET_MIN_LENGTH), NULL);
	*len = n;
	return v->data;
}

const char *
ConfigSecretIfAny(size_t *len)
{
	const SecretValue *v = effective_secret(SECRET_CURRENT);

	if (v == NULL || v->len < TOKEN_SECRET_MIN_LENGTH)
		return NULL;
	*len = v->len;
	return v->data;
}

const char *
ConfigPreviousSecret(size_t *len)
{
	const SecretValue *v = effective_secret(SECRET_PREVIOUS);
	size_t		n = v ? v->len : 0;

	if (n < TOKEN_SECRET_MIN_LENGTH)
		return NULL;
	*len = n;
	return v->data;
}

/*
 * The key ids in force: the kid of the HS256 secret (a SHA-256 prefix, the
 * one in the header of the tokens it signs) and the thumbprint of the
 * asymmetric key that signs, when one does.  Never raises: a key that cannot
 * be parsed has no id.
 */
void
ConfigSigningIds(SigningIds *ids)
{
	size_t		len = 0;
	const char *secret = ConfigSecretIfAny(&len);
	const char *pem;

	memset(ids, 0, sizeof(*ids));
	strlcpy(ids->algorithm, token_alg_name((TokenAlg) et_signing_algorithm),
			sizeof(ids->algorithm));
	if (secret != NULL)
		token_key_id((const unsigned char *) secret, len, ids->secret_id);
	pem = ConfigSigningKeyFile(0, &len);
	if (pem != NULL)
	{
		const char *why;
		TokenKeyPair *kp = token_keypair_load(pem, len, &why);

		if (kp != NULL)
		{
			strlcpy(ids->key_id, token_keypair_kid(kp), sizeof(ids->key_id));
			token_keypair_free(kp);
		}
	}
}

/*
 * The signing key of `which` (current or previous) under an asymmetric
 * algorithm, or NULL when none is set; raises 55000 when the file was
 * refused, or holds a key of another algorithm than the setting's.
 */
static const char *
signing_key_of(int which, size_t *len)
{
	const SecretValue *v = signing_key[which];
	const char *setting = signing_key_setting_name[which];

	if (v != NULL && v->refused)
		config_unavailable(psprintf("%s could not be used", setting),
						   "The server log says why.",
						   psprintf("Fix the file named by %s, then reload the configuration.", setting));
	if (v == NULL || v->len == 0)
		return NULL;
	if (v->alg != et_signing_algorithm)
		config_unavailable(psprintf("%s holds a key for %s, but extension_tokens.signing_algorithm is %s",
									setting, token_alg_name(v->alg),
									token_alg_name(et_signing_algorithm)),
						   "Only the configured algorithm signs and verifies; both keys must be of that algorithm.",
						   "Set extension_tokens.signing_algorithm to the key's algorithm, or use a key of the configured one, then reload the configuration.");
	*len = v->len;
	return v->data;
}

const char *
ConfigSigningKey(TokenAlg *alg, size_t *len)
{
	const char *key;

	*alg = (TokenAlg) et_signing_algorithm;
	if (*alg == TOKEN_ALG_HS256)
		return ConfigRequireSecret(len);
	key = signing_key_of(SECRET_CURRENT, len);
	if (key == NULL)
		config_unavailable(psprintf("extension_tokens.signing_algorithm is %s but extension_tokens.signing_key_file is not set",
									token_alg_name(*alg)), NULL,
						   "Put the private key (PEM) in a file readable only by the server's operating system user, set extension_tokens.signing_key_file to its path, then reload the configuration.");
	return key;
}

const char *
ConfigPreviousSigningKey(size_t *len)
{
	if (et_signing_algorithm == TOKEN_ALG_HS256)
		return ConfigPreviousSecret(len);
	return signing_key_of(SECRET_PREVIOUS, len);
}

void
ConfigRequireSigning(void)
{
	TokenAlg	alg;
	size_t		len;

	(void) ConfigSigningKey(&alg, &len);
	if (alg != TOKEN_ALG_HS256)
		(void) ConfigPreviousSigningKey(&len);
}

const char *
ConfigSigningKeyFile(int which, size_t *len)
{
	const SecretValue *v = signing_key[which ? SECRET_PREVIOUS : SECRET_CURRENT];

	if (v == NULL || v->len == 0 || v->alg != et_signing_algorithm ||
		et_signing_algorithm == TOKEN_ALG_HS256)
		return NULL;
	*len = v->len;
	return v->data;
}

int
ConfigKnownSecrets(const char **secrets, size_t *lens, int max)
{
	const SecretValue *all[4] = {
		secret_setting[SECRET_CURRENT], secret_setting[SECRET_PREVIOUS],
		secret_file[SECRET_CURRENT], secret_file[SECRET_PREVIOUS]
	};
	int			n = 0;

	for (int i = 0; i < 4 && n < max; i++)
	{
		if (all[i] == NULL || all[i]->len == 0)
			continue;
		secrets[n] = all[i]->data;
		lens[n] = all[i]->len;
		n++;
	}
	return n;
}
