-- Frame loops outside a Lua interpreter: examples/embed (a C program embedding Lua 5.4 with a
-- 60 Hz loop) and examples/love (a LÖVE 11 game, headless) list a store through the job API;
-- and a C host whose Lua allocator fails on demand (spec/support/oom_host.c).
-- This spec only drives processes (the hosts use build/5.4, LÖVE build/jit), so it runs the
-- same under every target of the suite.
local T = require "spec.support.env"

local TOKEN = "apify_api_embed_SECRET_47"
local N = 3000
local BYTES = 8998                         -- sizes are i % 7 for i = 1..3000
local LOVE_INSTALL = "apt-get install -y love"

-- Children must not inherit a sanitizer preloaded into this process (asan target), the
-- jobserver of an outer make, nor a module search path: they find the checkout's builds.
local CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS -u MAKEFLAGS -u MFLAGS" ..
  " -u MAKELEVEL -u LUA_CPATH -u LUA_CPATH_5_4 -u LUA_PATH -u LUA_PATH_5_4 "

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- runs a shell command, returns its output (stdout and stderr) and exit status
local function run(cmd)
  local out = T.read(CLEAN_ENV .. cmd .. " 2>&1; echo \"exit=$?\"")
  local body, code = out:match("^(.-)exit=(%d+)%s*$")
  return body or out, tonumber(code)
end

local function report(title, text)
  io.stderr:write("\n[embed_spec] ", title, "\n", text, text:sub(-1) == "\n" and "" or "\n")
end

describe("frame loops outside the Lua interpreter", function()
  local emu, storage, tmp

  lazy_setup(function()
    storage = T.tmpdir()
    tmp = T.tmpdir()
    T.make_store(storage, "s", T.numbered(N))
    emu = T.start_emulator({ storage = storage, token = TOKEN })
    emu:config({ delay = 0.05 })             -- every page takes 3 frames to arrive
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    T.rmrf(storage)
    T.rmrf(tmp)
  end)

  it("a C host embedding Lua 5.4 lists every key at 60 Hz without a late frame", function()
    -- built into a temp dir: targets of the suite run side by side
    local host = tmp .. "/host"
    local log, code = run("make --no-print-directory -C examples/embed HOST=" .. q(host))
    assert.are.equal(0, code, "building the host failed:\n" .. log)

    local out
    -- late frames fail the host only where speed is checked (make test-timing)
    out, code = run("APIFY_TOKEN=" .. q(TOKEN) .. " KVS_MAX_SECONDS=30 KVS_LATE_FRAMES_OK=" ..
                    (T.timing and "0" or "1") .. " timeout 60 " .. q(host) .. " " .. q(emu.base_url) ..
                    " s " .. N)
    report("C host, 60 Hz, " .. N .. " keys, page_size 1000, 0.05 s per page:", out)
    assert.are.equal(0, code, out)
    assert.matches("\nok\n", out)

    local frames = tonumber(out:match("\nframes%s+(%d+)"))
    local keys, bytes, status = out:match("\nkeys listed%s+(%d+) %((%d+) bytes%), status (%a+)")
    local max_ms, median_ms, p99_ms = out:match("frame work%s+max ([%d.]+) ms%s+median ([%d.]+) ms%s+p99 ([%d.]+) ms")
    local late = tonumber(out:match("late frames %(> [%d.]+ ms%): (%d+)"))
    assert.are.equal(N, tonumber(keys))
    assert.are.equal(BYTES, tonumber(bytes))
    assert.are.equal("done", status)
    T.timed_claim(late == 0, late .. " late frames")
    -- three pages, 0.05 s each, handed out 250 keys a frame: well over a dozen frames
    assert.is_true(frames >= 12, "only " .. tostring(frames) .. " frames")
    assert.is_true(tonumber(median_ms) <= tonumber(p99_ms) and tonumber(p99_ms) <= tonumber(max_ms))
    -- the worst frame is the one a 1000-key page arrives in (decoded there): ~1 ms
    T.timed_claim(tonumber(max_ms) < 8, "worst frame " .. max_ms .. " ms")
  end)

  it("the C host checks its arguments and takes the token from APIFY_TOKEN only", function()
    local host = tmp .. "/host"
    local log, code = run("make --no-print-directory -C examples/embed HOST=" .. q(host))
    assert.are.equal(0, code, "building the host failed:\n" .. log)
    local usage = "\nusage: APIFY_TOKEN=%.%.%. " .. host:gsub("%p", "%%%0") .. " BASE_URL STORE %[expected_keys%]\n$"
    local url = q(emu.base_url)
    emu:clear_requests()
    for _, case in ipairs({   -- environment, arguments, the complaint
      { "", url .. " s abc", "expected_keys must be a whole number >= 0" },
      { "", url .. " s -1", "expected_keys must be a whole number >= 0" },
      { "KVS_KEYS_PER_FRAME=0", url .. " s", "KVS_KEYS_PER_FRAME must be a whole number from 1 to 1000000, got '0'" },
      { "KVS_MAX_SECONDS=soon", url .. " s",
        "KVS_MAX_SECONDS must be a number of seconds, more than 0 and at most 3600, got 'soon'" },
      -- the token as an argument, as the host took it before: refused, and never echoed
      { "", url .. " " .. q(TOKEN) .. " s " .. N, "too many arguments %(the token comes from APIFY_TOKEN only%)" },
      { "", url .. " " .. q(TOKEN) .. " s", "expected_keys must be a whole number >= 0" },
      { "", url, "missing STORE" },
    }) do
      local out
      out, code = run(case[1] .. " " .. q(host) .. " " .. case[2])
      assert.are.equal(2, code, out)
      assert.matches("^host: " .. case[3] .. usage, out)
      assert.is_nil(out:find(TOKEN, 1, true))
    end
    assert.are.equal(0, #emu:requests())   -- refused before any request

    -- the token reaches the API from the environment: without it, 401
    local out
    out, code = run("KVS_LATE_FRAMES_OK=1 timeout 60 " .. q(host) .. " " .. url .. " s " .. N)
    assert.are.equal(1, code, out)
    assert.matches("error%s+apify%.kvs: [^\n]*%(token%-not%-provided, HTTP 401%)", out)
    assert.is_nil(out:find(TOKEN, 1, true))
  end)

  it("a headless LÖVE 11 game lists every key from love.update", function()
    local where = T.read("command -v love 2>/dev/null")
    assert(where ~= "", "LÖVE is not installed (the game runs under `love`); run: " .. LOVE_INSTALL)

    -- the game finds build/jit/apify/kvs.so of the checkout by itself (examples/love/main.lua)
    local out, code = run("KVS_HEADLESS=1 APIFY_API_BASE_URL=" .. q(emu.base_url) ..
                          " APIFY_TOKEN=" .. q(TOKEN) .. " KVS_STORE=s timeout 60 love examples/love")
    report("LÖVE 11 (LuaJIT), headless, " .. N .. " keys:", out)
    assert.are.equal(0, code, out)
    assert.matches("\n?" .. N .. " keys, " .. BYTES .. " bytes\n", out)
    local worst = tonumber(out:match("worst love%.update ([%d.]+) ms"))
    assert.is_true(worst ~= nil, out)
    T.timed_claim(worst < 8, out)

    -- a failure quits with 1 and prints the error
    out, code = run("KVS_HEADLESS=1 APIFY_API_BASE_URL=" .. q(emu.base_url) ..
                    " APIFY_TOKEN=wrong KVS_STORE=s timeout 60 love examples/love")
    assert.are.equal(1, code, out)
    assert.matches("failed: apify%.kvs: .*%(invalid%-token, HTTP 401%)", out)
  end)
end)

describe("a C host whose Lua allocator fails", function()
  local ctx = T.emulated({ s = T.numbered(1000) }, TOKEN)
  local tmp
  lazy_setup(function() tmp = T.tmpdir() end)
  lazy_teardown(function() T.rmrf(tmp) end)

  -- Runs in oom_host: list_keys fails again and again while it builds its result table
  -- (a table per key) out of the page it decoded, then prints how much the heap grew.
  local SCRIPT = [==[
local cpath, base_url, token, rounds = ...
package.cpath = cpath .. ";" .. package.cpath
local store = require("apify.kvs").new({ base_url = base_url, token = token, max_retries = 0 }):store("s")
local function settle() collectgarbage(); collectgarbage() end
local function failing_list_keys()
  settle()                         -- no garbage to collect that would make room
  fail_after(20000)                -- about a tenth of the 1000-item table
  local ok, page, err = pcall(store.list_keys, store)
  fail_after(nil)
  if ok then error("list_keys did not fail: " .. (page and #page.items .. " items" or tostring(err))) end
  assert(tostring(page):find("not enough memory", 1, true), tostring(page))
end
assert(store:list_keys())          -- connection and caches: made once, before counting
failing_list_keys()
settle()
local before = heap_in_use()
for _ = 1, tonumber(rounds) do failing_list_keys() end
settle()
print("grew " .. (heap_in_use() - before))
]==]

  it("frees list_keys's page when a memory error cuts the result table short", function()
    local host, script, rounds = tmp .. "/oom_host", tmp .. "/list_keys_oom.lua", 20
    local log, code = run("cc -std=c99 -Wall -Wextra -Werror -O1 -o " .. q(host) ..
                          " spec/support/oom_host.c $(pkg-config --cflags --libs lua5.4)")
    assert.are.equal(0, code, "building the host failed:\n" .. log)
    local f = assert(io.open(script, "w"))
    f:write(SCRIPT)
    f:close()

    local out
    out, code = run("timeout 60 " .. q(host) .. " " .. q(script) .. " build/5.4/?.so " ..
                    q(ctx.emu.base_url) .. " " .. q(TOKEN) .. " " .. rounds)
    assert.are.equal(0, code, out)
    -- every call fetched its page before it failed
    assert.are.equal(rounds + 2, #ctx.emu:requests())
    -- a 1000-key page holds about 100 KB outside Lua: one lost per call adds up to megabytes
    local grew = tonumber(out:match("grew (%-?%d+)"))
    assert.is_number(grew, out)
    assert.is_true(grew < 64 * 1024, ("the heap grew %d bytes over %d failed calls"):format(grew, rounds))
  end)
end)
