-- The sans-I/O listing (store:listing): the C core decides, a driver of our
-- own moves bytes.  Here the driver is luasocket, to show that nothing in the
-- core depends on libcurl.
local T = require "spec.support.env"
local http = require "socket.http"
local ltn12 = require "ltn12"

local TOKEN = "apify_api_listing_SECRET_77"

-- one exchange through luasocket; returns status, headers, body or nil, err
local function fetch(url, headers)
  local chunks = {}
  local ok, status, resp_headers = http.request({ url = url, headers = headers,
    sink = ltn12.sink.table(chunks) })
  if not ok then return nil, status end
  return status, resp_headers, table.concat(chunks)
end

-- the whole driver: ask the core, fetch, tell the core, wait when it says so
local function drive(listing)
  local keys, sizes = {}, {}
  while true do
    local url, headers = listing:request()
    if not url then
      local err = headers
      if err then error(err) end
      return keys, sizes
    end
    local status, resp_headers, body = fetch(url, headers)
    local step, x
    if status then
      step, x = listing:reply(status, resp_headers, body)
    else
      step, x = listing:finish("network", resp_headers)
    end
    if step == "page" then
      for k, size in listing:page_keys() do keys[#keys + 1] = k; sizes[#sizes + 1] = size end
    elseif step == "retry" then
      T.sh("sleep " .. x)
    else
      error(x)
    end
  end
end

describe("sans-I/O listing driven by luasocket", function()
  local ctx = T.emulated({ s = T.numbered(250) }, TOKEN)
  local emu, store
  lazy_setup(function() emu = ctx.emu; store = ctx.client:store("s") end)

  it("lists every key with the core doing the paging", function()
    local listing = store:listing({ parallel = 1, page_size = 100 })
    local keys = drive(listing)
    assert.are.same(T.numbered(250), keys)
    assert.is_true(listing:finished())
    assert.is_nil(listing:error())
    local reqs = emu:requests()
    assert.are.equal(3, #reqs)
    assert.are.equal("k00200", reqs[3].args.exclusiveStartKey)
    assert.are.equal("token", reqs[1].auth)
  end)

  -- the planner driven one request at a time: every key with its url (nil with urls = false)
  local function drive_plan(plan)
    local keys, urls = {}, {}
    while not plan:finished() do
      while plan:take() do
        for k, _, url in plan:page_keys() do keys[#keys + 1] = k; urls[#urls + 1] = url or false end
      end
      local err = plan:error(); if err then error(err) end
      for _, r in ipairs(plan:requests()) do
        local status, resp_headers, body = fetch(r.url, r.headers)
        if status then plan:reply(r.id, status, resp_headers, body) else plan:finish(r.id, "network", resp_headers) end
      end
    end
    while plan:take() do
      for k, _, url in plan:page_keys() do keys[#keys + 1] = k; urls[#urls + 1] = url or false end
    end
    plan:close()
    return keys, urls
  end

  it("takes urls = false with parallel too: the planner's pages then hand out no url", function()
    for _, urls_opt in ipairs({ true, false }) do
      local keys, urls = drive_plan(store:listing({ parallel = 4, page_size = 50, urls = urls_opt }))
      assert.are.same(T.numbered(250), keys)
      for i, url in ipairs(urls) do
        if urls_opt then
          assert.are.equal(emu.base_url .. "/v2/key-value-stores/s/records/" .. keys[i], url)
        else
          assert.is_false(url)
        end
      end
    end
  end)

  it("hands out the request headers a driver must send", function()
    local url, headers = store:listing({ parallel = 1, limit = 5, prefix = "k0" }):request()
    assert.are.equal(emu.base_url .. "/v2/key-value-stores/s/keys?prefix=k0&limit=5", url)
    assert.are.equal("application/json", headers.Accept)
    assert.are.equal("Bearer " .. TOKEN, headers.Authorization)
    assert.matches("^apify%.kvs/", headers["User-Agent"])
  end)

  it("tells the driver to wait on 503 with Retry-After, then goes on", function()
    emu:faults({ { kind = "status", status = 503, retry_after = "0" } })
    local listing = store:listing({ parallel = 1, page_size = 1000 })
    local url, headers = listing:request()
    local status, resp_headers, body = fetch(url, headers)
    assert.are.equal(503, status)
    local step, wait = listing:reply(status, resp_headers, body)
    assert.are.equal("retry", step)
    assert.is_true(wait >= 0.01 and wait <= 0.02 + 1e-9, "wait " .. wait)
    assert.are.same(T.numbered(250), (drive(listing)))
  end)

  it("streams a body in chunks", function()
    local listing = store:listing({ parallel = 1, limit = 3 })
    local url, headers = listing:request()
    local status, resp_headers, body = fetch(url, headers)
    listing:begin(status)
    for name, value in pairs(resp_headers) do listing:header(name, value) end
    for i = 1, #body, 7 do assert.is_true(listing:body(body:sub(i, i + 6))) end
    local step, n = listing:finish()
    assert.are.equal("page", step)
    assert.are.equal(3, n)
    assert.is_nil(listing:request())
  end)

  it("reports transport faults and gives up after max_retries", function()
    local listing = store:listing({ parallel = 1 })
    for i = 1, 4 do
      assert.is_string((listing:request()))
      local step, x = listing:finish(i == 1 and "timeout" or "network", "connection reset")
      if i < 4 then
        assert.are.equal("retry", step)
      else
        assert.are.equal("failed", step)
        assert.are.equal("network-error", x.type)
        assert.matches("connection reset", x.message)
        assert.are.equal(3, x.retries)
      end
    end
    local none, err = listing:request()
    assert.is_nil(none)
    assert.are.equal("network-error", err.type)
    assert.are.equal("network-error", listing:error().type)
  end)

  it("stops the body early when it cannot be a page", function()
    local listing = store:listing({ parallel = 1 })
    listing:request()
    listing:begin(200)
    assert.is_false(listing:body("<html>"))
    local step = listing:finish()
    assert.are.equal("retry", step)
  end)

  it("alone has the sans-I/O methods: keys and job listings have none, and raise when given them", function()
    local next_key, keys_state = store:keys({ page_size = 2, limit = 3 })
    local _, parallel = store:keys({ parallel = 4 })
    local job = store:job({})
    local methods = store:listing({ parallel = 1 })      -- the sans-I/O methods, taken from a listing
    local calls = {
      request = function(o) methods.request(o) end,
      begin = function(o) methods.begin(o, 200) end,
      header = function(o) methods.header(o, "Content-Type", "application/json") end,
      body = function(o) methods.body(o, "{}") end,
      finish = function(o) methods.finish(o) end,
      reply = function(o) methods.reply(o, 200, {}, "{}") end,
      page_keys = function(o) methods.page_keys(o) end,
      finished = function(o) methods.finished(o) end,
      error = function(o) methods.error(o) end,
      close = function(o) methods.close(o) end,
    }
    for _, other in ipairs({ { keys_state, "apify.kvs.keys" }, { parallel, "apify.kvs.keys" },
                             { job, "apify.kvs.job" }, { store, "apify.kvs.store" },
                             { {}, "table" }, { 42, "number" } }) do
      for method, call in pairs(calls) do
        assert.are.equal(("bad argument #1 to '%s' (apify.kvs.listing expected, got %s)"):format(method, other[2]),
                         T.raised_message(call, other[1]))
        if type(other[1]) == "userdata" and method ~= "close" then
          assert.is_nil(other[1][method], other[2] .. " has no method " .. method)
        end
      end
    end
    -- a listing's method on the iterator's state raises, rather than spinning for ever
    assert.matches("attempt to call .*'request'", T.raised(function() keys_state:request() end))
    local borrowed = { request = methods.request }
    assert.matches("calling 'request' on bad self %(apify%.kvs%.listing expected, got table%)",
                   T.raised(function() borrowed:request() end))
    -- the iterator is untouched by the attempt
    assert.are.equal("apify.kvs.keys (open)", tostring(keys_state))
    assert.are.same({ "k00001", "k00002", "k00003" }, { (next_key()), (next_key()), (next_key()) })
    assert.is_nil(next_key())
    assert.are.equal("apify.kvs.keys (closed)", tostring(keys_state))
    assert.are.equal("apify.kvs.keys (open)", tostring(parallel))
    parallel:close()
    assert.are.equal("apify.kvs.keys (closed)", tostring(parallel))
    job:close()
    methods:close()
    local listing = store:listing({ parallel = 1 })
    assert.are.equal("apify.kvs.listing (open)", tostring(listing))
    listing:close()
    assert.are.equal("apify.kvs.listing (closed)", tostring(listing))
  end)

  it("keys, listing and job are three types, each with its own metatable and methods", function()
    local _, keys_state = store:keys({})
    local listing, job = store:listing({ parallel = 1 }), store:job({})
    assert.are.equal("apify.kvs: metatable is locked", getmetatable(keys_state))
    local function methods(o)
      local names = {}
      for _, name in ipairs({ "close", "request", "begin", "header", "body", "finish", "reply",
                              "page_keys", "finished", "error", "poll", "status", "timeout", "sockets" }) do
        if o[name] then names[#names + 1] = name end
      end
      return table.concat(names, " ")
    end
    assert.are.equal("close", methods(keys_state))
    assert.are.equal("close request begin header body finish reply page_keys finished error", methods(listing))
    assert.are.equal("close poll status timeout sockets", methods(job))
    assert.are_not.equal(keys_state.close, listing.close)
    assert.are_not.equal(listing.close, job.close)
    for _, o in ipairs({ keys_state, listing, job }) do
      o:close()
      o:close()                                     -- idempotent
    end
  end)

  it("checks its arguments", function()
    local listing = store:listing({ parallel = 1 })
    listing:request()
    assert.matches("HTTP status must be in 100..999", T.raised(listing.begin, listing, 42))
    assert.matches("invalid option 'reset'", T.raised(listing.finish, listing, "reset"))
    listing:close()
    assert.matches("listing is closed", T.raised(listing.request, listing))
  end)
end)
