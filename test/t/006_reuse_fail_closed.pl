# 006_reuse_fail_closed.pl: refresh-token reuse detection cannot be skipped.
#
# Presenting an exchanged refresh token again (outside the retry window) is
# theft: the call fails with PT401 refresh_token_already_used and the whole
# session is revoked.  The revocation must outlive the failing call, so it is
# committed by the extension's static background worker ("extension_tokens
# revoker"), and from the moment of detection the session counts as revoked.
# 1.1 started a dynamic background worker for it, and whoever could fill
# max_worker_processes escaped detection.  Here every resource that an
# attacker or an unlucky configuration can take away is taken away:
#
#   (a) no dynamic background worker slot is free: max_worker_processes is
#       the static workers plus two, and two parallel workers of a long scan
#       hold those two (pg_stat_activity shows them; a third parallel query
#       gets no worker at all);
#   (b) lock_timeout = 1ms and statement_timeout = 50ms for the database,
#       while another transaction holds the session's row locked: the
#       session is refused at once (pending revocation), and the revocation
#       commits when the lock goes;
#   (c) a restart (clean, and immediate) after the worker committed: the
#       revocation is durable;
#   (d) a server without extension_tokens in shared_preload_libraries has no
#       revocation queue: refresh refuses to run (55000), validate works;
#   (e) an entry queued for a database whose extension is then dropped does
#       not keep the worker from another database's revocation;
#   (f) nor does an open transaction holding session rows locked: the other
#       databases' revocations, this one's other revocations and the uses of
#       its other sessions are committed while the lock is held, and the
#       locked session's once it goes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

# The static background workers of this cluster: the extension's revoker and
# PostgreSQL's logical replication launcher (no pg_cron here).
my $static_workers = 2;

my $node = PostgreSQL::Test::Cluster->new('failclosed');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
log_statement = none
max_worker_processes = @{[ $static_workers + 2 ]}
max_parallel_workers = 8
max_parallel_workers_per_gather = 2
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

# ---------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------

sub q1 { my ($sql, $db) = @_; return $node->safe_psql($db // 'postgres', $sql); }

# Runs SQL in a session of its own: (ok, stdout, stderr), errors verbose.
sub try_sql
{
	my ($sql, $db, %opts) = @_;
	my ($ret, $out, $err) = $node->psql($db // 'postgres', "\\set VERBOSITY verbose\n$sql",
		on_error_stop => $opts{go_on} ? 0 : 1);
	return ($ret == 0, $out // '', $err // '');
}

sub issue
{
	my ($user, $name, $db) = @_;
	return split /\|/, q1(
		"SELECT access_token, refresh_token, session_id FROM extension_token_issue('$user', '$name')", $db);
}

sub refresh
{
	my ($rt, $db) = @_;
	return split /\|/, q1(
		"SELECT access_token, refresh_token FROM extension_token_refresh('$rt')", $db);
}

sub validate_error
{
	my ($at, $db) = @_;
	return q1("SELECT coalesce(error, 'valid') FROM extension_token_validate('$at')", $db);
}

sub list_state
{
	my ($user, $sid, $db) = @_;
	return q1(
		"SELECT status || ',' || coalesce(revoked_reason, '') FROM extension_token_list('$user')
		  WHERE session_id = '$sid'", $db);
}

my $pt401_reuse = qr/PT401: refresh token rejected\nDETAIL:  refresh_token_already_used/;
my $pt401_revoked = qr/PT401: refresh token rejected\nDETAIL:  session_revoked/;

is($node->safe_psql('postgres', 'SHOW max_worker_processes'), $static_workers + 2,
	'max_worker_processes is the static workers plus two');
my $log = slurp_file($node->logfile);
unlike($log, qr/too many background workers/,
	'every static background worker (the revoker among them) was registered');

# ---------------------------------------------------------------------
# (a) No background worker slot is free.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE filler AS SELECT g AS x FROM generate_series(1, 200000) g;
ANALYZE filler;
CREATE TABLE small AS SELECT g AS x FROM generate_series(1, 1000) g;
ANALYZE small;
});
my $parallel = q{
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET parallel_leader_participation = off;
};
# A scan that sleeps 10 ms per row in each of its two workers: hours, unless
# cancelled at the end of (a).
my $hog = $node->background_psql('postgres', on_error_stop => 0);
my $hog_pid = $hog->query_safe('SELECT pg_backend_pid()');
$hog->query_safe($parallel);
$hog->query_until(qr/hog-started/, q{\echo hog-started
SELECT count(*) FROM filler WHERE pg_sleep(0.01) IS NOT NULL;
});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parallel worker' AND leader_pid = $hog_pid",
		'2'),
	'(a) two parallel workers of a long scan hold the two dynamic worker slots (pg_stat_activity)');
my $explain = $node->safe_psql('postgres',
	"$parallel EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(*) FROM small");
like($explain, qr/Workers Planned: 2/, '(a) a third parallel query plans two workers');
like($explain, qr/Workers Launched: 0/,
	'(a) and launches none: no background worker slot is free') or diag $explain;

my $ua = 'auth0|reuse-no-slots';
my ($a_at0, $a_rt0, $a_sid) = issue($ua, 'no free worker slot');
my ($a_at1, $a_rt1) = refresh($a_rt0);
like($a_rt1, qr/^ext_rt_/, '(a) r0 was exchanged for r1');

# The reuse, and validate of the current access token right after it, in the
# same session.
my ($ok, $out, $err) = try_sql(
	"SET extension_tokens.refresh_retry_window = 0;
	 SELECT access_token FROM extension_token_refresh('$a_rt0');
	 SELECT 'after:' || coalesce(error, 'valid') FROM extension_token_validate('$a_at1');",
	'postgres', go_on => 1);
like($err, $pt401_reuse, '(a) presenting r0 again fails with PT401 refresh_token_already_used');
unlike($out, qr/eyJ|ext_rt_/, '(a) and returns no token');
like($out, qr/^after:revoked$/m,
	'(a) validate of the current access token right after the PT401 says revoked');

is(validate_error($a_at1), 'revoked', '(a) validate of the current access token says revoked');
($ok, $out, $err) = try_sql("SELECT access_token FROM extension_token_refresh('$a_rt1')");
like($err, $pt401_revoked, '(a) the successor refresh token r1 is refused: PT401 session_revoked');
ok( $node->poll_query_until('postgres',
		"SELECT status || ',' || revoked_reason FROM extension_token_list('$ua') WHERE session_id = '$a_sid'",
		'revoked,refresh_token_reuse'),
	"(a) extension_token_list says revoked, reason refresh_token_reuse (the worker committed)");

# A reuse seen by a transaction that holds a transaction id (so the call does
# not wait for the worker): the session is refused from the moment of
# detection, by other sessions too.
my ($b_at0, $b_rt0, $b_sid) = issue($ua, 'no free worker slot, in a transaction');
my ($b_at1, $b_rt1) = refresh($b_rt0);
($ok, $out, $err) = try_sql(
	"BEGIN;
	 SELECT txid_current() > 0;
	 SET LOCAL extension_tokens.refresh_retry_window = 0;
	 SELECT access_token FROM extension_token_refresh('$b_rt0');
	 ROLLBACK;");
like($err, $pt401_reuse,
	'(a) in a transaction with a transaction id, presenting r0 again fails with PT401 refresh_token_already_used');
is(validate_error($b_at1), 'revoked',
	'(a) the session is refused at once by other connections, though the detecting transaction rolled back');
ok( $node->poll_query_until('postgres',
		"SELECT status || ',' || revoked_reason FROM extension_token_list('$ua') WHERE session_id = '$b_sid'",
		'revoked,refresh_token_reuse'),
	'(a) and the revocation is committed (list: revoked, refresh_token_reuse)');

is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parallel worker' AND leader_pid = $hog_pid"),
	'2', '(a) the two parallel workers held their slots throughout');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($hog_pid)");
$hog->quit;

# ---------------------------------------------------------------------
# (b) lock_timeout = 1ms, statement_timeout = 50ms, the row locked.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE strict');
$node->safe_psql('strict', 'CREATE EXTENSION extension_tokens');
my $ub = 'user_2strict';
my ($s_at0, $s_rt0, $s_sid) = issue($ub, 'locked row', 'strict');
my ($s_at1, $s_rt1) = refresh($s_rt0, 'strict');
$node->safe_psql('postgres', q{
ALTER DATABASE strict SET lock_timeout = '1ms';
ALTER DATABASE strict SET statement_timeout = '50ms';
});
is($node->safe_psql('strict', 'SHOW lock_timeout') . ',' . $node->safe_psql('strict', 'SHOW statement_timeout'),
	'1ms,50ms', '(b) the database has lock_timeout = 1ms and statement_timeout = 50ms');

my $locker = $node->background_psql('strict');
$locker->query_safe('BEGIN');
$locker->query_safe(
	"SELECT 1 FROM extension_token_sessions WHERE session_id = '$s_sid' FOR UPDATE");

my $b_log = -s $node->logfile;
($ok, $out, $err) = try_sql(
	"SET extension_tokens.refresh_retry_window = 0;
	 SELECT access_token FROM extension_token_refresh('$s_rt0');", 'strict');
ok(!$ok && $out !~ /eyJ|ext_rt_/,
	'(b) presenting r0 again while the row is locked fails and returns no token (fail closed)')
  or diag "out: $out\nerr: $err";
like($err, $pt401_reuse,
	'(b) presenting r0 again while the row is locked fails with PT401 refresh_token_already_used');
note "reuse while the row is locked: $err";

is(validate_error($s_at1, 'strict'), 'revoked',
	'(b) while the lock is held, validate of the current access token (a third connection) says revoked');
($ok, $out, $err) = try_sql("SELECT access_token FROM extension_token_refresh('$s_rt1')", 'strict');
ok(!$ok && $out !~ /eyJ|ext_rt_/,
	'(b) while the lock is held, the successor refresh token r1 is refused (no token returned)')
  or diag "out: $out\nerr: $err";
like($err, $pt401_revoked, '(b) while the lock is held, r1 is refused with PT401 session_revoked');
like(list_state($ub, $s_sid, 'strict'), qr/^revoked,/,
	'(b) while the lock is held, extension_token_list says revoked, as validate does (one rule for a session\'s end)');

# The worker waits for the lock a second at a time (its own lock_timeout,
# not the database's 1ms), and tries again: the revocation stays queued, and
# the session refused, for as long as the lock is held.  The lock's failures
# are logged once a minute, not at every try.
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity
		  WHERE backend_type = 'extension_tokens revoker' AND datname = 'strict' AND wait_event_type = 'Lock'"),
	'(b) the revoker worker waits for the row lock');
sleep 4;
is($node->safe_psql('strict', "SELECT revoked_at IS NULL FROM extension_token_sessions WHERE session_id = '$s_sid'"),
	't', '(b) four seconds later the revocation is not committed yet (the row is still locked)');
is(validate_error($s_at1, 'strict'), 'revoked', '(b) the session is still refused while the lock is held');
my @b_lines = slurp_file($node->logfile, $b_log) =~ /committing a revocation failed, trying again: canceling statement due to lock timeout/g;
is(scalar(@b_lines), 1, '(b) the worker tried again and again, and logged the lock timeout once');
unlike(slurp_file($node->logfile, $b_log), qr/statement timeout/,
	'(b) the database\'s statement_timeout does not apply to the worker');

$locker->query_safe('ROLLBACK');
$locker->quit;
ok( $node->poll_query_until('strict',
		"SELECT status || ',' || revoked_reason FROM extension_token_list('$ub') WHERE session_id = '$s_sid'",
		'revoked,refresh_token_reuse'),
	'(b) after the locking transaction rolled back, the revocation commits (list: revoked, refresh_token_reuse)');
is(validate_error($s_at1, 'strict'), 'revoked', '(b) the current access token stays revoked');
($ok, $out, $err) = try_sql("SELECT access_token FROM extension_token_refresh('$s_rt1')", 'strict');
like($err, $pt401_revoked, '(b) r1 is refused with PT401 session_revoked once the revocation committed');

# ---------------------------------------------------------------------
# (c) Restarts after the worker committed.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'ALTER DATABASE strict RESET ALL');
my @revoked = (
	[ 'postgres', $ua, $a_sid, $a_at1, $a_rt1, 'no free worker slot' ],
	[ 'postgres', $ua, $b_sid, $b_at1, $b_rt1, 'detected in a transaction' ],
	[ 'strict',   $ub, $s_sid, $s_at1, $s_rt1, 'locked row' ]);
for my $how ('fast', 'immediate')
{
	if ($how eq 'fast') { $node->restart; }
	else { $node->stop('immediate'); $node->start; }
	for my $r (@revoked)
	{
		my ($db, $user, $sid, $at, $rt, $what) = @$r;
		is(list_state($user, $sid, $db), 'revoked,refresh_token_reuse',
			"(c) after a $how restart, the $what session is still revoked (refresh_token_reuse)");
		is(validate_error($at, $db), 'revoked', "(c) after a $how restart, its access token says revoked");
		($ok, $out, $err) = try_sql("SELECT access_token FROM extension_token_refresh('$rt')", $db);
		like($err, $pt401_revoked, "(c) after a $how restart, its refresh token is refused (session_revoked)");
	}
}

# ---------------------------------------------------------------------
# (e) A database whose extension was dropped with an entry still queued.
# ---------------------------------------------------------------------
# The worker retried such an entry forever and served no other database: a
# reuse detected elsewhere waited in shared memory only, and a restart lost
# it.  The worker is stopped (SIGSTOP) so that the entry is still queued
# when the extension goes.
$node->safe_psql('postgres', 'CREATE DATABASE dropped');
$node->safe_psql('postgres', 'CREATE DATABASE kept');
$node->safe_psql($_, 'CREATE EXTENSION extension_tokens') for ('dropped', 'kept');
my ($e_at0, $e_rt0, $e_sid) = split /\|/, q1(
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2wedge', 'kept')", 'kept');
my ($e_at1, $e_rt1) = split /\|/, q1("SELECT access_token, refresh_token FROM extension_token_refresh('$e_rt0')", 'kept');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'extension_tokens revoker'"),
	'(e) the worker runs');
my $e_worker = q1("SELECT pid FROM pg_stat_activity WHERE backend_type = 'extension_tokens revoker'");
kill 'STOP', $e_worker;
($ok, $out, $err) = try_sql("SET extension_tokens.issue_rate_limit = 1;
	SELECT count(*) FROM extension_token_issue('user_2wedgeA');
	SELECT count(*) FROM extension_token_issue('user_2wedgeA');", 'dropped');
like($err, qr/PT429/, '(e) a rate-limit refusal in one database queues its event for the worker');
q1('DROP EXTENSION extension_tokens', 'dropped');
my $e_log = -s $node->logfile;
kill 'CONT', $e_worker;
($ok, $out, $err) = try_sql("SET extension_tokens.refresh_retry_window = 0;
	SELECT access_token FROM extension_token_refresh('$e_rt0')", 'kept');
like($err, $pt401_reuse, '(e) meanwhile a reuse in another database: PT401 refresh_token_already_used');
ok( $node->poll_query_until('kept',
		"SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$e_sid'",
		'refresh_token_reuse'),
	'(e) the worker commits that revocation (it no longer retries the dropped database\'s entry)');
like(slurp_file($node->logfile, $e_log), qr/no longer has the extension; what was queued for it is dropped/,
	'(e) and says it dropped what was queued for the database without the extension');
$node->restart;
is(validate_error($e_at1, 'kept'), 'revoked', '(e) after a restart, the thief\'s access token is still revoked');

# ---------------------------------------------------------------------
# (f) An open transaction holding session rows locked in one database.
# ---------------------------------------------------------------------
# The worker waited for such a lock for as long as it was held: the
# revocations of every other database, and the other entries of this one,
# waited in shared memory only, and so did the uses.  Now a lock is waited
# for a second at a time, the databases with queued entries are served in
# turn, and the use write skips a locked row (its uses are kept).
$node->safe_psql('postgres', 'CREATE DATABASE held');
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql($_, 'CREATE EXTENSION extension_tokens') for ('held', 'other');
my (%f_at, %f_rt, %f_sid);
for my $k ('locked', 'beside', 'used', 'free')
{
	my ($at0, $rt0, $sid) = issue("user_2f$k", "f $k", 'held');
	my ($at1, $rt1) = refresh($rt0, 'held');
	($f_at{$k}, $f_rt{$k}, $f_sid{$k}) = ($at1, $rt0, $sid);
}
my ($o_at0, $o_rt0, $o_sid) = issue('user_2fother', 'f other', 'other');
my ($o_at1, $o_rt1) = refresh($o_rt0, 'other');

my $holder = $node->background_psql('held');
$holder->query_safe('BEGIN');
$holder->query_safe(
	"SELECT 1 FROM extension_token_sessions WHERE session_id IN ('$f_sid{locked}', '$f_sid{used}') FOR UPDATE");

# Uses of a locked row and of a free one; the reuse of the locked session
# queues its revocation first, then the reuses of the others follow it.
for my $k ('used', 'free')
{
	is(q1("SELECT coalesce(error, 'valid') FROM extension_token_validate('$f_at{$k}');\n" x 3, 'held'),
		"valid\nvalid\nvalid", "(f) three validations of the $k session's access token");
}
for my $c ([ 'locked', 'held' ], [ 'beside', 'held' ], [ 'other', 'other' ])
{
	my ($k, $db) = @$c;
	my $rt = $k eq 'other' ? $o_rt0 : $f_rt{$k};
	($ok, $out, $err) = try_sql("SET extension_tokens.refresh_retry_window = 0;
		SELECT access_token FROM extension_token_refresh('$rt')", $db);
	like($err, $pt401_reuse, "(f) a reuse of the $k session's refresh token: PT401 refresh_token_already_used");
}

ok( $node->poll_query_until('other',
		"SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$o_sid'",
		'refresh_token_reuse'),
	'(f) the reuse in another database is committed while the lock is held');
ok( $node->poll_query_until('held',
		"SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$f_sid{beside}'",
		'refresh_token_reuse'),
	'(f) so is the reuse queued after the locked session\'s, in the same database');
ok( $node->poll_query_until('held',
		"SELECT use_count FROM extension_token_sessions WHERE session_id = '$f_sid{free}'", '3'),
	'(f) the uses of an unlocked session are written (use_count 3)');
is(q1("SELECT (revoked_at IS NULL) || ',' || use_count FROM extension_token_sessions
	   WHERE session_id IN ('$f_sid{locked}', '$f_sid{used}') ORDER BY session_id = '$f_sid{used}'", 'held'),
	"true,0\ntrue,0", '(f) the locked rows are not written while the lock is held');
is(validate_error($f_at{locked}, 'held'), 'revoked', '(f) and the locked session is refused meanwhile');
like(q1("SELECT wait_event_type FROM pg_stat_activity WHERE pid = " . $holder->query_safe('SELECT pg_backend_pid()')),
	qr/Client/, '(f) the locking transaction is still open, idle');

$holder->query_safe('ROLLBACK');
$holder->quit;
ok( $node->poll_query_until('held',
		"SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$f_sid{locked}'",
		'refresh_token_reuse'),
	'(f) once the lock goes, the locked session\'s revocation commits');
ok( $node->poll_query_until('held',
		"SELECT use_count FROM extension_token_sessions WHERE session_id = '$f_sid{used}'", '3'),
	'(f) and the uses kept for the locked row are written: use_count 3, counted once');
is(q1("SELECT use_count FROM extension_token_sessions WHERE session_id = '$f_sid{free}'", 'held'),
	'3', '(f) the unlocked session\'s count was not written twice');
$node->stop;

# ---------------------------------------------------------------------
# (d) Without shared_preload_libraries: refresh refuses, validate works.
# ---------------------------------------------------------------------
my $lazy = PostgreSQL::Test::Cluster->new('nopreload');
$lazy->init;
$lazy->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
log_statement = none
});
$lazy->start;
$lazy->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');
my $ud = 'd-user';
my ($d_at0, $d_rt0, $d_sid) = split /\|/, $lazy->safe_psql('postgres',
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('$ud', 'preloaded, then not')");
my ($d_at1, $d_rt1) = split /\|/, $lazy->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_refresh('$d_rt0')");
like($d_rt1, qr/^ext_rt_/, '(d) with the library preloaded, r0 was exchanged for r1');
# The last setting wins: the library is no longer preloaded.
$lazy->append_conf('postgresql.conf', "shared_preload_libraries = ''\n");
$lazy->restart;
is($lazy->safe_psql('postgres', 'SHOW shared_preload_libraries'), '',
	'(d) the server now runs without extension_tokens in shared_preload_libraries');

for my $c ([ $d_rt1, 'the current refresh token r1' ], [ $d_rt0, 'the exchanged refresh token r0' ])
{
	my ($rt, $what) = @$c;
	my ($ret, $o, $e) = $lazy->psql('postgres',
		"\\set VERBOSITY verbose\nSET extension_tokens.refresh_retry_window = 0;\n"
		  . "SELECT access_token FROM extension_token_refresh('$rt')");
	like($e, qr/ERROR:  55000: extension_tokens must be in shared_preload_libraries to refresh tokens/,
		"(d) refresh of $what raises 55000 (it will not run without reuse detection)");
	unlike($o // '', qr/eyJ|ext_rt_/, "(d) and returns no token");
}
is($lazy->safe_psql('postgres', "SELECT coalesce(error, 'valid') FROM extension_token_validate('$d_at1')"),
	'valid', '(d) validate works without the preload: the current access token is valid');
is($lazy->safe_psql('postgres', "SELECT coalesce(error, 'valid') FROM extension_token_validate('$d_at0')"),
	'revoked', '(d) and the rotated one is revoked');
is( $lazy->safe_psql('postgres',
		"SELECT refresh_count || ',' || (revoked_at IS NULL) FROM extension_token_sessions WHERE session_id = '$d_sid'"),
	'1,true', '(d) the refused refreshes changed nothing: one exchange, not revoked');
$lazy->stop;

done_testing();
