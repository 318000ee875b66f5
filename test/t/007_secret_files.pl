# 007_secret_files.pl: the signing secrets from files, rotation through the
# files, and the refusal of bad secrets (too short, unreadable, readable by
# others) with the secret in force kept.
#
#   (a) extension_tokens.jwt_secret (the setting): ALTER SYSTEM with a
#       secret under 32 bytes fails at once, without echoing it; a reload of
#       a configuration file holding a short one keeps the old secret and
#       logs why.
#   (b) extension_tokens.jwt_secret_file takes precedence over the setting;
#       a trailing line break is not part of the secret.
#   (c) rotation through the files with a reload: tokens signed with the
#       previous secret still validate, new ones are signed with the new.
#   (d) a reload with the file unreadable, empty, short, readable by group
#       or others, a directory, holding a NUL byte: refused and logged, the
#       secret in force stays; ALTER SYSTEM naming such a file fails.
#   (e) a restart with a bad file: no secret at all (no fall back to the
#       setting), a clear 55000; fixed and reloaded, tokens again.
#   (f) the file settings are superuser-only; and no secret, short or long,
#       is anywhere in the server log (log_statement = all, as
#       PostgreSQL::Test::Cluster sets it: every statement is logged).
#
# Which secret signed a token is checked here, in Perl, from the token's
# bytes: HMAC-SHA256 of header.payload under each candidate.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256);
use File::Spec;
use MIME::Base64 qw(encode_base64url);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

sub random_secret { return join '', map { sprintf '%02x', int(rand(256)) } 1 .. 24; }

my $s_setting = random_secret();    # the jwt_secret setting
my $s_a = random_secret();          # the first file's secret
my $s_b = random_secret();          # rotated in
my $s_c = random_secret();          # offered in bad files only
my $s_d = random_secret();          # rotated in at the end
my $short = 'sh' . substr(random_secret(), 0, 20);    # 22 bytes
my $short_file = 'sf' . substr(random_secret(), 0, 28);    # 30 bytes
my @all_secrets = ($s_setting, $s_a, $s_b, $s_c, $s_d, $short, $short_file);

my $node = PostgreSQL::Test::Cluster->new('secretfiles');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$s_setting'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');

# Absolute: the server reads a relative path from its data directory, and
# PostgreSQL 17's test clusters have a relative basedir.
my $keydir = File::Spec->rel2abs($node->basedir . '/keys');
mkdir $keydir or die "mkdir $keydir: $!";
chmod 0700, $keydir;
my $current = "$keydir/current.key";
my $previous = "$keydir/previous.key";

# ---------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------
sub write_file
{
	my ($path, $content, $mode) = @_;
	unlink $path;
	open my $fh, '>', $path or die "open $path: $!";
	binmode $fh;
	print $fh $content;
	close $fh;
	chmod $mode // 0600, $path;
	return;
}

sub try_sql
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	return ($ret == 0, $out // '', $err // '');
}

sub issue
{
	return split /\|/, $node->safe_psql('postgres',
		"SELECT access_token, refresh_token FROM extension_token_issue('user_files', 'f')");
}

sub validate_error
{
	my ($at) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(error, 'valid') FROM extension_token_validate('$at')");
}

# Which of the candidate secrets signed this token ('none' if none did).
sub signer
{
	my ($token, %candidates) = @_;
	my ($h, $p, $sig) = split /\./, $token;
	for my $name (sort keys %candidates)
	{
		return $name
		  if encode_base64url(hmac_sha256("$h.$p", $candidates{$name})) eq $sig;
	}
	return 'none';
}

my %named = (
	setting => $s_setting,
	A       => $s_a,
	B       => $s_b,
	C       => $s_c,
	D       => $s_d);

# The secret new tokens are signed with, once the reload is processed (a new
# session forks from the postmaster, which applies a reload at once; this
# waits for the expected signer, up to the default timeout).
sub wait_signer
{
	my ($want) = @_;
	my $got = '';
	for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		my ($at) = issue();
		$got = signer($at, %named);
		return $got if $got eq $want;
		usleep(100_000);
	}
	return $got;
}

# Reloads and waits until the postmaster logged a refusal of the file.
sub reload_expect_refusal
{
	my ($what) = @_;
	my $offset = -s $node->logfile;
	$node->reload;
	$node->wait_for_log(qr/contains errors; unaffected changes were applied/, $offset);
	return slurp_file($node->logfile, $offset);
}

# ---------------------------------------------------------------------
# (a) The setting: short secrets are refused when they are set.
# ---------------------------------------------------------------------
my ($at0) = issue();
is(signer($at0, %named), 'setting', 'tokens are signed with extension_tokens.jwt_secret at first');

my ($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret = '$short'");
ok(!$ok, 'setting: ALTER SYSTEM SET jwt_secret to a 22-byte secret fails');
like($err, qr/ERROR:  extension_tokens\.jwt_secret is too short/, 'setting: ... with a clear error');
like($err, qr/at least 32 bytes/, 'setting: ... that says the minimum');
ok(index($err, $short) < 0, 'setting: ... that does not echo the value');
($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret_previous = '$short'");
ok(!$ok && $err =~ /extension_tokens\.jwt_secret_previous is too short/,
	'setting: ALTER SYSTEM SET jwt_secret_previous to a short secret fails too');
unlike(slurp_file($node->data_dir . '/postgresql.auto.conf'), qr/jwt_secret/,
	'setting: nothing was written to postgresql.auto.conf');
($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret = ''");
ok($ok, 'setting: ALTER SYSTEM SET jwt_secret to the empty string (no secret) is allowed');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET extension_tokens.jwt_secret');

# A short secret in the configuration file itself (written by hand): the
# reload refuses it, logs why without the value, and the old one stays.
$node->append_conf('postgresql.conf', "extension_tokens.jwt_secret = '$short'\n");
my $log = reload_expect_refusal();
like($log, qr/LOG:  extension_tokens\.jwt_secret is too short/,
	'setting: a reload with a short secret in postgresql.conf logs that it is too short');
is(wait_signer('setting'), 'setting', 'setting: ... and tokens are still signed with the secret in force');
ok(index($log, $short) < 0, 'setting: ... and the refusal does not name the value');
# (the short line goes again: later reloads must not keep refusing it)
$node->adjust_conf('postgresql.conf', 'extension_tokens.jwt_secret', "'$s_setting'");
$node->reload;

# ---------------------------------------------------------------------
# (b) The file takes precedence; its trailing line break is not the secret.
# ---------------------------------------------------------------------
write_file($current, "$s_a\n");
($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret_file = '$current'");
ok($ok, 'file: ALTER SYSTEM SET jwt_secret_file to a good file succeeds') or diag $err;
$node->reload;
is(wait_signer('A'), 'A', 'file: after the reload, tokens are signed with the file\'s secret (line break stripped)');
is(validate_error($at0), 'invalid_signature',
	'file: a token of the setting\'s secret no longer validates (the file replaced it, nothing made it previous)');
is($node->safe_psql('postgres', 'SHOW extension_tokens.jwt_secret_file'), $current,
	'file: SHOW names the file to a superuser');

# ---------------------------------------------------------------------
# (c) Rotation through the files: current -> previous, a new current.
# ---------------------------------------------------------------------
my ($at_a) = issue();
my ($at_a2, $rt_a2) = issue();    # this session is refreshed below
is(signer($at_a, %named), 'A', 'rotation: a token signed with A');
write_file($previous, "$s_a\r\n");    # CRLF: both bytes are stripped
write_file($current, $s_b);           # no line break at all
$node->safe_psql('postgres', "ALTER SYSTEM SET extension_tokens.jwt_secret_previous_file = '$previous'");
$node->reload;
is(wait_signer('B'), 'B', 'rotation: after the reload, new tokens are signed with B');
is(validate_error($at_a), 'valid', 'rotation: the token signed with A (now previous) still validates');
my ($at_b, $rt_b) = issue();
is(validate_error($at_b), 'valid', 'rotation: a token signed with B validates');
my ($at_r, $rt_r) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_refresh('$rt_a2')");
is(signer($at_r, %named), 'B', 'rotation: refreshing the session of A gives a token signed with B');

# ---------------------------------------------------------------------
# (d) Bad files at reload: refused, logged, the secret in force stays.
# ---------------------------------------------------------------------
my @bad = (
	[ 'readable by others (0644)', "$s_c\n", 0644, qr/has group or world access/ ],
	[ 'readable by the group (0640, owned by the server\'s user)', "$s_c\n", 0640, qr/has group or world access/ ],
	[ 'unreadable (0000)', "$s_c\n", 0000, qr/could not open secret file .*Permission denied/ ],
	[ 'empty', '', 0600, qr/is empty/ ],
	[ 'only a line break', "\n", 0600, qr/is empty/ ],
	[ 'too short (30 bytes)', "$short_file\n", 0600, qr/the secret in file .* is too short/ ],
	[ 'holding a NUL byte', "$s_c\0$s_c", 0600, qr/contains a NUL byte/ ],
	[ 'larger than 4096 bytes', ('x' x 5000), 0600, qr/is larger than 4096 bytes/ ],);
SKIP:
{
	skip 'running as root: file permissions do not bind', scalar(@bad) * 5 if $> == 0;
	for my $case (@bad)
	{
		my ($what, $content, $mode, $why) = @$case;
		write_file($current, $content, $mode);
		$log = reload_expect_refusal();
		like($log, qr/LOG:  extension_tokens\.jwt_secret_file: .*$why/,
			"bad file $what: the reload logs the refusal");
		like($log, qr/HINT:  Nothing was changed: the secret in force, if any, stays in force\./,
			"bad file $what: ... and says the secret in force stays");
		is(wait_signer('B'), 'B', "bad file $what: new tokens are still signed with B");
		is(validate_error($at_a), 'valid', "bad file $what: A's token (previous file) still validates");
		($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret_file = '$current'");
		ok(!$ok && $err =~ $why, "bad file $what: ALTER SYSTEM naming it fails with the reason");
	}
}

# A path that is a directory, and one that does not exist.
($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret_file = '$keydir'");
ok(!$ok && $err =~ /is not a regular file/, 'bad file: a directory is refused by ALTER SYSTEM');
($ok, $out, $err) = try_sql("ALTER SYSTEM SET extension_tokens.jwt_secret_previous_file = '$keydir/nope.key'");
ok(!$ok && $err =~ /could not open secret file .*No such file or directory/,
	'bad file: a missing previous file is refused by ALTER SYSTEM');
is($node->safe_psql('postgres', 'SHOW extension_tokens.jwt_secret_previous_file'), $previous,
	'bad file: the previous file setting is unchanged');

# ---------------------------------------------------------------------
# (e) A restart with a bad file: no secret (no fall back to the setting).
# ---------------------------------------------------------------------
# the setting gets a value again: the restart must not fall back to it
$node->safe_psql('postgres', "ALTER SYSTEM SET extension_tokens.jwt_secret = '$s_setting'");
SKIP:
{
	skip 'running as root: file permissions do not bind', 7 if $> == 0;
	write_file($current, "$s_c\n", 0644);
	my $offset = -s $node->logfile;
	$node->restart;
	$log = slurp_file($node->logfile, $offset);
	like($log, qr/WARNING:  extension_tokens\.jwt_secret_file: secret file ".*" has group or world access/,
		'restart with a bad file: a WARNING at start says why');
	like($log, qr/HINT:  No secret is used from this setting until the file is fixed and the configuration is reloaded\./,
		'restart with a bad file: ... and that no secret is used from it');
	($ok, $out, $err) = try_sql("SELECT extension_token_issue('user_files', 'f')");
	like($err, qr/ERROR:  extension_tokens\.jwt_secret_file could not be used/,
		'restart with a bad file: issue fails with a clear error, without falling back to jwt_secret');
	($ok, $out, $err) = try_sql("SELECT extension_token_validate('$at_b')");
	like($err, qr/extension_tokens\.jwt_secret_file could not be used/,
		'restart with a bad file: validate fails the same way');
	chmod 0600, $current;
	$node->reload;
	is(wait_signer('C'), 'C', 'restart with a bad file: fixed and reloaded, tokens are signed with its secret');
	is(validate_error($at_a), 'valid', 'restart with a bad file: the previous file was read at the restart');
	is(validate_error($at_b), 'invalid_signature',
		'restart with a bad file: B, no longer in any file, no longer validates');
}
if ($> == 0)
{
	write_file($current, "$s_c\n");
	$node->restart;
}

# Rotation once more, by pointing the settings at other files.
my $next = "$keydir/next.key";
write_file($next, "$s_d\n");
$node->safe_psql('postgres', "ALTER SYSTEM SET extension_tokens.jwt_secret_previous_file = '$current'");
$node->safe_psql('postgres', "ALTER SYSTEM SET extension_tokens.jwt_secret_file = '$next'");
$node->reload;
is(wait_signer('D'), 'D', 'rotation by path: new tokens are signed with the new file\'s secret');
# Removing the file settings falls back to jwt_secret (and its previous).
$node->safe_psql('postgres', 'ALTER SYSTEM RESET extension_tokens.jwt_secret_file');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET extension_tokens.jwt_secret_previous_file');
$node->reload;
is(wait_signer('setting'), 'setting', 'reset: without the file settings, jwt_secret signs again');

# ---------------------------------------------------------------------
# (f) Privileges, and the log.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE plain LOGIN');
my ($ret, $o, $e) = $node->psql('postgres', 'SHOW extension_tokens.jwt_secret_file',
	extra_params => [ '-U', 'plain' ]);
like($e, qr/permission denied|must be superuser|pg_read_all_settings/,
	'privileges: a plain role cannot SHOW jwt_secret_file');
($ret, $o, $e) = $node->psql('postgres', "SET extension_tokens.jwt_secret_file = '$next'");
like($e, qr/cannot be changed now/, 'privileges: no session can SET jwt_secret_file');
($ret, $o, $e) = $node->psql('postgres', "ALTER ROLE plain SET extension_tokens.jwt_secret_file = '$next'");
like($e, qr/cannot be changed now/, 'privileges: nor ALTER ROLE ... SET it');

$log = slurp_file($node->logfile);
like($log, qr/statement: /, 'log: statements are being logged (log_statement = all)');
my $i = 0;
for my $s (@all_secrets)
{
	$i++;
	ok(index($log, $s) < 0, "log: secret #$i is nowhere in the server log");
}

$node->stop;
done_testing();
