-- store:job{ parallel = n } — key ranges side by side without waiting: poll() does the I/O that
-- is ready on every range's transfer and hands out the keys that have arrived, in key order.
local T = require "spec.support.env"
local socket = require "socket"

local TOKEN = "apify_api_pjob_SECRET_47"
local FAST = 2000            -- rate_limit where the rate is not what is tested (default: 60/s)

local function fmt(pattern, n)
  local t = {}
  for i = 1, n do t[i] = pattern:format(i) end
  return t
end

local function with(opts, extra)
  local t = {}
  for k, v in pairs(opts) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("store:job{ parallel = n }", function()
  local ctx = T.emulated({
    long = fmt("item-%07d", 3000),
    small = { "a", "b", "c" },
    thirty = fmt("k%02d", 30),
  }, TOKEN, { enforce = false })    -- no bucket: the tests run at rate_limit = FAST and 1e6
  local emu, client, store
  lazy_setup(function() emu, client = ctx.emu, ctx.client; store = client:store("long") end)
  after_each(function()
    emu:clear_faults()
    emu:config({ delay = 0 })
  end)

  -- a frame loop: poll every ~2 ms until the job settles
  local function frames(job, per_frame)
    local keys, sizes, urls, worst, polls = {}, {}, {}, 0, 0
    local deadline = socket.gettime() + 30 * T.slow
    while job:status() == "running" do
      local t0 = socket.gettime()
      for key, size, url in job:poll(per_frame) do
        keys[#keys + 1], sizes[#sizes + 1], urls[#urls + 1] = key, size, url
      end
      local dt = socket.gettime() - t0
      if dt > worst then worst = dt end
      polls = polls + 1
      assert(socket.gettime() < deadline, "job did not finish")
      socket.sleep(0.002)
    end
    return keys, worst, polls, sizes, urls
  end

  it("lists every key once, in byte order, as the sequential listing does", function()
    local keys, sizes, urls = T.collect(store, { page_size = 100 })
    emu:clear_requests()
    local job = store:job({ page_size = 100, parallel = 8, rate_limit = FAST })
    local pkeys, _, _, psizes, purls = frames(job)
    assert.are.equal(#keys, #pkeys)
    assert.are.same(keys, pkeys)
    assert.are.same(sizes, psizes)
    assert.are.same(urls, purls)
    assert.are.equal("done", job:status())
    -- ranges of the planner's own making: requests that start at keys no page ended at
    local starts = {}
    for _, r in ipairs(emu:requests()) do
      if r.args.exclusiveStartKey then starts[r.args.exclusiveStartKey] = true end
    end
    local made = 0
    for k in pairs(starts) do
      if not k:match("00$") then made = made + 1 end
    end
    assert.is_true(made > 0, "no range boundaries were made")
    assert.is_nil(job:timeout())
    assert.are.equal("apify.kvs.job (done)", tostring(job))
    job:close()
    assert.are.equal("done", job:status())
  end)

  it("hands out at most max_keys per poll, and stops at limit", function()
    local job = store:job({ page_size = 100, parallel = 4, rate_limit = FAST, limit = 777 })
    local got = {}
    while job:status() == "running" do
      local n = 0
      for key in job:poll(50) do
        n = n + 1
        got[#got + 1] = key
      end
      assert.is_true(n <= 50)
      socket.sleep(0.001)
    end
    local want = fmt("item-%07d", 777)
    assert.are.same(want, got)
  end)

  it("ordered = false: every key once, in no particular order", function()
    local job = store:job({ page_size = 100, parallel = 8, rate_limit = FAST, ordered = false })
    local keys = frames(job)
    table.sort(keys)
    assert.are.same(fmt("item-%07d", 3000), keys)
  end)

  it("tiny stores and parallel = 1 with rate_limit", function()
    local keys = frames(client:store("small"):job({ parallel = 8, rate_limit = FAST }))
    assert.are.same({ "a", "b", "c" }, keys)
    keys = frames(store:job({ parallel = 1, rate_limit = FAST, page_size = 1000 }))
    assert.are.equal(3000, #keys)
  end)

  it("never blocks in poll while the ranges' replies take 0.2 s", function()
    emu:config({ delay = 0.2 })
    local job = store:job({ page_size = 250, parallel = 4, rate_limit = FAST })
    local keys, worst, polls = frames(job)
    assert.are.same(fmt("item-%07d", 3000), keys)
    assert.is_true(polls > 50, polls .. " polls")
    -- a poll decodes the pages that arrived meanwhile, never waits for one
    T.timed_claim(worst < 0.020 * T.slow, ("worst poll %.2f ms"):format(worst * 1000))
  end)

  it("says when to poll again: a number while running, nil when done", function()
    emu:config({ delay = 0.3 })
    local job = store:job({ page_size = 500, parallel = 4, rate_limit = FAST })
    assert.are.equal(0, job:timeout())          -- nothing sent yet: poll now
    for _ in job:poll() do end
    local t = job:timeout()
    assert.is_number(t)
    assert.is_true(t > 0 and t <= 30, tostring(t))
    local r, w = job:sockets()                  -- the first range's transfer
    assert.is_true(#r + #w >= 1)
    assert.is_number(r[1] or w[1])
    local keys = frames(job)
    assert.are.equal(3000, #keys)
    local r2, w2 = job:sockets()
    assert.are.same({}, r2)
    assert.are.same({}, w2)
    assert.is_nil(job:timeout())
    assert.are.equal(1, select("#", job:timeout()))
  end)

  -- On a kept-alive connection a reply can be in before the turn that sent its request is
  -- over: poll must hand it to the ranges then. Left for later, the job waits on nothing (no
  -- socket, no libcurl timer: timeout() fell back to 0.05 s) and store:keys on it for 1 s.
  it("while running, always has a socket to watch or a due time (no reply left unseen)", function()
    local thirty, lost = T.client(emu):store("thirty"), 0   -- one client: kept-alive connections
    for _ = 1, 200 do
      local job, n = thirty:job({ page_size = 10, parallel = 2, rate_limit = 1e6 }), 0
      while true do
        for _ in job:poll() do n = n + 1 end
        if job:status() ~= "running" then break end
        local t, r, w = job:timeout(), job:sockets()
        -- at 1e6 requests/s, a wait for the pace is a few microseconds
        if t and t > 0.001 and #r + #w == 0 then lost = lost + 1 end
        socket.sleep(math.min(t or 0, 0.001))
      end
      assert.are.equal("done", job:status())
      assert.are.equal(30, n)
    end
    assert.are.equal(0, lost)
  end)

  it("retries a range's 503 and cut-off bodies: still every key once", function()
    emu:config({ delay = 0.1 })       -- the faults come before the ranges are through
    local job = store:job({ page_size = 100, parallel = 8, rate_limit = FAST })
    local keys = {}
    repeat
      for key in job:poll() do keys[#keys + 1] = key end
      socket.sleep(0.002)
    until #keys > 0
    emu:faults({ { kind = "status", status = 503, times = 2 }, { kind = "truncate" } })
    local rest = frames(job)
    for _, k in ipairs(rest) do keys[#keys + 1] = k end
    assert.are.same(fmt("item-%07d", 3000), keys)
    assert.are.equal("done", job:status())
    local faulted = 0
    for _, r in ipairs(emu:requests()) do if r.fault then faulted = faulted + 1 end end
    assert.are.equal(3, faulted)
  end)

  it("a range's permanent error fails the job: the keys before it are in order, then status", function()
    emu:config({ delay = 0.1 })
    local job = store:job({ page_size = 100, parallel = 8, rate_limit = FAST })
    local keys = {}
    repeat
      for key in job:poll() do keys[#keys + 1] = key end
      socket.sleep(0.002)
    until #keys > 0
    emu:faults({ { kind = "status", status = 500, times = 1000 } })
    local rest = frames(job)
    for _, k in ipairs(rest) do keys[#keys + 1] = k end
    local status, err = job:status()
    assert.are.equal("failed", status)
    assert.are.equal("internal-server-error", err.type)
    assert.are.equal(500, err.status)
    assert.are.equal(3, err.retries)
    assert.is_not.matches(TOKEN, err.message, 1, true)
    for i, k in ipairs(keys) do assert.are.equal(("item-%07d"):format(i), k) end
    assert.is_true(#keys < 3000)
    assert.is_nil(job:timeout())
    assert.are.equal("apify.kvs.job (failed)", tostring(job))
    emu:clear_faults()
    socket.sleep(0.1)
    local n = #emu:requests()
    socket.sleep(0.2)
    assert.are.equal(n, #emu:requests())        -- every transfer went with the failure
  end)

  it("close() cancels every range: status cancelled, nothing more sent", function()
    emu:config({ delay = 0.5 })
    local job = store:job({ page_size = 100, parallel = 8, rate_limit = FAST })
    local deadline = socket.gettime() + 10 * T.slow
    repeat
      for _ in job:poll() do end
      socket.sleep(0.005)
    until #emu:requests() > 1 or socket.gettime() > deadline
    job:close()
    assert.are.equal("cancelled", job:status())
    assert.is_nil(job:timeout())
    local n, settled = #emu:requests(), false
    for _ = 1, 20 do
      socket.sleep(0.6)
      local now = #emu:requests()
      if now == n then settled = true; break end
      n = now
    end
    assert.is_true(settled, "requests still coming after close: " .. n)
  end)

  it("checks parallel, rate_limit and ordered", function()
    assert.matches("parallel", T.raised_message(store.job, store, { parallel = 0 }))
    assert.matches("parallel", T.raised_message(store.job, store, { parallel = 65 }))
    assert.matches("rate_limit", T.raised_message(store.job, store, { parallel = 2, rate_limit = 0 }))
    assert.matches("ordered", T.raised_message(store.job, store, { parallel = 2, ordered = 1 }))
    assert.matches("unknown option 'prefetch'", T.raised_message(store.job, store, { prefetch = true }))
  end)
end)
