/*-------------------------------------------------------------------------
 *
 * replication.h
 *	  How far the commit of a revocation waits: for this server's disk only,
 *	  or for synchronous standbys to have written, flushed or applied it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_REPLICATION_H
#define EXTENSION_TOKENS_REPLICATION_H

extern void ReplicationInit(void);

/*
 * The current transaction revoked a session: its commit waits as
 * extension_tokens.revoke_synchronous_commit says (at least).
 */
extern void ReplicationNoteRevocation(void);

/*
 * Whether revocations wait for synchronous standbys (remote_write or more),
 * so that a caller waiting for the revoker worker's commit must wait for the
 * whole of it.
 */
extern bool ReplicationRevocationWaitsForStandbys(void);

#endif							/* EXTENSION_TOKENS_REPLICATION_H */
