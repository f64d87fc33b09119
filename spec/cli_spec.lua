-- bin/apify-kvs, run as a user runs it, against the emulator.
local T = require "spec.support.env"

local socket = require "socket"

local KEYS = T.numbered(2500)
KEYS[#KEYS + 1] = "img-0001"
KEYS[#KEYS + 1] = "img-0002"
KEYS[#KEYS + 1] = 'odd "quoted"\\key'

-- Long keys: a page of their JSON lines is about 350 KB, many times what a pipe holds
local WIDE = T.numbered(2100, "w" .. ("-"):rep(150))

-- Keys a hostile server could send, and how plain output writes them (byte order)
local HOSTILE = {
  { "back\\slash", [[back\\slash]] }, { "bad\255byte", [[bad\xffbyte]] },
  { "c1\194\155x", [[c1\xc2\x9bx]] }, { "cr\rx", [[cr\rx]] }, { "del\127x", [[del\x7fx]] },
  { "esc\27[31mred", [[esc\x1b[31mred]] }, { "evil\nkey", [[evil\nkey]] }, { "tab\tx", [[tab\tx]] },
  { "x\1y", [[x\x01y]] }, { "\195\169t\195\169", "\195\169t\195\169" },   -- UTF-8 as it is,
  { "\226\130\172uro", "\226\130\172uro" },                               -- 0x82 in it too
}
local hostile_keys = {}
for i, k in ipairs(HOSTILE) do hostile_keys[i] = k[1] end

-- A store shared by signed URLs, as in spec/emulator_spec.lua: the secret and store id, and a
-- keys signature that never expires, made by @apify/utilities (the library apify-client signs with).
local SIGNED_METADATA = '{"id":"SignedStore01","name":"signed","urlSigningSecretKey":"k3y-s3cret"}'
local KEYS_SIGNATURE = "MC4wLjFNSUppd084UFlpdklHb0NFQW9tWg"

describe("apify-kvs", function()
  local ctx = T.emulated({ big = KEYS, wide = WIDE, hostile = hostile_keys, slow = { "s1" },
                           signed = { "a", "doc-1" } }, "cli-token")
  lazy_setup(function()
    T.write_file(ctx.storage .. "/key_value_stores/signed/__metadata__.json", SIGNED_METADATA)
  end)

  -- The shell command running the tool with args (its stdout and stderr not redirected).
  local function command(args, env)
    return "APIFY_TOKEN='cli-token' APIFY_API_BASE_URL='" .. ctx.emu.base_url .. "' " ..
      "LUA_CPATH='" .. T.cpath .. ";;' " .. (env or "") .. " " .. T.lua .. " bin/apify-kvs " .. args
  end

  -- runs the tool; returns stdout, stderr, exit code
  local function run(args, env)
    local tmp = os.tmpname()
    local out = T.read(command(args, env) .. " 2>" .. tmp .. "; echo \"exit=$?\"")
    local err = T.read_file(tmp)
    os.remove(tmp)
    local code = tonumber(out:match("exit=(%d+)%s*$"))
    return (out:gsub("exit=%d+%s*$", "")), err, code
  end

  -- the API requests of this test for one store
  local function requests(store)
    local got = {}
    for _, r in ipairs(ctx.emu:requests()) do
      if r.store == store then got[#got + 1] = r end
    end
    return got
  end

  local function lines(s)
    local t = {}
    for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
    return t
  end

  it("prints every key, one a line, in byte order, and nothing on stderr", function()
    local out, err, code = run("keys big")
    assert.are.equal(0, code)
    assert.are.equal("", err)
    local printed = {}      -- the one backslash written as \\
    for i, k in ipairs(KEYS) do printed[i] = k:gsub("\\", "\\\\") end
    table.sort(printed)
    assert.are.same(printed, lines(out))
  end)

  it("escapes control characters, backslashes and bytes that are not UTF-8 in plain output", function()
    local out, err, code = run("keys hostile")
    assert.are.equal(0, code)
    assert.are.equal("", err)
    local want = {}
    for i, k in ipairs(HOSTILE) do want[i] = k[2] end
    assert.are.same(want, lines(out))
    -- --json writes the keys themselves (JSON escapes them)
    out = run("keys hostile --json --limit 7")
    assert.matches('"key":"evil\\nkey"', out, 1, true)
  end)

  it("resumes after a key as plain output printed it with --start-after", function()
    local out, _, code = run("keys big --start-after k02499")
    assert.are.equal(0, code)
    assert.are.equal('k02500\nodd "quoted"\\\\key\n', out)
    -- every hostile key, as printed, resumes right after itself
    local printed = lines((run("keys hostile")))
    for i = 1, #printed - 1 do
      out, _, code = run("keys hostile --limit 1 --start-after " .. T.sh_quote(printed[i]))
      assert.are.equal(0, code, printed[i])
      assert.are.equal(printed[i + 1] .. "\n", out, printed[i])
    end
    local err
    out, err, code = run([[keys big --start-after 'a\qb']])
    assert.are.equal(2, code)
    assert.matches([[^apify%-kvs: %-%-start%-after takes a key as plain output writes it, where '\q' is no escape]], err)
  end)

  it("passes --prefix, --limit, --parallel and --base-url on", function()
    local out, _, code = run("keys big --prefix img- --base-url " .. ctx.emu.base_url, "APIFY_API_BASE_URL=http://127.0.0.1:1")
    assert.are.equal(0, code)
    assert.are.equal("img-0001\nimg-0002\n", out)
    out = run("keys big --limit=3")
    assert.are.equal("img-0001\nimg-0002\nk00001\n", out)
    local all = run("keys big")
    out, _, code = run("keys big --parallel auto")
    assert.are.equal(0, code)
    assert.are.equal(all, out)
    out, _, code = run("keys big --parallel 4")
    assert.are.equal(0, code)
    assert.are.equal(all, out)
  end)

  it("writes JSON lines with --json, with or without lua-cjson", function()
    for _, env in ipairs({ "", "LUA_PATH='spec/support/no_cjson/?.lua;;'" }) do
      local out, _, code = run("keys big --json --prefix odd", env)
      assert.are.equal(0, code)
      assert.are.equal('{"key":"odd \\"quoted\\"\\\\key","size":' .. (#KEYS % 7) ..
        ',"url":"' .. ctx.emu.base_url .. '/v2/key-value-stores/big/records/' ..
        'odd%20%22quoted%22%5Ckey"}\n', out)
    end
  end)

  it("shows progress on stderr only when asked or on a terminal, and each retry on it", function()
    ctx.emu:faults{ { kind = "status", status = 503, store = "big" } }
    local out, err, code = run("keys big --progress")
    assert.are.equal(0, code)
    assert.are.equal(#KEYS, #lines(out))
    assert.matches("\r0 keys, 0 pages, 0 keys/s, retry 1 of 8 in %d+%.%d s: [^\r\n]*HTTP 503%)\27%[K\r", err)
    assert.matches(#KEYS .. " keys, 3 pages, %d+ keys/s, 1 retries\n$", err)
    _, err = run("keys big")     -- stderr is a file here: no progress line
    assert.are.equal("", err)
  end)

  it("shows each retry as a line of its own without a progress line, and goes on", function()
    ctx.emu:faults{ { kind = "status", status = 503, store = "big", times = 2 } }
    local out, err, code = run("keys big --limit 5 --max-retries 2")
    assert.are.equal(0, code)
    assert.are.equal(5, #lines(out))
    local got = lines(err)
    assert.are.equal(2, #got)
    for i = 1, 2 do
      assert.matches("^apify%-kvs: retry " .. i .. " of 2 in %d+%.%d s: .*HTTP 503%)$", got[i])
    end
  end)

  it("shows the first retry against an unreachable address as it starts, long before giving up", function()
    -- with the default 8 retries the backoff alone takes minutes: the line must come first
    local errfile = os.tmpname()
    local pid = tonumber(T.read(command("keys big --base-url http://127.0.0.1:" .. T.free_port()) ..
      " >/dev/null 2>" .. errfile .. " & echo $!"):match("%d+"))
    local text, alive = "", true
    local deadline = socket.gettime() + 60 * T.slow
    while alive and not text:find("\n") and socket.gettime() < deadline do
      socket.sleep(0.05)
      text = T.read_file(errfile) or ""
      alive = T.alive(pid)
    end
    alive = T.alive(pid)
    T.sh("kill " .. pid .. " 2>/dev/null")
    os.remove(errfile)
    assert.is_true(alive, "the tool ended before showing a retry: " .. text)
    assert.matches("^apify%-kvs: retry 1 of 8 in %d+%.%d s: network error: .*%(network%-error%)\n$", text)
  end)

  it("makes one attempt with --max-retries 0", function()
    ctx.emu:faults{ { kind = "status", status = 503, store = "big", times = 3 } }
    local out, err, code = run("keys big --max-retries 0")
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("^apify%-kvs: [^\n]*HTTP 503%)\n$", err)
    assert.are.equal(1, #requests("big"))
    -- unreachable: the error at once, no retry
    out, err, code = run("keys big --max-retries 0 --base-url http://127.0.0.1:" .. T.free_port())
    assert.are.equal(1, code)
    assert.matches("^apify%-kvs: network error: [^\n]*\n$", err)
  end)

  it("gives up on an attempt after --timeout seconds", function()
    ctx.emu:faults{ { kind = "stall", seconds = 10 * T.slow, store = "slow" } }
    local _, err, code = run("keys slow --timeout 0.2 --max-retries 0")
    assert.are.equal(1, code)
    assert.matches("^apify%-kvs: [^\n]*%(timeout%)\n$", err)
  end)

  it("makes no retry that would end after --max-elapsed seconds", function()
    ctx.emu:faults{ { kind = "status", status = 503, store = "big", times = 3 } }
    -- the first wait is at least min_delay, 0.5 s
    local _, err, code = run("keys big --max-elapsed 0.1")
    assert.are.equal(1, code)
    assert.matches("^apify%-kvs: [^\n]*HTTP 503%)\n$", err)
    assert.are.equal(1, #requests("big"))
  end)

  it("lists a store shared by signed URLs with --signature and no token", function()
    local out, err, code = run("keys signed --signature " .. KEYS_SIGNATURE, "APIFY_TOKEN=")
    assert.are.equal(0, code)
    assert.are.equal("", err)
    assert.are.equal("a\ndoc-1\n", out)
    out, err, code = run("keys signed", "APIFY_TOKEN=")
    assert.are.equal(1, code)
    assert.matches("HTTP 401%)\n$", err)
  end)

  it("passes --ca-file on to the client as its ca_file", function()
    local out, err, code = run("keys big --limit 1 --ca-file /etc/ssl/certs/ca-certificates.crt")
    assert.are.equal(0, code, err)
    assert.are.equal("img-0001\n", out)
    -- the module checks the file: its error comes back in the flag's name
    out, err, code = run("keys big --limit 1 --ca-file /no/such/ca.pem")
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("^apify%-kvs: %-%-ca%-file: .*/no/such/ca%.pem", err)
  end)

  it("exits 1 with one error line when the listing fails", function()
    local out, err, code = run("keys missing")
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.are.equal("apify-kvs: Key-value store was not found (record-not-found, HTTP 404)\n", err)
    out, err, code = run("keys big", "APIFY_TOKEN=wrong")
    assert.are.equal(1, code)
    assert.are.equal(1, #lines(err))
  end)

  it("exits 1 with one error line when stdout cannot be written", function()
    for _, args in ipairs({ "keys big --json", "keys big", "--help", "--version" }) do
      local _, err, code = run(args .. " >/dev/full")
      assert.are.equal(1, code, args)
      assert.are.equal("apify-kvs: cannot write to stdout: No space left on device\n", err, args)
    end
  end)

  it("ends quietly, and stops listing, when the reader of its output goes away", function()
    -- head -1 leaves while the first page is written
    local tmp = os.tmpname()
    local got = T.read("{ " .. command("keys wide --json") .. " 2>" .. tmp .. "; echo $? >" .. tmp ..
      ".code; } | head -1")
    local err, code = T.read_file(tmp), T.read_file(tmp .. ".code")
    os.remove(tmp)
    os.remove(tmp .. ".code")
    assert.are.equal(1, got:find('{"key":"' .. WIDE[1] .. '"', 1, true))
    assert.are.equal("", err)
    assert.are.equal("141\n", code)     -- the status a SIGPIPE gives
    -- (the second page may have been fetched ahead; nothing asked for the third)
    for _, r in ipairs(requests("wide")) do
      assert.are_not.equal(WIDE[2000], r.args.exclusiveStartKey, "went on listing after the reader left")
    end
  end)

  it("reports mistakes in APIFY_API_BASE_URL and APIFY_TOKEN as such", function()
    local _, err, code = run("keys big", "APIFY_API_BASE_URL=ftp://example.com")
    assert.are.equal(2, code)
    assert.matches("^apify%-kvs: APIFY_API_BASE_URL: must start with http:// or https://\n", err)
    _, err, code = run("keys big --base-url http://", "APIFY_API_BASE_URL=ftp://example.com")
    assert.are.equal(2, code)
    assert.matches("^apify%-kvs: %-%-base%-url: has no host\n", err)
    for _, bad in ipairs({ "\"$(printf 'sec\\001ret')\"", "'sec ret'", "\"$(printf 'sec\\303\\251ret')\"" }) do
      _, err, code = run("keys big", "APIFY_TOKEN=" .. bad)
      assert.are.equal(2, code)
      assert.matches("^apify%-kvs: APIFY_TOKEN: must be visible ASCII %(0x21%-0x7E%)", err)
      assert.is_nil(err:find("sec", 1, true))
    end
    _, err, code = run("keys big --timeout 0")
    assert.are.equal(2, code)
    assert.matches("^apify%-kvs: %-%-timeout: must be a number in %(0, 1e9%]\n", err)
  end)

  it("exits 2 on usage errors, and rejects --token saying why", function()
    local _, err, code = run("keys big --token secret")
    assert.are.equal(2, code)
    assert.matches("shell history", err)
    assert.matches("APIFY_TOKEN", err)
    for _, args in ipairs({ "", "list big", "keys", "keys big extra", "keys big --limit x",
                            "keys big --parallel 0", "keys big --bogus", "keys big --prefix",
                            "keys big --timeout x", "keys big --max-retries -1",
                            "keys big --max-retries 101", "keys big --max-elapsed 1e3" }) do
      _, err, code = run(args)
      assert.are.equal(2, code, args)
      assert.matches("^apify%-kvs: ", err)
    end
  end)

  it("prints --help listing every option, and --version", function()
    local out, _, code = run("--help")
    assert.are.equal(0, code)
    assert.matches("usage: apify%-kvs keys STORE", out)
    assert.matches("APIFY_TOKEN", out)
    for _, flag in ipairs({ "--prefix", "--collection", "--start-after", "--limit", "--parallel",
                            "--signature", "--json", "--base-url", "--ca-file", "--timeout",
                            "--max-retries", "--max-elapsed", "--progress", "--no-progress",
                            "--version", "--help" }) do
      assert.matches("\n  [^\n]*" .. flag:gsub("%-", "%%-") .. " ", out)
    end
    assert.matches("\\xHH", out, 1, true)
    out, _, code = run("--version")
    assert.are.equal(0, code)
    assert.are.equal(T.kvs._VERSION .. "\n", out)
  end)
end)

-- Run from a checkout (bin/../src/kvs.h), the tool loads the module `make` built there for the
-- interpreter running it when none other loads, and otherwise names the command to run.
describe("apify-kvs run from a checkout", function()
  local tmp, id
  local function name(v) return v == "jit" and "LuaJIT" or "Lua " .. v end
  local function interpreter(v) return v == "jit" and "luajit" or "lua" .. v end
  local function lua_id(lua)
    return T.read(lua .. " -e \"io.write(jit and 'jit' or _VERSION:match('%d+%.%d+'))\"")
  end

  -- a checkout in tmp/<dir> holding bin/apify-kvs and src/kvs.h and the builds listed
  local function checkout(dir, builds)
    local root = tmp .. "/" .. dir
    assert(T.sh("mkdir -p " .. root .. "/bin " .. root .. "/src && cp bin/apify-kvs " .. root ..
      "/bin/ && : >" .. root .. "/src/kvs.h"))
    for v, so in pairs(builds) do
      assert(T.sh("mkdir -p " .. root .. "/build/" .. v .. "/apify && ln -s " .. so .. " " ..
        root .. "/build/" .. v .. "/apify/kvs.so"))
    end
    return root
  end

  -- runs `lua tool args` where nothing is on the module path; returns stdout, stderr, exit code
  local function run(lua, tool, args)
    local errfile = os.tmpname()
    local out = T.read("LUA_CPATH='/nonexistent/?.so' " .. lua .. " " .. tool .. " " .. args ..
      " 2>" .. errfile .. "; echo \"exit=$?\"")
    local err = T.read_file(errfile)
    os.remove(errfile)
    return (out:gsub("exit=%d+%s*$", "")), err, tonumber(out:match("exit=(%d+)%s*$"))
  end

  lazy_setup(function()
    tmp = T.tmpdir()
    id = lua_id(T.lua)
  end)
  lazy_teardown(function() T.rmrf(tmp) end)

  it("loads build/<its Lua>/apify/kvs.so of the checkout", function()
    local so = T.read("pwd"):gsub("%s+$", "") .. "/" .. T.cpath:gsub("%?", "apify/kvs")
    local root = checkout("built", { [id] = so })
    local out, err, code = run(T.lua, root .. "/bin/apify-kvs", "--version")
    assert.are.equal(0, code, err)
    assert.are.equal(T.kvs._VERSION .. "\n", out)
  end)

  it("names the command when its Lua has no build there", function()
    local other = id == "5.4" and "jit" or "5.4"
    local root = checkout("other", { [other] = "/dev/null" })
    local tool = root .. "/bin/apify-kvs"
    local out, err, code = run(T.lua, tool, "keys s")
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.are.equal("apify-kvs: apify.kvs is not built for " .. name(id) .. " (the Lua running this): " ..
      "run it as '" .. interpreter(other) .. " " .. tool .. "', or build it with 'make -C " .. root ..
      " build/" .. id .. "/apify/kvs.so'\n", err)
    root = checkout("broken", { [id] = "/dev/null" })
    _, err, code = run(T.lua, root .. "/bin/apify-kvs", "keys s")
    assert.are.equal(1, code)
    assert.matches("^apify%-kvs: " .. name(id):gsub("%.", "%%.") .. " cannot load " ..
      root:gsub("%p", "%%%0") .. "/build/" .. id:gsub("%.", "%%.") .. "/apify/kvs%.so %([^\n]+%): " ..
      "rebuild it with 'make %-C " .. root:gsub("%p", "%%%0") .. " build/[^']+'\n$", err)
    root = checkout("none", {})
    _, err, code = run(T.lua, root .. "/bin/apify-kvs", "keys s")
    assert.are.equal(1, code)
    assert.are.equal("apify-kvs: apify.kvs is not built: run 'make -C " .. root .. " build/" .. id ..
      "/apify/kvs.so'\n", err)
    -- --help needs no module
    out, err, code = run(T.lua, root .. "/bin/apify-kvs", "--help")
    assert.are.equal(0, code, err)
    assert.matches("^usage: apify%-kvs keys STORE", out)
  end)

  it("says how to install the module when it is not in a checkout", function()
    assert(T.sh("mkdir -p " .. tmp .. "/elsewhere && cp bin/apify-kvs " .. tmp .. "/elsewhere/"))
    local _, err, code = run(T.lua, tmp .. "/elsewhere/apify-kvs", "keys s")
    assert.are.equal(1, code)
    assert.are.equal("apify-kvs: " .. name(id) .. " cannot load the module apify.kvs (not installed): " ..
      "install it for this Lua ('luarocks --lua-version " .. (id == "jit" and "5.1" or id) ..
      " install apify-kvs' or 'make install LUA=" .. id .. "')\n", err)
  end)

  it("runs as bin/apify-kvs through its shebang, or names the command that does", function()
    assert.are.equal("#!/usr/bin/env lua\n", T.read("head -1 bin/apify-kvs"))
    local v = lua_id("lua")
    assert.is_true(v ~= "", "no interpreter named lua on PATH")
    local out, err, code = run("", "bin/apify-kvs", "--version")
    if code ~= 0 then
      -- this checkout has no build for the Lua called lua: the message names one that runs
      local cmd = err:match("^apify%-kvs: apify%.kvs is not built for " .. name(v):gsub("%.", "%%.") ..
        " %(the Lua running this%): run it as '([^']+)', or build it with 'make build/" ..
        v:gsub("%.", "%%.") .. "/apify/kvs%.so'\n$")
      assert.is_string(cmd, err)
      out, err, code = run("", cmd, "--version")
    end
    assert.are.equal(0, code, err)
    assert.are.equal(T.kvs._VERSION .. "\n", out)
  end)
end)
