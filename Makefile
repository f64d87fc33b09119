# apify.kvs — build, demo and tests.
#
#   make demo    build, start the local API emulator, list a store through the module
#   make test    the busted suite under Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT, then `make check`
#   make check   the suite again against an ASan/UBSan build, and a valgrind run
#   make bench   bench/run.sh: apify.kvs against the alternatives (bench/README.md)
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
        nginx libnginx-mod-http-lua luarocks valgrind curl ca-certificates time love

.PHONY: all deps build demo test check asan valgrind bench bench-smoke clean

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

clean:
	rm -rf build
