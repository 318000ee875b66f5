# 005_dump_restore.pl: sessions, tokens, revocations and exchanged refresh
# tokens (reuse detection) survive pg_dump and pg_restore into a new
# database (pg_extension_config_dump), and the
# statistics say "unavailable" when the library is not preloaded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;
my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', 'CREATE EXTENSION extension_tokens');

my $pairs = $node->safe_psql('src', q{
SET extension_tokens.issue_rate_limit = 0;
SET extension_tokens.max_sessions_per_user = 0;
SELECT access_token || ' ' || refresh_token FROM extension_token_issue('a0000000-0000-4000-8000-000000000001', 'kept')
UNION ALL
SELECT access_token || ' ' || refresh_token FROM extension_token_issue('a0000000-0000-4000-8000-000000000001', 'revoked')
UNION ALL
SELECT access_token || ' ' || refresh_token FROM extension_token_issue('auth0|dump-user', 'rotated');
});
my ($kept, $revoked, $rotated) = split /\n/, $pairs;
my ($kept_at, $kept_rt) = split / /, $kept;
my ($rev_at, $rev_rt) = split / /, $revoked;
my ($rot_at0, $rot_rt0) = split / /, $rotated;
is($node->safe_psql('src', "SELECT extension_token_revoke('$rev_at')"), 't', 'one session revoked before the dump');
my ($rot_at1, $rot_rt1) = split /\|/, $node->safe_psql('src',
	"SELECT access_token, refresh_token FROM extension_token_refresh('$rot_rt0')");
like($rot_rt1, qr/^ext_rt_/, 'one session refreshed before the dump');

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('src'), '-f', $dump ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ],
	'pg_restore into a new database');

is($node->safe_psql('dst', 'SELECT count(*) FROM extension_token_sessions'), '3', 'the three sessions restored');
is($node->safe_psql('dst', 'SELECT count(*) FROM extension_tokens'), '1', 'the exchanged refresh token restored');
is($node->safe_psql('dst', "SELECT valid FROM extension_token_validate('$kept_at')"), 't',
	'the kept access token validates in the restored database');
is($node->safe_psql('dst', "SELECT error FROM extension_token_validate('$rev_at')"), 'revoked',
	'the revoked access token is still revoked after the restore');
my ($ret, $out, $err) = $node->psql('dst', "SELECT extension_token_refresh('$rev_rt')");
like($err, qr/session_revoked/, 'the revoked session cannot be refreshed after the restore');
is($node->safe_psql('dst', "SELECT count(*) FROM extension_token_refresh('$kept_rt')"), '1',
	'the kept refresh token can be exchanged after the restore');
($ret, $out, $err) = $node->psql('src', "SELECT extension_token_refresh('$kept_rt')");
is($ret, 0, 'the source database is independent: the token is still fresh there');

# The refresh token exchanged before the dump, presented in the restored
# database: reuse, known from the restored extension_tokens row.
is($node->safe_psql('dst', "SELECT coalesce(error, 'valid') FROM extension_token_validate('$rot_at1')"), 'valid',
	'the access token of the refreshed session validates after the restore');
($ret, $out, $err) = $node->psql('dst',
	"\\set VERBOSITY verbose\nSET extension_tokens.refresh_retry_window = 0;\n"
	  . "SELECT access_token FROM extension_token_refresh('$rot_rt0')");
like($err, qr/PT401.*\n.*refresh_token_already_used/,
	'the refresh token exchanged before the dump is reuse in the restored database (PT401 refresh_token_already_used)');
ok( $node->poll_query_until('dst',
		"SELECT status || ',' || revoked_reason FROM extension_token_list('auth0|dump-user')", 'revoked,refresh_token_reuse'),
	'the reuse revoked the restored session');
is($node->safe_psql('dst', "SELECT error FROM extension_token_validate('$rot_at1')"), 'revoked',
	'its access token is revoked in the restored database');
is($node->safe_psql('src', "SELECT coalesce(error, 'valid') FROM extension_token_validate('$rot_at1')"), 'valid',
	'and still valid in the source database');
is($node->safe_psql('dst', q{SELECT count(*) FROM pg_class c
  WHERE c.relname IN ('extension_tokens', 'extension_token_sessions', 'extension_token_users')
    AND c.relrowsecurity AND c.relacl IS NOT DISTINCT FROM (SELECT relacl FROM pg_class WHERE oid = c.oid)}),
	'3', 'the restored tables keep row level security');
is($node->safe_psql('dst', q{SELECT has_table_privilege('public', 'extension_tokens', 'SELECT')}), 'f',
	'the restored table is still closed to PUBLIC');
$node->stop;

# The library not preloaded: counters are unavailable (NULL), not zero.
my $lazy = PostgreSQL::Test::Cluster->new('lazy');
$lazy->init;
$lazy->append_conf('postgresql.conf', qq{extension_tokens.jwt_secret = '$secret'});
$lazy->start;
$lazy->safe_psql('postgres', 'CREATE EXTENSION extension_tokens');
is($lazy->safe_psql('postgres', q{SELECT counters_available::text || ' ' || coalesce(validations_succeeded::text, 'null')
  || ' ' || sessions_active FROM extension_token_stats()}), 'false null 0',
	'without shared_preload_libraries the counters are reported unavailable, the table figures are there');
($ret, $out, $err) = $lazy->psql('postgres', 'SELECT extension_token_stats_reset()');
like($err, qr/statistics are not available/, 'resetting them says why it cannot');
$lazy->stop;

done_testing();
