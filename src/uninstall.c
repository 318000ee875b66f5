/*-------------------------------------------------------------------------
 *
 * uninstall.c
 *	  What dropping the extension must undo outside this database's
 *	  catalogs: its pg_cron jobs.
 *
 * pg_cron keeps the cleanup jobs in the database named by
 * cron.database_name, where PostgreSQL's dependency tracking cannot see
 * them, so DROP EXTENSION alone would leave a job that fails every hour.
 *
 * An event trigger of the extension (extension_tokens_drop_jobs, created by
 * the install script) fires at ddl_command_start of DROP EXTENSION, DROP
 * SCHEMA and DROP OWNED, the commands that can drop the extension.  A
 * sql_drop trigger would not do: it is dropped with the extension before
 * sql_drop fires.  At that point nothing is decided yet (the command may
 * fail, or not concern us, or be rolled back with its savepoint), so the
 * trigger only notes that a drop may happen, and the transaction's
 * pre-commit callback looks again: if the extension is gone from this
 * database, a worker (worker.c) removes the jobs named after it.  Removing
 * them happens in the cron database's own transaction; should this commit
 * fail after that, the jobs can be made again with
 * extension_tokens_cleanup_schedule().
 *
 * A failure to remove the jobs never blocks the drop: it is a WARNING that
 * says how to remove them by hand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"

#include "worker.h"

static bool drop_pending = false;
static bool callback_registered = false;

static void
uninstall_xact_callback(XactEvent event, void *arg)
{
	int64		jobs;
	char	   *message;

	if (!drop_pending)
		return;
	if (event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PARALLEL_PRE_COMMIT)
	{
		/* Committed, aborted or prepared: nothing more to do either way. */
		if (event != XACT_EVENT_PRE_PREPARE)
			drop_pending = false;
		return;
	}
	drop_pending = false;
	if (OidIsValid(get_extension_oid("extension_tokens", true)))
		return;
	if (!WorkerCronRemoveDropped(&jobs, &message))
		ereport(WARNING,
				(errmsg("extension_tokens was dropped but its pg_cron jobs were not removed: %s",
						message),
				 errhint("Remove them in the database named by cron.database_name: SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'extension_tokens%%:%s';",
						 get_database_name(MyDatabaseId))));
}

/* extension_tokens_drop_jobs() RETURNS event_trigger */
PG_FUNCTION_INFO_V1(extension_tokens_drop_jobs);
Datum
extension_tokens_drop_jobs(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("extension_tokens_drop_jobs() must be called as an event trigger")));
	if (!callback_registered)
	{
		RegisterXactCallback(uninstall_xact_callback, NULL);
		callback_registered = true;
	}
	drop_pending = true;
	PG_RETURN_VOID();
}
