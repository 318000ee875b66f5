/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  Who may act for whom, the limits on issuing and refreshing, and the
 *	  rules that end a session and judge a token against its row.
 *
 * Identity.  A caller is an administrator when it is a superuser, has the
 * privileges of the extension's owner, or is a member of a role named in
 * extension_tokens.admin_roles (e.g. Supabase's service_role); an
 * administrator may act for any user.  Everyone else acts only for the user
 * named by the `sub` of PostgREST's request.jwt.claims.  That setting can be
 * SET by anyone in any session, so it is believed only while the current
 * role cannot log in (NOLOGIN): such a role is reached only through SET ROLE
 * by a role that is a member of it, which is what PostgREST's authenticator
 * does inside its transaction.  A login role's claims are never believed.
 *
 * Limits.  The per-user hourly rate limits and the session limit are counted
 * under the lock of the user's row (see storage.c), so concurrent issues for
 * one user are counted one after the other.
 *
 * Sessions.  The one rule for a session's end (PolicySessionEnd), and what
 * a session's row says of a token presented against it: an access token
 * (PolicySessionVerdict, for validate and pre_request) and a refresh token
 * (PolicyRefreshDecide: exchange, the retry window's same answer, reuse, or
 * a refusal).  A revocation queued for the revoker's worker and not yet
 * committed counts as done everywhere here (RevokerPending), and a use
 * counted in shared memory and not yet written counts for the idle rule
 * (UsageLastUsed).  extension_tokens.c only reads the row and acts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "lib/stringinfo.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include <openssl/crypto.h>

#include "config.h"
#include "policy.h"
#include "revoker.h"
#include "storage.h"
#include "token.h"
#include "usage.h"

/*
 * Claims an end user may put into his own token (extension_tokens.user_claims,
 * default none).  A settings of policy, kept here with the rule it feeds.
 */
static char *et_user_claims = NULL;
static int	et_device_code_lifetime = 600;	/* seconds */
static char *et_device_verification_uri = NULL;

/*
 * Claims that authorization decisions read (Supabase's auth.jwt(), RLS
 * policies, PostgREST's role): never settable by a caller who is not an
 * administrator, even when named in user_claims.  The reserved ones
 * (token_reserved_claims) no caller may set.
 */
static const char *const authority_claims[] = {
	"role", "scope", "aal", "amr", "email", "phone", "app_metadata",
	"user_metadata", "is_anonymous", "email_verified", "phone_verified",
	"groups", "permissions", "roles", "org_id", "org_role", NULL
};

static bool
is_authority_claim(const char *name)
{
	for (int i = 0; authority_claims[i] != NULL; i++)
		if (strcmp(name, authority_claims[i]) == 0)
			return true;
	return false;
}

static bool
check_user_claims(char **newval, void **extra, GucSource source)
{
	char	   *raw = pstrdup(*newval);
	List	   *names;
	ListCell   *lc;
	bool		ok = true;

	if (!SplitIdentifierString(raw, ',', &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		ok = false;
	}
	else
		foreach(lc, names)
		{
			const char *name = lfirst(lc);

			if (token_is_reserved_claim(name) || is_authority_claim(name))
			{
				GUC_check_errdetail("\"%s\" is a claim that authorization decisions read, or one the extension writes.",
									name);
				ok = false;
				break;
			}
		}
	pfree(raw);
	return ok;
}

void
PolicyInit(void)
{
	DefineCustomStringVariable("extension_tokens.user_claims",
							   "Extra claims (comma-separated names) that a caller who is not an administrator may put into his own token.",
							   "Claims that authorization reads (role, scope, aal, amr, email, phone, app_metadata, user_metadata, is_anonymous, ...) are refused here.",
							   &et_user_claims,
							   "",
							   PGC_SUSET, GUC_LIST_INPUT,
							   check_user_claims, NULL, NULL);
	DefineCustomIntVariable("extension_tokens.device_code_lifetime",
							"How long a device authorization (its device and user codes) stays usable.",
							NULL,
							&et_device_code_lifetime,
							600, 60, 3600,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomStringVariable("extension_tokens.device_verification_uri",
							   "The dashboard page where a user approves a device (verification_uri_complete adds ?user_code=...).",
							   "Empty: verification_uri_complete is NULL.",
							   &et_device_verification_uri,
							   "",
							   PGC_SUSET, 0,
							   NULL, NULL, NULL);
}

int
PolicyDeviceCodeLifetime(void)
{
	return et_device_code_lifetime;
}

const char *
PolicyDeviceVerificationUri(void)
{
	return (et_device_verification_uri && et_device_verification_uri[0])
		? et_device_verification_uri : NULL;
}

/*
 * Whether an extra claim `name` may be set by this caller: never a reserved
 * one; by an administrator any other; by anyone else only one named in
 * user_claims (and never one that authorization reads).  Raises 22023.
 */
void
PolicyCheckExtraClaim(const char *name, bool admin)
{
	bool		allowed = false;

	if (token_is_reserved_claim(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_claims may not set the reserved claim \"%s\"", name),
				 errdetail("iss, sub, aud, exp, nbf, iat, jti, type, session_id, role and scope are written by the extension only.")));
	if (admin)
		return;
	if (!is_authority_claim(name) && et_user_claims != NULL && et_user_claims[0] != '\0')
	{
		char	   *raw = pstrdup(et_user_claims);
		List	   *names;
		ListCell   *lc;

		if (SplitIdentifierString(raw, ',', &names))
			foreach(lc, names)
				if (strcmp((const char *) lfirst(lc), name) == 0)
					allowed = true;
		pfree(raw);
	}
	if (!allowed)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_claims may not set the claim \"%s\"", name),
				 errdetail("A caller who is not an administrator may set only the claims named in extension_tokens.user_claims, and never one that authorization decisions read.")));
}

static bool
member_of_admin_roles(Oid roleid)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		result = false;

	if (et_admin_roles == NULL || et_admin_roles[0] == '\0')
		return false;
	raw = pstrdup(et_admin_roles);
	if (!SplitIdentifierString(raw, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in extension_tokens.admin_roles")));
	foreach(lc, names)
	{
		Oid			admin = get_role_oid((const char *) lfirst(lc), true);

		if (OidIsValid(admin) && has_privs_of_role(roleid, admin))
		{
			result = true;
			break;
		}
	}
	list_free(names);
	pfree(raw);
	return result;
}

bool
PolicyCallerIsAdmin(void)
{
	Oid			caller = GetUserId();

	return superuser_arg(caller) ||
		has_privs_of_role(caller, StorageExtensionOwner()) ||
		member_of_admin_roles(caller);
}

static bool
role_can_login(Oid roleid)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(roleid));
	bool		canlogin;

	if (!HeapTupleIsValid(tup))
		return true;			/* unknown: treat as untrusted */
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	return canlogin;
}

/*
 * The request's claims when they are a credential of ours (an access token
 * or an API key as PostgREST's bearer): true with them in *rc.  False for
 * none, for a login role's session (a backend or psql: the claims are its
 * own to set), and for another issuer's.  Claims that cannot be read are
 * refused: the caller cannot tell whose they are.
 */
static bool
request_credential_ours(const char *action, TokenRequestClaims *rc)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);

	if (claims == NULL || claims[0] == '\0' || role_can_login(GetUserId()))
		return false;
	switch (token_request_claims(claims, strlen(claims), rc))
	{
		case TOKEN_CLAIMS_FOREIGN:
			return false;
		case TOKEN_CLAIMS_OURS:
			return true;
		case TOKEN_CLAIMS_UNREADABLE:
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s tokens", action),
			 errdetail("The request's claims cannot be read.")));
	return false;				/* not reached */
}

/*
 * A request that PostgREST authenticated with a credential of ours may not
 * `action` (issue sessions, create API keys, decide device authorizations)
 * unless it carries the scope tokens:manage: a stolen add-in token must not
 * mint sessions that outlive its own revocation.  Believed, like
 * request_user(), only for a role that cannot log in.
 */
void
PolicyRequireManageScope(const char *action)
{
	TokenRequestClaims rc;

	if (!request_credential_ours(action, &rc) || rc.manage_scope)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("an access token of extension_tokens cannot %s", action),
			 errdetail("The request's token lacks the scope tokens:manage."),
			 errhint("Sign in on the dashboard with the identity provider's token to %s.", action)));
}

/*
 * Listing, reading the audit trail of, and revoking a user's sessions and
 * keys: a credential of ours that has scopes acts within them, and these
 * need tokens:manage among them, except revoking its own session (`own`,
 * when the call revokes one session).  A credential without scopes acts as
 * its user.
 */
void
PolicyRequireScopeToManage(const char *action, const pg_uuid_t *own)
{
	TokenRequestClaims rc;

	if (!request_credential_ours(action, &rc) || !rc.scoped || rc.manage_scope)
		return;
	if (own != NULL && memcmp(own->data, rc.session_id, UUID_LEN) == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("a token or API key of extension_tokens with scopes cannot %s", action),
			 errdetail("The request's credential has scopes, and tokens:manage is not among them."),
			 errhint("Issue the credential with the scope tokens:manage, or use the identity provider's token.")));
}

/*
 * A user id (from 1.2 on): a non-empty string of at most 255 bytes without
 * control characters, so that any identity provider's `sub` fits (uuids,
 * Clerk's "user_2...", Auth0's "auth0|...", integers as text).
 */
bool
PolicyUserIdValid(const char *user_id, size_t len)
{
	if (len == 0 || len > TOKEN_SUB_MAX_LENGTH)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) user_id[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

void
PolicyCheckUserId(const char *user_id, size_t len)
{
	if (!PolicyUserIdValid(user_id, len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_user_id is not a valid user id"),
				 errdetail("A user id is a non-empty string of at most %d bytes without control characters.",
						   TOKEN_SUB_MAX_LENGTH)));
}

/*
 * The end user of the current PostgREST request, if there is one we can
 * believe.  A sub that is present but not a user id is an error, not
 * "nobody".
 */
static const char *
request_user(void)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	char	   *sub;
	int			found;

	if (claims == NULL || claims[0] == '\0' || role_can_login(GetUserId()))
		return NULL;
	sub = palloc(TOKEN_SUB_MAX_LENGTH + 2);
	found = token_json_string_member(claims, "sub", sub, TOKEN_SUB_MAX_LENGTH + 2);
	if (found == 0)
		return NULL;
	if (found < 0 || !PolicyUserIdValid(sub, strlen(sub)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the sub claim of request.jwt.claims is not a user id"),
				 errdetail("A user id is a non-empty string of at most %d bytes without control characters.",
						   TOKEN_SUB_MAX_LENGTH)));
	return sub;
}

/*
 * The user a call acts for: p_user_id when given (not NULL) and allowed,
 * else the request's user.  `action` names the operation in messages.
 */
const char *
PolicyResolveUser(const char *p_user_id, const char *action)
{
	const char *me = request_user();
	bool		admin = PolicyCallerIsAdmin();

	if (p_user_id)
		PolicyCheckUserId(p_user_id, strlen(p_user_id));
	if (admin)
	{
		if (p_user_id)
			return p_user_id;
		if (me)
			return me;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_user_id must not be null"),
				 errdetail("There is no PostgREST request user to %s for.", action)));
	}
	if (!me)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s tokens", action),
				 errdetail("The caller is not signed in as a user."),
				 errhint("Call through PostgREST with a user's JWT, or as a role named in extension_tokens.admin_roles.")));
	if (p_user_id && strcmp(p_user_id, me) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s tokens of another user", action)));
	return me;
}

/*
 * Whether a session has ended at `at`, and why.  The session's limits are
 * its own, fixed when it was issued (ends_at, idle_timeout), so a setting
 * changed later never ends a session early nor brings an ended one back.
 * Each limit is reached at its instant: at refresh_expires_at, at ends_at,
 * at last_active + idle_timeout, the session has ended.
 */
SessionEnd
PolicySessionEnd(bool revoked, TimestampTz refresh_expires_at, TimestampTz ends_at,
				 int64 idle_timeout_us, TimestampTz last_active, TimestampTz at)
{
	if (revoked)
		return SESSION_REVOKED;
	/* the session's own end first: a refresh token is capped at it */
	if (at >= ends_at)
		return SESSION_LIFETIME_ENDED;
	if (at >= refresh_expires_at)
		return SESSION_REFRESH_EXPIRED;
	if (idle_timeout_us > 0 && last_active <= PG_INT64_MAX - idle_timeout_us &&
		at >= last_active + idle_timeout_us)
		return SESSION_IDLE;
	return SESSION_LIVE;
}

const char *
PolicySessionStatus(SessionEnd end)
{
	switch (end)
	{
		case SESSION_LIVE:
			return "active";
		case SESSION_REVOKED:
			return "revoked";
		default:
			return "expired";
	}
}

/* Raises PT429, with a HINT that says when a retry will be accepted. */
void
PolicyRateLimited(bool refresh, TimestampTz now, TimestampTz retry_at)
{
	int			limit = refresh ? et_refresh_rate_limit : et_issue_rate_limit;
	int64		wait_s;

	if (retry_at == 0)
		retry_at = now + USECS_PER_HOUR;
	/* Round up to a whole second, the moment a retry is accepted. */
	if (retry_at % USECS_PER_SEC != 0)
		retry_at += USECS_PER_SEC - retry_at % USECS_PER_SEC;
	wait_s = Max((retry_at - now + USECS_PER_SEC - 1) / USECS_PER_SEC, 1);

	/*
	 * Through PostgREST (which sets request.method), the SQLSTATE PGRST lets
	 * the error set the response: status 429, a Retry-After header, and a
	 * body that keeps the code PT429 with the retry time in the hint
	 * (PostgREST 12 passes on code, message, details and hint only; the
	 * retry_after member is for callers that read the raw message).
	 */
	if (GetConfigOption("request.method", true, false) != NULL)
	{
		StringInfoData body;
		StringInfoData response;
		char	   *message = psprintf("too many token %s for this user",
									   refresh ? "refreshes" : "issues");
		char	   *details = psprintf("At most %d %s per hour are allowed.", limit,
									   refresh ? "refreshes" : "issues");
		char	   *hint = psprintf("Retry after %s (in %lld seconds).",
									timestamptz_to_str(retry_at), (long long) wait_s);

		initStringInfo(&body);
		appendStringInfoString(&body, "{\"code\":\"PT429\",\"message\":");
		escape_json(&body, message);
		appendStringInfoString(&body, ",\"details\":");
		escape_json(&body, details);
		appendStringInfoString(&body, ",\"hint\":");
		escape_json(&body, hint);
		appendStringInfo(&body, ",\"retry_after\":%lld}", (long long) wait_s);
		initStringInfo(&response);
		appendStringInfo(&response,
						 "{\"status\":429,\"headers\":{\"Retry-After\":\"%lld\"}}",
						 (long long) wait_s);
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('P', 'G', 'R', 'S', 'T')),
				 errmsg_internal("%s", body.data),
				 errdetail_internal("%s", response.data)));
	}
	ereport(ERROR,
			(errcode(ERRCODE_ET_RATE_LIMITED),
			 errmsg("too many token %s for this user", refresh ? "refreshes" : "issues"),
			 errdetail("At most %d %s per hour are allowed.", limit,
					   refresh ? "refreshes" : "issues"),
			 errhint("Retry after %s (in %lld seconds).",
					 timestamptz_to_str(retry_at), (long long) wait_s)));
}

/* Raises PT429 for too many failed device approvals. */
void
PolicyTooManyAttempts(TimestampTz now, TimestampTz retry_at)
{
	int64		wait_s;

	if (retry_at <= now)
		retry_at = now + USECS_PER_HOUR;
	wait_s = Max((retry_at - now + USECS_PER_SEC - 1) / USECS_PER_SEC, 1);
	ereport(ERROR,
			(errcode(ERRCODE_ET_RATE_LIMITED),
			 errmsg("too many failed device approvals for this user"),
			 errdetail("At most 10 failed approvals per hour are allowed."),
			 errhint("Retry in %lld seconds.", (long long) wait_s)));
}

void
PolicyRefreshRefused(const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_ET_UNAUTHORIZED),
			 errmsg("refresh token rejected"),
			 errdetail("%s", reason)));
}

/* ---------------------------------------------------------------------
 * A session's row against a presented token: the rules validate,
 * pre_request and refresh apply to what storage.c read
 * ---------------------------------------------------------------------
 */

/* Seconds since the Unix epoch, rounded down. */
static int64
unix_seconds_floor(TimestampTz ts)
{
	int64		s = ts / USECS_PER_SEC;

	if (ts < 0 && ts % USECS_PER_SEC != 0)
		s--;
	return s + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/*
 * The session's end as the one rule decides it (policy.c), for this row.
 */
SessionEnd
PolicyRowEnd(const SessionRow *row, TimestampTz now)
{
	TimestampTz last_active = row->last_used_at ? row->last_used_at : row->created_at;

	/* a use counted in shared memory and not yet written counts (usage.c) */
	if (row->idle_timeout_us > 0)
		last_active = Max(last_active, UsageLastUsed(&row->session_id));
	return PolicySessionEnd(row->revoked || row->revocation_pending ||
							RevokerPending(&row->session_id),
							row->refresh_expires_at, row->ends_at, row->idle_timeout_us,
							last_active, now);
}

/*
 * What the session's row says of a token of ours that names it, for
 * validate and pre_request alike: `sub` and `exp` are the token's, and
 * `current` whether it is the session's current access token (by hash, or
 * by jti).  A token that is not current is one of an earlier pair (rotated
 * away, so revoked) if the session was refreshed and the token expires no
 * later than the current one; else it was never issued.
 */
TokenStatus
PolicySessionVerdict(const SessionRow *row, const char *sub, bool current, int64 exp,
					 TimestampTz now)
{
	if (!row->found || strcmp(row->user_id, sub) != 0)
		return TOKEN_NOT_FOUND;
	if (!current)
		return (row->last_refresh_at != 0 && exp <= unix_seconds_floor(row->expires_at))
			? TOKEN_REVOKED : TOKEN_NOT_FOUND;
	switch (PolicyRowEnd(row, now))
	{
		case SESSION_LIVE:
			return TOKEN_OK;
		case SESSION_REVOKED:
			return TOKEN_REVOKED;
		default:
			return TOKEN_EXPIRED;
	}
}

/*
 * What a presented refresh token gets, given the session's row (read by
 * the session id the token carries, or found by its hash among the
 * exchanged ones): its hash against the row's current one decides between
 * an exchange and an exchanged token's retry or reuse.
 */
RefreshDecision
PolicyRefreshDecide(const SessionRow *row, const unsigned char *hash, TimestampTz now,
					const char **reason)
{
	/* storage found the row by the token; a token of no row is refused before */
	Assert(row->found);
	*reason = NULL;
	if (row->revoked || row->revocation_pending || RevokerPending(&row->session_id))
	{
		*reason = "session_revoked";
		return RD_REFUSE;
	}
	if (CRYPTO_memcmp(hash, row->refresh_hash, TOKEN_HASH_LENGTH) != 0)
	{
		/* An exchanged token of this session (storage found it there). */
		/*
		 * The window is the shorter of the one in force at the exchange
		 * (retry_until) and the one in force now: 0 is strict at once.
		 */
		if (row->has_retry && row->retry_box != NULL && now < row->retry_until &&
			now < row->last_refresh_at + (int64) et_refresh_retry_window * USECS_PER_SEC &&
			CRYPTO_memcmp(hash, row->retry_hash, TOKEN_HASH_LENGTH) == 0)
			return RD_RETRY;
		*reason = "refresh_token_already_used";
		return RD_REUSE;
	}
	switch (PolicyRowEnd(row, now))
	{
		case SESSION_LIVE:
			return RD_EXCHANGE;
		case SESSION_REVOKED:
			*reason = "session_revoked";
			break;
		case SESSION_REFRESH_EXPIRED:
			*reason = "refresh_token_expired";
			break;
		case SESSION_LIFETIME_ENDED:
		case SESSION_IDLE:
			*reason = "session_expired";
			break;
	}
	return RD_REFUSE;
}
