# apify.kvs — build, demo and tests.
#
#   make demo    build, start the local API emulator, list a store through the module; it prints
#                each command and the environment (an export line) they need
#   make emulator  an emulator over examples/storage that keeps running (make emulator-stop),
#                for running make demo's commands by hand; make demo then uses it
#   make test    the busted suite under Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT, the hosted specs
#                (emulator, nginx, C host, LÖVE), ASan/UBSan and valgrind (what `make check`
#                runs), the fuzz and bench smoke runs: all at once
#   make check   the suite again against an ASan/UBSan build, and a valgrind run
#   make check-layers  the core, the platform helpers and the drivers compile without Lua
#   make test-timing  the speed claims (frame times, prefetch overlap, parallel speed-up,
#                rate caps, OpenResty concurrency): on a quiet machine only, never in make test
#   make bench   bench/run.sh: apify.kvs against the alternatives (docs/performance.md)
#   make fuzz    libFuzzer targets of the sans-I/O core (fuzz/), FUZZ_SECONDS (180) each
#   make fuzz-smoke  those targets over their seeds and regressions, a few seconds each
#   make         the module for every Lua: build/<5.1|5.2|5.3|5.4|jit>/apify/kvs.so
#   make install the module, its Lua files, bin/apify-kvs and the type definitions for one
#                Lua (LUA=5.1|5.2|5.3|5.4|jit, default 5.4) under PREFIX (/usr/local), DESTDIR
#   make rock    build/rock/apify-kvs-<version>-1.src.rock at the tag v<version>, otherwise
#                apify-kvs-scm-1.src.rock of the tree as it is; offline
#
# `make` needs only the build dependencies (BUILD_DEBS: cc, pkg-config, libcurl, yajl, zlib,
# http-parser, Lua headers); test, demo and bench install their tools (TEST_DEBS) when they need them.
# Missing Debian packages are installed with apt-get when run as root; otherwise the build
# stops with the exact command to run. Without dpkg-query (not Debian) the Makefile prints
# what it needs and goes on when pkg-config finds libcurl, yajl and zlib (http-parser has no
# pkg-config file: -lhttp_parser must find it).

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
              -Wmissing-prototypes $(WERROR)
DEPS_CFLAGS = $(shell pkg-config --cflags libcurl yajl zlib)
DEPS_LIBS   = $(shell pkg-config --libs libcurl yajl zlib) -lhttp_parser
SANITIZE   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# Debian packages. Building: a C compiler, pkg-config, libcurl, yajl, zlib, http-parser (the
# core reads raw HTTP/1.1 replies with it), the Lua headers.
BUILD_DEBS := build-essential pkg-config libcurl4-openssl-dev libyajl-dev zlib1g-dev libhttp-parser-dev \
        liblua5.1-0-dev liblua5.2-dev liblua5.3-dev liblua5.4-dev libluajit2-5.1-dev
# Tests, demo, bench: interpreters, busted, lua-cjson, luasocket, the emulator (nginx + Lua
# module, luaossl for the emulator's URL signatures), LuaRocks and zip (packaging specs), valgrind,
# the openssl tool (the TLS specs' CAs and certificates), LÖVE, zlib (bench/gen.c). nodejs and
# npm (JS_DEPS) only when npm is missing.
TEST_DEBS := lua5.1 lua5.2 lua5.3 lua5.4 luajit2 lua-busted lua-cjson lua-socket lua-filesystem \
        nginx libnginx-mod-http-lua lua-luaossl luarocks zip valgrind curl ca-certificates openssl time love zlib1g-dev \
        clang libclang-rt-14-dev
DEMO_DEBS := lua5.4 lua-socket lua-cjson lua-filesystem nginx libnginx-mod-http-lua

# Installation (make install / uninstall): LUA picks the interpreter. With PREFIX equal to
# the prefix of that Lua's pkg-config file (/usr on Debian) its INSTALL_CMOD / INSTALL_LMOD
# are used, otherwise the usual PREFIX/lib/lua/5.x and PREFIX/share/lua/5.x. LuaJIT has no
# directory of its own (its package.cpath is Lua 5.1's): LUA=jit and LUA=5.1 install the same
# paths, each build loading in both interpreters (src/compat.h).
LUA        ?= 5.4
PREFIX     ?= /usr/local
DESTDIR    ?=
LUA_ABI     = $(if $(filter jit,$(LUA)),5.1,$(LUA))
LUA_PC_PREFIX = $(shell pkg-config --variable=prefix $(PKG_$(LUA)) 2>/dev/null)
PC_OR       = $(or $(if $(filter $(PREFIX),$(LUA_PC_PREFIX)),$(shell pkg-config --variable=$(1) $(PKG_$(LUA)) 2>/dev/null)),$(2))
INSTALL_CMOD ?= $(call PC_OR,INSTALL_CMOD,$(PREFIX)/lib/lua/$(LUA_ABI))
INSTALL_LMOD ?= $(call PC_OR,INSTALL_LMOD,$(PREFIX)/share/lua/$(LUA_ABI))
INSTALL_BIN  ?= $(PREFIX)/bin
INSTALL_DATA ?= $(PREFIX)/share/apify-kvs
INSTALL_TYPES ?= $(INSTALL_DATA)/types
INSTALL_LIST  = $(INSTALL_DATA)/installed-$(LUA)

VERSION    := $(shell sed -n 's/^\#define KVS_VERSION "\(.*\)"/\1/p' src/kvs.h)
ROCK_REV   := 1
ROCK_FILES := src lua bin types docs rockspec LICENSE CHANGELOG.md README.md

.PHONY: all deps test-deps demo-deps js-deps build demo emulator emulator-stop test test-timing check check-layers asan valgrind bench bench-smoke \
        fuzz fuzz-smoke clean \
        install uninstall rock

all: build

# Installs (root) or names the missing Debian packages of $$pkgs.
APT_ENSURE = missing=$$(for p in $$pkgs; do \
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

deps:
	@pkgs="$(BUILD_DEBS)"; \
	if command -v dpkg-query >/dev/null 2>&1; then $(APT_ENSURE); else \
	  echo "deps: no dpkg-query (not Debian); building needs a C compiler, pkg-config, libcurl, yajl, zlib, http-parser"; \
	  echo "  and the Lua headers (Debian: $$pkgs; docs/install.md names Alpine, Fedora, Homebrew packages)"; \
	  pkg-config --exists libcurl yajl zlib \
	    || { echo "deps: pkg-config finds no libcurl, yajl or zlib (set PKG_CONFIG_PATH?)"; exit 1; }; \
	  echo "deps: pkg-config finds libcurl, yajl and zlib: going on"; \
	fi

test-deps demo-deps:
	@pkgs="$(if $(filter demo-deps,$@),$(DEMO_DEBS),$(TEST_DEBS))"; \
	if command -v dpkg-query >/dev/null 2>&1; then $(APT_ENSURE); else \
	  echo "$@: no dpkg-query (not Debian); this needs the equivalents of: $$pkgs"; \
	  echo "  (the suite, the demo and the emulator are set up for Debian 12): going on"; \
	fi

# The JavaScript implementations spec/compat_spec.lua compares the emulator with, pinned by
# spec/js/package-lock.json: `npm ci` into build/js when missing or when the lockfile changed
# (npm's cache first); nodejs and npm from Debian when there is no npm.
JS_DEPS := build/js/node_modules/.package-lock.json
js-deps: $(JS_DEPS)
$(JS_DEPS): spec/js/package.json spec/js/package-lock.json | test-deps
	@command -v npm >/dev/null 2>&1 || { pkgs="nodejs npm"; $(APT_ENSURE); }
	@mkdir -p build/js && cp spec/js/package.json spec/js/package-lock.json build/js/
	@cd build/js && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	@touch $@

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
	$(CC) $(CFLAGS_ALL) -O1 $(SANITIZE) $(CFLAGS) $(shell pkg-config --cflags lua5.4) $(DEPS_CFLAGS) \
	  -shared -o $@ $(SRCS) $(DEPS_LIBS) $(LDFLAGS)

# (LUA, as for make install, picks the interpreter: 5.4 by default)
demo: build/$(LUA)/apify/kvs.so | demo-deps
	@LUA=$(BIN_$(LUA)) bash examples/demo.sh

# An emulator that outlives make demo, for running its commands by hand (examples/demo.sh).
emulator: build/$(LUA)/apify/kvs.so | demo-deps
	@LUA=$(BIN_$(LUA)) bash examples/demo.sh start
emulator-stop:
	@LUA=$(BIN_$(LUA)) bash examples/demo.sh stop

# Every target of the suite in one run, twelve at a time (spec/run), the longest first
# (valgrind and ASan in two halves each); the fuzz and bench smoke runs go beside the specs, which
# mostly wait on sockets, and report after them.
test: build build/asan/apify/kvs.so | test-deps js-deps
	@$(MAKE) --no-print-directory check-layers
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@{ $(MAKE) --no-print-directory fuzz-smoke && $(MAKE) --no-print-directory bench-smoke; } \
	  >build/smoke.out 2>&1 & smoke=$$!; \
	bash spec/run valgrind-a valgrind-b asan-a asan-b 5.4 hosts 5.1 5.2 5.3 jit jit-classic; specs=$$?; \
	wait $$smoke; smoked=$$?; cat build/smoke.out; \
	[ $$specs = 0 ] && [ $$smoked = 0 ]

test-timing: build | test-deps js-deps
	@KVS_TIMING=1 bash spec/run hosts 5.4

check: asan valgrind

# The layers under the binding know no Lua: each core_*.c file is compiled with
# the yajl include path only, platform.c and each driver_*.c with libcurl's and
# yajl's, none with a Lua one; the headers each one read (-MD) must name no Lua
# or binding header, which would also catch one found in a default include
# directory.  And core_*.c include nothing but core.h, the planner's private
# core_plan_internal.h, libc, yajl, zlib and http-parser; no other file includes that one;
# and no two core files call each other, directly or around a circle (the
# objects' symbols, sorted with tsort).
CORE_LIBC := assert|ctype|errno|float|inttypes|limits|math|stdarg|stdbool|stddef|stdint|stdio|stdlib|string|strings
check-layers: | deps
	@mkdir -p build/layers; fail=0; \
	for f in $(wildcard src/core_*.c) src/platform.c $(wildcard src/driver_*.c); do \
	  case $$f in src/core_*) inc="$$(pkg-config --cflags yajl zlib)"; out="-c -o build/layers/$$(basename $$f .c).o";; \
	    *) inc="$(DEPS_CFLAGS)"; out=-fsyntax-only;; esac; \
	  d=build/layers/$$(basename $$f .c).d; \
	  $(CC) $(CFLAGS_ALL) $(CFLAGS) $$inc $$out -MD -MF $$d $$f || { fail=1; continue; }; \
	  if grep -qE '(^|[ /])(lua[a-z_]*|lauxlib|luaconf|luajit|compat|kvs)\.h' $$d; then \
	    echo "check-layers: $$f reads a Lua or binding header:"; \
	    tr ' ' '\n' <$$d | grep -E '(^|/)(lua[a-z_]*|lauxlib|luaconf|luajit|compat|kvs)\.h'; fail=1; \
	  fi; \
	done; \
	bad=$$(grep -HnE '^[[:space:]]*#[[:space:]]*include' src/core_*.c \
	  | grep -vE '#[[:space:]]*include[[:space:]]*("core(_plan_internal)?\.h"|<($(CORE_LIBC))\.h>|<yajl/[a-z_]+\.h>|<zlib\.h>|<http_parser\.h>)'); \
	if [ -n "$$bad" ]; then echo "check-layers: core files include more than core.h, core_plan_internal.h, libc, yajl, zlib, http-parser:"; \
	  echo "$$bad"; fail=1; fi; \
	bad=$$(grep -lE '#[[:space:]]*include[[:space:]]*"core_plan_internal\.h"' src/*.c src/*.h | grep -v '^src/core_'); \
	if [ -n "$$bad" ]; then echo "check-layers: the planner's internals are the core's own, but these include them:"; \
	  echo "$$bad"; fail=1; fi; \
	nm -A -g build/layers/core_*.o | awk '{ f = $$1; sub(/:.*/, "", f); sub(/.*\//, "", f); sub(/\.o$$/, "", f); \
	    if ($$(NF - 1) == "U") use[f, $$NF] = 1; else def[$$NF] = f } \
	  END { for (k in use) { split(k, a, SUBSEP); if (a[2] in def) print a[1], def[a[2]] } }' \
	  | sort -u >build/layers/calls.txt; \
	if ! tsort build/layers/calls.txt >/dev/null 2>build/layers/circle.txt; then \
	  echo "check-layers: core files call each other around a circle:"; cat build/layers/circle.txt; fail=1; fi; \
	[ $$fail = 0 ] && echo "layers:   core_*.c, platform.c and driver_*.c compile without Lua; core_*.c include only core.h," \
	  "core_plan_internal.h, libc, yajl, zlib, http-parser, and call each other in no circle"

asan: build/asan/apify/kvs.so | test-deps
	@bash spec/run asan

valgrind: build/5.4/apify/kvs.so | test-deps
	@bash spec/run valgrind

# The benchmark (see docs/performance.md); N, R, DELAY, WORK, PEERS pass through.
bench: build | test-deps
	@bash bench/run.sh

# Proves the benchmark script works (tiny N, one round); not a timing.
bench-smoke: build | test-deps
	@N=2000 R=1 STRICT=1 PEERS='kvs|floor|luasocket|decode' RESULTS=build/bench-smoke.md \
	  bash bench/run.sh >build/bench-smoke.log 2>&1 \
	  || { tail -30 build/bench-smoke.log; exit 1; }
	@echo "bench:    bench/run.sh ran at N=2000 (table in build/bench-smoke.md)"

# One Lua's module, Lua files, command-line tool and type definitions (see LUA, PREFIX above).
# The list INSTALL_LIST names what the install wrote ("file PATH") and each directory it had to
# create ("dir PATH"), without DESTDIR, for make uninstall; a second install of the same LUA
# keeps the directories of the first.
INSTALL_DIRS  = $(INSTALL_CMOD)/apify $(INSTALL_LMOD)/apify/kvs $(INSTALL_BIN) $(INSTALL_TYPES)/apify/kvs \
                $(INSTALL_DATA)
install: build/$(LUA)/apify/kvs.so
	@set -e; d='$(DESTDIR)'; list="$${d}$(INSTALL_LIST)"; made=; \
	if [ -f "$$list" ]; then made=$$(sed -n 's/^dir //p' "$$list"); fi; \
	for dir in $(INSTALL_DIRS); do \
	  p=$$dir; while [ -n "$$p" ] && [ ! -d "$${d}$$p" ]; do \
	    made="$$made $$p"; case $$p in */*) p=$${p%/*};; *) p=;; esac; done; \
	  install -d "$${d}$$dir"; \
	done; \
	install -m 755 build/$(LUA)/apify/kvs.so "$${d}$(INSTALL_CMOD)/apify/kvs.so"; \
	install -m 644 lua/apify/kvs/openresty.lua "$${d}$(INSTALL_LMOD)/apify/kvs/openresty.lua"; \
	sed '1s|^#!.*|#!/usr/bin/env $(BIN_$(LUA))|' bin/apify-kvs >"$${d}$(INSTALL_BIN)/apify-kvs"; \
	chmod 755 "$${d}$(INSTALL_BIN)/apify-kvs"; \
	install -m 644 types/apify/kvs.lua "$${d}$(INSTALL_TYPES)/apify/kvs.lua"; \
	install -m 644 types/apify/kvs/openresty.lua "$${d}$(INSTALL_TYPES)/apify/kvs/openresty.lua"; \
	{ for f in $(INSTALL_CMOD)/apify/kvs.so $(INSTALL_LMOD)/apify/kvs/openresty.lua \
	           $(INSTALL_BIN)/apify-kvs $(INSTALL_TYPES)/apify/kvs.lua \
	           $(INSTALL_TYPES)/apify/kvs/openresty.lua; do echo "file $$f"; done; \
	  for p in $$made; do echo "dir $$p"; done | sort -u; } >"$$list"; \
	echo "install:  apify.kvs for $(BIN_$(LUA)) under $${d}$(PREFIX) (list: $$list)"

# Removes the files INSTALL_LIST names, except those the list of another LUA also names (5.1 and
# jit share the module; every LUA the tool, which then runs with that other Lua), then the
# directories it names once they are empty, deepest first. One that still holds something is
# handed on to another list, whose uninstall removes it; never a directory no install created.
uninstall:
	@set -e; d='$(DESTDIR)'; list="$${d}$(INSTALL_LIST)"; \
	if [ ! -f "$$list" ]; then \
	  echo "uninstall: nothing to uninstall for LUA=$(LUA) (no $$list)"; exit 0; fi; \
	others=$$(ls "$${d}$(INSTALL_DATA)"/installed-* 2>/dev/null | grep -vxF "$$list" || true); \
	heir=$$(echo "$$others" | head -1); \
	for f in $$(sed -n 's/^file //p' "$$list"); do \
	  if [ -n "$$others" ] && grep -qxF "file $$f" $$others; then \
	    case $$f in */bin/apify-kvs) \
	      lua=$${heir##*/installed-}; lua=$$([ "$$lua" = jit ] && echo luajit || echo lua$$lua); \
	      sed -i "1s|^#!.*|#!/usr/bin/env $$lua|" "$${d}$$f";; esac; \
	  else rm -f "$${d}$$f"; fi; \
	done; \
	dirs=$$(sed -n 's/^dir //p' "$$list" | awk '{ print gsub("/", "/"), $$0 }' | sort -rn | cut -d' ' -f2-); \
	rm -f "$$list"; \
	for dir in $$dirs; do \
	  rmdir "$${d}$$dir" 2>/dev/null || { [ -n "$$heir" ] && echo "dir $$dir" >>"$$heir"; } || true; \
	done; \
	echo "uninstall: apify.kvs for $(BIN_$(LUA)) from $${d}$(PREFIX)"

# The source rock, offline. At the release tag (HEAD is exactly v$(VERSION)): the release's,
# apify-kvs-$(VERSION)-1.src.rock, its rockspec plus the tarball its source.url names (what
# GitHub serves for the tag), both taken from the tag by git. Anywhere else (commits after
# the tag, or no git): what the tree is, apify-kvs-scm-1.src.rock, the scm rockspec plus the
# working tree's files (uncommitted changes included) in the directory its git URL implies.
# A release: KVS_VERSION in src/kvs.h, rockspec/apify-kvs-<v>-1.rockspec, CHANGELOG.md, tag v<v>.
rock:
	@set -e; rm -rf build/rock; mkdir -p build/rock; \
	tags=$$(git tag --points-at HEAD 2>/dev/null | grep '^v[0-9]' || true); \
	if echo "$$tags" | grep -qxF v$(VERSION); then \
	  name=apify-kvs-$(VERSION)-$(ROCK_REV) src=v$(VERSION).tar.gz; \
	  git show v$(VERSION):rockspec/$$name.rockspec >build/rock/$$name.rockspec 2>/dev/null \
	    || { echo "rock: the tag v$(VERSION) has no rockspec/$$name.rockspec"; exit 1; }; \
	  git archive --format=tar.gz --prefix=apify-kvs-$(VERSION)/ -o build/rock/$$src v$(VERSION); \
	elif [ -n "$$tags" ]; then \
	  echo "rock: HEAD is tagged" $$tags "but src/kvs.h says $(VERSION)"; exit 1; \
	else \
	  name=apify-kvs-scm-$(ROCK_REV) src=apify-kvs; \
	  cp rockspec/$$name.rockspec build/rock/; \
	  mkdir build/rock/$$src && cp -R $(ROCK_FILES) build/rock/$$src/; \
	fi; \
	cd build/rock; \
	if command -v zip >/dev/null; then zip -qr $$name.src.rock $$name.rockspec $$src; \
	else python3 -m zipfile -c $$name.src.rock $$name.rockspec $$src; fi; \
	rm -rf $$name.rockspec $$src; \
	echo "rock:     build/rock/$$name.src.rock"

# Fuzzing the sans-I/O core with libFuzzer (fuzz/*.c says what each target
# checks).  The core is built without any Lua include path: it needs none.
# Clang comes from the Debian packages above; libclang-rt-14-dev (the fuzzer
# and sanitizer runtimes) is only a Recommends of clang, so it is listed too.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 180
FUZZ_TARGETS := fuzz_reply fuzz_listing fuzz_keyspace fuzz_escape fuzz_plan fuzz_http
FUZZ_BINS    := $(FUZZ_TARGETS:%=build/fuzz/%)
CORE_SRCS    := $(wildcard src/core_*.c)
FUZZ_CFLAGS   = -std=c99 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -g -O1 \
                -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
                $(WERROR) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_OPTS_fuzz_reply    := -dict=fuzz/json.dict
FUZZ_OPTS_fuzz_listing  := -dict=fuzz/json.dict
FUZZ_OPTS_fuzz_http     := -dict=fuzz/http.dict
FUZZ_OPTS_fuzz_keyspace := -max_len=800
rparen := )
# sets $opts in a recipe's shell to FUZZ_OPTS_<target> of target $t
FUZZ_OPTS_OF = case $$t in $(foreach x,$(FUZZ_TARGETS),$(x)$(rparen) opts="$(FUZZ_OPTS_$(x))";;) esac

build/fuzz/%: fuzz/%.c fuzz/fuzz_util.h $(CORE_SRCS) src/core.h src/core_plan_internal.h | test-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Isrc $(shell pkg-config --cflags yajl zlib) -o $@ $< $(CORE_SRCS) \
	  $(shell pkg-config --libs yajl zlib) -lhttp_parser

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

# build/ holds every build product; LuaRocks builds put nothing in the checkout (older ones
# left src/*.o and ./apify/kvs.so, which ./?.so would load instead of the built module).
clean:
	rm -rf build
	rm -f src/*.o apify/kvs.so
	@rmdir apify 2>/dev/null || true
