-- The scripts in examples/ run as a user would run them, against the emulator.
local T = require "spec.support.env"

describe("examples", function()
  local emu, env

  lazy_setup(function()
    emu = T.start_emulator({ storage = "examples/storage", token = "demo-token" })
    env = "APIFY_API_BASE_URL='" .. emu.base_url .. "' APIFY_TOKEN='demo-token' " ..
          "LUA_CPATH='" .. T.cpath .. ";;' LUA_PATH='./?.lua;;' "
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
  end)

  local function run(script, args)
    return T.read(env .. T.lua .. " examples/" .. script .. " " .. args .. " 2>&1; echo \"exit=$?\"")
  end

  it("list_keys.lua lists the demo store", function()
    local out = run("list_keys.lua", "demo")
    assert.matches("\n25 keys, 1192 bytes\nexit=0", out)
    assert.matches("%s+70  img%-0001\n", out)
    assert.matches("it's%-%(final%)!", out)
  end)

  it("list_keys.lua filters by prefix", function()
    local out = run("list_keys.lua", "demo report-")
    assert.matches("\n6 keys, 198 bytes\nexit=0", out)
  end)

  it("list_keys.lua reports an error and exits 1", function()
    local out = run("list_keys.lua", "missing")
    assert.matches("apify%.kvs: .*%(record%-not%-found, HTTP 404%)\nexit=1", out)
  end)

  it("resume.lua walks the store in batches", function()
    local out = run("resume.lua", "demo 10")
    assert.matches("batch 2: 10 keys, cursor now \"report%-2026%-01\"", out)
    assert.matches("25 keys in 3 batches\nexit=0", out)
  end)

  it("one_page.lua prints one page and the next cursor", function()
    local out = run("one_page.lua", "demo 3")
    assert.matches("isTruncated\ttrue\tnextExclusiveStartKey\tSDK_CRAWLER_STATISTICS_0\nexit=0", out)
    local bad = run("one_page.lua", "nope")
    assert.matches("failed: Key%-value store was not found %(type record%-not%-found, HTTP 404%)\nexit=1", bad)
  end)
end)
