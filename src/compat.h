/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL major versions we build on
 *	  (15, 17, 18), in one place.  Feature tests where a macro says what is
 *	  there; PG_VERSION_NUM only where nothing else does.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EXTENSION_TOKENS_COMPAT_H
#define EXTENSION_TOKENS_COMPAT_H

/*
 * "Does not return": PostgreSQL 18 replaced the pg_attribute_noreturn()
 * suffix with a pg_noreturn prefix (C11 _Noreturn).
 */
#ifdef pg_noreturn
#define ET_NORETURN_BEGIN pg_noreturn
#define ET_NORETURN_END
#else
#define ET_NORETURN_BEGIN
#define ET_NORETURN_END pg_attribute_noreturn()
#endif

/*
 * PostgreSQL 18 asks RelationGetPrimaryKeyIndex() whether a deferrable key
 * will do (ours is not deferrable), and gave index_beginscan() an
 * instrumentation argument (NULL: none).
 */
#if PG_VERSION_NUM >= 180000
#define ET_PRIMARY_KEY_INDEX(rel) RelationGetPrimaryKeyIndex((rel), false)
#define ET_INDEX_BEGINSCAN(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define ET_PRIMARY_KEY_INDEX(rel) RelationGetPrimaryKeyIndex(rel)
#define ET_INDEX_BEGINSCAN(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/*
 * A GUC check hook's "extra": allocated with guc_malloc() since PostgreSQL
 * 16 (GUC memory became a memory context), with malloc() before.  Both
 * return NULL on failure (guc_malloc after a message at LOG).
 */
#if PG_VERSION_NUM >= 160000
#define ET_GUC_MALLOC(size) guc_malloc(LOG, (size))
#else
#define ET_GUC_MALLOC(size) malloc(size)
#endif

#endif							/* EXTENSION_TOKENS_COMPAT_H */
