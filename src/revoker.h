/*-------------------------------------------------------------------------
 *
 * revoker.h
 *	  Revocations that must outlive the error of the call that decided
 *	  them: a shared-memory queue and a static background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_REVOKER_H
#define EXTENSION_TOKENS_REVOKER_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "config.h"

extern void RevokerInit(void);

/* Whether the queue exists (the library was preloaded). */
extern bool RevokerAvailable(void);

/*
 * The key ids in force as the worker saw them after its latest reload (it
 * takes a reload within a second; a backend busy in a long statement may
 * not have yet), and when it saw them change: false when there is no
 * worker, or it has not looked yet.
 */
extern bool RevokerKeysSeen(SigningIds *ids, TimestampTz *changed_at);

/*
 * Whether a revocation of this database's session is queued and not yet
 * committed: every path that accepts a token treats such a session as
 * revoked.
 */
extern bool RevokerPending(const pg_uuid_t *session_id);

/*
 * Queues the revocation of `session_id` (reason, e.g. "refresh_token_reuse")
 * and/or the record of a refused refresh (refresh_error, may be NULL), to be
 * committed by the worker, and waits for the commit when `wait`.  From the
 * moment this returns, RevokerPending() says so until the revocation is
 * committed.  Raises an error when a revocation cannot be queued.
 */
extern void RevokerSubmit(const pg_uuid_t *session_id, bool revoke,
						  const char *reason, const char *refresh_error,
						  const char *user_id, const unsigned char *hash, bool wait);

/*
 * Queues an event that must outlive the caller's error (rate_limited), in
 * an entry of its own, committed by the worker into extension_token_events.
 * session_id may be NULL.  Without the preload there is no queue and the
 * event is not recorded.
 */
extern void RevokerRecordEvent(const char *event, const pg_uuid_t *session_id,
							   const char *user_id, const char *reason);

#endif							/* EXTENSION_TOKENS_REVOKER_H */
