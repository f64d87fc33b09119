-- The module's surface: constructors, option checking, tostring, secrecy of the token.
local T = require "spec.support.env"
local kvs = T.kvs

-- Asserts that f(...) raises an argument error whose message is exactly `msg`.
local function raises_arg(msg, f, ...)
  local err = T.raised_message(f, ...)
  assert.are.equal("(" .. msg .. ")", err:match("%(.*%)$"), err)
end

describe("apify.kvs module", function()
  it("has a version and names its transport", function()
    assert.are.equal("apify.kvs 0.4.0", kvs._VERSION)
    assert.matches("^libcurl/%d+%.%d+", kvs._TRANSPORT)
  end)

  it("exposes only the documented functions", function()
    local names = {}
    for k in pairs(kvs) do names[#names + 1] = k end
    table.sort(names)
    assert.are.same({ "_FFI", "_TRANSPORT", "_VERSION", "is_error", "new" }, names)
  end)

  it("says whether its iterators run through LuaJIT's FFI", function()
    -- on LuaJIT with its FFI unless APIFY_KVS_FFI=0 (the target jit-classic); never elsewhere
    local want = type(rawget(_G, "jit")) == "table" and os.getenv("APIFY_KVS_FFI") ~= "0"
                 and (pcall(require, "ffi"))
    assert.are.equal(want and true or false, kvs._FFI)
    if T.target == "jit" then assert.is_true(kvs._FFI) end
    if T.target == "jit-classic" then assert.is_false(kvs._FFI) end
  end)
end)

describe("kvs.new", function()
  it("accepts no arguments and an empty table", function()
    assert.is_userdata(kvs.new())
    assert.is_userdata(kvs.new({}))
  end)

  it("rejects unknown options, naming them", function()
    local err = T.raised(kvs.new, { tokne = "x" })
    assert.matches("unknown option 'tokne'", err)
  end)

  it("rejects options of the wrong type, naming option and type", function()
    assert.matches("option 'timeout' must be a number, got string", T.raised(kvs.new, { timeout = "5" }))
    assert.matches("option 'token' must be a string or false, got number", T.raised(kvs.new, { token = 42 }))
    assert.matches("option 'on_retry' must be a function, got boolean", T.raised(kvs.new, { on_retry = false }))
    assert.matches("option 'max_retries' must be an integer, got string", T.raised(kvs.new, { max_retries = "3" }))
    assert.matches("option 'base_url' must be a string", T.raised(kvs.new, { base_url = true }))
    assert.matches("table expected, got string", T.raised(kvs.new, "token"))
    assert.matches("option 'gzip' must be a boolean, got string", T.raised(kvs.new, { gzip = "no" }))
  end)

  it("rejects out-of-range numbers, naming the whole range", function()
    for _, bad in ipairs({ 0, -1, 2e9, 1 / 0, 0 / 0 }) do
      raises_arg("option 'timeout' must be a number in (0, 1e9]", kvs.new, { timeout = bad })
    end
    for _, bad in ipairs({ -1, -0.001, 1e10, 0 / 0 }) do
      raises_arg("option 'min_delay' must be a number in [0, 1e9]", kvs.new, { min_delay = bad })
    end
    for _, bad in ipairs({ -1, 101, 1.5, 2 ^ 53 }) do
      raises_arg("option 'max_retries' must be an integer in 0..100", kvs.new, { max_retries = bad })
    end
    assert.is_userdata(kvs.new({ timeout = 1e9, min_delay = 0, max_retries = 100 }))
  end)

  it("checks base_url", function()
    assert.matches("must start with http:// or https://", T.raised(kvs.new, { base_url = "ftp://x" }))
    assert.matches("has no host", T.raised(kvs.new, { base_url = "http://" }))
    assert.matches("without user, query or fragment",
      T.raised(kvs.new, { base_url = "https://user:pw@example.com" }))
    assert.matches("without user, query or fragment",
      T.raised(kvs.new, { base_url = "https://example.com/?a=1" }))
    assert.is_userdata(kvs.new({ base_url = "http://127.0.0.1:1/some/prefix/" }))
  end)

  it("takes schemes in any case, and keeps them lower-case", function()
    local function shown(base_url) return tostring(kvs.new({ base_url = base_url, token = false })) end
    assert.are.equal("apify.kvs.client (http://127.0.0.1:1, no token)", shown("HTTP://127.0.0.1:1"))
    assert.are.equal("apify.kvs.client (https://api.example.com/p, no token)", shown("Https://api.example.com/p"))
    assert.are.equal("apify.kvs.client (https://api.example.com, no token)", shown("hTtPs://api.example.com/"))
    assert.matches("must start with http:// or https://", T.raised(kvs.new, { base_url = "HTTPX://x" }))
  end)

  it("drops one trailing /v2: the API's version prefix, which every request adds", function()
    local function shown(base_url) return tostring(kvs.new({ base_url = base_url, token = false })) end
    for given, kept in pairs({
      ["https://api.apify.com/v2"] = "https://api.apify.com",
      ["https://api.apify.com/v2/"] = "https://api.apify.com",
      ["HTTPS://api.apify.com/v2"] = "https://api.apify.com",
      ["http://127.0.0.1:8080/proxy/v2"] = "http://127.0.0.1:8080/proxy",
      ["https://h.example/v2/v2"] = "https://h.example/v2",       -- one, not every
      ["https://h.example/v20"] = "https://h.example/v20",
      ["https://h.example/apiv2"] = "https://h.example/apiv2",
      ["http://v2"] = "http://v2",                                -- a host, not a path
    }) do
      assert.are.equal("apify.kvs.client (" .. kept .. ", no token)", shown(given))
    end
  end)

  it("refuses header injection through token or user_agent", function()
    assert.matches("'token' must be visible ASCII",
      T.raised(kvs.new, { token = "abc\r\nX-Evil: 1" }))
    assert.matches("'user_agent' must not contain control characters",
      T.raised(kvs.new, { user_agent = "a\nb" }))
    assert.matches("'token' must not be empty", T.raised(kvs.new, { token = "" }))
  end)

  it("takes a token of visible ASCII only, naming the option and never the value", function()
    local bad = { "apify_api SECRETspace", "apify_api_SECRET\t", "apify_api_SECRET\127",
                  "apify_api_SECRET\194\160", "apify_api_SECRETtøken", "apify_api_SECRET\255",
                  " apify_api_SECRET", "apify_api_SECRET\0x" }
    for _, token in ipairs(bad) do
      local msg = T.raised(kvs.new, { token = token })
      assert.matches("option 'token' must be visible ASCII %(0x21%-0x7E%)", msg, 1, ("%q"):format(token))
      assert.is_nil(msg:find("SECRET", 1, true), msg)
    end
    -- the whole visible range, RFC 6750's b64token characters among them
    local visible = {}
    for b = 0x21, 0x7E do visible[#visible + 1] = string.char(b) end
    for _, token in ipairs({ table.concat(visible), "apify_api_AbC123", "a-b.c_d~e+f/g==" }) do
      assert.matches("token set", tostring(kvs.new({ token = token })))
    end
  end)

  it("checks a token from APIFY_TOKEN the same way, naming the variable", function()
    -- a child process, so the test does not depend on this process's environment
    local script = "package.cpath = '" .. T.cpath .. ";' .. package.cpath; " ..
      "local ok, err = pcall(require('apify.kvs').new); io.write(tostring(ok), ' ', tostring(err))"
    local out = T.read("APIFY_TOKEN='apify_api SECRET' " .. T.lua .. " -e \"" .. script .. "\" 2>&1")
    assert.matches("^false .*APIFY_TOKEN must be visible ASCII %(0x21%-0x7E%)", out)
    assert.is_nil(out:find("SECRET", 1, true), out)
  end)

  it("never shows the token in tostring", function()
    local token = "apify_api_SECRET1234567890"
    local c = kvs.new({ token = token, base_url = "https://api.example.com" })
    local s = tostring(c)
    assert.is_nil(s:find(token, 1, true))
    assert.is_nil(s:find("SECRET", 1, true))
    assert.matches("token set", s)
    assert.matches("https://api.example.com", s, 1, true)
    assert.matches("no token", tostring(kvs.new({ token = false })))
    local store = c:store("abc")
    assert.is_nil(tostring(store):find("SECRET", 1, true))
  end)

  it("reads the base URL back as the client uses it, never with a token", function()
    local token = "apify_api_SECRET1234567890"
    for given, kept in pairs({
      ["https://api.apify.com/v2/"] = "https://api.apify.com",
      ["HTTP://127.0.0.1:8080/Proxy//"] = "http://127.0.0.1:8080/Proxy",
      ["https://h.example/p/v2/v2"] = "https://h.example/p/v2",
    }) do
      local c = kvs.new({ base_url = given, token = token })
      assert.are.equal(kept, c:base_url())
      local url = c:store("s"):listing{ parallel = 1 }:request()   -- what the requests go to
      assert.are.equal(kept .. "/v2/", url:sub(1, #kept + 4))
      assert.is_nil(c:base_url():find("SECRET", 1, true))
    end
    if not os.getenv("APIFY_API_BASE_URL") then
      assert.are.equal("https://api.apify.com", kvs.new():base_url())
    end
    assert.matches("apify.kvs.client expected, got apify.kvs.store",
      T.raised(kvs.new().base_url, kvs.new():store("s")), 1, true)
  end)

  it("locks its metatables", function()
    local c = kvs.new()
    assert.are.equal("apify.kvs: metatable is locked", getmetatable(c))
  end)
end)

describe("client:store", function()
  local c = kvs.new({ base_url = "http://127.0.0.1:1" })

  it("takes ids, user~name and ~name", function()
    assert.are.equal("WkzbQMuFYuamGv3YF", c:store("WkzbQMuFYuamGv3YF"):id())
    assert.are.equal("jane~my-store", c:store("jane~my-store"):id())
    assert.are.equal("~my-store", c:store("~my-store"):id())
  end)

  it("rejects empty, non-string, '.' and '..' ids", function()
    assert.matches("store id must not be empty", T.raised(c.store, c, ""))
    assert.matches("store id must be a string, got number", T.raised(c.store, c, 123))
    assert.matches("store id must be a string, got no value", T.raised(c.store, c))
    assert.matches("must not be '.' or '..'", T.raised(c.store, c, "."))
    assert.matches("must not be '.' or '..'", T.raised(c.store, c, ".."))
    assert.matches("must not contain NUL", T.raised(c.store, c, "a\0b"))
  end)

  it("needs a client as self", function()
    assert.has_error(function() c.store({}, "x") end)
  end)

  it("keeps working after the client object is collected", function()
    local store = kvs.new({ base_url = "http://127.0.0.1:1" }):store("x")
    collectgarbage(); collectgarbage()
    assert.are.equal("x", store:id())
  end)
end)

describe("option checks of keys and list_keys (raised before any request)", function()
  -- port 1 refuses connections: a request would show up as a network error instead
  local store = kvs.new({ base_url = "http://127.0.0.1:1", max_retries = 0 }):store("s")

  it("rejects unknown options", function()
    assert.matches("unknown option 'pagesize'", T.raised(store.keys, store, { pagesize = 5 }))
    assert.matches("unknown option 'page_size'", T.raised(store.list_keys, store, { page_size = 5 }))
    assert.matches("unknown option 'start'", T.raised(store.keys, store, { start = "a" }))
  end)

  it("checks page_size", function()
    for _, bad in ipairs({ 0, 1001, -1, 2.5 }) do
      assert.matches("option 'page_size' must be an integer in 1..1000",
        T.raised(store.keys, store, { page_size = bad }))
    end
    assert.matches("option 'page_size' must be an integer, got string",
      T.raised(store.keys, store, { page_size = "10" }))
  end)

  it("checks parallel and rate_limit, naming the whole range", function()
    for _, bad in ipairs({ 0, 65, 1.5, "8", "AUTO" }) do
      raises_arg('option \'parallel\' must be "auto" or an integer in 1..64', store.keys, store,
                 { parallel = bad })
    end
    for _, bad in ipairs({ 0, -5, 2e6, 0 / 0 }) do
      raises_arg("option 'rate_limit' must be a number in (0, 1e6]", store.keys, store, { rate_limit = bad })
    end
  end)

  it("checks limit", function()
    raises_arg("option 'limit' must be an integer >= 0", store.keys, store, { limit = -1 })
    assert.matches("option 'limit' must be an integer >= 0", T.raised(store.keys, store, { limit = 0.5 }))
    assert.matches("option 'limit' must be an integer in 1..1000",
      T.raised(store.list_keys, store, { limit = 1001 }))
    assert.matches("option 'limit' must be an integer in 1..1000",
      T.raised(store.list_keys, store, { limit = 0 }))
  end)

  it("checks string options", function()
    for _, name in ipairs({ "prefix", "collection", "signature", "exclusiveStartKey" }) do
      assert.matches("option '" .. name .. "' must be a string, got number",
        T.raised(store.keys, store, { [name] = 1 }))
      assert.matches("option '" .. name .. "' must be a string, got boolean",
        T.raised(store.list_keys, store, { [name] = true }))
    end
  end)

  it("rejects a non-table options argument", function()
    assert.matches("table expected", T.raised(store.keys, store, "prefix"))
  end)

  it("limit = 0 lists nothing and makes no request", function()
    local n = 0
    for _ in store:keys({ limit = 0 }) do n = n + 1 end
    assert.are.equal(0, n)
  end)
end)
