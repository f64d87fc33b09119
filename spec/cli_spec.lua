-- bin/apify-kvs, run as a user runs it, against the emulator.
local T = require "spec.support.env"

local KEYS = T.numbered(2500)
KEYS[#KEYS + 1] = "img-0001"
KEYS[#KEYS + 1] = "img-0002"
KEYS[#KEYS + 1] = 'odd "quoted"\\key'

describe("apify-kvs", function()
  local ctx = T.emulated({ big = KEYS }, "cli-token")

  -- runs the tool; returns stdout, stderr, exit code
  local function run(args, env)
    local tmp = os.tmpname()
    local cmd = "APIFY_TOKEN='cli-token' APIFY_API_BASE_URL='" .. ctx.emu.base_url .. "' " ..
      "LUA_CPATH='" .. T.cpath .. ";;' " .. (env or "") .. " " .. T.lua .. " bin/apify-kvs " ..
      args .. " 2>" .. tmp .. "; echo \"exit=$?\""
    local out = T.read(cmd)
    local f = assert(io.open(tmp, "rb"))
    local err = f:read("*a")
    f:close()
    os.remove(tmp)
    local code = tonumber(out:match("exit=(%d+)%s*$"))
    return (out:gsub("exit=%d+%s*$", "")), err, code
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
    local sorted = {}
    for i, k in ipairs(KEYS) do sorted[i] = k end
    table.sort(sorted)
    assert.are.same(sorted, lines(out))
  end)

  it("passes --prefix, --limit, --parallel and --base-url on", function()
    local out, _, code = run("keys big --prefix img- --base-url " .. ctx.emu.base_url, "APIFY_API_BASE_URL=http://127.0.0.1:1")
    assert.are.equal(0, code)
    assert.are.equal("img-0001\nimg-0002\n", out)
    out = run("keys big --limit=3")
    assert.are.equal("img-0001\nimg-0002\nk00001\n", out)
    local all = run("keys big")
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

  it("shows progress on stderr only when asked or on a terminal, counting retries", function()
    ctx.emu:faults{ { kind = "status", status = 503 } }
    local out, err, code = run("keys big --progress")
    assert.are.equal(0, code)
    assert.are.equal(#KEYS, #lines(out))
    assert.matches(#KEYS .. " keys, 3 pages, %d+ keys/s, 1 retries\n$", err)
    _, err = run("keys big")     -- stderr is a file here: no progress line
    assert.are.equal("", err)
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

  it("exits 2 on usage errors, and rejects --token saying why", function()
    local _, err, code = run("keys big --token secret")
    assert.are.equal(2, code)
    assert.matches("shell history", err)
    assert.matches("APIFY_TOKEN", err)
    for _, args in ipairs({ "", "list big", "keys", "keys big extra", "keys big --limit x",
                            "keys big --parallel 0", "keys big --bogus", "keys big --prefix" }) do
      _, err, code = run(args)
      assert.are.equal(2, code, args)
      assert.matches("^apify%-kvs: ", err)
    end
  end)

  it("prints --help and --version", function()
    local out, _, code = run("--help")
    assert.are.equal(0, code)
    assert.matches("usage: apify%-kvs keys STORE", out)
    assert.matches("APIFY_TOKEN", out)
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
