-- install: what the install script sets up for the server around the
-- database (issue 26): the event trigger that removes the pg_cron jobs when
-- the extension is dropped, and the comments that say what the code does.
-- (The jobs themselves, with a real pg_cron, and the warning of a server
-- that does not preload the library: test/t/004_cron.pl.)

-- The trigger belongs to the extension, fires before the three commands
-- that can drop it, and is enabled.
SELECT evtname, evtevent, evttags, evtenabled, evtfoid::regprocedure
  FROM pg_event_trigger WHERE evtname = 'extension_tokens_drop_jobs';
SELECT count(*) AS member FROM pg_depend
 WHERE classid = 'pg_event_trigger'::regclass AND deptype = 'e'
   AND objid = (SELECT oid FROM pg_event_trigger WHERE evtname = 'extension_tokens_drop_jobs')
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'extension_tokens');
-- Its function is for the trigger only: nobody but the owner holds it, and
-- a direct call is refused.
SELECT has_function_privilege('regress_et_anon', 'extension_tokens_drop_jobs()', 'EXECUTE') AS anon,
       has_function_privilege('regress_et_authenticated', 'extension_tokens_drop_jobs()', 'EXECUTE') AS authenticated,
       has_function_privilege('regress_et_service', 'extension_tokens_drop_jobs()', 'EXECUTE') AS service;
SELECT regress_try('SELECT extension_tokens_drop_jobs()') AS direct_call;

-- p_quiet turns a failure into a WARNING, and the comment says so.
SELECT obj_description('extension_tokens_cleanup_schedule(text, boolean)'::regprocedure, 'pg_proc')
       ~ 'p_quiet turns a failure into a WARNING$' AS comment_says_warning;
-- Every function, type, table and view of the extension has a comment (a
-- table's or view's row type has its relation's; arrays have none).
SELECT pg_describe_object(classid, objid, objsubid) AS uncommented
  FROM pg_depend d
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'extension_tokens')
   AND classid IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_type'::regclass,
                   'pg_event_trigger'::regclass)
   AND obj_description(objid, classid::regclass::name) IS NULL
   AND NOT (classid = 'pg_type'::regclass
            AND EXISTS (SELECT 1 FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
                         WHERE t.oid = objid AND (t.typelem <> 0 OR c.relkind <> 'c')))
 ORDER BY 1;

-- A drop rolled back leaves the extension, and says nothing.
BEGIN;
DROP EXTENSION extension_tokens;
ROLLBACK;
SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens';
-- A drop where pg_cron holds no job of ours (here: pg_cron is loaded but not
-- installed in its database) is silent too; the new install warns as before
-- that it could not schedule.
DROP EXTENSION extension_tokens;
CREATE EXTENSION extension_tokens;
SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens';
