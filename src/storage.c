/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  The extension's tables: sessions (the truth), exchanged refresh
 *	  tokens, users' rate logs, device authorizations, the audit trail.
 *
 * Eight tables live in the extension's schema:
 *
 *	extension_token_sessions  one row per session, and the only truth about
 *							  it: the SHA-256 of its current access token and
 *							  of its current refresh token, its expiry and
 *							  end, its revocation, and the retry window's
 *							  sealed successor.  Validation reads this row by
 *							  the session id that the token's signature vouches
 *							  for and compares hashes; refresh replaces the
 *							  pair in one UPDATE of it; revocation is one
 *							  UPDATE of it.  Nothing else holds state that
 *							  could disagree.
 *	extension_tokens		  one row per exchanged refresh token, keyed by its
 *							  session and its SHA-256, until the session is
 *							  deleted: a replay is found here and recognised
 *							  as reuse.
 *	extension_token_users	  one row per user: the timestamps that the hourly
 *							  rate limits count, and, with a rate or session
 *							  limit, the lock that serializes a user's issues
 *							  (and refreshes).
 *	extension_token_legacy_refresh
 *							  the hashes of refresh tokens made before 1.2,
 *							  which do not carry their session id, with it.
 *	extension_token_devices	  one row per device authorization (RFC 8628)
 *							  until the cleanup deletes it: the SHA-256 of
 *							  its device code and of its user code, and
 *							  whether and by whom it was approved.
 *	extension_token_events	  the audit trail, insert only: written by the
 *							  statement that makes the change it records, as
 *							  a data-modifying CTE of it (so a change and its
 *							  event commit or roll back together, and the hot
 *							  path runs no extra statement); the events that
 *							  must outlive the caller's error (reuse, rate
 *							  limits) by the revoker's worker.
 *	extension_token_issued_rollup
 *							  the sessions the cleanup deleted, counted by
 *							  the quarter hour of their creation, written by
 *							  the statement that deletes them.
 *	extension_token_signing_state
 *							  one row: the key ids this database last
 *							  recorded; a difference from those in force is
 *							  a secret_rotated event.
 *
 * The write path is kept to what it must write.  A refresh token carries its
 * session id, so refresh reads the session by its primary key and no index
 * on the refresh token's hash exists.  A refresh changes no indexed column of
 * the session's row (cleanup's index is on check_after, which only issue,
 * revocation and cleanup move), so it is a HOT update.  Without limits
 * neither issue nor refresh touches the user's row (the creation of an API
 * key always does: a user's keys are counted under its lock).
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
 * Concurrency.  There is one lock order, and every path keeps it:
 *
 *		1. the user's row in extension_token_users (issue and refresh, only
 *		   with a rate limit or, for issue, a session limit, and always for
 *		   an API key; taken by the rate slot's INSERT ... ON CONFLICT DO
 *		   UPDATE);
 *		2. session rows, several always in session_id order (revoke_user and
 *		   the session limit lock their victims with ORDER BY session_id
 *		   FOR NO KEY UPDATE before updating them);
 *		3. extension_tokens rows (inserted by refresh after its session);
 *		4. extension_token_events rows: only ever inserted, never locked or
 *		   updated, so writing them (in the same statement as the session's
 *		   row, or after it) cannot close a cycle.
 *
 * Two more, apart from these paths: the cleanup (one transaction, many
 * batches) first takes a transaction-level advisory lock, so that two
 * cleanups never run at once, and only then session rows (SKIP LOCKED) and
 * the rows of extension_token_issued_rollup that its batches add to, in an
 * order no other cleanup can cross.  extension_token_signing_state's one
 * row is locked last, by a check of the signing keys (the cleanup's comes
 * after its batches); the revoker's worker takes it with NOWAIT, and tries
 * again later, so that a transaction holding it never holds up the
 * revocations the worker commits.
 *
 * A path that takes only one session row (refresh, revoke, revoke_session,
 * reuse) cannot close a cycle with one that takes several in order.
 * Validation never waits for a lock: it writes nothing in the caller's
 * transaction (uses are counted in shared memory, usage.c, and written by
 * the worker, which locks its batch in session_id order), and its fallback
 * without the preload records use with SKIP LOCKED.
 *
 * Every revocation is an UPDATE of the session row with "revoked_at IS
 * NULL" in its WHERE clause.  Under READ COMMITTED an UPDATE that waited for
 * a concurrent refresh re-checks its WHERE clause on the row's newest
 * version, and since the refresh wrote the new pair into that same row, the
 * revocation ends the new pair as well: there is no second row that a
 * revocation could miss.  A refresh is an UPDATE whose WHERE clause requires
 * the presented refresh token to be the row's current one and the session
 * unrevoked: of two concurrent exchanges exactly one updates the row, and a
 * refresh that waited for a revocation finds the session revoked.
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
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "common/hashfn.h"
#include "utils/array.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "common/int.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "config.h"
#include "replication.h"
#include "revoker.h"
#include "storage.h"

#define EXTENSION_NAME "extension_tokens"

typedef enum StatementId
{
	ST_TOUCH,
	ST_ISSUE,
	ST_ISSUE_NO_LIMIT,
	ST_ISSUE_BARE,
	ST_REVOKE_OVER_LIMIT,
	ST_COUNT_KEYS,
	ST_REFRESH,
	ST_REFRESH_NO_LIMIT,
	ST_REVOKE_SESSION,
	ST_REVOKE_USER,
	ST_LIST,
	ST_RECORD_REFRESH_ERROR,
	ST_RATE_UNDO,
	ST_CLEANUP_SESSIONS,
	ST_CLEANUP_USERS,
	ST_CLEANUP_DEVICES,
	ST_COUNTS,
	ST_KEY_COUNTS,
	ST_ADD_USE,
	ST_DEVICE_START,
	ST_DEVICE_FAILURES,
	ST_DEVICE_DECIDE,
	ST_DEVICE_FAILED,
	ST_DEVICE_POLL,
	ST_DEVICE_CONSUME,
	ST_RECORD_EVENT,
	ST_EVENTS_USER,
	ST_EVENTS_ALL,
	ST_EVENTS_BY_TOKEN,
	ST_CLEANUP_EVENTS,
	ST_CLEANUP_LOCK,
	ST_SIGNING_READ,
	ST_SIGNING_READ_NOWAIT,
	ST_SIGNING_SEED,
	ST_SIGNING_ROTATED,
	ST_COUNT
} StatementId;

typedef struct Statement
{
	const char *sql;			/* "@." stands for the extension's schema */
	int			nargs;
	Oid			argtypes[24];
} Statement;

/*
 * The session rule (policy.c, through its SQL face) applied to the row of
 * alias `s` at `at`: 'active', 'expired' or 'revoked'.
 */
#define SESSION_STATE(s, at) \
	"@.extension_token_session_state(" s ".revoked_at, " s ".refresh_expires_at, " \
	s ".ends_at, " s ".idle_timeout, COALESCE(" s ".last_used_at, " s ".created_at), " at ")"

/*
 * Revoking sessions: the victims, locked in session_id order (the lock
 * order: see the top of this file), then updated.  FOR NO KEY UPDATE
 * re-checks "revoked_at IS NULL" on the newest version of a row it waited
 * for, and so does the UPDATE: of two concurrent revocations the second
 * counts nothing.  Returns one row per session revoked.
 */
#define REVOKE_VICTIMS(where) \
	"UPDATE @.extension_token_sessions s SET revoked_at = $2, revoked_reason = $3, " \
	"  retry_box = NULL, check_after = LEAST(s.check_after, $2) " \
	"FROM (SELECT v.session_id FROM @.extension_token_sessions v " \
	"      WHERE " where " AND v.revoked_at IS NULL " \
	"      ORDER BY v.session_id FOR NO KEY UPDATE) victims " \
	"WHERE s.session_id OPERATOR(pg_catalog.=) victims.session_id AND s.revoked_at IS NULL " \
	"RETURNING s.session_id, s.user_id"

/*
 * A revocation (an UPDATE returning session_id, user_id; $2 the time, $3 the
 * reason) with its events, one per session revoked, in the same statement.
 * Returns the sessions revoked and their users (for the notifications).
 */
#define REVOKE_EVENTS(update, actor) \
	"WITH r AS (" update "), " \
	"e AS (INSERT INTO @.extension_token_events (at, event, user_id, session_id, actor, reason) " \
	"  SELECT $2, 'revoked', r.user_id, r.session_id, " actor ", $3 FROM r) " \
	"SELECT r.session_id, r.user_id FROM r"

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

/* Issue's parameters, by position. */
enum
{
	IP_SESSION = 1, IP_USER, IP_NAME, IP_CLAIMS, IP_LIFETIME, IP_NOW,
	IP_ACCESS_EXPIRES, IP_REFRESH_EXPIRES, IP_ACCESS_HASH, IP_REFRESH_HASH,
	IP_HOUR_AGO, IP_LIMIT, IP_ENDS_AT, IP_IDLE_TIMEOUT, IP_ACCESS_JTI, IP_KEY_ID,
	IP_SCOPES, IP_USER_AGENT, IP_IP, IP_KIND, IP_LOG, IP_ACTOR, IP_COUNT = IP_ACTOR
};
#define ISSUE_TYPES \
	UUIDOID, TEXTOID, TEXTOID, JSONBOID, INTERVALOID, TIMESTAMPTZOID, \
	TIMESTAMPTZOID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID, \
	TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID, INTERVALOID, UUIDOID, TEXTOID, TEXTARRAYOID, \
	TEXTOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID

/*
 * Issue: the rate slot (and the user's lock), then the session's row, which
 * is the whole of a new session.  Nothing is written but the rate row when
 * the slot is refused.
 */
#define ISSUE_INSERT \
	"INSERT INTO @.extension_token_sessions " \
	"  (session_id, user_id, name, claims, access_lifetime, created_at, " \
	"   last_used_at, expires_at, refresh_expires_at, check_after, access_hash, " \
	"   refresh_hash, ends_at, idle_timeout, access_jti, key_id, scopes, user_agent, ip, kind) "
#define ISSUE_VALUES \
	"$1, $2, $3, $4, $5, $6, $6, $7, $8, $8, $9, $10, $13, $14, $15, $16, $17, " \
	"$18, $19::pg_catalog.inet, $20"
/* Its event ($21: whether to record it; an API key's always is). */
#define ISSUE_EVENT(from) \
	"e AS (INSERT INTO @.extension_token_events " \
	"  (at, event, user_id, session_id, actor, ip, user_agent, token_hash) " \
	"  SELECT $6, CASE WHEN $20 OPERATOR(pg_catalog.=) 'api_key' THEN 'api_key_created' " \
	"  ELSE 'issued' END, $2, $1, $22, $19::pg_catalog.inet, $18, $9 " from ") "
#define ISSUE_STATEMENT(rate_slot) \
	"WITH " rate_slot ", " \
	"s AS (" ISSUE_INSERT "SELECT " ISSUE_VALUES " FROM u WHERE u.ok), " \
	ISSUE_EVENT("FROM u WHERE u.ok AND $21") \
	"SELECT u.ok, u.oldest FROM u"

/* Refresh's parameters, by position. */
enum
{
	RP_SESSION = 1, RP_USER, RP_OLD_HASH, RP_NOW, RP_ACCESS_EXPIRES,
	RP_REFRESH_EXPIRES, RP_ACCESS_HASH, RP_REFRESH_HASH, RP_HOUR_AGO,
	RP_LIMIT, RP_RETRY_UNTIL, RP_RETRY_BOX, RP_ACCESS_JTI, RP_KEY_ID,
	RP_USER_AGENT, RP_IP, RP_LOG, RP_ACTOR, RP_COUNT = RP_ACTOR
};
#define REFRESH_TYPES \
	UUIDOID, TEXTOID, BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID, \
	TIMESTAMPTZOID, BYTEAOID, BYTEAOID, TIMESTAMPTZOID, \
	INT4OID, TIMESTAMPTZOID, BYTEAOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, \
	BOOLOID, TEXTOID

/*
 * Refresh, after the lookup: the rate slot (the user's lock), then the
 * exchange itself, one UPDATE of the session's row whose WHERE clause
 * requires $3 to be the current refresh token, unexpired, of an unrevoked
 * session (re-checked on the newest version of a row it waited for), then,
 * only if that row was updated, the exchanged token recorded with its
 * successor.  Columns: the rate slot's ok and oldest, and whether the
 * exchange was made.  When it was not, the caller always raises an error,
 * which rolls the rate slot back.
 */
#define REFRESH_UPDATE(from, where) \
	"s AS (UPDATE @.extension_token_sessions x SET " \
	"  refresh_count = x.refresh_count OPERATOR(pg_catalog.+) 1, last_refresh_at = $4, " \
	"  last_used_at = $4, expires_at = $5, refresh_expires_at = $6, " \
	"  access_hash = $7, refresh_hash = $8, access_jti = $13, key_id = $14, " \
	"  user_agent = COALESCE($15, x.user_agent), " \
	"  ip = COALESCE($16::pg_catalog.inet, x.ip), " \
	"  retry_hash = $3, retry_until = $11, retry_box = $12 " \
	"  " from " WHERE " where " x.session_id OPERATOR(pg_catalog.=) $1 " \
	"  AND x.refresh_hash OPERATOR(pg_catalog.=) $3 AND x.revoked_at IS NULL " \
	"  AND x.refresh_expires_at OPERATOR(pg_catalog.>) $4 " \
	"  RETURNING x.session_id), " \
	"c AS (INSERT INTO @.extension_tokens (session_id, token_hash, used_at, replaced_by) " \
	"  SELECT s.session_id, $3, $4, $8 FROM s RETURNING 1), " \
	"ev AS (INSERT INTO @.extension_token_events " \
	"  (at, event, user_id, session_id, actor, ip, user_agent, token_hash) " \
	"  SELECT $4, 'refreshed', $2, s.session_id, $18, $16::pg_catalog.inet, $15, $7 " \
	"  FROM s WHERE $17) "
#define REFRESH_STATEMENT(rate_slot) \
	"WITH " rate_slot ", " REFRESH_UPDATE("FROM u", "u.ok AND") \
	"SELECT u.ok, u.oldest, EXISTS (SELECT 1 FROM c) FROM u"
/*
 * No rate limit: no user row either (nothing to count, and nothing else
 * needs a user's refreshes serialized: the exchange is decided by the
 * session row's UPDATE).
 */
#define REFRESH_BARE_STATEMENT \
	"WITH " REFRESH_UPDATE("", "") \
	"SELECT true, NULL::pg_catalog.timestamptz, EXISTS (SELECT 1 FROM c)"

/*
 * The other statements' parameters and result columns, by name.  A
 * parameter's value is its position in the SQL ($1 is 1), a column's its
 * position in the result (1 is the first, as SPI_getbinval counts): values[]
 * is filled through the first, the result read through the second, and
 * storage_exec() is given the count of the second, which it checks against
 * the result's width (NO_RESULT: the statement returns no rows).
 */
#define NO_RESULT 0

/* Issue's and refresh's result: the rate slot's answer first. */
enum
{
	RATE_OK = 1, RATE_OLDEST, IC_NCOLS = RATE_OLDEST
};
enum
{
	RC_EXCHANGED = RATE_OLDEST + 1, RC_NCOLS = RC_EXCHANGED
};

/* ST_TOUCH */
enum
{
	TP_SESSION = 1, TP_NOW, TP_OLDER_THAN, TP_COUNT = TP_OLDER_THAN
};

/*
 * The revocations (REVOKE_VICTIMS and REVOKE_EVENTS take $2 the time and $3
 * the reason in each), and their result: one row per session revoked.
 */
enum
{
	OLP_USER = 1, OLP_AT, OLP_REASON, OLP_KEEP, OLP_NEW_SESSION, OLP_ACTOR,
	OLP_COUNT = OLP_ACTOR
};
enum
{
	RSP_SESSION = 1, RSP_AT, RSP_REASON, RSP_ACTOR, RSP_COUNT = RSP_ACTOR
};
enum
{
	RUP_USER = 1, RUP_AT, RUP_REASON, RUP_EXCEPT, RUP_ACTOR, RUP_COUNT = RUP_ACTOR
};
enum
{
	RVC_SESSION = 1, RVC_USER, RVC_NCOLS = RVC_USER
};

/* ST_COUNT_KEYS */
enum
{
	CKP_USER = 1, CKP_NOW, CKP_COUNT = CKP_NOW
};
enum
{
	CKC_LIVE = 1, CKC_NCOLS = CKC_LIVE
};

/* ST_LIST; its columns are those of the type extension_token_session. */
enum
{
	SLP_USER = 1, SLP_NOW, SLP_COUNT = SLP_NOW
};
enum
{
	SLC_SESSION = 1, SLC_USER, SLC_NAME, SLC_STATUS, SLC_CREATED, SLC_LAST_USED,
	SLC_EXPIRES, SLC_REFRESH_EXPIRES, SLC_REVOKED, SLC_REFRESH_COUNT,
	SLC_LAST_REFRESH, SLC_REVOKED_REASON, SLC_ERROR, SLC_ERROR_AT, SLC_USER_AGENT,
	SLC_IP, SLC_SCOPES, SLC_USE_COUNT, SLC_KIND, SLC_NCOLS = SLC_KIND
};

/* ST_RECORD_REFRESH_ERROR */
enum
{
	REP_SESSION = 1, REP_AT, REP_ERROR, REP_COUNT = REP_ERROR
};

/* ST_RATE_UNDO */
enum
{
	UNP_USER = 1, UNP_ENTRY, UNP_COUNT = UNP_ENTRY
};

/*
 * The cleanup's batches: $1 the time before which rows are done with, $2
 * the batch size (the devices and events statements take only these two),
 * $3 where the last batch ended.
 */
enum
{
	CBP_BEFORE = 1, CBP_BATCH, CBP_AFTER, CBP_COUNT = CBP_AFTER
};
enum
{
	CSC_TOKENS = 1, CSC_SESSIONS, CSC_LOOKED_AT, CSC_LAST, CSC_NCOLS = CSC_LAST
};
enum
{
	CUC_USERS = 1, CUC_LAST, CUC_NCOLS = CUC_LAST
};
/* ST_CLEANUP_LOCK: the lock's key; its one column is void. */
enum
{
	CLP_KEY = 1, CLP_COUNT = CLP_KEY
};
enum
{
	CLC_LOCKED = 1, CLC_NCOLS = CLC_LOCKED
};

/* ST_COUNTS */
enum
{
	CNP_NOW = 1, CNP_COUNT = CNP_NOW
};
enum
{
	CNC_ISSUED_24H = 1, CNC_ACTIVE, CNC_REVOKED, CNC_EXPIRED, CNC_NCOLS = CNC_EXPIRED
};

/* ST_KEY_COUNTS */
enum
{
	KCP_NOW = 1, KCP_COUNT = KCP_NOW
};
enum
{
	KCC_KEY_ID = 1, KCC_SESSIONS, KCC_NCOLS = KCC_SESSIONS
};

/* ST_ADD_USE: three arrays, element i of each for one session. */
enum
{
	AUP_SESSIONS = 1, AUP_USES, AUP_LAST_USED, AUP_COUNT = AUP_LAST_USED
};

/* ST_ADD_USE's result: the sessions skipped (locked by another). */
enum
{
	AUC_SESSION = 1, AUC_NCOLS = AUC_SESSION
};

/* The device authorization's statements. */
enum
{
	DSP_DEVICE = 1, DSP_USER_CODE, DSP_NAME, DSP_SCOPES, DSP_NOW, DSP_EXPIRES,
	DSP_INTERVAL, DSP_COUNT = DSP_INTERVAL
};
enum
{
	DFP_USER = 1, DFP_SINCE, DFP_COUNT = DFP_SINCE
};
enum
{
	DFC_FAILURES = 1, DFC_OLDEST, DFC_NCOLS = DFC_OLDEST
};
enum
{
	DDP_USER_CODE = 1, DDP_USER, DDP_NOW, DDP_STATUS, DDP_ACTOR, DDP_COUNT = DDP_ACTOR
};
enum
{
	DDC_DECIDED = 1, DDC_NCOLS = DDC_DECIDED
};
enum
{
	DLP_USER = 1, DLP_NOW, DLP_HOUR_AGO, DLP_COUNT = DLP_HOUR_AGO
};
enum
{
	DPP_DEVICE = 1, DPP_COUNT = DPP_DEVICE
};
enum
{
	DPC_STATUS = 1, DPC_EXPIRES, DPC_USER, DPC_NAME, DPC_SCOPES, DPC_INTERVAL,
	DPC_NCOLS = DPC_INTERVAL
};
enum
{
	DCP_DEVICE = 1, DCP_SESSION, DCP_COUNT = DCP_SESSION
};

/*
 * The audit trail's statements; those that read it return the columns of
 * the type extension_token_event (EVENT_COLUMNS).
 */
enum
{
	EVP_AT = 1, EVP_EVENT, EVP_USER, EVP_SESSION, EVP_ACTOR, EVP_REASON,
	EVP_HASH, EVP_COUNT = EVP_HASH
};
enum
{
	EUP_USER = 1, EUP_SINCE, EUP_COUNT = EUP_SINCE
};
enum
{
	EAP_SINCE = 1, EAP_COUNT = EAP_SINCE
};
enum
{
	ETP_HASH = 1, ETP_SESSION, ETP_COUNT = ETP_SESSION
};
enum
{
	EC_ID = 1, EC_AT, EC_EVENT, EC_USER, EC_SESSION, EC_ACTOR, EC_REASON, EC_IP,
	EC_USER_AGENT, EC_NCOLS = EC_USER_AGENT
};

/*
 * The record of the signing keys: the seed takes the first four
 * parameters, a rotation all six; the reads return the record's key ids.
 */
enum
{
	SKP_ALGORITHM = 1, SKP_SECRET_ID, SKP_KEY_ID, SKP_AT, SKP_ACTOR, SKP_CHANGES,
	SKP_COUNT = SKP_CHANGES
};
enum
{
	SKC_ALGORITHM = 1, SKC_SECRET_ID, SKC_KEY_ID, SKC_NCOLS = SKC_KEY_ID
};

static const Statement statements[ST_COUNT] = {
	/*
	 * Last use, at most once per interval (TP_*: $1 the session, $2 now, $3
	 * the last use it must be older than).  SKIP LOCKED: validation never
	 * waits for a lock (a refresh or revocation holding the row writes it
	 * anyway, or ends the session).
	 */
	[ST_TOUCH] = {
		"UPDATE @.extension_token_sessions s SET last_used_at = $2 "
		"FROM (SELECT session_id FROM @.extension_token_sessions "
		"      WHERE session_id OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
		"      AND (last_used_at IS NULL OR last_used_at OPERATOR(pg_catalog.<) $3) "
		"      FOR NO KEY UPDATE SKIP LOCKED) l "
		"WHERE s.session_id OPERATOR(pg_catalog.=) l.session_id",
		TP_COUNT, {UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[ST_ISSUE] = {
		ISSUE_STATEMENT(RATE_SLOT("issue_log", "$2", "$6", "$11", "$12")),
		IP_COUNT, {ISSUE_TYPES}
	},
	[ST_ISSUE_NO_LIMIT] = {
		ISSUE_STATEMENT(RATE_SLOT_OFF("issue_log", "$2")),
		IP_COUNT, {ISSUE_TYPES}
	},
	/*
	 * Neither a rate limit nor a session limit: the session's row alone.
	 * Nothing needs the user's issues serialized then (the session limit
	 * does, above).
	 */
	[ST_ISSUE_BARE] = {
		"WITH " ISSUE_EVENT("WHERE $21") ISSUE_INSERT "VALUES (" ISSUE_VALUES ")",
		IP_COUNT, {ISSUE_TYPES}
	},
	/*
	 * With max_sessions_per_user, after an issue: the user's other live
	 * sessions beyond the newest $4 ($5 is the new one; OLP_*: $1 the user,
	 * $2 now, $3 the reason, $6 the actor).  A statement of its own, run
	 * after the issue statement has waited for the user's row: its snapshot
	 * then sees the sessions that the transactions waited for have
	 * committed, which a CTE of the issue statement would not.  The newest
	 * are chosen without a lock; only the victims are locked, in session_id
	 * order.
	 */
	[ST_REVOKE_OVER_LIMIT] = {
		REVOKE_EVENTS(REVOKE_VICTIMS("v.session_id OPERATOR(pg_catalog.=) ANY (ARRAY("
									 "SELECT o.session_id FROM @.extension_token_sessions o "
									 "WHERE o.user_id OPERATOR(pg_catalog.=) $1 "
									 "AND o.kind OPERATOR(pg_catalog.=) 'access' "
									 "AND o.session_id OPERATOR(pg_catalog.<>) $5 "
									 "AND " SESSION_STATE("o", "$2") " OPERATOR(pg_catalog.=) 'active' "
									 "ORDER BY o.created_at DESC, o.session_id DESC OFFSET $4))"),
					  "$6"),
		OLP_COUNT, {TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID, UUIDOID, TEXTOID}
	},
	/* The user's live API keys (CKP_*: $1 the user, $2 now; CKC_*). */
	[ST_COUNT_KEYS] = {
		"SELECT pg_catalog.count(*) FROM @.extension_token_sessions o "
		"WHERE o.user_id OPERATOR(pg_catalog.=) $1 AND o.kind OPERATOR(pg_catalog.=) 'api_key' "
		"AND " SESSION_STATE("o", "$2") " OPERATOR(pg_catalog.=) 'active'",
		CKP_COUNT, {TEXTOID, TIMESTAMPTZOID}
	},
	[ST_REFRESH] = {
		REFRESH_STATEMENT(RATE_SLOT("refresh_log", "$2", "$4", "$9", "$10")),
		RP_COUNT, {REFRESH_TYPES}
	},
	[ST_REFRESH_NO_LIMIT] = {
		REFRESH_BARE_STATEMENT,
		RP_COUNT, {REFRESH_TYPES}
	},
	/* RSP_*: $1 the session, $2 now, $3 the reason, $4 the actor. */
	[ST_REVOKE_SESSION] = {
		REVOKE_EVENTS("UPDATE @.extension_token_sessions SET revoked_at = $2, revoked_reason = $3, "
					  "  retry_box = NULL, check_after = LEAST(check_after, $2) "
					  "WHERE session_id OPERATOR(pg_catalog.=) $1 AND revoked_at IS NULL "
					  "RETURNING session_id, user_id", "$4"),
		RSP_COUNT, {UUIDOID, TIMESTAMPTZOID, TEXTOID, TEXTOID}
	},
	/*
	 * Every live session of user $1 but $4 (NULL: none spared; RUP_*: $2
	 * now, $3 the reason, $5 the actor).
	 */
	[ST_REVOKE_USER] = {
		REVOKE_EVENTS(REVOKE_VICTIMS("v.user_id OPERATOR(pg_catalog.=) $1 "
									 "AND ($4 IS NULL OR v.session_id OPERATOR(pg_catalog.<>) $4) "
									 "AND " SESSION_STATE("v", "$2") " OPERATOR(pg_catalog.=) 'active'"),
					  "$5"),
		RUP_COUNT, {TEXTOID, TIMESTAMPTZOID, TEXTOID, UUIDOID, TEXTOID}
	},
	/*
	 * The columns of extension_token_session, in its order (SLC_*), of user
	 * $1's sessions at $2 (SLP_*).
	 */
	[ST_LIST] = {
		"SELECT s.session_id, s.user_id, s.name, " SESSION_STATE("s", "$2") ", "
		"  s.created_at, s.last_used_at, s.expires_at, s.refresh_expires_at, s.revoked_at, "
		"  s.refresh_count, s.last_refresh_at, s.revoked_reason, s.last_refresh_error, "
		"  s.last_refresh_error_at, s.user_agent, s.ip, s.scopes, s.use_count, s.kind "
		"FROM @.extension_token_sessions s WHERE s.user_id OPERATOR(pg_catalog.=) $1 "
		"ORDER BY s.created_at DESC, s.session_id DESC",
		SLP_COUNT, {TEXTOID, TIMESTAMPTZOID}
	},
	/* REP_*: $1 the session, $2 now, $3 the error. */
	[ST_RECORD_REFRESH_ERROR] = {
		"UPDATE @.extension_token_sessions SET last_refresh_error = $3, "
		"last_refresh_error_at = $2 WHERE session_id OPERATOR(pg_catalog.=) $1",
		REP_COUNT, {UUIDOID, TIMESTAMPTZOID, TEXTOID}
	},
	/*
	 * A refresh that lost its exchange gives back the rate slot it took
	 * (UNP_*: $1 the user, $2 its entry), so that a call answered from the
	 * retry window costs nothing.
	 */
	[ST_RATE_UNDO] = {
		"UPDATE @.extension_token_users SET refresh_log = "
		"pg_catalog.array_remove(refresh_log, $2) WHERE user_id OPERATOR(pg_catalog.=) $1",
		UNP_COUNT, {TEXTOID, TIMESTAMPTZOID}
	},
	/*
	 * One batch of at most $2 sessions due for a look (check_after before
	 * $1; CBP_*): those that died (revoked, or past their refresh expiry)
	 * before $1 are deleted with their exchanged tokens and legacy refresh
	 * hashes (one that ran out rather than being revoked leaves a
	 * session_expired event, dated at its refresh expiry); those a refresh
	 * kept alive get check_after moved on to their present expiry.  SKIP
	 * LOCKED: a session someone is touching right now is left for the next
	 * run.  The batches walk the index upwards from $3, where the last one
	 * ended (the last column): the rows a batch deleted stay in the index
	 * until the transaction ends, and starting from the bottom every time
	 * would visit them all again, making a large backlog quadratic.  Columns
	 * (CSC_*): exchanged tokens and legacy refresh hashes deleted, sessions
	 * deleted, sessions looked at, the last check_after.
	 */
	[ST_CLEANUP_SESSIONS] = {
		"WITH due AS (SELECT session_id, check_after, "
		"  LEAST(revoked_at, refresh_expires_at) AS dead_at "
		"  FROM @.extension_token_sessions "
		"  WHERE check_after OPERATOR(pg_catalog.<) $1 "
		"  AND check_after OPERATOR(pg_catalog.>=) $3 "
		"  ORDER BY check_after LIMIT $2 FOR UPDATE SKIP LOCKED), "
		"victims AS (SELECT session_id FROM due WHERE dead_at OPERATOR(pg_catalog.<) $1), "
		/* run to completion though nothing reads it, as every DML in WITH */
		"later AS (UPDATE @.extension_token_sessions s SET check_after = d.dead_at "
		"  FROM due d WHERE s.session_id OPERATOR(pg_catalog.=) d.session_id "
		"  AND d.dead_at OPERATOR(pg_catalog.>=) $1 RETURNING 1), "
		/*
		 * "= ANY (ARRAY(...))": an index scan of each table by session id,
		 * whatever the planner estimates; a join could hash a whole table
		 * for every batch.
		 */
		"dt AS (DELETE FROM @.extension_tokens t WHERE t.session_id OPERATOR(pg_catalog.=) "
		"  ANY (ARRAY(SELECT v.session_id FROM victims v)) RETURNING 1), "
		"dl AS (DELETE FROM @.extension_token_legacy_refresh t WHERE t.session_id OPERATOR(pg_catalog.=) "
		"  ANY (ARRAY(SELECT v.session_id FROM victims v)) RETURNING 1), "
		"ds AS (DELETE FROM @.extension_token_sessions s WHERE s.session_id OPERATOR(pg_catalog.=) "
		"  ANY (ARRAY(SELECT v.session_id FROM victims v)) "
		"  RETURNING s.session_id, s.user_id, s.revoked_at, s.refresh_expires_at, "
		"  s.created_at, s.kind), "
		/* a session that ran out (not revoked) leaves its session_expired event */
		"de AS (INSERT INTO @.extension_token_events (at, event, user_id, session_id, reason) "
		"  SELECT ds.refresh_expires_at, 'session_expired', ds.user_id, ds.session_id, "
		"  'refresh_token_expired' FROM ds WHERE ds.revoked_at IS NULL), "
		/*
		 * and is counted in the rollup of its creation's quarter hour, so
		 * that the issued-per-day figures do not shrink; in bucket order, the
		 * order in which any concurrent cleanup takes the same rows
		 */
		"dr AS (INSERT INTO @.extension_token_issued_rollup AS r (bucket, kind, sessions) "
		"  SELECT pg_catalog.date_bin('15 minutes', ds.created_at, "
		"  '2000-01-01 00:00:00+00'::pg_catalog.timestamptz), ds.kind, pg_catalog.count(*) "
		"  FROM ds GROUP BY 1, 2 ORDER BY 1, 2 "
		"  ON CONFLICT (bucket, kind) DO UPDATE "
		"  SET sessions = r.sessions OPERATOR(pg_catalog.+) excluded.sessions) "
		"SELECT (SELECT pg_catalog.count(*) FROM dt) OPERATOR(pg_catalog.+) "
		"  (SELECT pg_catalog.count(*) FROM dl), (SELECT pg_catalog.count(*) FROM ds), "
		"  (SELECT pg_catalog.count(*) FROM due), "
		"  (SELECT pg_catalog.max(check_after) FROM due)",
		CBP_COUNT, {TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID}
	},
	/*
	 * At most $2 users with no session left and nothing in their rate-limit
	 * logs after $1, in user_id order from $3 (where the last batch ended, as
	 * above; CBP_*).  Columns (CUC_*): users deleted, the last user_id.
	 */
	[ST_CLEANUP_USERS] = {
		"WITH d AS (DELETE FROM @.extension_token_users u USING ("
		"  SELECT x.user_id FROM @.extension_token_users x "
		"  WHERE x.user_id OPERATOR(pg_catalog.>=) $3 "
		"  AND NOT EXISTS (SELECT 1 FROM @.extension_token_sessions s "
		"                  WHERE s.user_id OPERATOR(pg_catalog.=) x.user_id) "
		"  AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(x.issue_log OPERATOR(pg_catalog.||) x.refresh_log "
		"                  OPERATOR(pg_catalog.||) x.device_log) l(t) "
		"                  WHERE l.t OPERATOR(pg_catalog.>) $1) "
		"  ORDER BY x.user_id LIMIT $2 FOR UPDATE SKIP LOCKED) v "
		"  WHERE u.user_id OPERATOR(pg_catalog.=) v.user_id RETURNING u.user_id) "
		"SELECT (SELECT pg_catalog.count(*) FROM d), "
		"  (SELECT d.user_id FROM d ORDER BY d.user_id DESC LIMIT 1)",
		CBP_COUNT, {TIMESTAMPTZOID, INT4OID, TEXTOID}
	},
	/* Device authorizations that ran out before $1, in batches of $2 (CBP_*). */
	[ST_CLEANUP_DEVICES] = {
		"DELETE FROM @.extension_token_devices WHERE device_hash OPERATOR(pg_catalog.=) ANY (ARRAY("
		"  SELECT device_hash FROM @.extension_token_devices "
		"  WHERE expires_at OPERATOR(pg_catalog.<) $1 LIMIT $2 FOR UPDATE SKIP LOCKED))",
		CBP_BATCH, {TIMESTAMPTZOID, INT4OID}
	},
	/*
	 * The figures of extension_token_stats() at $1 (CNP_NOW).  Columns
	 * (CNC_*): issued in the last day, active, revoked, expired.
	 */
	[ST_COUNTS] = {
		"SELECT "
		/* with the sessions the cleanup deleted (to the quarter hour) */
		"  pg_catalog.count(*) FILTER (WHERE s.created_at OPERATOR(pg_catalog.>) ($1 OPERATOR(pg_catalog.-) interval '1 day')) "
		"  OPERATOR(pg_catalog.+) (SELECT CAST(COALESCE(pg_catalog.sum(r.sessions), 0) AS pg_catalog.int8) "
		"    FROM @.extension_token_issued_rollup r "
		"    WHERE r.bucket OPERATOR(pg_catalog.>) ($1 OPERATOR(pg_catalog.-) interval '1 day')), "
		"  pg_catalog.count(*) FILTER (WHERE " SESSION_STATE("s", "$1") " OPERATOR(pg_catalog.=) 'active'), "
		"  pg_catalog.count(*) FILTER (WHERE s.revoked_at IS NOT NULL), "
		"  pg_catalog.count(*) FILTER (WHERE " SESSION_STATE("s", "$1") " OPERATOR(pg_catalog.=) 'expired') "
		"FROM @.extension_token_sessions s",
		CNP_COUNT, {TIMESTAMPTZOID}
	},
	/*
	 * Uses counted in shared memory (usage.c), written in a batch (AUP_*: $1
	 * the sessions, $2 their uses, $3 their last use): the rows locked in
	 * session_id order first (the lock order), then moved on.  A row another
	 * transaction holds locked is skipped, not waited for (an open
	 * transaction must not hold up the worker), and returned: its uses are
	 * kept for the next flush.  A session no longer there has nothing to
	 * record.
	 */
	[ST_ADD_USE] = {
		"WITH v AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
		"  pg_catalog.unnest($3)) AS v(id, n, t)), "
		"l AS (SELECT s.session_id FROM @.extension_token_sessions s "
		"  WHERE s.session_id OPERATOR(pg_catalog.=) ANY ($1) "
		"  ORDER BY s.session_id FOR NO KEY UPDATE SKIP LOCKED), "
		"u AS (UPDATE @.extension_token_sessions s SET "
		"  use_count = s.use_count OPERATOR(pg_catalog.+) v.n, "
		"  last_used_at = GREATEST(s.last_used_at, v.t) "
		"  FROM v, l WHERE s.session_id OPERATOR(pg_catalog.=) v.id "
		"  AND l.session_id OPERATOR(pg_catalog.=) v.id) "
		"SELECT v.id FROM v WHERE NOT EXISTS (SELECT FROM l "
		"  WHERE l.session_id OPERATOR(pg_catalog.=) v.id) "
		"AND EXISTS (SELECT FROM @.extension_token_sessions s "
		"  WHERE s.session_id OPERATOR(pg_catalog.=) v.id)",
		AUP_COUNT, {UUIDARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID}
	},
	/*
	 * Device authorization (RFC 8628): see StorageDevice*() below.  A new
	 * one (DSP_*, in the order of the columns).
	 */
	[ST_DEVICE_START] = {
		"INSERT INTO @.extension_token_devices (device_hash, user_code_hash, name, scopes, "
		"  created_at, expires_at, poll_interval) VALUES ($1, $2, $3, $4, $5, $6, $7)",
		DSP_COUNT, {BYTEAOID, BYTEAOID, TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID}
	},
	/* user $1's failed approvals since $2 (DFP_*): how many, the oldest (DFC_*) */
	[ST_DEVICE_FAILURES] = {
		"SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(u.device_log) AS l(t) "
		"        WHERE l.t OPERATOR(pg_catalog.>) $2), "
		"  (SELECT pg_catalog.min(l.t) FROM pg_catalog.unnest(u.device_log) AS l(t) "
		"   WHERE l.t OPERATOR(pg_catalog.>) $2) "
		"FROM @.extension_token_users u WHERE u.user_id OPERATOR(pg_catalog.=) $1",
		DFP_COUNT, {TEXTOID, TIMESTAMPTZOID}
	},
	/*
	 * approve ($4 'approved', user $2) or deny ($4 'denied') the pending
	 * code of user code hash $1 at $3, by actor $5 (DDP_*); a row (DDC_*)
	 * when it was pending
	 */
	[ST_DEVICE_DECIDE] = {
		"WITH d AS (UPDATE @.extension_token_devices SET status = $4, user_id = $2, decided_at = $3 "
		"WHERE user_code_hash OPERATOR(pg_catalog.=) $1 "
		"AND status OPERATOR(pg_catalog.=) 'pending' AND expires_at OPERATOR(pg_catalog.>) $3 "
		"RETURNING 1), "
		"e AS (INSERT INTO @.extension_token_events (at, event, user_id, actor) "
		"  SELECT $3, 'device_approved', $2, $5 FROM d WHERE $4 OPERATOR(pg_catalog.=) 'approved') "
		"SELECT 1 FROM d",
		DDP_COUNT, {BYTEAOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID}
	},
	/* a failed approval at $2, logged on user $1's row ($3: an hour before $2; DLP_*) */
	[ST_DEVICE_FAILED] = {
		"INSERT INTO @.extension_token_users AS u (user_id, device_log) VALUES ($1, ARRAY[$2]) "
		"ON CONFLICT (user_id) DO UPDATE SET device_log = ARRAY("
		"  SELECT l.t FROM pg_catalog.unnest(u.device_log) AS l(t) "
		"  WHERE l.t OPERATOR(pg_catalog.>) $3 ORDER BY l.t) OPERATOR(pg_catalog.||) $2",
		DLP_COUNT, {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	/* the row of device code hash $1 (DPP_*), locked (DPC_*) */
	[ST_DEVICE_POLL] = {
		"SELECT status, expires_at, user_id, name, scopes, poll_interval "
		"FROM @.extension_token_devices WHERE device_hash OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		DPP_COUNT, {BYTEAOID}
	},
	/* an approved code $1 used up by the issue of session $2 (DCP_*) */
	[ST_DEVICE_CONSUME] = {
		"UPDATE @.extension_token_devices SET status = 'consumed', session_id = $2 "
		"WHERE device_hash OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'approved'",
		DCP_COUNT, {BYTEAOID, UUIDOID}
	},
	/*
	 * An event committed by the revoker's worker (reuse, rate limits; EVP_*,
	 * in the order of the columns).
	 */
	[ST_RECORD_EVENT] = {
		"INSERT INTO @.extension_token_events (at, event, user_id, session_id, actor, reason, token_hash) "
		"VALUES ($1, $2, $3, $4, $5, $6, $7)",
		EVP_COUNT, {TIMESTAMPTZOID, TEXTOID, TEXTOID, UUIDOID, TEXTOID, TEXTOID, BYTEAOID}
	},
	/*
	 * The columns of extension_token_event, in its order (EC_*): the events
	 * of user $1 at or after $2 (EUP_*), of everyone at or after $1 (EAP_*).
	 */
#define EVENT_COLUMNS "e.event_id, e.at, e.event, e.user_id, e.session_id, e.actor, e.reason, e.ip, e.user_agent "
	[ST_EVENTS_USER] = {
		"SELECT " EVENT_COLUMNS "FROM @.extension_token_events e "
		"WHERE e.user_id OPERATOR(pg_catalog.=) $1 AND e.at OPERATOR(pg_catalog.>=) $2 "
		"ORDER BY e.event_id",
		EUP_COUNT, {TEXTOID, TIMESTAMPTZOID}
	},
	[ST_EVENTS_ALL] = {
		"SELECT " EVENT_COLUMNS "FROM @.extension_token_events e "
		"WHERE e.at OPERATOR(pg_catalog.>=) $1 ORDER BY e.event_id",
		EAP_COUNT, {TIMESTAMPTZOID}
	},
	/*
	 * Incident lookup: the events of the session(s) that minted a token of
	 * SHA-256 $1, or of session $2 (ETP_*), found through the (user_id, at)
	 * index.
	 */
	[ST_EVENTS_BY_TOKEN] = {
		"WITH k AS (SELECT x.user_id, x.session_id FROM @.extension_token_events x "
		"  WHERE x.token_hash OPERATOR(pg_catalog.=) $1 AND x.session_id IS NOT NULL "
		"  UNION SELECT s.user_id, s.session_id FROM @.extension_token_sessions s "
		"  WHERE s.session_id OPERATOR(pg_catalog.=) $2) "
		"SELECT " EVENT_COLUMNS "FROM @.extension_token_events e, k "
		"WHERE e.user_id OPERATOR(pg_catalog.=) k.user_id "
		"AND e.session_id OPERATOR(pg_catalog.=) k.session_id ORDER BY e.event_id",
		ETP_COUNT, {BYTEAOID, UUIDOID}
	},
	/* Events older than $1, in batches of $2 (CBP_*). */
	[ST_CLEANUP_EVENTS] = {
		"DELETE FROM @.extension_token_events WHERE event_id OPERATOR(pg_catalog.=) ANY (ARRAY("
		"  SELECT event_id FROM @.extension_token_events "
		"  WHERE at OPERATOR(pg_catalog.<) $1 ORDER BY at LIMIT $2))",
		CBP_BATCH, {TIMESTAMPTZOID, INT4OID}
	},
	/*
	 * One cleanup at a time in a database (see the lock order, above): the
	 * advisory lock of key $1 (CLP_KEY).
	 */
	[ST_CLEANUP_LOCK] = {
		"SELECT pg_catalog.pg_advisory_xact_lock($1)",
		CLP_COUNT, {INT8OID}
	},
	/*
	 * The key ids this database last recorded (SKC_*; no row before the
	 * first record), locked: two checks at once write one event.
	 */
	[ST_SIGNING_READ] = {
		"SELECT algorithm, secret_id, key_id FROM @.extension_token_signing_state FOR UPDATE",
		0, {InvalidOid}
	},
	[ST_SIGNING_READ_NOWAIT] = {
		"SELECT algorithm, secret_id, key_id FROM @.extension_token_signing_state FOR UPDATE NOWAIT",
		0, {InvalidOid}
	},
	/* The first record (SKP_*: $1 to $3 the key ids, $4 now). */
	[ST_SIGNING_SEED] = {
		"INSERT INTO @.extension_token_signing_state (algorithm, secret_id, key_id, recorded_at) "
		"VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
		SKP_AT, {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
	},
	/*
	 * A rotation: its event ($5 the actor, $6 what changed), the row moved
	 * on (SKP_*, as the seed's and these two).
	 */
	[ST_SIGNING_ROTATED] = {
		"WITH e AS (INSERT INTO @.extension_token_events (at, event, actor, reason) "
		"  VALUES ($4, 'secret_rotated', $5, $6)) "
		"UPDATE @.extension_token_signing_state SET algorithm = $1, secret_id = $2, key_id = $3, "
		"  recorded_at = $4",
		SKP_COUNT, {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID}
	},
	/*
	 * Live sessions whose current access token is unexpired at $1 (KCP_NOW),
	 * by signing key (KCC_*).
	 */
	[ST_KEY_COUNTS] = {
		"SELECT s.key_id, pg_catalog.count(*) FROM @.extension_token_sessions s "
		"WHERE " SESSION_STATE("s", "$1") " OPERATOR(pg_catalog.=) 'active' "
		"AND s.kind OPERATOR(pg_catalog.=) 'access' "
		"AND s.expires_at OPERATOR(pg_catalog.>) $1 GROUP BY s.key_id ORDER BY 1",
		KCP_COUNT, {TIMESTAMPTZOID}
	},
};

/* Columns that the direct lookups read, by name (checked at load). */
typedef enum SessionColumn
{
	SC_USER, SC_NAME, SC_ACCESS_HASH, SC_REFRESH_HASH, SC_CREATED, SC_LAST_USED,
	SC_EXPIRES, SC_REFRESH_EXPIRES, SC_ENDS, SC_IDLE, SC_REVOKED, SC_LAST_REFRESH,
	SC_ERROR_AT, SC_RETRY_HASH, SC_RETRY_UNTIL, SC_RETRY_BOX, SC_CLAIMS,
	SC_LIFETIME, SC_SESSION, SC_ACCESS_JTI, SC_SCOPES, SC_KIND, SC_COUNT
} SessionColumn;

static const char *const session_columns[SC_COUNT] = {
	[SC_USER] = "user_id", [SC_NAME] = "name", [SC_ACCESS_HASH] = "access_hash",
	[SC_REFRESH_HASH] = "refresh_hash", [SC_CREATED] = "created_at",
	[SC_LAST_USED] = "last_used_at", [SC_EXPIRES] = "expires_at",
	[SC_REFRESH_EXPIRES] = "refresh_expires_at", [SC_ENDS] = "ends_at",
	[SC_IDLE] = "idle_timeout", [SC_REVOKED] = "revoked_at",
	[SC_LAST_REFRESH] = "last_refresh_at", [SC_ERROR_AT] = "last_refresh_error_at",
	[SC_RETRY_HASH] = "retry_hash", [SC_RETRY_UNTIL] = "retry_until",
	[SC_RETRY_BOX] = "retry_box", [SC_CLAIMS] = "claims",
	[SC_LIFETIME] = "access_lifetime", [SC_SESSION] = "session_id",
	[SC_ACCESS_JTI] = "access_jti", [SC_SCOPES] = "scopes", [SC_KIND] = "kind"
};
/* Their types, which the lookups' reading of the row relies on. */
static const Oid session_column_types[SC_COUNT] = {
	[SC_USER] = TEXTOID, [SC_NAME] = TEXTOID, [SC_ACCESS_HASH] = BYTEAOID,
	[SC_REFRESH_HASH] = BYTEAOID, [SC_CREATED] = TIMESTAMPTZOID,
	[SC_LAST_USED] = TIMESTAMPTZOID, [SC_EXPIRES] = TIMESTAMPTZOID,
	[SC_REFRESH_EXPIRES] = TIMESTAMPTZOID, [SC_ENDS] = TIMESTAMPTZOID,
	[SC_IDLE] = INTERVALOID, [SC_REVOKED] = TIMESTAMPTZOID,
	[SC_LAST_REFRESH] = TIMESTAMPTZOID, [SC_ERROR_AT] = TIMESTAMPTZOID,
	[SC_RETRY_HASH] = BYTEAOID, [SC_RETRY_UNTIL] = TIMESTAMPTZOID,
	[SC_RETRY_BOX] = BYTEAOID, [SC_CLAIMS] = JSONBOID,
	[SC_LIFETIME] = INTERVALOID, [SC_SESSION] = UUIDOID,
	[SC_ACCESS_JTI] = UUIDOID, [SC_SCOPES] = TEXTARRAYOID, [SC_KIND] = TEXTOID
};

enum
{
	TABLE_TOKENS, TABLE_SESSIONS, TABLE_USERS, TABLE_LEGACY, TABLE_EVENTS,
	TABLE_ROLLUP, TABLE_SIGNING, TABLE_COUNT
};
static const char *const table_names[TABLE_COUNT] = {
	"extension_tokens", "extension_token_sessions", "extension_token_users",
	"extension_token_legacy_refresh", "extension_token_events",
	"extension_token_issued_rollup", "extension_token_signing_state"
};

/* What this backend knows of the installed extension. */
static struct StorageExt
{
	bool		valid;
	Oid			owner;
	Oid			schema;
	Oid			tables[TABLE_COUNT];
	AttrNumber	scol[SC_COUNT]; /* extension_token_sessions columns */
	AttrNumber	lcol_session;	/* extension_token_legacy_refresh.session_id */
	char	   *qschema;		/* quoted schema name, in TopMemoryContext */
	bool		guarded;		/* the sessions table's triggers for verdict.c */
	uint32		guard_fn_hash[2];	/* their functions' PROCOID hash values */
	SPIPlanPtr	plans[ST_COUNT];
}			ext;

/*
 * Relcache invalidations seen, of any relation: a load that saw this change
 * while it ran (an invalidation accepted by a lookup of its own) is made
 * again, so that none is lost to it (storage_load).
 */
static uint64 storage_invalidations = 0;

/* Drop what we know when one of our tables changes or goes away. */
static void
storage_relcache_callback(Datum arg, Oid relid)
{
	storage_invalidations++;
	if (!ext.valid)
		return;
	if (relid == InvalidOid)
		ext.valid = false;
	for (int i = 0; i < TABLE_COUNT; i++)
		if (relid == ext.tables[i])
			ext.valid = false;
}

/*
 * Our statements running in this backend: storage_enter()s not yet left.
 * One of them can reach another call of ours (through a trigger an owner
 * added to one of the tables, say), and a load made there must not free a
 * plan the outer call is still executing.  While any runs, storage_forget()
 * puts the plans aside in `storage_retired` (in TopMemoryContext), and the
 * storage_leave() that ends the last one frees them.  An error skips
 * storage_leave(), so the end of the transaction, when none can run, sets
 * the count back to zero (until then, after an error caught by a
 * savepoint, plans are only freed later), and the next call frees them.
 */
static int	storage_depth = 0;
static List *storage_retired = NIL;

static void
storage_free_retired(void)
{
	List	   *plans = storage_retired;
	ListCell   *lc;

	storage_retired = NIL;
	foreach(lc, plans)
		SPI_freeplan((SPIPlanPtr) lfirst(lc));
	list_free(plans);
}

static void
storage_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
		storage_depth = 0;
}

/*
 * A change to the triggers' function (CREATE OR REPLACE) changes no relcache
 * entry of the table: its pg_proc row's invalidation is looked for instead.
 */
static void
storage_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	storage_invalidations++;
	if (ext.valid && (hashvalue == 0 || hashvalue == ext.guard_fn_hash[0] ||
					  hashvalue == ext.guard_fn_hash[1]))
		ext.valid = false;
}

void
StorageInit(void)
{
	CacheRegisterRelcacheCallback(storage_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, storage_proc_callback, (Datum) 0);
	RegisterXactCallback(storage_xact_callback, NULL);
}

/* Forgets the plans and the schema name of a previous load. */
static void
storage_forget(void)
{
	for (int i = 0; i < ST_COUNT; i++)
		if (ext.plans[i] != NULL)
		{
			if (storage_depth > 0)
			{
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				storage_retired = lappend(storage_retired, ext.plans[i]);
				MemoryContextSwitchTo(old);
			}
			else
				SPI_freeplan(ext.plans[i]);
			ext.plans[i] = NULL;
		}
	if (ext.qschema)
	{
		pfree(ext.qschema);
		ext.qschema = NULL;
	}
}

/*
 * Finds the extension in pg_extension: its owner and schema.  The library
 * speaks to the tables of its own version only.
 */
static void
storage_find_extension(bool check_version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Form_pg_extension form;
	bool		isnull;
	Datum		v;
	char	   *version;

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
	v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
	version = isnull ? pstrdup("?") : TextDatumGetCString(v);
	if (check_version && strcmp(version, EXTENSION_TOKENS_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"%s\" is at version %s, but its library is version %s",
						EXTENSION_NAME, version, EXTENSION_TOKENS_VERSION),
				 errhint("Run ALTER EXTENSION %s UPDATE.", EXTENSION_NAME)));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

static AttrNumber
storage_column(int table, const char *name, Oid type)
{
	AttrNumber	att = get_attnum(ext.tables[table], name);
	Oid			found;

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"%s\" is missing",
						name, table_names[table])));
	found = get_atttype(ext.tables[table], att);
	if (found != type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table \"%s\" is of type %s, not %s",
						name, table_names[table], format_type_be(found),
						format_type_be(type)),
				 errhint("The extension's tables are its own: restore the column's type.")));
	return att;
}

/* Finds the tables and the columns the lookups read. */
static void
storage_find_tables(void)
{
	for (int i = 0; i < TABLE_COUNT; i++)
	{
		ext.tables[i] = get_relname_relid(table_names[i], ext.schema);
		if (!OidIsValid(ext.tables[i]))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table \"%s\" of extension \"%s\" is missing",
							table_names[i], EXTENSION_NAME)));
	}
	for (int i = 0; i < SC_COUNT; i++)
		ext.scol[i] = storage_column(TABLE_SESSIONS, session_columns[i],
									 session_column_types[i]);
	ext.lcol_session = storage_column(TABLE_LEGACY, "session_id", UUIDOID);
}

/*
 * Whether function `fn` is our extension_token_session_changed(): of that
 * name in our schema (*named), and still the library's C function of that
 * name.
 */
static bool
storage_is_guard_function(Oid fn, bool *named)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc form;
	bool		ours = false;

	*named = false;
	if (!HeapTupleIsValid(tup))
		return false;
	form = (Form_pg_proc) GETSTRUCT(tup);
	*named = form->pronamespace == ext.schema &&
		strcmp(NameStr(form->proname), "extension_token_session_changed") == 0;
	if (*named && form->prolang == ClanguageId)
	{
		bool		isnull_src;
		bool		isnull_bin;
		Datum		src = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull_src);
		Datum		bin = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &isnull_bin);

		ours = !isnull_src && !isnull_bin &&
			strcmp(TextDatumGetCString(src), "extension_token_session_changed") == 0 &&
			strcmp(TextDatumGetCString(bin), "$libdir/" EXTENSION_NAME) == 0;
	}
	ReleaseSysCache(tup);
	return ours;
}

/*
 * Whether extension_token_sessions has the triggers that note its changes
 * for verdict.c, enabled always and for every column: AFTER UPDATE OR
 * DELETE FOR EACH ROW and BEFORE TRUNCATE, calling our C function
 * extension_token_session_changed().  Disabling or dropping one changes
 * the table's relcache entry, and replacing the function its pg_proc row,
 * and either brings this check round again.
 */
static bool
storage_find_guard(void)
{
	Relation	rel = table_open(ext.tables[TABLE_SESSIONS], AccessShareLock);

	/*
	 * A copy: the lookups below may accept invalidations, and a rebuild of
	 * the table's relcache entry would free the entry's own list.
	 */
	TriggerDesc *td = rel->trigdesc ? CopyTriggerDesc(rel->trigdesc) : NULL;
	bool		rows = false;
	bool		truncate = false;

	ext.guard_fn_hash[0] = ext.guard_fn_hash[1] = 0;
	for (int i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];
		bool		named;
		bool		ours = storage_is_guard_function(t->tgfoid, &named);
		bool		row_kind = TRIGGER_FOR_ROW(t->tgtype) && TRIGGER_FOR_AFTER(t->tgtype) &&
			TRIGGER_FOR_UPDATE(t->tgtype) && TRIGGER_FOR_DELETE(t->tgtype);
		bool		truncate_kind = !TRIGGER_FOR_ROW(t->tgtype) &&
			TRIGGER_FOR_TRUNCATE(t->tgtype);

		/*
		 * Its pg_proc row is watched even while it is not ours (replaced),
		 * so that its restoration brings verdicts back.
		 */
		if (named && (row_kind || truncate_kind))
			ext.guard_fn_hash[row_kind ? 0 : 1] =
				GetSysCacheHashValue1(PROCOID, ObjectIdGetDatum(t->tgfoid));
		if (!ours || t->tgenabled != TRIGGER_FIRES_ALWAYS || t->tgqual != NULL ||
			t->tgnattr != 0)
			continue;
		if (row_kind)
			rows = true;
		if (truncate_kind)
			truncate = true;
	}
	if (td != NULL)
		FreeTriggerDesc(td);
	table_close(rel, AccessShareLock);
	return rows && truncate;
}

/*
 * Loads what this backend knows of the extension, again while an
 * invalidation arrived during the load (which could have been about a
 * definition it had already read); after three tries that all saw one, it
 * keeps what it read but counts the triggers as absent (no verdicts: the
 * safe side) and loads again at the next call.
 */
static void
storage_load(void)
{
	if (ext.valid)
		return;
	for (int tries = 1;; tries++)
	{
		uint64		seen = storage_invalidations;
		struct StorageExt before = ext;
		char	   *qschema;

		/*
		 * All or nothing: a load that fails (a table changed under a call of
		 * ours that is still running, whose nested call's error a savepoint
		 * caught) leaves what the running call uses as it was.
		 */
		PG_TRY();
		{
			storage_find_extension(true);
			storage_find_tables();
			ext.guarded = storage_find_guard();
			qschema = MemoryContextStrdup(TopMemoryContext,
										  quote_identifier(get_namespace_name(ext.schema)));
		}
		PG_CATCH();
		{
			ext = before;
			PG_RE_THROW();
		}
		PG_END_TRY();
		storage_forget();
		ext.qschema = qschema;
		if (storage_invalidations == seen)
		{
			ext.valid = true;
			return;
		}
		if (tries == 3)
		{
			ext.guarded = false;
			return;
		}
	}
}

bool
StorageSessionsGuarded(void)
{
	storage_load();
	return ext.guarded;
}

/* Raises unless the installed extension is of this library's version. */
void
StorageCheckVersion(void)
{
	storage_load();
}

/*
 * The extension's owner and schema need no version match: the pg_cron
 * scheduling asks for them while an upgrade script runs.
 */
Oid
StorageExtensionOwner(void)
{
	if (!ext.valid)
		storage_find_extension(false);
	return ext.owner;
}

Oid
StorageExtensionSchema(void)
{
	if (!ext.valid)
		storage_find_extension(false);
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

		if (ext.qschema == NULL)	/* never loaded: cannot happen */
			elog(ERROR, "extension_tokens: statement prepared before the extension was loaded");

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
} StorageCall;

static void
storage_enter(StorageCall *call)
{
	storage_load();
	GetUserIdAndSecContext(&call->save_user, &call->save_sec);
	SetUserIdAndSecContext(ext.owner,
						   call->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "extension_tokens: SPI_connect failed");
	storage_depth++;
}

static void
storage_leave(StorageCall *call)
{
	if (storage_depth > 0)
		storage_depth--;
	SPI_finish();
	SetUserIdAndSecContext(call->save_user, call->save_sec);
	if (storage_depth == 0 && storage_retired != NIL)
		storage_free_retired();
}

/*
 * Raises unless statement `id` ran (rc, SPI's result) with `ncols` result
 * columns: the count of its result columns' enum, or NO_RESULT for a
 * statement that returns no rows.  Its columns are then read by those names.
 */
static int
storage_check(StatementId id, int rc, int ncols)
{
	int			natts;

	if (rc < 0)
		elog(ERROR, "extension_tokens: statement %d failed: %s",
			 (int) id, SPI_result_code_string(rc));
	natts = SPI_tuptable != NULL ? SPI_tuptable->tupdesc->natts : NO_RESULT;
	if (natts != ncols)
		elog(ERROR, "extension_tokens: statement %d returned %d columns, not %d",
			 (int) id, natts, ncols);
	return rc;
}

/* Runs statement `id` and checks its result (storage_check). */
static int
storage_exec(StatementId id, Datum *values, const char *nulls, bool read_only,
			 int ncols)
{
	return storage_check(id, SPI_execute_plan(storage_plan(id), values, nulls, read_only, 0),
						 ncols);
}

/* Parameter `pos` ($pos: a parameter enum's name) in values[] or nulls[]. */
#define ARG(array, pos) ((array)[(pos) - 1])

static Datum
hash_datum(const unsigned char *hash)
{
	bytea	   *b = palloc(VARHDRSZ + TOKEN_HASH_LENGTH);

	SET_VARSIZE(b, VARHDRSZ + TOKEN_HASH_LENGTH);
	memcpy(VARDATA(b), hash, TOKEN_HASH_LENGTH);
	return PointerGetDatum(b);
}

static Datum
bytes_datum(const unsigned char *bytes, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), bytes, len);
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

/* Column `col` (1-based: a result enum's name) of the first result row. */
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

/* The calling role's name: an event's actor (before storage_enter()). */
static Datum
actor_datum(void)
{
	char	   *name = GetUserNameFromId(GetUserId(), true);

	return CStringGetTextDatum(name ? name : "?");
}

/*
 * NOTIFY extension_tokens with {"event", "session_id", "user_id",
 * "reason"}: sent at commit, never if the transaction rolls back.  Never a
 * token or a hash.
 */
void
StorageNotify(const char *event, const pg_uuid_t *session_id, const char *user_id,
			  const char *reason)
{
	StringInfoData payload;

	initStringInfo(&payload);
	appendStringInfoString(&payload, "{\"event\":");
	escape_json(&payload, event);
	appendStringInfoString(&payload, ",\"session_id\":");
	if (session_id)
		escape_json(&payload, DatumGetCString(DirectFunctionCall1(uuid_out,
																  UUIDPGetDatum((pg_uuid_t *) session_id))));
	else
		appendStringInfoString(&payload, "null");
	appendStringInfoString(&payload, ",\"user_id\":");
	if (user_id)
		escape_json(&payload, user_id);
	else
		appendStringInfoString(&payload, "null");
	appendStringInfoString(&payload, ",\"reason\":");
	if (reason)
		escape_json(&payload, reason);
	else
		appendStringInfoString(&payload, "null");
	appendStringInfoChar(&payload, '}');
	Async_Notify("extension_tokens", payload.data);
	pfree(payload.data);
}

/* A notification per session that a REVOKE_EVENTS statement revoked. */
static void
notify_revoked(const char *reason)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		sid = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
										RVC_SESSION, &isnull);
		Datum		user;

		if (isnull)
			continue;
		user = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, RVC_USER, &isnull);
		StorageNotify("revoked", DatumGetUUIDP(sid), isnull ? NULL : TextDatumGetCString(user),
					  reason);
	}
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

/* A row looked up directly in a unique index. */
typedef struct DirectLookup
{
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		found;			/* slot holds the row */
} DirectLookup;

/*
 * Opens table `table` and finds the row whose primary key is `key` (compared
 * with `eq`; with `eq2` and `key2` too when the key has two columns), under
 * `snapshot`.  The lookup is left open for the caller to read `slot`;
 * lookup_end() closes it.
 */
static void
lookup_begin(DirectLookup *lk, int table, RegProcedure eq, Datum key,
			 RegProcedure eq2, Datum key2, Snapshot snapshot)
{
	ScanKeyData skey[2];
	int			nkeys = OidIsValid(eq2) ? 2 : 1;
	Oid			index;

	/*
	 * The lock may accept invalidations: a concurrent ALTER TABLE that
	 * committed since the load (a column of another type, whose values the
	 * rows now hold) leaves what the load found out of date, and reading a
	 * row by it crashed the server.  So the load is made again, under the
	 * lock, which keeps the definition as it is until the statement ends.
	 */
	for (int tries = 1;; tries++)
	{
		Oid			relid = ext.tables[table];

		lk->rel = table_open(relid, AccessShareLock);
		if (ext.valid)
			break;
		storage_load();
		if (ext.tables[table] == relid)
			break;
		/* the table itself was replaced: lock the new one */
		table_close(lk->rel, AccessShareLock);
		if (tries == 3)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" of extension \"%s\" is being replaced",
							table_names[table], EXTENSION_NAME)));
	}
	index = ET_PRIMARY_KEY_INDEX(lk->rel);
	if (!OidIsValid(index))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key",
						RelationGetRelationName(lk->rel))));
	lk->index = index_open(index, AccessShareLock);
	if (IndexRelationGetNumberOfKeyAttributes(lk->index) != nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the primary key of table \"%s\" is not of %d columns",
						RelationGetRelationName(lk->rel), nkeys)));
	ScanKeyInit(&skey[0], 1, BTEqualStrategyNumber, eq, key);
	if (nkeys == 2)
		ScanKeyInit(&skey[1], 2, BTEqualStrategyNumber, eq2, key2);
	lk->slot = table_slot_create(lk->rel, NULL);
	lk->scan = ET_INDEX_BEGINSCAN(lk->rel, lk->index, snapshot, nkeys, 0);
	index_rescan(lk->scan, skey, nkeys, NULL, 0);
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
slot_ts(TupleTableSlot *slot, SessionColumn col)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, ext.scol[col], &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* A 32-byte hash column into `out`; false when NULL or of another length. */
static bool
slot_hash(TupleTableSlot *slot, SessionColumn col, unsigned char *out)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, ext.scol[col], &isnull);
	bytea	   *b;

	if (isnull)
		return false;
	b = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(b) != TOKEN_HASH_LENGTH)
		return false;
	memcpy(out, VARDATA_ANY(b), TOKEN_HASH_LENGTH);
	return true;
}

/* An interval in microseconds, as the session rule counts it. */
static int64
interval_usecs(Interval *iv)
{
	int64		usecs;

	if (pg_mul_s64_overflow((int64) iv->month * DAYS_PER_MONTH + iv->day,
							USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, iv->time, &usecs))
		usecs = PG_INT64_MAX;
	return usecs;
}

/* The session row in `slot` into *out (which the caller zeroed). */
static void
session_from_slot(TupleTableSlot *slot, bool full, SessionRow *out)
{
	bool		isnull;
	Datum		d;

	out->found = true;
	out->user_id = TextDatumGetCString(slot_getattr(slot, ext.scol[SC_USER], &isnull));
	out->name = TextDatumGetCString(slot_getattr(slot, ext.scol[SC_NAME], &isnull));
	if (!slot_hash(slot, SC_ACCESS_HASH, out->access_hash) ||
		!slot_hash(slot, SC_REFRESH_HASH, out->refresh_hash))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("session row of extension \"%s\" has no valid token hashes",
						EXTENSION_NAME)));
	d = slot_getattr(slot, ext.scol[SC_ACCESS_JTI], &isnull);
	out->has_jti = !isnull;
	if (!isnull)
		memcpy(out->access_jti, DatumGetUUIDP(d)->data, TOKEN_UUID_LENGTH);
	out->created_at = slot_ts(slot, SC_CREATED);
	out->last_used_at = slot_ts(slot, SC_LAST_USED);
	out->expires_at = slot_ts(slot, SC_EXPIRES);
	out->refresh_expires_at = slot_ts(slot, SC_REFRESH_EXPIRES);
	d = slot_getattr(slot, ext.scol[SC_ENDS], &isnull);
	out->ends_at = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	d = slot_getattr(slot, ext.scol[SC_IDLE], &isnull);
	out->idle_timeout_us = isnull ? 0 : Max(interval_usecs(DatumGetIntervalP(d)), 0);
	(void) slot_getattr(slot, ext.scol[SC_REVOKED], &isnull);
	out->revoked = !isnull;
	out->last_refresh_at = slot_ts(slot, SC_LAST_REFRESH);
	out->last_refresh_error_at = slot_ts(slot, SC_ERROR_AT);
	d = slot_getattr(slot, ext.scol[SC_SCOPES], &isnull);
	out->scopes = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
	d = slot_getattr(slot, ext.scol[SC_KIND], &isnull);
	out->api_key = !isnull && strcmp(TextDatumGetCString(d), "api_key") == 0;
	if (!full)
		return;
	out->has_retry = slot_hash(slot, SC_RETRY_HASH, out->retry_hash);
	out->retry_until = slot_ts(slot, SC_RETRY_UNTIL);
	d = slot_getattr(slot, ext.scol[SC_RETRY_BOX], &isnull);
	out->retry_box = isnull ? NULL : DatumGetByteaPCopy(d);
	d = slot_getattr(slot, ext.scol[SC_CLAIMS], &isnull);
	out->claims_json = isnull ? NULL
		: JsonbToCString(NULL, &DatumGetJsonbP(d)->root, VARSIZE_ANY(DatumGetPointer(d)));
	d = slot_getattr(slot, ext.scol[SC_LIFETIME], &isnull);
	out->access_lifetime = isnull ? 0 : interval_usecs(DatumGetIntervalP(d)) / USECS_PER_SEC;
}

/*
 * The session's row, looked up directly in the primary key index rather
 * than through SPI: validation's one read, on every request, under a fresh
 * snapshot (see statement_snapshot()).  Like the SPI statements, this reads
 * the table as its owner would: no privilege or row security check applies
 * to the caller, who has none on the table.  `full` adds what refresh needs.
 */
void
StorageLookupSession(const pg_uuid_t *session_id, bool full, SessionRow *out)
{
	Snapshot	snapshot;
	DirectLookup lk;

	memset(out, 0, sizeof(*out));
	storage_load();

	/*
	 * A revocation queued for the worker (revoker.c) stays pending until
	 * its commit is visible, and then leaves the queue.  Asked before the
	 * snapshot is taken: asked after, the row could be read from before the
	 * commit and the queue after it, and neither would say revoked.
	 */
	out->revocation_pending = RevokerPending(session_id);
	snapshot = statement_snapshot();
	lookup_begin(&lk, TABLE_SESSIONS, F_UUID_EQ, uuid_datum(session_id),
				 InvalidOid, (Datum) 0, snapshot);
	if (lk.found)
	{
		out->session_id = *session_id;
		session_from_slot(lk.slot, full, out);
	}
	lookup_end(&lk);
	UnregisterSnapshot(snapshot);
}

/*
 * The session a well-formed refresh token belongs to, read in full into
 * *row under one snapshot: the session whose current refresh token it is,
 * or the session of an exchanged one (recorded in extension_tokens).  A
 * token made since 1.2 names its session; one made before is found by its
 * hash in extension_token_legacy_refresh.  False (and *row not found) when
 * neither: a token never issued, however well-formed.
 */
bool
StorageFindRefresh(const char *token, size_t len, const unsigned char *hash,
				   SessionRow *row)
{
	Snapshot	snapshot;
	DirectLookup lk;
	pg_uuid_t	sid;
	bool		found;
	Datum		key;

	memset(row, 0, sizeof(*row));
	storage_load();
	key = hash_datum(hash);
	if (len == REFRESH_TOKEN_LENGTH)
		found = token_refresh_session(token, len, sid.data);
	else
	{
		bool		isnull;

		snapshot = statement_snapshot();
		lookup_begin(&lk, TABLE_LEGACY, F_BYTEAEQ, key, InvalidOid, (Datum) 0, snapshot);
		found = lk.found;
		if (found)
			memcpy(&sid, DatumGetUUIDP(slot_getattr(lk.slot, ext.lcol_session, &isnull)),
				   sizeof(pg_uuid_t));
		lookup_end(&lk);
		UnregisterSnapshot(snapshot);
	}
	/* before the snapshot: see StorageLookupSession() */
	if (found)
		row->revocation_pending = RevokerPending(&sid);
	snapshot = statement_snapshot();
	if (found)
	{
		lookup_begin(&lk, TABLE_SESSIONS, F_UUID_EQ, uuid_datum(&sid),
					 InvalidOid, (Datum) 0, snapshot);
		if (lk.found)
		{
			row->session_id = sid;
			session_from_slot(lk.slot, true, row);
		}
		lookup_end(&lk);
		found = row->found;
	}
	if (found && memcmp(row->refresh_hash, hash, TOKEN_HASH_LENGTH) != 0)
	{
		/* not its current token: one it exchanged, or none of its own */
		lookup_begin(&lk, TABLE_TOKENS, F_UUID_EQ, uuid_datum(&sid), F_BYTEAEQ, key,
					 snapshot);
		found = lk.found;
		lookup_end(&lk);
	}
	UnregisterSnapshot(snapshot);
	if (!found)
		row->found = false;
	return found;
}

void
StorageRecordRefreshError(pg_uuid_t session_id, TimestampTz now, const char *error)
{
	StorageCall call;
	Datum		values[REP_COUNT];

	ARG(values, REP_SESSION) = uuid_datum(&session_id);
	ARG(values, REP_AT) = TimestampTzGetDatum(now);
	ARG(values, REP_ERROR) = CStringGetTextDatum(error);
	storage_enter(&call);
	storage_exec(ST_RECORD_REFRESH_ERROR, values, NULL, false, NO_RESULT);
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
 * Deletes, batch by batch, the sessions (with their exchanged tokens and
 * legacy refresh hashes) that were revoked or ran out before `dead_before`,
 * then users with nothing left, device authorizations that ran out before
 * `dead_before`, and events older than `events_before` (0: none), pausing
 * delay_ms between batches.  Returns the rows deleted from all of these
 * tables.
 */
uint64
StorageCleanup(TimestampTz dead_before, TimestampTz events_before, int batch_size,
			   int delay_ms)
{
	StorageCall call;
	Datum		lock[CLP_COUNT];
	Datum		values[CBP_COUNT];
	uint64		total = 0;

	/* "et_clean" in ASCII: the advisory lock of our cleanup */
	ARG(lock, CLP_KEY) = Int64GetDatum(INT64CONST(0x65745f636c65616e));
	ARG(values, CBP_BATCH) = Int32GetDatum(batch_size);
	storage_enter(&call);
	storage_exec(ST_CLEANUP_LOCK, lock, NULL, false, CLC_NCOLS);
	ARG(values, CBP_BEFORE) = TimestampTzGetDatum(dead_before);
	ARG(values, CBP_AFTER) = TimestampTzGetDatum(DT_NOBEGIN);	/* -infinity */
	for (;;)
	{
		bool		isnull;
		int64		tokens,
					sessions,
					looked_at;
		Datum		last;
		TimestampTz start = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		storage_exec(ST_CLEANUP_SESSIONS, values, NULL, false, CSC_NCOLS);
		tokens = DatumGetInt64(column(CSC_TOKENS, &isnull));
		sessions = DatumGetInt64(column(CSC_SESSIONS, &isnull));
		looked_at = DatumGetInt64(column(CSC_LOOKED_AT, &isnull));
		last = column(CSC_LAST, &isnull);
		total += tokens + sessions;
		if (looked_at < batch_size || isnull)
			break;
		ARG(values, CBP_AFTER) = last;
		cleanup_pause(delay_ms, start);
	}
	/* rate-limit logs are done with after an hour */
	ARG(values, CBP_BEFORE) = TimestampTzGetDatum(GetCurrentTimestamp() - USECS_PER_HOUR);
	ARG(values, CBP_AFTER) = CStringGetTextDatum("");	/* sorts before every user id */
	for (;;)
	{
		bool		isnull;
		int64		users;
		Datum		last;
		TimestampTz start = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		storage_exec(ST_CLEANUP_USERS, values, NULL, false, CUC_NCOLS);
		users = DatumGetInt64(column(CUC_USERS, &isnull));
		last = column(CUC_LAST, &isnull);
		total += users;
		if (users < batch_size || isnull)
			break;
		/* copied out of SPI's memory, which the next statement frees */
		ARG(values, CBP_AFTER) = PointerGetDatum(DatumGetTextPCopy(last));
		cleanup_pause(delay_ms, start);
	}
	/* device authorizations past their lifetime and the retention */
	ARG(values, CBP_BEFORE) = TimestampTzGetDatum(dead_before);
	for (;;)
	{
		TimestampTz start = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		storage_exec(ST_CLEANUP_DEVICES, values, NULL, false, NO_RESULT);
		total += SPI_processed;
		if (SPI_processed < (uint64) batch_size)
			break;
		cleanup_pause(delay_ms, start);
	}
	/* events past extension_tokens.event_retention (0: none) */
	ARG(values, CBP_BEFORE) = TimestampTzGetDatum(events_before);
	for (; events_before != 0;)
	{
		TimestampTz start = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		storage_exec(ST_CLEANUP_EVENTS, values, NULL, false, NO_RESULT);
		total += SPI_processed;
		if (SPI_processed < (uint64) batch_size)
			break;
		cleanup_pause(delay_ms, start);
	}
	storage_leave(&call);
	return total;
}

void
StorageCounts(TimestampTz now, StoredCounts *out)
{
	StorageCall call;
	Datum		values[CNP_COUNT];
	bool		isnull;

	ARG(values, CNP_NOW) = TimestampTzGetDatum(now);
	storage_enter(&call);
	storage_exec(ST_COUNTS, values, NULL, true, CNC_NCOLS);
	out->issued_24h = DatumGetInt64(column(CNC_ISSUED_24H, &isnull));
	out->sessions_active = DatumGetInt64(column(CNC_ACTIVE, &isnull));
	out->sessions_revoked = DatumGetInt64(column(CNC_REVOKED, &isnull));
	out->sessions_expired = DatumGetInt64(column(CNC_EXPIRED, &isnull));
	storage_leave(&call);
}

void
StorageTouchSession(const pg_uuid_t *session_id, TimestampTz now, TimestampTz older_than)
{
	StorageCall call;
	Datum		values[TP_COUNT];

	ARG(values, TP_SESSION) = uuid_datum(session_id);
	ARG(values, TP_NOW) = TimestampTzGetDatum(now);
	ARG(values, TP_OLDER_THAN) = TimestampTzGetDatum(older_than);
	storage_enter(&call);
	storage_exec(ST_TOUCH, values, NULL, false, NO_RESULT);
	storage_leave(&call);
}

/* The rate slot's answer, the first columns of issue and refresh (RATE_*). */
static bool
rate_answer(TimestampTz *retry_at)
{
	bool		isnull;
	bool		allowed;

	if (SPI_processed != 1)
		elog(ERROR, "extension_tokens: rate limit row missing");
	allowed = DatumGetBool(column(RATE_OK, &isnull)) && !isnull;
	*retry_at = column_ts(RATE_OLDEST);
	if (*retry_at != 0)
		*retry_at += USECS_PER_HOUR;
	return allowed;
}

/*
 * Writes a new session (one row), in one statement with the user's rate
 * slot, then, when max_sessions > 0, revokes the user's live sessions beyond
 * the newest max_sessions - 1 others (*revoked_sessions says how many).
 * False, with nothing written, when the rate limit refuses; *retry_at then
 * says when the oldest entry in the window leaves it (0 if unknown).
 */
bool
StorageIssue(const NewPair *pair, int rate_limit, int max_sessions,
			 TimestampTz *retry_at, int *revoked_sessions)
{
	StorageCall call;
	Datum		values[IP_COUNT];
	char		nulls[IP_COUNT + 1];
	bool		allowed;

	memset(nulls, ' ', IP_COUNT);
	nulls[IP_COUNT] = '\0';
	ARG(values, IP_SESSION) = uuid_datum(&pair->session_id);
	ARG(values, IP_USER) = CStringGetTextDatum(pair->user_id);
	ARG(values, IP_NAME) = CStringGetTextDatum(pair->name);
	ARG(values, IP_CLAIMS) = (Datum) 0;
	if (pair->claims_json)
		ARG(values, IP_CLAIMS) = DirectFunctionCall1(jsonb_in,
													 CStringGetDatum(pair->claims_json));
	else
		ARG(nulls, IP_CLAIMS) = 'n';
	ARG(values, IP_LIFETIME) = seconds_interval(pair->access_lifetime);
	ARG(values, IP_NOW) = TimestampTzGetDatum(pair->created_at);
	ARG(values, IP_ACCESS_EXPIRES) = TimestampTzGetDatum(pair->expires_at);
	ARG(values, IP_REFRESH_EXPIRES) = TimestampTzGetDatum(pair->refresh_expires_at);
	ARG(values, IP_ACCESS_HASH) = hash_datum(pair->access_hash);
	ARG(values, IP_REFRESH_HASH) = hash_datum(pair->refresh_hash);
	ARG(values, IP_HOUR_AGO) = TimestampTzGetDatum(pair->created_at - USECS_PER_HOUR);
	ARG(values, IP_LIMIT) = Int32GetDatum(rate_limit);
	ARG(values, IP_ENDS_AT) = TimestampTzGetDatum(pair->ends_at);
	ARG(values, IP_IDLE_TIMEOUT) = (Datum) 0;
	if (pair->idle_timeout > 0)
		ARG(values, IP_IDLE_TIMEOUT) = seconds_interval(pair->idle_timeout);
	else
		ARG(nulls, IP_IDLE_TIMEOUT) = 'n';
	ARG(values, IP_ACCESS_JTI) = uuid_datum((const pg_uuid_t *) pair->access_jti);
	ARG(values, IP_KEY_ID) = CStringGetTextDatum(pair->key_id);
	if (pair->key_id[0] == '\0')
		ARG(nulls, IP_KEY_ID) = 'n';	/* an API key: nothing signed */
	ARG(values, IP_SCOPES) = pair->scopes;
	if (pair->scopes == (Datum) 0)
		ARG(nulls, IP_SCOPES) = 'n';
	ARG(values, IP_USER_AGENT) = pair->user_agent ?
		CStringGetTextDatum(pair->user_agent) : (Datum) 0;
	if (pair->user_agent == NULL)
		ARG(nulls, IP_USER_AGENT) = 'n';
	ARG(values, IP_IP) = pair->ip ? CStringGetTextDatum(pair->ip) : (Datum) 0;
	if (pair->ip == NULL)
		ARG(nulls, IP_IP) = 'n';
	ARG(values, IP_KIND) = CStringGetTextDatum(pair->api_key ? "api_key" : "access");
	ARG(values, IP_LOG) = BoolGetDatum(pair->api_key || et_event_log == EVENT_LOG_ALL);
	ARG(values, IP_ACTOR) = actor_datum();

	*revoked_sessions = 0;
	storage_enter(&call);
	if (rate_limit <= 0 && max_sessions <= 0 && !pair->api_key)
	{
		storage_exec(ST_ISSUE_BARE, values, nulls, false, NO_RESULT);
		Assert(SPI_processed == 1);
		allowed = true;
		*retry_at = 0;
	}
	else
	{
		storage_exec(rate_limit > 0 ? ST_ISSUE : ST_ISSUE_NO_LIMIT, values, nulls, false,
					 IC_NCOLS);
		allowed = rate_answer(retry_at);
	}
	if (allowed && pair->api_key)
	{
		/*
		 * Keys have a limit of their own, max_sessions here, which refuses:
		 * revoking a key that a CI job uses would be worse than refusing a
		 * new one.  Counted after the statement above waited for the user's
		 * row: its snapshot sees every key created before.
		 */
		Datum		count[CKP_COUNT];
		bool		isnull;

		ARG(count, CKP_USER) = ARG(values, IP_USER);
		ARG(count, CKP_NOW) = ARG(values, IP_NOW);
		storage_exec(ST_COUNT_KEYS, count, NULL, false, CKC_NCOLS);
		if (max_sessions > 0 && DatumGetInt64(column(CKC_LIVE, &isnull)) > max_sessions)
			*revoked_sessions = -1;
	}
	else if (allowed && max_sessions > 0)
	{
		Datum		limit[OLP_COUNT];

		ARG(limit, OLP_USER) = ARG(values, IP_USER);
		ARG(limit, OLP_AT) = ARG(values, IP_NOW);
		ARG(limit, OLP_REASON) = CStringGetTextDatum("session_limit");
		ARG(limit, OLP_KEEP) = Int32GetDatum(max_sessions - 1);
		ARG(limit, OLP_NEW_SESSION) = ARG(values, IP_SESSION);
		ARG(limit, OLP_ACTOR) = ARG(values, IP_ACTOR);
		storage_exec(ST_REVOKE_OVER_LIMIT, limit, NULL, false, RVC_NCOLS);
		*revoked_sessions = (int) Min(SPI_processed, (uint64) PG_INT32_MAX);
		notify_revoked("session_limit");
	}
	storage_leave(&call);
	if (*revoked_sessions > 0)
		ReplicationNoteRevocation();
	return allowed;
}

/*
 * Exchanges refresh token `hash` for the new pair, in one statement: rate
 * slot, the session's row moved on to the new pair (with the retry window's
 * sealed successor), the exchanged token recorded.  REFRESH_LOST when `hash`
 * was no longer the session's current refresh token to exchange: exchanged,
 * revoked or expired by someone else since the lookup.  The rate slot may
 * then have been taken all the same: the caller must raise an error on
 * REFRESH_LOST, which undoes it.
 */
RefreshOutcome
StorageRefresh(const unsigned char *hash, const NewPair *pair, int rate_limit,
			   const unsigned char *box, size_t box_len, TimestampTz retry_until,
			   TimestampTz *retry_at)
{
	StorageCall call;
	Datum		values[RP_COUNT];
	char		nulls[RP_COUNT + 1];
	RefreshOutcome outcome;
	bool		isnull;

	memset(nulls, ' ', RP_COUNT);
	nulls[RP_COUNT] = '\0';
	ARG(values, RP_SESSION) = uuid_datum(&pair->session_id);
	ARG(values, RP_USER) = CStringGetTextDatum(pair->user_id);
	ARG(values, RP_OLD_HASH) = hash_datum(hash);
	ARG(values, RP_NOW) = TimestampTzGetDatum(pair->created_at);
	ARG(values, RP_ACCESS_EXPIRES) = TimestampTzGetDatum(pair->expires_at);
	ARG(values, RP_REFRESH_EXPIRES) = TimestampTzGetDatum(pair->refresh_expires_at);
	ARG(values, RP_ACCESS_HASH) = hash_datum(pair->access_hash);
	ARG(values, RP_REFRESH_HASH) = hash_datum(pair->refresh_hash);
	ARG(values, RP_HOUR_AGO) = TimestampTzGetDatum(pair->created_at - USECS_PER_HOUR);
	ARG(values, RP_LIMIT) = Int32GetDatum(rate_limit);
	ARG(values, RP_RETRY_UNTIL) = TimestampTzGetDatum(retry_until);
	ARG(values, RP_RETRY_BOX) = (Datum) 0;
	if (box)
		ARG(values, RP_RETRY_BOX) = bytes_datum(box, box_len);
	else
		ARG(nulls, RP_RETRY_BOX) = 'n';
	ARG(values, RP_ACCESS_JTI) = uuid_datum((const pg_uuid_t *) pair->access_jti);
	ARG(values, RP_KEY_ID) = CStringGetTextDatum(pair->key_id);
	ARG(values, RP_USER_AGENT) = pair->user_agent ?
		CStringGetTextDatum(pair->user_agent) : (Datum) 0;
	if (pair->user_agent == NULL)
		ARG(nulls, RP_USER_AGENT) = 'n';
	ARG(values, RP_IP) = pair->ip ? CStringGetTextDatum(pair->ip) : (Datum) 0;
	if (pair->ip == NULL)
		ARG(nulls, RP_IP) = 'n';
	ARG(values, RP_LOG) = BoolGetDatum(et_event_log == EVENT_LOG_ALL);
	ARG(values, RP_ACTOR) = actor_datum();

	storage_enter(&call);
	storage_exec(rate_limit > 0 ? ST_REFRESH : ST_REFRESH_NO_LIMIT, values, nulls,
				 false, RC_NCOLS);
	if (!rate_answer(retry_at))
		outcome = REFRESH_RATE_LIMITED;
	else if (DatumGetBool(column(RC_EXCHANGED, &isnull)) && !isnull)
		outcome = REFRESH_DONE;
	else
	{
		outcome = REFRESH_LOST;
		if (rate_limit > 0)
		{
			Datum		undo[UNP_COUNT];

			ARG(undo, UNP_USER) = ARG(values, RP_USER);
			ARG(undo, UNP_ENTRY) = ARG(values, RP_NOW);
			storage_exec(ST_RATE_UNDO, undo, NULL, false, NO_RESULT);
		}
	}
	storage_leave(&call);
	return outcome;
}

uint64
StorageRevokeSession(pg_uuid_t session_id, TimestampTz now, const char *reason)
{
	StorageCall call;
	Datum		values[RSP_COUNT];
	uint64		n;

	ARG(values, RSP_SESSION) = uuid_datum(&session_id);
	ARG(values, RSP_AT) = TimestampTzGetDatum(now);
	ARG(values, RSP_REASON) = CStringGetTextDatum(reason);
	ARG(values, RSP_ACTOR) = actor_datum();
	storage_enter(&call);
	storage_exec(ST_REVOKE_SESSION, values, NULL, false, RVC_NCOLS);
	n = SPI_processed;
	notify_revoked(reason);
	storage_leave(&call);
	if (n > 0)
		ReplicationNoteRevocation();
	return n;
}

/* Revokes every live session of the user but `except` (may be NULL). */
uint64
StorageRevokeUser(const char *user_id, const pg_uuid_t *except, TimestampTz now,
				  const char *reason)
{
	StorageCall call;
	Datum		values[RUP_COUNT];
	char		nulls[RUP_COUNT];
	uint64		n;

	memset(nulls, ' ', sizeof(nulls));
	ARG(values, RUP_ACTOR) = actor_datum();
	ARG(values, RUP_USER) = CStringGetTextDatum(user_id);
	ARG(values, RUP_AT) = TimestampTzGetDatum(now);
	ARG(values, RUP_REASON) = CStringGetTextDatum(reason);
	ARG(values, RUP_EXCEPT) = (Datum) 0;
	if (except)
		ARG(values, RUP_EXCEPT) = uuid_datum(except);
	else
		ARG(nulls, RUP_EXCEPT) = 'n';
	storage_enter(&call);
	storage_exec(ST_REVOKE_USER, values, nulls, false, RVC_NCOLS);
	n = SPI_processed;
	notify_revoked(reason);
	storage_leave(&call);
	if (n > 0)
		ReplicationNoteRevocation();
	return n;
}

/*
 * Fills a materialized SRF result, of the type extension_token_session,
 * with the user's sessions.
 */
void
StorageListSessions(const char *user_id, TimestampTz now, ReturnSetInfo *rsinfo)
{
	StorageCall call;
	Datum		values[SLP_COUNT];

	if (rsinfo->setDesc->natts != SLC_NCOLS)
		elog(ERROR, "extension_tokens: extension_token_session has %d columns, not %d",
			 rsinfo->setDesc->natts, SLC_NCOLS);
	ARG(values, SLP_USER) = CStringGetTextDatum(user_id);
	ARG(values, SLP_NOW) = TimestampTzGetDatum(now);
	storage_enter(&call);
	storage_exec(ST_LIST, values, NULL, true, SLC_NCOLS);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		row[SLC_NCOLS];
		bool		isnull[SLC_NCOLS];
		MemoryContext old;

		for (int c = 0; c < SLC_NCOLS; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
								   c + 1, &isnull[c]);
		/* a revocation queued but not yet committed counts (revoker.c) */
		if (!isnull[SLC_SESSION - 1] && !isnull[SLC_STATUS - 1] &&
			RevokerPending(DatumGetUUIDP(row[SLC_SESSION - 1])) &&
			strcmp(TextDatumGetCString(row[SLC_STATUS - 1]), "active") == 0)
			row[SLC_STATUS - 1] = CStringGetTextDatum("revoked");
		/* tuplestore_putvalues copies the values into the store. */
		old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
		MemoryContextSwitchTo(old);
	}
	storage_leave(&call);
}

/*
 * Live sessions (unexpired current access token) per signing key id: fills
 * kids[]/counts[] (at most max, kid NULL for pairs made before 1.2, which
 * recorded none); returns how many.  Strings palloc'd in the caller's
 * context.
 */
int
StorageKeyCounts(TimestampTz now, char **kids, int64 *counts, int max)
{
	StorageCall call;
	Datum		values[KCP_COUNT];
	MemoryContext caller = CurrentMemoryContext;
	int			n = 0;

	ARG(values, KCP_NOW) = TimestampTzGetDatum(now);
	storage_enter(&call);
	storage_exec(ST_KEY_COUNTS, values, NULL, true, KCC_NCOLS);
	for (uint64 i = 0; i < SPI_processed && n < max; i++, n++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
									  KCC_KEY_ID, &isnull);
		MemoryContext old = MemoryContextSwitchTo(caller);

		kids[n] = isnull ? NULL : TextDatumGetCString(d);
		MemoryContextSwitchTo(old);
		counts[n] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, KCC_SESSIONS, &isnull));
	}
	storage_leave(&call);
	return n;
}

/* Adds counted uses to n sessions (usage.c's batch): one statement. */
void
StorageAddUse(const pg_uuid_t *ids, const int64 *counts, const TimestampTz *times, int n,
			  bool *skipped)
{
	StorageCall call;
	Datum		values[AUP_COUNT];
	Datum	   *a = palloc(n * sizeof(Datum));
	Datum	   *b = palloc(n * sizeof(Datum));
	Datum	   *c = palloc(n * sizeof(Datum));

	for (int i = 0; i < n; i++)
	{
		a[i] = uuid_datum(&ids[i]);
		b[i] = Int64GetDatum(counts[i]);
		c[i] = TimestampTzGetDatum(times[i]);
	}
	ARG(values, AUP_SESSIONS) =
		PointerGetDatum(construct_array(a, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	ARG(values, AUP_USES) =
		PointerGetDatum(construct_array(b, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	ARG(values, AUP_LAST_USED) =
		PointerGetDatum(construct_array(c, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	storage_enter(&call);
	storage_exec(ST_ADD_USE, values, NULL, false, AUC_NCOLS);
	memset(skipped, 0, n * sizeof(bool));
	/* none, but for a row held locked by an open transaction */
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
												   SPI_tuptable->tupdesc,
												   AUC_SESSION, &isnull));

		for (int i = 0; i < n; i++)
			if (!isnull && memcmp(&ids[i], id, sizeof(pg_uuid_t)) == 0)
				skipped[i] = true;
	}
	storage_leave(&call);
}

/* ---------------------------------------------------------------------
 * Device authorization (RFC 8628): codes kept as SHA-256 only
 * ---------------------------------------------------------------------
 */

void
StorageDeviceStart(const unsigned char *device_hash, const unsigned char *user_code_hash,
				   const char *name, Datum scopes, TimestampTz now, TimestampTz expires_at,
				   int interval_s)
{
	StorageCall call;
	Datum		values[DSP_COUNT];
	char		nulls[DSP_COUNT];

	memset(nulls, ' ', sizeof(nulls));
	ARG(values, DSP_DEVICE) = hash_datum(device_hash);
	ARG(values, DSP_USER_CODE) = hash_datum(user_code_hash);
	ARG(values, DSP_NAME) = CStringGetTextDatum(name);
	ARG(values, DSP_SCOPES) = scopes;
	if (scopes == (Datum) 0)
		ARG(nulls, DSP_SCOPES) = 'n';
	ARG(values, DSP_NOW) = TimestampTzGetDatum(now);
	ARG(values, DSP_EXPIRES) = TimestampTzGetDatum(expires_at);
	ARG(values, DSP_INTERVAL) = Int32GetDatum(interval_s);
	storage_enter(&call);
	storage_exec(ST_DEVICE_START, values, nulls, false, NO_RESULT);
	storage_leave(&call);
}

/* the class of the advisory lock that makes a user's approvals take turns */
#define DEVICE_LOCK_CLASS 0x45544456	/* "ETDV" */

/* The user's failed approvals since `since`, and the oldest of them (0: none). */
int64
StorageDeviceFailures(const char *user_id, TimestampTz since, TimestampTz *oldest)
{
	StorageCall call;
	Datum		values[DFP_COUNT];
	int64		n = 0;
	LOCKTAG		tag;
	Snapshot	snapshot;
	int			rc;

	/*
	 * One approval at a time per user, until the transaction ends: the
	 * count below and the failure the attempt may log (StorageDeviceDecide)
	 * are then one step, and concurrent guesses cannot all pass a count
	 * taken before any of them logged.  A transaction-level advisory lock
	 * of a class of its own (key: the user id's hash; a collision only makes
	 * two users wait for each other), not the user's row, so that the lock
	 * order of a poll (the code's row, then the user's) is not crossed.
	 */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, DEVICE_LOCK_CLASS,
						 hash_bytes((const unsigned char *) user_id, (int) strlen(user_id)), 2);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	ARG(values, DFP_USER) = CStringGetTextDatum(user_id);
	ARG(values, DFP_SINCE) = TimestampTzGetDatum(since);
	*oldest = 0;
	storage_enter(&call);
	/* counted as of now, not as of the statement's start, before the wait */
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rc = SPI_execute_snapshot(storage_plan(ST_DEVICE_FAILURES), values, NULL, snapshot,
							  InvalidSnapshot, true, false, 0);
	UnregisterSnapshot(snapshot);
	storage_check(ST_DEVICE_FAILURES, rc, DFC_NCOLS);
	if (SPI_processed == 1)
	{
		bool		isnull;

		n = DatumGetInt64(column(DFC_FAILURES, &isnull));
		*oldest = column_ts(DFC_OLDEST);
	}
	storage_leave(&call);
	return n;
}

/*
 * Approves (for user_id) or denies a pending, unexpired code; false when
 * there is none, and then the failure is logged on user_id's row.
 */
bool
StorageDeviceDecide(const unsigned char *user_code_hash, const char *user_id,
					bool approve, TimestampTz now)
{
	StorageCall call;
	Datum		values[DDP_COUNT];
	char		nulls[DDP_COUNT];
	bool		done;

	memset(nulls, ' ', sizeof(nulls));
	ARG(values, DDP_ACTOR) = actor_datum();
	ARG(values, DDP_USER_CODE) = hash_datum(user_code_hash);
	ARG(values, DDP_USER) = approve ? CStringGetTextDatum(user_id) : (Datum) 0;
	if (!approve)
		ARG(nulls, DDP_USER) = 'n';
	ARG(values, DDP_NOW) = TimestampTzGetDatum(now);
	ARG(values, DDP_STATUS) = CStringGetTextDatum(approve ? "approved" : "denied");
	storage_enter(&call);
	storage_exec(ST_DEVICE_DECIDE, values, nulls, false, DDC_NCOLS);
	done = SPI_processed == 1;
	if (!done)
	{
		Datum		failed[DLP_COUNT];

		ARG(failed, DLP_USER) = CStringGetTextDatum(user_id);
		ARG(failed, DLP_NOW) = TimestampTzGetDatum(now);
		ARG(failed, DLP_HOUR_AGO) = TimestampTzGetDatum(now - USECS_PER_HOUR);
		storage_exec(ST_DEVICE_FAILED, failed, NULL, false, NO_RESULT);
	}
	storage_leave(&call);
	return done;
}

/* The device code's row, locked; false when there is none. */
bool
StorageDevicePoll(const unsigned char *device_hash, StoredDevice *out)
{
	StorageCall call;
	Datum		values[DPP_COUNT];
	bool		found;
	MemoryContext caller = CurrentMemoryContext;

	memset(out, 0, sizeof(*out));
	ARG(values, DPP_DEVICE) = hash_datum(device_hash);
	storage_enter(&call);
	storage_exec(ST_DEVICE_POLL, values, NULL, false, DPC_NCOLS);
	found = SPI_processed == 1;
	if (found)
	{
		bool		isnull;
		Datum		d;
		MemoryContext old = MemoryContextSwitchTo(caller);

		out->status = TextDatumGetCString(column(DPC_STATUS, &isnull));
		out->expires_at = column_ts(DPC_EXPIRES);
		d = column(DPC_USER, &isnull);
		out->user_id = isnull ? NULL : TextDatumGetCString(d);
		out->name = TextDatumGetCString(column(DPC_NAME, &isnull));
		d = column(DPC_SCOPES, &isnull);
		out->scopes = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
		out->interval_s = DatumGetInt32(column(DPC_INTERVAL, &isnull));
		MemoryContextSwitchTo(old);
	}
	storage_leave(&call);
	return found;
}

void
StorageDeviceConsume(const unsigned char *device_hash, const pg_uuid_t *session_id)
{
	StorageCall call;
	Datum		values[DCP_COUNT];

	ARG(values, DCP_DEVICE) = hash_datum(device_hash);
	ARG(values, DCP_SESSION) = uuid_datum(session_id);
	storage_enter(&call);
	storage_exec(ST_DEVICE_CONSUME, values, NULL, false, NO_RESULT);
	if (SPI_processed != 1)
		elog(ERROR, "extension_tokens: device authorization not consumed");
	storage_leave(&call);
}

/* ---------------------------------------------------------------------
 * The audit trail (extension_token_events)
 * ---------------------------------------------------------------------
 */

/*
 * Writes one event, in the caller's transaction: the revoker's worker's
 * records of what must outlive the error of the call that saw it.
 * session_id, user_id, actor, reason and hash may be NULL.
 */
void
StorageRecordEvent(TimestampTz at, const char *event, const char *user_id,
				   const pg_uuid_t *session_id, const char *actor, const char *reason,
				   const unsigned char *hash)
{
	StorageCall call;
	Datum		values[EVP_COUNT];
	char		nulls[EVP_COUNT];

	memset(nulls, ' ', sizeof(nulls));
	ARG(values, EVP_AT) = TimestampTzGetDatum(at);
	ARG(values, EVP_EVENT) = CStringGetTextDatum(event);
#define OPTIONAL(pos, cond, v) \
	do { if (cond) ARG(values, pos) = (v); \
		 else { ARG(values, pos) = (Datum) 0; ARG(nulls, pos) = 'n'; } } while (0)
	OPTIONAL(EVP_USER, user_id != NULL, CStringGetTextDatum(user_id));
	OPTIONAL(EVP_SESSION, session_id != NULL, uuid_datum(session_id));
	OPTIONAL(EVP_ACTOR, actor != NULL, CStringGetTextDatum(actor));
	OPTIONAL(EVP_REASON, reason != NULL, CStringGetTextDatum(reason));
	OPTIONAL(EVP_HASH, hash != NULL, hash_datum(hash));
#undef OPTIONAL
	storage_enter(&call);
	storage_exec(ST_RECORD_EVENT, values, nulls, false, NO_RESULT);
	storage_leave(&call);
}

/*
 * The rows of an events statement (EC_*) into a materialized SRF result of
 * the type extension_token_event.
 */
static void
events_result(ReturnSetInfo *rsinfo)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		row[EC_NCOLS];
		bool		isnull[EC_NCOLS];
		MemoryContext old;

		for (int c = 0; c < EC_NCOLS; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
								   c + 1, &isnull[c]);
		old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
		MemoryContextSwitchTo(old);
	}
}

/* Raises unless the SRF result is of the type extension_token_event. */
static void
events_check_result_type(ReturnSetInfo *rsinfo)
{
	if (rsinfo->setDesc->natts != EC_NCOLS)
		elog(ERROR, "extension_tokens: extension_token_event has %d columns, not %d",
			 rsinfo->setDesc->natts, EC_NCOLS);
}

/* The events of user_id (NULL: of everyone) at or after `since`. */
void
StorageListEvents(const char *user_id, TimestampTz since, ReturnSetInfo *rsinfo)
{
	StorageCall call;

	events_check_result_type(rsinfo);
	storage_enter(&call);
	if (user_id)
	{
		Datum		values[EUP_COUNT];

		ARG(values, EUP_USER) = CStringGetTextDatum(user_id);
		ARG(values, EUP_SINCE) = TimestampTzGetDatum(since);
		storage_exec(ST_EVENTS_USER, values, NULL, true, EC_NCOLS);
	}
	else
	{
		Datum		values[EAP_COUNT];

		ARG(values, EAP_SINCE) = TimestampTzGetDatum(since);
		storage_exec(ST_EVENTS_ALL, values, NULL, true, EC_NCOLS);
	}
	events_result(rsinfo);
	storage_leave(&call);
}

/*
 * The events of the session that minted the token of SHA-256 `hash`, or of
 * session `session_id` (NULL: none).
 */
void
StorageEventsByToken(const unsigned char *hash, const pg_uuid_t *session_id,
					 ReturnSetInfo *rsinfo)
{
	StorageCall call;
	Datum		values[ETP_COUNT];
	char		nulls[ETP_COUNT];

	events_check_result_type(rsinfo);
	memset(nulls, ' ', sizeof(nulls));
	ARG(values, ETP_HASH) = hash_datum(hash);
	ARG(values, ETP_SESSION) = (Datum) 0;
	if (session_id)
		ARG(values, ETP_SESSION) = uuid_datum(session_id);
	else
		ARG(nulls, ETP_SESSION) = 'n';
	storage_enter(&call);
	storage_exec(ST_EVENTS_BY_TOKEN, values, nulls, true, EC_NCOLS);
	events_result(rsinfo);
	storage_leave(&call);
}

/* ---------------------------------------------------------------------
 * Rotations of the signing keys (secret_rotated)
 * ---------------------------------------------------------------------
 */

/*
 * Whether the extension is installed in this database at this library's
 * version: never raises for its absence (the revoker's worker asks this of
 * every database it visits for the keys, with or without the extension).
 */
bool
StorageInstalledHere(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		here = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum(EXTENSION_NAME));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		v = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		here = !isnull && strcmp(TextDatumGetCString(v), EXTENSION_TOKENS_VERSION) == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return here;
}

/* Appends "what NEW (was OLD)" when the two differ ("" reads "none"). */
static void
append_change(StringInfo buf, const char *what, const char *now, const char *was)
{
	if (strcmp(now, was) == 0)
		return;
	if (buf->len > 0)
		appendStringInfoString(buf, ", ");
	appendStringInfo(buf, "%s %s (was %s)", what, now[0] ? now : "none",
					 was[0] ? was : "none");
}

/* A column of the current SPI row as a C string, "" for NULL. */
static const char *
column_text(int col)
{
	bool		isnull;
	Datum		d = column(col, &isnull);

	return isnull ? "" : TextDatumGetCString(d);
}

/*
 * Compares the key ids in force (algorithm, secret_id, key_id; "" for none)
 * with those this database last recorded.  When they differ (and
 * `may_rotate`), writes one secret_rotated event at `at` (actor NULL: the
 * server's configuration) whose reason says what changed, moves the record
 * on, and returns true with *reason set; the event and the record commit or
 * roll back together.  The first look at a database (no record yet)
 * records the keys and no event.  `nowait`: raise rather than wait for the
 * record's lock.
 */
bool
StorageCheckSigningKeys(const char *algorithm, const char *secret_id,
						const char *key_id, TimestampTz at, const char *actor,
						bool may_rotate, bool nowait, char **reason)
{
	StorageCall call;
	Datum		values[SKP_COUNT];
	char		nulls[SKP_COUNT];
	StringInfoData changes;
	bool		rotated = false;

	initStringInfo(&changes);
	memset(nulls, ' ', sizeof(nulls));
	ARG(values, SKP_ALGORITHM) = CStringGetTextDatum(algorithm);
#define OPTIONAL(pos, s) \
	do { if ((s)[0]) ARG(values, pos) = CStringGetTextDatum(s); \
		 else { ARG(values, pos) = (Datum) 0; ARG(nulls, pos) = 'n'; } } while (0)
	OPTIONAL(SKP_SECRET_ID, secret_id);
	OPTIONAL(SKP_KEY_ID, key_id);
	ARG(values, SKP_AT) = TimestampTzGetDatum(at);
	storage_enter(&call);
	storage_exec(nowait ? ST_SIGNING_READ_NOWAIT : ST_SIGNING_READ, NULL, NULL, false,
				 SKC_NCOLS);
	if (SPI_processed == 0)
		storage_exec(ST_SIGNING_SEED, values, nulls, false, NO_RESULT);
	else if (may_rotate)
	{
		/* `changes` was made before SPI: repalloc keeps it out of SPI's memory */
		append_change(&changes, "signing_algorithm", algorithm, column_text(SKC_ALGORITHM));
		append_change(&changes, "jwt_secret", secret_id, column_text(SKC_SECRET_ID));
		append_change(&changes, "signing_key", key_id, column_text(SKC_KEY_ID));
		if (changes.len > 0)
		{
			if (actor)
				ARG(values, SKP_ACTOR) = CStringGetTextDatum(actor);
			else
			{
				ARG(values, SKP_ACTOR) = (Datum) 0;
				ARG(nulls, SKP_ACTOR) = 'n';
			}
			ARG(values, SKP_CHANGES) = CStringGetTextDatum(changes.data);
			storage_exec(ST_SIGNING_ROTATED, values, nulls, false, NO_RESULT);
			rotated = true;
		}
	}
#undef OPTIONAL
	storage_leave(&call);
	*reason = rotated ? changes.data : NULL;
	return rotated;
}
