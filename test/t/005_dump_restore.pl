# 005_dump_restore.pl: sessions, tokens and revocations survive pg_dump and
# pg_restore into a new database (pg_extension_config_dump), and the
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
SELECT access_token || ' ' || refresh_token FROM extension_token_issue('a0000000-0000-4000-8000-000000000001', 'revoked');
});
my ($kept, $revoked) = split /\n/, $pairs;
my ($kept_at, $kept_rt) = split / /, $kept;
my ($rev_at, $rev_rt) = split / /, $revoked;
is($node->safe_psql('src', "SELECT extension_token_revoke('$rev_at')"), 't', 'one session revoked before the dump');

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('src'), '-f', $dump ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ],
	'pg_restore into a new database');

is($node->safe_psql('dst', 'SELECT count(*) FROM extension_token_sessions'), '2', 'both sessions restored');
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
