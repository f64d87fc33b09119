-- spec/emulator_faults_spec.lua
--
-- Owns: every fault kind of the emulator (emulator/emu_faults.lua) and how faults are posted,
-- queued and checked.
-- The emulator (emulator/kvs_emulator.lua and its parts) runs in nginx, started through
-- emulator/launch.lua; the helpers are spec/support/emulator.lua's. Needs only luasocket and
-- lua-cjson. Run from the repository root: lua5.X /usr/bin/busted spec/emulator_faults_spec.lua

package.path = "./?.lua;" .. package.path

local cjson = require "cjson"
local launch = require "emulator.launch"
local E = require "spec.support.emulator"

local sh_quote, capture, write_file = launch.sh_quote, launch.capture, launch.write_file
local connect = E.connect
local control, request, get, keys_path = E.control, E.request, E.get, E.keys_path
local list, keys_of, paging_key, paging_keys = E.list, E.keys_of, E.paging_key, E.paging_keys
local paging_page, peak_meter, stream_count, ORDER_KEYS = E.paging_page, E.peak_meter, E.stream_count, E.ORDER_KEYS
local SLOW, PAGING_COUNT = E.SLOW, E.PAGING_COUNT

---------------------------------------------------------------------------------------------------

describe("kvs emulator", function()
  local tmp, storage, emu, port
  E.with_stores(function(c) tmp, storage, emu, port = c.tmp, c.storage, c.emu, c.port end)

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
end)
