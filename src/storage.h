/*-------------------------------------------------------------------------
 *
 * storage.h
 *	  The extension's tables: sessions, token hashes, rotation, revocation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_STORAGE_H
#define EXTENSION_TOKENS_STORAGE_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "token.h"

struct ReturnSetInfo;

/* What the hash of a presented token finds. */
typedef struct StoredToken
{
	bool		found;
	bool		is_access;
	bool		revoked;
	bool		used;			/* refresh token already exchanged */
	pg_uuid_t	session_id;
	pg_uuid_t	user_id;
	char	   *name;			/* palloc'd in the caller's context */
	TimestampTz expires_at;
	TimestampTz used_at;
	TimestampTz last_used_at;	/* 0 when never */
	/* filled by StorageLookupRefresh only */
	TimestampTz session_created_at;
	TimestampTz session_last_used_at;	/* 0 when never */
	TimestampTz last_refresh_error_at;	/* 0 when never */
	char	   *session_claims_json;	/* NULL when the session has none */
	int64		session_access_lifetime;	/* seconds */
} StoredToken;

/* A new token pair, as stored: hashes only. */
typedef struct NewPair
{
	pg_uuid_t	session_id;
	pg_uuid_t	user_id;
	const char *name;
	const char *claims_json;
	int64		access_lifetime;
	TimestampTz created_at;
	TimestampTz expires_at;
	TimestampTz refresh_expires_at;
	unsigned char access_hash[TOKEN_HASH_LENGTH];
	unsigned char refresh_hash[TOKEN_HASH_LENGTH];
} NewPair;

extern void StorageInit(void);
extern Oid	StorageExtensionOwner(void);
extern Oid	StorageExtensionSchema(void);

extern void StorageLookupToken(const unsigned char *hash, StoredToken *out);
extern void StorageLookupRefresh(const unsigned char *hash, StoredToken *out);
extern void StorageRecordRefreshError(pg_uuid_t session_id, TimestampTz now,
									  const char *error);
extern uint64 StorageCleanup(TimestampTz dead_before, int batch_size, int delay_ms);

/* Table-derived figures for extension_token_stats(). */
typedef struct StoredCounts
{
	int64		issued_24h;
	int64		sessions_active;
	int64		sessions_revoked;
	int64		sessions_expired;
} StoredCounts;
extern void StorageCounts(TimestampTz now, StoredCounts *out);
extern void StorageTouchToken(const unsigned char *hash, pg_uuid_t session_id,
							  TimestampTz now, TimestampTz older_than);
extern bool StorageIssue(const NewPair *pair, int rate_limit, int max_sessions,
						 TimestampTz *retry_at);

typedef enum RefreshOutcome
{
	REFRESH_DONE,
	REFRESH_RATE_LIMITED,
	REFRESH_LOST				/* the caller must raise an error: see
								 * StorageRefresh() */
} RefreshOutcome;
extern RefreshOutcome StorageRefresh(const unsigned char *hash, const NewPair *pair,
									 int rate_limit, TimestampTz *retry_at);
extern uint64 StorageRevokeSession(pg_uuid_t session_id, TimestampTz now,
								   const char *reason);
extern uint64 StorageRevokeByToken(const unsigned char *hash, TimestampTz now,
								   const char *reason);
extern uint64 StorageRevokeUser(pg_uuid_t user_id, TimestampTz now,
								const char *reason);
extern void StorageListSessions(pg_uuid_t user_id, TimestampTz now,
								TimestampTz created_after,
								TimestampTz used_after,
								struct ReturnSetInfo *rsinfo);

#endif							/* EXTENSION_TOKENS_STORAGE_H */
