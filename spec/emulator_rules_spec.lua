-- spec/emulator_rules_spec.lua
--
-- Owns: the API's rules the emulator applies (emulator/api_rules.lua): several workers sharing
-- them, the rate limit, latency, collections and signatures.
-- The emulator (emulator/kvs_emulator.lua and its parts) runs in nginx, started through
-- emulator/launch.lua; the helpers are spec/support/emulator.lua's. Needs only luasocket and
-- lua-cjson. Run from the repository root: lua5.X /usr/bin/busted spec/emulator_rules_spec.lua

package.path = "./?.lua;" .. package.path

local socket = require "socket"
local cjson = require "cjson"
local launch = require "emulator.launch"
local E = require "spec.support.emulator"

local write_file = launch.write_file
local connect = E.connect
local mkdir, scratch_dir, control, remove_scratch = E.mkdir, E.scratch_dir, E.control, E.remove_scratch
local request, get, keys_path, list = E.request, E.get, E.keys_path, E.list
local keys_of, url_encode, paging_key, paging_keys = E.keys_of, E.url_encode, E.paging_key, E.paging_keys

---------------------------------------------------------------------------------------------------

describe("kvs emulator with two workers (launch.start{ workers = 2 })", function()
  local tmp, emu

  lazy_setup(function()
    tmp = scratch_dir()
    mkdir(tmp .. "/key_value_stores/w")
    for i = 1, 30 do write_file(tmp .. "/key_value_stores/w/" .. paging_key(i) .. ".txt", "x") end
    emu = launch.start{ storage = tmp, workers = 2 }
  end)

  lazy_teardown(function()
    if emu then
      emu:config{ rate_limit = 0, enforce = false, burst = false }
      emu:stop()
    end
    remove_scratch(tmp)
  end)

  -- a kept-alive connection stays with one worker: the worker pid its ping answers with
  local function worker_of(c)
    local res = assert(c:request("GET", "/_emulator/ping", control(emu)))
    return cjson.decode(res.body).pid
  end

  it("serves through both workers, which share the config, the rate limit and the listing", function()
    local a = connect(emu.port)
    local pid_a, b = worker_of(a), nil
    for _ = 1, 200 do           -- new connections until the other worker takes one
      local c = connect(emu.port)
      if worker_of(c) ~= pid_a then b = c break end
      c:close()
    end
    if not b then
      -- nginx wakes one idle worker per connection (EPOLLEXCLUSIVE): on a busy machine the
      -- same one can take every connection of the burst, and there is nothing to compare
      a:close()
      pending(("every one of 200 connections went to worker %d: nothing to compare"):format(pid_a))
      return
    end
    -- the same pages through either worker
    local function page_via(c, query)
      local res = assert(c:request("GET", keys_path("w", query)))
      assert.equal(200, res.status)
      return cjson.decode(res.body).data
    end
    for _, q in ipairs({ "limit=7", "exclusiveStartKey=" .. paging_key(20), "prefix=k-0001" }) do
      assert.same(keys_of(page_via(a, q)), keys_of(page_via(b, q)))
    end
    assert.same(paging_keys(1, 30), keys_of(page_via(b, nil)))
    -- a config set through one worker holds in the other; the bucket is one for both: its 4
    -- tokens and 2 a second, not 4 each
    emu:config{ rate_limit = 2, enforce = true, burst = 4 }
    local ok, t0 = 0, socket.gettime()
    for i = 1, 10 do
      local res = assert((i % 2 == 0 and a or b):request("GET", keys_path("w", "limit=1")))
      assert.equal("2", res.headers["x-ratelimit-limit"])
      if res.status == 200 then ok = ok + 1 else assert.equal(429, res.status) end
    end
    local elapsed = socket.gettime() - t0
    assert.is_true(ok >= 4 and ok <= 4 + math.floor(elapsed * 2) + 1, ok .. " of 10 in " .. elapsed .. " s")
    a:close()
    b:close()
  end)
end)

---------------------------------------------------------------------------------------------------
-- The API's rules: rate limit, latency with jitter, collections, signatures (emulator/api_rules.lua)

-- Signatures made by the official implementation (@apify/utilities createHmacSignature, the
-- library apify-client signs with) for the secret "k3y-s3cret" and the store id "SignedStore01";
-- spec/compat_spec.lua checks the same against the library itself.
local SECRET, SIGNED_ID = "k3y-s3cret", "SignedStore01"
local RECORD_SIGNATURES = {
  ["a"] = "b0IgvDghYAMe0OjjscLA", ["doc-1"] = "6r7055uaUcS8fsGf2wOH",
  ["INPUT"] = "BqOlKtgBLNGOx6kxfXgd", ["x!-_.'()y"] = "1gl0ElQgS7wSD84xkF51b",
}
local KEYS_SIGNATURES = {
  never = "MC4wLjFNSUppd084UFlpdklHb0NFQW9tWg",                      -- expiresAt 0
  expired = "MC4xMDAwLjR3Y2p4czFDQjl0N0VPUnFheTVs",                  -- expiresAt 1000 (1970)
  year2100 = "MC40MTAyNDQ0ODAwMDAwLmhER3NPcjJGQXQ2cGFZcjRtOWJO",     -- expiresAt 4102444800000
}

describe("kvs emulator: the API's rules", function()
  local tmp, emu, port, started_with
  local DOCS, IMGS = {}, {}

  local function reset()
    emu:config{ delay = 0, jitter = 0, seed = 1, rate_limit = 0, enforce = false, burst = false, token = false }
  end

  lazy_setup(function()
    tmp = scratch_dir()
    local kvs = tmp .. "/key_value_stores/"
    for _, s in ipairs({ "rl", "rl2", "plain" }) do
      mkdir(kvs .. s)
      for i = 1, 3 do write_file(kvs .. s .. "/k" .. i .. ".txt", "x") end
    end
    mkdir(kvs .. "schema")
    for i = 1, 23 do
      DOCS[#DOCS + 1] = string.format("doc-%02d", i)
      write_file(kvs .. "schema/" .. DOCS[#DOCS] .. ".json", "{}")
    end
    for i = 1, 40 do
      IMGS[#IMGS + 1] = string.format("img-%02d", i)
      write_file(kvs .. "schema/" .. IMGS[#IMGS] .. ".png", "png")
    end
    write_file(kvs .. "schema/OUTPUT.json", "{}")
    write_file(kvs .. "schema/__metadata__.json", cjson.encode({
      id = "schema", name = "schema",
      schema = { actorKeyValueStoreSchemaVersion = 1, title = "t", collections = {
        docs = { title = "Documents", keyPrefix = "doc-" },
        output = { title = "Output", key = "OUTPUT", contentTypes = { "application/json" } },
      } },
    }))
    mkdir(kvs .. "signed")
    for key in pairs(RECORD_SIGNATURES) do write_file(kvs .. "signed/" .. key .. ".bin", "s") end
    write_file(kvs .. "signed/__metadata__.json",
      cjson.encode({ id = SIGNED_ID, name = "signed", urlSigningSecretKey = SECRET }))
    emu = launch.start{ storage = tmp }
    port = emu.port
    started_with = emu:config()      -- the defaults, before any test changes them
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    remove_scratch(tmp)
  end)

  before_each(function() reset() end)

  -- statuses of n requests on one kept-alive connection, as fast as they go, and the seconds taken
  local function burst_of(n, store)
    local c = connect(port)
    local statuses, headers = {}, {}
    local t0 = socket.gettime()
    for i = 1, n do
      local res = assert(c:request("GET", keys_path(store or "rl", "limit=1")))
      statuses[i], headers[i] = res.status, res.headers
      if res.status == 429 then assert.equal("rate-limit-exceeded", cjson.decode(res.body).error.type) end
    end
    c:close()
    return statuses, socket.gettime() - t0, headers
  end

  local function count(list, v)
    local n = 0
    for _, x in ipairs(list) do if x == v then n = n + 1 end end
    return n
  end

  describe("rate limit", function()
    it("is on by default, as on the API (60 requests/s, burst 60); enforce = false: no 429 and no X-RateLimit-Limit, however fast the requests come", function()
      assert.equal(60, started_with.enforce)
      assert.equal(60, started_with.burst)
      local statuses, _, headers = burst_of(300)
      assert.equal(300, count(statuses, 200))
      assert.is_nil(headers[1]["x-ratelimit-limit"])
      assert.same(false, emu:config().enforce)
    end)

    it("enforce = true: a token bucket at rate_limit with `burst` tokens, 429 rate-limit-exceeded over it", function()
      local cfg = emu:config{ rate_limit = 2, enforce = true, burst = 5 }
      assert.equal(2, cfg.enforce)
      assert.equal(5, cfg.burst)
      local statuses, elapsed, headers = burst_of(9)
      -- the first `burst` pass at once; then one more each 1/2 s
      local ok = count(statuses, 200)
      assert.is_true(ok >= 5 and ok <= 5 + math.floor(elapsed * 2) + 1, ok .. " of 9 in " .. elapsed .. " s")
      for i = 1, 5 do assert.equal(200, statuses[i]) end
      assert.equal(429, statuses[9])
      for i = 1, 9 do assert.equal("2", headers[i]["x-ratelimit-limit"]) end
      local res = list(port, "rl", "limit=1")
      if res.status == 429 then
        assert.equal("rate-limit-exceeded", res.json.error.type)
        assert.truthy(res.json.error.message:find("2 requests per second", 1, true))
      end
      socket.sleep(0.6)   -- a token refills in 1/2 s
      assert.equal(200, list(port, "rl", "limit=1").status)
    end)

    it("counts each store on its own", function()
      emu:config{ rate_limit = 1, enforce = true, burst = 2 }
      local a = burst_of(4, "rl")
      assert.equal(429, a[4])
      assert.equal(200, list(port, "rl2").status)
      assert.equal(200, list(port, "~rl2").status)   -- the same store by another id: same bucket
      assert.equal(429, list(port, "rl2").status)
    end)

    it("enforce = n: a lower real limit than X-RateLimit-Limit says (a header that lies)", function()
      emu:config{ rate_limit = 60, enforce = 1, burst = 1 }
      local statuses, _, headers = burst_of(3)
      assert.same({ 200, 429, 429 }, statuses)
      assert.equal("60", headers[3]["x-ratelimit-limit"])
    end)

    it("enforce = true without rate_limit: the API's 60 requests/s, burst 60, header 60", function()
      local cfg = emu:config{ enforce = true }
      assert.equal(60, cfg.enforce)
      assert.equal(60, cfg.burst)
      local statuses, elapsed, headers = burst_of(200)
      local ok = count(statuses, 200)
      assert.equal("60", headers[200]["x-ratelimit-limit"])
      assert.is_true(ok >= 60, ok .. " passed")
      assert.is_true(ok <= 60 + math.ceil(elapsed * 60) + 1, ("%d passed in %.2f s"):format(ok, elapsed))
      assert.is_true(count(statuses, 429) > 0)
    end)

    it("sends X-RateLimit-Limit on error replies too", function()
      emu:config{ rate_limit = 60 }
      local res = get(port, keys_path("missing"))
      assert.equal(404, res.status)
      assert.equal("60", res.headers["x-ratelimit-limit"])
    end)

    it("rejects malformed settings", function()
      for _, bad in ipairs({ { enforce = -1 }, { enforce = "x" }, { burst = 0 }, { burst = 1.5 },
                             { jitter = -0.1 }, { seed = 1.5 }, { delay = 0.1, latency = 0.1 } }) do
        local ok, err = pcall(emu.config, emu, bad)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("400", 1, true), tostring(err))
      end
    end)
  end)

  describe("latency", function()
    -- the waits the emulator chose for the last n requests (request log field "latency")
    local function waits(n)
      emu:clear_requests()
      local c = connect(port)
      for _ = 1, n do assert(c:request("GET", keys_path("rl"))) end
      c:close()
      local out = {}
      for i, entry in ipairs(emu:requests()) do out[i] = entry.latency end
      return out
    end

    it("latency ± jitter per page, a sequence that the seed makes the same every time", function()
      emu:config{ latency = 0.02, jitter = 0.015, seed = 42 }
      local first = waits(12)
      assert.equal(12, #first)
      local lo, hi = math.huge, -math.huge
      for _, w in ipairs(first) do
        assert.is_true(w >= 0.005 - 1e-9 and w <= 0.035 + 1e-9, tostring(w))
        lo, hi = math.min(lo, w), math.max(hi, w)
      end
      assert.is_true(hi - lo > 0.005, "jitter spreads the waits")
      emu:config{ seed = 42 }
      assert.same(first, waits(12))
      emu:config{ seed = 43 }
      assert.are_not.same(first, waits(12))
      local res = list(port, "rl")
      assert.is_true(res.t_headers >= 0.004, "the reply waited")
    end)

    it("no jitter: exactly the latency; latency is the same setting as delay", function()
      local cfg = emu:config{ latency = 0.01 }
      assert.equal(0.01, cfg.delay)
      assert.same({ 0.01, 0.01, 0.01 }, waits(3))
    end)
  end)

  describe("collections", function()
    local function pages(query)
      local out, esk = {}, nil
      repeat
        local res = list(port, "schema", query .. (esk and ("&exclusiveStartKey=" .. url_encode(esk)) or ""))
        assert.equal(200, res.status)
        local data = res.json.data
        out[#out + 1] = data
        esk = data.nextExclusiveStartKey
        assert.is_true(#out < 100)
      until not data.isTruncated
      return out
    end

    it("keyPrefix: the collection's keys, filtered over each scanned chunk (empty pages with a cursor)", function()
      local got, empty = {}, 0
      local all = pages("limit=10&collection=docs")
      for _, data in ipairs(all) do
        for _, item in ipairs(data.items) do got[#got + 1] = item.key end
        assert.is_true(data.count == #data.items and #data.items <= 10)
        if #data.items == 0 and data.isTruncated then
          empty = empty + 1
          assert.is_string(data.nextExclusiveStartKey)
        end
      end
      assert.same(DOCS, got)
      -- 64 keys scanned 10 at a time: 7 pages; OUTPUT sorts first, the images after the docs
      assert.equal(7, #all)
      assert.is_true(empty >= 3, empty .. " empty pages")
      -- the cursor is the last key scanned, not the last key returned
      assert.equal("doc-09", all[1].nextExclusiveStartKey)
      assert.same({ "doc-01", "doc-02", "doc-03", "doc-04", "doc-05", "doc-06", "doc-07", "doc-08", "doc-09" },
        keys_of(all[1]))
    end)

    it("key: the one key, wherever it sorts", function()
      local got = {}
      for _, data in ipairs(pages("limit=20&collection=output")) do
        for _, item in ipairs(data.items) do got[#got + 1] = item.key end
      end
      assert.same({ "OUTPUT" }, got)
      local data = list(port, "schema", "collection=output").json.data
      assert.same({ "OUTPUT" }, keys_of(data))
      assert.is_false(data.isTruncated)
    end)

    it("together with prefix and exclusiveStartKey", function()
      local data = list(port, "schema", "collection=docs&prefix=doc-1&exclusiveStartKey=doc-12").json.data
      assert.same({ "doc-13", "doc-14", "doc-15", "doc-16", "doc-17", "doc-18", "doc-19" }, keys_of(data))
      assert.same({}, keys_of(list(port, "schema", "collection=docs&prefix=img-").json.data))
    end)

    it("answers 400 invalid-input for a collection the schema does not have", function()
      local res = list(port, "schema", "collection=nope")
      assert.equal(400, res.status)
      assert.equal("invalid-input", res.json.error.type)
      assert.truthy(res.json.error.message:find("nope", 1, true))
    end)

    it("ignores collection on a store without a schema", function()
      assert.same({ "k1", "k2", "k3" }, keys_of(list(port, "plain", "collection=whatever").json.data))
    end)
  end)

  describe("signatures", function()
    it("signs each recordPublicUrl with the store's urlSigningSecretKey", function()
      local data = list(port, "signed").json.data
      assert.equal(4, #data.items)
      for _, item in ipairs(data.items) do
        assert.equal(emu.base_url .. "/v2/key-value-stores/signed/records/" .. item.key:gsub("[^%w%-_%.!'%(%)]",
          function(ch) return ("%%%02X"):format(ch:byte()) end) .. "?signature=" .. RECORD_SIGNATURES[item.key],
          item.recordPublicUrl)
      end
    end)

    it("leaves record URLs unsigned on stores without a key, whatever signature is asked with", function()
      local data = list(port, "plain", "signature=abc123").json.data
      assert.equal(emu.base_url .. "/v2/key-value-stores/plain/records/k1", data.items[1].recordPublicUrl)
    end)

    it("lists with a valid keys signature instead of the token", function()
      emu:config{ token = "t0k3n" }
      assert.equal(401, list(port, "signed").status)
      for _, sig in ipairs({ KEYS_SIGNATURES.never, KEYS_SIGNATURES.year2100 }) do
        local res = list(port, "signed", "signature=" .. sig)
        assert.equal(200, res.status)
        assert.equal(4, #res.json.data.items)
      end
      assert.equal(200, list(port, "signed", nil, { Authorization = "Bearer t0k3n" }).status)
    end)

    it("answers 403 to a wrong, expired or malformed signature", function()
      for what, sig in pairs({ expired = KEYS_SIGNATURES.expired, malformed = "abc123",
                               other_store = "MC4wLjFNSUppd084UFlpdklHb0NFQW9tWA",
                               bad_version = "MS4wLjFNSUppd084UFlpdklHb0NFQW9tWg" }) do
        local res = list(port, "signed", "signature=" .. sig, { Authorization = "Bearer any" })
        assert.equal(403, res.status, what)
        assert.equal("insufficient-permissions", res.json.error.type, what)
      end
      local res = list(port, "signed", "signature=" .. KEYS_SIGNATURES.expired)
      assert.truthy(res.json.error.message:find("expired", 1, true))
    end)

    it("ignores a signature on a store without a key (the token decides)", function()
      emu:config{ token = "t0k3n" }
      assert.equal(401, list(port, "plain", "signature=" .. KEYS_SIGNATURES.never).status)
      assert.equal(200, list(port, "plain", "signature=x", { Authorization = "Bearer t0k3n" }).status)
    end)
  end)
end)
