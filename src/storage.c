/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  The extension's tables: sessions, token hashes, rotation, revocation.
 *
 * Three tables live in the extension's schema:
 *
 *	extension_token_sessions  one row per session (an issue and its refreshes)
 *	extension_tokens		  one row per token ever handed out, keyed by the
 *							  SHA-256 of the token; a token itself is never
 *							  stored.  Revocation is written to the session
 *							  and to each of its token rows in one statement,
 *							  so that validation is a single index lookup.
 *	extension_token_users	  one row per user: the lock that serializes a
 *							  user's issues and refreshes, and the timestamps
 *							  that the hourly rate limits count.
 *
 * Privileges: the SQL functions run as their caller, who has no rights on
 * these tables.  Every statement here runs as the extension's owner, switched
 * to with SetUserIdAndSecContext() for just the duration of the statement
 * and marked SECURITY_RESTRICTED_OPERATION (as pg_cron and autovacuum do).
 * Because statements are planned under the caller's search_path, every
 * table, function, operator and type in them is schema-qualified.
 *
 * Plans are prepared once per backend and kept; they are thrown away when the
 * relcache says one of our tables changed (e.g. DROP EXTENSION).
 *
 * Concurrency.  Every path locks rows in one order: the user's row in
 * extension_token_users (issue and refresh only: INSERT ... ON CONFLICT DO
 * UPDATE), then session rows, then token rows.  Revocations lock their
 * victim sessions before updating tokens, refresh locks the session before
 * it claims the refresh token, validation records use on the session before
 * the token, cleanup locks sessions (SKIP LOCKED) before deleting tokens.  So
 * no two of them deadlock, and the session limit and the rate limits count
 * committed work.  The
 * exchange of a refresh token is one UPDATE whose WHERE clause requires the
 * token to be unused and unrevoked: of two concurrent exchanges exactly one
 * updates the row, the other re-checks the new row version and finds nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "config.h"
#include "storage.h"

#define EXTENSION_NAME "extension_tokens"

typedef enum StatementId
{
	ST_TOUCH_SESSION,
	ST_TOUCH,
	ST_ISSUE,
	ST_ISSUE_NO_LIMIT,
	ST_REVOKE_OVER_LIMIT,
	ST_REFRESH,
	ST_REFRESH_NO_LIMIT,
	ST_REVOKE_SESSION,
	ST_REVOKE_BY_TOKEN,
	ST_REVOKE_USER,
	ST_LIST,
	ST_RECORD_REFRESH_ERROR,
	ST_CLEANUP_SESSIONS,
	ST_CLEANUP_USERS,
	ST_COUNTS,
	ST_COUNT
} StatementId;

typedef struct Statement
{
	const char *sql;			/* "@." stands for the extension's schema */
	int			nargs;
	Oid			argtypes[16];
} Statement;

/*
 * Revoking sessions: the victims, locked (session rows first, like every
 * other path: see the lock order at the top), then their tokens and the
 * sessions (whose count is the result).  FOR NO KEY UPDATE re-checks
 * "revoked_at IS NULL" on the row it waited for, so of two concurrent
 * revocations the second counts nothing; it does not block the foreign key
 * checks of tokens being inserted for the session.
 */
#define REVOKE_SESSIONS(victims) \
	"WITH victims AS (" victims "), " \
	"rt AS (UPDATE @.extension_tokens t SET revoked_at = $2, revoked_reason = $3 " \
	"  FROM victims v WHERE t.session_id OPERATOR(pg_catalog.=) v.session_id " \
	"  AND t.revoked_at IS NULL) " \
	"UPDATE @.extension_token_sessions s SET revoked_at = $2, revoked_reason = $3 " \
	"  FROM victims v WHERE s.session_id OPERATOR(pg_catalog.=) v.session_id " \
	"  AND s.revoked_at IS NULL"

/*
 * Rate limits: a user's log of recent issues (or refreshes), at most `limit`
 * timestamps within the last hour.  This CTE, "u", locks the user's row,
 * prunes the log and, if there is room, appends now; it returns whether it
 * did (ok) and when the oldest entry leaves the window (oldest).  For a
 * limit above 0; RATE_SLOT_OFF below is the one for no limit.
 */
#define RATE_SLOT(col, user, now, hour_ago, limit) \
	"u AS (INSERT INTO @.extension_token_users AS u (user_id, " col ") " \
	"VALUES (" user ", ARRAY[" now "]) " \
	"ON CONFLICT (user_id) DO UPDATE SET " col " = CASE " \
	"  WHEN (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(u." col ") AS l(t) " \
	"        WHERE l.t OPERATOR(pg_catalog.>) " hour_ago ") OPERATOR(pg_catalog.<) " limit \
	"  THEN ARRAY(SELECT l.t FROM pg_catalog.unnest(u." col ") AS l(t) " \
	"        WHERE l.t OPERATOR(pg_catalog.>) " hour_ago " ORDER BY l.t) " \
	"       OPERATOR(pg_catalog.||) " now \
	"  ELSE u." col " END " \
	"RETURNING u." col "[pg_catalog.array_upper(u." col ", 1)] OPERATOR(pg_catalog.=) " now " AS ok, " \
	"  (SELECT pg_catalog.min(l.t) FROM pg_catalog.unnest(u." col ") AS l(t) " \
	"   WHERE l.t OPERATOR(pg_catalog.>) " hour_ago ") AS oldest) "

/*
 * No limit (0): only the lock, which still serializes a user's issues and
 * refreshes, and the log kept empty.  A statement of its own, because the
 * limit's subqueries cost their set-up on every execution.
 */
#define RATE_SLOT_OFF(col, user) \
	"u AS (INSERT INTO @.extension_token_users AS u (user_id) VALUES (" user ") " \
	"ON CONFLICT (user_id) DO UPDATE SET " col " = '{}'::pg_catalog.timestamptz[] " \
	"RETURNING true AS ok, NULL::pg_catalog.timestamptz AS oldest) "

/*
 * The parameters of a new pair (pair_values()), shared by issue and refresh:
 *	$1 session, $2 user, $3 name, $4 claims and $5 access lifetime (issue
 *	only: null for refresh), $6 now,
 *	$7 access expiry, $8 refresh expiry, $9 access hash, $10 refresh hash,
 *	$11 now - 1 hour, $12 rate limit
 * The new pair's two token rows, written when the CTE named in `gate` has a
 * row:
 */
#define PAIR_PARAMS \
	UUIDOID, UUIDOID, TEXTOID, JSONBOID, INTERVALOID, TIMESTAMPTZOID, \
	TIMESTAMPTZOID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID, TIMESTAMPTZOID, INT4OID
#define INSERT_PAIR(gate) \
	"INSERT INTO @.extension_tokens " \
	"  (token_hash, token_type, session_id, user_id, name, created_at, " \
	"   expires_at, last_used_at) " \
	"SELECT k.h, k.t, $1, $2, $3, $6, k.e, $6 FROM " gate ", " \
	"  (VALUES ($9, 'access', $7), ($10, 'refresh', $8)) AS k(h, t, e)"

/*
 * Issue: the rate slot (and the user's lock), the session, its two tokens.
 * Nothing is written but the rate row when the slot is refused.
 */
#define ISSUE_CTES(rate_slot) \
	"WITH " rate_slot ", " \
	"s AS (INSERT INTO @.extension_token_sessions " \
	"  (session_id, user_id, name, claims, access_lifetime, created_at, " \
	"   last_used_at, expires_at, refresh_expires_at) " \
	"  SELECT $1, $2, $3, $4, $5, $6, $6, $7, $8 FROM u WHERE u.ok), " \
	"t AS (" INSERT_PAIR("u") " WHERE u.ok) "

/*
 * A session has ended without being revoked: its refresh token expired, it
 * outlived session_max_lifetime (created before $created), or it was idle
 * past session_inactivity_timeout (last used before $used).  The callers
 * pass -infinity for a limit that is off.
 */
#define SESSION_EXPIRED_AT(now, created, used) \
	"(refresh_expires_at OPERATOR(pg_catalog.<=) " now \
	" OR created_at OPERATOR(pg_catalog.<) " created \
	" OR COALESCE(last_used_at, created_at) OPERATOR(pg_catalog.<) " used ")"

/*
 * Refresh, after the lookup: the rate slot (the user's lock), the session
 * moved on (s: the UPDATE locks the row and re-checks on its newest version
 * that it is not revoked), the claim of refresh token $13 (c: unused,
 * unrevoked and unexpired, re-checked on the newest version by the UPDATE),
 * then, only if the claim was made, the session's other access tokens
 * revoked and the new pair written.  Each step reads the one before it, so
 * the locks are taken in the order of every other path: user, session,
 * tokens.
 *
 * The session is updated before the claim is known, because the UPDATE is
 * what takes the session's lock (a separate FOR NO KEY UPDATE would write
 * one more WAL record per refresh).  When the claim is lost, the caller
 * always raises an error (StorageRefresh() says REFRESH_LOST and
 * extension_token_refresh() refuses), and that rolls the session's update
 * back with the rate slot.
 */
#define REFRESH_STATEMENT(rate_slot) \
	"WITH " rate_slot ", " \
	"s AS (UPDATE @.extension_token_sessions x SET " \
	"  refresh_count = x.refresh_count OPERATOR(pg_catalog.+) 1, last_refresh_at = $6, " \
	"  last_used_at = $6, expires_at = $7, refresh_expires_at = $8 " \
	"  FROM u WHERE u.ok AND x.session_id OPERATOR(pg_catalog.=) $1 " \
	"  AND x.revoked_at IS NULL RETURNING x.session_id), " \
	"c AS (UPDATE @.extension_tokens t SET used_at = $6, replaced_by = $10 FROM s " \
	"  WHERE t.token_hash OPERATOR(pg_catalog.=) $13 " \
	"  AND t.session_id OPERATOR(pg_catalog.=) s.session_id " \
	"  AND t.token_type OPERATOR(pg_catalog.=) 'refresh' " \
	"  AND t.used_at IS NULL AND t.revoked_at IS NULL " \
	"  AND t.expires_at OPERATOR(pg_catalog.>) $6 RETURNING 1), " \
	"old AS (UPDATE @.extension_tokens SET revoked_at = $6, revoked_reason = 'rotated' " \
	"  WHERE session_id OPERATOR(pg_catalog.=) $1 " \
	"  AND token_type OPERATOR(pg_catalog.=) 'access' AND revoked_at IS NULL " \
	"  AND EXISTS (SELECT 1 FROM c)), " \
	"n AS (" INSERT_PAIR("c") ") " \
	"SELECT u.ok, u.oldest, EXISTS (SELECT 1 FROM c) FROM u"

static const Statement statements[ST_COUNT] = {
	/* Last use: the session's row first, then the token's (lock order). */
	[ST_TOUCH_SESSION] = {
		"UPDATE @.extension_token_sessions SET last_used_at = $2 "
		"WHERE session_id OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
		"AND (last_used_at IS NULL OR last_used_at OPERATOR(pg_catalog.<) $3)",
		3, {UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[ST_TOUCH] = {
		"UPDATE @.extension_tokens SET last_used_at = $2 "
		"WHERE token_hash OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
		"AND (last_used_at IS NULL OR last_used_at OPERATOR(pg_catalog.<) $3)",
		3, {BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[ST_ISSUE] = {
		ISSUE_CTES(RATE_SLOT("issue_log", "$2", "$6", "$11", "$12"))
		"SELECT u.ok, u.oldest FROM u",
		12, {PAIR_PARAMS}
	},
	[ST_ISSUE_NO_LIMIT] = {
		ISSUE_CTES(RATE_SLOT_OFF("issue_log", "$2")) "SELECT u.ok, u.oldest FROM u",
		12, {PAIR_PARAMS}
	},
	/*
	 * With max_sessions_per_user, after an issue: the user's other active
	 * sessions beyond the newest $4 ($5 is the new one).  A statement of its
	 * own, run after the issue statement has waited for the user's row: its
	 * snapshot then sees the sessions that the transactions waited for have
	 * committed, which a CTE of the issue statement would not.
	 */
	[ST_REVOKE_OVER_LIMIT] = {
		REVOKE_SESSIONS("SELECT session_id FROM @.extension_token_sessions "
						"WHERE user_id OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
						"AND refresh_expires_at OPERATOR(pg_catalog.>) $2 "
						"AND session_id OPERATOR(pg_catalog.<>) $5 "
						"ORDER BY created_at DESC, session_id DESC OFFSET $4 "
						"FOR NO KEY UPDATE"),
		5, {UUIDOID, TIMESTAMPTZOID, TEXTOID, INT4OID, UUIDOID}
	},
	[ST_REFRESH] = {
		REFRESH_STATEMENT(RATE_SLOT("refresh_log", "$2", "$6", "$11", "$12")),
		13, {PAIR_PARAMS, BYTEAOID}
	},
	[ST_REFRESH_NO_LIMIT] = {
		REFRESH_STATEMENT(RATE_SLOT_OFF("refresh_log", "$2")),
		13, {PAIR_PARAMS, BYTEAOID}
	},
	[ST_REVOKE_SESSION] = {
		REVOKE_SESSIONS("SELECT session_id FROM @.extension_token_sessions "
						"WHERE session_id OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
						"FOR NO KEY UPDATE"),
		3, {UUIDOID, TIMESTAMPTZOID, TEXTOID}
	},
	[ST_REVOKE_BY_TOKEN] = {
		REVOKE_SESSIONS("SELECT s.session_id FROM @.extension_tokens t "
						"JOIN @.extension_token_sessions s "
						"ON s.session_id OPERATOR(pg_catalog.=) t.session_id "
						"WHERE t.token_hash OPERATOR(pg_catalog.=) $1 AND s.revoked_at IS NULL "
						"FOR NO KEY UPDATE OF s"),
		3, {BYTEAOID, TIMESTAMPTZOID, TEXTOID}
	},
	[ST_REVOKE_USER] = {
		REVOKE_SESSIONS("SELECT session_id FROM @.extension_token_sessions "
						"WHERE user_id OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
						"AND refresh_expires_at OPERATOR(pg_catalog.>) $2 "
						"FOR NO KEY UPDATE"),
		3, {UUIDOID, TIMESTAMPTZOID, TEXTOID}
	},
	[ST_LIST] = {
		"SELECT session_id, user_id, name, "
		"  CASE WHEN revoked_at IS NOT NULL THEN 'revoked' "
		"       WHEN " SESSION_EXPIRED_AT("$2", "$3", "$4") " THEN 'expired' "
		"       ELSE 'active' END, "
		"  created_at, last_used_at, expires_at, refresh_expires_at, revoked_at, "
		"  refresh_count, last_refresh_at, revoked_reason, last_refresh_error, "
		"  last_refresh_error_at "
		"FROM @.extension_token_sessions WHERE user_id OPERATOR(pg_catalog.=) $1 "
		"ORDER BY created_at DESC, session_id DESC",
		4, {UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[ST_RECORD_REFRESH_ERROR] = {
		"UPDATE @.extension_token_sessions SET last_refresh_error = $3, "
		"last_refresh_error_at = $2 WHERE session_id OPERATOR(pg_catalog.=) $1",
		3, {UUIDOID, TIMESTAMPTZOID, TEXTOID}
	},
	/*
	 * One batch of dead sessions (revoked or past their refresh expiry
	 * before $1), with their tokens.  SKIP LOCKED: a session someone is
	 * touching right now is left for the next run.  The batches walk the
	 * index on the moment of death upwards from $3, where the last one
	 * ended (the third column): the rows a batch deleted stay in the index
	 * until the transaction ends, and starting from the bottom every time
	 * would visit them all again, making a large backlog quadratic.
	 */
	[ST_CLEANUP_SESSIONS] = {
		"WITH victims AS (SELECT session_id, "
		"  LEAST(revoked_at, refresh_expires_at) AS dead_at "
		"  FROM @.extension_token_sessions "
		"  WHERE LEAST(revoked_at, refresh_expires_at) OPERATOR(pg_catalog.<) $1 "
		"  AND LEAST(revoked_at, refresh_expires_at) OPERATOR(pg_catalog.>=) $3 "
		"  ORDER BY LEAST(revoked_at, refresh_expires_at) "
		"  LIMIT $2 FOR UPDATE SKIP LOCKED), "
		"dt AS (DELETE FROM @.extension_tokens t USING victims v "
		"  WHERE t.session_id OPERATOR(pg_catalog.=) v.session_id RETURNING 1), "
		"ds AS (DELETE FROM @.extension_token_sessions s USING victims v "
		"  WHERE s.session_id OPERATOR(pg_catalog.=) v.session_id RETURNING 1) "
		"SELECT (SELECT pg_catalog.count(*) FROM dt), (SELECT pg_catalog.count(*) FROM ds), "
		"  (SELECT pg_catalog.max(dead_at) FROM victims)",
		3, {TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID}
	},
	/*
	 * Users with no session left and nothing in their rate-limit logs, in
	 * user_id order from $3 (where the last batch ended, as above).
	 */
	[ST_CLEANUP_USERS] = {
		"WITH d AS (DELETE FROM @.extension_token_users u USING ("
		"  SELECT x.user_id FROM @.extension_token_users x "
		"  WHERE x.user_id OPERATOR(pg_catalog.>=) $3 "
		"  AND NOT EXISTS (SELECT 1 FROM @.extension_token_sessions s "
		"                  WHERE s.user_id OPERATOR(pg_catalog.=) x.user_id) "
		"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(x.issue_log OPERATOR(pg_catalog.||) x.refresh_log) l(t) "
		"                  WHERE l.t OPERATOR(pg_catalog.>) $1) "
		"  ORDER BY x.user_id LIMIT $2 FOR UPDATE SKIP LOCKED) v "
		"  WHERE u.user_id OPERATOR(pg_catalog.=) v.user_id RETURNING u.user_id) "
		"SELECT (SELECT pg_catalog.count(*) FROM d), "
		"  (SELECT d.user_id FROM d ORDER BY d.user_id DESC LIMIT 1)",
		3, {TIMESTAMPTZOID, INT4OID, UUIDOID}
	},
	[ST_COUNTS] = {
		"SELECT "
		"  (SELECT pg_catalog.count(*) FROM @.extension_token_sessions "
		"   WHERE created_at OPERATOR(pg_catalog.>) ($1 OPERATOR(pg_catalog.-) interval '1 day')), "
		"  pg_catalog.count(*) FILTER (WHERE revoked_at IS NULL AND NOT " SESSION_EXPIRED_AT("$1", "$2", "$3") "), "
		"  pg_catalog.count(*) FILTER (WHERE revoked_at IS NOT NULL), "
		"  pg_catalog.count(*) FILTER (WHERE revoked_at IS NULL AND " SESSION_EXPIRED_AT("$1", "$2", "$3") ") "
		"FROM @.extension_token_sessions",
		3, {TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
};

/* What this backend knows of the installed extension. */
static struct
{
	bool		valid;
	Oid			owner;
	Oid			schema;
	Oid			tables[3];
	/* extension_tokens columns that the direct lookup reads */
	AttrNumber	att_type,
				att_session,
				att_user,
				att_name,
				att_expires,
				att_last_used,
				att_used,
				att_revoked;
	/* extension_token_sessions columns that the refresh lookup reads */
	AttrNumber	satt_created,
				satt_last_used,
				satt_error_at,
				satt_claims,
				satt_lifetime;
	char	   *qschema;		/* quoted schema name, in TopMemoryContext */
	SPIPlanPtr	plans[ST_COUNT];
}			ext;

/* Drop what we know when one of our tables changes or goes away. */
static void
storage_relcache_callback(Datum arg, Oid relid)
{
	if (!ext.valid)
		return;
	if (relid == InvalidOid || relid == ext.tables[0] ||
		relid == ext.tables[1] || relid == ext.tables[2])
		ext.valid = false;
}

void
StorageInit(void)
{
	CacheRegisterRelcacheCallback(storage_relcache_callback, (Datum) 0);
}

static void
storage_load(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Form_pg_extension form;
	static const char *const names[3] = {
		"extension_tokens", "extension_token_sessions", "extension_token_users"
	};

	if (ext.valid)
		return;

	for (int i = 0; i < ST_COUNT; i++)
		if (ext.plans[i] != NULL)
		{
			SPI_freeplan(ext.plans[i]);
			ext.plans[i] = NULL;
		}
	if (ext.qschema)
	{
		pfree(ext.qschema);
		ext.qschema = NULL;
	}

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum(EXTENSION_NAME));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"%s\" is not installed in this database",
						EXTENSION_NAME),
				 errhint("Run CREATE EXTENSION %s.", EXTENSION_NAME)));
	form = (Form_pg_extension) GETSTRUCT(tup);
	ext.owner = form->extowner;
	ext.schema = form->extnamespace;
	{
		bool		isnull;
		Datum		v = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);
		char	   *version = isnull ? pstrdup("?") : TextDatumGetCString(v);

		/* The library speaks to the tables of its own version only. */
		if (strcmp(version, EXTENSION_TOKENS_VERSION) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension \"%s\" is at version %s, but its library is version %s",
							EXTENSION_NAME, version, EXTENSION_TOKENS_VERSION),
					 errhint("Run ALTER EXTENSION %s UPDATE.", EXTENSION_NAME)));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	for (int i = 0; i < 3; i++)
	{
		ext.tables[i] = get_relname_relid(names[i], ext.schema);
		if (!OidIsValid(ext.tables[i]))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table \"%s\" of extension \"%s\" is missing",
							names[i], EXTENSION_NAME)));
	}
	{
		AttrNumber *atts[] = {&ext.att_type, &ext.att_session, &ext.att_user,
			&ext.att_name, &ext.att_expires, &ext.att_last_used,
			&ext.att_used, &ext.att_revoked, &ext.satt_created,
			&ext.satt_last_used, &ext.satt_error_at, &ext.satt_claims,
		&ext.satt_lifetime};
		const char *cols[] = {"token_type", "session_id", "user_id", "name",
			"expires_at", "last_used_at", "used_at", "revoked_at", "created_at",
			"last_used_at", "last_refresh_error_at", "claims",
		"access_lifetime"};

		StaticAssertStmt(lengthof(atts) == lengthof(cols), "one name per column");
		for (int i = 0; i < lengthof(atts); i++)
		{
			int			table = i < 8 ? 0 : 1;	/* tokens, then sessions */

			*atts[i] = get_attnum(ext.tables[table], cols[i]);
			if (*atts[i] == InvalidAttrNumber)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of table \"%s\" is missing",
								cols[i], names[table])));
		}
	}
	ext.qschema = MemoryContextStrdup(TopMemoryContext,
									  quote_identifier(get_namespace_name(ext.schema)));
	ext.valid = true;
}

Oid
StorageExtensionOwner(void)
{
	storage_load();
	return ext.owner;
}

Oid
StorageExtensionSchema(void)
{
	storage_load();
	return ext.schema;
}

static SPIPlanPtr
storage_plan(StatementId id)
{
	if (ext.plans[id] == NULL)
	{
		const Statement *st = &statements[id];
		StringInfoData sql;
		SPIPlanPtr	plan;

		initStringInfo(&sql);
		for (const char *p = st->sql; *p; p++)
		{
			if (p[0] == '@' && p[1] == '.')
				appendStringInfoString(&sql, ext.qschema);
			else
				appendStringInfoChar(&sql, *p);
		}
		plan = SPI_prepare(sql.data, st->nargs, (Oid *) st->argtypes);
		if (plan == NULL)
			elog(ERROR, "extension_tokens: SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		ext.plans[id] = plan;
		pfree(sql.data);
	}
	return ext.plans[id];
}

/* Entering and leaving the owner's identity around SPI. */
typedef struct StorageCall
{
	Oid			save_user;
	int			save_sec;
	MemoryContext caller_cxt;
} StorageCall;

static void
storage_enter(StorageCall *call)
{
	storage_load();
	call->caller_cxt = CurrentMemoryContext;
	GetUserIdAndSecContext(&call->save_user, &call->save_sec);
	SetUserIdAndSecContext(ext.owner,
						   call->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "extension_tokens: SPI_connect failed");
}

static void
storage_leave(StorageCall *call)
{
	SPI_finish();
	SetUserIdAndSecContext(call->save_user, call->save_sec);
}

static int
storage_exec(StatementId id, Datum *values, const char *nulls, bool read_only)
{
	int			rc = SPI_execute_plan(storage_plan(id), values, nulls, read_only, 0);

	if (rc < 0)
		elog(ERROR, "extension_tokens: statement %d failed: %s",
			 (int) id, SPI_result_code_string(rc));
	return rc;
}

static Datum
hash_datum(const unsigned char *hash)
{
	bytea	   *b = palloc(VARHDRSZ + TOKEN_HASH_LENGTH);

	SET_VARSIZE(b, VARHDRSZ + TOKEN_HASH_LENGTH);
	memcpy(VARDATA(b), hash, TOKEN_HASH_LENGTH);
	return PointerGetDatum(b);
}

static Datum
uuid_datum(const pg_uuid_t *u)
{
	pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

	memcpy(copy, u, sizeof(pg_uuid_t));
	return UUIDPGetDatum(copy);
}

static Datum
seconds_interval(int64 seconds)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = seconds * USECS_PER_SEC;
	return IntervalPGetDatum(iv);
}

static Datum
column(int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, isnull);
}

static TimestampTz
column_ts(int col)
{
	bool		isnull;
	Datum		d = column(col, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * The snapshot a statement of the caller's would get: in READ COMMITTED a
 * fresh one, which sees a revocation committed a moment ago and what this
 * transaction has written so far; under REPEATABLE READ and SERIALIZABLE
 * the transaction's (the index and heap access methods take the predicate
 * locks SERIALIZABLE needs).  Registered: the caller unregisters it.
 */
static Snapshot
statement_snapshot(void)
{
	return RegisterSnapshot(IsolationUsesXactSnapshot() ?
							GetTransactionSnapshot() : GetLatestSnapshot());
}

/* A row looked up directly in a primary key index. */
typedef struct DirectLookup
{
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		found;			/* slot holds the row */
} DirectLookup;

/*
 * Opens table `table` of ext.tables and finds the row whose primary key is
 * `key` (compared with `eq`) in its primary key index, under `snapshot`.
 * The lookup is left open for the caller to read `slot`; lookup_end()
 * closes it.
 */
static void
lookup_begin(DirectLookup *lk, int table, RegProcedure eq, Datum key,
			 Snapshot snapshot)
{
	Oid			pkey;
	ScanKeyData skey;

	lk->rel = table_open(ext.tables[table], AccessShareLock);
	pkey = ET_PRIMARY_KEY_INDEX(lk->rel);
	if (!OidIsValid(pkey))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key",
						RelationGetRelationName(lk->rel))));
	lk->index = index_open(pkey, AccessShareLock);
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, eq, key);
	lk->slot = table_slot_create(lk->rel, NULL);
	lk->scan = ET_INDEX_BEGINSCAN(lk->rel, lk->index, snapshot, 1, 0);
	index_rescan(lk->scan, &skey, 1, NULL, 0);
	lk->found = index_getnext_slot(lk->scan, ForwardScanDirection, lk->slot);
}

static void
lookup_end(DirectLookup *lk)
{
	index_endscan(lk->scan);
	ExecDropSingleTupleTableSlot(lk->slot);
	index_close(lk->index, NoLock);
	table_close(lk->rel, NoLock);
}

static TimestampTz
slot_ts(TupleTableSlot *slot, AttrNumber att)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, att, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* Whole seconds of an interval, as date_part('epoch', i)::int8 gives them. */
static int64
interval_seconds(Datum interval)
{
	float8		v = DatumGetFloat8(DirectFunctionCall2(interval_part,
													   CStringGetTextDatum("epoch"),
													   interval));

	v = rint(v);
	if (isnan(v) || !FLOAT8_FITS_IN_INT64(v))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("session access_lifetime out of range")));
	return (int64) v;
}

/* The token row of `hash` into *out (which the caller zeroed). */
static void
fetch_token(const unsigned char *hash, Snapshot snapshot, StoredToken *out)
{
	DirectLookup lk;
	TupleTableSlot *slot;
	bool		isnull;
	Datum		d;

	lookup_begin(&lk, 0, F_BYTEAEQ, hash_datum(hash), snapshot);
	slot = lk.slot;
	if (lk.found)
	{
		text	   *type;

		out->found = true;
		d = slot_getattr(slot, ext.att_type, &isnull);
		type = DatumGetTextPP(d);
		out->is_access = !isnull && VARSIZE_ANY_EXHDR(type) == 6 &&
			memcmp(VARDATA_ANY(type), "access", 6) == 0;
		(void) slot_getattr(slot, ext.att_revoked, &isnull);
		out->revoked = !isnull;
		(void) slot_getattr(slot, ext.att_used, &isnull);
		out->used = !isnull;
		out->used_at = slot_ts(slot, ext.att_used);
		d = slot_getattr(slot, ext.att_session, &isnull);
		memcpy(&out->session_id, DatumGetUUIDP(d), sizeof(pg_uuid_t));
		d = slot_getattr(slot, ext.att_user, &isnull);
		memcpy(&out->user_id, DatumGetUUIDP(d), sizeof(pg_uuid_t));
		d = slot_getattr(slot, ext.att_name, &isnull);
		out->name = TextDatumGetCString(d);
		out->expires_at = slot_ts(slot, ext.att_expires);
		out->last_used_at = slot_ts(slot, ext.att_last_used);
	}
	lookup_end(&lk);
}

/*
 * The token whose hash this is, looked up directly in the primary key index
 * rather than through SPI: validation's one read, on every request.  Like
 * the SPI statements, this reads the table as its owner would: no privilege
 * or row security check applies to the caller, who has none on the table.
 */
void
StorageLookupToken(const unsigned char *hash, StoredToken *out)
{
	Snapshot	snapshot;

	memset(out, 0, sizeof(*out));
	storage_load();
	snapshot = statement_snapshot();
	fetch_token(hash, snapshot, out);
	UnregisterSnapshot(snapshot);
}

/*
 * The token and what a refresh needs of its session: two direct primary key
 * lookups under one snapshot (as a join of the two would see them).  Not
 * found when either row is missing.
 */
void
StorageLookupRefresh(const unsigned char *hash, StoredToken *out)
{
	Snapshot	snapshot;
	DirectLookup lk;

	memset(out, 0, sizeof(*out));
	storage_load();
	snapshot = statement_snapshot();
	fetch_token(hash, snapshot, out);
	if (out->found)
	{
		lookup_begin(&lk, 1, F_UUID_EQ, uuid_datum(&out->session_id), snapshot);
		if (lk.found)
		{
			bool		isnull;
			Datum		d;

			out->session_created_at = slot_ts(lk.slot, ext.satt_created);
			out->session_last_used_at = slot_ts(lk.slot, ext.satt_last_used);
			out->last_refresh_error_at = slot_ts(lk.slot, ext.satt_error_at);
			d = slot_getattr(lk.slot, ext.satt_claims, &isnull);
			out->session_claims_json = isnull ? NULL
				: JsonbToCString(NULL, &DatumGetJsonbP(d)->root, VARSIZE_ANY(DatumGetPointer(d)));
			d = slot_getattr(lk.slot, ext.satt_lifetime, &isnull);
			out->session_access_lifetime = isnull ? 0 : interval_seconds(d);
		}
		else
			memset(out, 0, sizeof(*out));
		lookup_end(&lk);
	}
	UnregisterSnapshot(snapshot);
}

void
StorageRecordRefreshError(pg_uuid_t session_id, TimestampTz now, const char *error)
{
	StorageCall call;
	Datum		values[3];

	values[0] = uuid_datum(&session_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = CStringGetTextDatum(error);
	storage_enter(&call);
	storage_exec(ST_RECORD_REFRESH_ERROR, values, NULL, false);
	storage_leave(&call);
}

/*
 * Between two batches of a cleanup, the last begun at `batch_start`: a pause
 * of delay_ms, or of three times what the batch took if that is longer, so
 * that a large backlog leaves most of the CPU to the requests being served
 * meanwhile (as vacuum_cost_delay does for VACUUM).  The batch's own time is
 * the measure of the work, and grows on a loaded server: the pause keeps
 * the cleanup to at most a quarter of one CPU's time (unless a batch takes
 * over 3.3 s: a pause is at most 10 s, the setting's maximum).  0 means no
 * pause at all.  Interruptible.
 */
#define CLEANUP_PAUSE_FACTOR 3
static void
cleanup_pause(int delay_ms, TimestampTz batch_start)
{
	long		took_ms;

	if (delay_ms <= 0)
		return;
	took_ms = (long) ((GetCurrentTimestamp() - batch_start) / 1000);
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(delay_ms, Min(took_ms * CLEANUP_PAUSE_FACTOR, 10000L)),
					 PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Deletes, batch by batch, the sessions (and their tokens) that were revoked
 * or ran out before `dead_before`, then users with nothing left, pausing
 * delay_ms between batches.  Returns the rows deleted from all three tables.
 */
uint64
StorageCleanup(TimestampTz dead_before, int batch_size, int delay_ms)
{
	StorageCall call;
	Datum		values[3];
	uint64		total = 0;
	pg_uuid_t	first_user;

	values[0] = TimestampTzGetDatum(dead_before);
	values[1] = Int32GetDatum(batch_size);
	values[2] = TimestampTzGetDatum(DT_NOBEGIN);	/* -infinity */
	storage_enter(&call);
	for (;;)
	{
		bool		isnull;
		int64		tokens,
					sessions;
		Datum		last;
		TimestampTz start = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		storage_exec(ST_CLEANUP_SESSIONS, values, NULL, false);
		tokens = DatumGetInt64(column(1, &isnull));
		sessions = DatumGetInt64(column(2, &isnull));
		last = column(3, &isnull);
		total += tokens + sessions;
		if (sessions < batch_size || isnull)
			break;
		values[2] = last;
		cleanup_pause(delay_ms, start);
	}
	values[0] = TimestampTzGetDatum(GetCurrentTimestamp() - USECS_PER_HOUR);
	memset(&first_user, 0, sizeof(first_user));
	values[2] = uuid_datum(&first_user);
	for (;;)
	{
		bool		isnull;
		int64		users;
		Datum		last;
		TimestampTz start = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		storage_exec(ST_CLEANUP_USERS, values, NULL, false);
		users = DatumGetInt64(column(1, &isnull));
		last = column(2, &isnull);
		total += users;
		if (users < batch_size || isnull)
			break;
		values[2] = uuid_datum(DatumGetUUIDP(last));
		cleanup_pause(delay_ms, start);
	}
	storage_leave(&call);
	return total;
}

void
StorageCounts(TimestampTz now, StoredCounts *out)
{
	StorageCall call;
	Datum		values[3];
	bool		isnull;

	values[0] = TimestampTzGetDatum(now);
	values[1] = TimestampTzGetDatum(et_session_max_lifetime > 0
									? now - (int64) et_session_max_lifetime * USECS_PER_SEC
									: DT_NOBEGIN);
	values[2] = TimestampTzGetDatum(et_session_inactivity_timeout > 0
									? now - (int64) et_session_inactivity_timeout * USECS_PER_SEC
									: DT_NOBEGIN);
	storage_enter(&call);
	storage_exec(ST_COUNTS, values, NULL, true);
	out->issued_24h = DatumGetInt64(column(1, &isnull));
	out->sessions_active = DatumGetInt64(column(2, &isnull));
	out->sessions_revoked = DatumGetInt64(column(3, &isnull));
	out->sessions_expired = DatumGetInt64(column(4, &isnull));
	storage_leave(&call);
}

void
StorageTouchToken(const unsigned char *hash, pg_uuid_t session_id, TimestampTz now,
				  TimestampTz older_than)
{
	StorageCall call;
	Datum		values[3];

	values[0] = uuid_datum(&session_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(older_than);
	storage_enter(&call);
	storage_exec(ST_TOUCH_SESSION, values, NULL, false);
	values[0] = hash_datum(hash);
	storage_exec(ST_TOUCH, values, NULL, false);
	storage_leave(&call);
}

static void
pair_values(const NewPair *pair, bool with_session, int rate_limit,
			Datum *values, char *nulls)
{
	values[0] = uuid_datum(&pair->session_id);
	values[1] = uuid_datum(&pair->user_id);
	values[2] = CStringGetTextDatum(pair->name);
	/* the session's claims and lifetime: the issue statement writes them */
	values[3] = (Datum) 0;
	nulls[3] = 'n';
	if (pair->claims_json && with_session)
	{
		values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(pair->claims_json));
		nulls[3] = ' ';
	}
	values[4] = (Datum) 0;
	nulls[4] = 'n';
	if (with_session)
	{
		values[4] = seconds_interval(pair->access_lifetime);
		nulls[4] = ' ';
	}
	values[5] = TimestampTzGetDatum(pair->created_at);
	values[6] = TimestampTzGetDatum(pair->expires_at);
	values[7] = TimestampTzGetDatum(pair->refresh_expires_at);
	values[8] = hash_datum(pair->access_hash);
	values[9] = hash_datum(pair->refresh_hash);
	values[10] = TimestampTzGetDatum(pair->created_at - USECS_PER_HOUR);
	values[11] = Int32GetDatum(rate_limit);
}

/* The rate slot's answer, the first two columns of ST_ISSUE and ST_REFRESH. */
static bool
rate_answer(TimestampTz *retry_at)
{
	bool		isnull;
	bool		allowed;

	if (SPI_processed != 1)
		elog(ERROR, "extension_tokens: rate limit row missing");
	allowed = DatumGetBool(column(1, &isnull)) && !isnull;
	*retry_at = column_ts(2);
	if (*retry_at != 0)
		*retry_at += USECS_PER_HOUR;
	return allowed;
}

/*
 * Writes a new session and its pair, in one statement with the user's rate
 * slot, then, when max_sessions > 0, revokes the user's sessions beyond the
 * newest max_sessions - 1 others.  False, with nothing written, when the
 * rate limit refuses; *retry_at then says when the oldest entry in the window
 * leaves it (0 if unknown).
 */
bool
StorageIssue(const NewPair *pair, int rate_limit, int max_sessions,
			 TimestampTz *retry_at)
{
	StorageCall call;
	Datum		values[12];
	char		nulls[13] = "            ";
	bool		allowed;

	pair_values(pair, true, rate_limit, values, nulls);
	storage_enter(&call);
	storage_exec(rate_limit > 0 ? ST_ISSUE : ST_ISSUE_NO_LIMIT, values, nulls, false);
	allowed = rate_answer(retry_at);
	if (allowed && max_sessions > 0)
	{
		Datum		limit[5];

		limit[0] = uuid_datum(&pair->user_id);
		limit[1] = TimestampTzGetDatum(pair->created_at);
		limit[2] = CStringGetTextDatum("session_limit");
		limit[3] = Int32GetDatum(max_sessions - 1);
		limit[4] = uuid_datum(&pair->session_id);
		storage_exec(ST_REVOKE_OVER_LIMIT, limit, NULL, false);
	}
	storage_leave(&call);
	return allowed;
}

/*
 * Exchanges refresh token `hash` for the new pair (made from what the lookup
 * found of the session), in one statement: rate slot, session update,
 * claim, rotation.  REFRESH_LOST when the token was no longer there to
 * claim: exchanged, revoked or expired by someone else since the lookup.
 * The session may then have been updated all the same: the caller must
 * raise an error on REFRESH_LOST, which undoes it.
 */
RefreshOutcome
StorageRefresh(const unsigned char *hash, const NewPair *pair, int rate_limit,
			   TimestampTz *retry_at)
{
	StorageCall call;
	Datum		values[13];
	char		nulls[14] = "             ";
	RefreshOutcome outcome;
	bool		isnull;

	pair_values(pair, false, rate_limit, values, nulls);
	values[12] = hash_datum(hash);
	storage_enter(&call);
	storage_exec(rate_limit > 0 ? ST_REFRESH : ST_REFRESH_NO_LIMIT, values, nulls, false);
	if (!rate_answer(retry_at))
		outcome = REFRESH_RATE_LIMITED;
	else if (DatumGetBool(column(3, &isnull)) && !isnull)
		outcome = REFRESH_DONE;
	else
		outcome = REFRESH_LOST;
	storage_leave(&call);
	return outcome;
}

static uint64
revoke_with(StatementId id, Datum key, TimestampTz now, const char *reason)
{
	StorageCall call;
	Datum		values[3];
	uint64		n;

	values[0] = key;
	values[1] = TimestampTzGetDatum(now);
	values[2] = CStringGetTextDatum(reason);
	storage_enter(&call);
	storage_exec(id, values, NULL, false);
	n = SPI_processed;
	storage_leave(&call);
	return n;
}

uint64
StorageRevokeSession(pg_uuid_t session_id, TimestampTz now, const char *reason)
{
	return revoke_with(ST_REVOKE_SESSION, uuid_datum(&session_id), now, reason);
}

uint64
StorageRevokeByToken(const unsigned char *hash, TimestampTz now, const char *reason)
{
	return revoke_with(ST_REVOKE_BY_TOKEN, hash_datum(hash), now, reason);
}

uint64
StorageRevokeUser(pg_uuid_t user_id, TimestampTz now, const char *reason)
{
	return revoke_with(ST_REVOKE_USER, uuid_datum(&user_id), now, reason);
}

/* Fills a materialized SRF result with the user's sessions. */
void
StorageListSessions(pg_uuid_t user_id, TimestampTz now, TimestampTz created_after,
					TimestampTz used_after, ReturnSetInfo *rsinfo)
{
	StorageCall call;
	Datum		values[4];

	values[0] = uuid_datum(&user_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(created_after);
	values[3] = TimestampTzGetDatum(used_after);
	storage_enter(&call);
	storage_exec(ST_LIST, values, NULL, true);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		row[14];
		bool		isnull[14];
		MemoryContext old;

		for (int c = 0; c < 14; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
								   c + 1, &isnull[c]);
		/* tuplestore_putvalues copies the values into the store. */
		old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
		MemoryContextSwitchTo(old);
	}
	storage_leave(&call);
}
