/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  Who may act for whom, the limits on issuing and refreshing, and the
 *	  rules that end a session and judge a token against its row.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_POLICY_H
#define EXTENSION_TOKENS_POLICY_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

#include "compat.h"
#include "storage.h"

/* SQLSTATEs of the contract that PostgreSQL has no name for. */
#define ERRCODE_ET_UNAUTHORIZED	MAKE_SQLSTATE('P','T','4','0','1')
#define ERRCODE_ET_RATE_LIMITED	MAKE_SQLSTATE('P','T','4','2','9')
#define ERRCODE_ET_BAD_REQUEST	MAKE_SQLSTATE('P','T','4','0','0')

extern void PolicyInit(void);
extern bool PolicyCallerIsAdmin(void);
extern void PolicyRequireManageScope(const char *action);
extern void PolicyRequireScopeToManage(const char *action, const pg_uuid_t *own);
extern void PolicyCheckExtraClaim(const char *name, bool admin);
extern const char *PolicyResolveUser(const char *p_user_id, const char *action);
extern bool PolicyUserIdValid(const char *user_id, size_t len);
extern void PolicyCheckUserId(const char *user_id, size_t len);

/*
 * The one rule for a session's end (see PolicySessionEnd()).  Every path that
 * asks whether a session is alive asks this: validate and refresh directly,
 * list, stats and the admin view through extension_token_session_state().
 */
typedef enum SessionEnd
{
	SESSION_LIVE,
	SESSION_REVOKED,
	SESSION_REFRESH_EXPIRED,	/* its refresh token ran out */
	SESSION_LIFETIME_ENDED,		/* it reached its ends_at */
	SESSION_IDLE				/* unused for its idle_timeout */
} SessionEnd;

extern SessionEnd PolicySessionEnd(bool revoked, TimestampTz refresh_expires_at,
								   TimestampTz ends_at, int64 idle_timeout_us,
								   TimestampTz last_active, TimestampTz at);
extern const char *PolicySessionStatus(SessionEnd end);
ET_NORETURN_BEGIN extern void PolicyRateLimited(bool refresh, TimestampTz now,
												TimestampTz retry_at) ET_NORETURN_END;
ET_NORETURN_BEGIN extern void PolicyTooManyAttempts(TimestampTz now,
													TimestampTz retry_at) ET_NORETURN_END;
extern int	PolicyDeviceCodeLifetime(void);
extern const char *PolicyDeviceVerificationUri(void);
ET_NORETURN_BEGIN extern void PolicyRefreshRefused(const char *reason) ET_NORETURN_END;

/* The rules applied to a session's row (policy.c's last section). */
extern SessionEnd PolicyRowEnd(const SessionRow *row, TimestampTz now);
extern TokenStatus PolicySessionVerdict(const SessionRow *row, const char *sub, bool current,
										int64 exp, TimestampTz now);

typedef enum RefreshDecision
{
	RD_EXCHANGE,				/* the current refresh token: a new pair */
	RD_RETRY,					/* exchanged within the retry window: the same
								 * new pair again */
	RD_REUSE,					/* exchanged before: theft, revoke the session */
	RD_REFUSE					/* refused for `reason` */
} RefreshDecision;

extern RefreshDecision PolicyRefreshDecide(const SessionRow *row, const unsigned char *hash,
										   TimestampTz now, const char **reason);

#endif							/* EXTENSION_TOKENS_POLICY_H */
