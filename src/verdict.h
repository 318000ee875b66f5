/*-------------------------------------------------------------------------
 *
 * verdict.h
 *	  A session's verdict kept with a token seen before, and the epochs
 *	  that say when it may no longer hold.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_VERDICT_H
#define EXTENSION_TOKENS_VERDICT_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "storage.h"

extern void VerdictInit(void);

/*
 * The epochs a verdict of `session_id` is kept under, read before the
 * session's row is (see the top of verdict.c); false when no verdict may be
 * kept or used in this backend and transaction.
 */
typedef struct VerdictEpochs
{
	uint64		all;
	uint64		slot;
} VerdictEpochs;

extern bool VerdictReadEpochs(const pg_uuid_t *session_id, VerdictEpochs *out);

/*
 * Notes the verdict "live" of `row` (a session whose current access token
 * has SHA-256 `hash`) with the token in the verified-token cache.
 */
extern void VerdictRemember(const unsigned char *hash, const SessionRow *row,
							const VerdictEpochs *epochs);

/*
 * Whether the note of a token seen before still says its session is live
 * at `now`; if so, fills *row (session id, user, name, expiry, scopes) as
 * the session's row would.  False: read the row.
 */
extern bool VerdictRecall(void *note, size_t len, const pg_uuid_t *session_id,
						  const char *sub, TimestampTz now, SessionRow *row);

#endif							/* EXTENSION_TOKENS_VERDICT_H */
