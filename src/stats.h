/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Counters in shared memory: validations by outcome, refreshes, issues.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_STATS_H
#define EXTENSION_TOKENS_STATS_H

#include "datatype/timestamp.h"

#include "token.h"

typedef enum StatsEvent
{
	STATS_ISSUED,
	STATS_REFRESH_OK,
	STATS_REFRESH_FAILED,
	STATS_VALIDATION_CACHED,	/* answered by the verified-token cache */
	STATS_VALIDATION_KEPT,		/* and by a session verdict kept (verdict.c) */
	STATS_EVENT_COUNT
} StatsEvent;

typedef struct StatsSnapshot
{
	TimestampTz since;
	uint64		validations[TOKEN_STATUS_COUNT];	/* [TOKEN_OK] = valid */
	uint64		events[STATS_EVENT_COUNT];
} StatsSnapshot;

extern void StatsInit(void);
extern void StatsCountValidation(TokenStatus status);
extern void StatsCount(StatsEvent event);
/* false when the library was not preloaded: there are no counters */
extern bool StatsRead(StatsSnapshot *out);
extern TimestampTz StatsReset(void);

#endif							/* EXTENSION_TOKENS_STATS_H */
