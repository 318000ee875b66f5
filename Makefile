# extension_tokens: PGXS build
EXTENSION = extension_tokens
MODULE_big = extension_tokens
OBJS = src/extension_tokens.o src/config.o src/token.o src/token_payload.o src/token_keys.o src/storage.o \
       src/policy.o src/worker.o src/logfilter.o \
       src/stats.o src/revoker.o src/replication.o src/usage.o src/uninstall.o src/verdict.o
DATA = $(wildcard $(EXTENSION)--*.sql)
PGFILEDESC = "extension_tokens - API tokens in the database"

EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
# libjwt is dlopen()ed (see src/token.c); its soname comes from the library.
LIBJWT_SONAME := $(shell readelf -d $$(gcc -print-file-name=libjwt.so) 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
PG_CPPFLAGS = -DEXTENSION_TOKENS_VERSION=\"$(EXTVERSION)\" \
              $(if $(LIBJWT_SONAME),-DLIBJWT_SONAME=\"$(LIBJWT_SONAME)\")
SHLIB_LINK = -ljansson -lcrypto -ldl

# make WERROR=1: every warning of -Wall -Wextra is an error (CI builds so,
# through test/run-all.sh).  Unused parameters are PostgreSQL's own habit
# (fmgr.h, ilist.h), so that one stays a non-warning.
ifneq ($(WERROR),)
PG_CFLAGS += -Wall -Wextra -Wno-unused-parameter -Werror
endif

REGRESS = setup issue validate refresh revoke session_end device privileges hostile attacks postgrest api_keys events operations asymmetric upgrade install
REGRESS_OUTPUTDIR ?= tmp/regress
REGRESS_OPTS = --outputdir=$(REGRESS_OUTPUTDIR)
# Isolation tests (specs/*.spec against expected/*.out): installcheck runs
# them after REGRESS, in their own database; output under REGRESS_OUTPUTDIR.
ISOLATION = refresh_race revoke_validate session_limit api_key_limit rate_limit cleanup_refresh lock_order_revoke lock_order_refresh \
            revoke_refresh revoke_user_refresh revoke_session_refresh session_limit_refresh reuse_refresh kept_verdict \
            device_guess_limit
ISOLATION_OPTS = --outputdir=$(REGRESS_OUTPUTDIR)/isolation

# No JIT bitcode: nothing to inline here, and no clang needed to build.
override with_llvm = no
# Rebuild what includes a changed header (gcc -MMD, as --enable-depend does).
override autodepend = yes

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# pg_isolation_regress creates its output directory but not its parents.
installcheck: installcheck-guard test-outputdirs
test-outputdirs:
	mkdir -p $(REGRESS_OUTPUTDIR)/isolation

# The suite rewrites the server's configuration (ALTER SYSTEM SET
# extension_tokens.jwt_secret, admin_roles) and creates roles, so it runs
# only against a throwaway server that the test scripts started: they mark
# it with regress_extension_tokens.throwaway = on in its postgresql.conf
# (test/lib.sh, test/valgrind.sh).  Any other server is refused before
# pg_regress connects.
installcheck-guard:
	@marker=$$('$(bindir)/psql' -X -A -t -d postgres -c \
		"SELECT pg_catalog.current_setting('regress_extension_tokens.throwaway', true)" 2>&1) || \
	{ echo "installcheck: cannot connect to the server to check it: $$marker" >&2; exit 1; }; \
	if [ "$$marker" != on ]; then \
		echo "installcheck: refusing to run: this server was not started by the test scripts" \
		     "(regress_extension_tokens.throwaway is not on), and the suite would rewrite its" \
		     "jwt_secret and admin_roles with ALTER SYSTEM and leave roles behind." >&2; \
		echo "installcheck: run ./test/run-all.sh, which starts a throwaway server of its own." >&2; \
		exit 1; \
	fi
.PHONY: test-outputdirs installcheck-guard

# ---------------------------------------------------------------------------
# make dist: the PGXN release zip of the committed tree (git archive of HEAD),
# extension_tokens-X.Y.0.zip.  META.json's versions must be the control
# file's default_version with a patch number.
# ---------------------------------------------------------------------------
DISTVERSION = $(EXTVERSION).0
dist:
	@for v in $$(sed '/"meta-spec"/,$$d' META.json | sed -n 's/^ *"version": *"\([0-9][^"]*\)".*/\1/p'); do \
		[ "$$v" = "$(DISTVERSION)" ] || \
		{ echo "dist: META.json says version $$v, the control file $(EXTVERSION) ($(DISTVERSION))" >&2; exit 1; }; \
	done
	git archive --format zip --prefix=$(EXTENSION)-$(DISTVERSION)/ \
		-o $(EXTENSION)-$(DISTVERSION).zip HEAD
	@echo "$(EXTENSION)-$(DISTVERSION).zip"
.PHONY: dist

# ---------------------------------------------------------------------------
# Fuzzing and memory checking (fuzz/, test/valgrind.sh)
#
#   make fuzz [FUZZ_SECONDS=600]  libFuzzer (+ASan, UBSan) on the token core,
#                                 src/token.c without PostgreSQL; new inputs
#                                 go to fuzz/corpus-work/ (ignored), the
#                                 committed seeds in fuzz/corpus/ are only read
#   make fuzz-smoke               the same for FUZZ_SMOKE_SECONDS (20) from the
#                                 seeds alone, for CI
#   make valgrind-check           the regression suite against a postgres
#                                 running under valgrind memcheck
#
# FUZZ_FLAGS adds libFuzzer flags (e.g. FUZZ_FLAGS=-seed=1); a crash input
# lands in fuzz/artifacts/ and reproduces with ./fuzz/fuzz_token FILE.
# What it found so far: fuzz/findings/README.
# ---------------------------------------------------------------------------
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_FLAGS ?=
FUZZ_CFLAGS = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -g -O1 -Wall -Wextra -Wno-unused-parameter -Isrc \
              -DLIBJWT_SONAME=\"$(or $(LIBJWT_SONAME),libjwt.so.0)\"

# The payload's parse (src/token_payload.c) is PostgreSQL's JSON parser:
# built as frontend code against libpgcommon, as PostgreSQL's own tools are.
FUZZ_PG = -DFRONTEND -Wno-ignored-attributes -I$(shell $(PG_CONFIG) --includedir-server)
FUZZ_PG_LIBS = -L$(shell $(PG_CONFIG) --pkglibdir) -L$(shell $(PG_CONFIG) --libdir) -lpgcommon -lpgport -lm
# fuzz_token.c keeps the parse's allocations in a list (see there)
FUZZ_WRAP = -Wl,--wrap=palloc,--wrap=palloc0,--wrap=pstrdup,--wrap=repalloc,--wrap=pfree

# fuzz_token.c #includes src/token.c (see the top of fuzz/fuzz_token.c).
fuzz/fuzz_token: fuzz/fuzz_token.c src/token.c src/token_keys.c src/token_payload.c src/token.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) fuzz/fuzz_token.c -c -o fuzz/fuzz_token.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_PG) src/token_payload.c -c -o fuzz/token_payload.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) fuzz/fuzz_token.o fuzz/token_payload.o src/token_keys.c -o $@ \
	    -ljansson -lcrypto -ldl $(FUZZ_PG_LIBS) $(FUZZ_WRAP)

# fuzz_asym.c: the ES256 and EdDSA paths (src/token_keys.c and the
# verifier's asymmetric branch); `make fuzz-asym [FUZZ_SECONDS=600]`, with
# FUZZ_ASYM_ALG=ES256 or EdDSA in the environment for one algorithm at ten
# times the speed (see the top of fuzz/fuzz_asym.c).
fuzz/fuzz_asym: fuzz/fuzz_asym.c src/token.c src/token_keys.c src/token_payload.c src/token.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_PG) src/token_payload.c -c -o fuzz/token_payload.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) fuzz/fuzz_asym.c fuzz/token_payload.o src/token_keys.c -o $@ \
	    -ljansson -lcrypto -ldl $(FUZZ_PG_LIBS)

# fuzz_payload.c: the payload's parse alone (section F of fuzz_token.c),
# fast enough for tens of millions of inputs; `make fuzz-payload`.
fuzz/fuzz_payload: fuzz/fuzz_payload.c fuzz/fuzz_token.c src/token.c src/token_keys.c src/token_payload.c src/token.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Wno-unused-function fuzz/fuzz_payload.c -c -o fuzz/fuzz_payload.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_PG) src/token_payload.c -c -o fuzz/token_payload.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) fuzz/fuzz_payload.o fuzz/token_payload.o src/token_keys.c -o $@ \
	    -ljansson -lcrypto -ldl $(FUZZ_PG_LIBS) $(FUZZ_WRAP)

fuzz-payload: fuzz/fuzz_payload
	mkdir -p fuzz/corpus-payload-work fuzz/artifacts
	LSAN_OPTIONS=suppressions=$(CURDIR)/fuzz/lsan.supp:print_suppressions=0 \
	./fuzz/fuzz_payload -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
	    -artifact_prefix=fuzz/artifacts/ $(FUZZ_FLAGS) fuzz/corpus-payload-work fuzz/corpus-payload

fuzz-asym: fuzz/fuzz_asym
	mkdir -p fuzz/corpus-asym-work fuzz/artifacts
	LSAN_OPTIONS=suppressions=$(CURDIR)/fuzz/lsan.supp:print_suppressions=0 \
	./fuzz/fuzz_asym -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	    -artifact_prefix=fuzz/artifacts/ $(FUZZ_FLAGS) fuzz/corpus-asym-work fuzz/corpus

fuzz: fuzz/fuzz_token
	fuzz/run.sh $(FUZZ_SECONDS) fuzz/corpus-work $(FUZZ_FLAGS)

fuzz-smoke: fuzz/fuzz_token
	rm -rf tmp/fuzz-smoke
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS) tmp/fuzz-smoke $(FUZZ_FLAGS)

valgrind-check:
	test/valgrind.sh

.PHONY: fuzz fuzz-smoke fuzz-asym fuzz-payload valgrind-check
