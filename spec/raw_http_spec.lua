-- Raw HTTP/1.1 for drivers that move bytes themselves (listing:http_request/http_feed,
-- plan:http_requests/http_feed): the core writes each request's bytes and reads the reply's
-- bytes however they are cut. Here the bytes travel over plain luasocket TCP connections to
-- the emulator, read in pieces of a few bytes or many.
local T = require "spec.support.env"
local socket = require "socket"

local TOKEN = "apify_api_raw_http_SECRET_31"

-- A connection to the target of a request, kept alive when the reply allows it.
local function open(req)
  local c = assert(socket.tcp())
  c:settimeout(10 * T.slow)
  assert(c:connect(req.host, req.port))
  c:settimeout(0)
  return c
end

-- Reads c in pieces of at most `piece` bytes into feed(bytes | nil) until it says the reply
-- ended; returns what feed returned then.
local function read_reply(c, piece, feed)
  local deadline = socket.gettime() + 10 * T.slow
  while true do
    assert(socket.gettime() < deadline, "no end of the reply")
    socket.select({ c }, nil, 1)
    local data, err, partial = c:receive(piece)
    local chunk = data or partial
    local a, b, d
    if chunk and #chunk > 0 then a, b, d = feed(chunk) end
    if a == nil and err == "closed" then a, b, d = feed(nil) end
    if a ~= nil then return a, b, d end
  end
end

-- A whole listing over raw bytes: keys, the error (if any), and how the replies ended.
local function drive(listing, piece)
  local keys, conn, ends = {}, nil, {}
  while true do
    local req, err = listing:http_request()
    if not req then
      if conn then conn:close() end
      return keys, err, ends
    end
    conn = conn or open(req)
    assert(conn:send(req.request))
    local step, x, reuse = read_reply(conn, piece, function(bytes) return listing:http_feed(bytes) end)
    ends[#ends + 1] = { step = step, reuse = reuse }
    if not reuse then conn:close() conn = nil end
    if step == "page" then
      for key in listing:page_keys() do keys[#keys + 1] = key end
    elseif step == "retry" then
      socket.sleep(x)
    else
      if conn then conn:close() end
      return keys, x, ends
    end
  end
end

local connections = T.connections

describe("raw HTTP/1.1 through the core (http_request / http_feed)", function()
  local ctx = T.emulated({ s = T.numbered(2500) }, TOKEN)
  local emu, store
  lazy_setup(function() emu = ctx.emu; store = ctx.client:store("s") end)

  for _, piece in ipairs({ 1, 7, 65536 }) do
    it("lists every key over one kept-alive connection, read " .. piece .. " bytes at a time",
      function()
        local page_size = piece == 1 and 100 or 1000
        local opts = { page_size = page_size, parallel = 1 }
        if piece == 1 then opts.prefix = "k00" end      -- 999 keys: byte by byte stays quick
        local keys, err, ends = drive(store:listing(opts), piece)
        assert.is_nil(err)
        local want = piece == 1 and T.numbered(999) or T.numbered(2500)
        assert.are.same(want, keys)
        for _, e in ipairs(ends) do assert.are.same({ step = "page", reuse = true }, e) end
        local reqs = emu:requests()
        assert.are.equal(#ends, #reqs)
        assert.are.equal(1, connections(reqs))
        for _, q in ipairs(reqs) do
          assert.are.equal("token", q.auth)
          assert.are.equal("gzip", q.headers["accept-encoding"])
          assert.are.equal("application/json", q.headers.accept)
          assert.matches("^apify%.kvs/", q.headers["user-agent"])
          assert.are.equal("127.0.0.1:" .. emu.port, q.headers.host)
          if #keys > 200 then assert.are.equal("gzip", q.content_encoding) end
        end
      end)
  end

  it("writes the request the client's settings ask for, the token only in Authorization", function()
    local client = T.client(emu, { token = TOKEN, gzip = false, user_agent = "raw-spec/1", timeout = 7 })
    local req = client:store("s"):listing{ parallel = 1, page_size = 5, prefix = "k01" }:http_request()
    assert.are.same({ host = "127.0.0.1", port = emu.port, tls = false, timeout = 7 },
      { host = req.host, port = req.port, tls = req.tls, timeout = req.timeout })
    assert.are.equal("GET /v2/key-value-stores/s/keys?prefix=k01&limit=5 HTTP/1.1\r\n"
      .. "Host: 127.0.0.1:" .. emu.port .. "\r\nAccept: application/json\r\n"
      .. "User-Agent: raw-spec/1\r\nAuthorization: Bearer " .. TOKEN .. "\r\n\r\n", req.request)
    local tls = T.kvs.new{ base_url = "https://kvs.example:8443/api", token = false }
    req = tls:store("s"):listing{ parallel = 1 }:http_request()
    assert.are.same({ "kvs.example", 8443, true }, { req.host, req.port, req.tls })
    assert.matches("^GET /api/v2/key%-value%-stores/s/keys%?limit=1000 HTTP/1%.1\r\nHost: kvs%.example:8443\r\n",
      req.request)
    assert.is_nil(req.request:find("Authorization", 1, true))
    req = T.kvs.new{ base_url = "http://[::1]", token = false }:store("s"):listing{ parallel = 1 }:http_request()
    assert.are.same({ "::1", 80 }, { req.host, req.port })
    assert.matches("\r\nHost: %[::1%]\r\n", req.request)
  end)

  it("retries a 503 and a reply cut short, every key exactly once", function()
    emu:faults({ { kind = "status", status = 503, headers = { ["Retry-After"] = "0" } },
                 { kind = "truncate" } })
    local keys, err, ends = drive(store:listing{ parallel = 1, page_size = 1000 }, 4096)
    assert.is_nil(err)
    assert.are.same(T.numbered(2500), keys)
    assert.are.same({ step = "retry", reuse = true }, ends[1])    -- a whole 503 reply
    assert.are.same({ step = "retry", reuse = false }, ends[2])   -- the connection dropped
    assert.are.equal(5, #ends)
  end)

  it("ends with the API's error, the connection still fit for another request", function()
    local listing = T.client(emu, { token = TOKEN }):store("nope"):listing{ parallel = 1 }
    local keys, err, ends = drive(listing, 512)
    assert.are.equal(0, #keys)
    assert.are.same({ "record-not-found", 404, 0 }, { err.type, err.status, err.retries })
    assert.are.same({ { step = "failed", reuse = true } }, ends)
    assert.is_nil(tostring(err):find(TOKEN, 1, true))
  end)

  it("raises for feeding a listing that asked for nothing, and for a non-string", function()
    local listing = store:listing{ parallel = 1 }
    assert.matches("no http_request%(%) awaits its reply",
      T.raised_message(listing.http_feed, listing, "HTTP/1.1 200 OK\r\n"))
    listing:http_request()
    assert.matches("string expected", T.raised_message(listing.http_feed, listing, {}))
    assert.matches("bad argument #2", T.raised_message(listing.http_feed, listing))
    listing:close()
  end)

  it("drives the parallel plan: requests side by side, replies by id", function()
    local plan = store:listing{ parallel = 4, page_size = 250 }
    local keys, conns, guard = {}, {}, 0
    while not plan:finished() and not plan:error() do
      guard = guard + 1
      assert.is_true(guard < 1000)
      for _, id in ipairs(plan:cancels()) do
        if conns[id] then conns[id]:close() conns[id] = nil end
      end
      for _, r in ipairs(plan:http_requests()) do
        assert.is_string(r.request)
        conns[r.id] = open(r)
        assert(conns[r.id]:send(r.request))
      end
      -- read the replies one after the other (each on its own connection), in pieces
      for id, c in pairs(conns) do
        local ended, reuse = read_reply(c, 97, function(bytes) return plan:http_feed(id, bytes) end)
        assert.is_true(ended)
        assert.is_true(reuse)
        c:close()
        conns[id] = nil
      end
      while plan:take() do
        for key in plan:page_keys() do keys[#keys + 1] = key end
      end
      local wait = plan:timeout()
      if wait and wait > 0 and next(conns) == nil then socket.sleep(wait) end
    end
    assert.is_nil(plan:error())
    assert.are.same(T.numbered(2500), keys)
    assert.is_true(plan:stats().ranges > 1)
    -- a reply for a request the plan no longer waits for ends at once
    assert.are.same({ true, false }, { plan:http_feed(123456, "HTTP/1.1 200 OK\r\n") })
    plan:close()
  end)
end)
