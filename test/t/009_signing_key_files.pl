# 009_signing_key_files.pl: ES256 / EdDSA private keys from files, at server
# start and at reload (what pg_regress, which cannot restart, does not see).
#
#   (a) a server started with a good ES256 key file signs and validates, and
#       publishes the key in extension_token_jwks();
#   (b) a reload with the file replaced by a group-readable one, or by a key
#       of an unsupported type, is refused and logged: the key in force stays;
#   (c) a restart with the key file readable by others: a WARNING at start,
#       no key at all (issue fails with 55000 "could not be used"), an empty
#       JWK Set; fixed and reloaded, tokens again;
#   (d) a restart with signing_algorithm = EdDSA and the same ES256 key: a
#       55000 naming both; an Ed25519 key in its place, tokens again;
#   (e) no private key material is anywhere in the server log
#       (log_statement = all, as PostgreSQL::Test::Cluster sets it).
# Keys are made with openssl.
use strict;
use warnings;
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('signingkeys');
$node->init;
my $keydir = File::Spec->rel2abs($node->basedir . '/keys');
mkdir $keydir or die "mkdir $keydir: $!";
chmod 0700, $keydir;

sub genkey
{
	my ($path, @args) = @_;
	system('openssl', 'genpkey', @args, '-out', $path) == 0 or die "openssl genpkey $path failed";
	chmod 0600, $path;
	return;
}
my $es = "$keydir/es256.pem";
my $ed = "$keydir/ed25519.pem";
my $rsa = "$keydir/rsa.pem";
genkey($es, '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256');
genkey($ed, '-algorithm', 'ed25519');
genkey($rsa, '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024');

sub slurp { my ($p) = @_; open my $fh, '<', $p or die "$p: $!"; local $/; return <$fh>; }
# The base64 lines of every private key made here: none may reach the log.
my @key_lines = map { grep { !/^-----/ && length > 20 } split /\n/, slurp($_) } ($es, $ed, $rsa);

$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.signing_algorithm = 'ES256'
extension_tokens.signing_key_file = '$es'
extension_tokens.issue_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

sub issue
{
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT access_token FROM extension_token_issue('keyfile-user')");
	return ($ret, $out, $err);
}

sub valid
{
	my ($token) = @_;
	return $node->safe_psql('postgres', "SELECT valid FROM extension_token_validate('$token')");
}

sub reload_and_wait
{
	$node->reload;
	# the postmaster has processed SIGHUP once a new backend sees the change;
	# give it a moment either way
	usleep(500_000);
	return;
}

# (a)
my ($ret, $token, $err) = issue();
is($ret, 0, 'start: ES256 key file, issue works') or diag $err;
is(valid($token), 't', 'start: the ES256 token validates');
my $kid = $node->safe_psql('postgres', "SELECT extension_token_jwks()->'keys'->0->>'kid'");
like($kid, qr/^[A-Za-z0-9_-]{43}$/, 'start: the JWK Set publishes the key (a 43-character thumbprint kid)');

# (b) reloads that must be refused, the key in force kept
my $good = slurp($es);
chmod 0640, $es;
reload_and_wait();
like(slurp($node->logfile), qr/extension_tokens\.signing_key_file: key file ".*" has group or world access/,
	'reload: a group-readable key file is refused and logged');
is(valid($token), 't', 'reload: the key in force stays (group-readable file)');
chmod 0600, $es;
$node->append_conf('postgresql.conf', "extension_tokens.signing_key_file = '$rsa'\n");
reload_and_wait();
like(slurp($node->logfile), qr/key file ".*rsa\.pem" cannot be used: it holds a private key of another type/,
	'reload: an RSA key file is refused and logged');
is($node->safe_psql('postgres', "SELECT extension_token_jwks()->'keys'->0->>'kid'"), $kid,
	'reload: the JWK Set still holds the key in force');
($ret, my $t2, $err) = issue();
is($ret, 0, 'reload: still issuing with the key in force') or diag $err;

# (c) a restart with a key file readable by others: no key at all
$node->append_conf('postgresql.conf', "extension_tokens.signing_key_file = '$es'\n");
chmod 0644, $es;
$node->restart;
like(slurp($node->logfile), qr/WARNING:  extension_tokens\.signing_key_file: key file ".*" has group or world access/,
	'restart: a world-readable key file is refused with a WARNING');
($ret, undef, $err) = issue();
like($err, qr/extension_tokens\.signing_key_file could not be used/, 'restart: issue refuses with a clear message');
like($err, qr/ERROR:  /, 'restart: as an error');
is($node->safe_psql('postgres', 'SELECT extension_token_jwks()'), '{"keys": []}',
	'restart: the JWK Set is empty while no key is in force');
chmod 0600, $es;
reload_and_wait();
($ret, $token, $err) = issue();
is($ret, 0, 'fixed and reloaded: issue works again') or diag $err;

# (d) EdDSA with the ES256 key, then with an Ed25519 key
$node->append_conf('postgresql.conf', "extension_tokens.signing_algorithm = 'EdDSA'\n");
$node->restart;
($ret, undef, $err) = issue();
like($err, qr/signing_key_file holds a key for ES256, but extension_tokens\.signing_algorithm is EdDSA/,
	'EdDSA with an ES256 key: refused, naming both');
my (undef, undef, $verr) = $node->psql('postgres', "SELECT valid FROM extension_token_validate('$token')");
like($verr, qr/holds a key for ES256/, 'EdDSA with an ES256 key: validate refuses too (55000)');
$node->append_conf('postgresql.conf', "extension_tokens.signing_key_file = '$ed'\n");
reload_and_wait();
($ret, my $edtoken, $err) = issue();
is($ret, 0, 'EdDSA with an Ed25519 key: issue works') or diag $err;
is(valid($edtoken), 't', 'EdDSA token validates');
is($node->safe_psql('postgres', "SELECT error FROM extension_token_validate('$token')"), 'unsupported_algorithm',
	'the ES256 token is refused under EdDSA');

# (e)
$node->stop;
my $log = slurp($node->logfile);
my @found = grep { index($log, $_) >= 0 } @key_lines;
is(scalar(@found), 0, 'no private key material in the server log');
done_testing();
