# 011_secret_rotated.pl: a change of the signing keys is recorded, once, in
# every database that has the extension, and never the key itself.
#
#   (a) installing records the keys in force as the starting point: no event;
#   (b) the secret file rewritten and the configuration reloaded: one
#       secret_rotated event in each of two databases, the reason naming the
#       new and the old key id (the kid: a SHA-256 prefix), written by the
#       revoker's worker, and one LOG line per database;
#   (c) a reload that changes nothing, or whose new file is refused (the
#       secret in force stays), records nothing;
#   (d) a switch to ES256: the algorithm and the key's RFC 7638 thumbprint,
#       the one extension_tokens_signing_keys() shows;
#   (e) a database that does not allow connections is named in the log, and
#       gets its event from extension_tokens_cleanup() once it allows them;
#   (f) the secret changed while the server was down: recorded at start, in
#       a database created and given the extension since, too;
#   (g) no secret and no private key anywhere in the server log, the events
#       or the recorded state.
use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

sub random_secret { return join '', map { sprintf '%02x', int(rand(256)) } 1 .. 24; }
sub kid { return substr(sha256_hex('extension_tokens kid:' . $_[0]), 0, 16); }

my @secrets = map { random_secret() } 1 .. 4;
my ($s1, $s2, $s3, $s4) = @secrets;
my $short = substr(random_secret(), 0, 20);

my $node = PostgreSQL::Test::Cluster->new('rotated');
$node->init;
my $keydir = File::Spec->rel2abs($node->basedir . '/keys');
mkdir $keydir or die "mkdir $keydir: $!";
chmod 0700, $keydir;
my $secret_file = "$keydir/secret";

sub write_file
{
	my ($path, $content) = @_;
	unlink $path;
	open my $fh, '>', $path or die "open $path: $!";
	print $fh $content;
	close $fh;
	chmod 0600, $path;
	return;
}

sub genkey
{
	my ($path) = @_;
	system('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
		'-out', $path) == 0
	  or die "openssl genpkey $path failed";
	chmod 0600, $path;
	return;
}
my ($es1, $es2) = ("$keydir/es1.pem", "$keydir/es2.pem");
genkey($es1);
genkey($es2);
sub slurp { my ($p) = @_; open my $fh, '<', $p or die "$p: $!"; local $/; return <$fh>; }
my @key_lines = map { grep { !/^-----/ && length > 20 } split /\n/, slurp($_) } ($es1, $es2);

write_file($secret_file, "$s1\n");
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret_file = '$secret_file'
extension_tokens.issue_rate_limit = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql($_, 'CREATE EXTENSION extension_tokens') for qw(postgres app);

sub rotations
{
	my ($db) = @_;
	return $node->safe_psql($db,
		"SELECT string_agg(coalesce(user_id, '-') || '|' || coalesce(session_id::text, '-') || '|' "
		  . "|| coalesce(actor, '-') || '|' || reason, E'\\n' ORDER BY event_id) "
		  . "FROM extension_token_events WHERE event = 'secret_rotated'");
}

# Waits (up to the default timeout) until the database has $n rotations.
sub wait_rotations
{
	my ($db, $n) = @_;
	for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		return 1
		  if $node->safe_psql($db,
			"SELECT count(*) FROM extension_token_events WHERE event = 'secret_rotated'") >= $n;
		usleep(100_000);
	}
	return 0;
}

sub reload { $node->safe_psql('postgres', 'SELECT pg_reload_conf()'); return; }

# --- (a) the starting point ---------------------------------------------------
for my $db (qw(postgres app))
{
	is($node->safe_psql($db, 'SELECT algorithm, secret_id, key_id FROM extension_token_signing_state'),
		'HS256|' . kid($s1) . '|', "$db: installing recorded the keys in force");
	is(rotations($db), '', "$db: and no rotation");
}

# --- (b) the secret file rewritten, reloaded ------------------------------------
write_file($secret_file, "$s2\n");
reload();
my $rotated = 'jwt_secret ' . kid($s2) . ' (was ' . kid($s1) . ')';
for my $db (qw(postgres app))
{
	ok(wait_rotations($db, 1), "$db: the rotation was recorded");
	is(rotations($db), "-|-|-|$rotated", "$db: one secret_rotated event, the new and the old key id");
	is($node->safe_psql($db, 'SELECT secret_id FROM extension_token_signing_state'),
		kid($s2), "$db: the record moved on");
}
ok($node->wait_for_log(qr/signing keys rotated in database "app": \Q$rotated\E/),
	'one LOG line for the database app');

# --- (c) nothing changed, or a refused file: nothing recorded ---------------
reload();
write_file($secret_file, "$short\n");
reload();
ok($node->wait_for_log(qr/jwt_secret_file: the secret in file .* is too short/),
	'the short secret file was refused');
sleep 3;
for my $db (qw(postgres app))
{
	is($node->safe_psql($db,
			"SELECT count(*) FROM extension_token_events WHERE event = 'secret_rotated'"),
		'1', "$db: a reload that changed nothing recorded nothing");
}
write_file($secret_file, "$s2\n");

# --- (d) ES256 --------------------------------------------------------------
$node->safe_psql('postgres',
	"ALTER SYSTEM SET extension_tokens.signing_algorithm = 'ES256';"
	  . "ALTER SYSTEM SET extension_tokens.signing_key_file = '$es1'");
reload();
ok(wait_rotations('app', 2), 'app: the switch to ES256 was recorded');
ok(wait_rotations('postgres', 2), 'postgres: the switch to ES256 was recorded');
my $thumb = $node->safe_psql('app',
	"SELECT key_id FROM extension_tokens_signing_keys() WHERE status = 'current'");
like($thumb, qr/^[A-Za-z0-9_-]{43}$/, 'the ES256 key has its thumbprint');
is( $node->safe_psql('app',
		"SELECT reason FROM extension_token_events WHERE event = 'secret_rotated' ORDER BY event_id DESC LIMIT 1"),
	"signing_algorithm ES256 (was HS256), signing_key $thumb (was none)",
	'the reason names the algorithm and the key thumbprint');

# --- (e) a database that refuses connections --------------------------------
$node->safe_psql('postgres', 'ALTER DATABASE app ALLOW_CONNECTIONS false');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET extension_tokens.signing_key_file = '$es2'");
reload();
ok(wait_rotations('postgres', 3), 'postgres: the new key was recorded');
my $thumb2 = $node->safe_psql('postgres',
	"SELECT key_id FROM extension_tokens_signing_keys() WHERE status = 'current'");
ok($node->wait_for_log(qr/database "app" does not allow connections: a change of the signing keys is not recorded there/),
	'the database that refuses connections is named in the log');
$node->safe_psql('postgres', 'ALTER DATABASE app ALLOW_CONNECTIONS true');
is($node->safe_psql('app',
		"SELECT count(*) FROM extension_token_events WHERE event = 'secret_rotated'"),
	'2', 'app: not recorded while it refused connections');
$node->safe_psql('app', 'SELECT extension_tokens_cleanup()');
is( $node->safe_psql('app',
		"SELECT reason FROM extension_token_events WHERE event = 'secret_rotated' ORDER BY event_id DESC LIMIT 1"),
	"signing_key $thumb2 (was $thumb)",
	'app: the next cleanup recorded it');
is($node->safe_psql('app', 'SELECT extension_tokens_check_signing_keys()'),
	'f', 'app: and only once');

# back to HS256 with the secret in force
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET extension_tokens.signing_algorithm;"
	  . "ALTER SYSTEM RESET extension_tokens.signing_key_file");
reload();
ok(wait_rotations('postgres', 4), 'postgres: back to HS256 recorded');
ok(wait_rotations('app', 4), 'app: back to HS256 recorded');

# --- (f) changed while the server was down ------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE late');
$node->safe_psql('late', 'CREATE EXTENSION extension_tokens');
is(rotations('late'), '', 'late: installed after the rotations, none of them');
$node->stop;
write_file($secret_file, "$s3\n");
$node->start;
my $offline = 'jwt_secret ' . kid($s3) . ' (was ' . kid($s2) . ')';
for my $db (qw(postgres app late))
{
	my $n = $db eq 'late' ? 1 : 5;
	ok(wait_rotations($db, $n), "$db: the change made while the server was down was recorded");
	is( $node->safe_psql($db,
			"SELECT reason FROM extension_token_events WHERE event = 'secret_rotated' ORDER BY event_id DESC LIMIT 1"),
		$offline, "$db: with the new and the old key id");
}
# and tokens are signed with the new secret
my $at = $node->safe_psql('postgres', "SELECT access_token FROM extension_token_issue('tap_rot')");
is($node->safe_psql('postgres', "SELECT valid FROM extension_token_validate('$at')"),
	't', 'tokens work with the secret read at start');

# --- (g) no secret, no key ----------------------------------------------------
my $log = slurp_file($node->logfile);
my @leaks = grep { index($log, $_) >= 0 } (@secrets, $short, @key_lines);
is(scalar @leaks, 0, 'no secret and no key line in the server log');
for my $db (qw(postgres app late))
{
	my $rows = $node->safe_psql($db,
		"SELECT string_agg(e::text, ' ') FROM extension_token_events e WHERE event = 'secret_rotated'")
	  . $node->safe_psql($db, 'SELECT s::text FROM extension_token_signing_state s');
	is(scalar(grep { index($rows, $_) >= 0 } (@secrets, @key_lines)), 0,
		"$db: no secret in the events or the recorded state");
}

$node->stop;
done_testing();
