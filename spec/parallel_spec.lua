-- store:keys{ parallel = n }: key ranges listed side by side against the emulator.
-- Each listing is compared key by key with a sequential listing of the same store.
local T = require "spec.support.env"
local socket = require "socket"

local TOKEN = "apify_api_parallel_SECRET_3c4d"
local HUGE = 100000          -- keys of the latency test's store
local FAST = 2000            -- rate_limit where the rate is not what is tested (default: 60/s)

local function fmt(pattern, n)
  local keys = {}
  for i = 1, n do keys[i] = pattern:format(i) end
  return keys
end

-- Keys over the whole allowed alphabet, lengths 1..8, from a fixed seed.
local function alphabet_keys(n)
  local alphabet = "!'()-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
  local seed, seen, keys = 12345, {}, {}
  local function rnd(m)          -- Park-Miller: exact in doubles too (Lua 5.1/5.2, LuaJIT)
    seed = seed * 16807 % 2147483647
    return seed % m
  end
  while #keys < n do
    local len, k = 1 + rnd(8), {}
    for j = 1, len do
      local c = 1 + rnd(#alphabet)
      k[j] = alphabet:sub(c, c)
    end
    k = table.concat(k)
    if not seen[k] and not k:match("^%.+$") then
      seen[k] = true
      keys[#keys + 1] = k
    end
  end
  return keys
end

local function concat(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

local function with(opts, extra)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

describe("parallel listing (store:keys{ parallel = n })", function()
  local ctx = T.emulated({
    long = fmt("item-%07d", 3000),                                  -- a long common prefix
    skewed = concat(fmt("data-%05d", 1500), { "!", "0", "A", "Zz", "a", "b", "data", "datb", "zzz" }),
    alphabet = alphabet_keys(1200),
    ends = concat(fmt("AAA%03d", 300), fmt("zzz%03d", 300)),      -- nothing in between
    empty = {}, one = { "solo" }, two = { "a", "b" },
    thirty = fmt("k%02d", 30),
  }, TOKEN, { enforce = false })    -- no bucket: most tests run at rate_limit = FAST
  local emu, client

  lazy_setup(function() emu, client = ctx.emu, ctx.client end)

  -- The parallel listing's keys, sizes and urls equal the sequential one's.  When
  -- the sequential one took 3 pages or more (of 2 keys or more: one key tells no
  -- density), some ranges must have started at a boundary of the parallel
  -- listing's own making (not a key of the store).
  local function same_as_sequential(name, opts, par)
    local store = client:store(name)
    emu:clear_requests()
    local keys, sizes, urls = T.collect(store, opts)
    local pages = #emu:requests()
    emu:clear_requests()
    local popts = with(with(opts, { rate_limit = FAST }), par or { parallel = 8 })
    if popts.rate_limit == false then popts.rate_limit = nil end   -- the default: 60/s
    local pkeys, psizes, purls = T.collect(store, popts)
    assert.are.equal(#keys, #pkeys)
    assert.are.same(keys, pkeys)
    assert.are.same(sizes, psizes)
    assert.are.same(urls, purls)
    local known, made = { [opts.exclusiveStartKey or ""] = true }, 0
    for _, k in ipairs(T.collect(store, { prefix = opts.prefix })) do known[k] = true end
    for _, r in ipairs(emu:requests()) do
      if r.args.exclusiveStartKey and not known[r.args.exclusiveStartKey] then made = made + 1 end
    end
    if pages >= 3 and (opts.page_size or 1000) >= 2 then
      assert.is_true(made > 0, "no range boundaries were made")
    end
    return pkeys
  end

  describe("lists every key exactly once, in byte order", function()
    it("with a long common prefix", function()
      local keys = same_as_sequential("long", { page_size = 100 }, { parallel = 8, rate_limit = false })
      assert.are.equal(3000, #keys)
      same_as_sequential("long", { page_size = 100 }, { parallel = 3 })
      same_as_sequential("long", { page_size = 25 }, { parallel = 64 })
    end)

    it("with a skewed distribution", function()
      assert.are.equal(1509, #same_as_sequential("skewed", { page_size = 50 }))
      same_as_sequential("skewed", { page_size = 50 }, { parallel = 16 })
    end)

    it("with keys over the whole allowed alphabet", function()
      assert.are.equal(1200, #same_as_sequential("alphabet", { page_size = 20 }))
      same_as_sequential("alphabet", { page_size = 20 }, { parallel = 5 })
    end)

    it("with an empty key range in the middle", function()
      assert.are.equal(600, #same_as_sequential("ends", { page_size = 20 }))
    end)

    it("for tiny stores", function()
      for _, name in ipairs({ "empty", "one", "two" }) do
        same_as_sequential(name, {})
        same_as_sequential(name, { page_size = 1 })
      end
      emu:clear_requests()
      assert.are.same({}, T.collect(client:store("empty"), { parallel = 8 }))
      assert.are.equal(1, #emu:requests())        -- the first page goes out alone
    end)

    it("with prefix, limit and exclusiveStartKey", function()
      assert.are.equal(100, #same_as_sequential("long", { prefix = "item-00012", page_size = 10 }))
      assert.are.equal(0, #same_as_sequential("long", { prefix = "nope", page_size = 10 }))
      assert.are.equal(999, #same_as_sequential("skewed", { prefix = "data-00", page_size = 30 }))
      assert.are.equal(777, #same_as_sequential("long", { limit = 777, page_size = 50 }))
      assert.are.equal(5, #same_as_sequential("long", { limit = 5, page_size = 50 }))
      assert.are.equal(0, #same_as_sequential("long", { limit = 0 }))
      assert.are.equal(1766, #same_as_sequential("long", { exclusiveStartKey = "item-0001234", page_size = 40 }))
      assert.are.equal(3, #same_as_sequential("skewed", { exclusiveStartKey = "data-01499", page_size = 1 }))
    end)

    it("passes prefix to every range's requests", function()
      emu:clear_requests()
      T.collect(client:store("long"), { prefix = "item-0002", page_size = 50, parallel = 8, rate_limit = FAST })
      local reqs = emu:requests()
      assert.is_true(#reqs > 8)
      for _, r in ipairs(reqs) do assert.are.equal("item-0002", r.args.prefix) end
    end)
  end)

  describe("ordered = false", function()
    it("hands each key out once, in no particular order", function()
      local store = client:store("alphabet")
      local keys = T.collect(store, { page_size = 20 })
      local pkeys = T.collect(store, { page_size = 20, parallel = 8, ordered = false, rate_limit = FAST })
      table.sort(pkeys)
      assert.are.same(keys, pkeys)
    end)

    it("stops after limit keys", function()
      local all, seen = {}, {}
      for _, k in ipairs(alphabet_keys(1200)) do all[k] = true end
      local pkeys = T.collect(client:store("alphabet"),
        { page_size = 20, parallel = 8, ordered = false, limit = 333, rate_limit = FAST })
      assert.are.equal(333, #pkeys)
      for _, k in ipairs(pkeys) do
        assert.is_true(all[k] and not seen[k], k)
        seen[k] = true
      end
    end)
  end)

  describe("faults", function()
    local store
    before_each(function() store = client:store("long") end)

    -- the first page, then faults for the requests the ranges make next
    local function after_first_key(faults, opts)
      local it, listing = store:keys(with({ page_size = 100, parallel = 8, rate_limit = FAST }, opts))
      local keys = { (it()) }
      emu:faults(faults)
      return it, listing, keys
    end

    it("retries a range's 503 and truncated bodies: still every key once", function()
      -- at most 3 in a row, as one range may meet them all: max_retries is 3
      local it, _, keys = after_first_key({ { kind = "status", status = 503, times = 2 },
                                            { kind = "truncate" } })
      for k in it do keys[#keys + 1] = k end
      assert.are.same(fmt("item-%07d", 3000), keys)
      local faulted = 0
      for _, r in ipairs(emu:requests()) do
        if r.fault then
          faulted = faulted + 1
          assert.is_string(r.args.exclusiveStartKey)   -- a later range's request, not the first
        end
      end
      assert.are.equal(3, faulted)
    end)

    it("raises a range's permanent error from the iterator and cancels the rest", function()
      local it = after_first_key({ { kind = "status", status = 500, times = 1000 } })
      local err = T.raised(function() for _ in it do end end)
      assert.are.equal("internal-server-error", err.type)
      assert.are.equal(500, err.status)
      assert.are.equal(3, err.retries)
      assert.matches("gave up after 3 retries", err.message)
      assert.are.equal("internal-server-error", T.raised(it).type)   -- and stays failed
      emu:clear_faults()
      socket.sleep(0.1)
      local n = #emu:requests()
      socket.sleep(0.2)
      assert.are.equal(n, #emu:requests())     -- nothing more was sent
    end)

    it("raises the API's 4xx at once", function()
      local err = T.raised(T.collect, client:store("nope"), { parallel = 8 })
      assert.are.equal("record-not-found", err.type)
      assert.are.equal(0, err.retries)
    end)
  end)

  describe("stopping", function()
    after_each(function() emu:config({ delay = 0 }) end)

    it("close() cancels every transfer at once", function()
      emu:config({ delay = 0.5 })
      local it, listing = client:store("long"):keys({ parallel = 8, page_size = 100 })
      assert.is_string(it())        -- the first page is in, the ranges' requests on their way
      assert.is_string(it())
      local t0 = socket.gettime()
      listing:close()
      assert.is_true(socket.gettime() - t0 < 0.1 * T.slow)
      assert.is_nil(it())
      assert.matches("closed", tostring(listing))
      -- the cancelled ones still end on the server (late, on a busy machine); after them,
      -- nothing: a listing that went on would keep logging a request every 0.5 s
      local n, settled = #emu:requests(), false
      for _ = 1, 20 do
        socket.sleep(0.6)
        local now = #emu:requests()
        if now == n then settled = true; break end
        n = now
      end
      assert.is_true(settled, "requests still coming after close: " .. n)
      assert.is_true(n <= 1 + 8 * 2, n .. " requests")
    end)

    it("a broken loop releases everything at the next collection", function()
      for _ = 1, 10 do
        for _ in client:store("long"):keys({ parallel = 8, page_size = 10 }) do break end
      end
      collectgarbage()
      collectgarbage()
    end)

    if _VERSION == "Lua 5.4" then
      it("on Lua 5.4, break closes the listing at once", function()
        local f, s, c, listing = client:store("long"):keys({ parallel = 8, page_size = 100 })
        for _ in f, s, c, listing do break end
        assert.matches("closed", tostring(listing))
      end)
    end

    it("holds at most max(64, 3 x parallel) pages ahead of the loop", function()
      local store = client:store("long")
      local n, worst = 0, 0
      emu:clear_requests()
      for k in store:keys({ parallel = 4, page_size = 20, rate_limit = FAST }) do
        n = n + 1
        -- now and then a slow reply: the ranges after it fill up their buffers and wait
        if n % 500 == 0 then emu:faults({ { kind = "stall", seconds = 0.2 } }) end
        if n % 20 == 0 and n < 2800 then   -- (no empty probes past the end yet)
          -- pages that arrived but are not reached yet: their cursor is past this key
          local ahead = 0
          for _, r in ipairs(emu:requests()) do
            if (r.args.exclusiveStartKey or "") >= k then ahead = ahead + 1 end
          end
          worst = math.max(worst, ahead)
        end
      end
      assert.are.equal(3000, n)
      -- the planner holds at most KVS_PLAN_MEMORY (64) pages and requests in flight, or 3 a
      -- request in flight when that is more (the simulator of planner_spec.lua checks that
      -- bound exactly); the server also answers requests whose page the planner then drops
      -- because a neighbouring range carried its keys: at most one in flight a range
      assert.is_true(worst <= 64 + 4, "pages ahead: " .. worst)
    end)
  end)

  -- Timing claims about the C driver (the rate cap, the speed-up) take seconds of waiting and
  -- hold on a quiet machine only: make test-timing checks them; every target runs the
  -- correctness tests.
  local describe_timing = T.timing and describe or pending

  describe_timing("request rate", function()
    after_each(function() emu:config({ delay = 0, rate_limit = 0 }) end)

    -- lists `opts` sampling (time, requests seen) at each page; returns samples, elapsed, requests
    local function sampled(opts)
      local samples, t0, n = {}, socket.gettime(), 0
      emu:clear_requests()
      for _ in client:store("long"):keys(opts) do
        n = n + 1
        if n % opts.page_size == 0 then samples[#samples + 1] = { socket.gettime(), #emu:requests() } end
      end
      return samples, socket.gettime() - t0, #emu:requests()
    end

    -- most requests seen within any 1 s between two samples
    local function busiest_second(samples)
      local most = 0
      for a = 1, #samples do
        for b = a + 1, #samples do
          if samples[b][1] - samples[a][1] <= 1 then
            most = math.max(most, samples[b][2] - samples[a][2])
          end
        end
      end
      return most
    end

    it("never exceeds rate_limit requests per second", function()
      local samples, elapsed, reqs = sampled({ parallel = 8, page_size = 100, rate_limit = 20, limit = 2500 })
      assert.is_true(reqs >= 20, reqs .. " requests")
      -- one token at a time: request k goes out no earlier than (k - 1) / 20 s after the first
      assert.is_true(elapsed >= (reqs - 1) / 20 * 0.95, ("%d requests in %.2f s"):format(reqs, elapsed))
      assert.is_true(busiest_second(samples) <= 21, "busiest second: " .. busiest_second(samples))
    end)

    it("follows the API's X-RateLimit-Limit", function()
      emu:config({ rate_limit = 10 })
      local _, elapsed, reqs = sampled({ parallel = 8, page_size = 200, limit = 2400 })
      assert.is_true(reqs >= 12, reqs .. " requests")
      -- the first request goes before the header is known; at the API's limit up to 3 go out
      -- at once (replies that arrive together), and no more than 3 + 10 t in any t seconds
      assert.is_true(elapsed >= (reqs - 4) / 10 * 0.95, ("%d requests in %.2f s"):format(reqs, elapsed))
    end)

    it("lets rate_limit override X-RateLimit-Limit", function()
      emu:config({ rate_limit = 2 })
      local _, elapsed, reqs = sampled({ parallel = 8, page_size = 200, limit = 2400, rate_limit = 100 })
      assert.is_true(elapsed < (reqs - 2) / 2 / 2, ("%d requests in %.2f s"):format(reqs, elapsed))
    end)
  end)

  describe("options", function()
    it("checks parallel, rate_limit and ordered", function()
      local store = client:store("long")
      for _, bad in ipairs({ 0, 65, 1.5, -1 }) do
        assert.has_error(function() store:keys({ parallel = bad }) end,
          "bad argument #1 to 'keys' (option 'parallel' must be \"auto\" or an integer in 1..64)")
      end
      for _, bad in ipairs({ 0, -1, 0 / 0 }) do
        assert.has_error(function() store:keys({ rate_limit = bad }) end,
          "bad argument #1 to 'keys' (option 'rate_limit' must be a number in (0, 1e6])")
      end
      assert.has_error(function() store:keys({ ordered = 1 }) end,
        "bad argument #1 to 'keys' (option 'ordered' must be a boolean, got number)")
      assert.has_error(function() store:keys({ parallel = "8" }) end,
        "bad argument #1 to 'keys' (option 'parallel' must be \"auto\" or an integer in 1..64)")
    end)

    it("parallel = 1 with rate_limit paces a sequential listing", function()
      emu:clear_requests()
      local t0 = socket.gettime()
      assert.are.same(fmt("item-%07d", 1000), T.collect(client:store("long"),
        { parallel = 1, rate_limit = 10, page_size = 100, limit = 1000 }))
      assert.are.equal(10, #emu:requests())
      assert.is_true(socket.gettime() - t0 >= 0.9 * 0.95)
    end)
  end)

  describe_timing("latency", function()
    after_each(function() emu:config({ delay = 0 }) end)

    -- A reply that came in within the turn that sent its request was once left unseen until
    -- the iterator's wait ran out, 1 s later (5 % of such listings; job_parallel_spec checks
    -- the cause without a clock).
    it("short listings on a kept-alive connection never wait 1 s for a reply that is in", function()
      local store, slow = client:store("thirty"), 0
      for _ = 1, 100 do
        local t0 = socket.gettime()
        assert.are.equal(30, #T.collect(store, { parallel = 2, page_size = 10, rate_limit = FAST }))
        if socket.gettime() - t0 >= 0.9 then slow = slow + 1 end
      end
      assert.are.equal(0, slow, slow .. " of 100 listings took 0.9 s or more")
    end)

    it("lists " .. HUGE .. " keys at least 5x faster with 8 ranges than page by page", function()
      -- the store: one empty file per key, made by the shell (fast everywhere)
      local dir = ctx.storage .. "/key_value_stores/huge"
      assert(T.sh("mkdir -p '" .. dir .. "' && cd '" .. dir .. "' && awk 'BEGIN { for (i = 1; i <= "
        .. HUGE .. "; i++) printf \"item-%07d.txt\\n\", i }' | xargs touch"))
      local store = client:store("huge")
      socket.sleep(1.2)                   -- the emulator caches a listing once its files are
      T.collect(store, { limit = 1 })     -- over a second old: scan it now, outside the timing
      local delay, pages = 0.2, HUGE / 1000
      emu:config({ delay = delay })

      -- sequential, prefetch = false: measured over 5 pages, and never below pages x delay
      local t0 = socket.gettime()
      assert.are.equal(5000, #T.collect(store, { prefetch = false, limit = 5000 }))
      local per_page = (socket.gettime() - t0) / 5
      local sequential = math.max(per_page, delay) * pages

      -- parallel: the better of two runs if the first misses (the machine is shared)
      local parallel
      for _ = 1, 2 do
        emu:clear_requests()
        t0 = socket.gettime()
        local n, prev, ordered = 0, "", true
        for k in store:keys({ parallel = 8 }) do
          n = n + 1
          if k <= prev then ordered = false end
          prev = k
        end
        local took = socket.gettime() - t0
        assert.are.equal(HUGE, n)
        assert.is_true(ordered)
        assert.are.equal(("item-%07d"):format(HUGE), prev)
        if not parallel or took < parallel then parallel = took end
        io.stderr:write(("\n[parallel_spec] %d keys, %.1f s/page: sequential %.2f s (%d pages x %.3f s "
          .. "measured over 5), parallel = 8 %.2f s (%d requests for %d pages): %.1fx\n")
          :format(HUGE, delay, sequential, pages, per_page, took, #emu:requests(), pages, sequential / took))
        if parallel * 5 <= sequential * T.slow then break end
      end
      assert.is_true(parallel * 5 <= sequential * T.slow,
        ("parallel %.2f s vs sequential %.2f s"):format(parallel, sequential))
    end)
  end)
end)
