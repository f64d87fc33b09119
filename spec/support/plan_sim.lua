-- spec/support/plan_sim.lua — a simulator for the parallel planner (store:listing{ parallel
-- = n }): a fake store of N keys of a chosen shape answering pages as the API does
-- (exclusiveStartKey, limit, prefix, isTruncated, nextExclusiveStartKey, X-RateLimit-Limit,
-- 429 over a token bucket), a fake clock and a fixed latency per reply.  No sockets.
--
--   local sim = require "spec.support.plan_sim"
--   local got, keys, fig = sim.simulate("prefixes", 30000, { parallel = 8 })
--
-- KVS_SIM_REPORT=1 prints the figures of each run (requests per page, time per bound);
-- KVS_SIM_JITTER=0.03 spreads each reply's latency over 150 ms ± 30 ms (a fixed seed).
local kvs = require "apify.kvs"

local REPORT = os.getenv("KVS_SIM_REPORT") == "1"
local TRACE = os.getenv("KVS_SIM_TRACE") == "1" and {} or nil
local LATENCY = 0.150
local JITTER = tonumber(os.getenv("KVS_SIM_JITTER") or "0")
local ALPHABET = "!'()-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
local BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local HEX = "0123456789abcdef"

-- Park-Miller: exact in doubles too (Lua 5.1/5.2, LuaJIT)
local function rng(seed)
  return function(m)
    seed = seed * 16807 % 2147483647
    return seed % m
  end
end

local function rand_str(rnd, chars, len)
  local t = {}
  for j = 1, len do
    local c = 1 + rnd(#chars)
    t[j] = chars:sub(c, c)
  end
  return table.concat(t)
end

-- unique, sorted in byte order (Lua compares strings byte-wise in the C locale)
local function finish(keys)
  local seen, out = {}, {}
  for _, k in ipairs(keys) do
    if not seen[k] then
      seen[k] = true
      out[#out + 1] = k
    end
  end
  table.sort(out)
  return out
end

local SHAPES = {
  uniform = function(n)
    local keys = {}
    for i = 1, n do keys[i] = ("item-%07d"):format(i) end
    return keys
  end,
  -- the way actors name records: long shared prefixes, skewed counts, a few singletons
  prefixes = function(n)
    local rnd, keys = rng(7), { "INPUT", "OUTPUT", "SDK_CRAWLER_STATISTICS_0", "SDK_SESSION_POOL_STATE" }
    local run = "run-2026-11-28T10-00-00.000Z-"
    local pages, shots = math.floor(n * 0.6), math.floor(n * 0.25)
    for i = 1, pages do keys[#keys + 1] = run .. ("page-%08d"):format(i) end
    for _ = 1, shots do keys[#keys + 1] = run .. "screenshot-" .. rand_str(rnd, HEX, 16) end
    while #keys < n do keys[#keys + 1] = "crawlee-snapshot-" .. rand_str(rnd, BASE62, 17) end
    return keys
  end,
  -- a dense group of random ids, a long gap in key space, then sequential keys
  gap = function(n)
    local rnd, keys = rng(11), {}
    for _ = 1, math.floor(n * 0.3) do keys[#keys + 1] = "0" .. rand_str(rnd, BASE62, 12) end
    local i = 0
    while #keys < n do
      i = i + 1
      keys[#keys + 1] = ("record-%08d"):format(i)
    end
    return keys
  end,
  -- random keys over the whole allowed alphabet, 1..40 bytes
  alphabet = function(n)
    local rnd, keys = rng(12345), {}
    while #keys < n do keys[#keys + 1] = rand_str(rnd, ALPHABET, 1 + rnd(40)) end
    return keys
  end,
}

local cache = {}
local function store_keys(shape, n)
  local id = shape .. n
  if not cache[id] then
    local keys = finish(SHAPES[shape](n))
    local round = 0
    while #keys < n do   -- (duplicates dropped: top up with keys of the same shape)
      round = round + 1
      for _, k in ipairs(SHAPES[shape](n - #keys)) do keys[#keys + 1] = k .. ("~"):rep(round) end
      keys = finish(keys)
    end
    while #keys > n do keys[#keys] = nil end
    cache = { [id] = keys }   -- one store at a time: memory stays small
  end
  return cache[id]
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query_of(url)
  local q = {}
  for k, v in (url:match("%?(.*)$") or ""):gmatch("([^&=]+)=([^&]*)") do q[k] = unescape(v) end
  return q
end

-- first index with keys[i] > key (1 when key is nil)
local function after(keys, key)
  if not key then return 1 end
  local lo, hi = 1, #keys + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if keys[mid] <= key then lo = mid + 1 else hi = mid end
  end
  return lo
end

local function json_str(s)
  return '"' .. s .. '"'   -- the allowed alphabet needs no escapes
end

-- The fake API: a page for `url`, or a 429 when the bucket (rate, burst) is empty at `now`.
local function new_server(keys, opts)
  local srv = { rate = opts.true_rate or 60, burst = opts.burst or 10, header = opts.header or 60,
                requests = 0, throttled = 0, fetched = 0 }
  srv.tokens, srv.at = srv.burst, 0
  function srv:answer(url, now)
    self.requests = self.requests + 1
    self.tokens = math.min(self.burst, self.tokens + (now - self.at) * self.rate)
    self.at = now
    local headers = { ["X-RateLimit-Limit"] = tostring(self.header), ["Content-Type"] = "application/json" }
    if self.tokens < 1 then
      self.throttled = self.throttled + 1
      return 429, headers, '{"error":{"type":"rate-limit-exceeded","message":"You have exceeded the rate limit"}}'
    end
    self.tokens = self.tokens - 1
    local q = query_of(url)
    local limit = math.min(tonumber(q.limit or 1000), 1000)
    local prefix = q.prefix or ""
    local i = after(keys, q.exclusiveStartKey)
    if prefix ~= "" and (i > #keys or keys[i] < prefix) then
      local j = after(keys, prefix) - 1
      while j >= 1 and keys[j] >= prefix do j = j - 1 end
      if j + 1 > i then i = j + 1 end
    end
    local items, last, first = {}, nil, i
    while #items < limit and i <= #keys and keys[i]:sub(1, #prefix) == prefix do
      last = keys[i]
      items[#items + 1] = ('{"key":%s,"size":%d}'):format(json_str(last), #last)
      i = i + 1
    end
    local more = i <= #keys and keys[i]:sub(1, #prefix) == prefix
    self.fetched = self.fetched + #items
    return 200, headers, ('{"data":{"items":[%s],"count":%d,"limit":%d,"exclusiveStartKey":%s,'
      .. '"isTruncated":%s,"nextExclusiveStartKey":%s}}'):format(table.concat(items, ","), #items,
      limit, q.exclusiveStartKey and json_str(q.exclusiveStartKey) or "null",
      tostring(more), more and json_str(last) or "null"), first, #items
  end
  return srv
end

-- Drives a plan over the fake API with a fake clock; returns what was listed and the figures.
local function simulate(shape, n, opts)
  local keys = store_keys(shape, n)
  local srv = new_server(keys, opts)
  local client = kvs.new({ base_url = "http://sim.invalid", token = "sim-token", max_retries = 8 })
  local plan = client:store("sim"):listing({ parallel = opts.parallel, ordered = opts.ordered ~= false,
                                             rate_limit = opts.rate_limit, limit = opts.limit,
                                             prefix = opts.prefix, seed = opts.seed or 1 })
  local now, pending, got, steps = 0, {}, {}, 0
  local jitter = rng(99)
  local max_held = 0
  while true do
    steps = steps + 1
    assert(steps < 1e6, "the simulation does not end")
    for _, id in ipairs(plan:cancels()) do
      for i = #pending, 1, -1 do
        if pending[i].id == id then
          table.remove(pending, i)
          if opts.log then opts.log[#opts.log + 1] = { cancel = id, t = now } end
        end
      end
    end
    while plan:take() do
      for k in plan:page_keys() do got[#got + 1] = k end
    end
    local err = plan:error()
    if err then error(err) end
    if plan:finished() then break end
    for _, req in ipairs(plan:requests(now)) do
      assert(req.headers.Authorization == "Bearer sim-token", "no token header")
      local status, headers, body, first, count = srv:answer(req.url, now)
      local latency = LATENCY + (JITTER > 0 and JITTER * (jitter(2001) / 1000 - 1) or 0)
      pending[#pending + 1] = { id = req.id, due = now + latency, status = status, headers = headers,
                                body = body }
      if opts.log then
        opts.log[#opts.log + 1] = { id = req.id, shard = req.shard, t = now, status = status,
                                    first = first, count = count }
      end
    end
    local wake = plan:timeout(now)
    wake = wake and now + wake or math.huge
    for _, r in ipairs(pending) do if r.due < wake then wake = r.due end end
    assert(wake < math.huge, "nothing to wait for, and not finished")
    if wake <= now then wake = now + 1e-6 end
    local held = plan:stats().held     -- pages held and requests in flight
    if held > max_held then max_held = held end
    if TRACE then
      local st = plan:stats()
      local key = st.inflight .. "/" .. st.held
      TRACE[key] = (TRACE[key] or 0) + (wake - now)
    end
    now = wake
    local i = 1
    while i <= #pending do
      local r = pending[i]
      if r.due <= now then
        table.remove(pending, i)
        plan:reply(r.id, r.status, r.headers, r.body, now)
        i = 1
      else
        i = i + 1
      end
    end
  end
  local stats = plan:stats()
  plan:close()
  if TRACE then
    local ks = {}
    for k in pairs(TRACE) do ks[#ks + 1] = k end
    table.sort(ks, function(a, b) return TRACE[a] > TRACE[b] end)
    for j = 1, math.min(8, #ks) do io.stderr:write(("  inflight/held %-6s %.2fs\n"):format(ks[j], TRACE[ks[j]])) end
    for k in pairs(TRACE) do TRACE[k] = nil end
  end
  local pages = math.ceil(#got / 1000)
  local bound = math.ceil(n / 1000) / (opts.true_rate or 60)
  local fig = { requests = srv.requests, pages = pages, per_page = srv.requests / math.max(1, pages),
                time = now, bound = bound, ratio = now / bound, throttled = srv.throttled,
                fetched = srv.fetched, ranges = stats.ranges, max_held = max_held }
  if REPORT then
    io.stderr:write(("%-9s N=%-7d p=%-2d %-9s req=%-5d pages=%-4d req/page=%.3f time=%.2fs bound=%.2fs "
      .. "x%.3f 429=%d fetched/listed=%.3f ranges=%d\n"):format(shape, n, opts.parallel,
      opts.ordered == false and "unordered" or "ordered", fig.requests, pages, fig.per_page, now, bound,
      fig.ratio, fig.throttled, fig.fetched / math.max(1, #got), fig.ranges))
  end
  return got, keys, fig
end

return { simulate = simulate, store_keys = store_keys, SHAPES = SHAPES }
