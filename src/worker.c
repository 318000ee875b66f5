/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Work that must happen in a transaction of its own: dynamic background
 *	  workers.
 *
 * One job needs a transaction other than the caller's (session revocations
 * that must outlive an error are revoker.c's, with a static worker):
 *
 *	pg_cron jobs.  pg_cron keeps its jobs in the database named by
 *	cron.database_name, which need not be ours; a worker connects there and
 *	calls cron.schedule_in_database() / cron.unschedule() for our database,
 *	and hands the outcome back through a small dynamic shared memory segment.
 *	The same request removes the jobs when the extension is dropped
 *	(uninstall.c), without looking the extension up: it is gone by then.
 *
 * Workers log in as the bootstrap superuser, which can always log in (a
 * PostgreSQL 15 worker cannot skip the LOGIN check, and the extension's owner
 * may lack it); storage.c switches to the owner for its statements.  They
 * need no shared_preload_libraries, only a free slot of max_worker_processes;
 * without one the caller is told.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/wait_event.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "storage.h"
#include "worker.h"

PGDLLEXPORT void extension_tokens_cron_worker_main(Datum main_arg);

typedef struct CronRequest
{
	bool		unschedule;
	bool		missing_ok;		/* no pg_cron in the cron database means no
								 * job to remove (or move) */
	char		cron_database[NAMEDATALEN];
	char		database[NAMEDATALEN];
	char		new_name[NAMEDATALEN];	/* "": no rename; else `database`'s
										 * jobs move to this name */
	char		username[NAMEDATALEN];
	char		schedule[128];
	/* filled in by the worker */
	bool		done;
	bool		ok;
	int64		jobs;
	char		message[256];
} CronRequest;

static BackgroundWorkerHandle *
start_worker(const char *function, const char *name, Datum arg,
			 const void *extra, size_t extralen)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "extension_tokens", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "extension_tokens %s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "extension_tokens %s", name);
	worker.bgw_main_arg = arg;
	worker.bgw_notify_pid = MyProcPid;
	if (extra)
		memcpy(worker.bgw_extra, extra, extralen);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return NULL;
	return handle;
}

/* ---------------------------------------------------------------------
 * pg_cron
 * ---------------------------------------------------------------------
 */

/*
 * Runs one request in a worker connected to the cron database and waits for
 * it.  Removing jobs needs nothing of the extension (it may be gone already:
 * see uninstall.c); scheduling needs its owner.
 */
static bool
cron_request(bool unschedule, bool missing_ok, const char *database,
			 const char *new_name, const char *schedule, int64 *jobs, char **message)
{
	const char *cron_db = GetConfigOption("cron.database_name", true, false);
	dsm_segment *seg;
	CronRequest *req;
	BackgroundWorkerHandle *handle;
	bool		ok;

	if (cron_db == NULL)
	{
		*message = pstrdup("pg_cron is not loaded (add it to shared_preload_libraries)");
		return false;
	}
	seg = dsm_create(sizeof(CronRequest), 0);
	req = (CronRequest *) dsm_segment_address(seg);
	memset(req, 0, sizeof(*req));
	req->unschedule = unschedule;
	req->missing_ok = missing_ok;
	strlcpy(req->cron_database, cron_db, sizeof(req->cron_database));
	strlcpy(req->database, database ? database : get_database_name(MyDatabaseId),
			sizeof(req->database));
	strlcpy(req->new_name, new_name ? new_name : "", sizeof(req->new_name));
	if (!unschedule && new_name == NULL)
	{
		strlcpy(req->username, GetUserNameFromId(StorageExtensionOwner(), false),
				sizeof(req->username));
	}
	strlcpy(req->schedule, schedule ? schedule : "", sizeof(req->schedule));

	handle = start_worker("extension_tokens_cron_worker_main", "pg_cron setup",
						  UInt32GetDatum(dsm_segment_handle(seg)), NULL, 0);
	if (handle == NULL)
	{
		dsm_detach(seg);
		*message = pstrdup("could not start a background worker (raise max_worker_processes)");
		return false;
	}
	if (WaitForBackgroundWorkerShutdown(handle) != BGWH_STOPPED)
	{
		dsm_detach(seg);
		*message = pstrdup("the background worker did not finish");
		return false;
	}
	ok = req->done && req->ok;
	*jobs = req->jobs;
	*message = pstrdup(req->done ? req->message : "the background worker failed; see the server log");
	dsm_detach(seg);
	return ok;
}

bool
WorkerCron(bool unschedule, const char *schedule, int64 *jobs, char **message)
{
	return cron_request(unschedule, false, NULL, NULL, schedule, jobs, message);
}

/*
 * Removes the jobs of a database (NULL: this one) after the extension or the
 * database was dropped: a server or cron database without pg_cron has none,
 * and that is no failure.
 */
bool
WorkerCronRemoveDropped(const char *database, int64 *jobs, char **message)
{
	*jobs = 0;
	if (GetConfigOption("cron.database_name", true, false) == NULL)
	{
		*message = pstrdup("pg_cron is not loaded");
		return true;
	}
	return cron_request(true, true, database, NULL, NULL, jobs, message);
}

/*
 * Moves the jobs of database `old_name` (NULL: this one) to its new name
 * after ALTER DATABASE ... RENAME TO (uninstall.c): they are named after the
 * database and run in it by name; with `new_name` NULL, only makes their
 * commands this version's, schedules kept.  A database without jobs, or a
 * server or cron database without pg_cron, has nothing to move, and that is
 * no failure.
 */
bool
WorkerCronRenamed(const char *old_name, const char *new_name, int64 *jobs, char **message)
{
	*jobs = 0;
	if (GetConfigOption("cron.database_name", true, false) == NULL)
	{
		*message = pstrdup("pg_cron is not loaded");
		return true;
	}
	if (old_name == NULL)
		old_name = get_database_name(MyDatabaseId);
	return cron_request(false, true, old_name, new_name ? new_name : old_name, NULL,
						jobs, message);
}

/* The names in cron.job of a database's two jobs. */
typedef struct CronJobNames
{
	char		cleanup[NAMEDATALEN + 32];
	char		history[NAMEDATALEN + 32];
} CronJobNames;

static void
cron_job_names(CronJobNames *names, const char *database)
{
	snprintf(names->cleanup, sizeof(names->cleanup), "extension_tokens_cleanup:%s", database);
	snprintf(names->history, sizeof(names->history), "extension_tokens_history:%s", database);
}

/*
 * The worker's start: attaches to the request (*seg) and connects to the
 * cron database that it names.
 */
static CronRequest *
cron_worker_attach(Datum main_arg, dsm_segment **seg)
{
	CronRequest *req;

	/* SIGTERM is acted on where interrupts are checked, not in the handler */
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	*seg = dsm_attach(DatumGetUInt32(main_arg));
	if (*seg == NULL)
		ereport(ERROR, (errmsg("extension_tokens: could not attach to the request")));
	req = (CronRequest *) dsm_segment_address(*seg);
	BackgroundWorkerInitializeConnection(req->cron_database, NULL, 0);
	return req;
}

/* Whether pg_cron is installed in this (the cron) database. */
static bool
cron_installed(void)
{
	int			rc;

	rc = SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'pg_cron'",
					 true, 1);
	return rc == SPI_OK_SELECT && SPI_processed == 1;
}

/* Runs `sql` with nargs text arguments; raises unless it returned `expected`. */
static void
cron_execute(const char *sql, int nargs, Datum *args, int expected)
{
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	int			rc;

	Assert(nargs <= lengthof(types));
	rc = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);
	if (rc != expected)
		elog(ERROR, "pg_cron call failed: %s", SPI_result_code_string(rc));
}

/* A call of pg_cron's (a SELECT). */
static void
cron_call(const char *sql, int nargs, Datum *args)
{
	cron_execute(sql, nargs, args, SPI_OK_SELECT);
}

/* An UPDATE of pg_cron's table of jobs. */
static void
cron_update(const char *sql, int nargs, Datum *args)
{
	cron_execute(sql, nargs, args, SPI_OK_UPDATE);
}

/* Removes the database's jobs; returns how many there were. */
static int64
cron_unschedule(const CronJobNames *names)
{
	Datum		args[2];
	bool		isnull;

	args[0] = CStringGetTextDatum(names->cleanup);
	args[1] = CStringGetTextDatum(names->history);
	cron_call("SELECT pg_catalog.count(cron.unschedule(jobid)) "
			  "FROM cron.job WHERE jobname OPERATOR(pg_catalog.=) ANY (ARRAY[$1, $2])",
			  2, args);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &isnull));
}

/*
 * The cleanup job's command.  pg_cron runs it in the database as the
 * extension's owner (a superuser, as a rule), under the search_path the
 * database's owner may have set, so it names nothing that anyone but a
 * superuser could put there: the cleanup function is found by its
 * membership in the extension (by oid, wherever the extension's schema is
 * now, whatever else bears its name), and called by that schema's name with
 * its argument typed; a database without the extension (a job left behind
 * by a failed CREATE EXTENSION or an interrupted drop) runs nothing.  It
 * names no schema and no database, so a rename leaves it right.
 */
static const char cleanup_command[] =
	"DO $extension_tokens$ DECLARE f pg_catalog.oid; BEGIN "
	"SELECT p.oid INTO f FROM pg_catalog.pg_extension e "
	"JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) "
	"'pg_catalog.pg_extension'::pg_catalog.regclass "
	"AND d.refobjid OPERATOR(pg_catalog.=) e.oid AND d.deptype OPERATOR(pg_catalog.=) 'e' "
	"AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass "
	"JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) d.objid "
	"WHERE e.extname OPERATOR(pg_catalog.=) 'extension_tokens' "
	"AND p.proname OPERATOR(pg_catalog.=) 'extension_tokens_cleanup'; "
	"IF f IS NOT NULL THEN EXECUTE pg_catalog.format('SELECT %I.%I($1)', "
	"(SELECT n.nspname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
	"ON n.oid OPERATOR(pg_catalog.=) p.pronamespace WHERE p.oid OPERATOR(pg_catalog.=) f), "
	"'extension_tokens_cleanup') USING NULL::pg_catalog.interval; END IF; "
	"END $extension_tokens$";

/* The command of the job that trims the run history of the two jobs. */
static char *
cron_history_command(const CronJobNames *names)
{
	return psprintf("DELETE FROM cron.job_run_details d USING cron.job j "
					"WHERE d.jobid OPERATOR(pg_catalog.=) j.jobid "
					"AND j.jobname OPERATOR(pg_catalog.=) ANY (ARRAY[%s, %s]) "
					"AND d.end_time OPERATOR(pg_catalog.<) "
					"(pg_catalog.now() OPERATOR(pg_catalog.-) interval '7 days')",
					quote_literal_cstr(names->cleanup), quote_literal_cstr(names->history));
}

/*
 * Creates (or updates) the database's two jobs: the cleanup, run in the
 * database by the extension's owner on the request's schedule, and the
 * trimming of both jobs' run history, run in the cron database.  Returns how
 * many jobs it scheduled.
 */
static int64
cron_schedule(const CronRequest *req, const CronJobNames *names)
{
	Datum		args[5];

	args[0] = CStringGetTextDatum(names->cleanup);
	args[1] = CStringGetTextDatum(req->schedule);
	args[2] = CStringGetTextDatum(cleanup_command);
	args[3] = CStringGetTextDatum(req->database);
	args[4] = CStringGetTextDatum(req->username);
	cron_call("SELECT cron.schedule_in_database($1, $2, $3, $4, $5)", 5, args);

	/* pg_cron's own history of these jobs: a week is enough. */
	args[0] = CStringGetTextDatum(names->history);
	args[1] = CStringGetTextDatum("23 3 * * *");
	args[2] = CStringGetTextDatum(cron_history_command(names));
	args[3] = CStringGetTextDatum(req->cron_database);
	cron_call("SELECT cron.schedule_in_database($1, $2, $3, $4, $5)", 5, args);
	return 2;
}

/*
 * The jobs of names `from` given the names `to` after the database was renamed
 * (or `from` itself, to bring them up to date): the cleanup runs in the
 * database by its new name, schedule and user as they were, and both jobs'
 * commands are this version's (an older one's named the schema).  cron.job
 * is updated in place: cron.schedule_in_database() would refuse the new
 * name, not committed yet (this runs before the rename's commit).  Returns
 * how many jobs it moved.
 */
static int64
cron_rename(const CronRequest *req, const CronJobNames *from, const CronJobNames *to)
{
	Datum		args[4];
	int64		moved;

	args[0] = CStringGetTextDatum(from->cleanup);
	args[1] = CStringGetTextDatum(to->cleanup);
	args[2] = CStringGetTextDatum(req->new_name);
	args[3] = CStringGetTextDatum(cleanup_command);
	cron_update("UPDATE cron.job SET jobname = $2, database = $3, command = $4 "
				"WHERE jobname OPERATOR(pg_catalog.=) $1", 4, args);
	moved = (int64) SPI_processed;
	args[0] = CStringGetTextDatum(from->history);
	args[1] = CStringGetTextDatum(to->history);
	args[2] = CStringGetTextDatum(cron_history_command(to));
	cron_update("UPDATE cron.job SET jobname = $2, command = $3 "
				"WHERE jobname OPERATOR(pg_catalog.=) $1", 3, args);
	return moved + (int64) SPI_processed;
}

/* The outcome, for the backend that waits for the worker (cron_request()). */
static void
cron_report(CronRequest *req, bool ok, const char *message)
{
	req->ok = ok;
	strlcpy(req->message, message, sizeof(req->message));
}

/*
 * The request, in one transaction of the cron database: this database's
 * jobs removed or scheduled, and the outcome reported.  An error rolls the
 * transaction back and its message is the outcome.
 */
static void
cron_run_request(CronRequest *req)
{
	CronJobNames names;
	CronJobNames new_names;

	cron_job_names(&names, req->database);
	if (req->new_name[0])
		cron_job_names(&new_names, req->new_name);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "scheduling extension_tokens cleanup");

	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (!cron_installed())
		{
			if (!req->missing_ok)
				ereport(ERROR,
						(errmsg("the pg_cron extension is not installed in database \"%s\"",
								req->cron_database)));
			/* No pg_cron here: no job to remove. */
			req->jobs = 0;
		}
		else if (req->unschedule)
			req->jobs = cron_unschedule(&names);
		else if (req->new_name[0])
			req->jobs = cron_rename(req, &names, &new_names);
		else
			req->jobs = cron_schedule(req, &names);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		cron_report(req, true, req->unschedule ? "unscheduled" :
					!req->new_name[0] ? "scheduled" :
					strcmp(req->new_name, req->database) == 0 ? "updated" : "renamed");
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		cron_report(req, false, edata->message);
	}
	PG_END_TRY();
}

/*
 * In the cron database: create (or update) or remove this database's two
 * jobs: the cleanup, and the trimming of those jobs' run history.
 */
void
extension_tokens_cron_worker_main(Datum main_arg)
{
	dsm_segment *seg;
	CronRequest *req = cron_worker_attach(main_arg, &seg);

	cron_run_request(req);
	req->done = true;
	pgstat_report_activity(STATE_IDLE, NULL);
	dsm_detach(seg);
	proc_exit(0);
}
