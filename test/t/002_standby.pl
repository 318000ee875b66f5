# 002_standby.pl: a streaming-replication hot standby.
#
# The standby runs the same library (preloaded) with the same secret, as a
# read-only replica behind a load balancer would.  It must validate what the
# primary issued once that is replayed, see the primary's revocations and
# rotations, never try to write (not even last_used_at, which validation on a
# primary records), and refuse what needs a write (refresh, issue, revoke)
# with a clear read-only error instead of crashing, hanging or half-working.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
log_statement = none
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');
$primary->backup('backup');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
# The backup's postgresql.conf already preloads the library with the same
# secret; say so again, as a standby's own configuration would.
$standby->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
});
$standby->start;

sub pq { return $primary->safe_psql('postgres', $_[0]); }
sub sq { return $standby->safe_psql('postgres', $_[0]); }

sub catch_up { $primary->wait_for_catchup($standby, 'replay'); return; }

# Runs SQL on the standby in a session of its own: (ok, stdout, stderr).
sub s_try
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $standby->psql('postgres',
		"\\set VERBOSITY verbose\nSET statement_timeout = '20s';\n$sql");
	return ($ret == 0, $out, $err);
}

my $primary_started = pq('SELECT pg_postmaster_start_time()');
my $standby_started = sq('SELECT pg_postmaster_start_time()');

is(sq('SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery (hot standby)');
is(sq('SHOW shared_preload_libraries'), 'extension_tokens',
	'the standby preloads extension_tokens');

# ---------------------------------------------------------------------
# Validation on the standby.
# ---------------------------------------------------------------------
my $user = 'a0000000-0000-4000-8000-00000000000a';
my ($at, $rt, $sid) = split /\|/, pq(
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('$user', 'standby test')");
catch_up();
my $last_used_before =
  pq("SELECT last_used_at FROM extension_token_sessions WHERE session_id = '$sid'");

is( sq("SELECT valid, error IS NULL, user_id, session_id FROM extension_token_validate('$at')"),
	"t|t|$user|$sid",
	'standby: the access token issued on the primary validates after replay, with its user and session');

my ($ok, $out, $err) = s_try(
	"SET extension_tokens.last_used_interval = 0;
	 SELECT valid, error IS NULL FROM extension_token_validate('$at');
	 SELECT valid, error IS NULL FROM extension_token_validate('$at');");
ok($ok && $err eq '', 'standby: validate with last_used_interval = 0 (the write path on a primary) does not error')
  or diag $err;
is($out, "t|t\nt|t", 'standby: validate with last_used_interval = 0 answers valid, twice');

($ok, $out, $err) = s_try(
	"SET extension_tokens.last_used_interval = 0;
	 BEGIN;
	 SELECT valid FROM extension_token_validate('$at');
	 SELECT valid FROM extension_token_validate('$at');
	 COMMIT;");
ok($ok && $err eq '' && $out eq "t\nt",
	'standby: validate with last_used_interval = 0 inside an explicit transaction works and commits')
  or diag "out: $out\nerr: $err";

is( sq("SELECT error FROM extension_token_validate('$rt')"),
	'wrong_token_type', 'standby: a refresh token given to validate is wrong_token_type');
is( sq("SELECT error FROM extension_token_validate('x' || '$at')"),
	'malformed', 'standby: a damaged token is malformed');

# On the primary a validation is a use that the background worker records
# (1.2: never in the caller's transaction): last_used_at moves on and
# use_count counts it, within a few seconds.  The standby's validations
# above are not counted there (use_count counts the primary's).
pq("SELECT pg_sleep(0.01)");
pq("SELECT valid FROM extension_token_validate('$at')");
ok( $primary->poll_query_until('postgres',
		"SELECT last_used_at <> '$last_used_before' AND use_count = 1
		   FROM extension_token_sessions WHERE session_id = '$sid'"),
	'primary: a validation is recorded by the worker (last_used_at moves on, use_count = 1: the standby\'s are not counted)');

# ---------------------------------------------------------------------
# What needs a write fails on the standby, cleanly.
# ---------------------------------------------------------------------
($ok, $out, $err) = s_try("SELECT access_token FROM extension_token_refresh('$rt', '$at')");
ok(!$ok, 'standby: refresh fails');
like($err, qr/25006|read-only transaction/,
	'standby: refresh fails with a read-only error (SQLSTATE 25006)');
unlike($err, qr/57014|statement timeout|server closed the connection|terminated/,
	'standby: refresh neither hangs nor loses the connection');
note "standby refresh error: $err";

($ok, $out, $err) = s_try("SELECT access_token FROM extension_token_issue('$user', 'on the standby')");
ok(!$ok && $err =~ /25006|read-only transaction/, 'standby: issue fails with a read-only error (SQLSTATE 25006)')
  or diag $err;

($ok, $out, $err) = s_try("SELECT extension_token_revoke('$at')");
ok(!$ok && $err =~ /25006|read-only transaction/, 'standby: revoke fails with a read-only error (SQLSTATE 25006)')
  or diag $err;

($ok, $out, $err) = s_try("SELECT revoke_user_extension_tokens('$user')");
ok(!$ok && $err =~ /25006|read-only transaction/,
	'standby: revoke_user_extension_tokens fails with a read-only error (SQLSTATE 25006)')
  or diag $err;

is( sq("SELECT count(*) FROM extension_token_list('$user')"),
	'1', 'standby: extension_token_list (read-only) works and shows the one session');

# The refused refresh used nothing up: the primary still exchanges it.
my ($at2, $rt2) = split /\|/,
  pq("SELECT access_token, refresh_token FROM extension_token_refresh('$rt', '$at')");
like($rt2, qr/^ext_rt_/, 'primary: the refresh token the standby refused is still exchanged on the primary');
catch_up();
is(sq("SELECT coalesce(error, 'valid') FROM extension_token_validate('$at2')"),
	'valid', 'standby: the access token from a refresh on the primary validates after replay');
is(sq("SELECT error FROM extension_token_validate('$at')"),
	'revoked', 'standby: the access token replaced by that refresh is revoked after replay');

# Reuse of an exchanged refresh token, presented to the standby with no
# retry window: the revocation it calls for cannot be written there.  The
# call must still fail promptly.
# (A standby's revoker worker starts only once recovery has finished;
# refresh refuses read-only transactions before it could queue anything.
# The 5 s statement_timeout turns a hang into a failure.)
($ok, $out, $err) = s_try(
	"SET statement_timeout = '5s';
	 SET extension_tokens.refresh_retry_window = 0;
	 SELECT access_token FROM extension_token_refresh('$rt')");
ok(!$ok, 'standby: reuse of an exchanged refresh token fails');
note "standby reuse error: $err";
unlike($err, qr/57014|statement timeout/,
	'standby: reuse of an exchanged refresh token fails without hanging (no statement timeout)');
like($err, qr/PT401|25006|read-only/,
	'standby: reuse of an exchanged refresh token is refused (PT401) or read-only (25006)');

# ---------------------------------------------------------------------
# Revocation on the primary reaches the standby.
# ---------------------------------------------------------------------
is(pq("SELECT extension_token_revoke('$at2')"), 't', 'primary: revoke of the current access token succeeds');
catch_up();
is(sq("SELECT valid::text || ',' || error FROM extension_token_validate('$at2')"),
	'false,revoked', "standby: after replay the revoked access token says error='revoked'");
($ok, $out, $err) = s_try(
	"SET extension_tokens.last_used_interval = 0;
	 SELECT error FROM extension_token_validate('$at2')");
ok($ok && $out eq 'revoked', 'standby: and so it does with last_used_interval = 0, without error')
  or diag $err;

my ($at3) = split /\|/, pq("SELECT access_token FROM extension_token_issue('$user', 'second')");
pq("SELECT revoke_user_extension_tokens('$user')");
catch_up();
is(sq("SELECT error FROM extension_token_validate('$at3')"),
	'revoked', "standby: after replay of revoke_user_extension_tokens the user's token is revoked");

# A reuse detected on the primary: the primary's revoker worker commits the
# revocation, and the standby replays it.
my ($at4, $rt4, $sid4) = split /\|/, pq(
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('$user', 'reused')");
my ($at5) = split /\|/, pq("SELECT access_token, refresh_token FROM extension_token_refresh('$rt4')");
my ($pret, $pout, $perr) = $primary->psql('postgres',
	"\\set VERBOSITY verbose\nSET extension_tokens.refresh_retry_window = 0;\n"
	  . "SELECT access_token FROM extension_token_refresh('$rt4')");
like($perr, qr/PT401.*\n.*refresh_token_already_used/,
	'primary: presenting an exchanged refresh token again is PT401 refresh_token_already_used');
ok( $primary->poll_query_until('postgres',
		"SELECT status || ',' || revoked_reason FROM extension_token_list('$user') WHERE session_id = '$sid4'",
		'revoked,refresh_token_reuse'),
	'primary: the reuse revoked the session (committed by the revoker worker)');
catch_up();
is(sq("SELECT error FROM extension_token_validate('$at5')"),
	'revoked', 'standby: after replay the access token of the session revoked for reuse is revoked');
is( sq("SELECT status || ',' || revoked_reason FROM extension_token_list('$user') WHERE session_id = '$sid4'"),
	'revoked,refresh_token_reuse', 'standby: and its list says revoked, refresh_token_reuse');

# ---------------------------------------------------------------------
# Nothing restarted, nothing crashed.
# ---------------------------------------------------------------------
is(pq('SELECT pg_postmaster_start_time()'), $primary_started, 'the primary never restarted');
is(sq('SELECT pg_postmaster_start_time()'), $standby_started, 'the standby never restarted');
is(sq('SELECT pg_is_in_recovery()'), 't', 'the standby is still a standby');
for my $node ($primary, $standby)
{
	my $log = slurp_file($node->logfile);
	unlike($log, qr/terminated by signal|PANIC|was terminated by exception/,
		$node->name . ': the server log has no crashed process');
}

$standby->stop;
$primary->stop;
done_testing();
