-- spec/support/plan_sim.lua — a simulator for the parallel planner (store:listing{ parallel =
-- "auto" | n }): a fake store of N keys of a chosen shape answering pages as the API does
-- (exclusiveStartKey, limit, prefix, isTruncated, nextExclusiveStartKey, X-RateLimit-Limit,
-- 429 over a token bucket), a fake clock and a round trip per reply with seeded jitter.  No
-- sockets; deterministic: the same run gives the same figures on every Lua.
--
--   local sim = require "spec.support.plan_sim"
--   local fig = sim.simulate("prefixes", 300000, { parallel = "auto", rtt = 0.5 })
--   fig.count, fig.requests, fig.per_page, fig.time, fig.bound, fig.ratio, fig.throttled, ...
--
-- opts: parallel ("auto" by default), ordered (true), rate_limit, limit, prefix, seed (1);
-- the server: rtt (0.150 s), jitter (a share of rtt: each reply takes rtt x (1 ± jitter),
-- default 0.2), true_rate (60 requests/s let through), header (60: its X-RateLimit-Limit),
-- burst (10: its bucket), retry_after (seconds its 429s ask for, none by default); log (a table: every send and cancel is appended), collect (true:
-- fig.got lists the keys handed out, for unordered runs).  Ordered runs are checked against
-- the store as they go: fig.bad names the first key out of place (nil when none).
--
-- KVS_SIM_REPORT=1 prints the figures of each run.
local kvs = require "apify.kvs"

local REPORT = os.getenv("KVS_SIM_REPORT") == "1"
local ALPHABET = "!'()-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
local BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local HEX = "0123456789abcdef"
local unpack = table.unpack or unpack

-- Park-Miller: exact in doubles too (Lua 5.1/5.2, LuaJIT)
local function rng(seed)
  return function(m)
    seed = seed * 16807 % 2147483647
    return seed % m
  end
end

local function bytes_of(s)
  local t = {}
  for i = 1, #s do t[i] = s:byte(i) end
  return t
end

-- a random string of `len` characters of `chars` (a list of bytes)
local function rand_str(rnd, chars, len)
  local b, n = {}, #chars
  for j = 1, len do b[j] = chars[1 + rnd(n)] end
  return string.char(unpack(b))
end

-- `count` sorted random strings of `len` characters of `chars`, none twice, made in order: the
-- first 6 characters from sorted uniform numbers (exponential spacings), the rest at random, so
-- that no sort of the whole group is needed.
local function sorted_random(rnd, chars, len, count, out)
  local n, head = #chars, math.min(6, len)
  local space = n ^ head
  local u, prev = 0, nil
  local scale = 0
  local gaps = {}
  for i = 1, count + 1 do   -- spacings of count + 1 exponential draws, normalised
    local g = -math.log((1 + rnd(2147483646)) / 2147483647)
    gaps[i] = g
    scale = scale + g
  end
  local b = {}
  for i = 1, count do
    u = u + gaps[i] / scale
    local x = math.floor(u * space)
    for j = head, 1, -1 do
      b[j] = chars[1 + x % n]
      x = math.floor(x / n)
    end
    for j = head + 1, len do b[j] = chars[1 + rnd(n)] end
    local k = string.char(unpack(b, 1, len))
    if prev and k <= prev then k = prev .. string.char(chars[1 + rnd(n)]) end   -- same head
    out[#out + 1] = k
    prev = k
  end
end

-- 1..n in byte order of their decimal digits (1, 10, 100, 1000, 1001, ..., 2, 20, ...)
local function lexical_numbers(n, emit)
  local cur = 1
  for _ = 1, n do
    emit(cur)
    if cur * 10 <= n then
      cur = cur * 10
    else
      while cur % 10 == 9 or cur + 1 > n do cur = math.floor(cur / 10) end
      cur = cur + 1
    end
  end
end

-- Each shape makes n keys (about: a few more or less), in byte order, none twice.
local SHAPES = {
  -- numbered, zero-padded
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
    sorted_random(rnd, bytes_of(BASE62), 17, n - #keys - pages - shots, keys)
    for i = 5, #keys do keys[i] = "crawlee-snapshot-" .. keys[i] end
    for i = 1, pages do keys[#keys + 1] = run .. ("page-%08d"):format(i) end
    local s = {}
    sorted_random(rnd, bytes_of(HEX), 16, shots, s)
    for i = 1, #s do keys[#keys + 1] = run .. "screenshot-" .. s[i] end
    return keys
  end,
  -- a dense group of random ids, a long gap in key space, then sequential keys
  gap = function(n)
    local keys = {}
    sorted_random(rng(11), bytes_of(BASE62), 12, math.floor(n * 0.3), keys)
    for i = 1, #keys do keys[i] = "0" .. keys[i] end
    local i = 0
    while #keys < n do
      i = i + 1
      keys[#keys + 1] = ("record-%08d"):format(i)
    end
    return keys
  end,
  -- random keys over the whole allowed alphabet, 1..40 bytes
  alphabet = function(n)
    local rnd, keys, chars = rng(12345), {}, bytes_of(ALPHABET)
    while #keys < n do keys[#keys + 1] = rand_str(rnd, chars, 1 + rnd(40)) end
    table.sort(keys)
    local out = {}
    for i, k in ipairs(keys) do if k ~= keys[i - 1] then out[#out + 1] = k end end
    return out
  end,
  -- counters without zero padding, as actors write them ("product_1", "product_10", ...):
  -- byte order interleaves the lengths, so equal spans of key space hold very different
  -- numbers of keys; under a few prefixes of skewed sizes, with timestamped logs between
  counters = function(n)
    local keys = {}
    local groups = { { "detail_", 0.55 }, { "listing_", 0.25 }, { "log-", 0.05 }, { "product_", 0.15 } }
    local rnd = rng(23)
    for _, g in ipairs(groups) do
      local m = math.floor(n * g[2])
      if g[1] == "log-" then    -- bursts: many records within a second, then quiet minutes
        local t, burst, seq, last = 0, 0, 0, -1
        for _ = 1, m do
          if burst <= 0 then t, burst = t + 60000 + rnd(600000), 1 + rnd(2000) end
          burst = burst - 1
          t = t + rnd(3)
          seq = t == last and seq + 1 or 0      -- records of the same millisecond
          last = t
          keys[#keys + 1] = ("log-2026-%02d-%02dT%02d-%02d-%02d.%03dZ-%03d"):format(
            1 + math.floor(t / 2419200000), 1 + math.floor(t / 86400000) % 28,
            math.floor(t / 3600000) % 24, math.floor(t / 60000) % 60, math.floor(t / 1000) % 60,
            t % 1000, seq)
        end
      else
        lexical_numbers(m, function(i) keys[#keys + 1] = g[1] .. i end)
      end
    end
    return keys
  end,
}

local SHAPE_NAMES = { "uniform", "prefixes", "gap", "alphabet", "counters" }

local cache = {}
local function store_keys(shape, n)
  local id = shape .. n
  if not cache[id] then
    cache = {}                -- one store at a time: memory stays small
    collectgarbage()
    local keys = assert(SHAPES[shape], "no shape " .. shape)(n)
    for i = 2, #keys do assert(keys[i - 1] < keys[i], shape .. ": keys out of order") end
    cache[id] = keys
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

-- the allowed alphabet needs no JSON escapes; every record is 1 byte
local ITEM_SEP = '","size":1},{"key":"'

-- The fake API: a page for `url`, or a 429 when the bucket (rate, burst) is empty at `now`.
local function new_server(keys, opts)
  local srv = { rate = opts.true_rate or 60, burst = opts.burst or 10, header = opts.header or 60,
                requests = 0, throttled = 0, fetched = 0 }
  srv.tokens, srv.at = srv.burst, 0
  local headers = { ["X-RateLimit-Limit"] = tostring(srv.header), ["Content-Type"] = "application/json" }
  srv.limited = { ["X-RateLimit-Limit"] = headers["X-RateLimit-Limit"], ["Content-Type"] = "application/json",
                  ["Retry-After"] = opts.retry_after and tostring(opts.retry_after) or nil }
  function srv:answer(url, now)
    self.requests = self.requests + 1
    self.tokens = math.min(self.burst, self.tokens + (now - self.at) * self.rate)
    self.at = now
    if self.tokens < 1 then
      self.throttled = self.throttled + 1
      return 429, self.limited, '{"error":{"type":"rate-limit-exceeded","message":"You have exceeded the rate limit"}}'
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
    local first, last = i, i - 1
    while last - first + 1 < limit and last < #keys and keys[last + 1]:sub(1, #prefix) == prefix do
      last = last + 1
    end
    local more = last < #keys and keys[last + 1]:sub(1, #prefix) == prefix
    local count = last - first + 1
    self.fetched = self.fetched + count
    local items = count > 0 and '{"key":"' .. table.concat(keys, ITEM_SEP, first, last) .. '","size":1}' or ""
    return 200, headers, ('{"data":{"items":[%s],"count":%d,"limit":%d,"exclusiveStartKey":%s,'
      .. '"isTruncated":%s,"nextExclusiveStartKey":%s}}'):format(items, count, limit,
      q.exclusiveStartKey and '"' .. q.exclusiveStartKey .. '"' or "null",
      tostring(more), more and '"' .. keys[last] .. '"' or "null"), first, count
  end
  return srv
end

-- Drives a plan over the fake API with a fake clock; returns the figures.
local function simulate(shape, n, opts)
  opts = opts or {}
  local keys = store_keys(shape, n)
  n = #keys
  local srv = new_server(keys, opts)
  local client = kvs.new({ base_url = "http://sim.invalid", token = "sim-token", max_retries = 8 })
  local ordered = opts.ordered ~= false
  local plan = client:store("sim"):listing({ parallel = opts.parallel or "auto", ordered = ordered,
                                             rate_limit = opts.rate_limit, limit = opts.limit,
                                             prefix = opts.prefix, seed = opts.seed or 1 })
  local rtt, jitter = opts.rtt or 0.150, opts.jitter or 0.2
  local want = opts.want or keys        -- what an ordered run must hand out, in order
  local now, pending, got, count, bad, steps = 0, {}, opts.collect and {} or nil, 0, nil, 0
  local rnd = rng(99)
  local max_held, max_inflight = 0, 0
  while true do
    steps = steps + 1
    assert(steps < 1e7, "the simulation does not end")
    for _, id in ipairs(plan:cancels()) do
      for i = #pending, 1, -1 do
        if pending[i].id == id then
          table.remove(pending, i)
          if opts.log then opts.log[#opts.log + 1] = { cancel = id, t = now } end
        end
      end
    end
    while plan:take() do
      for k in plan:page_keys() do
        count = count + 1
        if got then got[count] = k end
        if ordered and not bad and want[count] ~= k then
          bad = ("key %d: got %q, want %q"):format(count, k, tostring(want[count]))
        end
      end
    end
    local err = plan:error()
    if err then error(err) end
    if plan:finished() then break end
    for _, req in ipairs(plan:requests(now)) do
      assert(req.headers.Authorization == "Bearer sim-token", "no token header")
      local status, headers, body, first, cnt = srv:answer(req.url, now)
      local latency = rtt * (1 + jitter * (rnd(2001) / 1000 - 1))
      pending[#pending + 1] = { id = req.id, due = now + latency, status = status, headers = headers,
                                body = body }
      if opts.log then
        opts.log[#opts.log + 1] = { id = req.id, shard = req.shard, t = now, due = now + latency,
                                    status = status, first = first, count = cnt }
      end
    end
    local wake = plan:timeout(now)
    wake = wake and now + wake or math.huge
    for _, r in ipairs(pending) do if r.due < wake then wake = r.due end end
    assert(wake < math.huge, "nothing to wait for, and not finished")
    if wake <= now then wake = now + 1e-6 end
    local st = plan:stats()        -- held: pages held and requests in flight
    if opts.on_step then opts.on_step(now, st, wake) end
    if st.held > max_held then max_held = st.held end
    if st.inflight > max_inflight then max_inflight = st.inflight end
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
  if ordered and not bad and count ~= #want then
    bad = ("%d keys handed out, %d wanted"):format(count, #want)
  end
  local pages = math.ceil(count / 1000)
  local true_rate = opts.true_rate or 60
  local bound = math.ceil(count / 1000) / true_rate + rtt
  local fig = { count = count, requests = srv.requests, pages = pages,
                per_page = srv.requests / math.max(1, pages), time = now, bound = bound,
                ratio = now / bound, throttled = srv.throttled, fetched = srv.fetched,
                ranges = stats.ranges, max_held = max_held, max_inflight = max_inflight, bad = bad,
                got = got }
  if REPORT then
    io.stderr:write(("%-9s N=%-7d p=%-4s rtt=%.3f %-9s req=%-5d pages=%-4d req/page=%.3f time=%.2fs "
      .. "bound=%.2fs x%.3f 429=%d ranges=%d inflight<=%d held<=%d%s\n"):format(shape, n,
      tostring(opts.parallel or "auto"), rtt, ordered and "ordered" or "unordered", fig.requests,
      pages, fig.per_page, now, bound, fig.ratio, fig.throttled, fig.ranges, max_inflight, max_held,
      bad and "  BAD: " .. bad or ""))
  end
  return fig
end

return { simulate = simulate, store_keys = store_keys, SHAPES = SHAPES, SHAPE_NAMES = SHAPE_NAMES }
