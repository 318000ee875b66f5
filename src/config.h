/*-------------------------------------------------------------------------
 *
 * config.h
 *	  The extension_tokens.* server settings.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_CONFIG_H
#define EXTENSION_TOKENS_CONFIG_H

#include "token.h"

extern char *et_jwt_issuer;
extern char *et_jwt_audience;
extern int	et_access_token_lifetime;	/* seconds */
extern int	et_refresh_token_lifetime;	/* seconds */
extern int	et_clock_skew;		/* seconds */
extern int	et_max_sessions_per_user;
extern int	et_max_api_keys_per_user;
extern char *et_api_key_header;
extern int	et_issue_rate_limit;
extern int	et_refresh_rate_limit;
extern int	et_last_used_interval;	/* seconds */
extern int	et_token_cache_size;	/* tokens per backend */
extern int	et_refresh_retry_window;	/* seconds */
extern char *et_admin_roles;
extern int	et_cleanup_retention;	/* seconds */
extern int	et_cleanup_batch_size;
extern int	et_cleanup_batch_delay;
extern int	et_session_max_lifetime;	/* seconds, 0 = none */
extern int	et_session_inactivity_timeout;	/* seconds, 0 = none */
extern char *et_postgrest_role;
extern int	et_shard_tag;		/* -1: none */

extern int	et_signing_algorithm;	/* a TokenAlg */

/* extension_tokens.event_log */
typedef enum EventLogLevel
{
	EVENT_LOG_ALL,				/* every event */
	EVENT_LOG_SECURITY			/* all but issued and refreshed */
} EventLogLevel;
extern int	et_event_log;
extern int	et_event_retention; /* seconds, 0 = forever */

extern void ConfigInit(void);

/*
 * The key that signs under the configured algorithm (*alg): the HS256
 * secret, or the PEM text of the ES256 / EdDSA private key; raises 55000
 * while there is none, or when the key is of another algorithm.
 */
extern const char *ConfigSigningKey(TokenAlg *alg, size_t *len);
/* The key being retired under the configured algorithm, or NULL. */
extern const char *ConfigPreviousSigningKey(size_t *len);
/* Raises 55000 unless the configured algorithm has a usable key. */
extern void ConfigRequireSigning(void);
/*
 * The PEM text of the current (0) or previous (1) asymmetric key, or NULL:
 * never raises (for the public JWK Set, which must answer while the service
 * is misconfigured too).
 */
extern const char *ConfigSigningKeyFile(int which, size_t *len);

/*
 * The signing secret (from extension_tokens.jwt_secret_file when set, else
 * extension_tokens.jwt_secret); raises 55000 while there is none.
 */
extern const char *ConfigRequireSecret(size_t *len);

/* The HS256 secret in force, or NULL: never raises. */
extern const char *ConfigSecretIfAny(size_t *len);

/* The previous secret (accepted, never used to sign), or NULL. */
extern const char *ConfigPreviousSecret(size_t *len);

/*
 * Every secret this backend knows (the settings' and the files', in force or
 * not), for keeping them out of logs and statistics: fills up to max
 * entries, returns how many.  Never fails, never allocates.
 */
extern int	ConfigKnownSecrets(const char **secrets, size_t *lens, int max);

/*
 * The public names of the keys in force, never a key: what a secret_rotated
 * event compares and records.  An empty string stands for none.
 */
typedef struct SigningIds
{
	char		algorithm[8];	/* signing_algorithm: HS256, ES256, EdDSA */
	char		secret_id[TOKEN_KID_LENGTH + 1];	/* the HS256 secret's kid */
	char		key_id[TOKEN_KID_MAX_LENGTH + 1];	/* the signing key's RFC
													 * 7638 thumbprint */
} SigningIds;

/* Fills *ids (zeroed first, so that two can be compared bytewise). */
extern void ConfigSigningIds(SigningIds *ids);

#endif							/* EXTENSION_TOKENS_CONFIG_H */
