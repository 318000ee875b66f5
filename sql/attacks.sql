-- attacks: a caller's own objects cannot capture anything the extension
-- runs.  Its statements run as the extension's owner with the caller's
-- search_path, so every table, function, operator and type in them is
-- schema-qualified; here a hostile role plants look-alikes ahead of
-- pg_catalog (and in pg_temp) and calls every function it may call.  Each
-- look-alike records that it ran; none may.
SET extension_tokens.issue_rate_limit = 0;
-- (strict: the second presentation below is reuse, not a retry)
SET extension_tokens.refresh_retry_window = 0;
SELECT access_token AS a, refresh_token AS r FROM extension_token_issue('a1000000-0000-4000-8000-000000000001') \gset
GRANT CREATE ON DATABASE contrib_regression TO regress_et_mallory;

SET SESSION AUTHORIZATION regress_et_mallory;
CREATE SCHEMA mallory;
CREATE TABLE mallory.captured (what text);
GRANT ALL ON SCHEMA mallory TO PUBLIC;
GRANT ALL ON mallory.captured TO PUBLIC;
-- Look-alikes of what the extension's statements use: comparison and
-- concatenation operators on their types, and the functions they call.
CREATE FUNCTION mallory.eq_bytea(bytea, bytea) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('= bytea by ' || current_user); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR mallory.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = mallory.eq_bytea);
CREATE FUNCTION mallory.eq_uuid(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('= uuid by ' || current_user); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR mallory.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = mallory.eq_uuid);
CREATE FUNCTION mallory.eq_text(text, text) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('= text by ' || current_user); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR mallory.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mallory.eq_text);
CREATE FUNCTION mallory.lt_ts(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('< timestamptz by ' || current_user); RETURN $1 OPERATOR(pg_catalog.<) $2; END $$;
CREATE OPERATOR mallory.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = mallory.lt_ts);
CREATE OPERATOR mallory.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = mallory.lt_ts);
CREATE FUNCTION mallory.cat(timestamptz[], timestamptz) RETURNS timestamptz[] LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('|| by ' || current_user); RETURN $1 OPERATOR(pg_catalog.||) $2; END $$;
CREATE OPERATOR mallory.|| (LEFTARG = timestamptz[], RIGHTARG = timestamptz, FUNCTION = mallory.cat);
CREATE FUNCTION mallory.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('unnest by ' || current_user); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION mallory.array_upper(anyarray, integer) RETURNS integer LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('array_upper by ' || current_user); RETURN pg_catalog.array_upper($1, $2); END $$;
CREATE FUNCTION mallory.date_part(text, interval) RETURNS double precision LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO mallory.captured VALUES ('date_part by ' || current_user); RETURN pg_catalog.date_part($1, $2); END $$;
-- and tables of the extension's names in pg_temp, searched first
CREATE TEMP TABLE extension_tokens (token_hash bytea);
CREATE TEMP TABLE extension_token_sessions (session_id uuid);
CREATE TEMP TABLE extension_token_users (user_id text);

SET search_path = pg_temp, mallory, pg_catalog, public;
-- what anyone may call
SELECT valid, error FROM public.extension_token_validate(:'a');
SELECT (public.extension_token_validate(public.regress_sign('{"alg": "HS256"}', public.regress_claims()))).error;
SELECT token_type FROM public.extension_token_refresh(:'r') \gset
-- (errors shown by psql: a helper function would itself resolve names
-- through this search_path)
\set VERBOSITY terse
SELECT public.extension_token_refresh(:'r');
-- what mallory was granted, acting as a signed-in end user is not possible
-- for a login role: these fail before any statement runs
SELECT public.extension_token_issue();
\set VERBOSITY default
SELECT public.extension_token_revoke('ext_rt_nothing');
-- (the reuse above already revoked the session: false, RFC 7009)
SELECT public.extension_token_revoke(:'a');
RESET SESSION AUTHORIZATION;

-- An administrator whose session has the same search_path: issue, list,
-- revoke all and cleanup also run without touching the look-alikes.
SET search_path = mallory, pg_catalog, public;
SET extension_tokens.max_sessions_per_user = 1;
SET extension_tokens.last_used_interval = 0;
SELECT access_token AS b FROM extension_token_issue('a1000000-0000-4000-8000-000000000003') \gset
SELECT valid FROM extension_token_validate(:'b');
SELECT token_type FROM extension_token_issue('a1000000-0000-4000-8000-000000000002');
SELECT token_type FROM extension_token_issue('a1000000-0000-4000-8000-000000000002');
SELECT count(*) FROM extension_token_list('a1000000-0000-4000-8000-000000000002');
SELECT revoke_user_extension_tokens('a1000000-0000-4000-8000-000000000002');
-- (a user with no session left and an old rate-limit log, for cleanup to
-- delete: its statement compares user ids)
INSERT INTO public.extension_token_users (user_id, issue_log) VALUES ('a1000000-0000-4000-8000-0000000000ee', ARRAY[now() - interval '2 hours']);
SELECT extension_tokens_cleanup() >= 1 AS cleaned;
SELECT counters_available FROM extension_token_stats();
-- "sign out my other devices": the session spared is compared with the
-- others (with the look-alike of = for uuid, this ran it as the owner)
SET extension_tokens.max_sessions_per_user = 0;
SELECT session_id AS keep FROM extension_token_issue('a1000000-0000-4000-8000-000000000004') \gset
SELECT count(*) FROM extension_token_issue('a1000000-0000-4000-8000-000000000004');
SELECT revoke_user_extension_tokens('a1000000-0000-4000-8000-000000000004', :'keep') AS revoked_others;
SELECT count(*) FILTER (WHERE revoked_at IS NULL) AS live, count(*) AS sessions
  FROM public.extension_token_sessions WHERE user_id OPERATOR(pg_catalog.=) 'a1000000-0000-4000-8000-000000000004';
RESET search_path;

-- Nothing planted ran, and the temporary look-alike tables stayed empty.
SELECT count(*) AS captured, string_agg(DISTINCT what, ', ') AS what FROM mallory.captured;
SELECT (SELECT count(*) FROM pg_temp.extension_tokens) + (SELECT count(*) FROM pg_temp.extension_token_sessions)
       + (SELECT count(*) FROM pg_temp.extension_token_users) AS rows_in_temp_lookalikes;
DROP SCHEMA mallory CASCADE;
REVOKE CREATE ON DATABASE contrib_regression FROM regress_et_mallory;
