/*-------------------------------------------------------------------------
 *
 * uninstall.h
 *	  What dropping the extension or its database undoes in pg_cron.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_UNINSTALL_H
#define EXTENSION_TOKENS_UNINSTALL_H

/* Installs the object access hook that notices DROP DATABASE. */
extern void UninstallInit(void);

#endif							/* EXTENSION_TOKENS_UNINSTALL_H */
