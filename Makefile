# apify.kvs — build, demo and tests.
#
#   make demo    build, start the local API emulator, list a store through the module
#   make test    the busted suite under Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT, then `make check`
#   make check   the suite again against an ASan/UBSan build, and a valgrind run
#   make bench   bench/run.sh: apify.kvs against the alternatives (bench/README.md)
#   make fuzz    libFuzzer targets of the sans-I/O core (fuzz/), FUZZ_SECONDS (180) each
#   make fuzz-smoke  those targets over their seeds and regressions, a few seconds each
#   make         the module for every Lua: build/<5.1|5.2|5.3|5.4|jit>/apify/kvs.so
#
# Missing Debian packages are installed with apt-get when run as root;
# otherwise the build stops with the exact command to run.

SHELL      := /bin/bash
CC         ?= cc
LUAS       := 5.1 5.2 5.3 5.4 jit
PKG_5.1    := lua5.1
PKG_5.2    := lua5.2
PKG_5.3    := lua5.3
PKG_5.4    := lua5.4
PKG_jit    := luajit
BIN_5.1    := lua5.1
BIN_5.2    := lua5.2
BIN_5.3    := lua5.3
BIN_5.4    := lua5.4
BIN_jit    := luajit

SRCS       := $(wildcard src/*.c)
HDRS       := $(wildcard src/*.h)
WERROR     ?= -Werror
OPT        ?= -O2
CFLAGS_ALL  = -std=c99 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -fPIC -g $(OPT) \
              -fvisibility=hidden -Wall -Wextra -Wshadow -Wstrict-prototypes \
              -Wmissing-prototypes -Wno-unused-function $(WERROR)
DEPS_CFLAGS = $(shell pkg-config --cflags libcurl yajl)
DEPS_LIBS   = $(shell pkg-config --libs libcurl yajl)
SANITIZE   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# Debian packages: build, tests (busted, lua-cjson, luasocket), emulator (nginx + Lua module).
DEBS := build-essential pkg-config libcurl4-openssl-dev libyajl-dev \
        lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev lua5.4 liblua5.4-dev \
        luajit2 libluajit2-5.1-dev lua-busted lua-cjson lua-socket lua-filesystem \
        nginx libnginx-mod-http-lua luarocks valgrind curl ca-certificates time love \
        clang libclang-rt-14-dev

.PHONY: all deps build demo test check asan valgrind bench bench-smoke fuzz fuzz-smoke clean

all: build

deps:
	@missing=$$(for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:" $$missing; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	      || { echo "apt-get install failed"; exit 1; }; \
	  else \
	    echo "missing Debian packages; run:"; \
	    echo "  sudo apt-get install -y" $$missing; exit 1; \
	  fi; \
	fi

build: $(foreach v,$(LUAS),build/$(v)/apify/kvs.so)

define LUA_RULE
build/$(1)/apify/kvs.so: $$(SRCS) $$(HDRS) | deps
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS_ALL) $$(CFLAGS) $$(shell pkg-config --cflags $$(PKG_$(1))) $$(DEPS_CFLAGS) \
	  -shared -o $$@ $$(SRCS) $$(DEPS_LIBS) $$(LDFLAGS)
endef
$(foreach v,$(LUAS),$(eval $(call LUA_RULE,$(v))))

# Sanitizer build, for Lua 5.4 (loaded into an uninstrumented interpreter via LD_PRELOAD).
build/asan/apify/kvs.so: $(SRCS) $(HDRS) | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -O1 $(SANITIZE) $(shell pkg-config --cflags lua5.4) $(DEPS_CFLAGS) \
	  -shared -o $@ $(SRCS) $(DEPS_LIBS)

demo: build/5.4/apify/kvs.so
	@bash examples/demo.sh

# Every target of the suite in one run, two at a time, the longest first.
test: build build/asan/apify/kvs.so
	@bash spec/run hosts 5.4 valgrind 5.1 5.2 5.3 jit asan
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory bench-smoke

check: asan valgrind

asan: build/asan/apify/kvs.so
	@bash spec/run asan

valgrind: build/5.4/apify/kvs.so
	@bash spec/run valgrind

# The benchmark (see bench/README.md); N, R, DELAY, WORK, PEERS pass through.
bench: build
	@bash bench/run.sh

# Proves the benchmark script works (tiny N, one round); not a timing.
bench-smoke: build
	@N=2000 R=1 STRICT=1 PEERS='kvs|floor|luasocket|decode' RESULTS=build/bench-smoke.md \
	  bash bench/run.sh >build/bench-smoke.log 2>&1 \
	  || { tail -30 build/bench-smoke.log; exit 1; }
	@echo "bench:    bench/run.sh ran at N=2000 (table in build/bench-smoke.md)"

# Fuzzing the sans-I/O core with libFuzzer (fuzz/*.c says what each target
# checks).  The core is built without any Lua include path: it needs none.
# Clang comes from the Debian packages above; libclang-rt-14-dev (the fuzzer
# and sanitizer runtimes) is only a Recommends of clang, so it is listed too.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 180
FUZZ_TARGETS := fuzz_reply fuzz_listing fuzz_keyspace fuzz_escape
FUZZ_BINS    := $(FUZZ_TARGETS:%=build/fuzz/%)
CORE_SRCS    := $(wildcard src/core_*.c)
FUZZ_CFLAGS   = -std=c99 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -g -O1 \
                -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
                -Wno-unused-function $(WERROR) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_OPTS_fuzz_reply    := -dict=fuzz/json.dict
FUZZ_OPTS_fuzz_listing  := -dict=fuzz/json.dict
FUZZ_OPTS_fuzz_keyspace := -max_len=800
rparen := )
# sets $opts in a recipe's shell to FUZZ_OPTS_<target> of target $t
FUZZ_OPTS_OF = case $$t in $(foreach x,$(FUZZ_TARGETS),$(x)$(rparen) opts="$(FUZZ_OPTS_$(x))";;) esac

build/fuzz/%: fuzz/%.c fuzz/fuzz_util.h $(CORE_SRCS) src/core.h | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Isrc $(shell pkg-config --cflags yajl) -o $@ $< $(CORE_SRCS) \
	  $(shell pkg-config --libs yajl)

# Each target in turn, from a working corpus under build/ (the committed seeds
# copied in, what it finds added there); a broken invariant leaves its input
# in build/fuzz/artifacts/ and fails the run after the other targets ran.
fuzz: $(FUZZ_BINS)
	@mkdir -p build/fuzz/artifacts; fail=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t; cp fuzz/corpus/$$t/* build/fuzz/corpus/$$t/; \
	  echo "fuzz:     $$t for $(FUZZ_SECONDS) s (log: build/fuzz/$$t.log)"; $(FUZZ_OPTS_OF); \
	  if build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$opts \
	       -artifact_prefix=build/fuzz/artifacts/$$t- build/fuzz/corpus/$$t >build/fuzz/$$t.log 2>&1; \
	  then st=ok; else st=FAILED; fail=1; fi; \
	  echo "          $$st: $$(grep -o 'number_of_executed_units: [0-9]*' build/fuzz/$$t.log | grep -o '[0-9]*$$') runs," \
	       "$$(grep -o 'cov: [0-9]* ft: [0-9]*' build/fuzz/$$t.log | tail -1)"; \
	  [ $$st = ok ] || { grep -A3 -E 'invariant broken|ERROR: (Address|Undefined|LeakSanitizer|libFuzzer)|runtime error' \
	                       build/fuzz/$$t.log | head -12; ls build/fuzz/artifacts/$$t-* 2>/dev/null; }; \
	done; exit $$fail

# Quick: each target over its committed seeds plus 2000 mutations of them
# (fixed seed), then every input in fuzz/regressions/<target>/ once.
fuzz-smoke: $(FUZZ_BINS)
	@rm -rf build/fuzz/smoke; mkdir -p build/fuzz/smoke; fail=0; seeds=0; regs=0; bad=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/smoke/$$t; seeds=$$((seeds + $$(ls fuzz/corpus/$$t | wc -l))); $(FUZZ_OPTS_OF); \
	  build/fuzz/$$t -runs=2000 -seed=1 -max_total_time=20 $$opts \
	    -artifact_prefix=build/fuzz/smoke/$$t- build/fuzz/smoke/$$t fuzz/corpus/$$t \
	    >>build/fuzz/smoke.log 2>&1 || { fail=1; bad="$$bad $$t(mutations)"; }; \
	  for r in fuzz/regressions/$$t/*; do \
	    [ -f "$$r" ] || continue; regs=$$((regs + 1)); \
	    build/fuzz/$$t $$r >>build/fuzz/smoke.log 2>&1 || { fail=1; bad="$$bad $$t/$$(basename $$r)"; }; \
	  done; \
	done; \
	if [ $$fail = 0 ]; then \
	  echo "fuzz:     $(words $(FUZZ_TARGETS)) core targets ran $$seeds seeds, 2000 mutations each and $$regs regressions"; \
	else \
	  grep -A1 -E 'invariant broken|ERROR: (Address|Undefined|LeakSanitizer)|runtime error' build/fuzz/smoke.log | head -20; \
	  echo "fuzz:     broken invariants in:$$bad (log: build/fuzz/smoke.log)"; exit 1; \
	fi

clean:
	rm -rf build
