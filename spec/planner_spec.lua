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

describe("the parallel planner, simulated", function()
  describe("every key exactly once", function()
    for _, shape in ipairs({ "uniform", "prefixes", "gap", "alphabet" }) do
      for _, n in ipairs({ 3000, 30000 }) do
        for _, p in ipairs({ 1, 4, 8, 16, 32 }) do
          it(("in order: %s keys, N = %d, parallel = %d"):format(shape, n, p), function()
            local got, keys, fig = simulate(shape, n, { parallel = p })
            check_ordered(got, keys)
            assert.are.equal(0, fig.throttled)
            -- each range ends on a page of its own: a few more requests than pages
            assert.is_true(fig.requests <= 1.1 * fig.pages + p + 2,
                           ("%d requests for %d pages"):format(fig.requests, fig.pages))
          end)
        end
        it(("unordered: %s keys, N = %d, parallel = 8"):format(shape, n), function()
          local got, keys, fig = simulate(shape, n, { parallel = 8, ordered = false })
          check_set(got, keys)
          assert.is_true(fig.requests <= 1.1 * fig.pages + 10,
                         ("%d requests for %d pages"):format(fig.requests, fig.pages))
        end)
      end
    end

    it("with limit and prefix", function()
      local got = simulate("prefixes", 30000, { parallel = 8, limit = 4321, prefix = "run-" })
      local keys, want = store_keys("prefixes", 30000), {}
      for _, k in ipairs(keys) do
        if k:sub(1, 4) == "run-" and #want < 4321 then want[#want + 1] = k end
      end
      check_ordered(got, want)
    end)
  end)

  describe("at the API's rate limit (N = 300,000, 150 ms a page, 60 requests/s)", function()
    local N = 300000
    for _, shape in ipairs({ "uniform", "prefixes", "gap", "alphabet" }) do
      it(("parallel = 8, %s keys: <= 1.1 requests a page, within 1.25x of the bound"):format(shape), function()
        local got, keys, fig = simulate(shape, N, { parallel = 8 })
        check_ordered(got, keys)
        assert.are.equal(0, fig.throttled)
        assert.is_true(fig.per_page <= 1.1, ("%.3f requests a page"):format(fig.per_page))
        assert.is_true(fig.ratio <= 1.25, ("%.2f s, %.2fx the bound"):format(fig.time, fig.ratio))
      end)
    end

    it("parallel = 16, uniform keys: within 1.15x of the bound", function()
      local got, keys, fig = simulate("uniform", N, { parallel = 16 })
      check_ordered(got, keys)
      assert.are.equal(0, fig.throttled)
      assert.is_true(fig.ratio <= 1.15, ("%.2f s, %.2fx the bound"):format(fig.time, fig.ratio))
    end)

    it("parallel = 8, unordered, long shared prefixes: no run-away", function()
      local got, keys, fig = simulate("prefixes", N, { parallel = 8, ordered = false })
      check_set(got, keys)
      assert.is_true(fig.per_page <= 1.1, ("%.3f requests a page"):format(fig.per_page))
    end)

    it("a server whose limit (30/s) is below its header (60): no failure, within 15% of its bound", function()
      local got, keys, fig = simulate("uniform", N, { parallel = 8, true_rate = 30, header = 60 })
      check_ordered(got, keys)
      assert.is_true(fig.ratio <= 1.15, ("%.2f s, %.2fx the bound, %d 429s"):format(fig.time, fig.ratio,
                                                                                  fig.throttled))
    end)
  end)
end)
