/*-------------------------------------------------------------------------
 *
 * logfilter.h
 *	  Keeps tokens out of the server log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_LOGFILTER_H
#define EXTENSION_TOKENS_LOGFILTER_H

extern void LogFilterInit(void);
extern void LogFilterRedactActivity(void);

#endif							/* EXTENSION_TOKENS_LOGFILTER_H */
