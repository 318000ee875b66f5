/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  Use of sessions, counted in shared memory and written in batches.
 *
 * Every successful validation (and pre-request check) is a use of its
 * session: it keeps the session from ending as idle, and it is counted
 * (use_count, "API calls per token").  Writing that into the session's row
 * in the caller's transaction would make every request a write, and a
 * read-only transaction (every PostgREST GET) or a standby could not record
 * it at all, so a session in constant use over GETs would end as idle.
 *
 * So a use goes into a shared hash table keyed by (database, session):
 * a count and the latest time.  The static background worker (revoker.c)
 * writes each database's entries in batches, about once a second, in a
 * transaction of its own, adding the counts to use_count and moving
 * last_used_at forward; an entry stays in the table while its write is in
 * progress and loses the counts written only once the write has committed
 * (a failed write leaves them).  Validation reads the pending time too
 * (UsageLastUsed()), so the inactivity rule sees a use at once, before it
 * is written, and while it is being written.
 *
 * What can be lost: a crash (or an immediate shutdown) loses the counts of
 * at most the last flush interval, never a revocation.  When the table is
 * full (USAGE_MAX_ENTRIES sessions used since the last flush) a use is not
 * recorded here and the caller falls back to writing last_used_at itself
 * (throttled by last_used_interval) when its transaction can.  Without
 * shared_preload_libraries there is no table: the same fallback, and
 * read-only validations are then not recorded (the README says so).  On a
 * standby the worker does not run: uses seen there stay in that server's
 * memory, keep its inactivity rule right for sessions used on it, and are
 * not counted in use_count (which counts the primary's validations).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "storage.h"
#include "usage.h"

#define USAGE_MAX_ENTRIES	65536
/*
 * The table's partitions, each under a lock of its own, so that backends
 * counting uses of different sessions do not queue on one lock (a power of
 * 2, as dynahash's partitioned tables require).
 */
#define USAGE_PARTITIONS	16
/* Sessions written per statement of a flush. */
#define USAGE_BATCH		2000

typedef struct UsageKey
{
	Oid			database;
	pg_uuid_t	session_id;
} UsageKey;

typedef struct UsageEntry
{
	UsageKey	key;
	int64		count;
	TimestampTz last_used;
	uint64		flush;			/* the last flush that took it to write */
} UsageEntry;

/* Device authorization polls (RFC 8628 slow_down): the last poll of a code. */
#define POLL_SLOTS		1024
typedef struct PollSlot
{
	unsigned char code_hash[8]; /* a prefix of the device code's SHA-256 */
	TimestampTz last_poll;
	bool		slowed;			/* a poll of it was refused as too soon */
} PollSlot;

typedef struct UsageShared
{
	LWLock	   *lock;			/* the polls' */
	LWLock	   *partition_locks[USAGE_PARTITIONS];
	uint64		flushes;		/* UsageFlush calls (under all partitions) */
	PollSlot	polls[POLL_SLOTS];
} UsageShared;

static UsageShared *shared = NULL;
static HTAB *usage_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
usage_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(UsageShared)) +
						   hash_estimate_size(USAGE_MAX_ENTRIES, sizeof(UsageEntry)));
	RequestNamedLWLockTranche("extension_tokens usage", 1 + USAGE_PARTITIONS);
}

static void
usage_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("extension_tokens usage", sizeof(UsageShared), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("extension_tokens usage");

		memset(shared, 0, sizeof(UsageShared));
		shared->lock = &locks[0].lock;
		for (int i = 0; i < USAGE_PARTITIONS; i++)
			shared->partition_locks[i] = &locks[1 + i].lock;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(UsageKey);
	info.entrysize = sizeof(UsageEntry);
	info.num_partitions = USAGE_PARTITIONS;
	usage_hash = ShmemInitHash("extension_tokens usage table",
							   USAGE_MAX_ENTRIES, USAGE_MAX_ENTRIES,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
	LWLockRelease(AddinShmemInitLock);
}

void
UsageInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = usage_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = usage_shmem_startup;
}

/* The key, and its hash code (whose low bits choose the partition). */
static uint32
usage_key(UsageKey *key, Oid database, const pg_uuid_t *session_id)
{
	memset(key, 0, sizeof(*key));
	key->database = database;
	key->session_id = *session_id;
	return get_hash_value(usage_hash, key);
}

static LWLock *
partition_lock(uint32 hashcode)
{
	return shared->partition_locks[hashcode % USAGE_PARTITIONS];
}

/* Every partition, for a walk through the whole table. */
static void
lock_all(LWLockMode mode)
{
	for (int i = 0; i < USAGE_PARTITIONS; i++)
		LWLockAcquire(shared->partition_locks[i], mode);
}

static void
unlock_all(void)
{
	for (int i = USAGE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(shared->partition_locks[i]);
}

/* Adds `count` uses at `at`; false when there is no table or it is full. */
static bool
usage_add(Oid database, const pg_uuid_t *session_id, int64 count, TimestampTz at)
{
	UsageKey	key;
	UsageEntry *e;
	bool		found;
	uint32		hashcode;

	if (shared == NULL)
		return false;
	hashcode = usage_key(&key, database, session_id);
	LWLockAcquire(partition_lock(hashcode), LW_EXCLUSIVE);
	e = hash_search_with_hash_value(usage_hash, &key, hashcode, HASH_ENTER_NULL, &found);
	if (e != NULL)
	{
		if (!found)
		{
			e->count = 0;
			e->last_used = 0;
			e->flush = 0;
		}
		e->count += count;
		if (at > e->last_used)
			e->last_used = at;
	}
	LWLockRelease(partition_lock(hashcode));
	return e != NULL;
}

bool
UsageRecord(const pg_uuid_t *session_id, TimestampTz at)
{
	return usage_add(MyDatabaseId, session_id, 1, at);
}

TimestampTz
UsageLastUsed(const pg_uuid_t *session_id)
{
	UsageKey	key;
	UsageEntry *e;
	TimestampTz at = 0;
	uint32		hashcode;

	if (shared == NULL)
		return 0;
	hashcode = usage_key(&key, MyDatabaseId, session_id);
	LWLockAcquire(partition_lock(hashcode), LW_SHARED);
	e = hash_search_with_hash_value(usage_hash, &key, hashcode, HASH_FIND, NULL);
	if (e != NULL)
		at = e->last_used;
	LWLockRelease(partition_lock(hashcode));
	return at;
}

Oid
UsageNextDatabase(Oid after)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	Oid			first = InvalidOid;
	Oid			next = InvalidOid;

	if (shared == NULL)
		return InvalidOid;
	lock_all(LW_SHARED);
	hash_seq_init(&seq, usage_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		/* the smallest database above `after`, else the smallest of all */
		if (!OidIsValid(first) || e->key.database < first)
			first = e->key.database;
		if (e->key.database > after &&
			(!OidIsValid(next) || e->key.database < next))
			next = e->key.database;
	}
	unlock_all();
	return OidIsValid(next) ? next : first;
}

void
UsageForget(Oid database)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;

	if (shared == NULL)
		return;
	lock_all(LW_EXCLUSIVE);
	hash_seq_init(&seq, usage_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (e->key.database == database)
			(void) hash_search(usage_hash, &e->key, HASH_REMOVE, NULL);
	unlock_all();
}

/*
 * After a batch's write: when it committed, the counts it wrote come off the
 * entries the flush took (but for those it skipped); when it failed, they
 * stay for the next flush.  An entry left with no count stays, with its
 * time, until the next flush, for a reader whose snapshot was taken before
 * the write committed.  Not inlined: a test (013_verdict_races.pl) stops
 * the worker here with gdb.
 */
static pg_noinline void
usage_settle(Oid database, uint64 flush, const pg_uuid_t *ids, const int64 *counts,
			 const bool *skipped, int n, bool committed)
{
	for (int i = 0; i < n && committed; i++)
	{
		UsageKey	key;
		UsageEntry *e;
		uint32		hashcode;

		if (skipped[i])
			continue;
		hashcode = usage_key(&key, database, &ids[i]);

		LWLockAcquire(partition_lock(hashcode), LW_EXCLUSIVE);
		e = hash_search_with_hash_value(usage_hash, &key, hashcode, HASH_FIND, NULL);
		if (e != NULL && e->flush == flush)
			e->count -= counts[i];
		LWLockRelease(partition_lock(hashcode));
	}
}

/*
 * Writes `database`'s pending uses, in batches, each in a transaction of the
 * caller's making (the worker's).  The entries stay in the table while their
 * batch is written, so that the inactivity rule still sees those uses (the
 * row shows them only once the write commits), and each is taken once per
 * flush.  Returns the sessions written.
 */
int64
UsageFlush(Oid database, bool (*write) (const pg_uuid_t *ids, const int64 *counts,
										const TimestampTz *times, int n,
										bool *skipped))
{
	int64		written = 0;
	pg_uuid_t  *ids = palloc(USAGE_BATCH * sizeof(pg_uuid_t));
	int64	   *counts = palloc(USAGE_BATCH * sizeof(int64));
	TimestampTz *times = palloc(USAGE_BATCH * sizeof(TimestampTz));
	bool	   *skipped = palloc(USAGE_BATCH * sizeof(bool));
	uint64		flush = 0;

	for (;;)
	{
		HASH_SEQ_STATUS seq;
		UsageEntry *e;
		int			n = 0;
		bool		committed;

		lock_all(LW_EXCLUSIVE);
		if (flush == 0)
			flush = ++shared->flushes;
		hash_seq_init(&seq, usage_hash);
		while (n < USAGE_BATCH && (e = hash_seq_search(&seq)) != NULL)
		{
			if (e->key.database != database || e->flush == flush)
				continue;
			if (e->count == 0)
			{
				/* written by an earlier flush, kept a flush longer (below) */
				(void) hash_search(usage_hash, &e->key, HASH_REMOVE, NULL);
				continue;
			}
			e->flush = flush;
			ids[n] = e->key.session_id;
			counts[n] = e->count;
			times[n] = e->last_used;
			n++;
		}
		if (n == USAGE_BATCH)
			hash_seq_term(&seq);
		unlock_all();
		if (n == 0)
			break;
		committed = write(ids, counts, times, n, skipped);
		usage_settle(database, flush, ids, counts, skipped, n, committed);
		if (!committed)
			break;
		/* a write that committed returns with interrupts held (usage.h) */
		RESUME_INTERRUPTS();
		CHECK_FOR_INTERRUPTS();
		for (int i = 0; i < n; i++)
			written += skipped[i] ? 0 : 1;
		if (n < USAGE_BATCH)
			break;
	}
	pfree(ids);
	pfree(counts);
	pfree(times);
	pfree(skipped);
	return written;
}

/*
 * Whether a device code (by its SHA-256) was polled less than `interval_s`
 * ago; records this poll either way.  Kept in shared memory, because the
 * poll that is refused (PT400) rolls back anything it wrote; without shared
 * memory there is no such check.  The slot of the code polled longest ago is
 * reused when all are taken.  *first: this is the code's first poll refused
 * (so that its rate_limited event is written once).
 */
bool
UsagePolledTooSoon(const unsigned char *code_hash, TimestampTz now, int interval_s,
				   bool *first)
{
	PollSlot   *slot = NULL;
	PollSlot   *oldest = NULL;
	bool		too_soon = false;

	*first = false;
	if (shared == NULL)
		return false;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < POLL_SLOTS; i++)
	{
		PollSlot   *p = &shared->polls[i];

		if (memcmp(p->code_hash, code_hash, sizeof(p->code_hash)) == 0 && p->last_poll != 0)
		{
			slot = p;
			break;
		}
		if (oldest == NULL || p->last_poll < oldest->last_poll)
			oldest = p;
	}
	if (slot != NULL)
		too_soon = now - slot->last_poll < (int64) interval_s * USECS_PER_SEC;
	else
	{
		slot = oldest;
		memcpy(slot->code_hash, code_hash, sizeof(slot->code_hash));
		slot->slowed = false;
	}
	slot->last_poll = now;
	*first = too_soon && !slot->slowed;
	if (too_soon)
		slot->slowed = true;
	LWLockRelease(shared->lock);
	return too_soon;
}
