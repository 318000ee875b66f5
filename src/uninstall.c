/*-------------------------------------------------------------------------
 *
 * uninstall.c
 *	  What dropping the extension, or dropping or renaming its database,
 *	  must undo or redo outside the database's own catalogs: its pg_cron
 *	  jobs.
 *
 * pg_cron keeps the cleanup jobs in the database named by
 * cron.database_name, where PostgreSQL's dependency tracking cannot see
 * them, so a drop alone would leave jobs that fail every hour.
 *
 * DROP EXTENSION: an event trigger of the extension
 * (extension_tokens_drop_jobs, created by the install script) fires at
 * ddl_command_start of DROP EXTENSION, DROP SCHEMA and DROP OWNED, the
 * commands that can drop the extension.  A sql_drop trigger would not do: it
 * is dropped with the extension before sql_drop fires.  At that point nothing
 * is decided (the command may fail, or not concern us, or be rolled back with
 * its savepoint), so the trigger only notes that a drop may happen, and the
 * transaction's pre-commit callback looks again: if the extension is gone
 * from this database, a worker (worker.c) removes the jobs named after it.
 *
 * DROP DATABASE: event triggers do not fire for it, so the object access
 * hook notes the database's name (the library is preloaded, so every backend
 * has the hook), and the pre-commit callback removes the jobs named after it
 * if the database is then gone.  Databases without the extension have no
 * such job, and removing none costs one short-lived worker.
 *
 * ALTER DATABASE ... RENAME TO: the jobs are named after the database and
 * run in it by name, so after a rename the cleanup stopped running (its
 * database was gone) and a later DROP DATABASE left the jobs behind.  A
 * ProcessUtility hook notes the two names; the pre-commit callback, if the
 * old name is then gone and the new one there, has a worker give the jobs
 * the new name in cron.job, schedules and user kept.
 *
 * The jobs are removed (or moved) in the cron database's own transaction;
 * should the commit fail after that, extension_tokens_cleanup_schedule()
 * makes them again.  A failure never blocks the drop or the rename: it is
 * a WARNING that says what to do by hand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "uninstall.h"
#include "worker.h"

static object_access_hook_type prev_object_access_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* A drop of the extension may be under way in this transaction. */
static bool extension_drop_pending = false;

/* The database a DROP DATABASE of this transaction is dropping, or "". */
static char dropped_database[NAMEDATALEN];

/*
 * The databases this transaction renamed: old and new name, a chain of
 * renames (a to b, then b to c) kept as one.
 */
#define MAX_RENAMES 8
static char renamed_from[MAX_RENAMES][NAMEDATALEN];
static char renamed_to[MAX_RENAMES][NAMEDATALEN];
static int	nrenamed = 0;

static bool callback_registered = false;

static void
remove_jobs(const char *database)
{
	int64		jobs;
	char	   *message;

	if (!WorkerCronRemoveDropped(database, &jobs, &message))
		ereport(WARNING,
				(errmsg("the pg_cron jobs of extension_tokens in database \"%s\" were not removed: %s",
						database ? database : get_database_name(MyDatabaseId), message),
				 errhint("Remove them in the database named by cron.database_name: SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'extension_tokens%%:%s';",
						 database ? database : get_database_name(MyDatabaseId))));
}

/* Moves the jobs of a database renamed from `from` to `to`. */
static void
move_jobs(const char *from, const char *to)
{
	int64		jobs;
	char	   *message;

	if (!WorkerCronRenamed(from, to, &jobs, &message))
		ereport(WARNING,
				(errmsg("the pg_cron jobs of extension_tokens in database \"%s\" still name it \"%s\": %s",
						to, from, message),
				 errhint("In database \"%s\", run SELECT extension_tokens_cleanup_schedule(); then, in the database named by cron.database_name, SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'extension_tokens%%:%s';",
						 to, from)));
}

static void
uninstall_xact_callback(XactEvent event, void *arg)
{
	bool		extension;
	char		database[NAMEDATALEN];
	int			renames;

	if (!extension_drop_pending && dropped_database[0] == '\0' && nrenamed == 0)
		return;
	if (event == XACT_EVENT_PRE_PREPARE)
		return;
	extension = extension_drop_pending;
	strlcpy(database, dropped_database, sizeof(database));
	renames = nrenamed;
	extension_drop_pending = false;
	dropped_database[0] = '\0';
	nrenamed = 0;
	/* Committed, aborted or prepared: nothing more to do either way. */
	if (event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PARALLEL_PRE_COMMIT)
		return;

	for (int i = 0; i < renames; i++)
	{
		const char *cron_db = GetConfigOption("cron.database_name", true, false);

		/*
		 * Renamed, as the catalog now says (a failed or rolled-back rename
		 * changed nothing); pg_cron's own database is left alone (its
		 * jobs, and pg_cron, follow cron.database_name, not the rename).
		 */
		if (cron_db != NULL && strcmp(cron_db, renamed_from[i]) != 0 &&
			strcmp(renamed_from[i], renamed_to[i]) != 0 &&
			!OidIsValid(get_database_oid(renamed_from[i], true)) &&
			OidIsValid(get_database_oid(renamed_to[i], true)))
			move_jobs(renamed_from[i], renamed_to[i]);
	}

	if (extension && !OidIsValid(get_extension_oid("extension_tokens", true)))
		remove_jobs(NULL);
	if (database[0] != '\0' && !OidIsValid(get_database_oid(database, true)))
	{
		const char *cron_db = GetConfigOption("cron.database_name", true, false);

		/* Dropping pg_cron's own database took its jobs with it. */
		if (cron_db != NULL && strcmp(cron_db, database) != 0)
			remove_jobs(database);
	}
}

static void
register_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(uninstall_xact_callback, NULL);
		callback_registered = true;
	}
}

static void
uninstall_object_access(ObjectAccessType access, Oid classId, Oid objectId,
						int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access == OAT_DROP && classId == DatabaseRelationId &&
		GetConfigOption("cron.database_name", true, false) != NULL)
	{
		char	   *name = get_database_name(objectId);

		if (name != NULL)
		{
			strlcpy(dropped_database, name, sizeof(dropped_database));
			register_callback();
		}
	}
}

/* Notes ALTER DATABASE ... RENAME TO, for the pre-commit callback. */
static void
note_rename(const char *from, const char *to)
{
	int			i;

	for (i = 0; i < nrenamed; i++)
		if (strcmp(renamed_to[i], from) == 0)
			break;
	if (i == nrenamed)
	{
		if (nrenamed == MAX_RENAMES)
		{
			ereport(WARNING,
					(errmsg("the pg_cron jobs of extension_tokens in database \"%s\" are not moved to its new name",
							from),
					 errhint("Rename fewer databases in one transaction, or run SELECT extension_tokens_cleanup_schedule() in it afterwards.")));
			return;
		}
		strlcpy(renamed_from[nrenamed++], from, NAMEDATALEN);
	}
	strlcpy(renamed_to[i], to, NAMEDATALEN);
	register_callback();
}

static void
uninstall_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
						 bool readOnlyTree, ProcessUtilityContext context,
						 ParamListInfo params, QueryEnvironment *queryEnv,
						 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE &&
		GetConfigOption("cron.database_name", true, false) != NULL)
		note_rename(((RenameStmt *) stmt)->subname, ((RenameStmt *) stmt)->newname);
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

void
UninstallInit(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = uninstall_object_access;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = uninstall_ProcessUtility;
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
	register_callback();
	extension_drop_pending = true;
	PG_RETURN_VOID();
}
