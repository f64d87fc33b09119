-- spec/emulator_listing_spec.lua
--
-- Owns: the emulator's answers without faults: the launcher, key order, paging, parameters, errors,
-- gzip, record URLs, the config endpoint and the request log.
-- The emulator (emulator/kvs_emulator.lua and its parts) runs in nginx, started through
-- emulator/launch.lua; the helpers are spec/support/emulator.lua's. Needs only luasocket and
-- lua-cjson. Run from the repository root: lua5.X /usr/bin/busted spec/emulator_listing_spec.lua

package.path = "./?.lua;" .. package.path

local cjson = require "cjson"
local launch = require "emulator.launch"
local E = require "spec.support.emulator"

local sh_quote, capture, write_file = launch.sh_quote, launch.capture, launch.write_file
local connect = E.connect
local control, request, get, keys_path = E.control, E.request, E.get, E.keys_path
local list, keys_of, url_encode, paging_key = E.list, E.keys_of, E.url_encode, E.paging_key
local ORDER_KEYS, SLOW, PAGING_COUNT = E.ORDER_KEYS, E.SLOW, E.PAGING_COUNT

---------------------------------------------------------------------------------------------------

describe("kvs emulator", function()
  local tmp, storage, emu, port
  E.with_stores(function(c) tmp, storage, emu, port = c.tmp, c.storage, c.emu, c.port end)

  describe("launcher", function()
    it("returns base_url, port and a run directory with a running nginx", function()
      assert.equal("http://127.0.0.1:" .. port, emu.base_url)
      assert.is_number(port)
      local pid = io.open(emu.rundir .. "/nginx.pid"):read("*a")
      assert.truthy(pid:match("^%d+"))
      assert.equal(200, get(port, "/_emulator/ping", control(emu)).status)
    end)
  end)

  describe("listing", function()
    it("sorts keys in byte order and reports sizes and record URLs", function()
      local res = list(port, "order")
      assert.equal(200, res.status)
      assert.equal("application/json; charset=utf-8", res.headers["content-type"])
      local data = res.json.data
      assert.same(ORDER_KEYS, keys_of(data))
      for i, item in ipairs(data.items) do
        assert.equal(i, item.size)
        assert.equal(emu.base_url .. "/v2/key-value-stores/order/records/" .. (item.key == "\195\169"
          and "%C3%A9" or item.key), item.recordPublicUrl)
      end
      assert.equal(#ORDER_KEYS, data.count)
      assert.equal(1000, data.limit)
      assert.equal(cjson.null, data.exclusiveStartKey)
      assert.is_false(data.isTruncated)
      assert.equal(cjson.null, data.nextExclusiveStartKey)
      assert.falsy(res.body:find("\\/", 1, true)) -- "/" is not escaped
    end)

    it("derives keys from file names and skips metadata and directories", function()
      local data = list(port, "files").json.data
      assert.same({ "hello", "multi.dot", "noext" }, keys_of(data))
      assert.same({ 5, 5, 3 }, { data.items[1].size, data.items[2].size, data.items[3].size })
    end)

    it("skips keys <= exclusiveStartKey", function()
      local data = list(port, "order", "exclusiveStartKey=a").json.data
      assert.same({ "a-b", "a.b", "z", "~", "\195\169" }, keys_of(data))
      assert.equal("a", data.exclusiveStartKey)
      data = list(port, "order", "exclusiveStartKey=b").json.data
      assert.same({ "z", "~", "\195\169" }, keys_of(data))
      data = list(port, "order", "exclusiveStartKey=" .. url_encode("\195\169")).json.data
      assert.same({}, keys_of(data))
      assert.is_false(data.isTruncated)
      assert.equal(cjson.null, data.nextExclusiveStartKey)
    end)

    it("filters by prefix, also together with exclusiveStartKey", function()
      assert.same({ "a", "a-b", "a.b" }, keys_of(list(port, "order", "prefix=a").json.data))
      assert.same({ "a-b", "a.b" }, keys_of(list(port, "order", "prefix=a&exclusiveStartKey=a").json.data))
      local data = list(port, "order", "prefix=a&limit=2").json.data
      assert.same({ "a", "a-b" }, keys_of(data))
      assert.is_true(data.isTruncated)
      assert.equal("a-b", data.nextExclusiveStartKey)
      data = list(port, "order", "prefix=nothing").json.data
      assert.equal(0, data.count)
      assert.is_false(data.isTruncated)
    end)

    it("accepts limits 1..1000 and rejects others with 400 invalid-input", function()
      assert.equal(1, list(port, "order", "limit=1").json.data.count)
      assert.equal(1000, list(port, "order", "limit=1000").json.data.limit)
      for _, bad in ipairs({ "0", "1001", "x", "-1", "1.5", "" }) do
        local res = list(port, "order", "limit=" .. bad)
        assert.equal(400, res.status)
        assert.equal("invalid-input", res.json.error.type)
      end
    end)

    it("pages to the end with isTruncated / nextExclusiveStartKey", function()
      local esk, pages, seen = nil, {}, {}
      repeat
        local data = list(port, "paging", esk and ("exclusiveStartKey=" .. esk)).json.data
        pages[#pages + 1] = data
        for _, k in ipairs(keys_of(data)) do seen[#seen + 1] = k end
        esk = data.nextExclusiveStartKey
      until not data.isTruncated
      assert.equal(3, #pages)
      assert.same({ 1000, 1000, 500 }, { pages[1].count, pages[2].count, pages[3].count })
      assert.equal(paging_key(1000), pages[1].nextExclusiveStartKey)
      assert.equal(paging_key(2000), pages[2].nextExclusiveStartKey)
      assert.equal(cjson.null, pages[3].nextExclusiveStartKey)
      assert.equal(PAGING_COUNT, #seen)
      for i = 1, PAGING_COUNT do assert.equal(paging_key(i), seen[i]) end
    end)

    it("pages with small limits to the same list", function()
      local esk, seen = nil, {}
      repeat
        local data = list(port, "order", "limit=4" .. (esk and ("&exclusiveStartKey=" .. url_encode(esk)) or "")).json.data
        for _, k in ipairs(keys_of(data)) do seen[#seen + 1] = k end
        esk = data.nextExclusiveStartKey
      until not data.isTruncated
      assert.same(ORDER_KEYS, seen)
    end)

    it("encodes an empty store's items as []", function()
      local res = list(port, "empty")
      assert.equal(200, res.status)
      assert.truthy(res.body:find('"items":[]', 1, true))
      assert.equal(0, res.json.data.count)
      assert.is_false(res.json.data.isTruncated)
    end)

    it("answers 404 record-not-found for a missing store", function()
      local res = list(port, "no-such-store")
      assert.equal(404, res.status)
      assert.same({ error = { type = "record-not-found", message = "Key-value store was not found" } }, res.json)
      assert.equal(404, list(port, "%2E%2E").status)
    end)

    it("maps username~name, ~name and percent-encoded ids to the directory", function()
      assert.same(ORDER_KEYS, keys_of(list(port, "someone~order").json.data))
      assert.same(ORDER_KEYS, keys_of(list(port, "~order").json.data))
      local data = list(port, "my%20store").json.data
      assert.same({ "only" }, keys_of(data))
      assert.equal(emu.base_url .. "/v2/key-value-stores/my%20store/records/only", data.items[1].recordPublicUrl)
    end)

    it("accepts signature and collection on a store without a signing key or schema", function()
      local data = list(port, "files", "signature=abc123&collection=anything").json.data
      assert.equal(emu.base_url .. "/v2/key-value-stores/files/records/hello", data.items[1].recordPublicUrl)
    end)

    it("sees records added and removed after a listing", function()
      local dir = storage .. "/key_value_stores/files/"
      assert.same({ "hello", "multi.dot", "noext" }, keys_of(list(port, "files").json.data))
      write_file(dir .. "late.txt", "later")
      assert.same({ "hello", "late", "multi.dot", "noext" }, keys_of(list(port, "files").json.data))
      os.remove(dir .. "late.txt")
      assert.same({ "hello", "multi.dot", "noext" }, keys_of(list(port, "files").json.data))
    end)

    it("answers 405 to other methods and 404 to unknown paths", function()
      local res = assert(request(port, "POST", keys_path("order"), { ["Content-Length"] = "0" }))
      assert.equal(405, res.status)
      assert.equal("method-not-allowed", cjson.decode(res.body).error.type)
      res = get(port, "/v2/nothing-here")
      assert.equal(404, res.status)
      assert.is_string(cjson.decode(res.body).error.type)
    end)

    it("gzips JSON when the client accepts gzip", function()
      local plain = get(port, keys_path("paging"))
      assert.is_nil(plain.headers["content-encoding"])
      local zipped = get(port, keys_path("paging"), { ["Accept-Encoding"] = "gzip" })
      assert.equal("gzip", zipped.headers["content-encoding"])
      assert.equal("\31\139", zipped.body:sub(1, 2))
      local gz = os.tmpname()
      write_file(gz, zipped.body)
      local unzipped = capture("gzip -dc < " .. sh_quote(gz))
      os.remove(gz)
      assert.equal(plain.body, unzipped)
    end)
  end)

  describe("config", function()
    it("delay: every keys request waits", function()
      emu:config{ delay = 0.3 }
      local res = list(port, "order")
      assert.is_true(res.t_headers >= 0.28)
      emu:config{ delay = 0 }
      assert.is_true(list(port, "order").t_headers < 0.25 * SLOW)
    end)

    it("rate_limit: sends X-RateLimit-Limit", function()
      emu:config{ rate_limit = 60 }
      assert.equal("60", get(port, keys_path("order")).headers["x-ratelimit-limit"])
      emu:config{ rate_limit = 0, enforce = false }      -- (the bucket, on by default, sends it too)
      assert.is_nil(get(port, keys_path("order")).headers["x-ratelimit-limit"])
    end)
  end)

  describe("request log", function()
    it("records method, URI, args, headers, connection reuse, status and encoding", function()
      emu:clear_requests()
      local c = connect(port)
      local headers = { ["User-Agent"] = "spec/1", ["Accept-Encoding"] = "gzip", Authorization = "Bearer xyz-secret" }
      assert(c:request("GET", keys_path("paging", "limit=2"), headers))
      assert(c:request("GET", keys_path("paging", "limit=2&exclusiveStartKey=k-00002"), headers))
      assert(c:request("GET", keys_path("paging", "limit=1000&exclusiveStartKey=k-00004"), headers))
      c:close()
      local log = emu:requests()
      assert.equal(3, #log)
      for i, entry in ipairs(log) do
        assert.equal("GET", entry.method)
        assert.equal(log[1].connection, entry.connection)
        assert.equal(i, entry.connection_requests)
        assert.equal(200, entry.status)
        assert.equal("spec/1", entry.headers["user-agent"])
        assert.equal("gzip", entry.headers["accept-encoding"])
        assert.equal("other", entry.auth)     -- present, not the emulator's token (it has none)
        assert.is_nil(entry.headers.authorization)
        assert.equal("127.0.0.1:" .. port, entry.headers.host)
      end
      assert.is_nil(cjson.encode(log):find("xyz-secret", 1, true))
      assert.equal(keys_path("paging", "limit=2&exclusiveStartKey=k-00002"), log[2].uri)
      assert.same({ limit = "2", exclusiveStartKey = "k-00002" }, log[2].args)
      assert.equal("gzip", log[3].content_encoding)
      emu:clear_requests()
      assert.same({}, emu:requests())
    end)
  end)
end)
