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
 *	  in a transaction of its own, with lock_timeout and statement_timeout
 *	  off, retrying forever on failure: a revocation is never dropped), and
 *	  when entries of another database wait, or it has been idle for
 *	  REVOKER_IDLE_MS, exits with code 1, which makes the postmaster start it
 *	  again (after bgw_restart_time) unconnected.  It holds no connection to
 *	  an idle database, so DROP DATABASE is not blocked for long.
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
 * The same worker writes the uses of sessions counted in shared memory
 * (usage.c), about once a second per database, after the revocations.
 *
 * The queue is protected by one LWLock; a reader first checks an atomic
 * count, so that an empty queue (the normal case) costs one atomic read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
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
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "replication.h"
#include "revoker.h"
#include "storage.h"
#include "usage.h"

PGDLLEXPORT void extension_tokens_revoker_main(Datum main_arg);

#define REVOKER_QUEUE_SIZE	1024
#define REVOKER_IDLE_MS		2000
/* How often the uses counted in shared memory are written (usage.c). */
#define USAGE_FLUSH_MS		1000
#define REVOKER_WAIT_MS		2000
/* a mere record of a refused refresh is waited for less */
#define REVOKER_RECORD_WAIT_MS 500
/* Connecting to a database that refuses us is given up after this many tries. */
#define REVOKER_CONNECT_TRIES 3

typedef struct RevokerEntry
{
	bool		in_use;
	bool		revoke;
	Oid			database;
	pg_uuid_t	session_id;
	int			connect_tries;
	char		reason[40];
	char		refresh_error[40];
} RevokerEntry;

typedef struct RevokerShared
{
	LWLock	   *lock;
	pg_atomic_uint32 count;		/* entries in use */
	PGPROC	   *worker_proc;	/* NULL when no worker runs */
	Oid			worker_database;	/* InvalidOid while unconnected */
	Oid			last_database;	/* served last: usage is served round robin */
	Oid			connecting_database;	/* being connected to, and how often */
	int			connect_tries;
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
		const char *refresh_error)
{
	RevokerEntry *free_entry = NULL;
	RevokerEntry *e = NULL;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
	{
		RevokerEntry *x = &shared->entries[i];

		if (!x->in_use)
		{
			if (free_entry == NULL)
				free_entry = x;
		}
		else if (x->database == MyDatabaseId &&
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
		pg_atomic_fetch_add_u32(&shared->count, 1);
	}
	if (e != NULL)
	{
		if (revoke && !e->revoke)
		{
			e->revoke = true;
			strlcpy(e->reason, reason ? reason : "revoked", sizeof(e->reason));
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

		if (e->in_use && e->database == MyDatabaseId &&
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
			  const char *refresh_error, bool wait)
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
	while (!enqueue(session_id, revoke, reason, refresh_error))
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

/* ---------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------
 */

/* The first entry of `database` (InvalidOid: of any database), copied. */
static bool
next_entry(Oid database, RevokerEntry *out, int *index)
{
	bool		found = false;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
	{
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
 * Removes entry `index` if it still asks for no more than `done` did (a
 * backend may have merged a revocation into it meanwhile).
 */
static void
finish_entry(int index, const RevokerEntry *done)
{
	RevokerEntry *e = &shared->entries[index];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (e->in_use && e->database == done->database &&
		memcmp(&e->session_id, &done->session_id, sizeof(pg_uuid_t)) == 0 &&
		(!e->revoke || done->revoke) &&
		strcmp(e->refresh_error, done->refresh_error) == 0)
	{
		e->in_use = false;
		pg_atomic_fetch_sub_u32(&shared->count, 1);
	}
	LWLockRelease(shared->lock);
}

/*
 * Runs work(arg) in a transaction of its own and commits it; false (logged
 * with `failure`) when it raised, the transaction then rolled back.
 */
static bool
in_transaction(void (*work) (void *arg), void *arg, const char *activity,
			   const char *failure)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		work(arg);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
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

	if (e->refresh_error[0])
		StorageRecordRefreshError(e->session_id, now, e->refresh_error);
	if (e->revoke)
	{
		(void) StorageRevokeSession(e->session_id, now, e->reason);
		ereport(LOG,
				(errmsg("extension_tokens: session revoked: %s", e->reason)));
	}
}

/* Commits one entry's work; false (and logged) when it failed. */
static bool
apply_entry(const RevokerEntry *e)
{
	return in_transaction(entry_work, (void *) e, "extension_tokens: revoking a session",
						  "committing a revocation failed, trying again");
}

/* Waits on the latch for up to `ms`; exits when the postmaster dies. */
static void
worker_wait(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * The database to serve next: that of the first queued revocation, else one
 * with uses to write (round robin after the last one served).
 */
static Oid
choose_database(void)
{
	RevokerEntry e;
	int			index;
	Oid			last;

	if (next_entry(InvalidOid, &e, &index))
		return e.database;
	LWLockAcquire(shared->lock, LW_SHARED);
	last = shared->last_database;
	LWLockRelease(shared->lock);
	return UsageNextDatabase(last);
}

/* Drops everything queued for a database (it cannot be connected to). */
static void
forget_database(Oid database)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < REVOKER_QUEUE_SIZE; i++)
		if (shared->entries[i].in_use && shared->entries[i].database == database)
		{
			shared->entries[i].in_use = false;
			pg_atomic_fetch_sub_u32(&shared->count, 1);
		}
	LWLockRelease(shared->lock);
	UsageForget(database);
}

/*
 * Unconnected: waits for work, then connects to its database (or gives the
 * database up after REVOKER_CONNECT_TRIES failed connections: it is gone or
 * refuses connections, and so holds no session to protect).
 */
static Oid
worker_connect(void)
{
	Oid			database;
	bool		give_up = false;

	while (!OidIsValid(database = choose_database()))
		worker_wait(1000L);
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
		forget_database(database);
		ereport(LOG,
				(errmsg("extension_tokens revoker: giving up on database %u, which cannot be connected to",
						database)));
		proc_exit(1);
	}
	BackgroundWorkerInitializeConnectionByOid(database, BOOTSTRAP_SUPERUSERID, 0);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->connecting_database = InvalidOid;
	shared->connect_tries = 0;
	shared->worker_database = database;
	shared->last_database = database;
	LWLockRelease(shared->lock);
	return database;
}

/* usage.c's batch writer: one transaction; false (logged) when it failed. */
typedef struct UseBatch
{
	const pg_uuid_t *ids;
	const int64 *counts;
	const TimestampTz *times;
	int			n;
} UseBatch;

static void
use_batch_work(void *arg)
{
	UseBatch   *b = arg;

	StorageAddUse(b->ids, b->counts, b->times, b->n);
}

static bool
write_uses(const pg_uuid_t *ids, const int64 *counts, const TimestampTz *times, int n)
{
	UseBatch	b = {ids, counts, times, n};

	return in_transaction(use_batch_work, &b, "extension_tokens: recording session use",
						  "recording session use failed, keeping it for the next try");
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

	/* Settings (revoke_synchronous_commit) follow reloads. */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	if (shared == NULL)
		proc_exit(0);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->worker_proc = MyProc;
	shared->worker_database = InvalidOid;
	LWLockRelease(shared->lock);
	before_shmem_exit(revoker_detach, (Datum) 0);

	database = worker_connect();

	/* A revocation must not give up on a lock or a statement's time. */
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		RevokerEntry e;
		int			index;
		int			failures = 0;
		Oid			other;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* Revocations first, each committed before the next. */
		while (next_entry(database, &e, &index))
		{
			if (apply_entry(&e))
			{
				finish_entry(index, &e);
				failures = 0;
			}
			else
				worker_wait(Min(1000L, 50L << Min(failures++, 5)));
			idle_since = GetCurrentTimestamp();
		}
		/* Uses, about once per USAGE_FLUSH_MS. */
		if (TimestampDifferenceExceeds(last_flush, GetCurrentTimestamp(), USAGE_FLUSH_MS))
		{
			if (UsageFlush(database, write_uses) > 0)
				idle_since = GetCurrentTimestamp();
			last_flush = GetCurrentTimestamp();
		}
		/* Work in another database: start again, unconnected. */
		if (next_entry(InvalidOid, &e, &index))
			proc_exit(1);
		other = UsageNextDatabase(database);
		if (OidIsValid(other) && other != database)
			proc_exit(1);
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), REVOKER_IDLE_MS))
			proc_exit(1);
		worker_wait(USAGE_FLUSH_MS);
	}
}
