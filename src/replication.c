/*-------------------------------------------------------------------------
 *
 * replication.c
 *	  How far the commit of a revocation waits: for this server's disk only,
 *	  or for synchronous standbys to have written, flushed or applied it.
 *
 * A hot standby validates tokens (see README, "Read replicas"), so a
 * revocation that the primary has committed but a standby has not yet
 * applied leaves, for that moment, a token that the standby still accepts.
 * PostgreSQL's answer to "return only when the standbys have applied it" is
 * synchronous_commit = remote_apply with the standbys in
 * synchronous_standby_names.  The caller of a revocation may set that
 * itself; extension_tokens.revoke_synchronous_commit makes it the server's
 * rule for revocations alone, so that issue and validate keep their speed.
 *
 * The rule is applied at the commit, not where the revocation happens: every
 * UPDATE that revokes a session (storage.c: revoke, revoke_session,
 * revoke_user, the session limit of issue, and the revoker worker's
 * revocation after refresh-token reuse) calls ReplicationNoteRevocation(),
 * and a pre-commit callback of the transaction raises synchronous_commit for
 * that commit (SET LOCAL, so it ends with the transaction) to the setting
 * when the transaction's own is lower.  At pre-commit every function's SET
 * clause has already been undone, so a wrapper function with its own SET
 * cannot take the rule away, and a later SET LOCAL of the caller cannot
 * either.  The setting is never lowered: a caller asking for more gets more.
 *
 * Like any synchronous commit, the wait ends early only when the backend is
 * cancelled or terminated; PostgreSQL then warns that the transaction has
 * committed locally but may not have been replicated.  The revoker worker
 * ignores cancels, and a revocation whose wait a SIGTERM ended stays queued
 * for the next worker (revoker.c).  A prepared
 * transaction (PREPARE TRANSACTION) waits by the rule of the session that
 * runs COMMIT PREPARED.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/guc.h"

#include "replication.h"

static const struct config_enum_entry synchronous_commit_options[] = {
	{"off", SYNCHRONOUS_COMMIT_OFF, false},
	{"local", SYNCHRONOUS_COMMIT_LOCAL_FLUSH, false},
	{"remote_write", SYNCHRONOUS_COMMIT_REMOTE_WRITE, false},
	{"on", SYNCHRONOUS_COMMIT_REMOTE_FLUSH, false},
	{"remote_apply", SYNCHRONOUS_COMMIT_REMOTE_APPLY, false},
	{NULL, 0, false}
};

static int	et_revoke_synchronous_commit = SYNCHRONOUS_COMMIT_LOCAL_FLUSH;

/* This transaction revoked a session (reset at its end). */
static bool revoked_in_transaction = false;
static bool callback_registered = false;

static const char *
level_name(int level)
{
	for (int i = 0; synchronous_commit_options[i].name != NULL; i++)
		if (synchronous_commit_options[i].val == level)
			return synchronous_commit_options[i].name;
	return NULL;
}

static void
replication_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (revoked_in_transaction &&
				et_revoke_synchronous_commit > synchronous_commit)
			{
				const char *name = level_name(et_revoke_synchronous_commit);

				if (name != NULL)
					(void) set_config_option("synchronous_commit", name,
											 PGC_USERSET, PGC_S_SESSION,
											 GUC_ACTION_LOCAL, true, 0, false);
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			revoked_in_transaction = false;
			break;
		default:
			break;
	}
}

void
ReplicationInit(void)
{
	DefineCustomEnumVariable("extension_tokens.revoke_synchronous_commit",
							 "The least synchronous_commit with which a transaction that revoked a session commits.",
							 "remote_apply: a revocation returns only once the synchronous standbys (synchronous_standby_names) have applied it, so that validation on them refuses the token at once. A higher synchronous_commit of the caller's is kept.",
							 &et_revoke_synchronous_commit,
							 SYNCHRONOUS_COMMIT_LOCAL_FLUSH,
							 synchronous_commit_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
}

void
ReplicationNoteRevocation(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(replication_xact_callback, NULL);
		callback_registered = true;
	}
	revoked_in_transaction = true;
}

bool
ReplicationRevocationWaitsForStandbys(void)
{
	return et_revoke_synchronous_commit >= SYNCHRONOUS_COMMIT_REMOTE_WRITE;
}
