#!/usr/bin/env python3
"""bench/report.py METRICS [--summary]: the markdown results of bench/run.sh (--summary: the
short table of the README's Performance section).

METRICS has one "name value" line per measurement, all written by run.sh;
every figure below is computed from them.  One table: a row per target of
the performance targets (bench/README.md), then informational rows.
"""
import sys

m = {}
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line:
        k, _, v = line.partition(" ")
        m[k] = v


def f(k):
    return float(m[k])


def n(x):
    """A size as 10k / 1M."""
    x = int(x)
    if x >= 1000000 and x % 1000000 == 0:
        return f"{x // 1000000}M"
    if x >= 1000 and x % 1000 == 0:
        return f"{x // 1000}k"
    return str(x)


def tps(x):
    return f"{x:,.0f}"


def yes(ok):
    return "yes" if ok else "**no**"


def each(*parts):
    """A target of several conditions: yes only if all hold, else which do."""
    if all(ok for _, ok in parts):
        return "yes"
    return "**no** (" + "; ".join(f"{label}: {'yes' if ok else 'no'}" for label, ok in parts) + ")"


rows = []  # (what, ext, sql, floor, ratio, target, met)
skipped = []  # targets this run did not measure


def target(what, goal, build):
    """A target's row from build(), or a note that this run did not measure it."""
    try:
        rows.append(build())
    except KeyError:
        skipped.append((what, goal))


main, lo, hi = m["main_size"], m["min_size"], m["max_size"]


def median(xs):
    xs = sorted(xs)
    h = len(xs) // 2
    return xs[h] if len(xs) % 2 else (xs[h - 1] + xs[h]) / 2


def paired(num, den):
    """num/den per round (the two were timed in the same round, one after the other), from
    the *_rounds_* metrics: (median, min, max, the ratios), or None when the run has no rounds."""
    if num not in m or den not in m:
        return None
    a, b = [float(x) for x in m[num].split()], [float(x) for x in m[den].split()]
    if len(a) != len(b) or not a:
        return None
    r = [x / y for x, y in zip(a, b)]
    return median(r), min(r), max(r), r


# 1. validate in one statement, cold
def validate_cold():
    ext, sql, lk = f(f"stmt_ext_us_{main}"), f(f"stmt_sql_us_{main}"), f(f"stmt_lookup_us_{main}")
    sha, hmac = f("prim_sha256_us"), f("prim_hmac_us")
    jp = f("prim_jansson_parse_us")
    p0, pm = f(f"stmt_parts0_us_{main}"), f(f"stmt_parts_us_{main}")
    # judged by the ratios paired by round when the run has them (each round times the
    # statements one after the other, so a slow spell of the machine weighs on both),
    # else by the ratio of the medians
    rp = paired(f"stmt_ext_rounds_{main}", f"stmt_parts0_rounds_{main}")
    rs = paired(f"stmt_sql_rounds_{main}", f"stmt_ext_rounds_{main}")
    to_parts, to_sql = (rp[0] if rp else ext / p0), (rs[0] if rs else sql / ext)
    rounds = ""
    if rp and rs:
        k, under = len(rp[3]), sum(1 for x in rp[3] if x <= 1.5)
        rounds = (f"; paired by round ({k} round{'s' if k != 1 else ''}, medians): SQL/ext {rs[0]:.1f}× "
                  f"({rs[1]:.1f}–{rs[2]:.1f}), ext/(lookup + SHA-256 + HMAC) {rp[0]:.2f}× "
                  f"({rp[1]:.2f}–{rp[2]:.2f}; {under} of {k} ≤ 1.5×)")
    return (f"validate, cold (distinct tokens), one SQL statement, {n(main)} sessions, µs per token",
            f"{ext:.2f}", f"{sql:.2f}",
            f"lookup + SHA-256 + HMAC measured in the same statement shape (the session row by its id, "
            f"bench/parts.c without the parse): {p0:.2f}; with the jansson parse of the payload: {pm:.2f}; "
            f"in C: lookup {lk:.2f} + SHA-256 {sha:.2f} + HMAC {hmac:.2f} + parse {jp:.2f}",
            f"of the medians: SQL/ext {sql / ext:.1f}×; ext/(lookup + SHA-256 + HMAC) {ext / p0:.2f}×; "
            f"ext/(those + parse) {ext / pm:.2f}×{rounds}",
            "≥ 6× faster than SQL; ≤ 1.5× lookup + SHA-256 + HMAC" + (" (judged paired by round)" if rp else ""),
            each(("≥ 6× SQL", to_sql >= 6), ("≤ 1.5× parts", to_parts <= 1.5)))


target("validate, cold, one SQL statement", "≥ 6× SQL; ≤ 1.5× parts", validate_cold)


# 2. validate in one statement, a token seen before
def validate_hot():
    e, s_ = f("stmt_ext_hot_us"), f("stmt_sql_hot_us")
    return ("validate, a token seen before (one token over and over), one SQL statement, µs",
            f"{e:.2f}", f"{s_:.2f}", "", f"SQL/ext {s_ / e:.1f}×", "≥ 12× faster than SQL", yes(s_ / e >= 12))


target("validate, a token seen before", "≥ 12× SQL", validate_hot)


# 3. validate pgbench -c2
def validate_c2():
    e2, s2, l2, p2 = f("pgb_validate_ext_c2"), f("pgb_validate_sql_c2"), f("pgb_lookup_c2"), f("pgb_lookup_parts_c2")
    cached = f" ({m['pgb_validate_cached_pct_c2']}% answered by the verified-token cache" \
        if "pgb_validate_cached_pct_c2" in m else ""
    if cached:
        cached += (f", {m['pgb_validate_kept_pct_c2']}% also by a kept session verdict)"
                   if "pgb_validate_kept_pct_c2" in m else ")")
    return (f"validate, pgbench -M prepared -c2 -j2 (TPS), a random one of {int(m[f'sample_{main}']):,} "
            f"users' tokens each{cached}", tps(e2), tps(s2),
            f"{tps(l2)} (bare index-lookup statement: the session row by its id); {tps(p2)} (that statement "
            f"also calling one C function that does only SHA-256, HMAC and the jansson parse: bench/parts.c)",
            f"ext/lookup {100 * e2 / l2:.0f}%; ext/SQL {e2 / s2:.1f}×; (lookup + parts)/lookup {100 * p2 / l2:.0f}%",
            "≥ 85% of the lookup", yes(e2 / l2 >= 0.85))


target("validate, pgbench -c2", "≥ 85% of lookup", validate_c2)


# 4. validate writes
def validate_writes():
    cw, cc = f("wal_caller_wrote"), f("wal_caller_checked")
    wa, ta, sw, xa = f("wal_a_bytes"), f("wal_a_txns"), f("wal_a_session_writes"), f("wal_a_xids")
    wb, tb, swb, xb = f("wal_b_bytes"), f("wal_b_txns"), f("wal_b_session_writes"), f("wal_b_xids")
    return (f"validate writes, default last_used_interval: {int(cc)} sessions last used a day ago, each "
            f"validated once; then pgbench -c2, {int(ta):,} validations over them (and the 3 s after)",
            f"{int(cw)} of {int(cc)} first validations wrote in the caller's transaction; in the pgbench run "
            f"and after: {wa / ta:.2f} B WAL/validation (whoever wrote it: a batch writer's, autovacuum's), "
            f"{int(sw)} session rows written, {int(xa)} transactions that wrote",
            "0 (reads only; see + UPDATE below)",
            f"the same run again at once: {wb / tb:.2f} B/validation, {int(swb)} rows written, {int(xb)} "
            f"transactions that wrote",
            f"{100 * (1 - cw / cc):.0f}% of first validations wrote nothing in their transaction",
            "0 B WAL in the caller's transaction; the batch writer's WAL per validation reported",
            yes(cw == 0))


target("validate writes", "0 B WAL in the caller's transaction", validate_writes)


# 5. issue in one statement
def issue_stmt():
    ie, isq = f("stmt_issue_ext_us"), f("stmt_issue_sql_us")
    ifl, ifs, jws = f("stmt_issue_floor_us"), f("stmt_issue_floor_set_us"), f("prim_libjwt_sign_us")
    return ("issue, one SQL statement (no commit), µs per pair", f"{ie:.1f}", f"{isq:.1f}",
            f"writes alone (the session row and its audit event inserted): {ifl:.1f} by a prepared "
            f"statement per pair, {ifs:.1f} set-based (all pairs in one INSERT statement); libjwt's own "
            f"jwt_encode_str {jws:.1f} (the extension signs HS256 around one HMAC instead)",
            f"SQL/ext {isq / ie:.2f}×; ext/per-pair writes {ie / ifl:.2f}×; "
            f"ext − per-pair writes {ie - ifl:.1f}",
            "≥ 2× faster than SQL (sign + two hashed inserts)", yes(isq / ie >= 2))


target("issue, one SQL statement", "≥ 2× SQL", issue_stmt)


# 6. refresh in one statement
def refresh_stmt():
    rx, rs, rfl, rlk = f("stmt_refresh_ext_us"), f("stmt_refresh_sql_us"), f("stmt_refresh_floor_us"), \
        f("stmt_refresh_lookup_us")
    jws = f("prim_libjwt_sign_us")
    return ("refresh, one SQL statement (no commit), µs per refresh", f"{rx:.1f}", f"{rs:.1f}",
            f"writes alone (session row UPDATE, exchanged token and audit event INSERTs) {rfl:.1f} by a prepared "
            f"statement per refresh; lookup of the session's row by the id the refresh token carries {rlk:.1f}; "
            f"libjwt's own jwt_encode_str {jws:.1f} (not used for HS256)",
            f"SQL/ext {rs / rx:.2f}×; ext/floor {rx / rfl:.2f}×; ext − floor {rx - rfl:.1f} "
            f"(of which the lookup {rlk:.1f})",
            "≥ 2× faster than SQL (sign + update + insert)", yes(rs / rx >= 2))


target("refresh, one SQL statement", "≥ 2× SQL", refresh_stmt)


# 7, 8. issue / refresh pgbench -c2
def write_path(what, path):
    """Issue or refresh at -c2: run one after the other, and interleaved."""
    e, fl, sq = f(f"pgb_{path}_ext_c2"), f(f"pgb_{path}_floor_c2"), f(f"pgb_{path}_sql_c2")
    mx = f(f"mix_{path}_c2")
    return (what, tps(e), tps(sq),
            f"{tps(fl)} (plain transaction, the same rows); interleaved with it: latency "
            f"{f(f'mix_{path}_ext_ms_c2'):.3f} ms vs {f(f'mix_{path}_floor_ms_c2'):.3f} ms",
            f"interleaved: ext/floor {100 * mx:.0f}%; one after the other: ext/floor {100 * e / fl:.0f}%; "
            f"ext/SQL {e / sq:.2f}×",
            "≥ 90% of the floor (judged interleaved: one after the other, each run meets another disk)",
            yes(mx >= 0.9))


target("issue, pgbench -c2", "≥ 90% of floor",
       lambda: write_path("issue, pgbench -M prepared -c2 -j2 (TPS)", "issue"))
target("refresh, pgbench -c2", "≥ 90% of floor",
       lambda: write_path("refresh, pgbench -M prepared -c2 -j2 (TPS), a different refresh token each", "refresh"))


# 9. growth
def growth():
    ge = f(f"stmt_ext_us_{hi}") / f(f"stmt_ext_us_{lo}")
    gs = f(f"stmt_sql_us_{hi}") / f(f"stmt_sql_us_{lo}")
    gl = f(f"stmt_lookup_us_{hi}") / f(f"stmt_lookup_us_{lo}")
    gp = f(f"stmt_parts0_us_{hi}") / f(f"stmt_parts0_us_{lo}")
    if hi == lo:
        raise KeyError("one size")
    note = "" if int(hi) >= 10000000 else f" (measured up to {n(hi)}; BENCH_SIZES adds 10M)"
    return (f"growth: validate in one statement at {n(hi)} vs {n(lo)} sessions, µs per token",
            f"{f(f'stmt_ext_us_{hi}'):.2f} vs {f(f'stmt_ext_us_{lo}'):.2f}",
            f"{f(f'stmt_sql_us_{hi}'):.2f} vs {f(f'stmt_sql_us_{lo}'):.2f}",
            f"lookup {f(f'stmt_lookup_us_{hi}'):.2f} vs {f(f'stmt_lookup_us_{lo}'):.2f}; "
            f"lookup + SHA-256 + HMAC {f(f'stmt_parts0_us_{hi}'):.2f} vs {f(f'stmt_parts0_us_{lo}'):.2f}",
            f"ext {ge:.2f}×; SQL {gs:.2f}×; lookup {gl:.2f}×; lookup + parts {gp:.2f}×",
            "≤ 1.3× at 10M vs 10k" + note,
            yes(ge <= 1.3) if int(hi) >= 10000000 or ge > 1.3
            else f"yes at {n(hi)}; 10M not measured")


target("growth", "≤ 1.3× at 10M vs 10k", growth)


# 10. memory
def memory():
    ml, mh = m["mem_lo_n"], m["mem_hi_n"]
    el, eh = f(f"mem_ext_kb_{ml}"), f(f"mem_ext_kb_{mh}")
    sl, sh = f(f"mem_sql_kb_{ml}"), f(f"mem_sql_kb_{mh}")
    return (f"memory: peak backend RssAnon, one statement validating {n(ml)} / {n(mh)} tokens",
            f"{el / 1024:.1f} / {eh / 1024:.1f} MB", f"{sl / 1024:.1f} / {sh / 1024:.1f} MB", "—",
            f"ext {eh / el:.2f}×; SQL {sh / sl:.2f}×", "flat (≤ 1.1×)", yes(eh / el <= 1.1))


target("memory", "flat", memory)


# 11. cleanup under load (-c1 as in the target; -c2 with both cores busy)
def cleanup():
    cl_cells = []
    for c in (1, 2):
        cl_cells.append((c, f(f"cleanup_c{c}_unloaded_tps"), f(f"cleanup_c{c}_loaded_tps")))
    return (f"cleanup under load: one validate pgbench run each at -c1 / -c2, unloaded and then while "
            f"extension_tokens_cleanup() deletes {int(m['cleanup_c1_dead_sessions']):,} expired sessions "
            f"and their exchanged tokens (adjacent windows of the run)",
            "; ".join(f"-c{c}: {tps(cl)} TPS during vs {tps(cu)} unloaded" for c, cu, cl in cl_cells), "—",
            "; ".join(f"-c{c}: {int(m[f'cleanup_c{c}_rows_deleted']):,} rows in {m[f'cleanup_c{c}_seconds']} s "
                      f"(loaded window {m[f'cleanup_c{c}_window_s']} s)" for c in (1, 2)),
            "; ".join(f"-c{c}: {100 * cl / cu:.0f}%" for c, cu, cl in cl_cells),
            "≥ 70% (judged at -c2: at -c1 this machine's idle second core makes the unloaded figure "
            "wake-up bound, and load raises it)",
            yes(cl_cells[1][2] / cl_cells[1][1] >= 0.7))


target("cleanup under load", "≥ 70% of unloaded", cleanup)


# 12. PostgREST
def postgrest_method(prefix):
    """GET (prefix "http_") or POST ("http_post_"): the cells and the two ratios."""
    he, hs, hn = f(f"{prefix}ext_rps"), f(f"{prefix}sql_rps"), f(f"{prefix}noop_rps")
    ha, hsh = f(f"{prefix}noop_arg_rps"), f(f"{prefix}noop_shape_rps")
    return (he, hs,
            f"{tps(hn)} (plain no-op rpc returning true); {tps(ha)} (no-op taking validate's argument, "
            f"returning true); {tps(hsh)} (no-op with validate's signature: its argument and result type)",
            f"ext/same-shape no-op {100 * he / hsh:.0f}%; ext/plain no-op {100 * he / hn:.0f}%; "
            f"SQL/plain no-op {100 * hs / hn:.0f}%; argument-only no-op/plain {100 * ha / hn:.0f}%; "
            f"same-shape no-op/plain {100 * hsh / hn:.0f}%",
            he / hsh, he / hn)


def postgrest():
    get = postgrest_method("http_")
    post = postgrest_method("http_post_") if "http_post_ext_rps" in m else None
    cells = [f"GET: {tps(get[0])}", f"GET: {tps(get[1])}", f"GET: {get[2]}", f"GET: {get[3]}"]
    checks = [("≥ 95% same-shape, GET", get[4] >= 0.95), ("≥ 90% plain, GET", get[5] >= 0.9)]
    if post:
        cells = [f"{c}; POST: {v}" for c, v in zip(cells, (tps(post[0]), tps(post[1]), post[2], post[3]))]
        checks += [("≥ 95% same-shape, POST", post[4] >= 0.95), ("≥ 90% plain, POST", post[5] >= 0.9)]
    return (f"PostgREST 12.0.2, GET and POST /rpc/… with wrk -t1 -c8 (req/s"
            f"{'' if post else '; POST not measured'})",
            *cells,
            "≥ 95% of the no-op with validate's signature; ≥ 90% of the plain no-op",
            each(*checks))


target("PostgREST", "≥ 95% / ≥ 90% of no-ops", postgrest)

targets = len(rows)


# informational
def info(build):
    try:
        rows.append(build())
    except KeyError:
        pass


for s in sorted({k.rsplit("_", 1)[1] for k in m if k.startswith("stmt_ext_us_")}, key=int):
    info(lambda s=s: (
        f"validate, one SQL statement, {n(s)} sessions (sample {int(m[f'sample_{s}']):,} tokens; "
        f"the baseline's table {int(m[f'rows_sql_tokens_{s}']):,} rows), µs",
        f"{f(f'stmt_ext_us_{s}'):.2f}", f"{f(f'stmt_sql_us_{s}'):.2f}",
        f"lookup {f(f'stmt_lookup_us_{s}'):.2f}; lookup + SHA-256 + HMAC {f(f'stmt_parts0_us_{s}'):.2f}; "
        f"with the parse {f(f'stmt_parts_us_{s}'):.2f}",
        f"SQL/ext {f(f'stmt_sql_us_{s}') / f(f'stmt_ext_us_{s}'):.1f}×; "
        f"ext/(lookup + SHA-256 + HMAC) {f(f'stmt_ext_us_{s}') / f(f'stmt_parts0_us_{s}'):.2f}×", "—", "—"))
def validate_pool():
    e, p0 = f(f"stmt_ext_pool_us_{main}"), f(f"stmt_parts0_us_{main}")
    rp = paired(f"stmt_ext_pool_rounds_{main}", f"stmt_parts0_rounds_{main}")
    new = f(f"stmt_ext_us_{main}")
    return (f"validate, first sight in a pooled backend (one that has verified as many other tokens as "
            f"its verified-token cache holds, so that each new token takes an old one's place), one SQL "
            f"statement, {n(main)} sessions, µs per token",
            f"{e:.2f}", f"{f(f'stmt_sql_us_{main}'):.2f}",
            f"first sight in a new backend: {new:.2f}; lookup + SHA-256 + HMAC {p0:.2f}",
            f"of the medians: pooled/(lookup + SHA-256 + HMAC) {e / p0:.2f}×; pooled/new backend {e / new:.2f}×"
            + (f"; paired by round: pooled/(lookup + SHA-256 + HMAC) {rp[0]:.2f}× ({rp[1]:.2f}–{rp[2]:.2f})"
               if rp else ""),
            "—", "—")


info(validate_pool)
info(lambda: (f"validate an API key (ext_pat_: the session row by the key's id, its SHA-256 compared), "
              f"one SQL statement, {n(main)} sessions, µs per key",
              f"{f(f'stmt_key_us_{main}'):.2f}", f"{f(f'stmt_sql_us_{main}'):.2f}",
              f"an access token of ours, same run: {f(f'stmt_ext_us_{main}'):.2f}; lookup "
              f"{f(f'stmt_lookup_us_{main}'):.2f}",
              f"SQL/key {f(f'stmt_sql_us_{main}') / f(f'stmt_key_us_{main}'):.1f}×; "
              f"key/access token {f(f'stmt_key_us_{main}') / f(f'stmt_ext_us_{main}'):.2f}×", "—", "—"))
for u in sorted({int(k.rsplit("_", 1)[1]) for k in m if k.startswith("stmt_ext_mix_us_")}):
    info(lambda u=u: (
        f"validate, a pool's mix: {u:,} users' tokens in random order, 20,000 validations by one "
        f"backend in its steady state ({n(main)} sessions), µs; the verified-token cache's hit rate "
        f"(validations_cached / validations)",
        f"{f(f'stmt_ext_mix_us_{u}'):.2f}", "",
        f"first sight {f(f'stmt_ext_us_{main}'):.2f}; one token over and over {f('stmt_ext_hot_us'):.2f}",
        f"hit rate {100 * f(f'mix_cached_{u}') / 20000:.1f}% (the cache: {int(f('token_cache_size')):,} tokens per backend)"
        + (f"; {100 * f(f'mix_kept_{u}') / 20000:.1f}% also with a kept session verdict (the row not read)"
           if f"mix_kept_{u}" in m else ""),
        "—", "—"))
info(lambda: ("verify only (signature, header, claims), one statement, µs", "—",
              f"{f('stmt_sql_verify_us'):.2f}",
              f"HMAC {f('prim_hmac_us'):.2f} (re-keyed {f('prim_hmac_rekey_us'):.2f})", "", "—", "—"))
info(lambda: ("sign one access token, one statement, µs", "—", f"{f('stmt_sql_sign_us'):.2f}",
              f"HMAC {f('prim_hmac_us'):.2f}", "", "—", "—"))
info(lambda: (f"primitives in C (OpenSSL, jansson, libjwt), {m['token_bytes']}-byte token, "
              f"{m['signing_input_bytes']}-byte signing input, µs",
              "", "", f"SHA-256 {f('prim_sha256_us'):.3f}; HMAC key set once {f('prim_hmac_us'):.3f}, "
              f"re-keyed {f('prim_hmac_rekey_us'):.3f}; jansson parse of its payload "
              f"{f('prim_jansson_parse_us'):.3f}; libjwt build and sign of a token with that payload "
              f"{f('prim_libjwt_sign_us'):.3f}", "", "—", "—"))
info(lambda: ("validate, pgbench -c1 (TPS)", tps(f("pgb_validate_ext_c1")), tps(f("pgb_validate_sql_c1")),
              f"{tps(f('pgb_lookup_c1'))} (index-lookup statement); {tps(f('pgb_lookup_parts_c1'))} (lookup + parts)",
              f"ext/lookup {100 * f('pgb_validate_ext_c1') / f('pgb_lookup_c1'):.0f}%; "
              f"ext/SQL {f('pgb_validate_ext_c1') / f('pgb_validate_sql_c1'):.1f}×", "—", "—"))
info(lambda: ("WAL written while the validate pgbench runs above ran (-c1 / -c2; the extension's, "
              "the baseline's, the lookup's, SELECT 1's and the lookup + parts', in turn), bytes; "
              "shows they were the read path (autovacuum may add some)",
              f"{int(m['validate_ext_wal_bytes_c1']):,} / {int(m['validate_ext_wal_bytes_c2']):,}", "", "", "",
              "—", "—"))
info(lambda: ("SELECT 1, pgbench -c1 / -c2 (TPS)", "", "",
              f"{tps(f('pgb_select1_c1'))} / {tps(f('pgb_select1_c2'))}", "", "—", "—"))
for c in (1, 2):
    info(lambda c=c: (
        f"validate with last_used_interval = 0 (ext) / validate + UPDATE last_used_at on every call (SQL), pgbench -c{c} (TPS)",
        tps(f(f"pgb_validate_write_ext_c{c}")), tps(f(f"pgb_validate_write_sql_c{c}")), "",
        f"ext/SQL {f(f'pgb_validate_write_ext_c{c}') / f(f'pgb_validate_write_sql_c{c}'):.1f}×", "—", "—"))
for path in ("issue", "refresh"):
    info(lambda path=path: (
        f"{path}, pgbench -c1 (TPS)", tps(f(f"pgb_{path}_ext_c1")), tps(f(f"pgb_{path}_sql_c1")),
        tps(f(f"pgb_{path}_floor_c1")),
        f"ext/floor {100 * f(f'pgb_{path}_ext_c1') / f(f'pgb_{path}_floor_c1'):.0f}%; "
        f"ext/SQL {f(f'pgb_{path}_ext_c1') / f(f'pgb_{path}_sql_c1'):.2f}×; "
        f"interleaved: ext/floor {100 * f(f'mix_{path}_c1'):.0f}%", "—", "—"))
info(lambda: ("issue's writes apart, one statement, µs per pair (each by a prepared statement per pair)",
              "", "", f"the session row's INSERT alone {f('stmt_issue_floor_session_us'):.1f}; with its audit "
              f"event, the floor's statement, {f('stmt_issue_floor_us'):.1f}; the user's upsert that a rate "
              f"or session limit adds {f('stmt_issue_floor_user_us'):.1f}", "", "—", "—"))
info(lambda: ("refresh's writes apart, one statement, µs per refresh (each by a prepared statement per refresh)",
              "", "", f"the session row's UPDATE {f('stmt_refresh_floor_session_us'):.1f}; the exchanged "
              f"token's INSERT {f('stmt_refresh_floor_token_us'):.1f}; with the audit event, all three in one statement (the floor) "
              f"{f('stmt_refresh_floor_us'):.1f}; the user's upsert that a rate limit adds "
              f"{f('stmt_refresh_floor_user_us'):.1f}", "", "—", "—"))
info(lambda: ("revoke_user_extension_tokens(user), pgbench -c1 / -c2 (TPS)",
              f"{tps(f('pgb_revoke_user_c1'))} / {tps(f('pgb_revoke_user_c2'))}", "—", "", "", "—", "—"))
info(lambda: ("extension_token_revoke(token), pgbench -c1 / -c2 (TPS)",
              f"{tps(f('pgb_revoke_token_c1'))} / {tps(f('pgb_revoke_token_c2'))}", "—", "", "", "—", "—"))
info(lambda: (f"data at {n(main)} sessions: rows in extension_token_sessions / extension_tokens (exchanged "
              f"refresh tokens) / the baseline's bench.sql_tokens",
              f"{int(m[f'rows_sessions_{main}']):,} / {int(m[f'rows_tokens_{main}']):,}",
              f"{int(m[f'rows_sql_tokens_{main}']):,}", "", "", "—", "—"))


def summary():
    """The README's table: operation, extension, SQL path, ratio, what bounds it (the rows this
    run measured)."""
    srows = []

    def row(build):
        try:
            srows.append(build())
        except KeyError:
            pass

    us = lambda x: f"{x:.1f} µs"  # noqa: E731
    row(lambda: ("validate, a token seen before (one statement)", us(f("stmt_ext_hot_us")),
                 us(f("stmt_sql_hot_us")), f"{f('stmt_sql_hot_us') / f('stmt_ext_hot_us'):.1f}×",
                 "the verified-token cache: the token's SHA-256, the session row by its id"))
    row(lambda: (f"validate, first sight, {n(main)} sessions (one statement)", us(f(f"stmt_ext_us_{main}")),
                 us(f(f"stmt_sql_us_{main}")), f"{f(f'stmt_sql_us_{main}') / f(f'stmt_ext_us_{main}'):.1f}×",
                 f"lookup + SHA-256 + HMAC take {f(f'stmt_parts0_us_{main}'):.1f} µs, with the JSON parse of "
                 f"the payload {f(f'stmt_parts_us_{main}'):.1f}; the rest is the claims jsonb and the answer"))
    row(lambda: (f"validate an API key, {n(main)} sessions (one statement)", us(f(f"stmt_key_us_{main}")),
                 us(f(f"stmt_sql_us_{main}")), f"{f(f'stmt_sql_us_{main}') / f(f'stmt_key_us_{main}'):.1f}×",
                 "the session row by the key's id and its SHA-256: no signature, no JSON"))
    row(lambda: ("validate, pgbench -c2", f"{tps(f('pgb_validate_ext_c2'))} TPS",
                 f"{tps(f('pgb_validate_sql_c2'))} TPS",
                 f"{f('pgb_validate_ext_c2') / f('pgb_validate_sql_c2'):.1f}×",
                 f"{100 * f('pgb_validate_ext_c2') / f('pgb_lookup_c2'):.0f}% of a bare index-lookup statement "
                 f"on the same table"))
    row(lambda: ("validate through PostgREST, GET", f"{tps(f('http_ext_rps'))} req/s",
                 f"{tps(f('http_sql_rps'))} req/s", f"{f('http_ext_rps') / f('http_sql_rps'):.2f}×",
                 f"{100 * f('http_ext_rps') / f('http_noop_rps'):.0f}% of a no-op rpc, "
                 f"{100 * f('http_ext_rps') / f('http_noop_shape_rps'):.0f}% of a no-op of validate's shape: "
                 f"PostgREST's own cost"))
    if "http_post_ext_rps" in m:
        row(lambda: ("validate through PostgREST, POST", f"{tps(f('http_post_ext_rps'))} req/s",
                     f"{tps(f('http_post_sql_rps'))} req/s",
                     f"{f('http_post_ext_rps') / f('http_post_sql_rps'):.2f}×",
                     f"{100 * f('http_post_ext_rps') / f('http_post_noop_rps'):.0f}% of a no-op rpc, "
                     f"{100 * f('http_post_ext_rps') / f('http_post_noop_shape_rps'):.0f}% of a no-op of "
                     f"validate's shape: PostgREST's own cost"))
    row(lambda: ("issue (one statement)", us(f("stmt_issue_ext_us")), us(f("stmt_issue_sql_us")),
                 f"{f('stmt_issue_sql_us') / f('stmt_issue_ext_us'):.2f}×",
                 f"its writes, the session row and its audit event (which the SQL path does not write), take "
                 f"{f('stmt_issue_floor_us'):.1f} µs by themselves"))
    row(lambda: ("refresh (one statement)", us(f("stmt_refresh_ext_us")), us(f("stmt_refresh_sql_us")),
                 f"{f('stmt_refresh_sql_us') / f('stmt_refresh_ext_us'):.2f}×",
                 f"its writes (the session row's HOT update, the exchanged token, the audit event) take "
                 f"{f('stmt_refresh_floor_us'):.1f} µs by themselves; the lookup {f('stmt_refresh_lookup_us'):.1f}"))
    for what, path in (("issue, pgbench -c2", "issue"), ("refresh, pgbench -c2", "refresh")):
        row(lambda what=what, path=path: (
            what, f"{tps(f(f'pgb_{path}_ext_c2'))} TPS", f"{tps(f(f'pgb_{path}_sql_c2'))} TPS",
            f"{f(f'pgb_{path}_ext_c2') / f(f'pgb_{path}_sql_c2'):.2f}×",
            f"{100 * f(f'mix_{path}_c2'):.0f}% of a plain transaction with the same writes (interleaved): the commit"))
    out = ["| operation | extension | SQL path | ratio | what bounds it |", "|---|---:|---:|---:|---|"]
    out += ["| " + " | ".join(r) + " |" for r in srows]
    return "\n".join(out)


if len(sys.argv) > 2 and sys.argv[2] == "--summary":
    print(summary())
    sys.exit(0)

met = sum(1 for r in rows[:targets] if r[6] == "yes")
partly = sum(1 for r in rows[:targets] if r[6] != "yes" and not r[6].startswith("**no**"))
out = []
out.append("# extension_tokens benchmark")
out.append("")
out.append(f"- {m['machine']}")
out.append(f"- {m['settings']}")
if m.get("build"):
    out.append(f"- {m['build']}")
if m.get("load"):
    out.append(f"- {m['load']}")
if m.get("postgrest"):
    out.append(f"- PostgREST: {m['postgrest']}")
out.append("- command: `" + (f"BENCH_ONLY={m['only']} " if m.get("only") in ("write", "read") else "")
           + "bench/run.sh` (see bench/README.md); SQL baseline: bench/baseline.sql")
out.append(f"- targets met: {met} of {targets}" + (f" ({partly} partly)" if partly else "")
           + (f"; not measured in this run: " + "; ".join(f"{w} ({g})" for w, g in skipped)
              if skipped else ""))
out.append("")
out.append("| what | extension | SQL baseline | floor / parts | ratio(s) | target | met |")
out.append("|---|---:|---:|---|---|---|---|")
for i, r in enumerate(rows):
    if i == targets:
        out.append("| *informational* | | | | | | |")
    out.append("| " + " | ".join(str(c) for c in r) + " |")
print("\n".join(out))
