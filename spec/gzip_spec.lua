-- gzip reply bodies through the sans-I/O listing (listing:reply / begin / header / body):
-- the core inflates them with zlib (src/core_inflate.c) when the reply says
-- Content-Encoding: gzip, counting decoded bytes against a page's limits. No socket, no clock:
-- the compressed bodies are made by gzip(1).
local T = require "spec.support.env"

local function page_json(keys, truncated, next_key)
  local items = {}
  for i, k in ipairs(keys) do items[i] = ('{"key":"%s","size":%d}'):format(k, i % 7) end
  return ('{"data":{"items":[%s],"count":%d,"limit":1000,"isTruncated":%s%s}}'):format(
    table.concat(items, ","), #keys, truncated and "true" or "false",
    next_key and (',"nextExclusiveStartKey":"' .. next_key .. '"') or "")
end

-- gzip(1) of `data`, or of what the shell command `producer` writes.
local function gzip(data, producer)
  local dir = T.tmpdir()
  local path = dir .. "/body"
  if producer then
    assert(T.sh("{ " .. producer .. "; } | gzip -c -n > '" .. path .. ".gz'"))
  else
    T.write_file(path, data)
    assert(T.sh("gzip -n '" .. path .. "'"))
  end
  local out = assert(T.read_file(path .. ".gz"))
  T.rmrf(dir)
  return out
end

local GZ = { ["Content-Encoding"] = "gzip", ["Content-Type"] = "application/json" }

describe("gzip reply bodies (sans-I/O)", function()
  local client = T.kvs.new{ base_url = "http://127.0.0.1:9", token = "t", min_delay = 0.01,
                            max_retries = 2 }
  local function listing(opts)           -- the page-by-page sans-I/O listing
    local o = { parallel = 1 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return client:store("s"):listing(o)
  end

  local function keys_of(l)
    local out = {}
    for k in l:page_keys() do out[#out + 1] = k end
    return out
  end

  it("inflates a gzip page given whole to listing:reply", function()
    local l = listing()
    assert(l:request())
    local body = page_json(T.numbered(1000), false)
    local z = gzip(body)
    assert.is_true(#z < #body / 4)
    local step, n = l:reply(200, GZ, z, 0)
    assert.are.equal("page", step)
    assert.are.equal(1000, n)
    assert.are.same(T.numbered(1000), keys_of(l))
    assert.is_nil(l:request())
  end)

  it("inflates the same page fed in chunks of any size, the header named in any case", function()
    local body = page_json(T.numbered(300), false)
    local z = gzip(body)
    for _, size in ipairs({ 1, 7, 100, 4096, #z }) do
      local l = listing()
      assert(l:request())
      l:begin(200)
      l:header("content-encoding", "GZIP")
      for i = 1, #z, size do l:body(z:sub(i, i + size - 1)) end
      local step, n = l:finish("none", nil, 0)
      assert.are.equal("page", step, "chunks of " .. size)
      assert.are.equal(300, n)
      assert.are.same(T.numbered(300), keys_of(l))
    end
  end)

  it("pages on across gzip pages and plain ones alike", function()
    local l = listing({ page_size = 2 })
    assert(l:request())
    assert.are.same({ "page", 2 }, { l:reply(200, GZ, gzip(page_json({ "a", "b" }, true, "b")), 0) })
    local url = assert(l:request())
    assert.matches("exclusiveStartKey=b", url)
    assert.are.same({ "page", 1 }, { l:reply(200, {}, page_json({ "c" }, false), 0) })
    assert.are.same({ "c" }, keys_of(l))
  end)

  it("retries a gzip body cut short, then takes the whole one", function()
    local l = listing()
    assert(l:request())
    local z = gzip(page_json(T.numbered(500), false))
    local step, wait = l:reply(200, GZ, z:sub(1, math.floor(#z / 2)), 0)
    assert.are.equal("retry", step)
    assert.is_true(wait > 0)
    assert(l:request())
    assert.are.same({ "page", 500 }, { l:reply(200, GZ, z, 1) })
  end)

  it("retries a gzip body missing only its trailer (the JSON is whole, the stream is not)", function()
    local l = listing()
    assert(l:request())
    local z = gzip(page_json({ "a" }, false))
    assert.are.equal("retry", (l:reply(200, GZ, z:sub(1, #z - 8), 0)))
  end)

  it("fails with invalid-response after the retries when the gzip stays corrupt", function()
    local l = listing()
    local z = gzip(page_json(T.numbered(10), false))
    local corrupt = z:sub(1, 20) .. ("\255"):rep(30) .. z:sub(51)
    local step, err
    for attempt = 0, 2 do
      assert(l:request())
      step, err = l:reply(200, GZ, corrupt, attempt)
    end
    assert.are.equal("failed", step)
    assert.are.equal("invalid-response", err.type)
    assert.are.equal(2, err.retries)
    assert.matches("not valid gzip", err.message)
  end)

  it("takes bytes after the gzip member as corrupt, however the body is cut", function()
    local z = gzip(page_json({ "a", "b" }, false))
    for _, tail in ipairs({ "x", "\0", "\n", z }) do
      local whole = listing()
      assert(whole:request())
      assert.are.equal("retry", (whole:reply(200, GZ, z .. tail, 0)), "fed whole")
      -- the member in one chunk, the byte after it in the next: the member's end must not
      -- make body() say the rest cannot matter, nor the next chunk go unread
      local split = listing()
      assert(split:request())
      split:begin(200)
      split:header("Content-Encoding", "gzip")
      local more = split:body(z)
      split:body(tail)
      local step, wait = split:finish("none", nil, 0)
      assert.are.equal("retry", step, "fed split at the member's end")
      assert.is_number(wait)
      assert.is_true(more, "body() said stop at the member's end")
      assert(split:request())
      assert.are.same({ "page", 2 }, { split:reply(200, GZ, z, 1) })
    end
  end)

  it("takes a body that is not gzip at all, under a gzip header, as corrupt", function()
    local l = listing()
    assert(l:request())
    local step, wait = l:reply(200, GZ, page_json({ "a" }, false), 0)
    assert.are.equal("retry", step)
    assert.is_number(wait)
  end)

  it("stops a gzip bomb at the page limit of decoded bytes, at once and for good", function()
    -- 40 MB of JSON whitespace inside a page object: valid JSON as far as it goes, about
    -- 40 kB on the wire, far past KVS_BODY_MAX(10) = 64 KiB + 40 KiB decoded
    local z = gzip(nil, [[printf '{"data":'; head -c 40000000 /dev/zero | tr '\000' ' ']])
    assert.is_true(#z < 100000, "bomb of " .. #z .. " bytes")
    local l = listing({ page_size = 10 })
    assert(l:request())
    local step, err = l:reply(200, GZ, z, 0)
    assert.are.equal("failed", step)
    assert.are.equal("invalid-response", err.type)
    assert.are.equal(0, err.retries)
    assert.matches("larger than 106496 bytes", err.message)
  end)

  it("starts each gzip body afresh, also after one whose rest was not read", function()
    -- a 503 whose gzip body decodes to more than the decoder reads of an error, then a page
    local l = listing()
    assert(l:request())
    local big = gzip(nil, [[printf '{"error":{"type":"x","message":"'; head -c 300000 /dev/zero | tr '\000' 'a'; printf '"}}']])
    assert.are.equal("retry", (l:reply(503, GZ, big, 0)))
    assert(l:request())
    assert.are.same({ "page", 2 }, { l:reply(200, GZ, gzip(page_json({ "a", "b" }, false)), 1) })
  end)

  it("reads the API's gzip error body (type and message) on a 404", function()
    local l = listing()
    assert(l:request())
    local z = gzip('{"error":{"type":"record-not-found","message":"Store was not found"}}')
    local step, err = l:reply(404, GZ, z, 0)
    assert.are.equal("failed", step)
    assert.are.equal("record-not-found", err.type)
    assert.are.equal("Store was not found", err.message)
    assert.are.equal(404, err.status)
  end)
end)
