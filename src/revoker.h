/*-------------------------------------------------------------------------
 *
 * revoker.h
 *	  Revoking a session in a transaction of its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_REVOKER_H
#define EXTENSION_TOKENS_REVOKER_H

#include "utils/uuid.h"

extern void RevokeSessionDetached(pg_uuid_t session_id, const char *reason);

#endif							/* EXTENSION_TOKENS_REVOKER_H */
