/* extension_tokens--1.0--1.1.sql: operations (cleanup, pg_cron, statistics,
 * session lifetimes, refresh tracking).  A fresh 1.1 install runs 1.0 and
 * then this script, so both roads lead to the same objects. */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION extension_tokens UPDATE TO '1.1'" to load this file. \quit

-------------------------------------------------------------------------------
-- Refresh tracking and cleanup support
-------------------------------------------------------------------------------

ALTER TABLE extension_token_sessions
    ADD COLUMN last_refresh_error text,
    ADD COLUMN last_refresh_error_at timestamptz;
COMMENT ON COLUMN extension_token_sessions.last_refresh_error IS
'Why the last refused refresh of this session was refused (a PT401 reason, or rate_limited)';

-- The moment a session died (revoked, or its refresh token ran out): what
-- cleanup looks for.
CREATE INDEX extension_token_sessions_dead_idx
    ON extension_token_sessions (LEAST(revoked_at, refresh_expires_at));

ALTER TYPE extension_token_session
    ADD ATTRIBUTE last_refresh_error text,
    ADD ATTRIBUTE last_refresh_error_at timestamptz;

-------------------------------------------------------------------------------
-- Cleanup, and its pg_cron job
-------------------------------------------------------------------------------

CREATE FUNCTION extension_tokens_cleanup(p_retention interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'extension_tokens_cleanup'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_tokens_cleanup(interval) IS
'Deletes sessions (and their tokens) revoked or expired longer ago than p_retention (default extension_tokens.cleanup_retention), in batches of extension_tokens.cleanup_batch_size, and users with nothing left; returns the rows deleted';

CREATE FUNCTION extension_tokens_cleanup_schedule(p_schedule text DEFAULT '17 * * * *',
                                                  p_quiet boolean DEFAULT false)
RETURNS text
AS 'MODULE_PATHNAME', 'extension_tokens_cleanup_schedule'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_tokens_cleanup_schedule(text, boolean) IS
'Creates or changes the pg_cron job that runs extension_tokens_cleanup() in this database (jobs live in cron.database_name), and one that trims those jobs'' run history to a week; p_quiet turns a failure into a NOTICE';

CREATE FUNCTION extension_tokens_cleanup_unschedule()
RETURNS text
AS 'MODULE_PATHNAME', 'extension_tokens_cleanup_unschedule'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_tokens_cleanup_unschedule() IS
'Removes this database''s extension_tokens pg_cron jobs';

-------------------------------------------------------------------------------
-- Statistics
-------------------------------------------------------------------------------

CREATE TYPE extension_token_statistics AS (
    stats_since                 timestamptz,
    counters_available          boolean,
    tokens_issued               bigint,
    tokens_issued_24h           bigint,
    sessions_active             bigint,
    sessions_revoked            bigint,
    sessions_expired            bigint,
    refreshes_succeeded         bigint,
    refreshes_failed            bigint,
    validations_succeeded       bigint,
    validations_failed          bigint,
    validations_failed_by_error jsonb,
    measured_at                 timestamptz
);
COMMENT ON TYPE extension_token_statistics IS
'Counters since stats_since (shared memory; NULL unless the library is in shared_preload_libraries) and figures from the tables as of measured_at';

CREATE FUNCTION extension_token_stats()
RETURNS extension_token_statistics
AS 'MODULE_PATHNAME', 'extension_token_stats'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_stats() IS
'Issues, refreshes and validations (by error) counted in shared memory since stats_since, and session counts from the tables';

CREATE FUNCTION extension_token_stats_reset()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'extension_token_stats_reset'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_stats_reset() IS
'Zeroes the shared-memory counters; returns the new stats_since';

CREATE VIEW extension_tokens_issued_daily AS
SELECT pg_catalog.date_trunc('day', created_at) AS day,
       pg_catalog.count(*) AS sessions_issued
  FROM extension_token_sessions
 WHERE created_at OPERATOR(pg_catalog.>=)
       (pg_catalog.date_trunc('day', pg_catalog.now()) OPERATOR(pg_catalog.-) interval '29 days')
 GROUP BY 1;
COMMENT ON VIEW extension_tokens_issued_daily IS
'Sessions issued per day over the last 30 days (days without any are absent)';

-------------------------------------------------------------------------------
-- Across users, for psql
-------------------------------------------------------------------------------

CREATE VIEW extension_token_sessions_admin AS
SELECT s.session_id, s.user_id, s.name,
       CASE WHEN s.revoked_at IS NOT NULL THEN 'revoked'
            WHEN s.refresh_expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()
              OR (l.max_lifetime OPERATOR(pg_catalog.>) interval '0'
                  AND (s.created_at OPERATOR(pg_catalog.+) l.max_lifetime) OPERATOR(pg_catalog.<=) pg_catalog.now())
              OR (l.idle OPERATOR(pg_catalog.>) interval '0'
                  AND COALESCE(s.last_used_at, s.created_at) OPERATOR(pg_catalog.+) l.idle
                      OPERATOR(pg_catalog.<) pg_catalog.now())
            THEN 'expired'
            ELSE 'active' END AS status,
       s.created_at, s.last_used_at, s.expires_at, s.refresh_expires_at,
       s.revoked_at, s.revoked_reason, s.refresh_count, s.last_refresh_at,
       s.last_refresh_error, s.last_refresh_error_at,
       (s.last_refresh_error_at IS NOT NULL
        AND (s.last_refresh_at IS NULL
             OR s.last_refresh_error_at OPERATOR(pg_catalog.>) s.last_refresh_at)) AS last_refresh_failed
  FROM extension_token_sessions s,
       LATERAL (SELECT COALESCE(pg_catalog.current_setting('extension_tokens.session_max_lifetime', true), '0')::pg_catalog.interval AS max_lifetime,
                       COALESCE(pg_catalog.current_setting('extension_tokens.session_inactivity_timeout', true), '0')::pg_catalog.interval AS idle) l;
COMMENT ON VIEW extension_token_sessions_admin IS
'Every session of every user with its status and refresh history (no token, no hash); superusers and the extension owner only';

CREATE FUNCTION extension_token_sessions_expiring(p_within interval DEFAULT '7 days')
RETURNS SETOF extension_token_sessions_admin
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT *
      FROM extension_token_sessions_admin a
     WHERE a.status OPERATOR(pg_catalog.=) 'active'
       AND a.refresh_expires_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.+) p_within)
     ORDER BY a.refresh_expires_at;
END;
COMMENT ON FUNCTION extension_token_sessions_expiring(interval) IS
'Active sessions whose refresh token runs out within p_within, soonest first';

-------------------------------------------------------------------------------
-- PostgREST and Supabase
-------------------------------------------------------------------------------

CREATE FUNCTION extension_token_pre_request()
RETURNS void
AS 'MODULE_PATHNAME', 'extension_token_pre_request'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION extension_token_pre_request() IS
'For PostgREST''s db-pre-request: refuses (PT401) a request whose bearer token is an access token of this extension that is revoked, expired or unknown; any other token is left to PostgREST';

-- Grants for the API roles of PostgREST / Supabase, idempotent.  Not
-- SECURITY DEFINER: the caller must be able to grant (the extension's owner
-- or a superuser), and is checked first because a GRANT by anyone else only
-- warns.  Functions are named by schema and identity from the catalog, never
-- looked up through the caller's search_path.
CREATE FUNCTION extension_tokens_grant_api_roles(p_anon text DEFAULT 'anon',
                                                 p_authenticated text DEFAULT 'authenticated',
                                                 p_service_role text DEFAULT 'service_role')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $grant$
DECLARE
    ext oid;
    owner oid;
    f record;
    r text;
BEGIN
    SELECT e.oid, e.extowner INTO ext, owner FROM pg_catalog.pg_extension e
     WHERE e.extname OPERATOR(pg_catalog.=) 'extension_tokens';
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, owner, 'USAGE') THEN
        RAISE EXCEPTION 'permission denied to grant the extension''s functions'
            USING ERRCODE = '42501',
                  HINT = 'Run it as the extension''s owner or a superuser.';
    END IF;
    FOREACH r IN ARRAY ARRAY[p_anon, p_authenticated, p_service_role] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
            RAISE EXCEPTION 'role "%" does not exist', r USING ERRCODE = '42704';
        END IF;
    END LOOP;
    FOR f IN
        SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname,
                                 pg_catalog.pg_get_function_identity_arguments(p.oid)) AS fn,
               p.proname::text AS name
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) d.objid
          JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid OPERATOR(pg_catalog.=) ext
           AND d.deptype OPERATOR(pg_catalog.=) 'e'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %I, %I, %I', f.fn,
                                  p_anon, p_authenticated, p_service_role);
        IF f.name OPERATOR(pg_catalog.=) ANY (ARRAY['extension_token_validate', 'extension_token_refresh',
                                                   'extension_token_pre_request']) THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I, %I, %I', f.fn,
                                      p_anon, p_authenticated, p_service_role);
        ELSIF f.name OPERATOR(pg_catalog.=) ANY (ARRAY['extension_token_issue', 'extension_token_list',
                                                      'extension_token_revoke', 'revoke_user_extension_tokens']) THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I, %I', f.fn,
                                      p_authenticated, p_service_role);
        END IF;
    END LOOP;
END
$grant$;
COMMENT ON FUNCTION extension_tokens_grant_api_roles(text, text, text) IS
'Grants the extension''s functions to PostgREST/Supabase roles, taking back anything else they had on them: validate, refresh and pre_request to all three; issue, list and both revokes to the signed-in and the service role.  Idempotent.  Name the service role in extension_tokens.admin_roles too';

-------------------------------------------------------------------------------
-- Privileges: none of this is for PUBLIC (nor for roles that default
-- privileges granted new objects to).
-------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION extension_tokens_cleanup(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_tokens_cleanup_schedule(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_tokens_cleanup_unschedule() FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_stats_reset() FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_sessions_expiring(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_token_pre_request() FROM PUBLIC;
REVOKE ALL ON FUNCTION extension_tokens_grant_api_roles(text, text, text) FROM PUBLIC;
REVOKE ALL ON extension_tokens_issued_daily, extension_token_sessions_admin FROM PUBLIC;
DO $revoke$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT pg_catalog.format('FUNCTION %s', p.oid::pg_catalog.regprocedure) AS obj, a.grantee
          FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
         WHERE p.oid OPERATOR(pg_catalog.=) ANY (ARRAY[
                   'extension_tokens_cleanup(interval)'::pg_catalog.regprocedure,
                   'extension_tokens_cleanup_schedule(text, boolean)'::pg_catalog.regprocedure,
                   'extension_tokens_cleanup_unschedule()'::pg_catalog.regprocedure,
                   'extension_token_stats()'::pg_catalog.regprocedure,
                   'extension_token_stats_reset()'::pg_catalog.regprocedure,
                   'extension_token_sessions_expiring(interval)'::pg_catalog.regprocedure,
                   'extension_token_pre_request()'::pg_catalog.regprocedure,
                   'extension_tokens_grant_api_roles(text, text, text)'::pg_catalog.regprocedure])
           AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
           AND a.grantee OPERATOR(pg_catalog.<>) 0
        UNION
        SELECT DISTINCT pg_catalog.format('TABLE %s', c.oid::pg_catalog.regclass), a.grantee
          FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a
         WHERE c.oid OPERATOR(pg_catalog.=) ANY (ARRAY[
                   'extension_tokens_issued_daily'::pg_catalog.regclass,
                   'extension_token_sessions_admin'::pg_catalog.regclass])
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
           AND a.grantee OPERATOR(pg_catalog.<>) 0
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %I', r.obj,
                                  pg_catalog.pg_get_userbyid(r.grantee));
    END LOOP;
END
$revoke$;

-------------------------------------------------------------------------------
-- Schedule the cleanup when pg_cron is loaded; say how otherwise.  (A WARNING,
-- not a NOTICE: CREATE EXTENSION runs scripts with client_min_messages at
-- WARNING at least, and a notice would never be seen.)
-------------------------------------------------------------------------------

DO $cron$
BEGIN
    IF pg_catalog.current_setting('cron.database_name', true) IS NULL THEN
        RAISE WARNING 'pg_cron is not loaded: schedule SELECT extension_tokens_cleanup() yourself (hourly is plenty), or load pg_cron and run SELECT extension_tokens_cleanup_schedule()';
    ELSE
        PERFORM extension_tokens_cleanup_schedule(p_quiet => true);
    END IF;
END
$cron$;
