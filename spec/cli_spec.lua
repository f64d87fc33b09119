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
