# 012_revoke_remote_apply.pl: extension_tokens.revoke_synchronous_commit =
# remote_apply with a streaming standby in synchronous_standby_names: right
# after any revocation returns on the primary (revoke, revoke_session,
# revoke_user, the session limit of issue, refresh-token reuse committed by
# the revoker worker), the standby's validate answers `revoked`, whatever the
# caller's own synchronous_commit.  Without the option the standby may still
# accept the token for a moment: that lag is measured and printed.  Then the
# standby's replay is slowed (recovery_min_apply_delay): without the option
# the standby is seen accepting revoked tokens (the check can fail), with it
# never.
use strict;
use warnings;
use IPC::Run;
use List::Util qw(sum max);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

# 60 rounds of each setting in the suite; test/scale.sh runs 200.
my $rounds = $ENV{ET_REMOTE_APPLY_ROUNDS} || 60;
my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.refresh_retry_window = 0
log_statement = none
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');
$primary->backup('backup');

my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->safe_psql('postgres',
	"ALTER SYSTEM SET synchronous_standby_names = '*'; SELECT pg_reload_conf()");
$primary->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_replication WHERE sync_state = 'sync'")
  or die 'the standby did not become synchronous';
ok(1, 'a streaming standby is the primary\'s synchronous standby');

# Persistent psql sessions (one connection each), so that "right after"
# means the next statement on an open connection, not a new process.
my $marks = 0;

sub session
{
	my ($node) = @_;
	my $s = { in => '', out => '', err => '', timer => IPC::Run::timeout(60) };
	$s->{h} = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=0', '-v', 'VERBOSITY=verbose',
		  '-d', $node->connstr('postgres') ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, $s->{timer});
	return $s;
}

# Runs SQL in the session: (stdout, stderr), each chomped.
sub query
{
	my ($s, $sql) = @_;
	my $mark = '__et_mark_' . (++$marks) . '__';
	$s->{out} = '';
	$s->{err} = '';
	$s->{timer}->start(60);
	$s->{in} .= "$sql;\n\\echo $mark\n";
	$s->{h}->pump until $s->{out} =~ /\Q$mark\E\n/;
	my $out = $s->{out};
	$out =~ s/\Q$mark\E\n\z//;
	chomp $out;
	my $err = $s->{err};
	chomp $err;
	return ($out, $err);
}

sub q1 { my ($out) = query(@_); return $out; }

my $p = session($primary);
my $s = session($standby);
my $n = 0;

# Polls the standby until `$sql` gives `$want`: seconds waited, or undef.
sub standby_until
{
	my ($sql, $want, $limit) = @_;
	my $t0 = time;
	while (time - $t0 < $limit)
	{
		return time - $t0 if q1($s, $sql) eq $want;
	}
	return undef;
}

sub validate_sql { return "SELECT coalesce(error, 'valid') FROM extension_token_validate('$_[0]')"; }

# One round of revocation kind `$kind`: a token the standby accepts, revoked
# on the primary; then, at once, what the standby says.  Returns (the
# standby's first answer, seconds until it said revoked, seconds the
# revocation took on the primary).
my @kinds = qw(revoke revoke_session revoke_user session_limit reuse);

sub one_round
{
	my ($kind) = @_;
	my $user = sprintf 'remote-apply-%d-%d', $$, ++$n;
	my ($at, $rt, $sid) = split /\|/,
	  q1($p, "SELECT access_token, refresh_token, session_id FROM extension_token_issue('$user')");
	my $victim = $at;
	if ($kind eq 'reuse')
	{
		# the new pair is what reuse of the old refresh token must kill
		($victim) = split /\|/, q1($p, "SELECT access_token FROM extension_token_refresh('$rt')");
	}
	defined standby_until(validate_sql($victim), 'valid', 30)
	  or die "the standby never accepted the token of round $n";
	my $t0 = time;
	my ($out, $err);
	if ($kind eq 'revoke') { ($out, $err) = query($p, "SELECT extension_token_revoke('$at')"); }
	elsif ($kind eq 'revoke_session')
	{
		($out, $err) = query($p, "SELECT extension_token_revoke_session('$sid')");
	}
	elsif ($kind eq 'revoke_user')
	{
		($out, $err) = query($p, "SELECT revoke_user_extension_tokens('$user')");
		$out = $out eq '1' ? 't' : $out;
	}
	elsif ($kind eq 'session_limit')
	{
		($out, $err) = query($p,
			"SELECT revoked_sessions = 1 FROM extension_token_issue('$user')");
	}
	else
	{
		($out, $err) = query($p, "SELECT access_token FROM extension_token_refresh('$rt')");
		$out = $err =~ /PT401.*refresh_token_already_used/s ? 't' : "not refused: $out $err";
	}
	my $took = time - $t0;
	die "round $n ($kind): the revocation did not happen: $out $err" unless $out eq 't';
	my $first = q1($s, validate_sql($victim));
	my $lag = $first eq 'revoked' ? 0 : standby_until(validate_sql($victim), 'revoked', 30);
	die "round $n ($kind): the standby never saw the revocation" unless defined $lag;
	return ($first, $lag, $took);
}

sub median
{
	my @v = sort { $a <=> $b } @_;
	return @v ? $v[ int($#v / 2) ] : 0;
}

# Runs $rounds rounds (kinds and the caller's synchronous_commit in turn):
# how many times the standby still accepted a revoked token, the lags and
# how long revocations took.
sub run_rounds
{
	my ($label, @caller_levels) = @_;
	my ($accepted, @lags, @took) = (0);
	for my $i (0 .. $rounds - 1)
	{
		my $level = $caller_levels[ $i % @caller_levels ];
		query($p, "SET synchronous_commit = $level");
		my ($first, $lag, $took) = one_round($kinds[ $i % @kinds ]);
		$accepted++ if $first ne 'revoked';
		push @lags, $lag;
		push @took, $took;
	}
	query($p, 'RESET synchronous_commit');
	diag sprintf '%s: %d rounds, the standby accepted the revoked token right after in %d;'
	  . ' lag max %.2f ms, median of the lagging %.2f ms; revocation took median %.2f ms',
	  $label, $rounds, $accepted, 1000 * max(@lags),
	  1000 * median(grep { $_ > 0 } @lags), 1000 * median(@took);
	return $accepted;
}

sub set_option
{
	my ($value) = @_;
	$primary->safe_psql('postgres',
		"ALTER SYSTEM SET extension_tokens.revoke_synchronous_commit = '$value'; SELECT pg_reload_conf()");
	# the sessions and the worker pick the reload up
	query($p, 'SELECT 1');
	$primary->poll_query_until('postgres',
		"SELECT setting = '$value' FROM pg_settings WHERE name = 'extension_tokens.revoke_synchronous_commit'");
	query($p, 'SELECT pg_sleep(0.2)');
	return;
}

is($primary->safe_psql('postgres', 'SHOW extension_tokens.revoke_synchronous_commit'),
	'local', 'revoke_synchronous_commit is local by default');
$primary->safe_psql('postgres', 'CREATE ROLE et_plain LOGIN');
my ($ret, $o2, $e2) = $primary->psql('postgres',
	"SET ROLE et_plain; SET extension_tokens.revoke_synchronous_commit = 'off'");
like($e2, qr/permission denied to set parameter/, 'a role that is not a superuser cannot change it');

# --- without the option: the lag, measured ----------------------------------
set_option('local');
run_rounds('option off, caller synchronous_commit = on (standby flushed, not applied)', 'on');
run_rounds('option off, caller synchronous_commit = local', 'local');

# --- with the option: never ---------------------------------------------------
set_option('remote_apply');
is(run_rounds('revoke_synchronous_commit = remote_apply (caller off, local, on)', 'off', 'local', 'on'),
	0, "remote_apply: in $rounds rounds of every kind of revocation, the standby refused the token right after");

# --- a slow standby: the check sees the difference ---------------------------
$standby->safe_psql('postgres',
	"ALTER SYSTEM SET recovery_min_apply_delay = '100ms'; SELECT pg_reload_conf()");
my $saved = $rounds;
$rounds = 50;
set_option('local');
ok(run_rounds('standby replaying 100 ms late, option off', 'on') > 0,
	'with replay 100 ms late and the option off, the standby is seen accepting revoked tokens (the check can fail)');
set_option('remote_apply');
is(run_rounds('standby replaying 100 ms late, remote_apply', 'off', 'on'), 0,
	'with replay 100 ms late and remote_apply, the standby never accepts a revoked token');
$rounds = $saved;

# Revocations that revoke nothing, and issue, validate and refresh, do not wait for the standby.
my $t0 = time;
for my $i (1 .. 10)
{
	q1($p, "SELECT extension_token_revoke('ext_rt_nothing$i')");
	q1($p, "SELECT 1 FROM extension_token_issue('no-wait-$i')");
}
my $per_call = (time - $t0) / 20;
ok($per_call < 0.08, sprintf 'calls that revoke nothing do not wait for the slow standby (%.1f ms each)',
	1000 * $per_call);

$s->{in} .= "\\q\n";
$p->{in} .= "\\q\n";
$_->{h}->finish for ($s, $p);
done_testing();
