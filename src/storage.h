/*-------------------------------------------------------------------------
 *
 * storage.h
 *	  The extension's tables: sessions (the truth), exchanged refresh
 *	  tokens, users' rate logs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_STORAGE_H
#define EXTENSION_TOKENS_STORAGE_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "token.h"

struct ReturnSetInfo;

/* A session's row, as the lookups return it. */
typedef struct SessionRow
{
	bool		found;
	pg_uuid_t	session_id;
	char	   *user_id;		/* palloc'd in the caller's context */
	char	   *name;
	unsigned char access_hash[TOKEN_HASH_LENGTH];
	unsigned char refresh_hash[TOKEN_HASH_LENGTH];
	bool		has_jti;		/* false for a pair made before 1.2 */
	unsigned char access_jti[TOKEN_UUID_LENGTH];
	TimestampTz created_at;
	TimestampTz last_used_at;	/* 0 when never */
	TimestampTz expires_at;		/* of the current access token */
	TimestampTz refresh_expires_at; /* of the current refresh token */
	TimestampTz ends_at;		/* DT_NOEND for none */
	int64		idle_timeout_us;	/* 0 for none */
	bool		revoked;
	bool		revocation_pending; /* queued (revoker.c) before the row was
									 * read: revoked, whatever the row says */
	TimestampTz last_refresh_at;	/* 0 when never */
	TimestampTz last_refresh_error_at;	/* 0 when never */
	/* filled with `full` only */
	bool		has_retry;
	unsigned char retry_hash[TOKEN_HASH_LENGTH];
	TimestampTz retry_until;
	bytea	   *retry_box;		/* NULL when none */
	Datum		scopes;			/* text[], or 0 when the session has none */
	bool		api_key;		/* kind 'api_key': access_hash is the key's */
	char	   *claims_json;	/* NULL when the session has none */
	int64		access_lifetime;	/* seconds */
} SessionRow;

/* A new token pair, as stored: hashes only. */
typedef struct NewPair
{
	pg_uuid_t	session_id;
	const char *user_id;
	const char *name;
	const char *claims_json;
	Datum		scopes;			/* text[], or 0 for none */
	int64		access_lifetime;	/* seconds */
	TimestampTz created_at;
	TimestampTz expires_at;
	TimestampTz refresh_expires_at;
	TimestampTz ends_at;		/* DT_NOEND for none */
	int64		idle_timeout;	/* seconds, 0 for none */
	unsigned char access_hash[TOKEN_HASH_LENGTH];
	unsigned char refresh_hash[TOKEN_HASH_LENGTH];
	unsigned char access_jti[TOKEN_UUID_LENGTH];
	char		key_id[TOKEN_KID_MAX_LENGTH + 1];
	const char *user_agent;		/* from PostgREST's request.headers, or NULL */
	const char *ip;				/* the first x-forwarded-for, checked, or NULL */
	bool		api_key;		/* an API key: access_hash is the key's */
} NewPair;

extern void StorageInit(void);
extern void StorageCheckVersion(void);
extern Oid	StorageExtensionOwner(void);
extern Oid	StorageExtensionSchema(void);

/* Whether the sessions table's changes are noted for verdict.c. */
extern bool StorageSessionsGuarded(void);
extern void StorageLookupSession(const pg_uuid_t *session_id, bool full, SessionRow *out);
extern bool StorageFindRefresh(const char *token, size_t len,
							   const unsigned char *hash, SessionRow *row);
extern void StorageRecordRefreshError(pg_uuid_t session_id, TimestampTz now,
									  const char *error);
extern uint64 StorageCleanup(TimestampTz dead_before, TimestampTz events_before,
							 int batch_size, int delay_ms);

/* Table-derived figures for extension_token_stats(). */
typedef struct StoredCounts
{
	int64		issued_24h;
	int64		sessions_active;
	int64		sessions_revoked;
	int64		sessions_expired;
} StoredCounts;
extern void StorageCounts(TimestampTz now, StoredCounts *out);
extern int	StorageKeyCounts(TimestampTz now, char **kids, int64 *counts, int max);
extern void StorageAddUse(const pg_uuid_t *ids, const int64 *counts,
						  const TimestampTz *times, int n, bool *skipped);
extern void StorageTouchSession(const pg_uuid_t *session_id, TimestampTz now,
								TimestampTz older_than);
/*
 * For an API key, max_sessions is max_api_keys_per_user and
 * *revoked_sessions -1 says the new key is beyond it (the caller raises).
 */
extern bool StorageIssue(const NewPair *pair, int rate_limit, int max_sessions,
						 TimestampTz *retry_at, int *revoked_sessions);

typedef enum RefreshOutcome
{
	REFRESH_DONE,
	REFRESH_RATE_LIMITED,
	REFRESH_LOST				/* the caller must raise an error: see
								 * StorageRefresh() */
} RefreshOutcome;
extern RefreshOutcome StorageRefresh(const unsigned char *hash, const NewPair *pair,
									 int rate_limit, const unsigned char *box,
									 size_t box_len, TimestampTz retry_until,
									 TimestampTz *retry_at);
extern uint64 StorageRevokeSession(pg_uuid_t session_id, TimestampTz now,
								   const char *reason);
extern uint64 StorageRevokeUser(const char *user_id, const pg_uuid_t *except,
								TimestampTz now, const char *reason);
extern void StorageListSessions(const char *user_id, TimestampTz now,
								struct ReturnSetInfo *rsinfo);

/* Device authorization (RFC 8628). */
typedef struct StoredDevice
{
	char	   *status;			/* pending, approved, denied, consumed */
	TimestampTz expires_at;
	char	   *user_id;		/* who approved it, or NULL */
	char	   *name;
	Datum		scopes;			/* text[], or 0 */
	int			interval_s;
} StoredDevice;
extern void StorageDeviceStart(const unsigned char *device_hash,
							   const unsigned char *user_code_hash, const char *name,
							   Datum scopes, TimestampTz now, TimestampTz expires_at,
							   int interval_s);
extern int64 StorageDeviceFailures(const char *user_id, TimestampTz since,
								   TimestampTz *oldest);
extern bool StorageDeviceDecide(const unsigned char *user_code_hash, const char *user_id,
								bool approve, TimestampTz now);
extern bool StorageDevicePoll(const unsigned char *device_hash, StoredDevice *out);
extern void StorageDeviceConsume(const unsigned char *device_hash,
								 const pg_uuid_t *session_id);

/* The audit trail: events, their notifications. */
extern void StorageNotify(const char *event, const pg_uuid_t *session_id,
						  const char *user_id, const char *reason);
extern void StorageRecordEvent(TimestampTz at, const char *event, const char *user_id,
							   const pg_uuid_t *session_id, const char *actor,
							   const char *reason, const unsigned char *hash);
extern void StorageListEvents(const char *user_id, TimestampTz since,
							  struct ReturnSetInfo *rsinfo);
extern void StorageEventsByToken(const unsigned char *hash, const pg_uuid_t *session_id,
								 struct ReturnSetInfo *rsinfo);

/* Rotations of the signing keys: secret_rotated events. */
extern bool StorageInstalledHere(void);
extern bool StorageCheckSigningKeys(const char *algorithm, const char *secret_id,
									const char *key_id, TimestampTz at,
									const char *actor, bool may_rotate,
									bool nowait, char **reason);

#endif							/* EXTENSION_TOKENS_STORAGE_H */
