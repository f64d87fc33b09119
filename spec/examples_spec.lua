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

  before_each(function()
    emu:clear_faults()
    emu:clear_requests()
  end)

  -- (under `timeout`: a script that never ends fails with exit=124 instead of hanging the suite)
  local function run(script, args)
    return T.read(env .. "timeout 30 " .. T.lua .. " examples/" .. script .. " " .. args ..
                  " 2>&1; echo \"exit=$?\"")
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

  it("resume.lua refuses a batch that is not an integer >= 1 with its usage line and exit 2", function()
    -- batch 0 asked for limit = 0 again and again: every batch empty and "full", for ever
    for _, bad in ipairs({ "0", "-3", "2.5", "ten", "inf" }) do
      local out = run("resume.lua", "demo " .. bad)
      assert.matches("^resume%.lua: batch must be an integer >= 1, got " .. bad:gsub("%p", "%%%0") ..
                     "\nusage: resume%.lua <store%-id> %[batch%] %[retries%]\n.*exit=2\n$", out)
    end
    assert.matches("^resume%.lua: missing <store%-id>\nusage: resume%.lua .*exit=2\n$", run("resume.lua", ""))
    assert.matches("^resume%.lua: too many arguments\nusage: .*exit=2\n$", run("resume.lua", "demo 10 2 x"))
    for _, bad in ipairs({ "-1", "x", "101" }) do
      assert.matches("^resume%.lua: retries must be an integer in 0%.%.100, got " .. bad:gsub("%p", "%%%0") ..
                     "\nusage: resume%.lua <store%-id> %[batch%] %[retries%]\n.*exit=2\n$", run("resume.lua", "demo 10 " .. bad))
    end
  end)

  it("resume.lua resumes a listing that failed from the last key it saw", function()
    -- the first batch's page comes through, the second batch's fails (no retries), once
    emu:faults{ { kind = "stall", seconds = 0 }, { kind = "status", status = 500 } }
    local out = run("resume.lua", "demo 10 0")
    assert.matches('^batch 1: 10 keys, cursor now "img%-0005"\n' ..
                   "listing failed after 0 keys: apify%.kvs: [^\n]*%(internal%-server%-error, HTTP 500%)\n" ..
                   'resuming after "img%-0005"\n' ..
                   'batch 2: 10 keys, cursor now "report%-2026%-01"\n' ..
                   'batch 3: 5 keys, cursor now "report%-2026%-06"\n' ..
                   "25 keys in 3 batches\nexit=0\n$", out)
    -- the failed request and the one resuming it both start after img-0005
    local reqs = emu:requests()
    assert.are.equal(4, #reqs)
    assert.are.same({ 200, 500, 200, 200 }, { reqs[1].status, reqs[2].status, reqs[3].status, reqs[4].status })
    assert.is_nil(reqs[1].args.exclusiveStartKey)
    assert.are.equal("img-0005", reqs[2].args.exclusiveStartKey)
    assert.are.equal("img-0005", reqs[3].args.exclusiveStartKey)
  end)

  it("resume.lua gives up after three failed listings in a row, exit 1", function()
    emu:faults{ { kind = "status", status = 503, times = 3 } }
    local out = run("resume.lua", "demo 10 0")
    assert.matches("^listing failed after 0 keys: [^\n]*HTTP 503%)\nstarting again\n" ..
                   ".*\ngiving up after 3 failures in a row; 0 keys listed, last none\nexit=1\n$", out)
  end)

  it("the examples refuse an empty store id or a bad APIFY_API_BASE_URL with their usage line", function()
    for _, script in ipairs({ "list_keys.lua", "resume.lua", "one_page.lua" }) do
      local name = script:gsub("%p", "%%%0")
      assert.matches("^" .. name .. ": <store%-id> must not be empty\nusage: " .. name .. " .*exit=2\n$",
                     run(script, "''"))
      local out = T.read("APIFY_API_BASE_URL=ftp://example.com " .. env:gsub("APIFY_API_BASE_URL='[^']*' ", "") ..
                         T.lua .. " examples/" .. script .. " demo 2>&1; echo \"exit=$?\"")
      assert.matches("^" .. name .. ": bad APIFY_API_BASE_URL or APIFY_TOKEN: option 'base_url' must start " ..
                     "with http:// or https://\nusage: " .. name .. " .*exit=2\n$", out)
    end
  end)

  it("one_page.lua and list_keys.lua check their arguments the same way", function()
    for _, bad in ipairs({ "0", "1001", "x" }) do
      assert.matches("^one_page%.lua: limit must be an integer in 1%.%.1000, got " .. bad ..
                     "\nusage: one_page%.lua <store%-id> %[limit%]\n.*exit=2\n$", run("one_page.lua", "demo " .. bad))
    end
    assert.matches("^one_page%.lua: missing <store%-id>\nusage: .*exit=2\n$", run("one_page.lua", ""))
    assert.matches("^list_keys%.lua: missing <store%-id>\nusage: list_keys%.lua <store%-id> %[prefix%]\n.*exit=2\n$",
                   run("list_keys.lua", ""))
    assert.matches("^list_keys%.lua: too many arguments\nusage: .*exit=2\n$", run("list_keys.lua", "demo a b"))
  end)

  it("every example answers --help with its usage, exit 0", function()
    for _, script in ipairs({ "list_keys.lua", "resume.lua", "one_page.lua" }) do
      for _, flag in ipairs({ "--help", "-h" }) do
        local out = run(script, flag)
        assert.matches("^usage: " .. script:gsub("%p", "%%%0") .. " <store%-id>.*\nexit=0\n$", out)
      end
    end
  end)

  it("one_page.lua prints one page and the next cursor", function()
    local out = run("one_page.lua", "demo 3")
    assert.matches("isTruncated\ttrue\tnextExclusiveStartKey\tSDK_CRAWLER_STATISTICS_0\nexit=0", out)
    local bad = run("one_page.lua", "nope")
    assert.matches("failed: Key%-value store was not found %(type record%-not%-found, HTTP 404%)\nexit=1", bad)
  end)
end)

-- make demo (examples/demo.sh) prints each command it runs and the environment they need; pasted
-- into a fresh shell with only that environment, while an emulator runs, each does what it did
-- in the demo.
describe("make demo's commands", function()
  local tmp, emu
  local interpreter = T.lua:match("^%S+$") or "lua5.4"     -- the demo runs one interpreter
  -- (with the build of that interpreter, not the sanitizer's: none preloaded into its shell)
  local demo = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS LUA=" .. interpreter ..
               " timeout 60 bash examples/demo.sh"

  lazy_setup(function()
    tmp = T.tmpdir()
    -- what `make emulator` leaves running, in its own run directory
    emu = T.start_emulator({ storage = "examples/storage", token = "demo-token", rundir = tmp .. "/emulator" })
  end)
  lazy_teardown(function()
    if emu then emu:stop() end
    T.rmrf(tmp)
  end)

  -- the demo's export line, and each "# what:  command" (after a blank line) with the output
  -- that followed it up to the next blank line
  local function parse(out)
    local export, steps, step, prev = nil, {}, nil, nil
    for line in out:gmatch("([^\n]*)\n") do
      local command = prev == "" and line:match("^# [^:]+:  (.+)$")
      if line:match("^export ") then
        export = line
      elseif command then
        step = { command = command, output = "" }
        steps[#steps + 1] = step
      elseif line == "" then
        step = nil
      elseif step then
        step.output = step.output .. line .. "\n"
      end
      prev = line
    end
    return export, steps
  end

  it("work pasted into a fresh shell with only the export line it prints", function()
    local out = T.read("EMULATOR_RUNDIR=" .. tmp .. "/emulator " .. demo .. " 2>&1; echo \"exit=$?\"")
    assert.matches("exit=0%s*$", out)
    out = out:gsub("exit=0%s*$", "")
    assert.matches("left running by make emulator", out)
    local export, steps = parse(out)
    assert.are.equal("export LUA_CPATH='build/" .. (interpreter == "luajit" and "jit" or interpreter:match("%d%.%d")) ..
                     "/?.so;;' APIFY_API_BASE_URL='" .. emu.base_url .. "' APIFY_TOKEN='demo-token'", export)
    assert.are.equal(6, #steps, out)
    for _, step in ipairs(steps) do
      local pasted = T.read("env -i PATH=\"$PATH\" bash -c " .. T.sh_quote(export .. "\n" .. step.command) ..
                            " 2>&1; echo \"exit=$?\"")
      local expected_exit = step.command:find("no-such-store", 1, true) and 1 or 0
      assert.are.equal(step.output .. "exit=" .. expected_exit .. "\n", pasted, step.command)
    end
    assert.matches("25 keys, 1192 bytes", steps[1].output)
    assert.matches('{"key":"report%-2026%-06"', steps[6].output)
  end)

  it("say how to keep an emulator running when the demo starts its own; make emulator prints the same line", function()
    local out = T.read(demo .. " 2>&1; echo \"exit=$?\"")
    assert.matches("exit=0%s*$", out)
    assert.matches("stopped when\n# this demo ends%. To run the commands yourself, keep one running: make emulator", out)
    assert.matches("\nexport LUA_CPATH='[^\n]+' APIFY_API_BASE_URL='http://127%.0%.0%.1:%d+' APIFY_TOKEN='demo%-token'\n", out)

    -- demo.sh start (make emulator) finds the running one and prints its line
    local started = T.read("EMULATOR_RUNDIR=" .. tmp .. "/emulator " .. demo .. " start 2>&1")
    assert.matches("already running at " .. emu.base_url:gsub("%p", "%%%0"), started)
    assert.matches("\nexport [^\n]+APIFY_API_BASE_URL='" .. emu.base_url:gsub("%p", "%%%0") .. "'", started)
  end)
end)
