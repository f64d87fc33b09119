-- The kinds of listing as types: apify.kvs.keys (store:keys), apify.kvs.listing
-- (store:listing) and apify.kvs.job (store:job), each with its own metatable and
-- methods; the urls option; one iterator function per listing; the iterators on
-- LuaJIT (read through the FFI unless APIFY_KVS_FFI=0) behaving as the C ones.
local T = require "spec.support.env"

local TOKEN = "apify_api_kinds_SECRET_58"

describe("kinds of listing", function()
  local ctx = T.emulated({ s = T.numbered(2300) }, TOKEN)
  local store
  lazy_setup(function() store = ctx.client:store("s") end)

  local function all_keys(it)
    local keys, sizes, urls = {}, 0, 0
    for k, size, url in it do
      keys[#keys + 1] = k
      sizes = sizes + size
      if url ~= nil then urls = urls + 1 end
    end
    return keys, sizes, urls
  end

  it("each kind is a type of its own: tostring names it, never the token", function()
    local _, keys_state = store:keys({})
    local _, parallel = store:keys({ parallel = 2 })
    local listing, job = store:listing({ parallel = 1 }), store:job({})
    for o, name in pairs({ [keys_state] = "apify.kvs.keys", [parallel] = "apify.kvs.keys",
                           [listing] = "apify.kvs.listing", [job] = "apify.kvs.job" }) do
      assert.matches("^" .. name:gsub("%.", "%%.") .. " %(%a+%)$", tostring(o))
      assert.is_nil(tostring(o):find(TOKEN, 1, true))
      assert.are.equal("apify.kvs: metatable is locked", getmetatable(o))
      o:close()
      assert.is_nil(tostring(o):find(TOKEN, 1, true))
    end
  end)

  it("a method of one kind given another raises a type error naming both", function()
    local _, keys_state = store:keys({})
    local listing, job = store:listing({ parallel = 1 }), store:job({})
    assert.are.equal("bad argument #1 to 'request' (apify.kvs.listing expected, got apify.kvs.job)",
                     T.raised_message(function() listing.request(job) end))
    assert.are.equal("bad argument #1 to 'poll' (apify.kvs.job expected, got apify.kvs.listing)",
                     T.raised_message(function() job.poll(listing) end))
    assert.are.equal("bad argument #1 to 'close' (apify.kvs.keys expected, got apify.kvs.job)",
                     T.raised_message(function() keys_state.close(job) end))
    assert.are.equal("bad argument #1 to 'close' (apify.kvs.job expected, got apify.kvs.keys)",
                     T.raised_message(function() job.close(keys_state) end))
    assert.are.equal("bad argument #1 to 'keys' (apify.kvs.store expected, got apify.kvs.keys)",
                     T.raised_message(function() store.keys(keys_state, {}) end))
    assert.are.equal("bad argument #1 to 'store' (apify.kvs.client expected, got apify.kvs.store)",
                     T.raised_message(function() ctx.client.store(store, "x") end))
    for _, o in ipairs({ keys_state, listing, job }) do o:close() end
  end)

  it("the parallel planner (store:listing{ parallel = n }) is a type of its own too", function()
    local plan, listing = store:listing({ parallel = 2 }), store:listing({ parallel = 1 })
    assert.matches("^apify%.kvs%.plan ", tostring(plan))
    assert.are.equal("bad argument #1 to 'request' (apify.kvs.listing expected, got apify.kvs.plan)",
                     T.raised_message(function() listing.request(plan) end))
    assert.are.equal("bad argument #1 to 'page_keys' (apify.kvs.plan expected, got apify.kvs.listing)",
                     T.raised_message(function() plan.page_keys(listing) end))
    assert.is_nil(plan.request)
    plan:close()
    listing:close()
  end)

  it("the keys state has no sans-I/O methods: l:request() raises and the iterator goes on", function()
    local it, l = store:keys({ page_size = 1000 })
    assert.is_not_nil(T.raised(function() l:request() end))
    local keys = all_keys(it)
    assert.are.equal(2300, #keys)
    assert.are.equal("apify.kvs.keys (closed)", tostring(l))
  end)

  it("urls = false: keys, job, listing and list_keys give no url, the same keys and sizes", function()
    local keys, sizes, urls = all_keys(store:keys({}))
    assert.are.equal(2300, urls)
    local k2, s2, u2 = all_keys(store:keys({ urls = false }))
    assert.are.same(keys, k2)
    assert.are.equal(sizes, s2)
    assert.are.equal(0, u2)
    local k3, s3, u3 = all_keys(store:keys({ urls = false, parallel = 3 }))
    assert.are.same(keys, k3)
    assert.are.equal(sizes, s3)
    assert.are.equal(0, u3)

    local job, got, with_url = store:job({ urls = false }), {}, 0
    for _ = 1, 100000 do
      for k, _, url in job:poll() do got[#got + 1] = k; if url then with_url = with_url + 1 end end
      if job:status() ~= "running" then break end
      job:timeout()
      require("socket").sleep(0.001)
    end
    assert.are.equal("done", job:status())
    assert.are.same(keys, got)
    assert.are.equal(0, with_url)

    local page = assert(store:list_keys({ limit = 5, urls = false }))
    assert.are.equal(5, #page.items)
    for _, item in ipairs(page.items) do
      assert.is_nil(item.recordPublicUrl)
      assert.is_string(item.key)
      assert.is_number(item.size)
    end
    local with = assert(store:list_keys({ limit = 5 }))
    assert.is_string(with.items[1].recordPublicUrl)

    local listing = store:listing({ parallel = 1, urls = false, limit = 3 })
    local url, headers = listing:request()
    local socket_http, ltn12 = require "socket.http", require "ltn12"
    local chunks = {}
    local _, status, resp_headers = socket_http.request({ url = url, headers = headers,
      sink = ltn12.sink.table(chunks) })
    assert.are.equal("page", (listing:reply(status, resp_headers, table.concat(chunks))))
    local n = 0
    for k, size, u in listing:page_keys() do
      n = n + 1
      assert.is_string(k); assert.is_number(size); assert.is_nil(u)
    end
    assert.are.equal(3, n)
    listing:close()
  end)

  it("urls must be a boolean, for every call that takes it", function()
    for _, call in ipairs({ function(o) return store:keys(o) end, function(o) return store:job(o) end,
                            function(o) return store:listing(o) end, function(o) return store:list_keys(o) end }) do
      assert.matches("option 'urls' must be a boolean, got string", T.raised(call, { urls = "no" }))
      assert.matches("option 'urls' must be a boolean, got number", T.raised(call, { urls = 0 }))
    end
  end)

  it("job:poll and listing:page_keys return one iterator function for the listing's life", function()
    local job = store:job({})
    local first = job:poll()
    for _ = 1, 50 do assert.are.equal(first, job:poll()) end
    job:close()
    local listing = store:listing({ parallel = 1 })
    assert.are.equal(listing:page_keys(), listing:page_keys())
    listing:close()
    assert.are_not.equal(store:job({}):poll(), store:job({}):poll())
  end)

  it("on LuaJIT the iterators are Lua functions over the FFI (C functions with APIFY_KVS_FFI=0)", function()
    local it, l = store:keys({})
    local job = store:job({})
    local what = T.kvs._FFI and "Lua" or "C"
    assert.are.equal(what, debug.getinfo(it, "S").what)
    assert.are.equal(what, debug.getinfo(job:poll(), "S").what)
    assert.are.equal(what, debug.getinfo(store:listing({ parallel = 1 }):page_keys(), "S").what)
    l:close()
    job:close()
    assert.is_nil(it())                                   -- closed: nothing more, no spin
  end)

  it("a closed or collected listing lets go of everything; the iterator then yields nothing", function()
    for _ = 1, 3 do
      local it, l = store:keys({ page_size = 10 })
      assert.is_string((it()))
      l:close()
      assert.is_nil(it())
      assert.is_nil(it())
      local job = store:job({ page_size = 10 })
      local poll = job:poll()
      job:close()
      assert.is_nil(poll())
      assert.are.equal("cancelled", job:status())
    end
    collectgarbage(); collectgarbage()
  end)

  if _VERSION == "Lua 5.4" then
    it("each kind closes on leaving a for loop early (Lua 5.4's to-be-closed value)", function()
      local chunk = assert(load([[
        local store = ...
        local it, state, control, closing = store:keys({ page_size = 100 })
        for _ in it, state, control, closing do break end
        local job = store:job({})
        do local _ <close> = job end
        local listing = store:listing({ parallel = 1 })
        do local _ <close> = listing end
        return tostring(state), job:status(), tostring(listing)
      ]]))
      local keys, job, listing = chunk(store)
      assert.are.equal("apify.kvs.keys (closed)", keys)
      assert.are.equal("cancelled", job)
      assert.are.equal("apify.kvs.listing (closed)", listing)
    end)
  end
end)
