/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  Who may act for whom, and the limits on issuing and refreshing.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_POLICY_H
#define EXTENSION_TOKENS_POLICY_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"

/* SQLSTATEs of the contract that PostgreSQL has no name for. */
#define ERRCODE_ET_UNAUTHORIZED	MAKE_SQLSTATE('P','T','4','0','1')
#define ERRCODE_ET_RATE_LIMITED	MAKE_SQLSTATE('P','T','4','2','9')

extern bool PolicyCallerIsAdmin(void);
extern pg_uuid_t PolicyResolveUser(bool given, const pg_uuid_t *p_user_id,
								   const char *action);
ET_NORETURN_BEGIN extern void PolicyRateLimited(bool refresh, TimestampTz now,
												TimestampTz retry_at) ET_NORETURN_END;
ET_NORETURN_BEGIN extern void PolicyRefreshRefused(const char *reason) ET_NORETURN_END;

#endif							/* EXTENSION_TOKENS_POLICY_H */
