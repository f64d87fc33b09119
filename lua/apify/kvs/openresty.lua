-- apify.kvs.openresty — list the keys of an Apify key-value store inside nginx (OpenResty, or
-- nginx with lua-nginx-module) without blocking the worker: nginx cosockets move the bytes, the
-- C core writes the requests and reads the replies (raw HTTP/1.1, core_http.c). The guide, with
-- the complete nginx.conf it needs (resolver, lua_ssl_trusted_certificate): docs/openresty.md.
--
--   local ngx_kvs = require "apify.kvs.openresty"
--   local store = require("apify.kvs").new{}:store(id)     -- the client: once per worker
--   for key, size, url in ngx_kvs.keys(store, { prefix = "img-" }) do ... end
--
--   local pages = ngx_kvs.open(store, { parallel = 4 })    -- or page by page:
--   local n, err = pages:next_page()                       -- n keys in pages:page_keys(); nil
--   pages:close()                                          -- when done; nil, err on failure
--
-- Runs in rewrite_by_lua*, access_by_lua*, content_by_lua* (whether the visitor came over
-- HTTP/1.1 or HTTP/2) and ngx.timer.* callbacks (those started from init_worker_by_lua*
-- included): one code path. The worker sleeps in cosocket reads while a reply is on its way and
-- in ngx.sleep for retry waits. parallel = n: the planner's requests (store:listing{ parallel })
-- each in an ngx.thread light thread. Anywhere else (init, init_worker itself, set,
-- header_filter, body_filter, log, ...) nginx allows no cosocket: the call raises an
-- unsupported-phase error table.
--
-- TLS: sslhandshake with the host name (SNI) and certificate verification always on, against
-- nginx's lua_ssl_trusted_certificate; the client's ca_file / ca_path do not apply here.
-- Connections go back to a keep-alive pool per origin (setkeepalive: lua_socket_keepalive_timeout
-- and lua_socket_pool_size). The client's `timeout` bounds each attempt (connect, TLS, request,
-- reply).
--
-- Do not call store:keys{} or store:list_keys{} in nginx: they do their I/O with libcurl and
-- block the whole worker (every request it serves) until the listing ends. No C function is on
-- the stack when this code yields; the client's on_retry hook runs inside C and must not yield.

local ngx = ngx
require "apify.kvs"      -- registers the error class

local M = {}

local ERROR_MT = debug.getregistry()["apify.kvs.error"]
local unpack = table.unpack or unpack
local READ_MAX = 65536

local COSOCKET_PHASES = { rewrite = true, access = true, content = true, timer = true }

-- Raises an error table, logged first: nginx writes an error that is no string as "unknown
-- reason" when nobody catches it.
local function raise(err)
  ngx.log(ngx.ERR, err)
  error(err)
end

local function check_phase(call)
  local phase = ngx.get_phase()
  if COSOCKET_PHASES[phase] then return end
  local hint
  if phase == "init_worker" or phase == "init" then
    hint = "start the listing in a timer: ngx.timer.at(0, function(premature) ... end)"
  else
    hint = "list in rewrite_by_lua*, access_by_lua*, content_by_lua*, or in a timer started "
      .. "from here: ngx.timer.at(0, function(premature) ... end)"
  end
  raise(setmetatable({ type = "unsupported-phase", retries = 0, message = "apify.kvs.openresty."
    .. call .. " cannot do I/O in nginx's " .. phase .. " phase; " .. hint }, ERROR_MT))
end

---------------------------------------------------------------------------------------------------
-- one exchange over a cosocket

local function ms_left(deadline)
  return math.max(1, math.floor((deadline - ngx.now()) * 1000))
end

local function origin(req)
  return (req.tls and "https://" or "http://") .. req.host .. ":" .. req.port
end

-- A certificate nginx refused: no retry mends it.
local function refused(req, why)
  local msg = "the certificate of " .. origin(req) .. " was refused (" .. why .. "): nginx "
    .. "verifies it against lua_ssl_trusted_certificate (a CA bundle such as "
    .. "/etc/ssl/certs/ca-certificates.crt, or your private CA) with lua_ssl_verify_depth "
    .. "(3 or more for public CAs)"
  if req.host:find("^[%d.]+$") or req.host:find(":", 1, true) then
    msg = msg .. "; nginx matches certificates against host names, not IP addresses: put the "
      .. "host name in base_url"
  end
  return "tls", msg
end

-- What a failed connect or handshake means for the listing: fault and words.
local function connect_fault(req, what, err)
  if err == "timeout" then
    return "timeout", what .. " " .. origin(req) .. " timed out"
  elseif err:find("no resolver defined", 1, true) then
    return "request", "nginx has no resolver for " .. req.host .. ": add `resolver <DNS server>;`"
      .. " to nginx.conf (http{}, or the server{} that lists)"
  elseif what == "TLS handshake with" and (err:find("^%d+: ") or err:find("host mismatch", 1, true)) then
    return refused(req, err)
  end
  return "network", what .. " " .. origin(req) .. " failed: " .. err
end

-- A connection to the request's origin, from its keep-alive pool or new (TLS verified).
local function connect(req, deadline)
  local sock = ngx.socket.tcp()
  sock:settimeout(ms_left(deadline))
  local host = req.host:find(":", 1, true) and "[" .. req.host .. "]" or req.host
  local ok, err = sock:connect(host, req.port, { pool = origin(req) })
  if not ok then return nil, connect_fault(req, "connecting to", err) end
  if req.tls and sock:getreusedtimes() == 0 then
    sock:settimeout(ms_left(deadline))
    -- When the handshake ends within the call and the certificate is refused, lua-resty-core
    -- 0.1.25 fails an assertion (asked for a session) or answers true (asked for none): caught
    -- here, with the words nginx logs it under.
    local caught, session, herr = pcall(sock.sslhandshake, sock, nil, req.host, true)
    if not caught then
      if not tostring(session):find("assertion failed", 1, true) then error(session, 0) end
      sock:close()
      return nil, refused(req, "nginx's error log says why: \"lua ssl certificate ...\"")
    end
    if not session then
      sock:close()
      return nil, connect_fault(req, "TLS handshake with", herr)
    end
  end
  return sock
end

-- Sends req.request and hands the reply's bytes to feed(bytes | nil at the close) until it
-- returns whether to keep the connection (the reply ended); nil, or a fault and its words.
-- A kept-alive connection the server closed before answering is replaced once.
local function exchange(req, feed)
  ngx.update_time()
  local deadline = ngx.now() + req.timeout
  for _ = 1, 2 do
    local sock, fault, msg = connect(req, deadline)
    if not sock then return fault, msg end
    local reused, got = (sock:getreusedtimes() or 0) > 0, false
    local ok, err = sock:send(req.request)
    while ok do
      sock:settimeout(ms_left(deadline))
      local data
      data, err = sock:receiveany(READ_MAX)
      if not data and not (err == "closed" and got) then break end
      got = got or data ~= nil
      local keep = feed(data)
      if keep ~= nil then
        if keep and data then
          sock:setkeepalive()     -- lua_socket_keepalive_timeout, lua_socket_pool_size
        else
          sock:close()
        end
        return nil
      end
      if not data then break end
    end
    sock:close()
    if err == "timeout" then
      return "timeout", "no reply from " .. origin(req) .. " within " .. req.timeout .. " s"
    end
    if not (reused and not got) then
      return "network", (got and "the reply of " or "the request to ") .. origin(req)
        .. " failed: " .. (err == "closed" and "the connection closed" or tostring(err))
    end
  end
  return "network", "the connections to " .. origin(req) .. " closed before a reply"
end

local function retry_wait(seconds)
  ngx.sleep(math.max(seconds, 0.001))   -- (ngx.sleep(0) warns without OpenResty's patch)
end

---------------------------------------------------------------------------------------------------
-- one range: store:listing{}

local function listing_next(listing)
  while true do
    local req, err = listing:http_request()
    if not req then return nil, err end
    local step, x
    local fault, msg = exchange(req, function(bytes)
      local s, v, keep = listing:http_feed(bytes, ngx.now())
      if s then step, x = s, v return keep end
    end)
    if fault then step, x = listing:finish(fault, msg, ngx.now()) end
    if step == "page" then return x end
    if step ~= "retry" then return nil, x end
    retry_wait(x)
  end
end

---------------------------------------------------------------------------------------------------
-- parallel = n: the planner (store:listing{ parallel = n }), a light thread per request

-- One request of the plan, in a light thread. A plan closed meanwhile (finished: every page
-- handed out) takes no more bytes.
local function plan_fetch(plan, r)
  local fault, msg = exchange(r, function(bytes)
    if plan:finished() then return false end
    local ended, keep = plan:http_feed(r.id, bytes, ngx.now())
    if ended then return keep end
  end)
  if fault and not plan:finished() then plan:finish(r.id, fault, msg, ngx.now()) end
  return r.id
end

local function plan_sleep(seconds)   -- a Lua function: ngx.thread.spawn takes no C function
  ngx.sleep(seconds)
end

local function kill_all(threads)
  for id, t in pairs(threads) do
    ngx.thread.kill(t)
    threads[id] = nil
  end
end

local function plan_next(plan, threads)
  while true do
    local n = plan:take()
    if n then return n end
    local err = plan:error()
    if err or plan:finished() then
      kill_all(threads)
      return nil, err
    end
    for _, id in ipairs(plan:cancels()) do
      if threads[id] then ngx.thread.kill(threads[id]) threads[id] = nil end
    end
    ngx.update_time()
    for _, r in ipairs(plan:http_requests(ngx.now())) do
      threads[r.id] = assert(ngx.thread.spawn(plan_fetch, plan, r))
    end
    local list = {}
    for _, t in pairs(threads) do list[#list + 1] = t end
    -- the plan's pace: a sleeper stands for the moment the next request may go out
    local wait, sleeper = plan:timeout(ngx.now()), nil
    if wait ~= nil or #list == 0 then
      sleeper = assert(ngx.thread.spawn(plan_sleep, math.max(wait or 0.001, 0.001)))
      list[#list + 1] = sleeper
    end
    local ok, id = ngx.thread.wait(unpack(list))
    if sleeper then ngx.thread.kill(sleeper) end
    if not ok then
      kill_all(threads)
      error(id, 0)         -- a bug, not a failed listing: let it surface
    end
    if id then threads[id] = nil end
  end
end

---------------------------------------------------------------------------------------------------
-- the API

local Pages = {}
Pages.__index = Pages

local function wrap(obj)
  if obj.http_requests then return setmetatable({ plan = obj, threads = {} }, Pages) end
  return setmetatable({ listing = obj }, Pages)
end

-- The keys of a store page by page. opts are those of store:listing{} (prefix, collection,
-- signature, exclusiveStartKey, page_size, limit, urls, seed; parallel with ordered, rate_limit).
function M.open(store, opts)
  check_phase("open")
  return wrap(store:listing(opts))
end

-- Drives the listing to its next page: the number of keys ready (read them with page_keys()
-- before the next call), nil when finished, nil and the error table when it failed.
function Pages:next_page()
  check_phase("next_page")
  if self.plan then return plan_next(self.plan, self.threads) end
  return listing_next(self.listing)
end

function Pages:page_keys()
  return (self.plan or self.listing):page_keys()
end

-- Stops what is in flight and lets go of the listing; idempotent.
function Pages:close()
  if self.threads then kill_all(self.threads) end
  return (self.plan or self.listing):close()
end

-- Page by page over an object of ngx_kvs.open, or over a store:listing{} (with parallel = n
-- too): as pages:next_page().
local wrapped = setmetatable({}, { __mode = "k" })

function M.next_page(listing)
  if getmetatable(listing) == Pages then return listing:next_page() end
  check_phase("next_page")
  local p = wrapped[listing]
  if not p then
    p = wrap(listing)
    wrapped[listing] = p
  end
  return p:next_page()
end

-- Generic-for iterator over all keys: for key, size, url in M.keys(store, opts) do ... end.
-- A failed listing raises its error table (kvs.is_error), logged at level error first, and
-- again on every later call.
function M.keys(store, opts)
  check_phase("keys")
  local p = M.open(store, opts)
  local page_next     -- the iterator over the current page
  local done, err = false, nil
  return function()
    while true do
      if err then error(err, 2) end
      if done then return nil end
      if page_next then
        local key, size, url = page_next()
        if key ~= nil then return key, size, url end
        page_next = nil
      end
      local n, e = p:next_page()
      if not n then
        done = true
        p:close()
        if e then
          err = e
          raise(e)
        end
      elseif n > 0 then
        page_next = p:page_keys()
      end
    end
  end
end

return M
