-- Paging, decoding and retry policy through the sans-I/O listing (store:listing): replies are
-- handed to the C core as strings, with a simulated clock; no socket, no emulator, no waiting.
local T = require "spec.support.env"

local TOKEN = "apify_api_policy_SECRET_5a4b3c2d1e"

local function page(keys, truncated, next_key)
  local items = {}
  for i, k in ipairs(keys) do
    items[i] = string.format('{"key":"%s","size":%d}', k, i)
  end
  local nxt = ""
  if next_key == false then nxt = ',"nextExclusiveStartKey":null'
  elseif next_key then nxt = string.format(',"nextExclusiveStartKey":"%s"', next_key) end
  return string.format('{"data":{"items":[%s],"isTruncated":%s%s}}', table.concat(items, ","),
    tostring(truncated), nxt)
end

local function new_listing(client_opts, opts)
  local c = { token = TOKEN, base_url = "http://127.0.0.1:9", min_delay = 0.5, max_retries = 3 }
  for k, v in pairs(client_opts or {}) do c[k] = v end
  local o = { parallel = 1 }            -- the page-by-page sans-I/O listing
  for k, v in pairs(opts or {}) do o[k] = v end
  return T.kvs.new(c):store("s"):listing(o)
end

-- Feeds `replies` (each { status, body, headers } or a page body) in turn; returns every key
-- handed out, the last step and its value, and the query of each request.
local function feed(listing, replies)
  local keys, queries, step, x = {}, {}, nil, nil
  for _, r in ipairs(replies) do
    local url = listing:request()
    if not url then break end
    queries[#queries + 1] = url:match("%?(.*)$")
    if type(r) == "string" then r = { 200, r } end
    step, x = listing:reply(r[1], r[3] or {}, r[2], r.now)
    if step == "page" then
      for k in listing:page_keys() do keys[#keys + 1] = k end
    elseif step == "failed" then
      break
    end
  end
  return keys, step, x, queries
end

describe("listing policy (sans-I/O)", function()
  describe("every key exactly once", function()
    it("drops keys at or below the last key handed out", function()
      local keys, step = feed(new_listing(nil, { exclusiveStartKey = "b" }), {
        page({ "a", "b", "c", "d" }, true, "d"),
        page({ "c", "d", "d", "e" }, true, "b"),    -- a repeat and a cursor behind
        page({ "f" }, false),
      })
      assert.are.same({ "c", "d", "e", "f" }, keys)
      assert.are.equal("page", step)
    end)

    it("fails a page whose keys are out of byte order, without a retry", function()
      local keys, step, err = feed(new_listing(), { page({ "z", "a" }, true, "z") })
      assert.are.same({}, keys)
      assert.are.equal("failed", step)
      assert.are.equal("invalid-response", err.type)
      assert.matches("byte order", err.message, 1, true)
      assert.are.equal(0, err.retries)
    end)

    it("goes on after the last key, whatever the next cursor says", function()
      local listing = new_listing()
      local _, _, _, q = feed(listing, {
        page({ "a", "b" }, true, "zzz"),   -- ahead: not trusted, nothing skipped
        page({ "c" }, true, false),        -- null
        page({ "d" }, true),               -- absent
        page({ "e" }, false),
      })
      assert.are.same({ "limit=1000", "exclusiveStartKey=b&limit=1000",
                        "exclusiveStartKey=c&limit=1000", "exclusiveStartKey=d&limit=1000" }, q)
      assert.is_true(listing:finished())
    end)

    it("goes on after an empty truncated page at its next cursor", function()
      local keys, step = feed(new_listing(), {
        page({}, true, "m"), page({ "n" }, false),
      })
      assert.are.same({ "n" }, keys)
      assert.are.equal("page", step)
    end)

    it("fails when a page with no new key has no cursor that advances", function()
      for _, p in ipairs({ page({}, true), page({}, true, false), page({ "a" }, true, "a") }) do
        local _, step, err = feed(new_listing(nil, { exclusiveStartKey = "a" }), { p })
        assert.are.equal("failed", step)
        assert.are.equal("cursor-not-advancing", err.type)
        assert.are.equal(0, err.retries)
      end
    end)

    it("ends only when the API says the listing is not truncated", function()
      local listing = new_listing()
      feed(listing, { page({}, true, "a"), page({}, true, "b") })
      assert.is_false(listing:finished())
    end)
  end)

  describe("bounded pages", function()
    it("refuses more items than asked for", function()
      local _, step, err = feed(new_listing(nil, { page_size = 2 }), { page({ "a", "b", "c" }, false) })
      assert.are.equal("failed", step)
      assert.are.equal("invalid-response", err.type)
      assert.matches("more items than the 2 asked for", err.message, 1, true)
      assert.are.equal(0, err.retries)
    end)

    it("refuses a body larger than a page may be", function()
      local big = '{"data":{"items":[{"key":"a","size":1,"x":"' .. ("x"):rep(80000) .. '"}],"isTruncated":false}}'
      local _, step, err = feed(new_listing(nil, { page_size = 1 }), { big })
      assert.are.equal("failed", step)
      assert.matches("larger than 69632 bytes", err.message, 1, true)
      assert.are.equal(0, err.retries)
    end)

    it("refuses lone surrogate escapes and keeps proper pairs", function()
      for _, key in ipairs({ "\\ud800x", "\\udc00", "a\\ud800\\u0041", "\\ud800" }) do
        local body = '{"data":{"items":[{"key":"' .. key .. '","size":1}],"isTruncated":false}}'
        local _, step, err = feed(new_listing(), { body })
        assert.are.equal("failed", step)
        assert.matches("surrogate", err.message, 1, true)
      end
      local keys = feed(new_listing(), {
        '{"data":{"items":[{"key":"\\\\ud800","size":1},{"key":"\\ud83d\\ude00","size":1}],"isTruncated":false}}' })
      assert.are.same({ "\\ud800", "\240\159\152\128" }, keys)
    end)

    it("decodes an error body the same whole or byte by byte", function()
      local body = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
      local _, _, whole = feed(new_listing({ max_retries = 0 }), { { 502, body } })
      local listing = new_listing({ max_retries = 0 })
      listing:request()
      listing:begin(502)
      for i = 1, #body do   -- a driver stops reading when body() says the rest cannot matter
        if not listing:body(body:sub(i, i)) then break end
      end
      local _, bytewise = listing:finish()
      assert.are.equal(whole.message, bytewise.message)
      assert.matches("HTTP 502: <html><head><title>502 Bad Gateway", whole.message, 1, true)
    end)
  end)

  describe("errors never hold the token", function()
    local function check(status, body, headers)
      local _, step, err = feed(new_listing({ max_retries = 0 }), { { status, body, headers } })
      assert.are.equal("failed", step)
      for _, s in ipairs({ err.type, err.message, tostring(err) }) do
        assert.is_nil(s:find(TOKEN, 1, true))
        assert.is_nil(s:find(TOKEN:sub(1, 12), 1, true))
      end
      return err
    end

    it("redacts an echo in an API error's type and message", function()
      local err = check(401, '{"error":{"type":"bad-' .. TOKEN .. '","message":"token ' .. TOKEN ..
        ' is not valid; Bearer ' .. TOKEN .. '"}}')
      assert.matches("[redacted]", err.message, 1, true)
      assert.matches("[redacted]", err.type, 1, true)
    end)

    it("redacts an echo in an HTML error page and a copy cut off at the end", function()
      local err = check(502, "<html>Authorization: Bearer " .. TOKEN .. "</html>")
      assert.matches("Bearer [redacted]", err.message, 1, true)
      check(500, '{"error":{"type":"x","message":"' .. ("m"):rep(505) .. TOKEN .. '"}}')
    end)
  end)

  describe("retries", function()
    it("caps waits at max_delay and fails on a Retry-After above it", function()
      local listing = new_listing({ min_delay = 10, max_delay = 2, max_retries = 5 })
      local _, step, wait = feed(listing, { { 503, "" } })
      assert.are.equal("retry", step)
      assert.is_true(wait <= 2)
      for _, ra in ipairs({ "999999", ("9"):rep(40), ("9"):rep(400), "Fri, 01 Jan 2100 00:00:00 GMT" }) do
        local _, s, err = feed(new_listing({ max_delay = 5 }), {
          { 429, '{"error":{"type":"rate-limit-exceeded","message":"slow down"}}', { ["Retry-After"] = ra } } })
        assert.are.equal("failed", s)
        assert.are.equal("rate-limit-exceeded", err.type)
        assert.matches("more than max_delay (5 s)", err.message, 1, true)
        assert.are.equal(0, err.retries)
      end
      local _, s, w = feed(new_listing({ max_delay = 5 }), { { 429, "", { ["Retry-After"] = "4" } } })
      assert.are.equal("retry", s)
      assert.are.equal(4, w)
    end)

    it("reads Retry-After as delta-seconds or an HTTP date, and ignores anything else", function()
      local function after_429(ra)    -- the step and the wait after a 429 with this Retry-After
        local _, s, w = feed(new_listing({ min_delay = 0.01, max_delay = 5 }),
          { { 429, "", { ["Retry-After"] = ra } } })
        return s, w
      end
      for ra, want in pairs({ ["3"] = 3, ["2.5"] = 2.5, ["0.25 "] = 0.25, ["004"] = 4 }) do
        local s, w = after_429(ra)
        assert.are.equal("retry", s)
        assert.are.equal(want, w, ra)
      end
      -- not delta-seconds (RFC 9110: digits): the listing's own back-off, neither a wait of
      -- 1000 s ("1e3", above max_delay: that would fail the listing) nor of 16 s ("0x10")
      for _, ra in ipairs({ "1e3", "0x10", "1.5e1", "5s", "2.", "-5", "+5", "soon", "inf", "nan" }) do
        local s, w = after_429(ra)
        assert.are.equal("retry", s, ra)
        assert.is_true(w >= 0.01 and w <= 0.02, ("Retry-After %q: a wait of %s s"):format(ra, w))
      end
    end)

    it("jitters retry delays from `seed`: the same seed, the same waits", function()
      local function waits(seed)
        local out = {}
        local listing = new_listing({ max_retries = 5 }, { seed = seed })
        for i = 1, 4 do
          local _, step, wait = feed(listing, { { 503, "" } })
          assert.are.equal("retry", step)
          out[i] = wait
        end
        listing:close()
        return table.concat(out, " ")
      end
      assert.are.equal(waits(7), waits(7))
      assert.are_not.equal(waits(7), waits(8))
      for _, bad in ipairs({ -1, 1.5, 2 ^ 53 }) do
        assert.matches("seed", T.raised_message(function() new_listing({}, { seed = bad }) end))
      end
      assert.matches("seed", T.raised_message(function() new_listing({}, { seed = "7" }) end))
      assert.matches("unknown option 'seed'", T.raised_message(function() T.kvs.new{ token = false }:store("s"):keys({ seed = 1 }) end))
    end)

    it("stops retrying a page past max_elapsed, on the caller's clock", function()
      local listing = new_listing({ max_elapsed = 10, min_delay = 1, max_delay = 4, max_retries = 50 })
      local replies = {}
      for i = 0, 20 do replies[#replies + 1] = { 503, "", now = i * 3 } end
      local _, step, err = feed(listing, replies)
      assert.are.equal("failed", step)
      assert.matches("max_elapsed (10 s)", err.message, 1, true)
      assert.is_true(err.retries >= 2 and err.retries <= 4)
    end)

    it("asks on_retry before each retry; false gives up", function()
      local calls = {}
      local listing = new_listing({ max_retries = 5, on_retry = function(err, attempt, delay)
        calls[#calls + 1] = { err.type, attempt, delay, tostring(err) }
        return attempt < 2
      end })
      local _, step, err = feed(listing, { { 503, "" }, { 503, "" }, { 503, "" } })
      assert.are.equal("failed", step)
      assert.are.equal(2, #calls)
      assert.are.same({ "http-error", 1 }, { calls[1][1], calls[1][2] })
      assert.are.equal(2, calls[2][2])
      assert.is_true(calls[1][3] >= 0.5 and calls[1][3] <= 1)
      assert.matches("on_retry said no", err.message, 1, true)
      assert.are.equal(1, err.retries)
    end)

    it("fails as callback-error when on_retry raises", function()
      local listing = new_listing({ on_retry = function() error("boom") end })
      local _, step, err = feed(listing, { { 503, "" } })
      assert.are.equal("failed", step)
      assert.are.equal("callback-error", err.type)
      assert.matches("boom", err.message, 1, true)
    end)

    it("never retries TLS and request faults", function()
      for _, fault in ipairs({ "tls", "request" }) do
        local listing = new_listing({ max_retries = 8 })
        listing:request()
        local step, err = listing:finish(fault, "certificate verify failed")
        assert.are.equal("failed", step)
        assert.are.equal(fault == "tls" and "tls-error" or "request-error", err.type)
        assert.are.equal(0, err.retries)
      end
    end)

    it("retries a 429 whose API body says out-of-memory", function()
      local _, step = feed(new_listing(), { { 429, '{"error":{"type":"out-of-memory","message":"x"}}' } })
      assert.are.equal("retry", step)
    end)

    it("treats a blank API error type as none", function()
      local _, _, err = feed(new_listing({ max_retries = 0 }), { { 404, '{"error":{"type":" ","message":""}}' } })
      assert.are.equal("http-error", err.type)
    end)

    it("fails a request whose cursor makes the URL too long, without a retry", function()
      local listing = new_listing(nil, { exclusiveStartKey = ("k"):rep(70000) })
      local url, err = listing:request()
      assert.is_nil(url)
      assert.are.equal("request-error", err.type)
      assert.are.equal(0, err.retries)
    end)
  end)
end)
