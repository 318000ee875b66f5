/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Work that must happen in a transaction of its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_WORKER_H
#define EXTENSION_TOKENS_WORKER_H


/* Creates/updates (or removes) this database's pg_cron jobs. */
extern bool WorkerCron(bool unschedule, const char *schedule, int64 *jobs,
					   char **message);
/* Removes a database's jobs once the extension or it is gone (uninstall.c). */
extern bool WorkerCronRemoveDropped(const char *database, int64 *jobs,
									char **message);
/* Moves a database's jobs to its new name after a rename (uninstall.c). */
extern bool WorkerCronRenamed(const char *old_name, const char *new_name, int64 *jobs,
							  char **message);

#endif							/* EXTENSION_TOKENS_WORKER_H */
