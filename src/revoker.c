/*-------------------------------------------------------------------------
 *
 * revoker.c
 *	  Revocations that must outlive the error of the call that decided
 *	  them: a shared-memory queue and a static background worker.
 *
 * When refresh finds an exchanged refresh token presented again, the
 * session must be revoked (RFC 9700 4.14) and the call must fail with PT401,
 * which rolls back everything the caller's transaction wrote.  So the
 * revocation is committed elsewhere, and it must never be skipped for want
 * of a resource an attacker can exhaust (1.1 started a dynamic background
 * worker, and an attacker who filled max_worker_processes escaped detection).
 *
 * The design:
 *
 *	- The queue lives in shared memory reserved at server start, with room
 *	  for REVOKER_QUEUE_SIZE entries (database, session, what to do).  The
 *	  detecting backend puts its entry there before it raises.  From then on
 *	  RevokerPending() reports the session, and validate, refresh, revoke and
 *	  pre_request treat it as revoked, until the worker has committed the
 *	  revocation and removed the entry.  So the session cannot be used from
 *	  the moment of detection, whether or not the commit has happened yet.
 *
 *	- One static background worker, registered at preload, so its slot is
 *	  reserved at server start and cannot be taken by anyone.  A worker can
 *	  connect to one database only, so it starts unconnected, connects to the
 *	  database of the first entry, commits every entry of that database (each
 *	  in a transaction of its own, with statement_timeout off, retrying
 *	  forever on failure: a revocation is never dropped), and when entries
 *	  of another database wait, or it has been idle for REVOKER_IDLE_MS,
 *	  exits with code 1, which makes the postmaster start it again (after
 *	  bgw_restart_time) unconnected.  It holds no connection to an idle
 *	  database, so DROP DATABASE is not blocked for long.
 *
 *	- An entry that fails (its session's row held locked by an open
 *	  transaction: the worker's lock_timeout is REVOKER_LOCK_WAIT_MS; a
 *	  broken table) stays queued, and is tried again after the others: the
 *	  other entries of its database, then those of the other databases,
 *	  which are served round robin.  So no database, and no user who can
 *	  hold a transaction open, holds up the revocations of another.
 *
 *	- The detecting backend waits for the commit (at most REVOKER_WAIT_MS,
 *	  with interrupts held, so that the caller's statement_timeout cannot
 *	  turn the PT401 into another error) when it holds no transaction id:
 *	  then it holds no lock the worker may need.  Otherwise it raises at
 *	  once; its rollback releases its locks and the worker goes on.
 *
 * What is not covered, and said so in the README: a crash of the server in
 * the milliseconds between detection and the worker's commit loses the
 * queue (shared memory does not survive a crash restart).  Without
 * shared_preload_libraries there is no queue: refresh then refuses to run
 * (55000), because it could not keep the promise.
 *
 * The same queue carries the events that must outlive the caller's error
 * (extension_token_events): the reuse of a refresh token (written with its
 * revocation, and notified and logged once committed) and rate-limit
 * refusals (entries of their own, never merged, so that none is lost).
 *
 * The same worker writes the uses of sessions counted in shared memory
 * (usage.c), about once a second per database, after the revocations.
 *
 * And it records rotations of the signing keys (secret_rotated events): the
 * secret and the keys are server configuration, changed by a reload, and
 * every database that has the extension must get its event.  The worker
 * reloads its configuration on SIGHUP (and a new incarnation starts with the
 * postmaster's), and compares the key ids in force (config.c: never a key)
 * with those it saw last, kept here.  When they changed, and at the first
 * start after the server started (a change made while it was down), it
 * sweeps the databases: an incarnation connected to no database lists those
 * that accept connections (templates left out) into keys_todo, a bounded
 * list walked in oid order from keys_cursor, and each one gets a visit, after
 * the revocations and before the uses.  A visit compares with the key ids
 * that database last recorded (storage.c) and writes the event and the new
 * record in one transaction, so a visit repeated, or made by a sweep that a
 * newer change restarted, records nothing twice, and one that failed is
 * simply made again: with a growing pause, every failure logged.  Nothing
 * is dropped silently: a database that cannot be connected to is given up
 * with a LOG line that says its rotation was not recorded, and the next
 * sweep, or extension_tokens_check_signing_keys() there, records it.
 *
 * The queue is protected by one LWLock; a reader first checks an atomic
 * count, so that an empty queue (the normal case) costs one atomic read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/builtins.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "config.h"
#include "replication.h"
#include "revoker.h"
#include "storage.h"
#include "token.h"
#include "usage.h"

PGDLLEXPORT void extension_tokens_revoker_main(Datum main_arg);

#define REVOKER_QUEUE_SIZE	1024
/* Entries that events (rate limits) leave to revocations. */
#define REVOKER_QUEUE_RESERVED	256
#define REVOKER_IDLE_MS		2000
/* How often the uses counted in shared memory are written (usage.c). */
#define USAGE_FLUSH_MS		1000
#define REVOKER_WAIT_MS		2000
/* The worker's lock_timeout: a lock is then waited for again, later. */
#define REVOKER_LOCK_WAIT_MS 1000
/* a mere record of a refused refresh is waited for less */
#define REVOKER_RECORD_WAIT_MS 500
/* Connecting to a database that refuses us is given up after this many tries. */
#define REVOKER_CONNECT_TRIES 3
/* Databases listed at a time for a visit after the signing keys changed. */
#define KEYS_TODO_SIZE		64
/* The longest pause before a failed visit is made again. */
#define KEYS_MAX_PAUSE_S	300

typedef struct RevokerEntry
{
	bool		in_use;
	bool		revoke;
	Oid			database;
	pg_uuid_t	session_id;
	int			connect_tries;
	char		reason[40];
	char		refresh_error[40];
	/* the event to record (reuse_detected for a revocation after reuse) */
	bool		event_only;		/* a record of its own: never merged */
	bool		has_session;
	bool		has_hash;
	char		event[24];
	char		user_id[TOKEN_SUB_MAX_LENGTH + 1];
	char		actor[NAMEDATALEN];
	unsigned char hash[TOKEN_HASH_LENGTH];
	/*
	 * Its revocation committed once, and a SIGTERM ended that commit's wait
	 * for the synchronous standbys: committed again only for the wait, its
	 * event, notification and log line are not made again.
	 */
	bool		committed;
} RevokerEntry;

/* A database to visit for the signing keys, and its failed visits. */
typedef struct KeysTodo
{
	Oid			database;
	int			failures;
	TimestampTz not_before;
} KeysTodo;

typedef struct RevokerShared
{
	LWLock	   *lock;
	pg_atomic_uint32 count;		/* entries in use */
	PGPROC	   *worker_proc;	/* NULL when no worker runs */
	Oid			worker_database;	/* InvalidOid while unconnected */
	Oid			last_database;	/* served last: usage is served round robin */
	Oid			connecting_database;	/* being connected to, and how often */
	int			connect_tries;
	/* the worker's: where its next try begins, after an entry failed */
	int			entry_from;
	/* the worker's: when a failure for a lock not granted was last logged */
	TimestampTz lock_failure_logged;
	/* secret_rotated: see the header comment */
	bool		keys_valid;		/* keys below seen by a worker */
	SigningIds	keys;			/* the key ids in force, as a worker saw them */
	TimestampTz keys_changed_at;	/* when a worker saw them change */
	uint32		keys_generation;	/* counts the changes (sweeps begun) */
	bool		keys_listing;	/* databases above keys_cursor to list */
	Oid			keys_cursor;
	int			keys_ntodo;
	KeysTodo	keys_todo[KEYS_TODO_SIZE];
	RevokerEntry entries[REVOKER_QUEUE_SIZE];
} RevokerShared;

static RevokerShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
revoker_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RevokerShared)));
	RequestNamedLWLockTranche("extension_tokens revoker", 1);
}

static void
revoker_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("extension_tokens revoker", sizeof(RevokerShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(RevokerShared));
		shared->lock = &(GetNamedLWLockTranche("extension_tokens revoker"))->lock;
		pg_atomic_init_u32(&shared->count, 0);
		shared->worker_proc = NULL;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
RevokerInit(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = revoker_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = revoker_shmem_startup;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "extension_tokens", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "extension_tokens_revoker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "extension_tokens revoker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "extension_tokens revoker", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

bool
RevokerAvailable(void)
{
	return shared != NULL;
}

bool
RevokerKeysSeen(SigningIds *ids, TimestampTz *changed_at)
{
	bool		valid;

	if (shared == NULL)
		return false;
	LWLockAcquire(shared->lock, LW_SHARED);
	valid = shared->keys_valid;
	if (valid)
	{
		*ids = shared->keys;
		*changed_at = shared->keys_changed_at;
	}
	LWLockRelease(shared->lock);
	return valid;
}

bool
RevokerPending(const pg_uuid_t *session_id)
{
	bool		pending = false;

	if (shared == NULL || pg_atomic_read_u32(&shared->count) == 0)
		return false;
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
	{
		RevokerEntry *e = &shared->entries[i];

		if (e->in_use && e->revoke && e->database == MyDatabaseId &&
			memcmp(&e->session_id, session_id, sizeof(pg_uuid_t)) == 0)
		{
			pending = true;
			break;
		}
	}
	LWLockRelease(shared->lock);
	return pending;
}

static void
wake_worker(void)
{
	PGPROC	   *proc;

	LWLockAcquire(shared->lock, LW_SHARED);
	proc = shared->worker_proc;
	LWLockRelease(shared->lock);
	if (proc != NULL)
		SetLatch(&proc->procLatch);
}

/*
 * Puts the request into the queue (merging it with one for the same
 * session); false when the queue is full.
 */
static bool
enqueue(const pg_uuid_t *session_id, bool revoke, const char *reason,
		const char *refresh_error, const char *user_id, const unsigned char *hash)
{
	RevokerEntry *free_entry = NULL;
	RevokerEntry *e = NULL;
	/* looked up before the lock: a catalog lookup may read and may fail */
	char	   *actor = GetUserNameFromId(GetUserId(), true);

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
	{
		RevokerEntry *x = &shared->entries[i];

		if (!x->in_use)
		{
			if (free_entry == NULL)
				free_entry = x;
		}
		else if (!x->event_only && x->database == MyDatabaseId &&
				 memcmp(&x->session_id, session_id, sizeof(pg_uuid_t)) == 0)
		{
			e = x;
			break;
		}
	}
	if (e == NULL && free_entry != NULL)
	{
		e = free_entry;
		memset(e, 0, sizeof(*e));
		e->in_use = true;
		e->database = MyDatabaseId;
		e->session_id = *session_id;
		e->has_session = true;
		strlcpy(e->actor, actor ? actor : "?", sizeof(e->actor));
		pg_atomic_fetch_add_u32(&shared->count, 1);
	}
	if (e != NULL)
	{
		if (revoke && !e->revoke)
		{
			e->revoke = true;
			strlcpy(e->reason, reason ? reason : "revoked", sizeof(e->reason));
			strlcpy(e->event, "reuse_detected", sizeof(e->event));
			if (user_id)
				strlcpy(e->user_id, user_id, sizeof(e->user_id));
			if (hash)
			{
				memcpy(e->hash, hash, TOKEN_HASH_LENGTH);
				e->has_hash = true;
			}
		}
		/* the reuse's own record is not overwritten by a later refusal */
		if (refresh_error && (!e->revoke || e->refresh_error[0] == '\0' || revoke))
			strlcpy(e->refresh_error, refresh_error, sizeof(e->refresh_error));
	}
	LWLockRelease(shared->lock);
	return e != NULL;
}

/* Whether an entry for this session (of this database) is still queued. */
static bool
queued(const pg_uuid_t *session_id)
{
	bool		found = false;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
	{
		RevokerEntry *e = &shared->entries[i];

		if (e->in_use && !e->event_only && e->database == MyDatabaseId &&
			memcmp(&e->session_id, session_id, sizeof(pg_uuid_t)) == 0)
		{
			found = true;
			break;
		}
	}
	LWLockRelease(shared->lock);
	return found;
}

/*
 * Sleeps 10 ms; false once `deadline` has passed.  Interrupts are held by
 * the caller: a statement_timeout or lock_timeout of the caller's must not
 * turn the refusal that follows into another error (the wait is short and
 * bounded; a cancel still pending afterwards is cleared by the error's
 * recovery).
 */
static bool
nap_until(TimestampTz deadline)
{
	if (GetCurrentTimestamp() >= deadline)
		return false;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 10L, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	return true;
}

void
RevokerSubmit(const pg_uuid_t *session_id, bool revoke, const char *reason,
			  const char *refresh_error, const char *user_id,
			  const unsigned char *hash, bool wait)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   revoke ? REVOKER_WAIT_MS
													   : REVOKER_RECORD_WAIT_MS);
	bool		until_committed;

	if (shared == NULL)
	{
		if (revoke)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot revoke a session after refresh token reuse: extension_tokens is not preloaded"),
					 errhint("Add extension_tokens to shared_preload_libraries and restart the server.")));
		return;
	}

	/*
	 * A full queue (1024 sessions revoked within the time it takes the
	 * worker to commit them) is waited out; a revocation that still finds no
	 * room fails the call.  A mere record of a refused refresh is dropped.
	 */
	HOLD_INTERRUPTS();
	while (!enqueue(session_id, revoke, reason, refresh_error, user_id, hash))
	{
		if (!revoke)
		{
			RESUME_INTERRUPTS();
			return;
		}
		wake_worker();
		if (!nap_until(deadline))
		{
			RESUME_INTERRUPTS();
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("cannot queue the revocation of a session after refresh token reuse"),
					 errdetail("The revocation queue is full."),
					 errhint("Check that the \"extension_tokens revoker\" background worker is running.")));
		}
	}
	wake_worker();

	/*
	 * When revocations wait for synchronous standbys
	 * (revoke_synchronous_commit), the refusal must not return before the
	 * worker's commit has: a standby would still accept the session.  The
	 * wait then ends, as a synchronous commit's does, only at the commit or
	 * when this backend is cancelled or terminated.
	 */
	until_committed = revoke && ReplicationRevocationWaitsForStandbys();
	while (wait && queued(session_id))
	{
		if (until_committed ? (QueryCancelPending || ProcDiePending) : !nap_until(deadline))
		{
			if (revoke)
				ereport(LOG,
						(errmsg("extension_tokens: the revocation of a session after refresh token reuse is not committed yet; the session is refused until it is")));
			break;
		}
		if (until_committed)
			(void) nap_until(PG_INT64_MAX);
	}
	RESUME_INTERRUPTS();
}

/*
 * A new entry of its own for an event; false when the queue is full.  The
 * last REVOKER_QUEUE_RESERVED entries are the revocations': however many
 * refusals are recorded at once, a reuse finds room.
 */
static bool
enqueue_event(const char *event, const pg_uuid_t *session_id, const char *user_id,
			  const char *reason)
{
	RevokerEntry *e = NULL;
	char	   *actor = GetUserNameFromId(GetUserId(), true);

	if (pg_atomic_read_u32(&shared->count) >= REVOKER_QUEUE_SIZE - REVOKER_QUEUE_RESERVED)
		return false;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
		if (!shared->entries[i].in_use)
		{
			e = &shared->entries[i];
			memset(e, 0, sizeof(*e));
			e->in_use = true;
			e->event_only = true;
			e->database = MyDatabaseId;
			if (session_id)
			{
				e->session_id = *session_id;
				e->has_session = true;
			}
			strlcpy(e->event, event, sizeof(e->event));
			if (user_id)
				strlcpy(e->user_id, user_id, sizeof(e->user_id));
			if (reason)
				strlcpy(e->reason, reason, sizeof(e->reason));
			strlcpy(e->actor, actor ? actor : "?", sizeof(e->actor));
			pg_atomic_fetch_add_u32(&shared->count, 1);
			break;
		}
	LWLockRelease(shared->lock);
	return e != NULL;
}

void
RevokerRecordEvent(const char *event, const pg_uuid_t *session_id, const char *user_id,
				   const char *reason)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   REVOKER_RECORD_WAIT_MS);

	if (shared == NULL)
		return;					/* no queue without the preload: said in README */
	HOLD_INTERRUPTS();
	while (!enqueue_event(event, session_id, user_id, reason))
	{
		wake_worker();
		if (!nap_until(deadline))
		{
			RESUME_INTERRUPTS();
			ereport(LOG,
					(errmsg("extension_tokens: the revocation queue is full: event \"%s\" not recorded",
							event)));
			return;
		}
	}
	wake_worker();
	RESUME_INTERRUPTS();
}

/* ---------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------
 */

/*
 * The first entry of `database` (InvalidOid: of any database) at or after
 * index `from`, in the queue's circular order, copied.
 */
static bool
next_entry(Oid database, int from, RevokerEntry *out, int *index)
{
	bool		found = false;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int k = 0; k < REVOKER_QUEUE_SIZE; k++)
	{
		int			i = (from + k) % REVOKER_QUEUE_SIZE;
		RevokerEntry *e = &shared->entries[i];

		if (e->in_use && (!OidIsValid(database) || e->database == database))
		{
			*out = *e;
			*index = i;
			found = true;
			break;
		}
	}
	LWLockRelease(shared->lock);
	return found;
}

/*
 * The database with queued entries that comes next after `after` in oid
 * order (round robin: the smallest above it, else the smallest of all), or
 * InvalidOid when nothing is queued.  So an entry that keeps failing in one
 * database (a row held locked by an open transaction, say) does not hold up
 * the entries of the others.
 */
static Oid
queued_database(Oid after)
{
	Oid			first = InvalidOid;
	Oid			next = InvalidOid;

	if (pg_atomic_read_u32(&shared->count) == 0)
		return InvalidOid;
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
	{
		RevokerEntry *e = &shared->entries[i];

		if (!e->in_use)
			continue;
		if (!OidIsValid(first) || e->database < first)
			first = e->database;
		if (e->database > after && (!OidIsValid(next) || e->database < next))
			next = e->database;
	}
	LWLockRelease(shared->lock);
	return OidIsValid(next) ? next : first;
}

/*
 * After entry `index` committed as `done` says, and if it still asks for no
 * more than that (a backend may have merged a revocation into it
 * meanwhile): removes it, or, with `wait_again`, keeps it queued for its
 * wait for the standbys alone (see RevokerEntry.committed).
 */
static void
finish_entry(int index, const RevokerEntry *done, bool wait_again)
{
	RevokerEntry *e = &shared->entries[index];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (e->in_use && e->database == done->database &&
		memcmp(&e->session_id, &done->session_id, sizeof(pg_uuid_t)) == 0 &&
		(!e->revoke || done->revoke) &&
		strcmp(e->refresh_error, done->refresh_error) == 0)
	{
		if (wait_again)
			e->committed = true;
		else
		{
			e->in_use = false;
			pg_atomic_fetch_sub_u32(&shared->count, 1);
		}
	}
	LWLockRelease(shared->lock);
}

/* in_transaction()'s last failure was for a lock not granted in time. */
static bool failed_on_lock = false;

/*
 * Runs work(arg) in a transaction of its own and commits it; false (logged
 * with `failure`) when it raised, the transaction then rolled back.  After a
 * commit it returns with interrupts held: a SIGTERM is then acted on only
 * once the caller has noted what the commit did (taken the entry off the
 * queue, settled the uses written) and called RESUME_INTERRUPTS(); an exit
 * in between would do the work again (uses counted twice).
 */
static bool
in_transaction(void (*work) (void *arg), void *arg, const char *activity,
			   const char *failure)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	failed_on_lock = false;
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		work(arg);
		PopActiveSnapshot();
		HOLD_INTERRUPTS();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			elevel = LOG;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		/*
		 * A lock not granted within the worker's lock_timeout (a row held by
		 * an open transaction) is logged once a minute, not at every try.
		 */
		failed_on_lock = edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
		if (failed_on_lock &&
			!TimestampDifferenceExceeds(shared->lock_failure_logged,
										GetCurrentTimestamp(), 60 * 1000))
			elevel = DEBUG1;
		else if (failed_on_lock)
			shared->lock_failure_logged = GetCurrentTimestamp();
		ereport(elevel,
				(errmsg("extension_tokens: %s: %s", failure, edata->message)));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/* One queued entry's work: the refusal recorded, the session revoked. */
static void
entry_work(void *arg)
{
	const RevokerEntry *e = arg;
	TimestampTz now = GetCurrentTimestamp();

	if (e->event_only)
	{
		StorageRecordEvent(now, e->event, e->user_id[0] ? e->user_id : NULL,
						   e->has_session ? &e->session_id : NULL, e->actor,
						   e->reason[0] ? e->reason : NULL, NULL);
		return;
	}
	if (e->refresh_error[0])
		StorageRecordRefreshError(e->session_id, now, e->refresh_error);
	if (e->revoke)
	{
		/* the reuse first: the revocation's own event follows it */
		if (e->event[0] && !e->committed)
		{
			const char *reason = e->refresh_error[0] ? e->refresh_error : e->reason;

			StorageRecordEvent(now, e->event, e->user_id[0] ? e->user_id : NULL,
							   &e->session_id, e->actor, reason,
							   e->has_hash ? e->hash : NULL);
			StorageNotify(e->event, &e->session_id, e->user_id[0] ? e->user_id : NULL,
						  reason);
		}
		if (StorageRevokeSession(e->session_id, now, e->reason) == 0 &&
			ReplicationRevocationWaitsForStandbys())
		{
			/*
			 * Revoked already, perhaps by an earlier try of this entry whose
			 * commit's wait for the synchronous standbys a SIGTERM ended (the
			 * entry was then left queued).  This commit, which follows that
			 * one, waits as a revocation's does, for the caller waiting on it.
			 */
			(void) GetTopTransactionId();
			ReplicationNoteRevocation();
		}
	}
}

/*
 * Commits one entry's work; false (and logged) when it failed, true with
 * interrupts held (in_transaction).  The log line of a reuse follows its
 * commit: one per reuse, with no token.
 */
static bool
apply_entry(const RevokerEntry *e)
{
	if (!in_transaction(entry_work, (void *) e, "extension_tokens: revoking a session",
						"committing a revocation failed, trying again"))
		return false;
	if (e->revoke && !e->committed)
		ereport(LOG,
				(errmsg("extension_tokens: %s: session %s of user \"%s\" revoked (%s)",
						e->event[0] ? "refresh token reuse detected" : "session revoked",
						DatumGetCString(DirectFunctionCall1(uuid_out,
															UUIDPGetDatum((pg_uuid_t *) &e->session_id))),
						e->user_id, e->reason)));
	return true;
}

/* ---------------------------------------------------------------------
 * The signing keys (secret_rotated): see the header comment
 * ---------------------------------------------------------------------
 */

/*
 * Compares the key ids in force with those seen last; when they changed (or
 * none was seen since the server started), a new sweep of the databases
 * begins.
 */
static void
note_keys(void)
{
	SigningIds	ids;
	bool		first;
	bool		changed;

	ConfigSigningIds(&ids);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	first = !shared->keys_valid;
	changed = first || memcmp(&shared->keys, &ids, sizeof(ids)) != 0;
	if (changed)
	{
		shared->keys = ids;
		shared->keys_valid = true;
		shared->keys_changed_at = GetCurrentTimestamp();
		shared->keys_generation++;
		shared->keys_listing = true;
		shared->keys_cursor = InvalidOid;
		shared->keys_ntodo = 0;
	}
	LWLockRelease(shared->lock);
	if (changed && !first)
		ereport(LOG,
				(errmsg("extension_tokens revoker: the signing keys changed; recording secret_rotated in every database that has the extension")));
}

/*
 * The next database due for a visit (InvalidOid: none now), and whether the
 * databases are to be listed first (*list: the list has room, and nothing
 * in it is due).
 */
static Oid
keys_next(bool *list)
{
	Oid			database = InvalidOid;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < shared->keys_ntodo; i++)
		if (shared->keys_todo[i].not_before <= now)
		{
			database = shared->keys_todo[i].database;
			break;
		}
	*list = !OidIsValid(database) && shared->keys_listing &&
		shared->keys_ntodo < KEYS_TODO_SIZE;
	LWLockRelease(shared->lock);
	return database;
}

/* Whether `database` is due for a visit. */
static bool
keys_due(Oid database)
{
	bool		due = false;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < shared->keys_ntodo; i++)
		if (shared->keys_todo[i].database == database &&
			shared->keys_todo[i].not_before <= now)
			due = true;
	LWLockRelease(shared->lock);
	return due;
}

/*
 * After a visit of `database` under generation `generation`: done (off the
 * list), or failed (its pause doubled; returned, for the log line).
 */
static int
keys_visited(Oid database, uint32 generation, bool ok)
{
	int			pause_s = 0;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < shared->keys_ntodo; i++)
	{
		KeysTodo   *t = &shared->keys_todo[i];

		if (t->database != database)
			continue;
		if (ok && shared->keys_generation == generation)
		{
			/* a newer sweep re-lists the database: it stays for that one */
			shared->keys_todo[i] = shared->keys_todo[--shared->keys_ntodo];
		}
		else if (!ok)
		{
			pause_s = Min(KEYS_MAX_PAUSE_S, 1 << Min(t->failures, 16));
			t->failures++;
			t->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														pause_s * 1000);
		}
		break;
	}
	LWLockRelease(shared->lock);
	return pause_s;
}

/*
 * Connected to no database: lists those above keys_cursor that accept
 * connections and are not templates, in oid order, into the room left in
 * keys_todo.  The listing belongs to the sweep it began in: a sweep begun
 * meanwhile lists afresh.
 */
static void
keys_list_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid			found[KEYS_TODO_SIZE];
	int			n = 0;
	int			room;
	bool		more = false;
	Oid			cursor;
	uint32		generation;
	List	   *refused = NIL;	/* databases refusing connections */
	List	   *refused_names = NIL;

	LWLockAcquire(shared->lock, LW_SHARED);
	cursor = shared->keys_cursor;
	generation = shared->keys_generation;
	room = KEYS_TODO_SIZE - shared->keys_ntodo;
	LWLockRelease(shared->lock);
	if (room <= 0)
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	pgstat_report_activity(STATE_RUNNING, "extension_tokens: listing databases");
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		int			at;

		if (db->datistemplate || db->oid <= cursor)
			continue;
#ifdef DATCONNLIMIT_INVALID_DB
		if (db->datconnlimit == DATCONNLIMIT_INVALID_DB)
			continue;			/* being dropped */
#endif
		if (!db->datallowconn)
		{
			/* said in the log, below, if within this listing's range */
			refused = lappend_oid(refused, db->oid);
			refused_names = lappend(refused_names, pstrdup(NameStr(db->datname)));
			continue;
		}
		/* keep the `room` smallest oids, in order */
		for (at = n; at > 0 && found[at - 1] > db->oid; at--)
			;
		if (at >= room)
		{
			more = true;
			continue;
		}
		if (n == room)
		{
			more = true;
			n--;
		}
		memmove(&found[at + 1], &found[at], (n - at) * sizeof(Oid));
		found[at] = db->oid;
		n++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	for (int i = 0; i < list_length(refused); i++)
	{
		Oid			oid = list_nth_oid(refused, i);

		if (more && n > 0 && oid > found[n - 1])
			continue;			/* the next listing's */
		ereport(LOG,
				(errmsg("extension_tokens revoker: database \"%s\" does not allow connections: a change of the signing keys is not recorded there",
						(char *) list_nth(refused_names, i)),
				 errhint("Once it allows connections, run SELECT extension_tokens_check_signing_keys() there (extension_tokens_cleanup() does it too).")));
	}
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->keys_generation == generation && shared->keys_cursor == cursor &&
		shared->keys_listing)
	{
		for (int i = 0; i < n && shared->keys_ntodo < KEYS_TODO_SIZE; i++)
		{
			KeysTodo   *t = &shared->keys_todo[shared->keys_ntodo++];

			t->database = found[i];
			t->failures = 0;
			t->not_before = 0;
			shared->keys_cursor = found[i];
		}
		shared->keys_listing = more;
	}
	LWLockRelease(shared->lock);
}

/* A visit: the comparison, and the event if the keys changed. */
typedef struct KeysVisit
{
	SigningIds	ids;
	TimestampTz at;
	bool		rotated;
	char	   *reason;			/* what changed, for the log line */
	char	   *dbname;
} KeysVisit;

static void
keys_visit_work(void *arg)
{
	KeysVisit  *v = arg;

	v->rotated = false;
	if (!StorageInstalledHere())
		return;					/* nothing to record here (or not 1.2 yet) */
	v->rotated = StorageCheckSigningKeys(v->ids.algorithm, v->ids.secret_id,
										 v->ids.key_id, v->at, NULL, true, true, &v->reason);
	if (v->rotated)
	{
		/* for the log line after the commit, outside any transaction */
		v->reason = MemoryContextStrdup(TopMemoryContext, v->reason);
		v->dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	}
}

/* ---------------------------------------------------------------------
 * The worker's rounds
 * ---------------------------------------------------------------------
 */

/*
 * Waits on the latch for up to `ms`; exits when the postmaster dies.  A
 * reload of the configuration is taken here, and may begin a sweep.
 */
static void
worker_wait(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		note_keys();
	}
}

/*
 * The database to serve next: one with queued entries, else one due for a
 * visit for the signing keys, else one with uses to write (entries and uses
 * round robin after the last database served).  *list: none of these, and
 * the databases are to be listed for the keys first.
 */
static Oid
choose_database(bool *list)
{
	Oid			last;
	Oid			database;

	*list = false;
	LWLockAcquire(shared->lock, LW_SHARED);
	last = shared->last_database;
	LWLockRelease(shared->lock);
	database = queued_database(last);
	if (OidIsValid(database))
		return database;
	database = keys_next(list);
	if (OidIsValid(database) || *list)
		return database;
	return UsageNextDatabase(last);
}

/*
 * Drops everything queued for a database: it cannot be connected to
 * (`unreachable`: a visit for the keys it was due is said to be lost, in the
 * log), or it no longer has the extension (and so nothing to record).
 */
static void
forget_database(Oid database, bool unreachable)
{
	bool		keys_lost = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
		if (shared->entries[i].in_use && shared->entries[i].database == database)
		{
			shared->entries[i].in_use = false;
			pg_atomic_fetch_sub_u32(&shared->count, 1);
		}
	for (int i = 0; i < shared->keys_ntodo; i++)
		if (shared->keys_todo[i].database == database)
		{
			shared->keys_todo[i] = shared->keys_todo[--shared->keys_ntodo];
			keys_lost = true;
			break;
		}
	LWLockRelease(shared->lock);
	UsageForget(database);
	if (keys_lost && unreachable)
		ereport(LOG,
				(errmsg("extension_tokens revoker: a change of the signing keys is not recorded in database %u, which cannot be connected to",
						database),
				 errhint("Run SELECT extension_tokens_check_signing_keys() there once it accepts connections; the next reload that changes the keys, or restart, records it too.")));
}

/*
 * Unconnected: waits for work, then connects to its database, even one that
 * refuses new connections (or gives the database up after
 * REVOKER_CONNECT_TRIES failed connections: it is gone, or left invalid by
 * an interrupted DROP DATABASE, and so holds no session to protect).  The listing of
 * the databases for the keys is done connected to none, and then this
 * incarnation exits: the next one visits them.
 */
static Oid
worker_connect(void)
{
	Oid			database;
	bool		give_up = false;
	bool		list;

	while (!OidIsValid(database = choose_database(&list)) && !list)
		worker_wait(1000L);
	if (list)
	{
		BackgroundWorkerInitializeConnection(NULL, NULL, 0);
		keys_list_databases();
		proc_exit(1);
	}
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->connecting_database == database)
		give_up = ++shared->connect_tries > REVOKER_CONNECT_TRIES;
	else
	{
		shared->connecting_database = database;
		shared->connect_tries = 1;
	}
	LWLockRelease(shared->lock);
	if (give_up)
	{
		forget_database(database, true);
		ereport(LOG,
				(errmsg("extension_tokens revoker: giving up on database %u, which cannot be connected to",
						database)));
		proc_exit(1);
	}
	/*
	 * A database that refuses connections (ALTER DATABASE ... ALLOW_CONNECTIONS
	 * false) may still have backends connected since before, which count on
	 * the queue's revocations being committed.
	 */
	BackgroundWorkerInitializeConnectionByOid(database, BOOTSTRAP_SUPERUSERID,
											  BGWORKER_BYPASS_ALLOWCONN);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->connecting_database = InvalidOid;
	shared->connect_tries = 0;
	shared->worker_database = database;
	shared->last_database = database;
	LWLockRelease(shared->lock);
	return database;
}

/*
 * Connected: the visit for the keys, when this database is due one.  The
 * log line follows the commit: one per rotation and database, key ids only.
 */
static void
keys_visit(Oid database)
{
	KeysVisit	v;
	uint32		generation;
	int			pause_s;

	if (!keys_due(database))
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	v.ids = shared->keys;
	v.at = shared->keys_changed_at;
	generation = shared->keys_generation;
	LWLockRelease(shared->lock);
	v.reason = NULL;
	v.dbname = NULL;
	if (in_transaction(keys_visit_work, &v, "extension_tokens: recording the signing keys",
					   "recording a change of the signing keys failed"))
	{
		(void) keys_visited(database, generation, true);
		RESUME_INTERRUPTS();
		if (v.rotated)
			ereport(LOG,
					(errmsg("extension_tokens: signing keys rotated in database \"%s\": %s",
							v.dbname, v.reason)));
		CHECK_FOR_INTERRUPTS();
		return;
	}
	pause_s = keys_visited(database, generation, false);
	ereport(LOG,
			(errmsg("extension_tokens revoker: the change of the signing keys is not recorded in database %u yet; trying again in %d s",
					database, pause_s)));
}

/*
 * usage.c's batch writer: one transaction; false (logged) when it failed,
 * true with interrupts held, which UsageFlush resumes once it has settled.
 */
typedef struct UseBatch
{
	const pg_uuid_t *ids;
	const int64 *counts;
	const TimestampTz *times;
	int			n;
	bool	   *skipped;
} UseBatch;

static void
use_batch_work(void *arg)
{
	UseBatch   *b = arg;

	StorageAddUse(b->ids, b->counts, b->times, b->n, b->skipped);
}

/* A write of uses failed since this was last cleared. */
static bool uses_failed = false;

static bool
write_uses(const pg_uuid_t *ids, const int64 *counts, const TimestampTz *times, int n,
		   bool *skipped)
{
	UseBatch	b = {ids, counts, times, n, skipped};
	bool		ok = in_transaction(use_batch_work, &b, "extension_tokens: recording session use",
									"recording session use failed, keeping it for the next try");

	if (!ok)
		uses_failed = true;
	return ok;
}

static void
installed_work(void *arg)
{
	*(bool *) arg = StorageInstalledHere();
}

/*
 * Whether the connected database has the extension (at this library's
 * version).  When the check itself fails, it is taken to be there: what is
 * queued is kept, and tried again.
 */
static bool
extension_here(void)
{
	bool		here = true;

	if (in_transaction(installed_work, &here, "extension_tokens: looking for the extension",
					   "looking for the extension failed"))
		RESUME_INTERRUPTS();
	return here;
}

/*
 * The connected database no longer has the extension (DROP EXTENSION, or
 * DROP SCHEMA ... CASCADE): what is queued for it can never be written, and
 * its sessions are gone with its tables.  It is dropped, so that the worker
 * serves the other databases (it retried such an entry forever, and their
 * revocations waited in shared memory only, lost at the next restart).
 */
ET_NORETURN_BEGIN static void
abandon_database(Oid database)
ET_NORETURN_END;

static void
abandon_database(Oid database)
{
	forget_database(database, false);
	ereport(LOG,
			(errmsg("extension_tokens revoker: database %u no longer has the extension; what was queued for it is dropped",
					database)));
	proc_exit(1);
}

/*
 * SIGINT: PostgreSQL's lock_timeout cancels the waiting statement by sending
 * the process a SIGINT, after it set its timeout's indicator; that one is
 * acted on as a backend would.  Any other (pg_cancel_backend) is ignored.
 */
static void
revoker_sigint(SIGNAL_ARGS)
{
	if (get_timeout_indicator(LOCK_TIMEOUT, false))
		StatementCancelHandler(postgres_signal_arg);
}

/* On exit: no more wake-ups for this process's latch. */
static void
revoker_detach(int code, Datum arg)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->worker_proc == MyProc)
		shared->worker_proc = NULL;
	LWLockRelease(shared->lock);
}

void
extension_tokens_revoker_main(Datum main_arg)
{
	Oid			database;
	TimestampTz idle_since;
	TimestampTz last_flush = 0;
	int			failures = 0;

	/*
	 * Settings follow reloads (revoke_synchronous_commit, the keys).  SIGTERM
	 * is acted on where interrupts are checked, as in a backend, not in the
	 * handler (the default for background workers): between a commit and
	 * its bookkeeping interrupts are held (in_transaction), and a waiting
	 * lock or statement still ends at once.  A cancel (SIGINT) is ignored
	 * (revoker_sigint): it would end a revocation's wait for the synchronous
	 * standbys (revoke_synchronous_commit) as it ends any commit's, with no
	 * trace the worker could see, and the refusal would return before a
	 * standby confirmed.  The worker sets no statement timeout either (a lock
	 * is waited for a bounded time, and then tried again: below); a SIGTERM
	 * ends it (and a revocation it was committing stays queued).
	 */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, revoker_sigint);
	BackgroundWorkerUnblockSignals();
	if (shared == NULL)
		proc_exit(0);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->worker_proc = MyProc;
	shared->worker_database = InvalidOid;
	LWLockRelease(shared->lock);
	before_shmem_exit(revoker_detach, (Datum) 0);

	/* the configuration this incarnation started with: the postmaster's */
	note_keys();
	database = worker_connect();

	/*
	 * A revocation is never given up, whatever a statement takes; a lock it
	 * waits for is waited for REVOKER_LOCK_WAIT_MS at a time, so that the
	 * other databases' work (and this one's other entries) is not held up
	 * meanwhile: the entry stays queued, and refused, until it commits.
	 */
	SetConfigOption("lock_timeout", CppAsString2(REVOKER_LOCK_WAIT_MS), PGC_SUSET,
					PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		RevokerEntry e;
		int			index;
		bool		stuck = false;
		bool		stuck_on_lock = false;
		Oid			other;
		bool		list;

		/* a reload: revoke_synchronous_commit, and the keys in force */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			note_keys();
		}

		/*
		 * Revocations first, each committed before the next.  One that fails
		 * stays queued; the others of this database are tried after it (from
		 * the next index), and then the keys and the uses, before it is
		 * tried again.
		 */
		while (!stuck && next_entry(database, shared->entry_from, &e, &index))
		{
			if (apply_entry(&e))
			{
				/*
				 * A SIGTERM during the commit may have ended its wait for the
				 * synchronous standbys: a revocation that must wait for them
				 * stays queued, for the next worker to wait for.
				 */
				finish_entry(index, &e, ProcDiePending && e.revoke &&
							 ReplicationRevocationWaitsForStandbys());
				RESUME_INTERRUPTS();
				/* a SIGTERM held off (its wake-up may be spent) acts now */
				CHECK_FOR_INTERRUPTS();
				failures = 0;
				shared->entry_from = index;
			}
			else
			{
				stuck_on_lock = failed_on_lock;
				/* a lock not granted is no sign of a dropped extension */
				if (!stuck_on_lock && !extension_here())
					abandon_database(database);
				shared->entry_from = (index + 1) % REVOKER_QUEUE_SIZE;
				stuck = true;
			}
			idle_since = GetCurrentTimestamp();
		}
		/* The signing keys, when this database is due a visit. */
		if (keys_due(database))
		{
			keys_visit(database);
			idle_since = GetCurrentTimestamp();
		}
		/* Uses, about once per USAGE_FLUSH_MS. */
		if (TimestampDifferenceExceeds(last_flush, GetCurrentTimestamp(), USAGE_FLUSH_MS))
		{
			uses_failed = false;
			if (UsageFlush(database, write_uses) > 0)
				idle_since = GetCurrentTimestamp();
			if (uses_failed && !extension_here())
				abandon_database(database);
			last_flush = GetCurrentTimestamp();
		}
		/*
		 * Work in another database: start again, unconnected.  Entries
		 * queued for another one are served now, even while an entry here
		 * keeps failing, which then waits its turn (round robin).
		 */
		other = queued_database(database);
		if (OidIsValid(other) && other != database)
			proc_exit(1);
		other = keys_next(&list);
		if (list || (OidIsValid(other) && other != database))
			proc_exit(1);
		other = UsageNextDatabase(database);
		if (OidIsValid(other) && other != database)
			proc_exit(1);
		if (stuck)
		{
			/*
			 * The try that failed on a lock waited lock_timeout already; other
			 * failures wait longer each time, up to a second.
			 */
			if (!stuck_on_lock)
				worker_wait(Min(1000L, 50L << Min(failures, 5)));
			failures++;
			continue;
		}
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), REVOKER_IDLE_MS))
			proc_exit(1);
		/* new entries wake the worker (wake_worker) */
		worker_wait(USAGE_FLUSH_MS);
	}
}
