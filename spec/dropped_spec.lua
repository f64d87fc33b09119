-- Listings a program drops without close() (a break before Lua 5.4, an error inside the loop)
-- and running out of descriptors. Each case runs in a child process of the same Lua and module
-- under a lowered descriptor limit (ulimit -n), so that what it holds is measured on its own.
local T = require "spec.support.env"

local TOKEN = "apify_api_dropped_SECRET_81"
local PAGE = 200
local MB = 1024                -- VmRSS / VmHWM are in kB

-- A Lua literal of a table of strings, numbers, booleans and tables.
local function literal(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = ("[%s]=%s"):format(literal(k), literal(x)) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- The child's script: `P` is its parameters; it writes back a table literal.
local CHILD = [[
package.cpath = P.cpath .. ";" .. package.cpath
local kvs = require "apify.kvs"
local function status(field)
  local f = assert(io.open("/proc/self/status", "rb"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+) kB"))
end
local function descriptors()
  local f = assert(io.open("/proc/self/stat", "rb"))
  local pid = f:read("*l"):match("^%d+")
  f:close()
  local p = io.popen("ls /proc/" .. pid .. "/fd")
  if not p then return -1 end
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1                   -- ls's own listing of the pipe to it
end
local out = {}
local live = {}                  -- the program's own data: the collector paces itself on it
local pad = ("x"):rep(100)
for i = 1, P.heap_mb * 7000 do live[i] = pad .. i end
collectgarbage("collect")
out.heap_kb = collectgarbage("count")
local store = kvs.new(P.client):store("s")
local before = status("VmRSS")
local held = {}
if P.exhaust then                -- every descriptor taken, and kept
  while true do
    local f = io.open("/dev/null", "rb")
    if not f then break end
    held[#held + 1] = f
  end
end
out.failed = 0
for _ = 1, P.n do
  local ok, err = pcall(function()
    if P.list_keys then
      local page, e = store:list_keys({ limit = 10 })
      if not page then error(e) end
      return
    end
    local s = P.fresh_clients and kvs.new(P.client):store("s") or store
    local next_key, state, control = s:keys(P.opts)
    assert(next_key(state, control))   -- the first key; then dropped without close()
  end)
  if not ok then
    out.failed = out.failed + 1
    if not out.type then
      out.type = type(err) == "table" and err.type or "(not a table)"
      out.message = type(err) == "table" and err.message or tostring(err)
    end
  end
end
for i = 1, #held do held[i]:close() end
held = nil
out.grown_kb = status("VmHWM") - before
out.descriptors = descriptors()
local parts = {}
for k, v in pairs(out) do
  parts[#parts + 1] = ("[%q]=%s"):format(k, type(v) == "string" and ("%q"):format(v) or tostring(v))
end
io.write("return {", table.concat(parts, ","), "}")
]]

describe("listings dropped without close(), descriptors running out", function()
  -- thousands of listings in a few seconds: no rate limit (the bucket is on by default)
  local ctx = T.emulated({ s = T.numbered(2 * PAGE) }, TOKEN, { enforce = false })

  -- Runs the child with `params` under `ulimit -n nofile`; returns what it wrote back.
  local function child(params, nofile)
    local dir = T.tmpdir()
    local script = dir .. "/child.lua"
    params.cpath = T.cpath
    params.client = { base_url = ctx.emu.base_url, token = TOKEN, min_delay = 0.01,
                      max_retries = 1, timeout = 10 * T.slow }
    T.write_file(script, "local P = " .. literal(params) .. "\n" .. CHILD)
    -- (under the asan target, the sanitizer's quarantine would keep what was freed: RSS
    -- would tell nothing of what the collector freed)
    local out = T.read("ulimit -n " .. nofile .. " && ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}"
      .. "quarantine_size_mb=0\" timeout -s KILL " .. math.ceil(120 * T.slow) .. " " .. T.lua
      .. " '" .. script .. "' 2>&1")
    T.rmrf(dir)
    local chunk = (loadstring or load)(out)
    assert(chunk and out:match("^return {"), "the child failed: " .. out:sub(1, 600))
    return chunk()
  end

  -- Each listing takes its first page while the next one is on its way, and is dropped: a
  -- request in flight, two pages and libcurl's handles in C memory, under a userdata of a few
  -- hundred bytes that the collector, pacing itself on the program's live data, has no reason
  -- to collect. They once held a socket and a wake-up descriptor pair each (the 256 allowed
  -- were gone after 80 listings, then "network-error: Couldn't connect to server"), and
  -- 70-100 kB each that the collector never heard of.
  local function drop(n, opts, nofile, heap_mb, fresh_clients)
    local res = child({ n = n, heap_mb = heap_mb, opts = opts, fresh_clients = fresh_clients }, nofile)
    assert.is_true(res.heap_kb > (heap_mb - 2) * MB, "a live heap of " .. res.heap_kb .. " kB")
    assert.are.equal(0, res.failed, ("%d of %d listings failed: %s: %s")
      :format(res.failed, n, tostring(res.type), tostring(res.message)))
    return res
  end
  local SEQUENTIAL = { page_size = PAGE, parallel = 1 }    -- page by page (the default is "auto")
  local PARALLEL = { page_size = PAGE, parallel = 2, rate_limit = 1e6 }

  it("hundreds of them leave the descriptors to the program (ulimit -n 256)", function()
    for _, opts in ipairs({ SEQUENTIAL, PARALLEL }) do
      local res = drop(600, opts, 256, 32)
      -- stdio, the client's connections, its multi handle's pair
      assert.is_true(res.descriptors <= 16, res.descriptors .. " descriptors open at the end")
    end
  end)

  -- A client a program drops keeps its cached connection until it is collected, and its
  -- dropped listing's in flight: when a socket cannot be had, a full collection closes them
  -- before the retry (the live heap, and the few listings, gave the collector no reason to).
  it("hundreds of them on clients dropped too: a collection when descriptors run out", function()
    for _, opts in ipairs({ SEQUENTIAL, PARALLEL }) do drop(600, opts, 256, 32, true) end
  end)

  -- The collector lets garbage grow to about the live heap (its pause, 200 %) before a
  -- cycle starts, and more while it runs; charged with what the listings hold, it frees them
  -- at that pace: memory that grows with the heap (2-2.5 times it on Lua 5.2 and 5.3, less
  -- elsewhere), not with the number of listings (1500 took 100-140 MB, 6-8 times it).
  it("many of them are collected at the pace of the program's own garbage", function()
    for _, opts in ipairs({ SEQUENTIAL, PARALLEL }) do
      local res = drop(1500, opts, 8192, 16)
      assert.is_true(res.grown_kb < 4 * res.heap_kb, ("1500 listings, a live heap of %.1f MB: "
        .. "+%.1f MB"):format(res.heap_kb / MB, res.grown_kb / MB))
    end
  end)

  -- With every descriptor taken (and kept) by the program, no socket can be had: the error
  -- says so, after the retries (the program may close some meanwhile), rather than
  -- "Couldn't connect to server", which sends one looking at the server.
  it("when none are left, the error says too many open files", function()
    for _, params in ipairs({
      { n = 1, opts = { page_size = PAGE, parallel = 1 } },
      { n = 1, opts = { page_size = PAGE, parallel = 2 } },
      { n = 1, list_keys = true },
    }) do
      params.heap_mb, params.exhaust = 0, true
      local res = child(params, 64)
      assert.are.equal(1, res.failed)
      assert.are.equal("network-error", res.type)
      assert.matches("too many open files: no descriptor left for a socket (EMFILE, limit 64)",
        res.message, 1, true)
      assert.matches("(gave up after 1 retry)", res.message, 1, true)
      assert.is_nil(res.message:find(TOKEN, 1, true))
    end
  end)
end)
