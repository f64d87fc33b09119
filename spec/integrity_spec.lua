-- The listing integrity contract (R1-R8): whatever a server or proxy sends, a listing hands out
-- every key once, in byte order, or fails with the documented error, quickly and with bounded
-- memory. Each case is a real reply from the emulator (emulator/emu_faults.lua, "Fault kinds").
-- The paging rules (R1, R2) hold on every driver: store:keys, store:job, store:keys{parallel}.
local T = require "spec.support.env"

-- distinctive, so that an echo of it in any error text cannot be missed (R5)
local TOKEN = "apify_api_INTEGRITY_tok_Zq7Xw42Lm9"
local N, PAGE = 100, 10        -- the store "s": keys k00001..k00100, listed 10 keys a page
local ALL = T.numbered(N)
local MB = 1024                -- VmRSS / VmHWM are in kB
local HUGE = 1024 * 1024 * 1024

---------------------------------------------------------------------------------------------------
-- helpers

local function range(list, from, to)
  local out = {}
  for i = from, to or #list do out[#out + 1] = list[i] end
  return out
end

local function concat(a, b)
  local out = range(a, 1)
  for _, v in ipairs(b) do out[#out + 1] = v end
  return out
end

local function merge(a, b)
  local out = {}
  for k, v in pairs(a or {}) do out[k] = v end
  for k, v in pairs(b or {}) do out[k] = v end
  return out
end

-- Each driver lists a store and returns the keys it handed out and the error it ended with
-- (nil when it finished).
local by_keys, by_job = T.keys_via_keys, T.keys_via_job

local function by_parallel(store, opts)
  return by_keys(store, merge(opts, { parallel = 4, rate_limit = 2000 }))
end

-- store:keys and store:job page by page (parallel = 1), as the rules were first written for
local function page_by_page(run)
  return function(store, opts) return run(store, merge({ parallel = 1 }, opts)) end
end
local keys_1, job_1 = page_by_page(by_keys), page_by_page(by_job)

-- whether a driver lists key ranges side by side (its requests are not one page after another)
local function ranges(name)
  return name:find("{", 1, true) ~= nil
end

local DRIVERS = {
  { "store:keys", keys_1 }, { "store:job", job_1 }, { "store:keys{parallel=4}", by_parallel },
  { "store:keys{} (auto)", by_keys },
}

-- One `it` per driver; body(list) gets list(opts) -> keys, err (page_size PAGE unless opts say).
local function each_driver(title, body)
  for _, d in ipairs(DRIVERS) do
    local name, run = d[1], d[2]
    it(title .. " [" .. name .. "]", function()
      body(function(store, opts) return run(store, merge({ page_size = PAGE }, opts)) end, name)
    end)
  end
end

local function assert_listed(expected, keys, err)
  assert(err == nil, "the listing failed: " .. tostring(err))
  assert.are.equal(#expected, #keys, ("%d keys handed out, %d expected"):format(#keys, #expected))
  assert.are.same(expected, keys)
end

-- The error raised (a table, with type, a message matching `pattern`, and `retries`).
local function assert_failed(err, err_type, pattern, retries)
  assert(type(err) == "table", "expected an error table, got " .. type(err) .. ": " .. tostring(err))
  assert.are.equal(err_type, err.type, "error: " .. tostring(err))
  if pattern then assert.matches(pattern, err.message or "") end
  if retries then assert.are.equal(retries, err.retries, "error: " .. tostring(err)) end
end

-- Keys handed out before a failure: strictly increasing keys of the store (no key twice).
local function assert_increasing_subset(keys, of)
  local index = {}
  for i, k in ipairs(of or ALL) do index[k] = i end
  local last = 0
  for _, k in ipairs(keys) do
    local i = index[k]
    assert(i, "a key that is not in the store: " .. tostring(k))
    assert(i > last, "out of order or twice: " .. k)
    last = i
  end
end

local function assert_no_token(err)
  assert.is_nil(tostring(err):find(TOKEN, 1, true), "token in tostring(err): " .. tostring(err))
  if type(err) == "table" then
    assert.is_nil((err.type or ""):find(TOKEN, 1, true), "token in err.type")
    assert.is_nil((err.message or ""):find(TOKEN, 1, true), "token in err.message")
  end
end

-- A file made once by a shell command (writing to @OUT@) and kept under build/, so the
-- slow ones (gzip -9 of a gigabyte) are made once per checkout, not per run. Absolute path.
local function fixture(name, command)
  local dir = T.read("pwd"):gsub("%s+$", "") .. "/build/test-fixtures"
  local path = dir .. "/" .. name
  if not io.open(path, "rb") then
    assert(T.sh("mkdir -p '" .. dir .. "'"))
    -- two targets of the suite may make it at once: each writes its own part file
    local tmp = ("%s.part.%s"):format(path, tostring({}):match("%x+$"))   -- an address: per process
    assert(T.sh("( " .. command:gsub("@OUT@", "'" .. tmp .. "'") .. " ) && mv '" .. tmp .. "' '" .. path .. "'"),
      "could not make " .. path)
  end
  return path
end

-- A Lua literal of a flat table of strings, numbers and booleans.
local function literal(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = ("[%q]=%s"):format(k, type(v) == "string" and ("%q"):format(v) or tostring(v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Lists store "s" with store:keys(keys_opts) in a fresh Lua process (the same Lua and module),
-- killed after `limit` seconds: a memory blow-up or a hang cannot take the suite down, and the
-- process's own peak RSS is the measure. Returns { keys = n, type, message, retries, grown_kb,
-- seconds, cpu (the process's CPU seconds: unlike wall time, a busy machine does not stretch
-- them) }, or nil and what went wrong.
local function list_in_child(client_opts, keys_opts, limit)
  local dir = T.tmpdir()
  local script = dir .. "/list.lua"
  T.write_file(script, ([[
package.cpath = %q .. ";" .. package.cpath
local kvs = require "apify.kvs"
local socket = require "socket"
local function kb(field)
  local f = io.open("/proc/self/status", "rb")
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(field .. ":%%s*(%%d+) kB"))
end
local store = kvs.new(%s):store("s")
collectgarbage("collect")
local before, t0, c0, n = kb("VmRSS"), socket.gettime(), os.clock(), 0
local ok, err = pcall(function() for _ in store:keys(%s) do n = n + 1 end end)
local out = { keys = n, seconds = socket.gettime() - t0, cpu = os.clock() - c0,
              grown_kb = kb("VmHWM") - before }
if not ok then
  out.type = type(err) == "table" and err.type or "(not a table)"
  out.message = type(err) == "table" and err.message or tostring(err)
  out.retries = type(err) == "table" and err.retries or -1
end
local parts = {}
for k, v in pairs(out) do parts[#parts + 1] = ("[%%q]=%%s"):format(k, type(v) == "string" and ("%%q"):format(v) or tostring(v)) end
io.write("return {", table.concat(parts, ","), "}")
]]):format(T.cpath, literal(client_opts), literal(keys_opts)))
  local out = T.read("timeout -s KILL " .. math.ceil(limit) .. " " .. T.lua .. " '" .. script .. "' 2>&1")
  T.rmrf(dir)
  local chunk = (loadstring or load)(out)
  if not chunk or not out:match("^return {") then
    return nil, "the listing process did not finish within " .. limit .. " s or crashed: " .. out:sub(1, 500)
  end
  return chunk()
end

-- A child's result: failed with err_type and a message matching one of `patterns`, no retry,
-- no key, a bounded peak RSS, and little CPU (decoding the whole bomb would take seconds of it;
-- a hang is caught by the child's time limit).
local function assert_child_failed(res, failure, err_type, patterns)
  assert(res, failure)
  assert(res.type, ("the listing ended without an error after %d keys (peak RSS +%.1f MB, %.1f s)")
    :format(res.keys, res.grown_kb / MB, res.seconds))
  assert.are.equal(err_type, res.type, "error: " .. tostring(res.type) .. ": " .. tostring(res.message))
  local matched = false
  for _, p in ipairs(patterns) do matched = matched or res.message:find(p, 1, true) ~= nil end
  assert(matched, "message: " .. res.message)
  assert.are.equal(0, res.retries, res.message)
  assert.are.equal(0, res.keys)
  assert.is_true(res.grown_kb < 60 * MB, ("peak RSS grew by %.1f MB"):format(res.grown_kb / MB))
  assert.is_true(res.cpu < 2 * T.slow, ("took %.2f s of CPU (%.1f s)"):format(res.cpu, res.seconds))
end

---------------------------------------------------------------------------------------------------

describe("listing integrity", function()
  local ctx = T.emulated({ s = ALL }, TOKEN)
  local emu, client, store
  lazy_setup(function() emu, client = ctx.emu, ctx.client; store = client:store("s") end)

  local function requests() return #emu:requests() end

  -- a fault that lets one page with keys through untouched: the next fault lands mid-listing
  local PASS_ONE = { kind = "stall", seconds = 0, only_nonempty = true }

  describe("R2: where a listing goes on", function()
    it("an empty page with a next cursor mid-listing does not end the listing [store:keys]", function()
      -- page 2 comes back empty with the cursor where it would have ended, as under a
      -- server-side filter: its keys are not in the reply, everything after them is
      emu:faults({ PASS_ONE, { kind = "empty_page" } })
      local keys, err = keys_1(store, { page_size = PAGE })
      assert_listed(concat(range(ALL, 1, 10), range(ALL, 21)), keys, err)
      assert.is_true(requests() <= 11, requests() .. " requests")
    end)

    each_driver("empty pages with a cursor just past the last key do not end the listing", function(list)
      emu:faults({ PASS_ONE, { kind = "empty_page", mode = "successor", only_nonempty = true, times = 3 } })
      assert_listed(ALL, list(store))
    end)

    each_driver("isTruncated with a null next cursor: continue after the page's last key", function(list)
      emu:faults({ { kind = "no_next_field", null = true, only_nonempty = true, times = 100 } })
      assert_listed(ALL, list(store))
    end)

    each_driver("isTruncated with no next cursor field: continue after the page's last key", function(list)
      emu:faults({ { kind = "no_next_field", only_nonempty = true, times = 100 } })
      assert_listed(ALL, list(store))
    end)

    for _, case in ipairs({ { "null", "a null cursor" }, { "absent", "no cursor field" } }) do
      local mode = case[1]
      each_driver("an empty truncated page with " .. case[2] .. " fails: cursor-not-advancing", function(list, name)
        emu:faults({ PASS_ONE, { kind = "empty_page", mode = mode, only_nonempty = true } })
        local keys, err = list(store)
        assert_failed(err, "cursor-not-advancing", nil, 0)
        assert_increasing_subset(keys)
        if not ranges(name) then
          assert.is_true(#keys <= PAGE)
          assert.is_true(requests() <= 3, requests() .. " requests")
        end
      end)
    end

    each_driver("an empty truncated page whose cursor sorts before the cursor fails", function(list)
      emu:faults({ PASS_ONE, { kind = "empty_page", next = "a", only_nonempty = true } })
      local keys, err = list(store)
      assert_failed(err, "cursor-not-advancing", nil, 0)
      assert_increasing_subset(keys)
    end)
  end)

  describe("R1/R2: keys strictly increasing, never twice", function()
    each_driver("a next cursor behind the page's last key: exactly the 100 keys", function(list, name)
      emu:faults({ { kind = "cursor_behind", times = 1000 } })
      assert_listed(ALL, list(store))
      if not ranges(name) then
        -- continued after each page's last key: no page asked for twice
        assert.is_true(requests() <= N / PAGE + 1, requests() .. " requests")
      end
    end)

    each_driver("cursor_stuck on the pages with keys: every key once (continue after the last key)", function(list)
      emu:faults({ { kind = "cursor_stuck", only_nonempty = true, times = 1000 },
                   { kind = "cursor_stuck", mode = "before", only_nonempty = true, times = 1000 } })
      assert_listed(ALL, list(store))
    end)

    each_driver("cursor_stuck on every page: the keys, then cursor-not-advancing at the empty page", function(list, name)
      for _, mode in ipairs({ "equal", "before" }) do
        emu:clear_faults()
        emu:clear_requests()
        emu:faults({ { kind = "cursor_stuck", mode = mode, times = 1000 } })
        local keys, err = list(store)
        assert_failed(err, "cursor-not-advancing", nil, 0)
        if ranges(name) then
          assert_increasing_subset(keys)
        else
          -- the page after k00100 is empty, still "truncated", its cursor not after k00100
          assert.are.same(ALL, keys)
          assert.is_true(requests() <= N / PAGE + 1, requests() .. " requests")
        end
      end
    end)

    each_driver("a next cursor ahead of the page's last key: no key lost", function(list)
      emu:faults({ { kind = "cursor_ahead", times = 1000 } })
      assert_listed(ALL, list(store))
    end)

    each_driver("a page in descending order fails: invalid-response, byte order, not retried", function(list, name)
      emu:faults({ { kind = "reverse_page", times = 1000 } })
      local keys, err = list(store)
      assert_failed(err, "invalid-response", "byte order", 0)
      assert.are.same({}, keys)
      if not ranges(name) then assert.are.equal(1, requests()) end
    end)

    each_driver("every item twice: every key once", function(list)
      emu:faults({ { kind = "duplicate_items", times = 1000 } })
      assert_listed(ALL, list(store))
    end)

    each_driver("pages that start with the cursor key: every key once", function(list)
      emu:faults({ { kind = "include_cursor", times = 1000 } })
      assert_listed(ALL, list(store))
    end)

    it("a first page that starts with the start key drops it [store:keys]", function()
      emu:faults({ { kind = "include_cursor", times = 1000 } })
      assert_listed(range(ALL, 51), keys_1(store, { page_size = PAGE, exclusiveStartKey = ALL[50] }))
    end)
  end)

  describe("R3: pages larger than asked", function()
    local function child_client(extra)
      return merge({ base_url = emu.base_url, token = TOKEN, min_delay = 0.01, max_retries = 2,
                     timeout = 20 }, extra)
    end

    it("a page of 1,000,000 items for limit 10 fails at once, memory bounded", function()
      emu:faults({ { kind = "oversized", times = 10 } })
      local res, failure = list_in_child(child_client(), { page_size = PAGE }, 60 * T.slow)
      assert_child_failed(res, failure, "invalid-response", { "more items than" })
      assert.are.equal(1, requests())
    end)

    local function bomb(path)
      -- the emulator serves body files from its run directory only
      path = emu:write_file(path:match("[^/]+$"), T.read_file(path))
      emu:faults({ { kind = "raw", body_file = path, times = 10,
        headers = { ["Content-Encoding"] = "gzip", ["Content-Type"] = "application/json" } } })
      return list_in_child(child_client(), {}, 60 * T.slow)
    end

    it("a gzip bomb (1 MB inflating to a 1 GB string) fails: larger than, memory bounded", function()
      local path = fixture("bomb-string.json.gz", [[{ printf '{"data":{"items":[{"key":"a","size":1,"pad":"';
        head -c ]] .. HUGE .. [[ /dev/zero | tr '\0' a; printf '"}],"isTruncated":false}}'; } | gzip -9 > @OUT@]])
      local res, failure = bomb(path)
      assert_child_failed(res, failure, "invalid-response", { "larger than" })
      assert.are.equal(1, requests())
    end)

    it("a gzip bomb of 1 GB of repeated items fails at once, memory bounded", function()
      local path = fixture("bomb-items.json.gz", [[{ printf '{"data":{"items":[';
        yes '{"key":"a","size":1},' 2>/dev/null | head -n 48000000; printf '{"key":"a","size":1}],"isTruncated":false}}'; } | gzip -9 > @OUT@]])
      local res, failure = bomb(path)
      -- 1001 items come long before 4 MiB of body: whichever of the two R3 limits is met first
      assert_child_failed(res, failure, "invalid-response", { "larger than", "more items than" })
      assert.are.equal(1, requests())
    end)
  end)

  describe("R4: lone UTF-16 surrogates", function()
    it("a key with a lone surrogate escape fails: invalid-response, surrogate, not retried", function()
      for _, key in ipairs({ [[\ud800x]], [[\udc00]], [[x\ud800]], [[\ud800\u0041]], [[\udfff\ud800]] }) do
        emu:clear_requests()
        emu:faults({ { kind = "raw", times = 10,
          body = '{"data":{"items":[{"key":"' .. key .. '","size":1}],"isTruncated":false}}' } })
        local keys, err = by_keys(store, {})
        assert_failed(err, "invalid-response", "surrogate", 0)
        assert.are.same({}, keys)
        assert.are.equal(1, requests())
        emu:clear_faults()
      end
      -- a proper pair is still a 4-byte UTF-8 character
      emu:faults({ { kind = "raw", body = [[{"data":{"items":[{"key":"\ud83d\ude00","size":1}],"isTruncated":false}}]] } })
      assert_listed({ "\240\159\152\128" }, by_keys(store, {}))
    end)
  end)

  describe("R5: the token never shows in an error", function()
    local function assert_redacted(err)
      assert_no_token(err)
      assert.truthy((err.message or ""):find("[redacted]", 1, true), "no [redacted] in " .. tostring(err.message))
      assert.truthy(tostring(err):find("[redacted]", 1, true))
    end

    it("echoed in a 401 API error's type and message", function()
      emu:faults({ { kind = "status", status = 401, times = 10, body = '{"error":{"type":"invalid-token-' .. TOKEN
        .. '","message":"Token ' .. TOKEN .. ' is not valid (' .. TOKEN .. ')"}}' } })
      local _, err = by_keys(store, {})
      assert.are.equal("table", type(err), tostring(err))
      assert.are.equal(401, err.status)
      assert.are.equal(0, err.retries)
      assert_redacted(err)
      assert.truthy(err.type:find("[redacted]", 1, true), "no [redacted] in type " .. tostring(err.type))
    end)

    it("echoed in a 500 error body", function()
      emu:faults({ { kind = "status", status = 500, times = 10,
        body = '{"error":{"type":"internal-server-error","message":"upstream rejected Bearer ' .. TOKEN .. '"}}' } })
      local _, err = by_keys(store, {})
      assert_failed(err, "internal-server-error", nil, 3)
      assert_redacted(err)
    end)

    it("echoed in an HTML 502 page of a proxy", function()
      emu:faults({ { kind = "status", status = 502, times = 10, headers = { ["Content-Type"] = "text/html" },
        body = "<html><title>502 " .. TOKEN .. "</title><body>Bad Gateway for Authorization: Bearer "
          .. TOKEN .. "</body></html>" } })
      local _, err = by_keys(store, {})
      assert_failed(err, "http-error", nil, 3)
      assert.are.equal(502, err.status)
      assert_redacted(err)
    end)

    it("in what on_retry is given", function()
      local seen = {}
      local c = T.client(emu, { token = TOKEN, on_retry = function(err, attempt, delay)
        seen[#seen + 1] = tostring(err) .. " " .. tostring(err.type) .. " " .. tostring(err.message)
          .. " " .. tostring(attempt) .. " " .. tostring(delay)
      end })
      emu:faults({ { kind = "status", status = 503, times = 10,
        body = '{"error":{"type":"server-busy","message":"busy for ' .. TOKEN .. '"}}' } })
      local _, err = by_keys(c:store("s"), {})
      assert_failed(err, "server-busy", nil, 3)
      assert.are.equal(3, #seen)
      for _, text in ipairs(seen) do
        assert.is_nil(text:find(TOKEN, 1, true), text)
        assert.truthy(text:find("[redacted]", 1, true), text)
      end
    end)
  end)

  describe("R6: max_delay", function()
    local huge = { ["1 and 39 zeros"] = "1" .. ("0"):rep(39), ["400 nines"] = ("9"):rep(400) }
    for _, retry_after in ipairs({ "999999", "Fri, 01 Jan 2100 00:00:00 GMT", "1 and 39 zeros", "400 nines" }) do
      it("Retry-After " .. retry_after .. " above max_delay = 5 fails at once", function()
        local label = retry_after
        retry_after = huge[label] or label
        emu:faults({ { kind = "status", status = 429, retry_after = retry_after, times = 10,
          body = '{"error":{"type":"rate-limit-exceeded","message":"You have exceeded the rate limit"}}' } })
        local c = T.client(emu, { token = TOKEN, max_delay = 5 })
        local t0 = T.now()
        local _, err = by_keys(c:store("s"), {})
        local took = T.now() - t0
        assert_failed(err, "rate-limit-exceeded", "max_delay", 0)
        assert.are.equal(429, err.status)
        assert.are.equal(1, requests())
        assert.is_true(took < 4.5, ("took %.1f s"):format(took))   -- never waited max_delay
      end)
    end
  end)

  describe("R7: timeout bounds each attempt, decoding included", function()
    for _, d in ipairs({ { "store:keys", keys_1 }, { "store:job", job_1 } }) do
      it("a body dripping past timeout = 1 fails as timeout [" .. d[1] .. "]", function()
        -- a 10-key page (~1.1 kB) in 64-byte pieces 0.5 s apart: ~8.5 s to send
        emu:faults({ { kind = "drip", bytes = 64, seconds = 0.5, times = 10 } })
        local c = T.client(emu, { token = TOKEN, timeout = 1, max_retries = 1 })
        local t0 = T.now()
        local keys, err = d[2](c:store("s"), { page_size = PAGE })
        local took = T.now() - t0
        assert_failed(err, "timeout", nil, 1)
        assert.are.same({}, keys)
        assert.is_true(took < 15 * T.slow, ("took %.1f s for 2 attempts of 1 s"):format(took))
      end)
    end
  end)

  describe("R8: failures that cannot heal are not retried", function()
    it("a TLS certificate that does not verify: tls-error, no retry", function()
      local dir = T.tmpdir()
      assert(T.sh("cd '" .. dir .. "' && openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1"
        .. " -keyout key.pem -out cert.pem >/dev/null 2>&1"))
      local port = T.free_port()
      local pid = tonumber(T.read("cd '" .. dir .. "' && { openssl s_server -accept 127.0.0.1:" .. port
        .. " -cert cert.pem -key key.pem -www -quiet </dev/null >/dev/null 2>&1 & echo $!; }"):match("%d+"))
      local ok, failure = pcall(function()
        T.wait_listening(port)
        local c = T.kvs.new({ base_url = "https://127.0.0.1:" .. port, token = TOKEN,
                              max_retries = 8, min_delay = 0.01 })
        local t0 = T.now()
        local keys, err = by_keys(c:store("s"), {})
        local took = T.now() - t0
        assert_failed(err, "tls-error", nil, 0)
        assert.are.same({}, keys)
        assert_no_token(err)
        -- 8 retries would wait 2.5 s or more
        assert.is_true(took < 10 * T.slow, ("took %.1f s"):format(took))
      end)
      if pid then T.sh("kill " .. pid .. " 2>/dev/null") end
      T.rmrf(dir)
      assert(ok, failure)
    end)

    it("a 70 KiB exclusiveStartKey (URL too long): request-error, no retry", function()
      local t0 = T.now()
      local keys, err = by_keys(store, { exclusiveStartKey = ("k"):rep(70 * 1024) })
      assert_failed(err, "request-error", nil, 0)
      assert.are.same({}, keys)
      assert.is_true(T.now() - t0 < 10 * T.slow)
    end)

    describe("retries of a refused connection", function()
      local function refused(extra)
        return T.kvs.new(merge({ base_url = "http://127.0.0.1:" .. T.free_port(), token = TOKEN,
                                 min_delay = 0.01, max_retries = 3 }, extra)):store("s")
      end

      it("are retried, and on_retry is called with (err, attempt, delay) before each", function()
        local calls = {}
        local s = refused({ on_retry = function(err, attempt, delay)
          calls[#calls + 1] = { type = type(err) == "table" and err.type, attempt = attempt, delay = delay }
        end })
        local _, err = by_keys(s, {})
        assert_failed(err, "network-error", nil, 3)
        assert.are.equal(3, #calls)
        for i, call in ipairs(calls) do
          assert.are.equal("network-error", call.type)
          assert.are.equal(i, call.attempt)
          assert.is_number(call.delay)
          assert.is_true(call.delay >= 0 and call.delay <= 60, "delay " .. tostring(call.delay))
        end
      end)

      it("stop at once when on_retry returns false", function()
        local calls = 0
        local s = refused({ max_retries = 8, min_delay = 0.5, on_retry = function(_, attempt)
          calls = calls + 1
          return attempt < 2
        end })
        local t0 = T.now()
        local _, err = by_keys(s, {})
        assert_failed(err, "network-error", nil, 1)   -- retry 1 made, retry 2 declined
        assert.are.equal(2, calls)
        -- one wait of 0.5..1 s, not the second one
        assert.is_true(T.now() - t0 < 10 * T.slow, ("took %.1f s"):format(T.now() - t0))
      end)

      it("stop once max_elapsed is spent", function()
        local s = refused({ max_retries = 50, min_delay = 0.2, max_elapsed = 1 })
        local t0 = T.now()
        local _, err = by_keys(s, {})
        local took = T.now() - t0
        assert_failed(err, "network-error")
        assert.is_true(err.retries >= 1 and err.retries <= 5, "retries " .. tostring(err.retries))
        assert.is_true(took < 10 * T.slow, ("took %.1f s"):format(took))
      end)

      it("fail as callback-error when on_retry raises", function()
        local calls = 0
        local s = refused({ on_retry = function()
          calls = calls + 1
          error("on_retry broke")
        end })
        local _, err = by_keys(s, {})
        assert_failed(err, "callback-error")
        assert.are.equal(1, calls)
      end)
    end)
  end)
end)
