-- Listing against the local emulator: paging, options, cursors, the wire format.
local T = require "spec.support.env"

local TOKEN = "apify_api_spec_SECRET_9f8e7d"

local function sorted_copy(list)
  local copy = {}
  for i, v in ipairs(list) do copy[i] = v end
  table.sort(copy)   -- Lua compares strings byte-wise (C locale)
  return copy
end

describe("listing keys", function()
  -- keys in the API's byte order, across the whole allowed alphabet
  local ALPHABET_KEYS = { "A", "Z", "a", "z", "0", "9", "!", "-", "_", ".x", "'q", "(p)", "ab", "a!", "a(" }

  local ctx = T.emulated({
    big = T.numbered(2345), mixed = ALPHABET_KEYS, empty = {},
    prefixed = { "img-1", "img-2", "img-3", "doc-1", "doc-2", "imgx", "im" },
    sizes = { small = "1", medium = ("m"):rep(1000), empty = "" },
  }, TOKEN)
  local emu, client, store
  lazy_setup(function() emu, client = ctx.emu, ctx.client; store = client:store("big") end)

  it("yields every key once, in byte order, across pages", function()
    local keys, sizes, urls = T.collect(store, { page_size = 1000, parallel = 1 })
    assert.are.equal(2345, #keys)
    assert.are.same(T.numbered(2345), keys)
    for i = 1, #keys do
      assert.are.equal(i % 7, sizes[i])
      assert.are.equal(emu.base_url .. "/v2/key-value-stores/big/records/" .. keys[i], urls[i])
    end
    assert.are.equal(3, #emu:requests())
  end)

  it("returns sizes as integers on Lua 5.3+", function()
    for _, size in store:keys({ limit = 3 }) do
      if math.type then assert.are.equal("integer", math.type(size)) end
      assert.are.equal("number", type(size))
    end
  end)

  it("uses the API's byte order for the whole key alphabet", function()
    local keys = T.collect(client:store("mixed"))
    assert.are.same(sorted_copy(ALPHABET_KEYS), keys)
  end)

  it("lists an empty store without yielding", function()
    local keys = T.collect(client:store("empty"))
    assert.are.same({}, keys)
    assert.are.equal(1, #emu:requests())
  end)

  it("lists through a base_url ending in /v2 or with an upper-case scheme", function()
    local upper = emu.base_url:gsub("^http:", "HTTP:")
    for _, base_url in ipairs({ emu.base_url .. "/v2", emu.base_url .. "/v2/", upper, upper .. "/v2" }) do
      emu:clear_requests()
      local c = T.client(emu, { token = TOKEN, base_url = base_url })
      assert.are.same({ "img-1", "img-2", "img-3" }, T.collect(c:store("prefixed"), { prefix = "img-" }), base_url)
      local page = assert(c:store("prefixed"):list_keys({ prefix = "doc-" }))
      assert.are.equal(2, #page.items, base_url)
      local reqs = emu:requests()
      assert.are.equal(2, #reqs, base_url)
      for _, r in ipairs(reqs) do
        assert.are.equal(200, r.status)
        assert.matches("^/v2/key%-value%-stores/prefixed/keys%?", r.uri)
      end
    end
  end)

  it("filters by prefix", function()
    assert.are.same({ "img-1", "img-2", "img-3" }, T.collect(client:store("prefixed"), { prefix = "img-" }))
    assert.are.same({ "img-1", "img-2", "img-3", "imgx" }, T.collect(client:store("prefixed"), { prefix = "img" }))
    assert.are.same({}, T.collect(client:store("prefixed"), { prefix = "zzz" }))
  end)

  it("pages with page_size and asks only for what remains under limit", function()
    local keys = T.collect(store, { page_size = 100, limit = 250, parallel = 1 })
    assert.are.same(T.numbered(250), keys)
    local reqs = emu:requests()
    assert.are.equal(3, #reqs)
    assert.are.equal("100", reqs[1].args.limit)
    assert.are.equal("100", reqs[2].args.limit)
    assert.are.equal("50", reqs[3].args.limit)
    assert.is_nil(reqs[1].args.exclusiveStartKey)
    assert.are.equal("k00100", reqs[2].args.exclusiveStartKey)
    assert.are.equal("k00200", reqs[3].args.exclusiveStartKey)
  end)

  it("stops at a limit inside a page without another request", function()
    local keys = T.collect(store, { limit = 5 })
    assert.are.same(T.numbered(5), keys)
    assert.are.equal(1, #emu:requests())
    assert.are.equal("5", emu:requests()[1].args.limit)
  end)

  it("resumes after the last key seen (exclusiveStartKey)", function()
    local first, last = {}, nil
    for key in store:keys({ page_size = 300 }) do
      first[#first + 1] = key
      last = key
      if #first == 1234 then break end
    end
    local rest = T.collect(store, { exclusiveStartKey = last })
    assert.are.equal(2345 - 1234, #rest)
    assert.are.equal("k01235", rest[1])
    for _, k in ipairs(rest) do first[#first + 1] = k end
    assert.are.same(T.numbered(2345), first)
  end)

  it("reuses one keep-alive connection for all pages of a listing", function()
    T.collect(store, { page_size = 200, parallel = 1 })
    local reqs = emu:requests()
    assert.are.equal(12, #reqs)
    for i = 2, #reqs do
      assert.are.equal(reqs[1].connection, reqs[i].connection)
    end
    -- and the next listing of the same client picks the connection up again
    T.collect(store, { limit = 1 })
    reqs = emu:requests()
    assert.are.equal(reqs[1].connection, reqs[#reqs].connection)
  end)

  it("asks for gzip and gets it", function()
    T.collect(store, { limit = 1000 })
    local req = emu:requests()[1]
    assert.matches("gzip", req.headers["accept-encoding"])
    assert.are.equal("gzip", req.content_encoding)
  end)

  it("asks for identity bodies with gzip = false", function()
    local plain = T.client(emu, { token = TOKEN, gzip = false })
    assert.are.equal(1000, #T.collect(plain:store("big"), { limit = 1000 }))
    local req = emu:requests()[1]
    assert.is_nil(req.headers["accept-encoding"])
    assert.is_nil(req.content_encoding)
  end)

  it("sends the token only as a Bearer header, never in the URL", function()
    T.collect(store, { limit = 10, prefix = "k", signature = "sig" })
    local req = emu:requests()[1]
    assert.are.equal("token", req.auth)
    assert.is_nil(req.uri:find(TOKEN, 1, true))
    assert.is_nil(req.args.token)
  end)

  it("sends no Authorization header with token = false", function()
    local anon = T.client(emu, { token = false })
    local err = T.raised(T.collect, anon:store("big"))
    assert.are.equal("token-not-provided", err.type)
    assert.are.equal(401, err.status)
    assert.is_nil(emu:requests()[1].auth)
  end)

  it("percent-encodes the store id and every query value", function()
    local odd = "a b&c=d/é?#%+"
    T.collect(client:store("~big"), { prefix = odd, exclusiveStartKey = odd, collection = "c d", signature = "s+/=" })
    local req = emu:requests()[1]
    assert.matches("^/v2/key%-value%-stores/~big/keys%?", req.uri)
    assert.are.equal(odd, req.args.prefix)
    assert.are.equal(odd, req.args.exclusiveStartKey)
    assert.are.equal("c d", req.args.collection)
    assert.are.equal("s+/=", req.args.signature)
    assert.is_nil(req.uri:find(" ", 1, true))
    assert.matches("prefix=a%%20b%%26c%%3Dd%%2F%%C3%%A9%%3F%%23%%25%%2B", req.uri)
  end)

  it("sends prefix, collection and signature whole, a NUL byte as %00, in every kind of listing", function()
    -- cut at the NUL, "img-\0x" would be "img-" and list three keys; whole, it is no key's prefix
    local opts = { prefix = "img-\0x", collection = "c\0d", signature = "s\0g" }
    local function with(extra)
      local o = {}
      for k, v in pairs(opts) do o[k] = v end
      for k, v in pairs(extra or {}) do o[k] = v end
      return o
    end
    local function sent_whole(url, what)
      for _, param in ipairs({ "prefix=img-%00x", "collection=c%00d", "signature=s%00g" }) do
        assert(url:find(param, 1, true), what .. " sent " .. url .. ", not " .. param)
      end
    end
    local function logged(what)
      local reqs = emu:requests()
      assert.is_true(#reqs > 0, what .. " made no request")
      for _, r in ipairs(reqs) do sent_whole(r.uri, what) end
      emu:clear_requests()
    end
    local prefixed = client:store("prefixed")
    local function job_keys(o)
      local job, got = prefixed:job(o), {}
      for _ = 1, 100000 do
        for k in job:poll() do got[#got + 1] = k end
        if job:status() ~= "running" then break end
        require("socket").sleep(0.001)
      end
      assert.are.equal("done", job:status())
      return got
    end

    emu:clear_requests()
    assert.are.same({}, T.collect(prefixed, with()))
    logged("keys")
    assert.are.same({}, T.collect(prefixed, with({ prefetch = false })))
    logged("keys without prefetch")
    assert.are.same({}, T.collect(prefixed, with({ parallel = 2 })))
    logged("keys with parallel")
    assert.are.same({}, assert(prefixed:list_keys(with())).items)
    logged("list_keys")
    assert.are.same({}, job_keys(with()))
    logged("job")
    assert.are.same({}, job_keys(with({ parallel = 2 })))
    logged("job with parallel")
    local listing = prefixed:listing(with({ parallel = 1 }))
    sent_whole(assert(listing:request()), "listing")
    listing:close()
    local plan = prefixed:listing(with({ parallel = 2 }))
    local reqs = plan:requests(0)
    assert.is_true(#reqs > 0)
    for _, r in ipairs(reqs) do sent_whole(r.url, "the parallel plan") end
    plan:close()
  end)

  it("maps username~name and ~name ids like the API", function()
    assert.are.equal(2345, #T.collect(client:store("someone~big")))
    assert.matches("/v2/key%-value%-stores/someone~big/keys", emu:requests()[1].uri)
  end)

  it("sends a User-Agent naming the module", function()
    T.collect(store, { limit = 1 })
    assert.matches("^apify%.kvs/" .. T.kvs._VERSION:match("[%d.]+$"):gsub("%.", "%%.") .. " %(Lua", emu:requests()[1].headers["user-agent"])
    local custom = T.client(emu, { token = TOKEN, user_agent = "my-app/2" })
    T.collect(custom:store("big"), { limit = 1 })
    local reqs = emu:requests()
    assert.are.equal("my-app/2", reqs[#reqs].headers["user-agent"])
  end)

  it("works with a base_url that has a trailing slash", function()
    local c = T.client(emu, { token = TOKEN, base_url = emu.base_url .. "/" })
    assert.are.equal(3, #T.collect(c:store("big"), { limit = 3 }))
    assert.matches("^/v2/", emu:requests()[1].uri)
  end)

  it("reads the token and base URL from the environment by default", function()
    -- a child process, so the test does not depend on this process's environment
    local script = "package.cpath = '" .. T.cpath .. ";' .. package.cpath; " ..
      "local s = require('apify.kvs').new{ min_delay = 0.01 }:store('big'); " ..
      "local n = 0; for k in s:keys{ limit = 7 } do n = n + 1 end; io.write(n)"
    local out = T.read("APIFY_TOKEN='" .. TOKEN .. "' APIFY_API_BASE_URL='" .. emu.base_url ..
      "' " .. T.lua .. " -e \"" .. script .. "\" 2>&1")
    assert.are.equal("7", out)
    assert.are.equal("token", emu:requests()[1].auth)
  end)

  describe("list_keys", function()
    it("returns one page as the API's data object", function()
      local page, err = client:store("sizes"):list_keys()
      assert.is_nil(err)
      assert.are.equal(3, #page.items)
      assert.are.same({ "empty", "medium", "small" },
        { page.items[1].key, page.items[2].key, page.items[3].key })
      assert.are.same({ 0, 1000, 1 }, { page.items[1].size, page.items[2].size, page.items[3].size })
      assert.are.equal(emu.base_url .. "/v2/key-value-stores/sizes/records/medium",
        page.items[2].recordPublicUrl)
      assert.are.equal(3, page.count)
      assert.are.equal(1000, page.limit)
      assert.is_false(page.isTruncated)
      assert.is_nil(page.nextExclusiveStartKey)
      assert.is_nil(page.exclusiveStartKey)
    end)

    it("makes exactly one request and reports the next cursor", function()
      local page = assert(store:list_keys({ limit = 10, exclusiveStartKey = "k00005" }))
      assert.are.equal(1, #emu:requests())
      assert.are.equal(10, #page.items)
      assert.are.equal("k00006", page.items[1].key)
      assert.is_true(page.isTruncated)
      assert.are.equal("k00015", page.nextExclusiveStartKey)
      assert.are.equal("k00005", page.exclusiveStartKey)
      assert.are.equal(10, page.limit)
    end)

    it("returns nil and an error table for API errors", function()
      local page, err = client:store("no-such-store"):list_keys()
      assert.is_nil(page)
      assert.are.equal(404, err.status)
      assert.are.equal("record-not-found", err.type)
      assert.is_string(err.message)
      assert.matches("^apify%.kvs: .+ %(record%-not%-found, HTTP 404%)$", tostring(err))
    end)
  end)

  describe("prefetch", function()
    local socket = require "socket"
    after_each(function() emu:config({ delay = 0 }) end)

    -- 3 pages, the server waits 0.2 s before each, the loop works 0.2 s per page
    local function timed(prefetch)
      emu:config({ delay = 0.2 })
      local t0 = socket.gettime()
      local n = 0
      for _ in store:keys({ page_size = 10, limit = 30, prefetch = prefetch }) do
        n = n + 1
        socket.sleep(0.02)
      end
      assert.are.equal(30, n)
      return socket.gettime() - t0
    end

    it("fetches page k+1 while the loop works through page k", function()
      local with = timed(true)
      local without = timed(false)
      -- sequential: 3 x (0.2 fetch + 0.2 work) = 1.2 s; overlapped: 0.2 + 3 x 0.2 = 0.8 s
      assert.is_true(without >= 1.15, "without prefetch " .. without)   -- a lower bound holds anywhere
      T.timed_claim(with < 1.05 * T.slow, "with prefetch " .. with)
      T.timed_claim(with < without - 0.15, ("with %.3f s, without %.3f s"):format(with, without))
    end)

    it("with prefetch = false, asks for a page only when the last one is used up", function()
      local next_key, listing = store:keys({ page_size = 1000, prefetch = false })
      for _ = 1, 1000 do next_key() end
      socket.sleep(0.05)
      assert.are.equal(1, #emu:requests())
      assert.are.equal("k01001", next_key())
      assert.are.equal(2, #emu:requests())
      listing:close()
    end)

    it("with prefetch, asks for the next page as soon as a page is taken", function()
      local next_key, listing = store:keys({ page_size = 1000, parallel = 1 })
      next_key()
      socket.sleep(0.05)
      next_key()             -- a turn of the transfer (also made every 256 keys)
      assert.are.equal(2, #emu:requests())
      listing:close()
    end)

    it("closing a listing cancels the request in flight at once", function()
      emu:config({ delay = 0.5 })
      local it, listing = store:keys({ page_size = 10 })
      assert.is_string(it())       -- page 1 arrived; page 2 is on its way, 0.5 s out
      local t0 = socket.gettime()
      listing:close()
      assert.is_true(socket.gettime() - t0 < 0.2)
      assert.is_nil(it())
    end)
  end)

  describe("closing", function()
    it("close() ends a listing and later calls yield nothing", function()
      local it, listing = store:keys({ page_size = 10 })
      assert.is_string((it()))
      listing:close()
      assert.is_nil(it())
      assert.matches("closed", tostring(listing))
      listing:close()   -- twice is fine
    end)

    -- this test's own requests (told apart by their limit): an earlier test's request still
    -- in flight may reach the emulator's log late
    local function requests_with_limit(limit)
      local n = 0
      for _, r in ipairs(emu:requests()) do
        if r.args.limit == limit then n = n + 1 end
      end
      return n
    end

    it("a broken loop releases everything at the next collection", function()
      for _ = 1, 20 do
        for _ in store:keys({ page_size = 12, prefetch = false }) do break end
      end
      collectgarbage(); collectgarbage()
      assert.are.equal(20, requests_with_limit("12"))
    end)

    it("with prefetch, a broken loop made at most one request ahead", function()
      for _ = 1, 20 do
        for _ in store:keys({ page_size = 11 }) do break end
      end
      collectgarbage(); collectgarbage()
      local n = requests_with_limit("11")
      assert.is_true(n >= 20 and n <= 40, n .. " requests")
    end)

    if _VERSION == "Lua 5.4" then
      it("on Lua 5.4, breaking out of a for loop closes the listing at once", function()
        -- no prefetch: a request in flight at the break may reach the emulator's log late;
        -- page_size 13 tells this test's requests from an earlier one's late entries
        local f, s, c, listing = store:keys({ page_size = 13, prefetch = false })
        for _ in f, s, c, listing do break end   -- the 4th value is to-be-closed
        assert.matches("closed", tostring(listing))
        -- the emulator logs a request after its reply went out: wait for the one page's entry
        local deadline, reqs = T.now() + 5 * T.slow, requests_with_limit("13")
        while reqs < 1 and T.now() < deadline do
          require("socket").sleep(0.02)
          reqs = requests_with_limit("13")
        end
        assert.are.equal(1, reqs)
        assert.is_nil(f())
        assert.are.equal(reqs, requests_with_limit("13"))
      end)
    end
  end)
end)
