/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  Who may act for whom, and the limits on issuing and refreshing.
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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "config.h"
#include "policy.h"
#include "storage.h"
#include "token.h"

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
 * The end user of the current PostgREST request, if there is one we can
 * believe.  A sub that is present but not a uuid is an error, not "nobody".
 */
static bool
request_user(pg_uuid_t *out)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	char		sub[64];
	int			found;

	if (claims == NULL || claims[0] == '\0' || role_can_login(GetUserId()))
		return false;
	found = token_json_string_member(claims, "sub", sub, sizeof(sub));
	if (found == 0)
		return false;
	if (found < 0 || !token_uuid_parse(sub, strlen(sub), out->data))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the sub claim of request.jwt.claims is not a user id"),
				 errdetail("User ids are uuids.")));
	return true;
}

/*
 * The user a call acts for: p_user_id when given and allowed, else the
 * request's user.  `action` names the operation in messages.
 */
pg_uuid_t
PolicyResolveUser(bool given, const pg_uuid_t *p_user_id, const char *action)
{
	pg_uuid_t	me;
	bool		have_me = request_user(&me);
	bool		admin = PolicyCallerIsAdmin();

	if (admin)
	{
		if (given)
			return *p_user_id;
		if (have_me)
			return me;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_user_id must not be null"),
				 errdetail("There is no PostgREST request user to %s for.", action)));
	}
	if (!have_me)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s tokens", action),
				 errdetail("The caller is not signed in as a user."),
				 errhint("Call through PostgREST with a user's JWT, or as a role named in extension_tokens.admin_roles.")));
	if (given && memcmp(p_user_id->data, me.data, UUID_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s tokens of another user", action)));
	return me;
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
	ereport(ERROR,
			(errcode(ERRCODE_ET_RATE_LIMITED),
			 errmsg("too many token %s for this user", refresh ? "refreshes" : "issues"),
			 errdetail("At most %d %s per hour are allowed.", limit,
					   refresh ? "refreshes" : "issues"),
			 errhint("Retry after %s (in %lld seconds).",
					 timestamptz_to_str(retry_at), (long long) wait_s)));
}

void
PolicyRefreshRefused(const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_ET_UNAUTHORIZED),
			 errmsg("refresh token rejected"),
			 errdetail("%s", reason)));
}
