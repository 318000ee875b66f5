# 010_events.pl: security events reach the people watching.
#
# A LISTEN on the channel extension_tokens (one connection) receives the
# JSON payload of a revocation made by another connection, at its commit,
# and nothing for a revocation rolled back; refresh-token reuse notifies
# reuse_detected and the revocation (committed by the revoker's worker after
# the caller's PT401).  The server log has one LOG line per security event
# (reuse, a revocation by an administrator, a rate limit tripped) with the
# session id, user id and reason.  No token is in any payload, nor in the log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

my $node = PostgreSQL::Test::Cluster->new('events');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
extension_tokens.refresh_retry_window = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN extension_tokens');

# The notifications the listener has received so far (psql prints them
# after the next command it runs), as decoded payloads.
my @seen;
sub poll_notifications
{
	my $out = $listener->query_safe('SELECT 1');
	while ($out =~ /Asynchronous notification "extension_tokens" with payload "(.*?)" received/g)
	{
		push @seen, $1;
	}
	return @seen;
}

# Waits (at most 10 s) for a payload matching $re.
sub wait_for_payload
{
	my ($re) = @_;
	for (1 .. 100)
	{
		poll_notifications();
		return 1 if grep { $_ =~ $re } @seen;
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

# --- a revocation by an administrator (the superuser) -----------------------
my ($access, $refresh, $sid) = split /\|/,
  q1("SELECT access_token, refresh_token, session_id FROM extension_token_issue('tap_alice', 'laptop')");
ok($sid =~ /^[0-9a-f-]{36}$/, 'issued a session');
is(q1("SELECT extension_token_revoke_session('$sid')"), 't', 'administrator revoked the session');
ok( wait_for_payload(
		qr/^\{"event":"revoked","session_id":"$sid","user_id":"tap_alice","reason":"admin_revoked"\}$/),
	'the listener received the revocation payload');
ok(!(grep { index($_, $access) >= 0 || index($_, $refresh) >= 0 } @seen), 'no token in the payloads');

# --- a revocation rolled back: no notification -------------------------------
my ($sid2) = q1("SELECT session_id FROM extension_token_issue('tap_alice', 'phone')");
q1("BEGIN; SELECT extension_token_revoke_session('$sid2'); ROLLBACK;");
poll_notifications();
select(undef, undef, undef, 0.3);
poll_notifications();
ok(!(grep { /$sid2/ } @seen), 'a rolled-back revocation notifies nobody');

# --- reuse: notified after the caller's PT401 --------------------------------
my ($r1, $sid3) = split /\|/,
  q1("SELECT refresh_token, session_id FROM extension_token_issue('tap_bob', 'tablet')");
my ($r2) = q1("SELECT refresh_token FROM extension_token_refresh('$r1')");
my ($rc, $stdout, $stderr) =
  $node->psql('postgres', "SELECT extension_token_refresh('$r1')");
like($stderr, qr/refresh_token_already_used|PT401|refresh token/i, 'reuse refused');
ok( wait_for_payload(
		qr/^\{"event":"reuse_detected","session_id":"$sid3","user_id":"tap_bob","reason":"refresh_token_already_used"\}$/
	),
	'the listener received reuse_detected');
ok( wait_for_payload(
		qr/^\{"event":"revoked","session_id":"$sid3","user_id":"tap_bob","reason":"refresh_token_reuse"\}$/),
	'and the revocation that followed');
ok(!(grep { index($_, $r1) >= 0 || index($_, $r2) >= 0 } @seen), 'no refresh token in the payloads');

# --- a rate limit tripped ------------------------------------------------------
q1("ALTER SYSTEM SET extension_tokens.issue_rate_limit = 1; SELECT pg_reload_conf();");
select(undef, undef, undef, 0.5);
q1("SELECT count(*) FROM extension_token_issue('tap_carol', 'first')");
($rc, $stdout, $stderr) =
  $node->psql('postgres', "SELECT extension_token_issue('tap_carol', 'second')");
like($stderr, qr/too many token issues/, 'the second issue is refused');
my $recorded = 0;
for (1 .. 100)
{
	$recorded = q1("SELECT count(*) FROM extension_token_events('tap_carol') WHERE event = 'rate_limited'");
	last if $recorded > 0;
	select(undef, undef, undef, 0.1);
}
is($recorded, '1', 'the refusal is recorded after its error');

# --- expiring soon ---------------------------------------------------------------
my ($kid) = q1("SELECT key_id FROM extension_token_api_key_create('tap_dan', 'ci', NULL, interval '3 days')");
is(q1("SELECT extension_tokens_notify_expiring('7 days', '5 days')"), '1', 'one expiring key notified');
ok(wait_for_payload(qr/^\{"event" : "expiring", "kind" : "api_key", "session_id" : "$kid", "user_id" : "tap_dan", "reason" : "expires_soon", "expires_at" : "[^"]+"\}$/),
	'the listener received the expiring notice');

# --- the log: one line per security event, no token ----------------------------
my $log = slurp_file($node->logfile);
like($log, qr/LOG:  extension_tokens: session $sid of user "tap_alice" revoked by administrator "\w+"/,
	'LOG line for the administrator revocation');
like($log, qr/LOG:  extension_tokens: refresh token reuse detected: session $sid3 of user "tap_bob" revoked \(refresh_token_reuse\)/,
	'LOG line for the reuse');
like($log, qr/LOG:  extension_tokens: rate limit tripped: user "tap_carol", session none, issue_rate_limit/,
	'LOG line for the rate limit');
for my $t ($access, $refresh, $r1, $r2)
{
	ok(index($log, $t) < 0, 'no token in the server log');
}

$listener->quit;
$node->stop;
done_testing();
