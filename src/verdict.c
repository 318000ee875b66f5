/*-------------------------------------------------------------------------
 *
 * verdict.c
 *	  A session's verdict kept with a token seen before: a validation that
 *	  need not read the session's row, for as long as nothing that could
 *	  change that verdict has committed since the row was read.
 *
 * Validation reads the session's row on every request, because the row is
 * the only truth about revocation.  A backend that validates the same token
 * again and again (a pool serving a user's requests) can skip that read
 * only if it knows that the row has not changed since it last read it.
 * It knows that from epochs in shared memory:
 *
 *	- one per slot of sessions (VERDICT_SLOTS of them, a session's slot
 *	  taken from its id), advanced after the commit of every transaction
 *	  that updated or deleted a row of a session of that slot;
 *	- one for all sessions, advanced after the commit of a transaction
 *	  that truncated the table, ran DDL or COMMIT PREPARED (and, where
 *	  prepared transactions are enabled, of every transaction of logical
 *	  replication's apply worker, which commits prepared ones unseen).
 *
 * Which sessions a transaction changed is noted by a trigger on
 * extension_token_sessions (AFTER UPDATE OR DELETE FOR EACH ROW, and
 * BEFORE TRUNCATE), ENABLE ALWAYS so that it fires under
 * session_replication_role = replica and in logical replication's apply
 * workers too, and by a ProcessUtility hook for everything else.  The
 * epochs are advanced by the committing backend in its commit callback,
 * which runs after the commit is visible to other snapshots and before
 * the client is told: a revocation that has been acknowledged has advanced
 * its session's epoch.
 *
 * A verdict "live" is kept (with the token, in the verified-token cache of
 * token.c) under the two epochs read *before* the snapshot that read the
 * row.  It is used only while both epochs are unchanged: a change that the
 * snapshot did not see committed after the epochs were read, so it has
 * advanced one of them.  The verdict keeps the row's times, and the
 * session rule (PolicySessionEnd) is applied again at each use with the
 * time of the request; what it cannot decide with what is kept (a use by
 * another backend that the idle rule would count) sends validation back to
 * the row.  A revocation still queued for the worker (RevokerPending) is
 * asked each time.
 *
 * Where a verdict is neither kept nor used (the row is read, as always):
 * without shared_preload_libraries (no epochs); on a standby (WAL replay
 * runs no trigger); under REPEATABLE READ or SERIALIZABLE (the row is read
 * under the transaction's snapshot); in a transaction that has written
 * anything (it has a transaction id): its own uncommitted changes, which
 * no epoch notes (an issue's INSERT, which a rollback undoes) or not yet
 * (a trigger of the owner's that runs before ours in the statement that
 * revokes), must neither make a verdict nor be hidden by one (this holds
 * a transaction that changed a session, or ran DDL); in a parallel worker;
 * when the triggers are missing or disabled; and with
 * extension_tokens.session_verdicts = off.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/xact.h"
#include "access/twophase.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "port/pg_bitutils.h"
#include "replication/logicalworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "policy.h"
#include "revoker.h"
#include "token.h"
#include "verdict.h"

#define VERDICT_SLOTS	4096

typedef struct VerdictShared
{
	pg_atomic_uint64 all;
	pg_atomic_uint64 slots[VERDICT_SLOTS];
} VerdictShared;

static VerdictShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static bool et_session_verdicts = true;

/* What this transaction changed (reset at its end). */
static bool changed_all = false;
static bool changed_some = false;
static uint64 changed_slots[VERDICT_SLOTS / 64];

/* A verdict as kept: the fixed part, then the name's bytes, then scopes. */
typedef struct KeptVerdict
{
	VerdictEpochs epochs;
	pg_uuid_t	session_id;
	TimestampTz expires_at;
	TimestampTz refresh_expires_at;
	TimestampTz ends_at;
	TimestampTz last_active;	/* the row's last use: a lower bound */
	int64		idle_timeout_us;
	Size		name_len;		/* with its NUL */
	Size		scopes_len;		/* 0: none */
} KeptVerdict;

static int
slot_of(const pg_uuid_t *session_id)
{
	/* the last bytes: a shard tag (replication.c) takes the first two */
	return ((session_id->data[14] << 8) | session_id->data[15]) % VERDICT_SLOTS;
}

static void
verdict_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(VerdictShared)));
}

static void
verdict_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("extension_tokens verdicts", sizeof(VerdictShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&shared->all, 0);
		for (int i = 0; i < VERDICT_SLOTS; i++)
			pg_atomic_init_u64(&shared->slots[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
forget_changes(void)
{
	if (changed_some)
		memset(changed_slots, 0, sizeof(changed_slots));
	changed_some = false;
	changed_all = false;
}

/*
 * At commit, after the transaction became visible: advance the epochs of
 * what it changed.  Interrupts are held here, so nothing stops it short of
 * the backend's death, which restarts the server and empties every cache.
 */
static void
verdict_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/*
			 * Logical replication's apply worker commits a prepared
			 * transaction (a subscription with two_phase) without a
			 * statement this hook sees, in a transaction of its own that
			 * changed nothing: every commit of an apply worker counts as a
			 * change of every session where prepared transactions can be.
			 */
			if (max_prepared_xacts > 0 && IsLogicalWorker())
				changed_all = true;
			if (shared != NULL && changed_all)
				pg_atomic_fetch_add_u64(&shared->all, 1);
			else if (shared != NULL && changed_some)
			{
				for (int w = 0; w < VERDICT_SLOTS / 64; w++)
					for (uint64 bits = changed_slots[w]; bits != 0; bits &= bits - 1)
						pg_atomic_fetch_add_u64(&shared->slots[w * 64 + pg_rightmost_one_pos64(bits)], 1);
			}
			forget_changes();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction's changes: see COMMIT PREPARED below */
			forget_changes();
			break;
		default:
			break;
	}
}

/* Statements that change no session row and no table definition. */
static bool
utility_changes_nothing(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_TransactionStmt:
			return ((TransactionStmt *) stmt)->kind != TRANS_STMT_COMMIT_PREPARED;
		case T_VariableSetStmt:
		case T_VariableShowStmt:
		case T_DiscardStmt:
		case T_PrepareStmt:
		case T_ExecuteStmt:		/* what it runs fires the trigger */
		case T_DeallocateStmt:
		case T_DeclareCursorStmt:
		case T_FetchStmt:
		case T_ClosePortalStmt:
		case T_NotifyStmt:
		case T_ListenStmt:
		case T_UnlistenStmt:
		case T_ExplainStmt:
		case T_CopyStmt:		/* COPY FROM only inserts */
		case T_CallStmt:		/* what it runs passes here or the trigger */
		case T_DoStmt:
		case T_LockStmt:
		case T_CheckPointStmt:
		case T_VacuumStmt:
		case T_ConstraintsSetStmt:
		case T_LoadStmt:
			return true;
		default:
			return false;
	}
}

static void
verdict_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	/* noted first: a statement that fails rolls the note back with it */
	if (!utility_changes_nothing(pstmt->utilityStmt))
		changed_all = true;
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
VerdictInit(void)
{
	DefineCustomBoolVariable("extension_tokens.session_verdicts",
							 "Lets a backend validate a token it has validated before without reading its session's row, while no change to that session has committed.",
							 "off reads the row on every validation.",
							 &et_session_verdicts,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	RegisterXactCallback(verdict_xact_callback, NULL);
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = verdict_ProcessUtility;
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = verdict_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = verdict_shmem_startup;
}

static void
note_session(Relation rel, HeapTuple tuple)
{
	bool		isnull;
	int			att;
	Datum		d;
	int			slot;

	/* looked up once per relation (the table is rebuilt only by DDL) */
	static Oid	att_rel = InvalidOid;
	static int	att_no = 0;

	if (RelationGetRelid(rel) != att_rel || att_no <= 0 ||
		att_no > RelationGetDescr(rel)->natts ||
		strcmp(NameStr(TupleDescAttr(RelationGetDescr(rel), att_no - 1)->attname),
			   "session_id") != 0 ||
		TupleDescAttr(RelationGetDescr(rel), att_no - 1)->atttypid != UUIDOID)
	{
		att_no = SPI_fnumber(RelationGetDescr(rel), "session_id");
		att_rel = RelationGetRelid(rel);
		if (att_no <= 0 ||
			TupleDescAttr(RelationGetDescr(rel), att_no - 1)->atttypid != UUIDOID)
			att_no = 0;			/* noted as a change of every session */
	}
	att = att_no;
	d = att > 0 ? heap_getattr(tuple, att, RelationGetDescr(rel), &isnull) : (Datum) 0;
	if (att <= 0 || isnull)
	{
		changed_all = true;
		return;
	}
	slot = slot_of(DatumGetUUIDP(d));
	changed_slots[slot / 64] |= UINT64CONST(1) << (slot % 64);
	changed_some = true;
}

/*
 * Whether an UPDATE of a session's row recorded uses and nothing else: only
 * use_count changed, and last_used_at moved forward (what usage.c's batch
 * writer does, every flush, to every session in use).  No kept verdict can
 * be wrong after that: it keeps the earlier last use as a lower bound, and
 * what the idle rule cannot decide with it goes back to the row.  Compared
 * byte for byte, so a column that changed only in its representation counts
 * as changed; a last_used_at set where it was NULL counts as changed too.
 */
static bool
records_use_only(Relation rel, HeapTuple oldtup, HeapTuple newtup)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Datum	   *old_values = palloc(desc->natts * sizeof(Datum));
	Datum	   *new_values = palloc(desc->natts * sizeof(Datum));
	bool	   *old_nulls = palloc(desc->natts * sizeof(bool));
	bool	   *new_nulls = palloc(desc->natts * sizeof(bool));
	bool		use_only = true;

	heap_deform_tuple(oldtup, desc, old_values, old_nulls);
	heap_deform_tuple(newtup, desc, new_values, new_nulls);
	for (int i = 0; i < desc->natts && use_only; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || strcmp(NameStr(att->attname), "use_count") == 0)
			continue;
		if (old_nulls[i] || new_nulls[i])
			use_only = old_nulls[i] && new_nulls[i];
		else if (strcmp(NameStr(att->attname), "last_used_at") == 0 &&
				 att->atttypid == TIMESTAMPTZOID)
			use_only = DatumGetTimestampTz(new_values[i]) >= DatumGetTimestampTz(old_values[i]);
		else
			use_only = datumIsEqual(old_values[i], new_values[i], att->attbyval, att->attlen);
	}
	pfree(old_values);
	pfree(new_values);
	pfree(old_nulls);
	pfree(new_nulls);
	return use_only;
}

/*
 * extension_token_session_changed() RETURNS trigger: AFTER UPDATE OR
 * DELETE FOR EACH ROW, and BEFORE TRUNCATE, on extension_token_sessions.
 * Notes what the transaction changes (before its commit: an AFTER row
 * trigger fires at the end of its statement), but for an UPDATE that only
 * recorded uses (records_use_only); changes nothing.
 */
PG_FUNCTION_INFO_V1(extension_token_session_changed);
Datum
extension_token_session_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("extension_token_session_changed() must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		changed_all = true;
		return PointerGetDatum(NULL);
	}
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) &&
		records_use_only(td->tg_relation, td->tg_trigtuple, td->tg_newtuple))
		return PointerGetDatum(NULL);
	note_session(td->tg_relation, td->tg_trigtuple);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		note_session(td->tg_relation, td->tg_newtuple);
	return PointerGetDatum(NULL);	/* an AFTER trigger's result is ignored */
}

/* The epochs of `session_id`, when a verdict may be kept or used here at all. */
static bool
read_epochs(const pg_uuid_t *session_id, VerdictEpochs *out)
{
	if (shared == NULL || !et_session_verdicts || changed_all || changed_some ||
		TransactionIdIsValid(GetTopTransactionIdIfAny()) ||
		IsParallelWorker() || IsolationUsesXactSnapshot() || RecoveryInProgress() ||
		!StorageSessionsGuarded())
		return false;
	out->all = pg_atomic_read_u64(&shared->all);
	out->slot = pg_atomic_read_u64(&shared->slots[slot_of(session_id)]);
	return true;
}

bool
VerdictReadEpochs(const pg_uuid_t *session_id, VerdictEpochs *out)
{
	if (!read_epochs(session_id, out))
		return false;
	/* read before the snapshot that reads the row (a recall takes none) */
	pg_memory_barrier();
	return true;
}

void
VerdictRemember(const unsigned char *hash, const SessionRow *row,
				const VerdictEpochs *epochs)
{
	KeptVerdict *v;
	Size		name_len = strlen(row->name) + 1;
	Size		scopes_len = row->scopes != (Datum) 0 ? VARSIZE(DatumGetPointer(row->scopes)) : 0;
	Size		len = MAXALIGN(sizeof(KeptVerdict)) + MAXALIGN(name_len) + scopes_len;
	char	   *buf;

	Assert(row->found && !row->revoked && !row->api_key);
	buf = palloc(len);
	v = (KeptVerdict *) buf;
	v->epochs = *epochs;
	v->session_id = row->session_id;
	v->expires_at = row->expires_at;
	v->refresh_expires_at = row->refresh_expires_at;
	v->ends_at = row->ends_at;
	v->last_active = row->last_used_at ? row->last_used_at : row->created_at;
	v->idle_timeout_us = row->idle_timeout_us;
	v->name_len = name_len;
	v->scopes_len = scopes_len;
	memcpy(buf + MAXALIGN(sizeof(KeptVerdict)), row->name, name_len);
	if (scopes_len > 0)
		memcpy(buf + MAXALIGN(sizeof(KeptVerdict)) + MAXALIGN(name_len),
			   DatumGetPointer(row->scopes), scopes_len);
	token_cache_note(hash, buf, len);
	pfree(buf);
}

bool
VerdictRecall(void *note, size_t len, const pg_uuid_t *session_id,
			  const char *sub, TimestampTz now, SessionRow *row)
{
	KeptVerdict *v = note;
	char	   *buf = note;
	VerdictEpochs epochs;

	if (note == NULL || len < MAXALIGN(sizeof(KeptVerdict)) ||
		memcmp(&v->session_id, session_id, sizeof(pg_uuid_t)) != 0)
		return false;

	/*
	 * The revocation queue before the epochs.  The worker commits a queued
	 * revocation (advancing the epochs in its commit callback) and only then
	 * takes it off the queue; so a queue found without it means the epochs
	 * read next show the commit.  The other way round, the epochs could be
	 * read just before the worker's commit and the queue just after it was
	 * emptied, and neither would show the revocation.
	 */
	if (RevokerPending(session_id))
		return false;
	pg_memory_barrier();

	/*
	 * And the triggers' state as committed (read_epochs asks it): what this
	 * backend has cached of the table's definition stays as it was, in an
	 * open transaction, until invalidation messages are accepted, and
	 * nothing else here takes a new lock.  A verdict may have been kept
	 * under a trigger that DDL has since disabled; a revocation that no
	 * trigger saw can only come after that DDL released its locks, which
	 * it does after sending its messages, so they are here by then.
	 * (Without messages this costs a read of one flag.)
	 */
	AcceptInvalidationMessages();
	if (!read_epochs(session_id, &epochs) ||
		epochs.all != v->epochs.all || epochs.slot != v->epochs.slot ||
		PolicySessionEnd(false, v->refresh_expires_at, v->ends_at, v->idle_timeout_us,
						 v->last_active, now) != SESSION_LIVE)
		return false;
	memset(row, 0, sizeof(*row));
	row->found = true;
	row->session_id = *session_id;
	row->user_id = pstrdup(sub);
	row->name = pstrdup(buf + MAXALIGN(sizeof(KeptVerdict)));
	row->expires_at = v->expires_at;
	row->refresh_expires_at = v->refresh_expires_at;
	row->ends_at = v->ends_at;
	row->idle_timeout_us = v->idle_timeout_us;
	row->last_used_at = v->last_active;
	if (v->scopes_len > 0)
	{
		char	   *copy = palloc(v->scopes_len);

		memcpy(copy, buf + MAXALIGN(sizeof(KeptVerdict)) + MAXALIGN(v->name_len),
			   v->scopes_len);
		row->scopes = PointerGetDatum(copy);
	}
	return true;
}
