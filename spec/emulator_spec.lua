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

-- A scratch directory for a block's stores, and its removal (only what scratch_dir made). It is
-- readable by others: run as root, the emulator's workers run as nobody.
local function scratch_dir()
  local dir = assert(launch.mktemp_dir("kvs-emulator-spec"))
  assert(os.execute("chmod 755 " .. sh_quote(dir)))
  return dir
end

-- The headers of a control API call made without launch.lua's helpers.
local function control(emu, extra)
  local headers = { Authorization = "Bearer " .. emu.control_secret }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return headers
end

local function remove_scratch(dir)
  if dir and dir:match("/kvs%-emulator%-spec%.[%w]+$") then os.execute("rm -rf " .. sh_quote(dir)) end
end

-- A raw HTTP/1.1 client on one luasocket connection (keep-alive, exact bytes, partial bodies).
local connect = require("spec.support.http").connect

-- One request on a fresh connection.
local function request(port, method, path, headers, body)
  local c = connect(port)
  local res, err, partial = c:request(method, path, headers, true, body)
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
    tmp = scratch_dir()
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
    remove_scratch(tmp)
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
      local pid = cjson.decode(get(port, "/_emulator/ping", control(emu)).body).pid
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
      local json = '{"data":{"items":[{"key":"z","size":1}],"isTruncated":false}}' .. (" "):rep(1000)
      write_file(tmp .. "/page.json", json)
      local bytes = capture("gzip -9 -c " .. sh_quote(tmp .. "/page.json"))
      local path = emu:write_file("page.json.gz", bytes)
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
      local inside = emu:write_file("exists.json", "{}")
      for _, bad in ipairs({
        { kind = "empty_page", mode = "sideways" }, { kind = "empty_page", next = 5 },
        { kind = "empty_page", next = "a", mode = "null" },
        { kind = "cursor_ahead", skip = 0 }, { kind = "cursor_ahead", skip = 1.5 },
        { kind = "oversized", items = -1 }, { kind = "oversized", items = 1e9 },
        { kind = "drip", bytes = 0 }, { kind = "drip", seconds = -1 },
        { kind = "raw", body_file = "relative/path" }, { kind = "raw", body_file = "/no/such/file" },
        { kind = "raw", body_file = "/tmp" }, { kind = "raw", body_file = inside, body = "x" },
        { kind = "raw", body_file = tmp .. "/exists.json" }, { kind = "raw", body_file = emu.rundir .. "/settings.json" },
        { kind = "raw", body_file = emu.rundir .. "/files/../settings.json" }, { kind = "raw", body_file = "/etc/passwd" },
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

describe("kvs emulator with a token", function()
  local tmp, emu, port

  lazy_setup(function()
    tmp = scratch_dir()
    mkdir(tmp .. "/key_value_stores/s")
    write_file(tmp .. "/key_value_stores/s/one.txt", "1")
    emu = launch.start{ storage = tmp, token = "t0k3n" }
    port = emu.port
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    remove_scratch(tmp)
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
    assert.equal(200, get(orphan.port, "/_emulator/ping", control(orphan)).status)
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

describe("kvs emulator: safe to run on a shared machine", function()
  local tmp, outside, emu, port
  local TOKEN = "t0k3n-shared"

  lazy_setup(function()
    tmp, outside = scratch_dir(), scratch_dir()
    mkdir(tmp .. "/key_value_stores/s")
    write_file(tmp .. "/key_value_stores/s/one.txt", "1")
    -- links out of the storage directory: a record, a whole store, a store's metadata
    write_file(outside .. "/secret.txt", "outside the storage directory")
    mkdir(outside .. "/store")
    write_file(outside .. "/store/leaked.txt", "x")
    write_file(outside .. "/meta.json", '{"schema":{"collections":{"c":{"keyPrefix":"o"}}}}')
    assert(os.execute("ln -s " .. sh_quote(outside .. "/secret.txt") .. " " .. sh_quote(tmp .. "/key_value_stores/s/two.txt")))
    assert(os.execute("ln -s " .. sh_quote(outside .. "/meta.json") .. " " .. sh_quote(tmp .. "/key_value_stores/s/__metadata__.json")))
    assert(os.execute("ln -s " .. sh_quote(outside .. "/store") .. " " .. sh_quote(tmp .. "/key_value_stores/linked")))
    emu = launch.start{ storage = tmp, token = TOKEN }
    port = emu.port
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    remove_scratch(tmp)
    remove_scratch(outside)
  end)

  local AUTH = { Authorization = "Bearer " .. TOKEN }

  it("control API: no secret, a wrong one or a browser's Origin change nothing", function()
    -- the attack of a local process or a web page: a text/plain POST, no secret
    local shadow = '{"kind":"raw","body_file":"/etc/shadow"}'
    for _, headers in ipairs({ {}, { Authorization = "Bearer " .. TOKEN },
                               { Authorization = "Bearer " .. ("0"):rep(64) } }) do
      headers["Content-Type"] = "text/plain"
      for _, what in ipairs({ "ping", "faults", "config", "requests" }) do
        assert.equal(401, get(port, "/_emulator/" .. what, headers).status, what)
      end
      assert.equal(401, request(port, "POST", "/_emulator/faults", headers, shadow).status)
      assert.equal(401, request(port, "POST", "/_emulator/config", headers, '{"token":null}').status)
      assert.equal(401, request(port, "DELETE", "/_emulator/requests", headers).status)
    end
    assert.equal(403, get(port, "/_emulator/config", control(emu, { Origin = "http://evil.example" })).status)
    assert.equal(415, request(port, "POST", "/_emulator/config",
      control(emu, { ["Content-Type"] = "text/plain" }), '{"delay":3600}').status)
    assert.same({}, emu:pending_faults())
    local config = emu:config()
    assert.equal(0, config.delay)
    assert.is_true(config.token_set)
    -- authentication is still on, and nothing from outside the storage directory is served
    assert.equal(401, list(port, "s").status)
    local res = list(port, "s", nil, AUTH)
    assert.equal(200, res.status)
    assert.is_nil(res.body:find("shadow", 1, true))
  end)

  it("never hands out a token: the config says whether one is set, the log whether it was sent", function()
    emu:clear_requests()
    assert.equal(200, list(port, "s", nil, AUTH).status)
    assert.equal(401, list(port, "s", nil, { Authorization = "Bearer not-" .. TOKEN }).status)
    assert.equal(401, list(port, "s").status)
    local log = emu:requests()
    assert.equal(3, #log)
    assert.same({ "token", "other" }, { log[1].auth, log[2].auth })
    assert.is_nil(log[3].auth)
    local raw = get(port, "/_emulator/requests", control(emu)).body .. get(port, "/_emulator/config", control(emu)).body
    assert.is_nil(raw:find(TOKEN, 1, true))
    assert.is_nil(raw:find("authorization", 1, true))
  end)

  it("refuses DNS names in Host (DNS rebinding) and does not echo Host", function()
    for _, host in ipairs({ "evil.example", "evil.example:" .. port, "127.0.0.1.evil.example",
                            "localhost.evil.example:" .. port, "127.0.0.1:" .. port .. "@evil",
                            "10.0.0.1", "[::2]:" .. port, "localhost.", "" }) do
      -- 421 from the emulator; nginx itself answers 400 to a Host that is not a host name
      local refused = { [421] = true, [400] = true }
      local status = get(port, keys_path("s"), { Host = host, Authorization = AUTH.Authorization }).status
      assert.is_true(refused[status], host .. ": " .. status)
      status = get(port, "/_emulator/config", control(emu, { Host = host })).status
      assert.is_true(refused[status], host .. ": " .. status)
    end
    assert.equal(421, get(port, keys_path("s"), { Host = "evil.example:" .. port, Authorization = AUTH.Authorization }).status)
    for _, host in ipairs({ "localhost:" .. port, "LOCALHOST", "[::1]:" .. port, "127.0.0.1", "kvs_upstream" }) do
      local res = list(port, "s", nil, { Host = host, Authorization = AUTH.Authorization })
      assert.equal(200, res.status, host)
      assert.equal(emu.base_url .. "/v2/key-value-stores/s/records/one", res.json.data.items[1].recordPublicUrl)
    end
  end)

  it("follows no symbolic link out of the storage directory", function()
    local res = list(port, "s", nil, AUTH)
    assert.same({ "one" }, keys_of(res.json.data))          -- not two (a link to a file outside)
    assert.equal(404, list(port, "linked", nil, AUTH).status)
    -- the linked metadata's schema is not read: the collection is ignored, not applied
    assert.same({ "one" }, keys_of(list(port, "s", "collection=c", AUTH).json.data))
  end)

  it("keeps its secrets private: a 0700 run directory, 0600 files", function()
    local function mode(path) return capture("stat -c %a " .. sh_quote(path)):match("%d+") end
    assert.equal("700", mode(emu.rundir))
    assert.equal("600", mode(emu.rundir .. "/settings.json"))
    assert.equal("600", mode(emu.rundir .. "/control-secret"))
    assert.equal(emu.control_secret, (io.open(emu.rundir .. "/control-secret"):read("*a"):gsub("%s+$", "")))
    assert.is_nil(io.open(emu.rundir .. "/nginx.conf"):read("*a"):find(TOKEN, 1, true))
  end)

  it("never runs a worker as root", function()
    local pid = cjson.decode(get(port, "/_emulator/ping", control(emu)).body).pid
    local uid = tonumber(io.open(string.format("/proc/%d/status", pid)):read("*a"):match("\nUid:%s*(%d+)"))
    local me = tonumber(capture("id -u"):match("%d+"))
    if me == 0 then assert.are_not.equal(0, uid) else assert.equal(me, uid) end
  end)

  it("takes the token from a file or the environment, never from the command line", function()
    local cmd = "lua5.4 emulator/launch.lua"
    local out = capture(cmd .. " start --storage " .. sh_quote(tmp) .. " --token secret-on-argv 2>&1; echo \"exit=$?\"")
    assert.matches("%-%-token is refused", out)
    assert.matches("exit=2", out)
    write_file(tmp .. "/token", "from-a-file\n")
    for _, how in ipairs({ "--token-file " .. sh_quote(tmp .. "/token"), "KVS_EMULATOR_TOKEN=from-a-file" }) do
      local rundir = tmp .. "/run-" .. (how:match("^%-%-") and "file" or "env")
      local env, flag = how:match("^KVS") and how .. " " or "", how:match("^%-%-") and how or ""
      local url = capture(env .. cmd .. " start --storage " .. sh_quote(tmp) .. " --rundir " .. sh_quote(rundir)
        .. " " .. flag .. " 2>/dev/null"):match("http://[%d.:]+")
      assert.truthy(url, how)
      local p = tonumber(url:match(":(%d+)$"))
      local ok = pcall(function()
        assert.equal(401, list(p, "s").status)
        assert.equal(200, list(p, "s", nil, { Authorization = "Bearer from-a-file" }).status)
      end)
      os.execute(cmd .. " stop --rundir " .. sh_quote(rundir))
      assert.is_true(ok, how)
    end
  end)

  it("the watchdog removes only its own run directory, whatever its path", function()
    -- a scratch base whose name would break out of shell quotes: a'b c'd
    local base = tmp .. "/x/a'b c'd"
    mkdir(base)
    mkdir(tmp .. "/x/ab")                 -- what a watchdog that pasted the path into sh removed
    local script = "package.path = './?.lua;' .. package.path; local l = require 'emulator.launch'; "
      .. "local e = l.start{ storage = " .. string.format("%q", tmp) .. " }; io.write(e.rundir, ' ', e.port)"
    local out = capture("KVS_TMPDIR=" .. sh_quote(base) .. " lua5.4 -e " .. sh_quote(script))
    local rundir, p = out:match("^(.*) (%d+)$")
    assert.truthy(rundir, out)
    assert.equal(base, rundir:match("^(.*)/kvs%-emulator%.[%w]+$"))
    -- the process that started it has exited: the watchdog stops nginx and removes the run dir
    local deadline = socket.gettime() + 10 * SLOW
    repeat socket.sleep(0.1) until capture("test -e " .. sh_quote(rundir) .. " || echo gone"):match("gone")
      or socket.gettime() > deadline
    assert.equal("gone", capture("test -e " .. sh_quote(rundir) .. " || echo gone"):match("%a+"))
    assert.is_false(launch.listening(tonumber(p)))
    assert.equal("yes", capture("test -d " .. sh_quote(tmp .. "/x/ab") .. " && test -d " .. sh_quote(base) .. " && echo yes"):match("%a+"))
  end)
end)

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
    assert.is_not_nil(b, ("every connection went to worker %d"):format(pid_a))
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
  local tmp, emu, port
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
    it("is off by default: no 429 and no X-RateLimit-Limit, however fast the requests come", function()
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
