# 003_hostile.pl: oversized and hostile input never restarts the server, and
# failing calls never put a token into the server log.
#
# The cluster keeps PostgreSQL::Test::Cluster's restart_after_crash = off, so
# a crash of any backend would take the whole server down and every later
# query would fail; on top of that the test compares pg_postmaster_start_time()
# and the pid of a session opened at the start, and reads the server log for
# a crashed process.
#
# For the log part, log_statement is 'none' (Cluster.pm sets 'all', which by
# design records every literal: the README says to pass tokens as bind
# parameters); log_min_error_statement keeps its default, ERROR, so every
# failing statement would be logged but for the extension's emit_log_hook.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;

my $node = PostgreSQL::Test::Cluster->new('hostile');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'extension_tokens'
extension_tokens.jwt_secret = '$secret'
extension_tokens.issue_rate_limit = 0
extension_tokens.refresh_rate_limit = 0
extension_tokens.max_sessions_per_user = 0
log_statement = none
});
$node->start;

# Helpers to forge tokens: compact JWS over given header and payload bytes,
# signed with the server's secret (or another key).
$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION pgcrypto;
CREATE EXTENSION extension_tokens;
CREATE FUNCTION b64url(bytea) RETURNS text LANGUAGE sql IMMUTABLE
AS \$\$ SELECT rtrim(translate(encode(\$1, 'base64'), E'+/\\n', '-_'), '=') \$\$;
CREATE FUNCTION jws(header bytea, payload bytea, key text DEFAULT '$secret') RETURNS text
LANGUAGE sql IMMUTABLE
AS \$\$
  SELECT h || '.' || p || '.' || b64url(hmac(convert_to(h || '.' || p, 'UTF8'), convert_to(key, 'UTF8'), 'sha256'))
  FROM (SELECT b64url(header) AS h, b64url(payload) AS p) s
\$\$;
CREATE FUNCTION hdr(alg text DEFAULT 'HS256') RETURNS bytea LANGUAGE sql IMMUTABLE
AS \$\$ SELECT convert_to(format('{"alg":"%s","typ":"JWT"}', alg), 'UTF8') \$\$;
-- A claim set that would be accepted but for not being issued; `extra` is
-- spliced in as more members.
CREATE FUNCTION claims(extra text DEFAULT '') RETURNS bytea LANGUAGE sql VOLATILE
AS \$\$
  SELECT convert_to(format('{"iss":"extension_tokens","aud":"extension",'
    '"sub":"00000000-0000-4000-8000-0000000000aa","session_id":"00000000-0000-4000-8000-0000000000bb",'
    '"jti":"00000000-0000-4000-8000-0000000000cc","type":"access","iat":%s,"exp":%s%s}',
    extract(epoch FROM now())::bigint, extract(epoch FROM now())::bigint + 3600, extra), 'UTF8')
\$\$;
CREATE FUNCTION nest(depth int) RETURNS text LANGUAGE sql IMMUTABLE
AS \$\$ SELECT repeat('[', depth) || repeat(']', depth) \$\$;
CREATE FUNCTION nest_obj(depth int) RETURNS text LANGUAGE sql IMMUTABLE
AS \$\$ SELECT repeat('{"a":', depth) || '1' || repeat('}', depth) \$\$;
});

my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $watch = $node->background_psql('postgres');
my $watch_pid = $watch->query_safe('SELECT pg_backend_pid()');

# (psql exit code, stdout, stderr); exit code 2 means the connection was lost.
sub run_sql
{
	my ($sql, $db) = @_;
	return $node->psql($db // 'postgres', "\\set VERBOSITY verbose\n$sql");
}

sub answers
{
	my ($sql, $expected, $name, $db) = @_;
	my ($ret, $out, $err) = run_sql($sql, $db);
	is($out, $expected, $name) or diag "psql exit $ret: $err";
	return;
}

sub refuses
{
	my ($sql, $re, $name, $db) = @_;
	my ($ret, $out, $err) = run_sql($sql, $db);
	ok($ret == 3 && $err =~ $re, $name) or diag "psql exit $ret: $err";
	return;
}

sub validate_error { return "SELECT coalesce(error, 'valid') FROM extension_token_validate($_[0])"; }

my $mib16 = '16 * 1024 * 1024';
my $user  = '60000000-0000-4000-8000-000000000001';
my ($good_at, $good_rt) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_issue('$user', 'hostile')");
my @tokens = ($good_at, $good_rt);    # every token that must stay out of the log

# ---------------------------------------------------------------------
# Size.
# ---------------------------------------------------------------------
answers(validate_error("repeat('A', $mib16)"), 'malformed', 'validate: 16 MiB of letters is malformed');
answers(validate_error("repeat('eyJ.', 4 * 1024 * 1024)"), 'malformed',
	'validate: 16 MiB of "eyJ." (4 Mi dots) is malformed');
answers(validate_error("repeat('.', 100000)"), 'malformed', 'validate: 100k dots is malformed');
answers(validate_error("repeat('a.', 100000)"), 'malformed', 'validate: 100k dot-separated parts is malformed');
answers(validate_error("'$good_at' || repeat('A', $mib16)"), 'malformed',
	'validate: a good token followed by 16 MiB is malformed');
answers(validate_error("'$good_at' || repeat('.', 100000)"), 'malformed',
	'validate: a good token followed by 100k dots is malformed');
$node->safe_psql('postgres', qq{
CREATE TABLE big (t text);
ALTER TABLE big ALTER t SET STORAGE EXTERNAL;
INSERT INTO big VALUES (repeat('A', $mib16)), (repeat('.', $mib16));
});
answers("SELECT string_agg(coalesce(error, 'valid'), ',') FROM big, extension_token_validate(big.t)",
	'malformed,malformed', 'validate: 16 MiB values stored out of line (TOAST) are malformed');
answers("SELECT string_agg(extension_token_revoke(t)::text, ',') FROM big",
	'false,false', 'revoke: 16 MiB values stored out of line (TOAST) revoke nothing');
refuses("SELECT extension_token_refresh(t) FROM big LIMIT 1",
	qr/PT401.*\n.*refresh_token_not_found/, 'refresh: a 16 MiB TOAST value is PT401 refresh_token_not_found');

refuses("SELECT extension_token_refresh(repeat('ext_rt_', 2 * 1024 * 1024))",
	qr/PT401.*\n.*refresh_token_not_found/, 'refresh: a 14 MiB refresh-token-shaped string is PT401 refresh_token_not_found');
refuses("SELECT extension_token_refresh(repeat('.', 100000))",
	qr/PT401.*\n.*refresh_token_not_found/, 'refresh: 100k dots is PT401 refresh_token_not_found');
refuses("SELECT extension_token_refresh('$good_rt', repeat('A', $mib16))",
	qr/22023.*p_current_token.*\n.*malformed/, 'refresh: a 16 MiB p_current_token is 22023 malformed');
refuses("SELECT extension_token_refresh('$good_rt', repeat('.', 100000))",
	qr/22023.*p_current_token.*\n.*malformed/, 'refresh: a 100k-dot p_current_token is 22023 malformed');
answers("SELECT extension_token_revoke(repeat('A', $mib16))", 'f', 'revoke: 16 MiB revokes nothing');
answers("SELECT extension_token_revoke(repeat('.', 100000))", 'f', 'revoke: 100k dots revokes nothing');
answers("SELECT extension_token_revoke('$good_at' || repeat('A', $mib16))", 'f',
	'revoke: a good token followed by 16 MiB revokes nothing');
answers(validate_error("'$good_at'"), 'valid', 'size: the good token is still valid after all that');

# ---------------------------------------------------------------------
# alg: none, and other header tricks.
# ---------------------------------------------------------------------
answers(validate_error("b64url(hdr('none')) || '.' || b64url(claims()) || '.'"),
	'unsupported_algorithm', 'validate: an unsigned alg none token is unsupported_algorithm');
answers(validate_error("b64url(hdr('nOnE')) || '.' || b64url(claims()) || '.'"),
	'unsupported_algorithm', 'validate: alg nOnE is unsupported_algorithm');
answers(validate_error("b64url(hdr('none')) || '.' || b64url(claims())"),
	'malformed', 'validate: alg none without a signature part is malformed');
answers(validate_error("jws(hdr('none'), claims())"),
	'unsupported_algorithm', 'validate: alg none with a valid HMAC is still unsupported_algorithm');
answers(validate_error("jws(convert_to('{\"alg\":\"none\",\"alg\":\"HS256\"}', 'UTF8'), claims())"),
	'malformed', 'validate: duplicate alg (none, then HS256) is malformed');
answers(validate_error("jws(hdr(), claims(), 'another secret of at least thirty-two bytes')"),
	'invalid_signature', 'validate: HS256 under another key is invalid_signature');
refuses("SELECT extension_token_refresh('$good_rt', b64url(hdr('none')) || '.' || b64url(claims()) || '.')",
	qr/22023.*\n.*unsupported_algorithm/, 'refresh: an alg none p_current_token is 22023 unsupported_algorithm');
answers("SELECT extension_token_revoke(b64url(hdr('none')) || '.' || b64url(claims()) || '.')", 'f',
	'revoke: an alg none token revokes nothing');

# ---------------------------------------------------------------------
# Deeply nested JSON, in the header (parsed before the signature is
# checked) and in a correctly signed payload.  jansson stops at depth 2048;
# depths below and above it, within the 8 KiB token limit.
# ---------------------------------------------------------------------
for my $depth (1000, 2040, 2100, 2500, 100000)
{
	answers(
		validate_error(
			"b64url(convert_to('{\"alg\":\"HS256\",\"typ\":\"JWT\",\"x\":' || nest($depth) || '}', 'UTF8')) || '.' || b64url(claims()) || '.AAAA'"),
		$depth < 2048 ? 'invalid_signature' : 'malformed',
		"validate: a header with arrays nested $depth deep is "
		  . ($depth < 2048 ? 'parsed (then invalid_signature)' : 'malformed'));
	my ($ret, $out, $err) = run_sql(validate_error("jws(hdr(), claims(',\"deep\":' || nest($depth)))"));
	ok($ret == 0 && $out =~ /^(malformed|not_found)$/,
		"validate: a signed payload with arrays nested $depth deep is malformed or not_found")
	  or diag "psql exit $ret: $out $err";
	($ret, $out, $err) = run_sql(validate_error("jws(hdr(), claims(',\"deep\":' || nest_obj($depth)))"));
	ok($ret == 0 && $out =~ /^(malformed|not_found)$/,
		"validate: a signed payload with objects nested $depth deep is malformed or not_found")
	  or diag "psql exit $ret: $out $err";
	($ret, $out, $err) = run_sql(validate_error("jws(convert_to(nest($depth), 'UTF8'), claims())"));
	ok($ret == 0 && $out eq 'malformed', "validate: a header that is arrays nested $depth deep is malformed")
	  or diag "psql exit $ret: $out $err";
	refuses("SELECT extension_token_refresh('$good_rt', jws(hdr(), claims(',\"deep\":' || nest($depth))))",
		qr/22023/, "refresh: a p_current_token with a payload nested $depth deep is 22023");
}

# Extra claims at the issuer's side: jsonb nesting up to the 4 KiB cap
# (2043 levels of arrays is the deepest that fits; jansson, which signs and
# verifies, allows 2048), then beyond it.
for my $depth (1000, 2043)
{
	answers(
		"SELECT coalesce(v.error, 'valid') FROM extension_token_issue('$user', 'deep', NULL,
		   ('{\"deep\":' || nest($depth) || '}')::jsonb) i, extension_token_validate(i.access_token) v",
		'valid', "issue: p_claims nested $depth deep gives a token that validates");
}
refuses("SELECT extension_token_issue('$user', 'deep', NULL, ('{\"deep\":' || nest(2044) || '}')::jsonb)",
	qr/22023.*too large/, 'issue: p_claims nested 2044 deep is over the 4 KiB cap (22023)');
refuses("SELECT extension_token_issue('$user', 'deep', NULL, ('{\"deep\":' || nest(100000) || '}')::jsonb)",
	qr/54001|22023|stack depth|too large/, 'issue: p_claims nested 100000 deep is a clean error');

# request.jwt.claims (PostgREST's, read by issue, list and revoke for a
# NOLOGIN role): nested, oversized, not an object.
$node->safe_psql('postgres', qq{
CREATE ROLE hostile_api NOLOGIN;
GRANT EXECUTE ON FUNCTION extension_token_list(text), extension_token_issue(text, text, interval, jsonb, text[])
   TO hostile_api;
});
for my $claims ("nest(100000)", "nest(2040)", "'{\"sub\":' || nest(2040) || '}'",
	"'{\"sub\":\"' || repeat('a', $mib16) || '\"}'", "repeat('{', $mib16)", "'{\"sub\":\"\\u0000\"}'")
{
	my ($ret, $out, $err) = run_sql(
		"SET ROLE hostile_api; SELECT set_config('request.jwt.claims', $claims, false);
		 SELECT count(*) FROM extension_token_list()");
	ok($ret == 3 && $err =~ /42501/,
		'request.jwt.claims = ' . substr($claims, 0, 40) . '...: list is refused with 42501')
	  or diag "psql exit $ret: $err";
}

# User ids are text from 1.2 on: any non-empty string of at most 255 bytes
# without control characters; anything else is a clean 22023.
answers("SELECT coalesce(v.error, 'valid') || ' ' || (v.user_id = repeat('u', 255))
		   FROM extension_token_issue(repeat('u', 255), 'longest user id') i,
		        extension_token_validate(i.access_token) v",
	'valid true', 'user id: 255 bytes is a user id, and its token validates as that user');
for my $bad ("repeat('u', 256)", "repeat('u', $mib16)", "''", "E'user\\x01'", "E'user\\n'", "repeat('é', 128)")
{
	refuses("SELECT extension_token_issue($bad)", qr/22023.*not a valid user id/,
		"user id: issue for " . substr($bad, 0, 24) . " is refused (22023)");
	refuses("SELECT count(*) FROM extension_token_list($bad)", qr/22023.*not a valid user id/,
		"user id: list of " . substr($bad, 0, 24) . " is refused (22023)");
}

# ---------------------------------------------------------------------
# Invalid UTF-8.
# ---------------------------------------------------------------------
answers(validate_error("jws(hdr(), '\\x7b2278223a22ff227d'::bytea)"), 'malformed',
	'validate: a signed payload with an invalid UTF-8 byte is malformed');
answers(validate_error("jws(hdr(), '\\x7b22737562223a22c0af227d'::bytea)"), 'malformed',
	'validate: a signed payload with overlong UTF-8 is malformed');
answers(validate_error("jws('\\x7b22616c67223a22485332353622ff7d'::bytea, claims())"), 'malformed',
	'validate: a header with an invalid UTF-8 byte is malformed');
refuses("SELECT extension_token_validate(convert_from('\\xc328ff'::bytea, 'UTF8'))",
	qr/22021/, 'validate: invalid UTF-8 through convert_from never reaches the function (22021)');

# In a SQL_ASCII database text may hold any bytes.
$node->safe_psql('postgres',
	"CREATE DATABASE hostile_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('hostile_ascii', 'CREATE EXTENSION extension_tokens');
my ($ascii_at, $ascii_rt) = split /\|/, $node->safe_psql('hostile_ascii',
	"SELECT access_token, refresh_token FROM extension_token_issue('$user', convert_from('\\xff41'::bytea, 'SQL_ASCII'))");
push @tokens, $ascii_at, $ascii_rt;
answers(validate_error("'$ascii_at'"), 'valid',
	'SQL_ASCII database: a token issued with a non-UTF-8 name validates', 'hostile_ascii');
answers(validate_error("convert_from(decode('fffe2e2e' || repeat('c0', 100), 'hex'), 'SQL_ASCII')"), 'malformed',
	'SQL_ASCII database: validate of invalid UTF-8 bytes is malformed', 'hostile_ascii');
answers(validate_error("'$ascii_at' || convert_from('\\xff'::bytea, 'SQL_ASCII')"), 'malformed',
	'SQL_ASCII database: a good token with an invalid byte appended is malformed', 'hostile_ascii');
refuses("SELECT extension_token_refresh('ext_rt_' || convert_from(decode(repeat('ff', 49), 'hex'), 'SQL_ASCII'))",
	qr/PT401.*\n.*refresh_token_not_found/,
	'SQL_ASCII database: a 56-byte refresh token of invalid bytes is PT401 refresh_token_not_found', 'hostile_ascii');
answers("SELECT extension_token_revoke(convert_from(decode(repeat('ff', 1000), 'hex'), 'SQL_ASCII'))", 'f',
	'SQL_ASCII database: revoke of invalid bytes revokes nothing', 'hostile_ascii');
{
	my ($ret, $out, $err) = run_sql(
		"SELECT coalesce(v.error, 'valid') FROM extension_token_issue('$user', 'x', NULL,
		   convert_from('\\x7b2278223a2241ff227d'::bytea, 'SQL_ASCII')::jsonb) i,
		   extension_token_validate(i.access_token) v", 'hostile_ascii');
	ok(($ret == 0 && $out eq 'valid') || ($ret == 3 && $err =~ /22023|XX000|22P02/),
		'SQL_ASCII database: p_claims holding an invalid UTF-8 byte gives a token that validates, or a clean error')
	  or diag "psql exit $ret: $out $err";
}

# ---------------------------------------------------------------------
# Tokens in the server log.  Failing calls that carry tokens as literals:
# the STATEMENT line must be dropped, and no message may carry a token.
# ---------------------------------------------------------------------
my ($l_at, $l_rt) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_issue('$user', 'log')");
my ($o_at, $o_rt) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_issue('$user', 'log, other session')");
push @tokens, $l_at, $l_rt, $o_at, $o_rt;
my $log_offset = -s $node->logfile;

refuses("SELECT extension_token_refresh('$l_rt', '$o_at')", qr/22023.*another session/,
	'log: refresh with the access token of another session fails (22023)');
my ($l_at2, $l_rt2) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_refresh('$l_rt', '$l_at')");
push @tokens, $l_at2, $l_rt2;
# 1.2: within refresh_retry_window (30 s by default) the exchanged refresh
# token returns the same pair again, instead of 1.1's PT401 in the grace
# interval.
answers("SELECT access_token || ' ' || refresh_token FROM extension_token_refresh('$l_rt', '$l_at')",
	"$l_at2 $l_rt2", 'log: the exchanged refresh token presented again within the retry window returns the same pair');
refuses("SELECT extension_token_refresh('$l_rt2'), 1/0", qr/22012/,
	'log: a statement that refreshes and then divides by zero fails (22012)');
{
	my $ur = '60000000-0000-4000-8000-000000000002';
	my ($r_at, $r_rt) = split /\|/, $node->safe_psql('postgres',
		"SELECT access_token, refresh_token FROM extension_token_issue('$ur', 'rate')");
	my ($ret, $out, $err) = run_sql(
		"SET extension_tokens.refresh_rate_limit = 1;
		 SELECT access_token AS r_at2, refresh_token AS r_rt2 FROM extension_token_refresh('$r_rt', '$r_at') \\gset
		 \\echo :r_at2 :r_rt2
		 SELECT extension_token_refresh(:'r_rt2', :'r_at2');");
	my ($r_at2, $r_rt2) = split / /, $out;
	push @tokens, $r_at, $r_rt, $r_at2, $r_rt2;
	ok($ret == 3 && $err =~ /PT429/ && $r_rt2 =~ /^ext_rt_/,
		'log: a rate-limited refresh with token literals fails (PT429)')
	  or diag "psql exit $ret: $out $err";
}
refuses("SELECT extension_token_refesh('$l_rt2', '$l_at2')", qr/42883/,
	'log: a misspelt refresh function with token literals fails (42883)');
refuses("SELECT (extension_token_validate('$l_at2')).valid::int / 0", qr/22012/,
	'log: a statement that validates a literal token and divides by zero fails (22012)');
refuses("SELECT extension_token_revoke('$o_at')::int / 0", qr/22012/,
	'log: a statement that revokes a literal token and then fails (22012)');
answers(validate_error("'$o_at'"), 'valid', 'log: the revocation in the failed statement was rolled back');
$node->safe_psql('postgres', q{
CREATE FUNCTION api_refresh(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN (SELECT access_token FROM extension_token_refresh(t));
END $$;
});
# Without a retry window every re-presentation is reuse.
refuses("SET extension_tokens.refresh_retry_window = 0; SELECT api_refresh('$l_rt')",
	qr/PT401.*\n.*refresh_token_already_used/,
	'log: a PL/pgSQL wrapper called with a reused refresh token literal fails (PT401 refresh_token_already_used)');
answers(validate_error("'$l_at2'"), 'revoked', 'log: the reuse revoked the session');
refuses("SET extension_tokens.refresh_retry_window = 0; SELECT extension_token_refresh('$l_rt')",
	qr/PT401.*\n.*(refresh_token_already_used|session_revoked)/,
	'log: presenting the reused refresh token once more fails (PT401)');

my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/ERROR:  refresh token rejected/, 'log: the failing refreshes were logged (the log is being read)');
unlike($log, qr/STATEMENT:.*(ext_rt_|eyJ)/, 'log: no STATEMENT line with a token was logged');

# A DO block, or EXECUTE of a statement built with format('%L'), that
# carries a token literal: PL/pgSQL reports the failing inner statement in
# the CONTEXT line, which the hook does not touch.  In the EXECUTE case the
# client's own statement holds no token at all (the token comes from a
# table, as it would from a bind parameter).
my ($d_at, $d_rt) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_issue('$user', 'do block')");
$node->safe_psql('postgres', "SELECT extension_token_refresh('$d_rt')");
refuses("SET extension_tokens.refresh_retry_window = 0; DO \$\$ BEGIN PERFORM extension_token_refresh('$d_rt', '$d_at'); END \$\$",
	qr/PT401/, 'log: a DO block refreshing a reused refresh token literal fails (PT401)');
my ($x_at, $x_rt) = split /\|/, $node->safe_psql('postgres',
	"SELECT access_token, refresh_token FROM extension_token_issue('$user', 'dynamic sql')");
$node->safe_psql('postgres', qq{
SELECT extension_token_refresh('$x_rt');
CREATE TABLE held AS SELECT '$x_rt'::text AS t;
CREATE FUNCTION dyn_refresh(t text) RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE r text;
BEGIN
  EXECUTE format('SELECT access_token FROM extension_token_refresh(%L)', t) INTO r;
  RETURN r;
END \$\$;
});
refuses("SET extension_tokens.refresh_retry_window = 0; SELECT dyn_refresh(t) FROM held", qr/PT401/,
	'log: a PL/pgSQL function EXECUTEing a refresh built with format(%L) from a table value fails (PT401)');

# Every token, whole or by its secret part, stays out of the whole log.
$log = slurp_file($node->logfile);
my $i = 0;
for my $t (@tokens)
{
	$i++;
	my $kind = $t =~ /^ext_rt_/ ? 'refresh' : 'access';
	my $secret_part = $kind eq 'refresh' ? substr($t, 7, 43) : (split /\./, $t)[2];
	ok(index($log, $t) < 0 && index($log, $secret_part) < 0,
		"log: $kind token #$i is not in the server log, whole or in part");
}
ok(index($log, $d_rt) < 0 && index($log, $d_at) < 0,
	'log: the tokens passed as literals inside a failing DO block are not in the server log');
ok(index($log, $x_rt) < 0,
	'log: the token in a failing EXECUTE built with format(%L) is not in the server log');

# ---------------------------------------------------------------------
# The secret stays out of the log too: a reload that changes it (the
# postmaster logs 'parameter "..." changed to "..."' for a setting whose
# text changed) and sets the previous one.
# ---------------------------------------------------------------------
my $new_secret = join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;
$log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"ALTER SYSTEM SET extension_tokens.jwt_secret = '$new_secret'");
$node->safe_psql('postgres',
	"ALTER SYSTEM SET extension_tokens.jwt_secret_previous = '$secret'");
$node->reload;
# a new session starts from the postmaster's settings: once it sees the
# previous secret set, the postmaster has processed the reload
ok( $node->poll_query_until('postgres',
		"SELECT current_setting('extension_tokens.jwt_secret_previous') = '(hidden)'"),
	'secret: the reload setting the new secret and the previous one was processed');
is($node->safe_psql('postgres', 'SHOW extension_tokens.jwt_secret'),
	'(hidden)', 'secret: SHOW says (hidden)');
is( $node->safe_psql('postgres',
		"SELECT setting FROM pg_settings WHERE name LIKE 'extension_tokens.jwt_secret%'"),
	'', 'secret: pg_settings does not list either secret');
is( $node->safe_psql('postgres',
		"SELECT (extension_token_validate((extension_token_issue(gen_random_uuid()::text)).access_token)).valid"),
	't', 'secret: a token signed after the reload validates');
is( $node->safe_psql('postgres',
		"SELECT (extension_token_validate(jws(hdr(), claims(), '$new_secret'))).error IS DISTINCT FROM 'invalid_signature'"),
	't', 'secret: a token signed with the new secret passes the signature check');
is( $node->safe_psql('postgres',
		"SELECT (extension_token_validate(jws(hdr(), claims(), 'a third secret of at least thirty-two bytes'))).error"),
	'invalid_signature', 'secret: one signed with a third secret does not');
$log = slurp_file($node->logfile, $log_offset);
ok(index($log, $new_secret) < 0,
	'secret: the new secret is not in the server log after the reload');
$log = slurp_file($node->logfile);
ok(index($log, $secret) < 0,
	'secret: the first secret (now the previous one) is nowhere in the server log');

# ---------------------------------------------------------------------
# No restart, no crash.
# ---------------------------------------------------------------------
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$started, 'pg_postmaster_start_time() is unchanged: the server never restarted');
my $still = eval { $watch->query_safe('SELECT pg_backend_pid()') } // 'lost';
is($still, $watch_pid, 'the session opened at the start is still connected (no crash restart)');
$watch->quit;
$log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|was terminated by exception|PANIC:/,
	'the server log has no process terminated by a signal and no PANIC');
answers(validate_error("'$good_at'"), 'valid', 'the good token issued at the start still validates');

$node->stop;
done_testing();
