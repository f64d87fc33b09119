-- The parallel planner (store:listing{}, parallel = "auto" by default) driven by the simulator of
-- spec/support/plan_sim.lua: a fake store, a fake clock, round trips with jitter, the API's rate
-- limit.  Every key exactly once and in order, requests per page of keys listed, simulated time
-- against the rate cap's bound ceil(N/1000)/60 s plus one round trip, over five key shapes
-- (uniform, prefixes, gap, alphabet, and counters: numbers without zero padding, as actors write
-- them, which byte order interleaves), three round trips (50, 150, 500 ms, each +-20 %) and N =
-- 30,000, 300,000 and (KVS_SIM_3M=1) 3,000,000.  KVS_SIM_REPORT=1 prints each run's figures.
--
-- The simulations are deterministic: the planner's figures are the same on every Lua.  The large
-- ones run once, on Lua 5.4; the other Luas and the sanitizer and valgrind passes (there for the C
-- code: about 10x slower) run the small ones.  The N = 3,000,000 grid takes 6-10 s of CPU and half
-- a GB a cell, so it runs only with KVS_SIM_3M=1 (on Lua 5.4): `KVS_SIM_3M=1 bash spec/run 5.4 --
-- spec/planner_spec.lua`.
local sim = require "spec.support.plan_sim"
local simulate, store_keys = sim.simulate, sim.store_keys

local FULL = (os.getenv("KVS_TARGET") or "5.4") == "5.4"
local BIG = FULL and os.getenv("KVS_SIM_3M") == "1"
local SMALL = FULL and 30000 or 3000
local SHAPES = sim.SHAPE_NAMES
local RTTS = { 0.05, 0.15, 0.5 }

local function ordered_ok(fig, n)
  assert(not fig.bad, fig.bad)
  if n then assert.are.equal(n, fig.count) end
end

local function check_set(got, keys)
  assert.are.equal(#keys, #got)
  local seen = {}
  for _, k in ipairs(got) do
    assert(not seen[k], "twice: " .. k)
    seen[k] = true
  end
  for _, k in ipairs(keys) do assert(seen[k], "missing: " .. k) end
end

-- the most pages "auto" holds (decoded, and requests in flight): KVS_PLAN_MEMORY, or 3 a request
local function memory_bound(p)
  return math.max(64, 3 * p)
end

describe("the parallel planner, simulated", function()
  describe("every key exactly once", function()
    local grid = { [3000] = { 4, "auto" }, [30000] = { 1, 8, "auto", 32 } }
    for _, shape in ipairs(SHAPES) do
      for _, n in ipairs(FULL and { 3000, 30000 } or { 3000 }) do
        for _, p in ipairs(grid[n]) do
          it(("in order: %s keys, N = %d, parallel = %s"):format(shape, n, p), function()
            local fig = simulate(shape, n, { parallel = p })
            ordered_ok(fig, #store_keys(shape, n))
            assert.are.equal(0, fig.throttled)
            if p == 1 then assert.are.equal(math.ceil(fig.count / 1000), fig.requests) end
            -- no run-away: ranges end on pages of their own and probe up to a window past the
            -- last keys seen
            assert.is_true(fig.requests <= 2 * fig.pages + 40,
                           ("%d requests for %d pages"):format(fig.requests, fig.pages))
            -- memory: at most max(64, 3 x requests in flight) pages held and in flight
            local cap = p == "auto" and 64 or p
            assert.is_true(fig.max_inflight <= cap, fig.max_inflight .. " requests in flight")
            assert.is_true(fig.max_held <= memory_bound(fig.max_inflight),
                           fig.max_held .. " pages held and in flight")
          end)
        end
      end
      for _, p in ipairs({ 8, "auto" }) do
        it(("unordered: %s keys, N = %d, parallel = %s"):format(shape, SMALL, p), function()
          local fig = simulate(shape, SMALL, { parallel = p, ordered = false, collect = true })
          check_set(fig.got, store_keys(shape, SMALL))
          assert.is_true(fig.requests <= 2 * fig.pages + 40,
                         ("%d requests for %d pages"):format(fig.requests, fig.pages))
        end)
      end
    end

    it("paces requests: at most 3 at once at the API's limit, 1/rate apart with rate_limit", function()
      -- the most requests sent in any window of w seconds, from the simulator's log
      local function most_in(log, w)
        local most, j = 0, 1
        for i = 1, #log do
          while log[i].t - log[j].t > w + 1e-9 do j = j + 1 end
          if i - j + 1 > most then most = i - j + 1 end
        end
        return most
      end
      local function sends(opts)
        local log = {}
        opts.log = log
        ordered_ok(simulate("uniform", SMALL, opts))
        local out = {}
        for _, e in ipairs(log) do if not e.cancel then out[#out + 1] = e end end
        return out
      end
      local free = sends({ rtt = 0.5 })     -- rate-bound: 30 requests in flight
      assert.are.equal(3, most_in(free, 0))     -- replies that came together: 3 at once
      for _, w in ipairs({ 0.1, 0.5, 1, 2 }) do
        assert.is_true(most_in(free, w) <= 3 + 60 * w, most_in(free, w) .. " requests in " .. w .. " s")
      end
      local fixed = sends({ parallel = 16, rate_limit = 60 })
      assert.are.equal(1, most_in(fixed, 1 / 60 - 1e-6))
      assert.is_true(most_in(fixed, 1) <= 61, most_in(fixed, 1) .. " requests in 1 s")
    end)

    it("with limit and prefix", function()
      local limit = math.floor(SMALL / 7)
      local keys, want = store_keys("prefixes", SMALL), {}
      for _, k in ipairs(keys) do
        if k:sub(1, 4) == "run-" and #want < limit then want[#want + 1] = k end
      end
      local fig = simulate("prefixes", SMALL, { limit = limit, prefix = "run-", want = want })
      ordered_ok(fig, limit)
    end)
  end)

  describe('"auto": requests in flight as the rate times the round trip asks for', function()
    for _, rtt in ipairs(RTTS) do
      it(("round trips of %g s: about 60 x %g in flight, never more than the cap"):format(rtt, rtt), function()
        local steps = {}
        local fig = simulate("uniform", SMALL, { rtt = rtt, on_step = function(_, st)
          if st.rtt > 0 then steps[#steps + 1] = st.parallel end
        end })
        ordered_ok(fig)
        local want = 60 * rtt          -- Little's law at 60 requests/s
        assert.is_true(fig.max_inflight >= math.floor(want * 0.8),
                       fig.max_inflight .. " requests in flight at most")
        assert.is_true(fig.max_inflight <= math.ceil(want * 1.5) + 2,
                       fig.max_inflight .. " requests in flight at most")
        assert.is_true(#steps > 0)
        local capped = simulate("uniform", SMALL, { rtt = rtt, parallel = 2 })
        ordered_ok(capped)
        assert.is_true(capped.max_inflight <= 2, "parallel = 2 caps it")
      end)
    end

    it("shrinks when the server lets fewer through (30/s under a header of 60)", function()
      local first, last
      local fig = simulate("uniform", SMALL, { rtt = 0.5, true_rate = 30, on_step = function(_, st)
        if st.rtt > 0 then
          first = first or st.parallel
          last = st.parallel
        end
      end })
      ordered_ok(fig)
      assert.is_true(fig.throttled > 0)
      assert.is_true(last < first, ("%d requests wanted in flight at the start, %d at the end")
                                    :format(first, last))
    end)

    it("holds every request back while a 429's Retry-After lasts", function()
      local log = {}
      local fig = simulate("uniform", SMALL, { true_rate = 20, burst = 5, retry_after = 2, log = log })
      ordered_ok(fig)
      assert.is_true(fig.throttled > 0)
      for _, e in ipairs(log) do
        if e.status == 429 then         -- nothing goes out in the 2 s after a 429 came back
          for _, x in ipairs(log) do
            if not x.cancel and x.t > e.due + 1e-9 and x.t < e.due + 2 - 1e-6 then
              error(("a request %.3f s after a 429 asking for 2 s"):format(x.t - e.due))
            end
          end
        end
      end
    end)
  end)

  describe("small stores", function()
    it("one page: one request", function()
      for _, rtt in ipairs(RTTS) do
        local fig = simulate("uniform", 1000, { rtt = rtt })
        ordered_ok(fig, 1000)
        assert.are.equal(1, fig.requests)
      end
    end)
    for _, pages in ipairs({ 5, 50 }) do
      for _, rtt in ipairs({ 0.05, 0.5 }) do
        it(("%d pages at %g s a page: no slower than one page at a time"):format(pages, rtt), function()
          for _, shape in ipairs({ "uniform", "prefixes", "alphabet", "counters" }) do
            local n = pages * 1000
            local auto = simulate(shape, n, { rtt = rtt })
            local seq = simulate(shape, n, { rtt = rtt, parallel = 1 })
            ordered_ok(auto)
            ordered_ok(seq)
            assert.is_true(auto.time <= seq.time, ("%s: %.2f s against %.2f s page by page")
                                                     :format(shape, auto.time, seq.time))
          end
        end)
      end
    end
  end)

  if FULL then
    -- The targets: within 1.10x of the bound (1.05x at N = 3,000,000) and at most 1.05 requests a
    -- page, no 429 where the server's limit matches its header, within 1.15x of the lower limit's
    -- bound (30/s under a header of 60).  Met targets are asserted with their numbers; where the
    -- planner reaches short of one, what it reaches is asserted (so that it cannot get worse) and
    -- the target is listed as pending with the figures.  Reached (requests a page / time per
    -- bound), 50 / 150 / 500 ms:
    local REACHED = {
      [300000] = {
        uniform  = { { 1.017, 1.015 }, { 1.040, 1.066 }, { 1.057, 1.253 } },
        prefixes = { { 1.047, 1.043 }, { 1.067, 1.086 }, { 1.070, 1.377 } },
        gap      = { { 1.047, 1.043 }, { 1.067, 1.081 }, { 1.083, 1.408 } },
        alphabet = { { 1.045, 1.041 }, { 1.066, 1.091 }, { 1.097, 1.297 } },
        counters = { { 1.083, 1.085 }, { 1.257, 1.405 }, { 1.600, 2.413 } },
      },
      [3000000] = {
        uniform  = { { 1.007, 1.007 }, { 1.023, 1.025 }, { 1.017, 1.036 } },
        prefixes = { { 1.017, 1.017 }, { 1.039, 1.042 }, { 1.053, 1.102 } },
        gap      = { { 1.015, 1.016 }, { 1.031, 1.034 }, { 1.033, 1.062 } },
        alphabet = { { 1.039, 1.039 }, { 1.078, 1.082 }, { 1.080, 1.120 } },
        counters = { { 1.066, 1.067 }, { 1.092, 1.970 }, { 1.144, 2.020 } },
      },
    }
    local LOW = { 1.049, 1.039, 1.269 }      -- 30/s under a header of 60, uniform keys, N = 300,000
    local function within(what, got, target, reached, misses)
      if got <= target + 1e-9 then return end
      assert.is_true(got <= reached * 1.005, ("%s: %.3f, reached %.3f before"):format(what, got, reached))
      misses[#misses + 1] = ("%s %.3f (target %.2f)"):format(what, got, target)
    end

    for _, n in ipairs(BIG and { 300000, 3000000 } or { 300000 }) do
      local misses, time_target = {}, n >= 3000000 and 1.05 or 1.10
      describe(("at N = %d (60 requests/s, 429 over a bucket of 10)"):format(n), function()
        for _, shape in ipairs(SHAPES) do
          for i, rtt in ipairs(RTTS) do
            it(("%s keys, %g s round trips"):format(shape, rtt), function()
              local fig = simulate(shape, n, { rtt = rtt })
              ordered_ok(fig, #store_keys(shape, n))
              assert.are.equal(0, fig.throttled)
              local reached = REACHED[n][shape][i]
              within(("%s, %g s: requests a page"):format(shape, rtt), fig.per_page, 1.05, reached[1], misses)
              within(("%s, %g s: time / bound"):format(shape, rtt), fig.ratio, time_target, reached[2], misses)
            end)
          end
        end
        if n == 300000 then
          for i, rtt in ipairs(RTTS) do
            it(("a server at 30/s under a header of 60, %g s round trips: the pace follows"):format(rtt), function()
              local fig = simulate("uniform", n, { rtt = rtt, true_rate = 30 })
              ordered_ok(fig, n)
              assert.is_true(fig.throttled <= 20, fig.throttled .. " 429s")
              within(("30/s under 60, %g s: time / bound"):format(rtt), fig.ratio, 1.15, LOW[i], misses)
            end)
          end
        end
        it("lists the targets it does not meet yet", function()
          if #misses > 0 then
            pending("not met yet: " .. table.concat(misses, "; "))
          end
        end)
      end)
    end
  end
end)
