-- spec/compat_spec.lua
--
-- Owns: checking the emulator against implementations of the key-listing endpoint that this
-- project did not write (spec/js/compat.cjs drives them, pinned by spec/js/package-lock.json,
-- installed by `make js-deps` into build/js):
--   - @crawlee/memory-storage lists the same storage directory: keys, sizes and paging must match
--     where both agree on order; each known difference is pinned down here and listed in
--     docs/emulator.md ("Compared with other implementations");
--   - the official JavaScript client apify-client pages through the emulator with listKeys,
--     rides out its rate limit, reads its error bodies, and signs as the emulator checks.
-- Runs under the "hosts" target (Lua 5.4 drives node and the emulator's nginx).

package.path = "./?.lua;" .. package.path

local T = require "spec.support.env"
local cjson = require "cjson"
local http = require "socket.http"
local ltn12 = require "ltn12"

local JS_MODULES = "build/js/node_modules"
local DRIVER = "spec/js/compat.cjs"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs the node driver; returns its decoded JSON output.
local function node(...)
  local parts = {}
  for i, a in ipairs({ ... }) do parts[i] = sh_quote(a) end
  local cmd = "NODE_PATH=" .. sh_quote(JS_MODULES) .. " node " .. DRIVER .. " " .. table.concat(parts, " ")
    .. " 2>/dev/null"
  local text = T.read(cmd)
  local ok, value = pcall(cjson.decode, text)
  assert(ok and type(value) == "table", "node " .. table.concat(parts, " ") .. " printed: " .. text)
  return value
end

local function url_encode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- One page of the emulator, decoded (status, body table).
local function emulator_page(emu, store, query)
  local chunks = {}
  local _, status = http.request{
    url = emu.base_url .. "/v2/key-value-stores/" .. store .. "/keys?" .. query,
    sink = ltn12.sink.table(chunks), headers = { authorization = "Bearer t" },
  }
  return status, cjson.decode(table.concat(chunks))
end

-- Every page of the emulator with `limit`, following nextExclusiveStartKey.
local function emulator_pages(emu, store, limit, extra)
  local pages, esk = {}, nil
  repeat
    local q = "limit=" .. limit .. (esk and ("&exclusiveStartKey=" .. url_encode(esk)) or "") .. (extra or "")
    local status, body = emulator_page(emu, store, q)
    assert.equal(200, status)
    pages[#pages + 1] = body.data
    esk = body.data.nextExclusiveStartKey
  until not body.data.isTruncated or #pages > 10000
  return pages
end

local function keys_sizes(pages)
  local keys, sizes = {}, {}
  for _, p in ipairs(pages) do
    for _, item in ipairs(p.items) do
      keys[#keys + 1] = item.key
      sizes[item.key] = item.size
    end
  end
  return keys, sizes
end

local function sorted(list)
  local c = {}
  for i, v in ipairs(list) do c[i] = v end
  table.sort(c)
  return c
end

-- Keys from a-z, 0-9 and "-": for these, memory-storage's localeCompare and the API's byte order
-- agree (punctuation before digits before letters, one case only).
local function agreeing_keys(n)
  local alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
  local seed, keys, seen = 12345, {}, {}
  local function rnd(m)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % m
  end
  while #keys < n do
    local len = 1 + rnd(12)
    local t = {}
    for i = 1, len do
      local c = rnd(#alphabet) + 1
      t[i] = alphabet:sub(c, c)
    end
    local k = table.concat(t)
    if not seen[k] then seen[k] = true keys[#keys + 1] = k end
  end
  return keys
end

local have_js = T.sh("test -f " .. JS_MODULES .. "/.package-lock.json && command -v node >/dev/null")

describe("compat", function()
  local storage, emu
  local AGREE = agreeing_keys(120)
  -- mixed case, "_", "!", "(", digits: the API's byte order differs from localeCompare
  local MIXED = { "a", "B", "c", "_x", "-x", "!x", "(x", "Z9", "z0", "item_10", "item-2", "item.3", "ITEM4" }

  lazy_setup(function()
    assert(have_js, "the JavaScript packages are missing: run `make js-deps` (npm ci of spec/js into build/js)")
    storage = T.tmpdir()
    local dir = storage .. "/key_value_stores/"
    assert(T.sh("mkdir -p " .. sh_quote(dir .. "agree") .. " " .. sh_quote(dir .. "mixed") .. " " .. sh_quote(dir .. "schema")
      .. " " .. sh_quote(dir .. "signed")))
    for i, k in ipairs(AGREE) do
      -- valid JSON for .json records (memory-storage drops records whose JSON does not parse)
      local ext = ({ ".json", ".txt", ".bin", ".png" })[i % 4 + 1]
      local content = ext == ".json" and ('{"i":' .. i .. ',"pad":"' .. ("x"):rep(i % 13) .. '"}') or ("y"):rep(i * 7 % 300)
      T.write_file(dir .. "agree/" .. k .. ext, content)
    end
    for i, k in ipairs(MIXED) do T.write_file(dir .. "mixed/" .. k .. ".txt", ("m"):rep(i)) end
    assert(T.sh("mkdir -p " .. sh_quote(dir .. "badjson")))
    T.write_file(dir .. "badjson/good.json", '{"ok":true}')
    T.write_file(dir .. "badjson/bad.json", "not json")
    for i = 1, 12 do T.write_file(dir .. ("schema/doc-%02d.txt"):format(i), "d") end
    for i = 1, 30 do T.write_file(dir .. ("schema/img-%02d.txt"):format(i), "i") end
    T.write_file(dir .. "schema/__metadata__.json", cjson.encode({ id = "schema", name = "schema",
      schema = { actorKeyValueStoreSchemaVersion = 1, collections = { docs = { keyPrefix = "doc-" } } } }))
    for _, k in ipairs({ "a", "INPUT", "doc-1" }) do T.write_file(dir .. "signed/" .. k .. ".txt", "s") end
    T.write_file(dir .. "signed/__metadata__.json",
      cjson.encode({ id = "SignedStore01", name = "signed", urlSigningSecretKey = "k3y-s3cret" }))
    emu = T.start_emulator({ storage = storage })
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    T.rmrf(storage)
  end)

  before_each(function()
    emu:config{ token = false, rate_limit = 0, enforce = false, burst = false, delay = 0 }
    emu:clear_requests()
  end)

  describe("@crawlee/memory-storage over the same directory", function()
    for _, limit in ipairs({ 1, 7, 50, 1000 }) do
      it("the same pages at limit " .. limit .. " (keys, sizes, count, isTruncated, cursors)", function()
        local mine = emulator_pages(emu, "agree", limit)
        local theirs = node("memory", storage, "agree", tostring(limit)).pages
        assert.equal(#mine, #theirs)
        for i = 1, #mine do
          local a, b = mine[i], theirs[i]
          assert.equal(b.count, a.count)
          assert.equal(b.limit, a.limit)
          assert.equal(b.isTruncated, a.isTruncated)
          for j, item in ipairs(a.items) do
            assert.equal(b.items[j].key, item.key)
            assert.equal(b.items[j].size, item.size)
          end
          if a.isTruncated then
            assert.equal(b.nextExclusiveStartKey, a.nextExclusiveStartKey)
          else
            -- difference: the last page's nextExclusiveStartKey is null here (as the API sends
            -- it), absent there
            assert.equal(cjson.null, a.nextExclusiveStartKey)
            assert.is_nil(b.nextExclusiveStartKey)
          end
        end
        local keys = keys_sizes(mine)
        assert.same(sorted(AGREE), keys)
      end)
    end

    it("difference: order (byte order here, localeCompare there) over the same keys and sizes", function()
      local mine_keys, mine_sizes = keys_sizes(emulator_pages(emu, "mixed", 1000))
      local theirs_keys, theirs_sizes = keys_sizes(node("memory", storage, "mixed", "1000").pages)
      assert.same(sorted(MIXED), mine_keys)           -- byte order: "!x" "(x" "-x" "B" "ITEM4" ... "_x" "a"
      assert.same(sorted(mine_keys), sorted(theirs_keys))
      assert.same(mine_sizes, theirs_sizes)
      assert.are_not.same(mine_keys, theirs_keys)
      -- localeCompare puts "a" before "B"; bytes put "B" (0x42) first
      local function pos(list, k) for i, v in ipairs(list) do if v == k then return i end end end
      assert.is_true(pos(mine_keys, "B") < pos(mine_keys, "a"))
      assert.is_true(pos(theirs_keys, "a") < pos(theirs_keys, "B"))
    end)

    it("difference: an exclusiveStartKey that is no key (continues after it here, restarts there)", function()
      local _, body = emulator_page(emu, "agree", "limit=1000&exclusiveStartKey=m")
      local first_mine = body.data.items[1].key
      assert.is_true(first_mine > "m")
      local theirs = node("memory", storage, "agree", "1000", "m").pages[1]
      assert.equal(sorted(AGREE)[1], theirs.items[1].key)
    end)

    it("difference: collection (filtered by the store's schema here, ignored there)", function()
      local mine = keys_sizes(emulator_pages(emu, "schema", 5, "&collection=docs"))
      local theirs = keys_sizes(node("memory", storage, "schema", "1000", "", "docs").pages)
      assert.equal(12, #mine)
      assert.equal(42, #theirs)
    end)

    it("difference: a .json record that is not JSON (listed here, dropped there)", function()
      assert.same({ "bad", "good" }, (keys_sizes(emulator_pages(emu, "badjson", 1000))))
      assert.same({ "good" }, (keys_sizes(node("memory", storage, "badjson", "1000").pages)))
    end)

    it("difference: recordPublicUrl (the API's record URL here, none there)", function()
      local mine = emulator_pages(emu, "agree", 1000)[1].items[1]
      local theirs = node("memory", storage, "agree", "1000").pages[1].items[1]
      assert.equal(emu.base_url .. "/v2/key-value-stores/agree/records/" .. url_encode(mine.key), mine.recordPublicUrl)
      assert.is_nil(theirs.recordPublicUrl)
    end)
  end)

  describe("apify-client (the official JavaScript client) against the emulator", function()
    it("pages through listKeys to exactly the emulator's pages", function()
      local mine = emulator_pages(emu, "agree", 13)
      emu:clear_requests()
      local got = node("client", emu.base_url, "agree", cjson.encode({ limit = 13, token = "t" }))
      assert.is_nil(got.error)
      assert.same(mine, got.pages)
      local log = emu:requests()
      assert.equal(#mine, #log)
      assert.equal("other", log[1].auth)     -- present (the emulator has no token to match)
    end)

    it("rides out the rate limit: retries each 429 rate-limit-exceeded until the page comes", function()
      emu:config{ rate_limit = 60, enforce = 4, burst = 1 }
      local got = node("client", emu.base_url, "agree", cjson.encode({ limit = 10, token = "t",
        minDelayBetweenRetriesMillis = 50 }))
      assert.is_nil(got.error)
      local keys = keys_sizes(got.pages)
      assert.same(sorted(AGREE), keys)
      local ok, limited = 0, 0
      for _, r in ipairs(emu:requests()) do
        if r.status == 200 then ok = ok + 1 elseif r.status == 429 then limited = limited + 1 end
      end
      assert.equal(12, ok)
      assert.is_true(limited > 0, "no 429 seen")
    end)

    it("gives up after maxRetries with the API's rate-limit-exceeded error", function()
      emu:config{ enforce = 0.01, burst = 1 }
      local got = node("client", emu.base_url, "agree", cjson.encode({ limit = 10, token = "t", maxRetries = 1,
        minDelayBetweenRetriesMillis = 10 }))
      assert.equal(1, #got.pages)
      assert.equal(429, got.error.statusCode)
      assert.equal("rate-limit-exceeded", got.error.type)
    end)

    it("reads the emulator's error bodies: 404, 400, 401, 403", function()
      local function err_of(store, opts)
        local got = node("client", emu.base_url, store, cjson.encode(opts))
        assert.is_table(got.error, store)
        return got.error
      end
      local e = err_of("no-such-store", { token = "t" })
      assert.same({ 404, "record-not-found" }, { e.statusCode, e.type })
      e = err_of("schema", { token = "t", collection = "nope" })
      assert.same({ 400, "invalid-input" }, { e.statusCode, e.type })
      assert.truthy(e.message:find("nope", 1, true))
      emu:config{ token = "secret-token" }
      e = err_of("agree", {})
      assert.same({ 401, "token-not-provided" }, { e.statusCode, e.type })
      e = err_of("agree", { token = "wrong" })
      assert.same({ 401, "invalid-token" }, { e.statusCode, e.type })
      e = err_of("signed", { signature = "abc" })
      assert.same({ 403, "insufficient-permissions" }, { e.statusCode, e.type })
    end)

    it("keeps paging through a collection's empty pages when its loop follows isTruncated", function()
      local got = node("client", emu.base_url, "schema", cjson.encode({ limit = 5, token = "t", collection = "docs" }))
      local keys = keys_sizes(got.pages)
      assert.equal(12, #keys)
      local empty = 0
      for _, p in ipairs(got.pages) do if #p.items == 0 and p.isTruncated then empty = empty + 1 end end
      assert.is_true(empty > 0)
    end)
  end)

  describe("signatures made by @apify/utilities (what apify-client signs with)", function()
    it("the emulator's record URLs carry the library's record signatures", function()
      local signed = node("sign", "k3y-s3cret", "SignedStore01", "0", "a", "INPUT", "doc-1")
      local page = emulator_pages(emu, "signed", 1000)[1]
      assert.equal(3, #page.items)
      for _, item in ipairs(page.items) do
        assert.equal(signed.records[item.key], item.recordPublicUrl:match("%?signature=(.*)$"))
      end
    end)

    it("the emulator accepts the library's keys signature instead of a token, and refuses an expired one", function()
      emu:config{ token = "secret-token" }
      local never = node("sign", "k3y-s3cret", "SignedStore01", "0").keys
      local later = node("sign", "k3y-s3cret", "SignedStore01", tostring(math.floor((os.time() + 3600) * 1000))).keys
      local expired = node("sign", "k3y-s3cret", "SignedStore01", "1000").keys
      for _, sig in ipairs({ never, later }) do
        local got = node("client", emu.base_url, "signed", cjson.encode({ signature = sig }))
        assert.is_nil(got.error)
        assert.equal(3, #got.pages[1].items)
      end
      local got = node("client", emu.base_url, "signed", cjson.encode({ signature = expired }))
      assert.same({ 403, "insufficient-permissions" }, { got.error.statusCode, got.error.type })
      -- a signature for another store id is refused
      local other = node("sign", "k3y-s3cret", "OtherStore", "0").keys
      got = node("client", emu.base_url, "signed", cjson.encode({ signature = other }))
      assert.equal(403, got.error.statusCode)
    end)
  end)
end)
