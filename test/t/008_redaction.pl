# 008_redaction.pl: no secret and no token reaches the server log,
# pg_stat_statements, auto_explain's output or pg_stat_activity, whatever
# path a statement carrying one takes.
#
# Two clusters, the libraries preloaded in both orders:
#   'pg_stat_statements,auto_explain,pg_cron,extension_tokens' and
#   'extension_tokens,pg_stat_statements,auto_explain'
# with compute_query_id = on, pg_stat_statements.track = all (nested
# statements too) and track_planning, auto_explain.log_min_duration = 0 with
# log_analyze, log_verbose and log_nested_statements, and log_statement = all
# (PostgreSQL::Test::Cluster's default): every statement is logged.
#
# On each, statements that carry the secret or tokens, as literals:
#   - the README's rotation (ALTER SYSTEM SET ... jwt_secret_previous, then
#     ... jwt_secret), a reload;
#   - the rotation sent as one string (fails: ALTER SYSTEM in a transaction
#     block), a short secret, a secret with an unterminated quote (a syntax
#     error quotes the text near it), a refused SET, set_config(), ALTER ROLE
#     ... SET and ALTER DATABASE ... SET of the secret;
#   - EXPLAIN ANALYZE of validate and refresh, a DO block validating and
#     refreshing, validate / refresh / revoke with literal tokens, failing
#     statements carrying tokens (a division by zero, a cast whose error
#     quotes the value), a token in a comment, the secret in an ordinary
#     expression;
# then pg_stat_statements (and its query-text file), and the whole server
# log (auto_explain's output included) are searched for every secret, and
# for the signature and payload segments of every access token and the body
# of every refresh token and API key: 0 of each.  Controls show the searches can find
# things: pg_stat_statements keeps an ordinary DO block verbatim, auto_explain
# logged the statements (with the tokens replaced).
#
# And a member of pg_read_all_stats polls pg_stat_activity while statements
# carrying tokens wait on a lock: while planned (the planner locks an
# inheritance child another transaction holds), in the executor before any
# function of the extension runs (an advisory lock taken first in the same
# select list), inside refresh (the session row held FOR UPDATE by another
# transaction), and through the extended protocol (pgbench -M extended,
# which reports the text again at Bind and Execute).  It must see the wait,
# and never the token.  (A wait inside parse analysis itself, e.g. for a
# table lock, comes before any hook: the README says so.)
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

sub random_secret { return join '', map { sprintf '%02x', int(rand(256)) } 1 .. 24; }

# Everything that must not be found, by name (for the test's messages).
my %fragments;

sub add_access_token
{
	my ($name, $at) = @_;
	my ($h, $p, $s) = split /\./, $at;
	$fragments{"$name payload"} = $p;
	$fragments{"$name signature"} = $s;
	return;
}

sub add_refresh_token
{
	my ($name, $rt) = @_;
	$fragments{"$name body"} = substr($rt, length('ext_rt_'));
	return;
}

# Runs SQL as ONE query string (psql -c), as a client library would send it.
sub one_string
{
	my ($node, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$out, '2>', \$err);
	return ($out, $err);
}

sub try_sql
{
	my ($node, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	return $err // '';
}

# Polls pg_stat_activity as the pg_read_all_stats member while the backend
# with the given pid waits on a lock; returns (times seen waiting, every
# query text seen).
sub watch_activity
{
	my ($watcher, $pid, $polls) = @_;
	my ($waiting, @seen) = (0);
	for (1 .. $polls)
	{
		my $row = $watcher->query_safe(
			"SELECT coalesce(wait_event_type, '-') || '|' || coalesce(query, '') FROM pg_stat_activity WHERE pid = $pid"
		);
		my ($wait, $query) = split /\|/, $row, 2;
		$waiting++ if defined $wait && $wait eq 'Lock';
		push @seen, $query // '';
		usleep(2_000);
	}
	return ($waiting, @seen);
}

sub no_fragment_in
{
	my ($text, $where, $label) = @_;
	my @found = grep { index($text, $fragments{$_}) >= 0 } sort keys %fragments;
	is(scalar(@found), 0, "$label: no secret and no token fragment in $where")
	  or diag("found: @found");
	return;
}

sub run_cluster
{
	my ($label, $preload) = @_;
	my $s1 = random_secret();
	my $node = PostgreSQL::Test::Cluster->new($label);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = '$preload'
cron.database_name = 'postgres'
compute_query_id = on
pg_stat_statements.track = all
pg_stat_statements.track_planning = on
auto_explain.log_min_duration = 0
auto_explain.log_analyze = on
auto_explain.log_verbose = on
auto_explain.log_nested_statements = on
extension_tokens.jwt_secret = '$s1'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
extension_tokens.refresh_retry_window = 0
});
	$node->start;
	$node->safe_psql('postgres', q{
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION extension_tokens;
CREATE ROLE watcher LOGIN IN ROLE pg_read_all_stats;
CREATE TABLE parent (id int);
CREATE TABLE child () INHERITS (parent);
});
	$fragments{"$label secret 1"} = $s1;

	my $n = 0;
	my $issue = sub {
		$n++;
		my ($at, $rt, $sid) = split /\|/, $node->safe_psql('postgres',
			"SELECT access_token, refresh_token, session_id FROM extension_token_issue('user_red', 'r$n')");
		add_access_token("$label access token $n", $at);
		add_refresh_token("$label refresh token $n", $rt);
		return ($at, $rt, $sid);
	};

	# -----------------------------------------------------------------
	# The secret, every way it can travel in SQL.
	# -----------------------------------------------------------------
	my ($s2, $s3, $s4, $s5) = map { random_secret() } 1 .. 4;
	my $short = 'short-' . substr(random_secret(), 0, 12);
	$fragments{"$label secret $_->[0]"} = $_->[1]
	  for ([ 2, $s2 ], [ 3, $s3 ], [ 4, $s4 ], [ 5, $s5 ], [ 'short', $short ]);

	my ($at_old) = $issue->();
	$node->safe_psql('postgres', "ALTER SYSTEM SET extension_tokens.jwt_secret_previous = '$s1'");
	$node->safe_psql('postgres', "ALTER SYSTEM SET extension_tokens.jwt_secret = '$s2'");
	$node->reload;
	ok( $node->poll_query_until('postgres',
			"SELECT current_setting('extension_tokens.jwt_secret_previous') = '(hidden)'"),
		"$label: the rotation through ALTER SYSTEM was applied");
	is( $node->safe_psql('postgres',
			"SELECT coalesce(error, 'valid') FROM extension_token_validate('$at_old')"),
		'valid', "$label: a token of the previous secret validates after the rotation");

	my ($out, $err) = one_string($node,
		"ALTER SYSTEM SET extension_tokens.jwt_secret = '$s3'; ALTER SYSTEM SET extension_tokens.jwt_secret_previous = '$s2'"
	);
	like($err, qr/ALTER SYSTEM cannot run inside a transaction block/,
		"$label: the rotation sent as one string fails");
	like(try_sql($node, "ALTER SYSTEM SET extension_tokens.jwt_secret = '$short'"),
		qr/is too short/, "$label: ALTER SYSTEM with a short secret fails");
	like(try_sql($node, "ALTER SYSTEM SET extension_tokens.jwt_secret = '$s5"),
		qr/syntax error/, "$label: ALTER SYSTEM with an unterminated secret fails");
	like(try_sql($node, "SET extension_tokens.jwt_secret = '$s4'"),
		qr/cannot be changed now/, "$label: SET of the secret is refused");
	like(try_sql($node, "SELECT set_config('extension_tokens.jwt_secret', '$s4', false)"),
		qr/cannot be changed now/, "$label: set_config() of the secret is refused");
	like(try_sql($node, "ALTER ROLE watcher SET extension_tokens.jwt_secret = '$s4'"),
		qr/cannot be changed now/, "$label: ALTER ROLE ... SET of the secret is refused");
	like(try_sql($node, "ALTER DATABASE postgres SET extension_tokens.jwt_secret_previous = '$s4'"),
		qr/cannot be changed now/, "$label: ALTER DATABASE ... SET of the previous secret is refused");
	is($node->safe_psql('postgres', "SELECT length('$s2')"), length($s2),
		"$label: the secret in an ordinary expression");

	# -----------------------------------------------------------------
	# Tokens as literals.
	# -----------------------------------------------------------------
	my ($at1, $rt1) = $issue->();
	my ($at2, $rt2) = $issue->();
	my ($at3, $rt3) = $issue->();
	my ($at4, $rt4) = $issue->();
	my ($at5, $rt5) = $issue->();
	like($node->safe_psql('postgres', "EXPLAIN ANALYZE SELECT extension_token_validate('$at1')"),
		qr/actual time/, "$label: EXPLAIN ANALYZE of validate with a literal token");
	like($node->safe_psql('postgres', "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM extension_token_refresh('$rt1')"),
		qr/actual time/, "$label: EXPLAIN ANALYZE of refresh with a literal token");
	$node->safe_psql('postgres',
		"DO \$\$ BEGIN PERFORM extension_token_validate('$at2'); PERFORM extension_token_refresh('$rt2'); END \$\$");
	is($node->safe_psql('postgres', "SELECT valid FROM extension_token_validate('$at3')"),
		't', "$label: validate with a literal token");
	my ($at3n, $rt3n) = split /\|/, $node->safe_psql('postgres',
		"SELECT access_token, refresh_token FROM extension_token_refresh('$rt3')");
	add_access_token("$label refreshed access token 3", $at3n);
	add_refresh_token("$label refreshed refresh token 3", $rt3n);
	like(try_sql($node, "SELECT * FROM extension_token_refresh('$rt3')"),
		qr/refresh token rejected/, "$label: refresh with a reused literal token fails");
	is($node->safe_psql('postgres', "SELECT extension_token_revoke('$at4')"),
		't', "$label: revoke with a literal access token");
	$node->safe_psql('postgres', "SELECT extension_token_revoke('$rt5')");
	like(try_sql($node, "SELECT extension_token_validate('$at5'), 1/0"),
		qr/division by zero/, "$label: a failing statement carrying a token");
	like(try_sql($node, "SELECT '$rt4'::int"),
		qr/invalid input syntax for type integer/, "$label: a cast whose error quotes the token");
	like(try_sql($node, "SELECT '$at3n"),
		qr/syntax error/, "$label: a token in an unterminated literal (a syntax error)");
	$node->safe_psql('postgres', "SELECT 1 AS one /* $at3n */");

	# API keys as literals: validated, in a failing statement, revoked.
	my $key = $node->safe_psql('postgres',
		"SELECT api_key FROM extension_token_api_key_create('user_red', 'key')");
	$fragments{"$label API key body"} = substr($key, length('ext_pat_'));
	is($node->safe_psql('postgres', "SELECT valid FROM extension_token_validate('$key')"),
		't', "$label: validate with a literal API key");
	like(try_sql($node, "SELECT '$key'::int"),
		qr/invalid input syntax for type integer/, "$label: a cast whose error quotes the API key");
	is($node->safe_psql('postgres', "SELECT extension_token_revoke('$key')"),
		't', "$label: revoke with a literal API key");

	# Controls: what pg_stat_statements and auto_explain keep otherwise.
	$node->safe_psql('postgres', 'DO $$ BEGIN PERFORM 1; END $$ /* control-8f2e */');

	# -----------------------------------------------------------------
	# pg_stat_activity, seen by a pg_read_all_stats member while blocked.
	# -----------------------------------------------------------------
	my $watcher = $node->background_psql('postgres', extra_params => [ '-U', 'watcher' ]);
	my $holder = $node->background_psql('postgres');
	my $victim = $node->background_psql('postgres', on_error_stop => 0);
	my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');

	# (0) waiting while planned (the planner locks the inheritance child),
	# after the parse, before the executor
	my ($at0) = $issue->();
	$holder->query_safe('BEGIN; LOCK TABLE child IN ACCESS EXCLUSIVE MODE');
	$victim->query_until(qr/started-0/,
		"\\echo started-0\nSELECT extension_token_validate('$at0') FROM parent;\n");
	ok( $node->poll_query_until('postgres',
			"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $victim_pid"),
		"$label: activity (0): the statement waits on the child table while planned");
	my ($waiting, @seen) = watch_activity($watcher, $victim_pid, 50);
	ok($waiting > 0, "$label: activity (0): the poller saw it waiting ($waiting of 50 polls)");
	no_fragment_in(join("\n", @seen), 'pg_stat_activity while it waits to be planned', $label);
	$holder->query_safe('COMMIT');
	$victim->query('SELECT 1');

	# (1) waiting in the executor, before any function of the extension runs
	my ($at6, $rt6, $sid6) = $issue->();
	$holder->query_safe('SELECT pg_advisory_lock(4242)');
	$victim->query_until(qr/started-1/,
		"\\echo started-1\nSELECT pg_advisory_lock(4242), extension_token_validate('$at6');\n");
	ok( $node->poll_query_until('postgres',
			"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $victim_pid"),
		"$label: activity (1): the statement waits on the advisory lock");
	($waiting, @seen) = watch_activity($watcher, $victim_pid, 50);
	ok($waiting > 0, "$label: activity (1): the poller saw it waiting ($waiting of 50 polls)");
	no_fragment_in(join("\n", @seen), 'pg_stat_activity while it waits before the function runs', $label);
	like($seen[0], qr/hidden by extension_tokens/, "$label: activity (1): it shows the placeholder");
	$holder->query_safe('SELECT pg_advisory_unlock(4242)');
	$victim->query('SELECT 1');

	# (2) refresh waiting on the session row, held FOR UPDATE elsewhere
	my ($at7, $rt7, $sid7) = $issue->();
	$holder->query_safe(
		"BEGIN; SELECT 1 FROM extension_token_sessions WHERE session_id = '$sid7' FOR UPDATE");
	$victim->query_until(qr/started-2/,
		"\\echo started-2\nSELECT * FROM extension_token_refresh('$rt7');\n");
	ok( $node->poll_query_until('postgres',
			"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $victim_pid"),
		"$label: activity (2): refresh waits on the session row");
	($waiting, @seen) = watch_activity($watcher, $victim_pid, 50);
	ok($waiting > 0, "$label: activity (2): the poller saw it waiting ($waiting of 50 polls)");
	no_fragment_in(join("\n", @seen), 'pg_stat_activity while refresh waits on the row', $label);
	$holder->query_safe('COMMIT');
	$victim->query('SELECT 1');

	# (3) the extended protocol: the text is reported again at Bind and at
	# Execute, after the parse
	my ($at8) = $issue->();
	my $script = $node->basedir . "/extended-$label.sql";
	open my $fh, '>', $script or die;
	print $fh "SELECT pg_advisory_lock(4243), extension_token_validate('$at8');\n";
	close $fh;
	$holder->query_safe('SELECT pg_advisory_lock(4243)');
	my ($pb_out, $pb_err) = ('', '');
	my $pgbench = IPC::Run::start(
		[ 'pgbench', '-n', '-M', 'extended', '-t', '1', '-f', $script,
		  $node->connstr('postgres') . ' application_name=et_extended' ],
		'>', \$pb_out, '2>', \$pb_err);
	$pgbench->pump_nb;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'et_extended' AND wait_event_type = 'Lock'"),
		"$label: activity (3): the extended-protocol statement waits on the advisory lock")
	  or diag("pgbench: $pb_out $pb_err");
	my $pb_pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = 'et_extended'");
	($waiting, @seen) = watch_activity($watcher, $pb_pid, 50);
	ok($waiting > 0, "$label: activity (3): the poller saw it waiting ($waiting of 50 polls)");
	no_fragment_in(join("\n", @seen), 'pg_stat_activity (extended protocol) while it waits', $label);
	$holder->query_safe('SELECT pg_advisory_unlock(4243)');
	$pgbench->finish;
	like($pb_out, qr/number of transactions actually processed: 1/,
		"$label: activity (3): pgbench's statement then ran");

	# idle afterwards: the last statement's text is still shown
	my $idle = $watcher->query_safe("SELECT query FROM pg_stat_activity WHERE pid = $victim_pid");
	no_fragment_in($idle, 'pg_stat_activity of the idle session', $label);

	$watcher->quit;
	$holder->quit;
	$victim->quit;

	# -----------------------------------------------------------------
	# The searches.
	# -----------------------------------------------------------------
	my $pgss = $node->safe_psql('postgres', 'SELECT query FROM pg_stat_statements');
	like($pgss, qr{DO \$\$ BEGIN PERFORM 1; END \$\$ /\* control-8f2e \*/},
		"$label: control: pg_stat_statements keeps an ordinary DO block verbatim");
	like($pgss, qr/extension_token_issue/, "$label: control: ... and the calls without tokens");
	no_fragment_in($pgss, 'pg_stat_statements.query', $label);
	my $qtexts = $node->data_dir . '/pg_stat_tmp/pgss_query_texts.stat';
	ok(-e $qtexts, "$label: pg_stat_statements' query-text file exists");
	no_fragment_in(slurp_file($qtexts), "pg_stat_statements' query-text file", $label);

	$node->stop;
	my $log = slurp_file($node->logfile);
	like($log, qr/Query Text: .*\[token hidden by extension_tokens\]/,
		"$label: control: auto_explain logged statements, their tokens replaced");
	like($log, qr/Query Text: <statement hidden by extension_tokens/,
		"$label: control: auto_explain logged the EXPLAIN ANALYZE statement, hidden");
	like($log, qr/Output: extension_token_validate\('\[token hidden by extension_tokens\]'::text/,
		"$label: control: auto_explain's verbose plans show the constants, the tokens replaced");
	like($log, qr/LOG:  statement: /, "$label: control: log_statement logged statements");
	like($log, qr/ERROR:  ALTER SYSTEM cannot run inside a transaction block/,
		"$label: control: the failing rotation was logged");
	like($log, qr/ERROR:  syntax error \(the text is hidden by extension_tokens/,
		"$label: the syntax error in a statement carrying a secret was logged without its text");
	no_fragment_in($log, 'the server log', $label);
	return;
}

run_cluster('pgss_first', 'pg_stat_statements,auto_explain,pg_cron,extension_tokens');
run_cluster('tokens_first', 'extension_tokens,pg_stat_statements,auto_explain');

done_testing();
