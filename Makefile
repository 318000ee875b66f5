# extension_tokens: PGXS build
EXTENSION = extension_tokens
MODULE_big = extension_tokens
OBJS = src/extension_tokens.o src/config.o src/token.o src/storage.o \
       src/policy.o src/worker.o src/logfilter.o \
       src/stats.o
DATA = $(wildcard $(EXTENSION)--*.sql)
PGFILEDESC = "extension_tokens - API tokens in the database"

EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
# libjwt is dlopen()ed (see src/token.c); its soname comes from the library.
LIBJWT_SONAME := $(shell readelf -d $$(gcc -print-file-name=libjwt.so) 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
PG_CPPFLAGS = -DEXTENSION_TOKENS_VERSION=\"$(EXTVERSION)\" \
              $(if $(LIBJWT_SONAME),-DLIBJWT_SONAME=\"$(LIBJWT_SONAME)\")
SHLIB_LINK = -ljansson -lcrypto -ldl

REGRESS = setup issue validate refresh revoke privileges hostile attacks postgrest operations upgrade
REGRESS_OUTPUTDIR ?= tmp/regress
REGRESS_OPTS = --outputdir=$(REGRESS_OUTPUTDIR)
# Isolation tests (specs/*.spec against expected/*.out): installcheck runs
# them after REGRESS, in their own database; output under REGRESS_OUTPUTDIR.
ISOLATION = refresh_race revoke_validate session_limit rate_limit cleanup_refresh lock_order
ISOLATION_OPTS = --outputdir=$(REGRESS_OUTPUTDIR)/isolation

# No JIT bitcode: nothing to inline here, and no clang needed to build.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# pg_isolation_regress creates its output directory but not its parents.
installcheck: test-outputdirs
test-outputdirs:
	mkdir -p $(REGRESS_OUTPUTDIR)/isolation
.PHONY: test-outputdirs

