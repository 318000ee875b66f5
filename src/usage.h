/*-------------------------------------------------------------------------
 *
 * usage.h
 *	  Use of sessions, counted in shared memory and written in batches.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_USAGE_H
#define EXTENSION_TOKENS_USAGE_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

extern void UsageInit(void);

/* Counts one use of this database's session; false when not recorded. */
extern bool UsageRecord(const pg_uuid_t *session_id, TimestampTz at);

/* The latest use not yet written (0: none). */
extern TimestampTz UsageLastUsed(const pg_uuid_t *session_id);

/* For the worker: a database with pending uses (after `after`, round robin). */
extern Oid	UsageNextDatabase(Oid after);
extern void UsageForget(Oid database);

/*
 * Writes `database`'s pending uses through `write`, which commits a batch
 * and returns true with interrupts held (HOLD_INTERRUPTS before its
 * commit), or false when it failed; the flush settles the batch, then
 * resumes them, so that no exit comes between a commit and its settling.
 * The sessions of a committed batch that `write` marks in skipped[] (rows
 * locked by another transaction) keep their uses for the next flush.
 */
extern int64 UsageFlush(Oid database,
						bool (*write) (const pg_uuid_t *ids, const int64 *counts,
									   const TimestampTz *times, int n,
									   bool *skipped));

/*
 * RFC 8628 slow_down: a device code polled again too soon (*first: for the
 * first time).
 */
extern bool UsagePolledTooSoon(const unsigned char *code_hash, TimestampTz now,
							   int interval_s, bool *first);

#endif							/* EXTENSION_TOKENS_USAGE_H */
