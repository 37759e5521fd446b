# pg_jobrunner — PGXS build of a C++17 extension.
#
#   make            build the extension
#   make install    install into the pg_config in PATH
#   make test       install what is missing, build, and run every test tier
#   make installcheck  the regression suite against an installed server (PGHOST...)
#   make demo       install what is missing, build, and run the demo
#   make unit       build and run the GoogleTest units alone (no Postgres)
#   make bench      run the benchmarks in bench/

EXTENSION  = pg_jobrunner
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
# Released versions: their install scripts are kept as released (for the
# upgrade test), and each gets an update script to EXTVERSION.
OLD_VERSIONS = 0.1.0
PG_CONFIG ?= pg_config

# Pure C++ units: never include Postgres headers, unit-tested alone.
CORE_SRCS = src/core/jwt.cpp src/core/text_checks.cpp src/core/backoff.cpp \
            src/core/dispatch.cpp src/core/http_thread.cpp \
            src/core/http_engine.cpp src/core/destinations.cpp
# The Postgres side: everything that includes postgres.h.
PG_SRCS   = $(sort $(wildcard src/pg/*.cpp))

.PHONY: test demo deps unit bench dist
.DEFAULT_GOAL := all

deps:
	scripts/install-deps.sh

test: deps
	$(MAKE) --no-print-directory all
	scripts/run-tests.sh

demo: deps
	$(MAKE) --no-print-directory all
	scripts/demo.sh

bench: deps
	$(MAKE) --no-print-directory all
	bench/run.sh

# PGXN distribution of the committed tree (HEAD): one top directory
# pg_jobrunner-<version>/ holding META.json, as PGXN expects.
dist:
	@mkdir -p build/dist
	git archive --format zip --prefix $(EXTENSION)-$(EXTVERSION)/ \
		-o build/dist/$(EXTENSION)-$(EXTVERSION).zip HEAD
	@echo build/dist/$(EXTENSION)-$(EXTVERSION).zip

# --- unit tests: GoogleTest against src/core only -------------------------
UNIT_CXX      ?= g++
UNIT_CXXFLAGS  = -std=c++17 -O1 -g -Wall -Wextra -Werror -Isrc -Itest/unit -pthread
UNIT_SRCS      = $(sort $(wildcard test/unit/*_test.cpp))
build/unit_tests: $(CORE_SRCS) $(wildcard src/core/*.hpp) $(UNIT_SRCS) $(wildcard test/unit/*.hpp)
	@mkdir -p build
	$(UNIT_CXX) $(UNIT_CXXFLAGS) -o $@ $(CORE_SRCS) $(UNIT_SRCS) \
		-lgtest -lgtest_main -lcurl -lcrypto

unit: build/unit_tests
	build/unit_tests

# --- the extension ----------------------------------------------------------
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)

MODULE_big = $(EXTENSION)
OBJS       = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)
# The regression suite, as every PGXS extension runs it (make installcheck,
# against an installed server): inputs in test/sql, expected outputs in
# expected/ (pg_regress looks in its output directory before its input one).
REGRESS      = $(shell sed -n 's/^test: //p' test/schedule)
REGRESS_OPTS = --inputdir=test --load-extension=pgcrypto --load-extension=pg_jobrunner --dbname=jobrunner_regress

# Install and update scripts are built from sql/ (scripts/build-sql.sh).
SQL_SOURCES = sql/guard.sql sql/install/tables.sql sql/functions/ORDER $(wildcard sql/functions/*.sql) \
              $(wildcard sql/updates/*.sql) scripts/build-sql.sh
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql \
             $(foreach v,$(OLD_VERSIONS),sql/$(EXTENSION)--$(v)--$(EXTVERSION).sql)
DATA       = $(foreach v,$(OLD_VERSIONS),sql/$(EXTENSION)--$(v).sql)
EXTRA_CLEAN = build

PG_CPPFLAGS = -Isrc -DJOBRUNNER_VERSION=\"$(EXTVERSION)\"
# WERROR=-Werror in CI; -Wno-register because Postgres headers use it.
PG_CXXFLAGS = -std=c++17 -Wextra -Wno-unused-parameter -Wno-register \
              -Wno-missing-field-initializers -Wno-cast-function-type \
              -fno-omit-frame-pointer $(WERROR)
SHLIB_LINK  = -lcurl -lcrypto -lstdc++

# Rebuild objects when a header they include changes (.deps/).
override autodepend = yes

# The JIT bitcode step would need clang and ignores PG_CXXFLAGS; the worker
# gains nothing from inlining, so no bitcode is built.
override with_llvm = no

include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES)
	scripts/build-sql.sh install $(EXTVERSION) > $@

sql/$(EXTENSION)--%--$(EXTVERSION).sql: $(SQL_SOURCES)
	scripts/build-sql.sh update $* $(EXTVERSION) > $@

else
all install:
	@echo "pg_config not found: run 'make deps' (or 'make test') first" >&2; exit 1
endif
