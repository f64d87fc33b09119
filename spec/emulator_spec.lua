-- spec/emulator_spec.lua
--
-- Owns: the fidelity checks of the local API emulator itself (emulator/kvs_emulator.lua started
-- through emulator/launch.lua): key order, paging, parameters, errors, auth, gzip, every fault
-- kind, latency mode and the request log. Needs only luasocket and lua-cjson.
-- Run from the repository root: lua5.X /usr/bin/busted spec/emulator_spec.lua

package.path = "./?.lua;" .. package.path

local socket = require "socket"
local cjson = require "cjson"
local launch = require "emulator.launch"

---------------------------------------------------------------------------------------------------
-- helpers

local sh_quote, capture, write_file = launch.sh_quote, launch.capture, launch.write_file

local function mkdir(path)
  assert(os.execute("mkdir -p " .. sh_quote(path)))
end

-- A raw HTTP/1.1 client on one luasocket connection (keep-alive, exact bytes, partial bodies).
local connect = require("spec.support.http").connect

-- One request on a fresh connection.
local function request(port, method, path, headers)
  local c = connect(port)
  local res, err, partial = c:request(method, path, headers, true)
  c:close()
  return res, err, partial
end

local function get(port, path, headers)
  return assert(request(port, "GET", path, headers))
end

local function keys_path(store, query)
  return "/v2/key-value-stores/" .. store .. "/keys" .. (query and ("?" .. query) or "")
end

local function list(port, store, query, headers)
  local res = get(port, keys_path(store, query), headers)
  res.json = cjson.decode(res.body)
  return res
end

local function keys_of(data)
  local out = {}
  for i, item in ipairs(data.items) do out[i] = item.key end
  return out
end

local function url_encode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Key set whose byte order differs from any case-insensitive or locale order.
local ORDER_FILES = {
  "!.json", "'.json", "(.json", ").json", "-.json", "0.json", "A.json", "Z.json", "_.json",
  "a.json", "a-b.json", "a.b.json", "z.json", "~.json", "\195\169.json",
}
local ORDER_KEYS = { "!", "'", "(", ")", "-", "0", "A", "Z", "_", "a", "a-b", "a.b", "z", "~", "\195\169" }

-- Upper time bounds are scaled for slow runs (valgrind, sanitizers): KVS_SLOW=4.
local SLOW = tonumber(os.getenv("KVS_SLOW") or "1") or 1

local PAGING_COUNT = 2500
local function paging_key(i) return string.format("k-%05d", i) end

-- paging_key(from) .. paging_key(to)
local function paging_keys(from, to)
  local out = {}
  for i = from, to do out[#out + 1] = paging_key(i) end
  return out
end

-- A page of the "paging" store: limit and an optional exclusiveStartKey.
local function paging_page(port, limit, esk)
  return list(port, "paging", "limit=" .. limit .. (esk and ("&exclusiveStartKey=" .. url_encode(esk)) or "")).json.data
end

-- Peak resident memory of a process in kB (VmHWM), after resetting it when clear_refs allows;
-- returns a function that reads the peak since then, or nil when the peak cannot be reset.
local function peak_meter(pid)
  local f = io.open("/proc/" .. pid .. "/clear_refs", "w")
  if not f then return nil end
  local ok = f:write("5")
  f:close()
  if not ok then return nil end
  return function()
    local status = io.open("/proc/" .. pid .. "/status"):read("*a")
    return tonumber(status:match("VmHWM:%s*(%d+) kB"))
  end
end

-- Streams one GET (HTTP/1.1, no gzip) and counts the occurrences of `pattern` in the body
-- without keeping it; returns status, count, the body's last 200 bytes, and its size.
local function stream_count(port, path, pattern)
  local c = connect(port)
  c.sock:settimeout(30)
  assert(c.sock:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
  local status = tonumber(assert(c.sock:receive("*l")):match("^HTTP/%d%.%d (%d%d%d)"))
  local headers = {}
  while true do
    local line = assert(c.sock:receive("*l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    headers[k:lower()] = v
  end
  local count, carry, total, tail = 0, "", 0, ""
  local function feed(data)
    total = total + #data
    local text = carry .. data
    local from = 1
    while true do
      local i = text:find(pattern, from, true)
      if not i then break end
      count = count + 1
      from = i + #pattern
    end
    carry = text:sub(-(#pattern - 1))   -- shorter than the pattern: no match is counted twice
    tail = (tail .. data):sub(-200)
  end
  if (headers["transfer-encoding"] or ""):find("chunked", 1, true) then
    while true do
      local size = tonumber(assert(c.sock:receive("*l")):match("^%x+"), 16)
      if size == 0 then break end
      feed(assert(c.sock:receive(size)))
      c.sock:receive("*l")
    end
  else
    feed(assert(c.sock:receive(tonumber(headers["content-length"]))))
  end
  c:close()
  return status, count, tail, total
end

---------------------------------------------------------------------------------------------------

describe("kvs emulator", function()
  local tmp, storage, emu, port

  lazy_setup(function()
    tmp = capture("mktemp -d /tmp/kvs-emulator-spec.XXXXXX"):gsub("%s+$", "")
    storage = tmp .. "/storage"
    local kvs = storage .. "/key_value_stores/"

    mkdir(kvs .. "order")
    for i, name in ipairs(ORDER_FILES) do write_file(kvs .. "order/" .. name, string.rep("x", i)) end
    write_file(kvs .. "order/__metadata__.json", '{"id":"order","name":"order"}')

    mkdir(kvs .. "empty")
    write_file(kvs .. "empty/__metadata__.json", '{"id":"empty","name":"empty"}')

    mkdir(kvs .. "paging")
    for i = 1, PAGING_COUNT do write_file(kvs .. "paging/" .. paging_key(i) .. ".json", "{}") end

    mkdir(kvs .. "files/subdir")
    write_file(kvs .. "files/hello.txt", "hello")
    write_file(kvs .. "files/noext", "abc")
    write_file(kvs .. "files/multi.dot.json", "[1,2]")
    write_file(kvs .. "files/x.__metadata__.json", "{}")
    write_file(kvs .. "files/__metadata__.json", "{}")

    mkdir(kvs .. "my store")
    write_file(kvs .. "my store/only.txt", "1")

    emu = launch.start{ storage = storage }
    port = emu.port
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    if tmp and tmp:match("^/tmp/kvs%-emulator%-spec%.") then os.execute("rm -rf " .. sh_quote(tmp)) end
  end)

  before_each(function()
    emu:clear_faults()
    emu:config{ delay = 0, rate_limit = 0 }
  end)

  describe("launcher", function()
    it("returns base_url, port and a run directory with a running nginx", function()
      assert.equal("http://127.0.0.1:" .. port, emu.base_url)
      assert.is_number(port)
      local pid = io.open(emu.rundir .. "/nginx.pid"):read("*a")
      assert.truthy(pid:match("^%d+"))
      assert.equal(200, get(port, "/_emulator/ping").status)
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

    it("appends the signature to recordPublicUrl and accepts collection", function()
      local data = list(port, "files", "signature=abc123&collection=anything").json.data
      assert.equal(emu.base_url .. "/v2/key-value-stores/files/records/hello?signature=abc123", data.items[1].recordPublicUrl)
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

  describe("faults", function()
    it("status: sends the status, Retry-After and an Apify error body, 'times' times", function()
      emu:faults{ { kind = "status", status = 503, retry_after = "2", times = 2 } }
      for _ = 1, 2 do
        local res = list(port, "order")
        assert.equal(503, res.status)
        assert.equal("2", res.headers["retry-after"])
        assert.is_string(res.json.error.type)
      end
      assert.equal(200, list(port, "order").status)
    end)

    it("status: sends a custom raw body and an HTTP-date Retry-After", function()
      local date = "Wed, 21 Oct 2037 07:28:00 GMT"
      emu:faults{ { kind = "status", status = 429, body = "slow down", retry_after = date } }
      local res = get(port, keys_path("order"))
      assert.equal(429, res.status)
      assert.equal("slow down", res.body)
      assert.equal(date, res.headers["retry-after"])
    end)

    it("only matches its store when 'store' is set, and is consumed in order", function()
      emu:faults{ { kind = "status", status = 500, store = "empty" }, { kind = "status", status = 502 } }
      assert.equal(502, get(port, keys_path("order")).status)
      assert.equal(500, get(port, keys_path("empty")).status)
      assert.equal(200, get(port, keys_path("empty")).status)
      assert.same({}, emu:pending_faults())
    end)

    it("stall: waits, then answers normally", function()
      emu:faults{ { kind = "stall", seconds = 0.5 } }
      local res = list(port, "order")
      assert.is_true(res.t_headers >= 0.45)
      assert.same(ORDER_KEYS, keys_of(res.json.data))
    end)

    it("stall_body: sends headers and part of the body, then waits before the rest", function()
      emu:faults{ { kind = "stall_body", seconds = 0.6 * SLOW } }
      local res = get(port, keys_path("order"))
      assert.is_true(res.t_headers < 0.4 * SLOW)
      assert.is_true(res.t_done >= 0.55 * SLOW)
      assert.same(ORDER_KEYS, keys_of(cjson.decode(res.body).data))
    end)

    it("truncate: announces the full Content-Length, sends part, closes", function()
      emu:faults{ { kind = "truncate" }, { kind = "truncate" } }
      for _, headers in ipairs({ {}, { ["Accept-Encoding"] = "gzip" } }) do
        local c = connect(port)
        local res, err, partial = c:request("GET", keys_path("order"), headers)
        c:close()
        assert.is_nil(res)
        assert.equal("closed", err)
        assert.equal(200, partial.status)
        assert.is_nil(partial.headers["content-encoding"])
        local announced = tonumber(partial.headers["content-length"])
        assert.is_true(#partial.body > 0 and #partial.body < announced)
      end
    end)

    it("invalid_json: 200 with a body that is not JSON", function()
      emu:faults{ { kind = "invalid_json" } }
      local res = get(port, keys_path("order"))
      assert.equal(200, res.status)
      assert.is_nil((require "cjson.safe").decode(res.body))
    end)

    it("cursor_stuck: a truncated page whose next cursor does not advance", function()
      emu:faults{ { kind = "cursor_stuck" }, { kind = "cursor_stuck", mode = "before" } }
      local data = list(port, "order", "limit=2&exclusiveStartKey=Z").json.data
      assert.is_true(data.isTruncated)
      assert.equal("Z", data.nextExclusiveStartKey)
      data = list(port, "order", "limit=2&exclusiveStartKey=Z").json.data
      assert.is_true(data.isTruncated)
      assert.is_true(data.nextExclusiveStartKey < "Z")
    end)

    it("no_next_field: isTruncated true without a nextExclusiveStartKey field", function()
      emu:faults{ { kind = "no_next_field" } }
      local res = list(port, "order")
      assert.is_true(res.json.data.isTruncated)
      assert.is_nil(res.json.data.nextExclusiveStartKey)
      assert.falsy(res.body:find("nextExclusiveStartKey", 1, true))
    end)

    it("redirect: sends the status and Location", function()
      emu:faults{ { kind = "redirect", status = 307, location = "http://127.0.0.1:1/elsewhere" } }
      local res = get(port, keys_path("order"))
      assert.equal(307, res.status)
      assert.equal("http://127.0.0.1:1/elsewhere", res.headers["location"])
    end)

    it("raw: sends exactly the given status, headers and body", function()
      emu:faults{ { kind = "raw", status = 200, headers = { ["Content-Type"] = "text/html", ["X-Test"] = "yes" }, body = "<html>proxy</html>" } }
      local res = get(port, keys_path("order"))
      assert.equal(200, res.status)
      assert.equal("text/html", res.headers["content-type"])
      assert.equal("yes", res.headers["x-test"])
      assert.equal("<html>proxy</html>", res.body)
    end)

    it("no_next_field with null: isTruncated true and a null nextExclusiveStartKey", function()
      emu:faults{ { kind = "no_next_field", null = true } }
      local res = list(port, "order")
      assert.is_true(res.json.data.isTruncated)
      assert.equal(cjson.null, res.json.data.nextExclusiveStartKey)
      assert.same(ORDER_KEYS, keys_of(res.json.data))
    end)

    it("empty_page: no items, isTruncated true, a cursor that advances (by mode)", function()
      emu:faults{ { kind = "empty_page" }, { kind = "empty_page", mode = "successor" },
        { kind = "empty_page", next = "k-00500" }, { kind = "empty_page", mode = "null" },
        { kind = "empty_page", mode = "absent" }, { kind = "empty_page" } }
      -- page_end: where the normal page would have ended (its keys are skipped, like a filter)
      local data = paging_page(port, 10, paging_key(10))
      assert.same({}, data.items)
      assert.equal(0, data.count)
      assert.is_true(data.isTruncated)
      assert.equal(paging_key(20), data.nextExclusiveStartKey)
      -- successor: just after the cursor, before any key that follows it
      data = paging_page(port, 10, paging_key(10))
      assert.same({}, data.items)
      local successor = data.nextExclusiveStartKey
      assert.equal(paging_key(10) .. "!", successor)
      data = paging_page(port, 10, paging_key(10))
      assert.same({}, data.items)
      assert.equal("k-00500", data.nextExclusiveStartKey)
      data = paging_page(port, 10, paging_key(10))
      assert.is_true(data.isTruncated)
      assert.equal(cjson.null, data.nextExclusiveStartKey)
      local res = list(port, "paging", "limit=10")
      assert.same({}, res.json.data.items)
      assert.is_true(res.json.data.isTruncated)
      assert.falsy(res.body:find("nextExclusiveStartKey", 1, true))
      -- past the end of the store the cursor still advances
      data = paging_page(port, 10, paging_key(PAGING_COUNT))
      assert.is_true(data.isTruncated)
      assert.equal(paging_key(PAGING_COUNT) .. "!", data.nextExclusiveStartKey)
      assert.same({}, emu:pending_faults())
      -- the successor skips nothing
      assert.same(paging_keys(11, 20), keys_of(paging_page(port, 10, successor)))
    end)

    it("cursor_behind: a normal page whose cursor is the key in its middle", function()
      emu:faults{ { kind = "cursor_behind" }, { kind = "cursor_behind" } }
      local data = paging_page(port, 10, paging_key(10))
      assert.same(paging_keys(11, 20), keys_of(data))
      assert.is_true(data.isTruncated)
      assert.equal(paging_key(15), data.nextExclusiveStartKey)
      data = paging_page(port, 1, paging_key(10))
      assert.same({ paging_key(11) }, keys_of(data))
      assert.equal(paging_key(10), data.nextExclusiveStartKey)
    end)

    it("cursor_ahead: a normal page whose cursor skips past its last key", function()
      emu:faults{ { kind = "cursor_ahead" }, { kind = "cursor_ahead", skip = 1 }, { kind = "cursor_ahead" } }
      local data = paging_page(port, 10, paging_key(10))
      assert.same(paging_keys(11, 20), keys_of(data))
      assert.equal(paging_key(23), data.nextExclusiveStartKey)
      assert.equal(paging_key(21), paging_page(port, 10, paging_key(10)).nextExclusiveStartKey)
      data = paging_page(port, 10, paging_key(PAGING_COUNT - 3))
      assert.same(paging_keys(PAGING_COUNT - 2, PAGING_COUNT), keys_of(data))
      assert.is_false(data.isTruncated)
      assert.equal(paging_key(PAGING_COUNT) .. "~", data.nextExclusiveStartKey)
    end)

    it("reverse_page: the page's items in descending order", function()
      emu:faults{ { kind = "reverse_page" } }
      local data = paging_page(port, 10, paging_key(10))
      local descending = {}
      for i = 20, 11, -1 do descending[#descending + 1] = paging_key(i) end
      assert.same(descending, keys_of(data))
      assert.equal(paging_key(20), data.nextExclusiveStartKey)
      assert.is_true(data.isTruncated)
    end)

    it("duplicate_items: each item twice, never more items than the limit", function()
      emu:faults{ { kind = "duplicate_items" }, { kind = "duplicate_items" } }
      local data = paging_page(port, 10, paging_key(10))
      assert.same({ paging_key(11), paging_key(11), paging_key(12), paging_key(12), paging_key(13),
        paging_key(13), paging_key(14), paging_key(14), paging_key(15), paging_key(15) }, keys_of(data))
      assert.equal(10, data.count)
      assert.is_true(data.isTruncated)
      assert.equal(paging_key(15), data.nextExclusiveStartKey)
      data = list(port, "order", "exclusiveStartKey=z").json.data   -- the last 2 keys, limit 1000
      assert.same({ "~", "~", "\195\169", "\195\169" }, keys_of(data))
      assert.is_false(data.isTruncated)
    end)

    it("include_cursor: the page starts with the cursor when it is a key", function()
      emu:faults{ { kind = "include_cursor" }, { kind = "include_cursor" } }
      local data = paging_page(port, 10, paging_key(10))
      assert.same(paging_keys(10, 19), keys_of(data))
      assert.is_true(data.isTruncated)
      assert.equal(paging_key(19), data.nextExclusiveStartKey)
      -- a cursor that is not a key: a normal page
      data = paging_page(port, 10, paging_key(10) .. "x")
      assert.same(paging_keys(11, 20), keys_of(data))
    end)

    it("only_nonempty: a fault passes by requests whose page has no key", function()
      emu:faults{ { kind = "reverse_page", only_nonempty = true } }
      local data = paging_page(port, 10, paging_key(PAGING_COUNT))
      assert.same({}, data.items)
      assert.equal(1, #emu:pending_faults())
      data = paging_page(port, 3, nil)
      assert.same({ paging_key(3), paging_key(2), paging_key(1) }, keys_of(data))
      assert.same({}, emu:pending_faults())
    end)

    it("oversized: a valid page of `items` items whatever the limit", function()
      emu:faults{ { kind = "oversized", items = 2500 } }
      local data = paging_page(port, 10, paging_key(10))
      assert.equal(2500, #data.items)
      assert.equal(2500, data.count)
      assert.equal(10, data.limit)
      assert.is_true(data.isTruncated)
      for i = 2, #data.items do assert.is_true(data.items[i - 1].key < data.items[i].key) end
      assert.is_true(data.items[1].key > paging_key(10))
      assert.equal(data.items[2500].key, data.nextExclusiveStartKey)
    end)

    it("oversized: 1,000,000 items by default, made in chunks (nginx memory stays small)", function()
      local pid = cjson.decode(get(port, "/_emulator/ping").body).pid
      local peak = peak_meter(pid)
      local before = peak and peak()
      emu:faults{ { kind = "oversized" } }
      local status, count, tail, bytes = stream_count(port, keys_path("paging", "limit=10"), '{"key":')
      assert.equal(200, status)
      assert.equal(1000000, count)
      assert.is_true(bytes > 50 * 1024 * 1024, bytes .. " bytes")
      assert.truthy(tail:find('"count":1000000,"limit":10,', 1, true))
      assert.truthy(tail:find('"isTruncated":true,"nextExclusiveStartKey":"o001000000"}}$'))
      if peak then
        local grown = peak() - before
        assert.is_true(grown < 30 * 1024, "nginx worker peak RSS grew by " .. grown .. " kB")
      end
    end)

    it("drip: the normal body in pieces of `bytes`, `seconds` apart, without gzip", function()
      local plain = get(port, keys_path("order"))
      emu:faults{ { kind = "drip", bytes = 400, seconds = 0.2 } }
      local res = get(port, keys_path("order"), { ["Accept-Encoding"] = "gzip" })
      assert.equal(200, res.status)
      assert.is_nil(res.headers["content-encoding"])
      assert.equal(plain.body, res.body)
      assert.equal(tostring(#plain.body), res.headers["content-length"])
      local gaps = math.ceil(#plain.body / 400) - 1
      assert.is_true(gaps >= 2)
      assert.is_true(res.t_done >= gaps * 0.2 * 0.9, "took " .. res.t_done)
      assert.is_true(res.t_headers < 0.2 * SLOW + 0.1)
    end)

    it("raw with body_file: the file's bytes as they are, with the given headers", function()
      local path = tmp .. "/page.json.gz"
      local json = '{"data":{"items":[{"key":"z","size":1}],"isTruncated":false}}' .. (" "):rep(1000)
      write_file(tmp .. "/page.json", json)
      assert(os.execute("gzip -9 -c " .. sh_quote(tmp .. "/page.json") .. " > " .. sh_quote(path)))
      local bytes = io.open(path, "rb"):read("*a")
      emu:faults{ { kind = "raw", body_file = path, times = 2,
        headers = { ["Content-Encoding"] = "gzip", ["Content-Type"] = "application/json" } } }
      for _, headers in ipairs({ {}, { ["Accept-Encoding"] = "gzip" } }) do
        local res = get(port, keys_path("order"), headers)
        assert.equal(200, res.status)
        assert.equal("gzip", res.headers["content-encoding"])
        assert.equal("application/json", res.headers["content-type"])
        assert.equal(tostring(#bytes), res.headers["content-length"])
        assert.equal(bytes, res.body)
      end
    end)

    it("rejects malformed faults", function()
      assert.has_error(function() emu:faults{ { kind = "nonsense" } } end)
      assert.has_error(function() emu:faults{ { kind = "status", times = 0 } } end)
      write_file(tmp .. "/exists.json", "{}")
      for _, bad in ipairs({
        { kind = "empty_page", mode = "sideways" }, { kind = "empty_page", next = 5 },
        { kind = "empty_page", next = "a", mode = "null" },
        { kind = "cursor_ahead", skip = 0 }, { kind = "cursor_ahead", skip = 1.5 },
        { kind = "oversized", items = -1 }, { kind = "oversized", items = 1e9 },
        { kind = "drip", bytes = 0 }, { kind = "drip", seconds = -1 },
        { kind = "raw", body_file = "relative/path" }, { kind = "raw", body_file = "/no/such/file" },
        { kind = "raw", body_file = "/tmp" }, { kind = "raw", body_file = tmp .. "/exists.json", body = "x" },
        { kind = "no_next_field", null = "yes" }, { kind = "reverse_page", only_nonempty = 1 },
      }) do
        assert.has_error(function() emu:faults{ bad } end, nil, bad.kind)
      end
      assert.same({}, emu:pending_faults())
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
      emu:config{ rate_limit = 0 }
      assert.is_nil(get(port, keys_path("order")).headers["x-ratelimit-limit"])
    end)
  end)

  describe("request log", function()
    it("records method, URI, args, headers, connection reuse, status and encoding", function()
      emu:clear_requests()
      local c = connect(port)
      local headers = { ["User-Agent"] = "spec/1", ["Accept-Encoding"] = "gzip", Authorization = "Bearer xyz" }
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
        assert.equal("Bearer xyz", entry.headers.authorization)
        assert.equal("127.0.0.1:" .. port, entry.headers.host)
      end
      assert.equal(keys_path("paging", "limit=2&exclusiveStartKey=k-00002"), log[2].uri)
      assert.same({ limit = "2", exclusiveStartKey = "k-00002" }, log[2].args)
      assert.equal("gzip", log[3].content_encoding)
      emu:clear_requests()
      assert.same({}, emu:requests())
    end)
  end)
end)

describe("kvs emulator with a token", function()
  local tmp, emu, port

  lazy_setup(function()
    tmp = capture("mktemp -d /tmp/kvs-emulator-spec.XXXXXX"):gsub("%s+$", "")
    mkdir(tmp .. "/key_value_stores/s")
    write_file(tmp .. "/key_value_stores/s/one.txt", "1")
    emu = launch.start{ storage = tmp, token = "t0k3n" }
    port = emu.port
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    if tmp and tmp:match("^/tmp/kvs%-emulator%-spec%.") then os.execute("rm -rf " .. sh_quote(tmp)) end
  end)

  it("answers 401 token-not-provided without Authorization", function()
    local res = list(port, "s")
    assert.equal(401, res.status)
    assert.equal("token-not-provided", res.json.error.type)
  end)

  it("answers 401 invalid-token for a wrong token (a token query parameter does not count)", function()
    local res = list(port, "s", nil, { Authorization = "Bearer wrong" })
    assert.equal(401, res.status)
    assert.equal("invalid-token", res.json.error.type)
    assert.equal(401, list(port, "s", "token=t0k3n").status)
  end)

  it("lists with the right bearer token", function()
    local res = list(port, "s", nil, { Authorization = "Bearer t0k3n" })
    assert.equal(200, res.status)
    assert.same({ "one" }, keys_of(res.json.data))
  end)

  it("stops by itself when the watched process exits", function()
    local pid = tonumber(capture("sleep 60 >/dev/null 2>&1 & echo $!"):match("%d+"))
    local orphan = launch.start{ storage = tmp, watch = pid }
    assert.equal(200, get(orphan.port, "/_emulator/ping").status)
    os.execute("kill " .. pid)
    local deadline, closed = socket.gettime() + 5 * SLOW, false
    repeat
      socket.sleep(0.1)
      local c = socket.tcp()
      c:settimeout(1)
      closed = c:connect("127.0.0.1", orphan.port) == nil
      c:close()
    until closed or socket.gettime() > deadline
    assert.is_true(closed)
    orphan:stop()
  end)

  it("stops: nginx gone, port closed, run directory removed", function()
    local rundir, pid = emu.rundir, tonumber(io.open(emu.rundir .. "/nginx.pid"):read("*a"):match("%d+"))
    emu:stop()
    emu = nil
    local c = socket.tcp()
    c:settimeout(1)
    assert.is_nil(c:connect("127.0.0.1", port))
    c:close()
    assert.is_nil(io.open(rundir .. "/nginx.conf"))
    assert.equal("gone", capture("test -d " .. sh_quote(rundir) .. " || echo gone"):match("%a+"))
    local stat = io.open("/proc/" .. pid .. "/stat")
    if stat then
      assert.equal("Z", stat:read("*a"):match("^%d+ %b() (%a)"))
      stat:close()
    end
  end)
end)
