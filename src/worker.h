/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Work that must happen in a transaction of its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_WORKER_H
#define EXTENSION_TOKENS_WORKER_H

#include "utils/uuid.h"

/* Records a failed refresh on the session and/or revokes it, committed apart. */
extern void WorkerSessionEvent(pg_uuid_t session_id, bool revoke,
							   const char *reason, const char *refresh_error);

/* Creates/updates (or removes) this database's pg_cron jobs. */
extern bool WorkerCron(bool unschedule, const char *schedule, int64 *jobs,
					   char **message);

#endif							/* EXTENSION_TOKENS_WORKER_H */
