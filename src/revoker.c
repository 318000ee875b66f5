/*-------------------------------------------------------------------------
 *
 * revoker.c
 *	  Revoking a session in a transaction of its own.
 *
 * When a refresh token that was already exchanged is presented again, the
 * session is revoked (RFC 9700 4.14) and the call fails with PT401.  Failing
 * aborts the caller's transaction, and with it any revocation written there,
 * so the revocation is written by a dynamic background worker that commits
 * on its own.  If the caller's transaction holds no transaction id it cannot
 * hold a lock the worker needs, and we wait for the worker so that the
 * revocation is visible by the time the error reaches the client; otherwise
 * the worker finishes once the caller's transaction has rolled back.
 *
 * Dynamic workers need no shared_preload_libraries, only a free slot among
 * max_worker_processes; without one, the failure is logged (the session is
 * then not revoked) and the refresh is still refused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "revoker.h"
#include "storage.h"

PGDLLEXPORT void extension_tokens_revoker_main(Datum main_arg);

typedef struct RevokeRequest
{
	Oid			database;
	Oid			role;
	pg_uuid_t	session_id;
	char		reason[64];
} RevokeRequest;

StaticAssertDecl(sizeof(RevokeRequest) <= BGW_EXTRALEN,
				 "RevokeRequest must fit in bgw_extra");

void
RevokeSessionDetached(pg_uuid_t session_id, const char *reason)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	RevokeRequest req;
	bool		wait = !TransactionIdIsValid(GetTopTransactionIdIfAny());

	memset(&req, 0, sizeof(req));
	req.database = MyDatabaseId;
	/*
	 * The worker logs in as the bootstrap superuser, which can always log
	 * in (a PostgreSQL 15 worker cannot skip the LOGIN check, and the
	 * extension's owner may lack it); storage.c switches to the owner for
	 * the statement itself.
	 */
	req.role = BOOTSTRAP_SUPERUSERID;
	req.session_id = session_id;
	strlcpy(req.reason, reason, sizeof(req.reason));

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "extension_tokens", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "extension_tokens_revoker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "extension_tokens session revoker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "extension_tokens revoker", BGW_MAXLEN);
	worker.bgw_notify_pid = MyProcPid;
	memcpy(worker.bgw_extra, &req, sizeof(req));

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				(errmsg("could not start a background worker to revoke a session after refresh token reuse"),
				 errhint("Raise max_worker_processes.")));
		return;
	}
	if (wait)
	{
		BgwHandleStatus status = WaitForBackgroundWorkerShutdown(handle);

		if (status != BGWH_STOPPED)
			ereport(WARNING,
					(errmsg("background worker revoking a session did not finish")));
	}
}

void
extension_tokens_revoker_main(Datum main_arg)
{
	RevokeRequest req;

	memcpy(&req, MyBgworkerEntry->bgw_extra, sizeof(req));
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(req.database, req.role, 0);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "revoking a session");
	(void) StorageRevokeSession(req.session_id, GetCurrentTimestamp(), req.reason);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
