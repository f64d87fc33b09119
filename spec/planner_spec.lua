-- The parallel planner (store:listing{ parallel = n }) driven by the simulator of
-- spec/support/plan_sim.lua: a fake store, a fake clock, 150 ms a reply, the API's rate limit.
-- Every key exactly once and in order, requests per page of keys listed, simulated time
-- against the rate cap's bound ceil(N/1000)/60 s, over several key shapes, sizes and
-- `parallel` values.  KVS_SIM_REPORT=1 prints each run's figures.
local sim = require "spec.support.plan_sim"
local simulate, store_keys = sim.simulate, sim.store_keys

local function check_ordered(got, keys)
  assert.are.equal(#keys, #got)
  for i = 1, #keys do
    if got[i] ~= keys[i] then
      error(("key %d: got %q, want %q"):format(i, tostring(got[i]), keys[i]))
    end
  end
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

-- The targets of a listing at the API's rate limit (issue: N = 300,000, 150 ms a page, 60/s):
-- parallel = 8 within 1.25x of the bound and <= 1.1 requests a page on every shape, parallel =
-- 16 within 1.15x on uniform keys, no 429 when the limit matches the header, within 15% of the
-- lower limit's bound when it does not.  Measured at N = 300,000 (requests a page / time per
-- bound): parallel = 8 uniform 1.027/1.21x, prefixes 1.070/1.28x, gap 1.067/1.26x, alphabet
-- 1.067/1.29x; parallel = 16 uniform 1.077/1.12x, prefixes 1.110/1.18x; 30/s under a 60 header
-- 1.070/1.15x with 10 429s.  With KVS_SIM_JITTER=0.03 (150 ms ± 30 ms), parallel = 8: 1.22x,
-- 1.29x, 1.28x, 1.30x.  Met targets are asserted with the issue's numbers; what the planner
-- reaches short of a target is asserted as reached (so that it cannot get worse), and the
-- target is listed as pending.  KVS_SIM_N=300000 runs the rate cases at the issue's size.
local N = tonumber(os.getenv("KVS_SIM_N") or "100000")
-- The simulations are deterministic: the planner's figures are the same on every Lua.  The large
-- ones (N = 30,000 grids and the rate cases) run once, on Lua 5.4; the other Luas and the
-- sanitizer and valgrind passes (there for the C code: about 10x slower) run N = 3,000.
local FULL = (os.getenv("KVS_TARGET") or "5.4") == "5.4"
local SMALL = FULL and 30000 or 3000

describe("the parallel planner, simulated", function()
  describe("every key exactly once", function()
    local grid = { [3000] = { 4, 16 }, [30000] = { 1, 8, 32 } }
    for _, shape in ipairs({ "uniform", "prefixes", "gap", "alphabet" }) do
      for _, n in ipairs(FULL and { 3000, 30000 } or { 3000 }) do
        for _, p in ipairs(grid[n]) do
          it(("in order: %s keys, N = %d, parallel = %d"):format(shape, n, p), function()
            local got, keys, fig = simulate(shape, n, { parallel = p })
            check_ordered(got, keys)
            assert.are.equal(0, fig.throttled)
            if p == 1 then assert.are.equal(math.ceil(n / 1000), fig.requests) end
            -- no run-away: each range ends on a page of its own, and ranges probe up to a
            -- window past the last keys seen (at N = 30,000, parallel = 32 on long shared
            -- prefixes: 136 requests for 30 pages, which is the worst case here)
            assert.is_true(fig.requests <= 2 * fig.pages + 4 * p,
                           ("%d requests for %d pages"):format(fig.requests, fig.pages))
            assert.is_true(fig.fetched <= 3 * #keys + 1000 * p, fig.fetched .. " keys fetched")
            -- memory: at most parallel x 3 pages held and requests in flight, all ranges together
            assert.is_true(fig.max_held <= 3 * p, fig.max_held .. " pages held and in flight")
          end)
        end
      end
      for _, p in ipairs({ 8, 16 }) do
        it(("unordered: %s keys, N = %d, parallel = %d"):format(shape, SMALL, p), function()
          local got, keys, fig = simulate(shape, SMALL, { parallel = p, ordered = false })
          check_set(got, keys)
          assert.is_true(fig.requests <= 2 * fig.pages + p + 2,
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
        local got, keys = simulate("uniform", SMALL, opts)
        check_ordered(got, keys)
        local out = {}
        for _, e in ipairs(log) do if not e.cancel then out[#out + 1] = e end end
        return out
      end
      local free = sends({ parallel = 16 })     -- rate-bound: 16 x 150 ms would make 107/s
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
      local got = simulate("prefixes", SMALL, { parallel = 8, limit = limit, prefix = "run-" })
      local keys, want = store_keys("prefixes", SMALL), {}
      for _, k in ipairs(keys) do
        if k:sub(1, 4) == "run-" and #want < limit then want[#want + 1] = k end
      end
      check_ordered(got, want)
    end)
  end)

  if FULL then describe(("at the API's rate limit (N = %d, 150 ms a page, 60 requests/s)"):format(N), function()
    -- reached (requests a page, time / bound); at N = 300,000 see the file's top, at N =
    -- 100,000 (the default) 1.10/1.44x, 1.13/1.53x, 1.11/1.45x, 1.07/1.44x; parallel = 16
    -- 1.29x; 30/s 1.27x: the first page alone, the empty requests past the store's end and the
    -- last ranges' chains of pages weigh three times as much)
    local big = N >= 300000
    local reached = big and { uniform = { 1.1, 1.25 }, prefixes = { 1.1, 1.3 }, gap = { 1.1, 1.28 },
                              alphabet = { 1.1, 1.31 } }
                        or { uniform = { 1.12, 1.46 }, prefixes = { 1.15, 1.56 }, gap = { 1.13, 1.47 },
                             alphabet = { 1.09, 1.46 } }
    for _, shape in ipairs({ "uniform", "prefixes", "gap", "alphabet" }) do
      it(("parallel = 8, %s keys: no 429, requests a page and time bounded"):format(shape), function()
        local got, keys, fig = simulate(shape, N, { parallel = 8 })
        check_ordered(got, keys)
        assert.are.equal(0, fig.throttled)
        assert.is_true(fig.per_page <= reached[shape][1], ("%.3f requests a page"):format(fig.per_page))
        assert.is_true(fig.ratio <= reached[shape][2], ("%.2f s, %.2fx the bound"):format(fig.time, fig.ratio))
      end)
    end

    it("parallel = 16, uniform keys", function()
      local got, keys, fig = simulate("uniform", N, { parallel = 16 })
      check_ordered(got, keys)
      assert.are.equal(0, fig.throttled)
      assert.is_true(fig.ratio <= (big and 1.15 or 1.38), ("%.2f s, %.2fx the bound"):format(fig.time, fig.ratio))
    end)

    for _, shape in ipairs({ "prefixes", "gap" }) do
      it(("parallel = 8, unordered, %s keys: no run-away"):format(shape), function()
        local got, keys, fig = simulate(shape, N, { parallel = 8, ordered = false })
        check_set(got, keys)
        assert.is_true(fig.per_page <= 1.6, ("%.3f requests a page"):format(fig.per_page))
      end)
    end

    it("a server whose limit (30/s) is below its header (60): no failure, the pace follows", function()
      local got, keys, fig = simulate("uniform", N, { parallel = 8, true_rate = 30, header = 60 })
      check_ordered(got, keys)
      assert.is_true(fig.throttled <= 20, fig.throttled .. " 429s")
      assert.is_true(fig.ratio <= (big and 1.15 or 1.3), ("%.2f s, %.2fx the bound, %d 429s"):format(
        fig.time, fig.ratio, fig.throttled))
    end)

    pending("issue targets not met yet (N = 300,000): parallel = 8 within 1.25x of the bound on "
            .. "prefixes (1.28x), gap (1.26x) and random keys (1.29x; uniform 1.21x meets it)")
  end) end
end)
