# 001_crash.pl: SIGKILL of a backend in the middle of an issue or a refresh.
#
# A backend that dies by SIGKILL makes the postmaster terminate every backend
# and run crash recovery (restart_after_crash = on).  Whatever the killed
# transaction had written must vanish, whatever was committed must survive,
# and the token tables must never be left in a state that no sequence of
# whole calls could have produced.  From storage 1.2 on, the session's row
# is the truth (the hashes of its current access and refresh token), and
# extension_tokens holds only exchanged refresh tokens, each linked to its
# successor:
#
#   - every exchanged refresh token belongs to an existing session and is
#     not that session's current refresh token;
#   - a session's refresh_count is its number of exchanged refresh tokens;
#   - the last exchange of a session is linked to the session's current
#     refresh token (replaced_by = refresh_hash), and it is the one the
#     retry window remembers (retry_hash).
#
# "In the middle" is made exact with row locks: another session holds a
# FOR UPDATE lock on the session row, so that the refresh blocks inside
# extension_token_refresh() after it has taken its rate-limit slot (the
# user's row) but before the exchange (the UPDATE of the session row and the
# INSERT of the exchanged token), and an issue blocks after it has taken its
# rate-limit slot and written its own session row, in the revocation of the
# user's older session (max_sessions_per_user = 1).  The kill comes while
# the backend waits on that lock.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
restart_after_crash = on
log_statement = none
# Presenting the refresh token exchanged last again within this window
# returns the same successor pair (it does not revoke the session): a slow
# machine must not turn the "exchanged only once" checks below into reuse.
extension_tokens.refresh_retry_window = 60
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

# ---------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub hash_of { return "sha256(convert_to('$_[0]', 'UTF8'))"; }

sub issue
{
	my ($user, $name) = @_;
	my ($at, $rt, $sid) = split /\|/, q1(
		"SELECT access_token, refresh_token, session_id
		   FROM extension_token_issue('$user', '$name')");
	return ($at, $rt, $sid);
}

sub validate_error
{
	my ($token) = @_;
	return q1("SELECT coalesce(error, 'valid') FROM extension_token_validate('$token')");
}

# Runs a refresh in a session of its own; returns (ok, access, refresh, stderr).
sub try_refresh
{
	my ($rt, $at) = @_;
	my $cur = defined $at ? "'$at'" : 'NULL';
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT access_token, refresh_token FROM extension_token_refresh('$rt', $cur)");
	my ($nat, $nrt) = split /\|/, $out // '';
	return ($ret == 0, $nat, $nrt, $err);
}

# The token tables hold nothing that whole calls could not have produced.
sub check_invariants
{
	my ($when) = @_;
	is( q1(
			"SELECT count(*) FROM extension_tokens t
			  WHERE NOT EXISTS (SELECT 1 FROM extension_token_sessions s WHERE s.session_id = t.session_id)"),
		'0',
		"$when: every exchanged refresh token belongs to an existing session");
	is( q1(
			"SELECT count(*) FROM extension_tokens t JOIN extension_token_sessions s USING (session_id)
			  WHERE t.token_hash = s.refresh_hash"),
		'0',
		"$when: no session's current refresh token is also an exchanged one");
	is( q1(
			"SELECT count(*) FROM extension_token_sessions s
			  WHERE s.refresh_count <> (SELECT count(*) FROM extension_tokens t
			                             WHERE t.session_id = s.session_id)"),
		'0',
		"$when: every session's refresh_count equals its number of exchanged refresh tokens");
	is( q1(
			"SELECT count(*) FROM extension_token_sessions s
			  WHERE s.refresh_count > 0
			    AND (SELECT count(*) FROM extension_tokens t
			          WHERE t.session_id = s.session_id AND t.replaced_by = s.refresh_hash
			            AND t.token_hash = s.retry_hash) <> 1"),
		'0',
		"$when: every refreshed session's last exchange is linked to its current refresh token and remembered for the retry window");
	is( q1(
			"SELECT count(*) FROM extension_tokens t
			  WHERE NOT EXISTS (SELECT 1 FROM extension_tokens n
			                     WHERE n.token_hash = t.replaced_by AND n.session_id = t.session_id)
			    AND NOT EXISTS (SELECT 1 FROM extension_token_sessions s
			                     WHERE s.refresh_hash = t.replaced_by AND s.session_id = t.session_id)"),
		'0',
		"$when: every exchanged refresh token's successor is a later exchanged one or the current one, in the same session");
}

# A psql session in the background, with its backend's pid.
sub open_session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	return ($s, $pid);
}

# Abandons a background psql whose connection is gone (or about to be).
sub close_session
{
	my ($s) = @_;
	eval { $s->{run}->kill_kill; 1 } or note "closing psql: $@";
	return;
}

sub wait_until_blocked_on_lock
{
	my ($pid, $what) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid"),
		"$what: the backend is blocked inside the call, waiting for the row lock");
}

# SIGKILL of one backend, then wait for the postmaster's crash recovery.
sub kill9_backend_and_recover
{
	my ($pid, $what) = @_;
	my $offset = -s $node->logfile;
	is(kill('KILL', $pid), 1, "$what: SIGKILL sent to backend $pid");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
		"$what: the server went through crash recovery and accepts connections again");
	my $log = slurp_file($node->logfile, $offset);
	like($log, qr/(?:server process|client backend) \(PID $pid\) was terminated by signal 9/,
		"$what: the postmaster saw backend $pid die by SIGKILL");
	return;
}

# Is a row locked (written) by an open transaction?
sub row_locked
{
	my ($table, $where) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT 1 FROM $table WHERE $where FOR UPDATE NOWAIT");
	return $err =~ /55P03/ ? 1 : 0;
}

my $users_log = sub {
	my ($user, $col) = @_;
	return q1("SELECT coalesce(cardinality($col), 0) FROM extension_token_users WHERE user_id = '$user'");
};

# ---------------------------------------------------------------------
# 1. SIGKILL inside extension_token_refresh(): the rate-limit slot is
#    taken, the exchange waits for the session's row.
# ---------------------------------------------------------------------
my $ua = 'a0000000-0000-4000-8000-000000000001';
my ($at_a, $rt_a, $sid_a) = issue($ua, 'crash mid-refresh');
is(validate_error($at_a), 'valid', 'mid-refresh: the pair issued before the crash validates');

my ($locker, $locker_pid) = open_session();
$locker->query_safe('BEGIN');
$locker->query_safe("SELECT 1 FROM extension_token_sessions WHERE session_id = '$sid_a' FOR UPDATE");

my ($victim, $victim_pid) = open_session();
$victim->query_until(qr/refresh-started/, qq{\\echo refresh-started
SELECT access_token, refresh_token FROM extension_token_refresh('$rt_a', '$at_a');
});
wait_until_blocked_on_lock($victim_pid, 'mid-refresh');
ok(row_locked('extension_token_users', "user_id = '$ua'"),
	'mid-refresh: the refresh had already taken its rate-limit slot (user row written, uncommitted) when the kill came');
is(validate_error($at_a), 'valid', 'mid-refresh: while the refresh waits, the current access token still validates');
is($users_log->($ua, 'refresh_log'), '0',
	'mid-refresh: the rate-limit slot the refresh took is not yet visible to others');
kill9_backend_and_recover($victim_pid, 'mid-refresh');
close_session($victim);
close_session($locker);

is( q1("SELECT refresh_hash = " . hash_of($rt_a) . " AND access_hash = " . hash_of($at_a)
		  . " AND retry_hash IS NULL AND retry_box IS NULL
          FROM extension_token_sessions WHERE session_id = '$sid_a'"),
	't',
	'mid-refresh: after recovery the session row still holds the pair it was issued, and no retry box');
is( q1("SELECT count(*) FROM extension_tokens WHERE session_id = '$sid_a'"),
	'0',
	'mid-refresh: after recovery no exchanged refresh token is recorded for the session');
is( q1("SELECT refresh_count || ',' || (last_refresh_at IS NULL) || ',' || (revoked_at IS NULL)
          FROM extension_token_sessions WHERE session_id = '$sid_a'"),
	'0,true,true',
	'mid-refresh: after recovery the session row shows no refresh and no revocation');
is($users_log->($ua, 'refresh_log'), '0',
	'mid-refresh: after recovery the killed refresh did not use up a rate-limit slot');
is(validate_error($at_a), 'valid',
	'mid-refresh: after recovery the access token issued before the crash still validates');
check_invariants('mid-refresh, after recovery');

my ($ok1, $at_a2, $rt_a2, $err1) = try_refresh($rt_a, $at_a);
ok($ok1, 'mid-refresh: after recovery the old refresh token can be exchanged') or diag $err1;
# 1.2: a second presentation within refresh_retry_window returns the same
# successor pair again; there is never a second successor.
my ($ok2, $at_a2b, $rt_a2b, $err2) = try_refresh($rt_a, $at_a);
ok($ok2 && $at_a2b eq $at_a2 && $rt_a2b eq $rt_a2,
	'mid-refresh: after recovery the old refresh token is exchanged only once (presented again within the retry window, it returns the same pair)')
  or diag $err2;
is(validate_error($at_a2), 'valid', 'mid-refresh: the pair from the exchange after recovery validates');
is(validate_error($at_a), 'revoked', 'mid-refresh: the exchange after recovery revoked the old access token');
check_invariants('mid-refresh, after the exchange');

# ---------------------------------------------------------------------
# 2. SIGKILL after extension_token_refresh() returned, before COMMIT.
# ---------------------------------------------------------------------
my $ub = 'b0000000-0000-4000-8000-000000000002';
my ($at_b, $rt_b, $sid_b) = issue($ub, 'crash before commit of refresh');
($victim, $victim_pid) = open_session();
$victim->query_safe('BEGIN');
my ($at_b2, $rt_b2) = split /\|/,
  $victim->query_safe("SELECT access_token, refresh_token FROM extension_token_refresh('$rt_b', '$at_b')");
like($rt_b2, qr/^ext_rt_[0-9A-Za-z]{71}$/, 'refresh before commit: the uncommitted refresh returned a new pair');
ok(row_locked('extension_token_sessions', "session_id = '$sid_b'"),
	'refresh before commit: the session row is written by the open transaction');
kill9_backend_and_recover($victim_pid, 'refresh before commit');
close_session($victim);

is(validate_error($at_b2), 'not_found',
	'refresh before commit: the access token of the uncommitted refresh is not_found after recovery');
my ($ok3, undef, undef, $err3) = try_refresh($rt_b2);
ok(!$ok3 && $err3 =~ /refresh_token_not_found/,
	'refresh before commit: the refresh token of the uncommitted refresh is refresh_token_not_found after recovery')
  or diag $err3;
is( q1("SELECT refresh_hash = " . hash_of($rt_b) . " AND refresh_count = 0 FROM extension_token_sessions
          WHERE session_id = '$sid_b'"),
	't',
	'refresh before commit: the old refresh token is still the current one after recovery');
is( q1("SELECT count(*) FROM extension_tokens WHERE session_id = '$sid_b'"),
	'0', 'refresh before commit: no exchanged refresh token is recorded after recovery');
is(validate_error($at_b), 'valid',
	'refresh before commit: the access token issued before the crash still validates');
check_invariants('refresh before commit, after recovery');
my ($ok4, $at_b3, $rt_b3) = try_refresh($rt_b, $at_b);
ok($ok4, 'refresh before commit: the old refresh token is exchanged once after recovery');
my ($ok5, $at_b3b, $rt_b3b, $err5) = try_refresh($rt_b);
ok($ok5 && $at_b3b eq $at_b3 && $rt_b3b eq $rt_b3,
	'refresh before commit: and not a second time (within the retry window the same pair comes back)') or diag $err5;
is(validate_error($at_b3), 'valid', 'refresh before commit: the pair exchanged after recovery validates');

# ---------------------------------------------------------------------
# 3. SIGKILL inside extension_token_issue(): the rate-limit slot is taken
#    and the user's older session is being revoked (max_sessions_per_user
#    = 1) when the kill comes; the new session row is written, uncommitted.
# ---------------------------------------------------------------------
my $uc = 'c0000000-0000-4000-8000-000000000003';
my ($at_c, $rt_c, $sid_c) = issue($uc, 'older session');
is($users_log->($uc, 'issue_log'), '1', 'mid-issue: the first issue took one rate-limit slot');

($locker, $locker_pid) = open_session();
$locker->query_safe('BEGIN');
$locker->query_safe("SELECT 1 FROM extension_token_sessions WHERE session_id = '$sid_c' FOR UPDATE");
($victim, $victim_pid) = open_session();
$victim->query_until(qr/issue-started/, qq{\\echo issue-started
SELECT session_id FROM extension_token_issue('$uc', 'killed while issued');
});
wait_until_blocked_on_lock($victim_pid, 'mid-issue');
ok(row_locked('extension_token_users', "user_id = '$uc'"),
	"mid-issue: the issue had already taken its rate-limit slot (user row written, uncommitted) when the kill came");
kill9_backend_and_recover($victim_pid, 'mid-issue');
close_session($victim);
close_session($locker);

is( q1("SELECT string_agg(session_id::text, ',') FROM extension_token_sessions WHERE user_id = '$uc'"),
	$sid_c, 'mid-issue: after recovery the interrupted issue left no session row');
is( q1("SELECT (revoked_at IS NULL) || ',' || coalesce(revoked_reason, '') FROM extension_token_sessions
          WHERE session_id = '$sid_c'"),
	'true,', "mid-issue: after recovery the older session is not revoked (the session limit's revocation is gone)");
is($users_log->($uc, 'issue_log'), '1', 'mid-issue: after recovery the interrupted issue used up no rate-limit slot');
is(validate_error($at_c), 'valid', 'mid-issue: the access token issued before the crash still validates');
check_invariants('mid-issue, after recovery');

# ---------------------------------------------------------------------
# 4. SIGKILL after extension_token_issue() returned, before COMMIT.
# ---------------------------------------------------------------------
my $ud = 'd0000000-0000-4000-8000-000000000004';
my ($at_d, $rt_d, $sid_d) = issue($ud, 'older session');
($victim, $victim_pid) = open_session();
$victim->query_safe('BEGIN');
my ($at_d2, $rt_d2, $sid_d2) = split /\|/, $victim->query_safe(
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('$ud', 'uncommitted')");
like($sid_d2, qr/^[0-9a-f-]{36}$/, 'issue before commit: the uncommitted issue returned a session');
kill9_backend_and_recover($victim_pid, 'issue before commit');
close_session($victim);

is(q1("SELECT count(*) FROM extension_token_sessions WHERE session_id = '$sid_d2'"),
	'0', 'issue before commit: after recovery no session row exists for the uncommitted issue');
is(q1("SELECT string_agg(session_id::text, ',') FROM extension_token_sessions WHERE user_id = '$ud'"),
	$sid_d, 'issue before commit: after recovery the user has only the older session');
is(validate_error($at_d2), 'not_found',
	'issue before commit: the access token of the uncommitted issue is not_found after recovery');
my ($ok6, undef, undef, $err6) = try_refresh($rt_d2);
ok(!$ok6 && $err6 =~ /refresh_token_not_found/,
	'issue before commit: the refresh token of the uncommitted issue is refresh_token_not_found after recovery')
  or diag $err6;
is(validate_error($at_d), 'valid',
	'issue before commit: the session it would have displaced (session limit 1) still validates');
check_invariants('issue before commit, after recovery');

# ---------------------------------------------------------------------
# 5. SIGKILL after the COMMIT of a refresh: the new pair is durable.
# ---------------------------------------------------------------------
my $ue = 'e0000000-0000-4000-8000-000000000005';
my ($at_e, $rt_e, $sid_e) = issue($ue, 'crash after commit');
($victim, $victim_pid) = open_session();
$victim->query_safe('BEGIN');
my ($at_e2, $rt_e2) = split /\|/,
  $victim->query_safe("SELECT access_token, refresh_token FROM extension_token_refresh('$rt_e', '$at_e')");
$victim->query_safe('COMMIT');
kill9_backend_and_recover($victim_pid, 'refresh after commit');
close_session($victim);

is(validate_error($at_e2), 'valid', 'refresh after commit: the new access token validates after recovery');
is(validate_error($at_e), 'revoked', 'refresh after commit: the old access token is revoked after recovery');
is( q1("SELECT used_at IS NOT NULL AND replaced_by = " . hash_of($rt_e2)
		  . " FROM extension_tokens WHERE token_hash = " . hash_of($rt_e)),
	't', 'refresh after commit: the old refresh token is recorded as exchanged and linked to its successor');
my ($ok9, $at_e2b, $rt_e2b, $err9) = try_refresh($rt_e);
ok($ok9 && $at_e2b eq $at_e2 && $rt_e2b eq $rt_e2,
	'refresh after commit: presented again within the retry window, the old refresh token returns the committed pair (the retry box survived recovery)')
  or diag $err9;
my ($ok8, $at_e3) = try_refresh($rt_e2, $at_e2);
ok($ok8, 'refresh after commit: the new refresh token is exchanged after recovery');
is(validate_error($at_e3), 'valid', 'refresh after commit: and its pair validates');
check_invariants('refresh after commit, after recovery');
# rt_e is no longer the token exchanged last: presenting it now is reuse.
my ($ok7, undef, undef, $err7) = try_refresh($rt_e);
ok(!$ok7 && $err7 =~ /PT401/ && $err7 =~ /refresh_token_already_used/,
	'refresh after commit: the first refresh token, presented after a later exchange, is reuse (PT401 refresh_token_already_used)')
  or diag $err7;
ok($node->poll_query_until('postgres', "SELECT coalesce(error, 'valid') FROM extension_token_validate('$at_e3')", 'revoked'),
	'refresh after commit: the reuse revoked the session');
check_invariants('refresh after commit, after the reuse');

# ---------------------------------------------------------------------
# The server log and the killed backends' tokens.
# ---------------------------------------------------------------------
my $log = slurp_file($node->logfile);
my %returned = (
	'access token returned by the refresh killed before commit'  => $at_b2,
	'refresh token returned by the refresh killed before commit' => $rt_b2,
	'access token returned by the issue killed before commit'    => $at_d2,
	'refresh token returned by the issue killed before commit'   => $rt_d2,
	'access token returned by the refresh killed after commit'   => $at_e2,
	'refresh token returned by the refresh killed after commit'  => $rt_e2);
for my $what (sort keys %returned)
{
	ok(index($log, $returned{$what}) < 0, "server log: the $what is not in the log");
}
# When a backend dies by a signal, the postmaster logs "DETAIL: Failed
# process was running: <its reported activity>".  The functions that take a
# token replace that activity when the statement text contains one.
ok(index($log, $rt_a) < 0 && index($log, $at_a) < 0,
	'server log: the tokens passed as literals to the refresh killed mid-call are not in the log');
ok(index($log, $rt_b) < 0 && index($log, $at_b) < 0,
	'server log: the tokens passed as literals to the refresh killed before commit are not in the log');

# The server is still the same postmaster: every crash above was a crash
# restart of its children, never a server restart.
ok($node->poll_query_until('postgres', 'SELECT true'), 'the server is up at the end');

$node->stop;
done_testing();
