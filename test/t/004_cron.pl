# 004_cron.pl: the cleanup job with a real pg_cron, and without it.
#
# pg_cron keeps its jobs in the database named by cron.database_name
# ("postgres" here); the extension lives in another database ("app").  At
# CREATE EXTENSION the job must appear in postgres's cron.job, aimed at app;
# run by pg_cron, it must delete app's expired sessions (seen in
# cron.job_run_details); the schedule can be changed and removed; dropping
# the extension or its database removes the jobs, renaming the database
# moves them to its new name.  A server without pg_cron gets a clear
# warning at CREATE EXTENSION instead.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,extension_tokens'
cron.database_name = 'postgres'
# this cluster listens on a Unix socket only: run jobs in background workers
# rather than over a libpq connection to localhost
cron.use_background_workers = on
max_worker_processes = 16
extension_tokens.jwt_secret = '$secret'
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE DATABASE app');

my ($ret, $out, $err) = $node->psql('app', 'CREATE EXTENSION extension_tokens');
is($ret, 0, 'CREATE EXTENSION in a database other than cron.database_name succeeds');
unlike($err, qr/WARNING/, 'no warning when pg_cron is there');

my $jobs = $node->safe_psql('postgres',
	"SELECT jobname || ' ' || database || ' ' || command FROM cron.job ORDER BY jobname");
like($jobs, qr/^extension_tokens_cleanup:app app DO \$extension_tokens\$ .*'extension_tokens_cleanup'\) USING NULL::pg_catalog\.interval; END IF; END \$extension_tokens\$$/m,
	'the cleanup job is in cron.job, runs in database app (a DO block that finds the function by the extension)');
like($jobs, qr/^extension_tokens_history:app postgres DELETE FROM cron\.job_run_details d USING cron\.job j/m,
	'a job trims the run history of these jobs, in the cron database');
is($node->safe_psql('postgres', "SELECT schedule FROM cron.job WHERE jobname = 'extension_tokens_cleanup:app'"),
	'17 * * * *', 'the default schedule is hourly');

# Expired data: a session revoked eight days ago, one whose refresh token ran
# out eight days ago, and a live one; each refreshed once, so that each has
# an exchanged refresh token in extension_tokens.
$node->safe_psql('app', q{
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SELECT refresh_token AS rt FROM extension_token_issue('user_9cron', 'old revoked') \gset
SELECT extension_token_refresh(:'rt');
SELECT refresh_token AS rt FROM extension_token_issue('user_9cron', 'old expired') \gset
SELECT extension_token_refresh(:'rt');
SELECT refresh_token AS rt FROM extension_token_issue('user_9cron', 'live') \gset
SELECT extension_token_refresh(:'rt');
UPDATE extension_token_sessions SET revoked_at = now() - interval '8 days', revoked_reason = 'revoked',
       check_after = now() - interval '8 days'
 WHERE name = 'old revoked';
UPDATE extension_token_sessions SET refresh_expires_at = now() - interval '8 days',
       check_after = now() - interval '8 days'
 WHERE name = 'old expired';
});
is($node->safe_psql('app', 'SELECT count(*) FROM extension_token_sessions'), '3', 'three sessions before');
is($node->safe_psql('app', 'SELECT count(*) FROM extension_tokens'), '3', 'three exchanged refresh tokens before');

# Every minute, so that pg_cron runs it within this test.
is($node->safe_psql('app', "SELECT extension_tokens_cleanup_schedule('* * * * *')"), 'scheduled',
	'the schedule can be changed');
is($node->safe_psql('postgres', "SELECT schedule FROM cron.job WHERE jobname = 'extension_tokens_cleanup:app'"),
	'* * * * *', 'cron.job has the new schedule (one job, updated in place)');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname = 'extension_tokens_cleanup:app'"),
	'1', 'still exactly one cleanup job');

ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) > 0 FROM cron.job_run_details r JOIN cron.job j USING (jobid)
 WHERE j.jobname = 'extension_tokens_cleanup:app' AND r.status = 'succeeded'}, 't'),
	'pg_cron ran the cleanup job and it succeeded (cron.job_run_details)');
is($node->safe_psql('postgres', q{
SELECT r.return_message FROM cron.job_run_details r JOIN cron.job j USING (jobid)
 WHERE j.jobname = 'extension_tokens_cleanup:app' AND r.status = 'succeeded'
 ORDER BY r.end_time LIMIT 1}), 'DO', 'pg_cron reports the job as one DO block (it finds the function by the extension)');
is($node->safe_psql('app', 'SELECT string_agg(name, \',\' ORDER BY name) FROM extension_token_sessions'),
	'live', 'the expired and the long-revoked sessions are gone, the live one stays');
is($node->safe_psql('app', q{SELECT count(*) FROM extension_tokens t
  WHERE NOT EXISTS (SELECT 1 FROM extension_token_sessions s WHERE s.session_id = t.session_id)}),
	'0', 'their exchanged refresh tokens went with them');
is($node->safe_psql('app', q{SELECT count(*) FROM extension_tokens t JOIN extension_token_sessions s USING (session_id)
  WHERE s.name = 'live'}),
	'1', 'the live session keeps its exchanged refresh token (reuse stays detectable)');

is($node->safe_psql('app', 'SELECT extension_tokens_cleanup_unschedule()'), 'unscheduled',
	'the jobs can be removed');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job WHERE jobname LIKE 'extension_tokens%:app'"),
	'0', 'no extension_tokens job is left in cron.job');

# Only administrators may touch the schedule.
$node->safe_psql('app', 'CREATE ROLE regress_plain LOGIN');
($ret, $out, $err) = $node->psql('app', 'SELECT extension_tokens_cleanup_schedule()',
	extra_params => [ '-U', 'regress_plain' ]);
like($err, qr/permission denied/, 'a plain role cannot schedule the cleanup');

# DROP EXTENSION removes the jobs (an event trigger of the extension, acting
# at commit: src/uninstall.c); a rolled-back drop keeps them; DROP SCHEMA
# CASCADE counts as a drop; another database's jobs stay.
my $jobs_of = sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM cron.job WHERE jobname LIKE 'extension_tokens%:$_[0]'");
};
$node->safe_psql('app', 'SELECT extension_tokens_cleanup_schedule()');
$node->safe_psql('postgres', 'CREATE DATABASE app2');
$node->safe_psql('app2', 'CREATE SCHEMA tok');
($ret, $out, $err) = $node->psql('app2', 'CREATE EXTENSION extension_tokens SCHEMA tok');
is($jobs_of->('app') . ' ' . $jobs_of->('app2'), '2 2', 'both databases have their two jobs');
($ret, $out, $err) = $node->psql('app', 'BEGIN; DROP EXTENSION extension_tokens; ROLLBACK;');
is($jobs_of->('app'), '2', 'a drop rolled back keeps the jobs');
($ret, $out, $err) = $node->psql('app', 'DROP EXTENSION extension_tokens');
is($ret, 0, 'DROP EXTENSION succeeds');
unlike($err, qr/WARNING/, 'DROP EXTENSION says nothing when the jobs are removed');
is($jobs_of->('app'), '0', 'DROP EXTENSION leaves no job of its database in cron.job');
is($jobs_of->('app2'), '2', "another database's jobs stay");
($ret, $out, $err) = $node->psql('app2', 'DROP SCHEMA tok CASCADE');
is($jobs_of->('app2'), '0', 'DROP SCHEMA ... CASCADE that drops the extension removes its jobs too');
($ret, $out, $err) = $node->psql('app', 'CREATE EXTENSION extension_tokens');
is($jobs_of->('app'), '2', 'installing again schedules again');

# DROP DATABASE (no event trigger fires for it: the object access hook)
# removes the jobs of the database it drops, and only those.
$node->safe_psql('postgres', 'CREATE DATABASE app3');
$node->safe_psql('app3', 'CREATE EXTENSION extension_tokens');
is($jobs_of->('app3'), '2', 'a third database has its jobs');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app3');
is($ret, 0, 'DROP DATABASE succeeds');
unlike($err, qr/WARNING/, 'DROP DATABASE says nothing when the jobs are removed');
is($jobs_of->('app3'), '0', 'DROP DATABASE leaves no job of that database in cron.job');
is($jobs_of->('app'), '2', "the other databases' jobs stay");
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app2');
is($ret, 0, 'dropping a database without the extension (or its jobs) succeeds, silently')
  or diag($err);

# The job runs as the extension's owner (a superuser), in a database whose
# owner need not be one.  Its command named the schema: the database owner
# renamed the schema, made a new one by the old name and put his own
# extension_tokens_cleanup() there, and pg_cron ran it as superuser.  Now
# it finds the function by its membership in the extension.  So for
# extension_token_api_key_list(), whose body named the schema too.
$node->safe_psql('postgres', 'CREATE ROLE regress_dbowner LOGIN');
$node->safe_psql('postgres', 'CREATE DATABASE owned OWNER regress_dbowner');
$node->safe_psql('owned', 'CREATE EXTENSION extension_tokens');
$node->safe_psql('owned', "SELECT extension_tokens_cleanup_schedule('* * * * *')");
$node->safe_psql('owned', "SELECT count(*) FROM extension_token_issue('victim', 'a session')");
my $planted_at = $node->safe_psql('postgres', 'SELECT now()');
$node->safe_psql('owned', q{
ALTER SCHEMA public RENAME TO moved;
CREATE SCHEMA public;
CREATE TABLE public.pwned(what text, who text, superuser boolean);
GRANT ALL ON public.pwned TO PUBLIC;
CREATE FUNCTION public.extension_tokens_cleanup() RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO public.pwned SELECT 'cleanup', current_user, rolsuper FROM pg_roles WHERE rolname = current_user
  RETURNING 0::bigint $$;
CREATE FUNCTION public.extension_tokens_cleanup(interval) RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO public.pwned SELECT 'cleanup(interval)', current_user, rolsuper FROM pg_roles WHERE rolname = current_user
  RETURNING 0::bigint $$;
CREATE FUNCTION public.extension_token_list(text) RETURNS SETOF moved.extension_token_session LANGUAGE sql AS $$
  INSERT INTO public.pwned SELECT 'list', current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
  SELECT * FROM moved.extension_token_list($1) $$;
}, extra_params => [ '-U', 'regress_dbowner' ]);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		  WHERE j.jobname = 'extension_tokens_cleanup:owned' AND d.start_time > '$planted_at'
		    AND d.status = 'succeeded'"),
	'after the schema was renamed and a function planted by the old name, pg_cron ran the cleanup');
is($node->safe_psql('owned', 'SELECT count(*) FROM moved.extension_token_api_key_list(\'victim\')'), '0',
	'a superuser lists the API keys through the moved schema');
is($node->safe_psql('owned', "SELECT coalesce(string_agg(what || ' as ' || who, ', '), 'nothing') FROM public.pwned"),
	'nothing', 'neither ran the database owner\'s planted functions');
$node->safe_psql('postgres', 'DROP DATABASE owned');

# ALTER DATABASE ... RENAME TO: the jobs are named after the database and run
# in it by name; they move to the new name, schedule, command and user kept
# (a ProcessUtility hook and the commit: src/uninstall.c).  Before, the
# cleanup stopped (its database was gone) and DROP DATABASE left the jobs.
$node->safe_psql('postgres', 'CREATE DATABASE app4');
$node->safe_psql('app4', 'CREATE EXTENSION extension_tokens');
$node->safe_psql('app4', "SELECT extension_tokens_cleanup_schedule('* * * * *')");
my $job_of = sub {
	$node->safe_psql('postgres',
		"SELECT schedule || '|' || database || '|' || username || '|' || command FROM cron.job
		  WHERE jobname = 'extension_tokens_cleanup:$_[0]'");
};
my $app4_job = $job_of->('app4');
like($app4_job, qr/^\* \* \* \* \*\|app4\|/, 'a fourth database has its cleanup job, every minute');
($ret, $out, $err) = $node->psql('postgres', 'BEGIN; ALTER DATABASE app4 RENAME TO app4b; ROLLBACK;');
is($jobs_of->('app4') . ' ' . $jobs_of->('app4b'), '2 0', 'a rename rolled back moves no job');
my $renamed_at = $node->safe_psql('postgres', 'SELECT now()');
($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE app4 RENAME TO app4b');
is($ret, 0, 'ALTER DATABASE ... RENAME TO succeeds');
unlike($err, qr/WARNING/, 'and says nothing when the jobs are moved');
is($jobs_of->('app4') . ' ' . $jobs_of->('app4b'), '0 2', 'the jobs now bear the new name, none the old');
(my $moved = $app4_job) =~ s/\|app4\|/|app4b|/;
is($job_of->('app4b'), $moved, 'the cleanup runs in the database by its new name, schedule, user and command kept');
like( $node->safe_psql('postgres',
		"SELECT command FROM cron.job WHERE jobname = 'extension_tokens_history:app4b'"),
	qr/'extension_tokens_cleanup:app4b', 'extension_tokens_history:app4b'/,
	'the history job trims the runs of the jobs by their new names');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		  WHERE j.jobname = 'extension_tokens_cleanup:app4b' AND d.database = 'app4b'
		    AND d.start_time > '$renamed_at' AND d.status = 'succeeded'"),
	'pg_cron runs the moved cleanup in the renamed database, and it succeeds');
# a database with jobs, renamed to the name of one without: the rename
# fails, under a savepoint of a transaction that commits
($ret, $out, $err) = $node->psql('postgres',
	"BEGIN;\nSAVEPOINT s;\nALTER DATABASE app RENAME TO postgres;\nROLLBACK TO s;\nCOMMIT;",
	on_error_stop => 0);
like($err, qr/already exists/, 'a rename that fails, in a transaction that commits ...');
is($jobs_of->('app') . ' ' . $jobs_of->('postgres'), '2 0', '... moves nothing');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app4b');
is($jobs_of->('app4b'), '0', 'DROP DATABASE of the renamed database removes its jobs');
is($jobs_of->('app'), '2', "the other databases' jobs stay");

$node->stop;

# Without pg_cron: a warning that says what to do, and no failure.
my $plain = PostgreSQL::Test::Cluster->new('nocron');
$plain->init;
$plain->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
});
$plain->start;
($ret, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION extension_tokens');
is($ret, 0, 'CREATE EXTENSION without pg_cron succeeds');
like($err, qr/WARNING:  pg_cron is not loaded: schedule SELECT extension_tokens_cleanup\(\) yourself/,
	'without pg_cron a warning says how to schedule the cleanup');
is($plain->safe_psql('postgres', 'SELECT extension_tokens_cleanup()'), '0',
	'the cleanup itself works without pg_cron');
($ret, $out, $err) = $plain->psql('postgres', 'SELECT extension_tokens_cleanup_schedule()');
like($err, qr/could not schedule the cleanup job: pg_cron is not loaded/,
	'asking for a schedule without pg_cron is a clear error');
$plain->stop;

# Without the library preloaded: CREATE EXTENSION warns, and says how.
my $lazy = PostgreSQL::Test::Cluster->new('nopreload');
$lazy->init;
$lazy->append_conf('postgresql.conf', qq{extension_tokens.jwt_secret = '$secret'});
$lazy->start;
($ret, $out, $err) = $lazy->psql('postgres', 'CREATE EXTENSION extension_tokens');
is($ret, 0, 'CREATE EXTENSION without the library preloaded succeeds');
like($err, qr/WARNING:  extension_tokens is not in shared_preload_libraries/,
	'without preloading a warning says the library must be preloaded');
like($err, qr/HINT:  Add extension_tokens to shared_preload_libraries/,
	'and how');
$lazy->stop;

# Nor any secret: the 55000 says the missing preload is (part of) the cause.
my $bare = PostgreSQL::Test::Cluster->new('nopreload_nosecret');
$bare->init;
$bare->start;
$bare->psql('postgres', 'CREATE EXTENSION extension_tokens');
($ret, $out, $err) = $bare->psql('postgres', "SELECT extension_token_issue('u')");
like($err, qr/DETAIL:  The library is not in shared_preload_libraries/,
	'without preload and secret, the 55000 says the library is not preloaded');
like($err, qr/HINT:  Add extension_tokens to shared_preload_libraries, set extension_tokens.jwt_secret_file/,
	'and what to do');
$bare->stop;

done_testing();
