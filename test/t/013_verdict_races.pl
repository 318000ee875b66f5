# 013_verdict_races.pl: a backend that keeps a session's verdict (it
# validates a token it has validated before without reading the session's
# row) must still see every revocation committed before its validation, in
# the interleavings and paths that only timing or an unusual configuration
# reach:
#
#   (a) a refresh-token reuse detected while a validation is between its
#       checks: the backend is stopped by gdb at the moment it asks the
#       revocation queue (RevokerPending), the reuse is detected elsewhere and
#       the worker commits the revocation and empties the queue, then the
#       backend goes on.  It must answer revoked: the queue is asked before
#       the epochs, so a queue found empty means the epochs show the commit.
#   (b) a database that refuses new connections (ALLOW_CONNECTIONS false),
#       with a pooled connection still open: a reuse detected there must
#       still be committed by the worker (which connects anyway), not dropped
#       after its failed connections.
#   (c) logical replication with two_phase: the subscriber's apply worker
#       commits a prepared revocation with no statement the extension's hook
#       sees; a verdict kept on the subscriber must not outlive it.
#   (d) the inactivity rule while a use cannot be written (its row locked by
#       an open transaction: the worker skips it and keeps it): the use not
#       yet written still counts.
#   (e) a SIGTERM to the worker right after a use write commits (gdb stops
#       it there): the uses are counted once, not again by the next worker.
#   (f) settings in postgresql.conf are in force from the start; a SIGTERM
#       to the worker while its revocation's commit waits for a
#       synchronous standby (revoke_synchronous_commit = remote_apply, and
#       a standby that never answers): the refusal still waits, for the
#       next worker's commit, and returns once a standby could confirm; a
#       cancel (SIGINT) of the waiting worker does not end its wait.
#   (g) a column's type changed by the owner (ALTER TABLE, committed) while
#       a reader is between its load of the tables' definitions and its
#       read of the row (gdb stops it there): a clear error, not a row read
#       as if of the old type (a crash).
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;
my $conf = qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
log_statement = none
};

my $node = PostgreSQL::Test::Cluster->new('races');
$node->init;
$node->append_conf('postgresql.conf', $conf);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

sub issue_and_rotate
{
	my ($n, $db, $user) = @_;
	my ($at0, $rt0, $sid) = split /\|/, $n->safe_psql($db,
		"SELECT access_token, refresh_token, session_id FROM extension_token_issue('$user', 'races')");
	my ($at1, $rt1) = split /\|/, $n->safe_psql($db,
		"SELECT access_token, refresh_token FROM extension_token_refresh('$rt0')");
	return ($rt0, $at1, $rt1, $sid);
}

sub kept_count
{
	my ($session) = @_;
	return $session->query_safe('SELECT validations_session_cached FROM extension_token_stats()');
}

# gdb attached to process $pid with a breakpoint on $function: the process,
# once it reaches it, stays stopped there until gdb_release.  Returns a
# handle; gdb_reached($g, 'ready') says it is attached, ($g, 'hit') stopped.
sub gdb_stop_at
{
	my ($pid, $function) = @_;
	my $g = { dir => PostgreSQL::Test::Utils::tempdir, out => '', err => '' };
	my $dir = $g->{dir};
	open my $cmds, '>', "$dir/gdb.cmds" or die;
	print $cmds <<"EOF";
set pagination off
set confirm off
handle SIGUSR1 SIGUSR2 SIGALRM SIGPIPE SIGINT SIGTERM SIGQUIT SIGHUP nostop noprint pass
break $function
commands 1
  silent
  shell touch $dir/hit
  shell i=0; while [ ! -e $dir/go ] && [ \$i -lt 1200 ]; do sleep 0.05; i=\$((i+1)); done
  delete 1
  detach
  quit
end
shell touch $dir/ready
continue
EOF
	close $cmds;
	$g->{run} = IPC::Run::start([ 'gdb', '-q', '-batch', '-nx', '-x', "$dir/gdb.cmds", '-p', $pid ],
		'<', \undef, '>', \$g->{out}, '2>', \$g->{err});
	return $g;
}

sub gdb_reached
{
	my ($g, $what) = @_;
	my $waited = 0;
	until (-e "$g->{dir}/$what" || $waited++ > 600) { usleep(100_000); $g->{run}->pump_nb; }
	return -e "$g->{dir}/$what";
}

sub gdb_release
{
	my ($g) = @_;
	open my $go, '>', "$g->{dir}/go" or die;
	close $go;
	if (-e "$g->{dir}/hit") { $g->{run}->finish; }
	else { $g->{run}->kill_kill; }
}

sub gdb_diag { my ($g) = @_; return "gdb: $g->{out}\n$g->{err}"; }

my $validate = "SELECT coalesce(error, 'valid') FROM extension_token_validate";
my $pt401_reuse = qr/refresh_token_already_used/;

# ---------------------------------------------------------------------
# (a) The reader stopped between its checks (gdb).
# ---------------------------------------------------------------------
my ($a_rt0, $a_at1, $a_rt1, $a_sid) = issue_and_rotate($node, 'postgres', 'user_2raceGdb');
my $reader = $node->background_psql('postgres', on_error_stop => 0);
my $reader_pid = $reader->query_safe('SELECT pg_backend_pid()');
is($reader->query_safe("$validate('$a_at1')"), 'valid', '(a) the reader validates the current access token');
$reader->query_safe("$validate('$a_at1')");
my $kept0 = kept_count($reader);
is($reader->query_safe("$validate('$a_at1')"), 'valid', '(a) and again');
is(kept_count($reader) - $kept0, 1, '(a) the third validation was answered by a kept verdict');

my $gdb = gdb_stop_at($reader_pid, 'RevokerPending');
ok(gdb_reached($gdb, 'ready'), '(a) gdb attached to the reader with a breakpoint on RevokerPending')
  or diag gdb_diag($gdb);

$reader->query_until(qr/sent/, "\\echo sent\nSELECT 'after:' || coalesce(error, 'valid') FROM extension_token_validate('$a_at1');\n");
ok(gdb_reached($gdb, 'hit'), '(a) the reader\'s next validation stopped where it asks the revocation queue')
  or diag gdb_diag($gdb);

my ($ret, $out, $err) = $node->psql('postgres',
	"SET extension_tokens.refresh_retry_window = 0; SELECT access_token FROM extension_token_refresh('$a_rt0')");
like($err, $pt401_reuse, '(a) meanwhile the exchanged refresh token is presented again: PT401 reuse');
ok( $node->poll_query_until('postgres',
		"SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$a_sid'",
		'refresh_token_reuse'),
	'(a) and the worker committed the revocation');
# the worker takes the entry off the queue right after its commit
sleep 1;
is($node->safe_psql('postgres', "$validate('$a_at1')"), 'revoked',
	'(a) another connection says revoked');

gdb_release($gdb);
my $after = $reader->query('SELECT 1');
like($after, qr/after:revoked/,
	'(a) the stopped validation, let go after the queue was emptied, says revoked')
  or diag "reader: $after";
is($reader->query_safe("$validate('$a_at1')"), 'revoked', '(a) and so does its next one');
$reader->quit;

# ---------------------------------------------------------------------
# (b) A database that refuses new connections.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE closed');
$node->safe_psql('closed', 'CREATE EXTENSION extension_tokens');
my ($b_rt0, $b_at1, $b_rt1, $b_sid) = issue_and_rotate($node, 'closed', 'user_2raceClosed');
my $pool = $node->background_psql('closed', on_error_stop => 0);
is($pool->query_safe("$validate('$b_at1')"), 'valid', '(b) a pooled connection validates the access token');
$node->safe_psql('postgres', 'ALTER DATABASE closed ALLOW_CONNECTIONS false');
# the worker starts over, connected to no database (it restarts in a
# second), so that it has to connect to this one anew
my $worker = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'extension_tokens revoker'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($worker)") if $worker ne '';
ok( $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = " . ($worker || 0), '0'),
	'(b) the revoker worker was made to start over');
isnt(scalar $node->psql('closed', 'SELECT 1'), 0, '(b) the database refuses new connections');

($out, $ret) = $pool->query(
	"SET extension_tokens.refresh_retry_window = 0; SELECT access_token FROM extension_token_refresh('$b_rt0')");
like($pool->{stderr}, $pt401_reuse, '(b) the exchanged refresh token presented again on the pooled connection: PT401 reuse');
$pool->{stderr} = '';
is($pool->query_safe("$validate('$b_at1')"), 'revoked', '(b) the session is refused at once');
# 3 connection tries a second apart were enough for 1.2.0 to drop the queue
sleep 6;
is($pool->query_safe("SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$b_sid'"),
	'refresh_token_reuse', '(b) the worker committed the revocation in the database that refuses connections');
is($pool->query_safe("$validate('$b_at1')"), 'revoked', '(b) the access token stays revoked');
($out, $ret) = $pool->query("SELECT access_token FROM extension_token_refresh('$b_rt1')");
like($pool->{stderr}, qr/session_revoked/, '(b) and the successor refresh token is refused (session_revoked)');
$pool->{stderr} = '';
$pool->quit;
unlike(slurp_file($node->logfile), qr/giving up on database/, '(b) the worker gave up on no database');
$node->safe_psql('postgres', 'ALTER DATABASE closed ALLOW_CONNECTIONS true');

# ---------------------------------------------------------------------
# (d) A use being written: the inactivity rule still sees it.
# ---------------------------------------------------------------------
my ($d_at, $d_rt, $d_sid) = split /\|/, $node->safe_psql('postgres',
	"SET extension_tokens.session_inactivity_timeout = '6s';
	 SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2raceIdle', 'idle rule')");
is($node->safe_psql('postgres', "$validate('$d_at')"), 'valid', '(d) a session with a 6 s inactivity timeout, used');
ok( $node->poll_query_until('postgres',
		"SELECT use_count FROM extension_token_sessions WHERE session_id = '$d_sid'", '1'),
	'(d) the use was written (use_count 1)');
my $t0 = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM last_used_at) FROM extension_token_sessions WHERE session_id = '$d_sid'");
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe("SELECT 1 FROM extension_token_sessions WHERE session_id = '$d_sid' FOR UPDATE");
is($node->safe_psql('postgres', "$validate('$d_at')"), 'valid', '(d) used again');
# a use of another session, written after that one was taken (uses are
# taken in one walk of the table): the locked row was skipped, not waited for
my ($d2_at, $d2_rt, $d2_sid) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2raceIdle', 'beside')");
is($node->safe_psql('postgres', "$validate('$d2_at')"), 'valid', '(d) another session used');
ok( $node->poll_query_until('postgres',
		"SELECT use_count FROM extension_token_sessions WHERE session_id = '$d2_sid'", '1'),
	'(d) its use is written while the other row is locked');
is($node->safe_psql('postgres', "SELECT use_count FROM extension_token_sessions WHERE session_id = '$d_sid'"),
	'1', '(d) the locked row is skipped: its use is kept, not written');
# past 6 s after the use the row shows, less after the one being written
my $now = $node->safe_psql('postgres', 'SELECT extract(epoch FROM clock_timestamp())');
usleep(int(($t0 + 6.3 - $now) * 1_000_000)) if $t0 + 6.3 > $now;
is($node->safe_psql('postgres', "$validate('$d_at')"), 'valid',
	'(d) while the write waits, the session used a moment ago is not idle');
$locker->query_safe('ROLLBACK');
$locker->quit;
ok( $node->poll_query_until('postgres',
		"SELECT use_count FROM extension_token_sessions WHERE session_id = '$d_sid'", '3'),
	'(d) then the uses are written: use_count 3');

# ---------------------------------------------------------------------
# (e) A SIGTERM between a use write's commit and its settling.
# ---------------------------------------------------------------------
my ($e_at, $e_rt, $e_sid) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2raceTerm', 'sigterm')");
# The worker is kept connected here, and its pid known, by a revocation it
# cannot commit yet: another session's row is held locked, and its refresh
# token reused.  (Uses skip a locked row; a failing revocation is tried
# again, a second's lock wait at a time, and the worker stays.)
my ($h_at, $h_rt, $h_sid) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2raceTerm', 'held')");
$node->safe_psql('postgres', "SELECT 1 FROM extension_token_refresh('$h_rt')");
$locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe("SELECT 1 FROM extension_token_sessions WHERE session_id = '$h_sid' FOR UPDATE");
($ret, $out, $err) = $node->psql('postgres',
	"SET extension_tokens.refresh_retry_window = 0; SELECT 1 FROM extension_token_refresh('$h_rt')");
like($err, qr/refresh token rejected/, '(e) a reuse whose revocation waits for a locked row');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity
		  WHERE backend_type = 'extension_tokens revoker' AND wait_event_type = 'Lock'"),
	'(e) the worker tries that revocation');
my $worker_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'extension_tokens revoker'");
$gdb = gdb_stop_at($worker_pid, 'usage_settle');
ok(gdb_reached($gdb, 'ready'), '(e) gdb attached to the worker with a breakpoint where it settles a write')
  or diag gdb_diag($gdb);
is($node->safe_psql('postgres', "$validate('$e_at'); $validate('$e_at'); $validate('$e_at')"),
	"valid\nvalid\nvalid", '(e) three validations');
ok(gdb_reached($gdb, 'hit'), '(e) the worker stopped after its write committed, before settling it')
  or diag gdb_diag($gdb);
is($node->safe_psql('postgres', "SELECT use_count FROM extension_token_sessions WHERE session_id = '$e_sid'"),
	'3', '(e) the write committed: use_count 3');
kill 'TERM', $worker_pid;
gdb_release($gdb);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $worker_pid"),
	'(e) the worker exits on the SIGTERM');
$locker->query_safe('ROLLBACK');
$locker->quit;
ok( $node->poll_query_until('postgres',
		"SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$h_sid'",
		'refresh_token_reuse'),
	'(e) the lock gone, the waiting revocation commits');
# a use of another session brings a worker back, which flushes what is left
my ($e2_at, $e2_rt, $e2_sid) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2raceTerm', 'after sigterm')");
$node->safe_psql('postgres', "$validate('$e2_at')");
ok( $node->poll_query_until('postgres',
		"SELECT use_count FROM extension_token_sessions WHERE session_id = '$e2_sid'", '1'),
	'(e) a new worker wrote a later use');
sleep 2;
is($node->safe_psql('postgres', "SELECT use_count FROM extension_token_sessions WHERE session_id = '$e_sid'"),
	'3', '(e) and the three uses are still counted once');

# ---------------------------------------------------------------------
# (f) A SIGTERM while a revocation's commit waits for a standby.
# ---------------------------------------------------------------------
$node->stop;
# a primary that could have standbys (max_wal_senders > 0), waiting for one
# that never connects
$node = PostgreSQL::Test::Cluster->new('sync');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "$conf
synchronous_standby_names = 'no_such_standby'
synchronous_commit = local
extension_tokens.revoke_synchronous_commit = remote_apply
extension_tokens.session_verdicts = off
extension_tokens.user_claims = 'plan'
extension_tokens.device_code_lifetime = 120
extension_tokens.device_verification_uri = 'https://example.test/device'
");
$node->start;
# every setting postgresql.conf gives is in force from the start (the
# settings defined after the prefix was reserved were dropped until a reload)
is( $node->safe_psql('postgres', q{
	SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	 WHERE name IN ('extension_tokens.revoke_synchronous_commit', 'extension_tokens.session_verdicts',
	                'extension_tokens.user_claims', 'extension_tokens.device_code_lifetime',
	                'extension_tokens.device_verification_uri')}),
	'extension_tokens.device_code_lifetime=120 extension_tokens.device_verification_uri=https://example.test/device '
	  . 'extension_tokens.revoke_synchronous_commit=remote_apply extension_tokens.session_verdicts=off '
	  . 'extension_tokens.user_claims=plan',
	'(f) the settings postgresql.conf gives are in force from the start');
unlike(slurp_file($node->logfile), qr/invalid configuration parameter name "extension_tokens\./,
	'(f) and none of them was dropped as unknown');
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');
my ($f_rt0, $f_at1, $f_rt1, $f_sid) = issue_and_rotate($node, 'postgres', 'user_2raceSync');
my $client = $node->background_psql('postgres', on_error_stop => 0);
$client->query_until(qr/sent/,
	"\\echo sent\nSET extension_tokens.refresh_retry_window = 0;\nSELECT access_token FROM extension_token_refresh('$f_rt0');\n\\echo returned\n");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity
		  WHERE backend_type = 'extension_tokens revoker' AND wait_event = 'SyncRep'"),
	'(f) a reuse: the worker\'s revocation waits for the synchronous standby');
$worker_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'extension_tokens revoker'");
kill 'TERM', $worker_pid;
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $worker_pid"),
	'(f) the worker exits on a SIGTERM');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity
		  WHERE backend_type = 'extension_tokens revoker' AND wait_event = 'SyncRep'
		    AND pid <> $worker_pid"),
	'(f) the next worker commits the queued revocation again, and waits for the standby');
my $f_worker2 = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'extension_tokens revoker'");
# a cancel ends any synchronous commit's wait, with a WARNING: the worker's
# is not ended by one
is($node->safe_psql('postgres', "SELECT pg_cancel_backend($f_worker2)"), 't',
	'(f) the waiting worker is sent a cancel (SIGINT)');
sleep 2;
is( $node->safe_psql('postgres',
		"SELECT wait_event FROM pg_stat_activity WHERE pid = $f_worker2"),
	'SyncRep', '(f) and still waits for the standby');
$client->{run}->pump_nb;
unlike($client->{stdout}, qr/returned/, '(f) meanwhile the refusal has not returned');
$node->safe_psql('postgres', q{
ALTER SYSTEM SET synchronous_standby_names = '';
SELECT pg_reload_conf();
});
$client->query('SELECT 1');
like($client->{stderr}, $pt401_reuse, '(f) once no standby is waited for, the refusal returns: PT401 reuse');
$client->quit;
is($node->safe_psql('postgres', "$validate('$f_at1')"), 'revoked', '(f) and the session is revoked');
# the revocation was committed twice (the second time for its wait): the
# reuse is one event, one notification and one log line
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM extension_token_events WHERE session_id = '$f_sid' AND event = 'reuse_detected'"),
	'1', '(f) the reuse is recorded once in extension_token_events');
my @f_lines = slurp_file($node->logfile) =~ /refresh token reuse detected: session \Q$f_sid\E/g;
is(scalar @f_lines, 1, '(f) and logged once');

# ---------------------------------------------------------------------
# (g) A column's type changed between a reader's load and its lookup.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE altered');
$node->safe_psql('altered', 'CREATE EXTENSION extension_tokens');
my $g_at0 = $node->safe_psql('altered',
	"SELECT access_token FROM extension_token_issue('user_2raceAlterA', 'altered')");
my $g_at1 = $node->safe_psql('altered',
	"SELECT access_token FROM extension_token_issue('user_2raceAlterB', 'altered')");
my $g_started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $g_log = -s $node->logfile;
my $g_reader = $node->background_psql('altered', on_error_stop => 0);
my $g_pid = $g_reader->query_safe('SELECT pg_backend_pid()');
is($g_reader->query_safe("$validate('$g_at0')"), 'valid',
	'(g) the reader validates a token (and has read the tables\' definitions)');
$gdb = gdb_stop_at($g_pid, 'RevokerPending');
ok(gdb_reached($gdb, 'ready'), '(g) gdb attached to the reader') or diag gdb_diag($gdb);
$g_reader->query_until(qr/sent/, "\\echo sent\nSELECT 'after:' || coalesce(error, 'valid') FROM extension_token_validate('$g_at1');\n");
ok(gdb_reached($gdb, 'hit'), '(g) its next validation stopped after its load, before it reads the row')
  or diag gdb_diag($gdb);
$node->safe_psql('altered',
	'ALTER TABLE extension_token_sessions ALTER COLUMN access_hash TYPE int8 USING 1');
gdb_release($gdb);
# (a crashed reader's connection is gone: its error is the one checked)
eval { $g_reader->query('SELECT 1'); };
like($g_reader->{stderr} . ($@ // ''), qr/column "access_hash" of table "extension_token_sessions" is of type bigint, not bytea/,
	'(g) the table changed meanwhile: a clear error (the row was read as of the old type: a crash)');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $g_started,
	'(g) and the server did not restart');
eval { $g_reader->quit; };
unlike(slurp_file($node->logfile, $g_log), qr/terminated by signal/, '(g) no server process died');
$node->safe_psql('postgres', 'DROP DATABASE altered WITH (FORCE)');
$node->stop;

# ---------------------------------------------------------------------
# (c) Logical replication with two_phase.
# ---------------------------------------------------------------------
my $pub = PostgreSQL::Test::Cluster->new('pub');
$pub->init(allows_streaming => 'logical');
$pub->append_conf('postgresql.conf', "$conf\nmax_prepared_transactions = 10\n");
$pub->start;
$pub->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');
my $sub = PostgreSQL::Test::Cluster->new('sub');
$sub->init;
$sub->append_conf('postgresql.conf', "$conf\nmax_prepared_transactions = 10\n");
$sub->start;
$sub->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

$pub->safe_psql('postgres',
	'CREATE PUBLICATION tokens FOR TABLE extension_token_users, extension_token_sessions');
my $pub_conn = $pub->connstr . ' dbname=postgres';
$sub->safe_psql('postgres',
	"CREATE SUBSCRIPTION tokens CONNECTION '$pub_conn' PUBLICATION tokens WITH (two_phase = true)");
ok( $sub->poll_query_until('postgres',
		"SELECT count(*) FROM pg_subscription WHERE subname = 'tokens' AND subtwophasestate = 'e'", '1'),
	'(c) the subscription is two_phase, enabled');
my ($c_at0, $c_rt0, $c_sid) = split /\|/, $pub->safe_psql('postgres',
	"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_2raceSub', 'two-phase')");
$pub->wait_for_catchup('tokens');

my $sreader = $sub->background_psql('postgres', on_error_stop => 0);
is($sreader->query_safe("$validate('$c_at0')"), 'valid', '(c) the subscriber validates the replicated session\'s token');
$sreader->query_safe("$validate('$c_at0')");
$kept0 = kept_count($sreader);
$sreader->query_safe("$validate('$c_at0')");
is(kept_count($sreader) - $kept0, 1, '(c) and keeps its verdict (the third validation did not read the row)');

$pub->safe_psql('postgres', qq{
BEGIN;
UPDATE extension_token_sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE session_id = '$c_sid';
PREPARE TRANSACTION 'revoke_c';
});
$pub->wait_for_catchup('tokens');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '1',
	'(c) the subscriber holds the revocation prepared');
is($sreader->query_safe("$validate('$c_at0')"), 'valid', '(c) while it is only prepared, the token is still valid');
$pub->safe_psql('postgres', "COMMIT PREPARED 'revoke_c'");
$pub->wait_for_catchup('tokens');
ok( $sub->poll_query_until('postgres', 'SELECT count(*) FROM pg_prepared_xacts', '0'),
	'(c) the apply worker committed the prepared revocation');
is($sub->safe_psql('postgres', "SELECT revoked_reason FROM extension_token_sessions WHERE session_id = '$c_sid'"),
	'admin', '(c) the subscriber\'s row says revoked');
is($sreader->query_safe("$validate('$c_at0')"), 'revoked',
	'(c) the connection that kept the verdict says revoked');
is($sub->safe_psql('postgres', "$validate('$c_at0')"), 'revoked', '(c) as a new connection does');
$sreader->quit;
$sub->safe_psql('postgres', 'DROP SUBSCRIPTION tokens');
$sub->stop;
$pub->stop;

done_testing();
