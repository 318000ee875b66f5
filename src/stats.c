/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters in shared memory: validations by outcome, refreshes, issues.
 *
 * Counting must not turn a validation into a write, so the counters live in
 * shared memory, not in a table: one 64-bit atomic per outcome, incremented
 * without a lock (pg_atomic_fetch_add_u64), read without one.  They start at
 * zero when the server starts or when extension_token_stats_reset() is
 * called, whose time is kept as `since`; they are not crash-safe and not
 * replicated, which is what monitoring counters need (compare
 * pg_stat_statements, which keeps more and writes it out at shutdown).
 *
 * Shared memory can only be reserved while the postmaster starts, so the
 * counters exist only when the library is in shared_preload_libraries;
 * otherwise StatsRead() says so and extension_token_stats() reports them as
 * unavailable (NULL), never as zero.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "stats.h"

typedef struct StatsShared
{
	pg_atomic_uint64 since;		/* TimestampTz, as uint64 */
	pg_atomic_uint64 validations[TOKEN_STATUS_COUNT];
	pg_atomic_uint64 events[STATS_EVENT_COUNT];
} StatsShared;

static StatsShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(StatsShared)));
}

static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("extension_tokens stats", sizeof(StatsShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&shared->since, (uint64) GetCurrentTimestamp());
		for (int i = 0; i < TOKEN_STATUS_COUNT; i++)
			pg_atomic_init_u64(&shared->validations[i], 0);
		for (int i = 0; i < STATS_EVENT_COUNT; i++)
			pg_atomic_init_u64(&shared->events[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
StatsInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

void
StatsCountValidation(TokenStatus status)
{
	if (shared && status >= 0 && status < TOKEN_STATUS_COUNT)
		pg_atomic_fetch_add_u64(&shared->validations[status], 1);
}

void
StatsCount(StatsEvent event)
{
	if (shared)
		pg_atomic_fetch_add_u64(&shared->events[event], 1);
}

bool
StatsRead(StatsSnapshot *out)
{
	memset(out, 0, sizeof(*out));
	if (shared == NULL)
		return false;
	out->since = (TimestampTz) pg_atomic_read_u64(&shared->since);
	for (int i = 0; i < TOKEN_STATUS_COUNT; i++)
		out->validations[i] = pg_atomic_read_u64(&shared->validations[i]);
	for (int i = 0; i < STATS_EVENT_COUNT; i++)
		out->events[i] = pg_atomic_read_u64(&shared->events[i]);
	return true;
}

/*
 * Zeroes the counters.  Each is reset on its own, so an event counted while
 * the reset runs may land on either side of it.
 */
TimestampTz
StatsReset(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (shared == NULL)
		return 0;
	for (int i = 0; i < TOKEN_STATUS_COUNT; i++)
		pg_atomic_write_u64(&shared->validations[i], 0);
	for (int i = 0; i < STATS_EVENT_COUNT; i++)
		pg_atomic_write_u64(&shared->events[i], 0);
	pg_atomic_write_u64(&shared->since, (uint64) now);
	return now;
}
