-- apify.kvs.openresty — list the keys of an Apify key-value store inside nginx (OpenResty, or
-- nginx with lua-nginx-module) without blocking the worker, in every phase that can do I/O.
--
--   local kvs = require "apify.kvs"
--   local ngx_kvs = require "apify.kvs.openresty"
--   local store = kvs.new{ token = ... }:store(id)        -- create the client once per worker
--   for key, size, url in ngx_kvs.keys(store, { prefix = "img-" }) do ... end
--
--   local pages = ngx_kvs.open(store, { ... })            -- or page by page:
--   local n, err = pages:next_page()                      -- n keys ready in pages:page_keys(),
--                                                         -- nil when done, nil + err on failure
--   pages:close()
--
-- Which mechanism runs where (ngx.get_phase()):
--
--   rewrite, access, content   nginx subrequests (ngx.location.capture) to the internal location
--                              of examples/openresty/apify_kvs.conf, which proxies each page to
--                              the URL the C listing (store:listing, sans-I/O) chose. nginx does
--                              HTTP, TLS and keep-alive and wakes this code when the reply is in.
--                              parallel = n: the sans-I/O planner (store:listing{parallel}),
--                              its requests as subrequests side by side in ngx.thread threads.
--   timer (ngx.timer.at/every, also those started in init_worker_by_lua*)
--                              subrequests do not exist there: the libcurl multi listing
--                              (store:job) does the I/O, polled between ngx.sleep calls bounded
--                              by job:timeout() and M.poll_interval. nginx has no API to wait on
--                              libcurl's sockets, so this polls: about 100 wake-ups a second per
--                              listing waiting on the network (docs/openresty.md: the measured
--                              cost). Settings are the client's (timeout, CA bundle of libcurl).
--                              parallel = n: the same job over the planner (store:job{parallel}),
--                              every range's transfer on one libcurl multi handle.
--   anything else (init, init_worker itself, set, log, header_filter, body_filter, balancer,
--   ssl_*, exit_worker)        no I/O is possible or allowed: the call raises an error table
--                              { type = "unsupported-phase", ... } saying what to do instead
--                              (start a timer: ngx.timer.at(0, function() ... end)).
--
-- Do not call store:keys{} or store:list_keys{} in nginx: they do their I/O with libcurl and
-- block the whole worker (every request it serves) until the listing ends.
--
-- No C function is ever on the stack when this code yields (ngx.location.capture, ngx.sleep):
-- the C calls return before the next yield. So call the iterators from Lua code (LuaJIT also
-- yields across pcall), not from a C callback such as a table.sort comparator.

local ngx = ngx
local kvs = require "apify.kvs"

local M = {}

-- URI of the internal location (see apify_kvs.conf); change it if you renamed the location.
M.location = "/_apify_kvs"

-- Origins ("https://host[:port]", as in base_url) whose requests go to an upstream{} block of
-- that name, for keep-alive connection pools: nginx uses an upstream{} block for
-- `proxy_pass $apify_kvs_url` only when the URL's host is the block's name and has no port.
--   ngx_kvs.upstreams["https://kvs.example.com:8443"] = "apify_kvs_example"
--   upstream apify_kvs_example { server kvs.example.com:8443; keepalive 16; }
M.upstreams = {}

-- Longest ngx.sleep (seconds) between two polls of a timer's listing: the most a reply waits
-- in the socket before it is read. Shorter costs more idle wake-ups.
M.poll_interval = 0.01

local ERROR_MT = debug.getregistry()["apify.kvs.error"]

local function new_error(t)
  t.retries = t.retries or 0
  return setmetatable(t, ERROR_MT)
end

local SUBREQUEST_PHASES = { rewrite = true, access = true, content = true }
local TIMER_PHASES = { timer = true }

-- "subrequest", "timer", or nil and the phase when no I/O is possible in this one.
function M.mechanism()
  local phase = ngx.get_phase()
  if SUBREQUEST_PHASES[phase] then return "subrequest", phase end
  if TIMER_PHASES[phase] then return "timer", phase end
  return nil, phase
end

local function phase_error(call, phase, level)
  local hint
  if phase == "init_worker" or phase == "init" then
    hint = "start the listing in a timer: ngx.timer.at(0, function(premature) ... end)"
  else
    hint = "list in rewrite_by_lua*, access_by_lua*, content_by_lua*, or in a timer started "
      .. "from here: ngx.timer.at(0, function(premature) ... end)"
  end
  error(new_error{ type = "unsupported-phase", message = "apify.kvs.openresty." .. call
    .. " cannot do I/O in nginx's " .. phase .. " phase; " .. hint }, level or 3)
end

---------------------------------------------------------------------------------------------------
-- request phases: subrequests

-- Request header -> nginx variable of the internal location (set per subrequest, never logged).
local HEADER_VARS = {
  ["accept"] = "apify_kvs_accept",
  ["user-agent"] = "apify_kvs_user_agent",
  ["authorization"] = "apify_kvs_authorization",
}

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:sub(1, 1) == "["
end

-- After nginx got no reply from an https upstream: was it TLS? The same request again, without
-- the token, through the location's twin that does not check certificates (apify_kvs.conf): a
-- reply there (any status) means nginx refused the certificate or its name, a TLS failure no
-- retry can mend; no reply there either is a network fault (retried).
local function diagnose_tls(vars, host)
  local check = {}
  for k, v in pairs(vars) do check[k] = v end
  check.apify_kvs_authorization = ""
  local res = ngx.location.capture(M.location .. "_tls_check", { method = ngx.HTTP_GET, vars = check })
  if res.truncated and (res.status == 502 or res.status == 504) then return nil end
  -- nginx's own 404: no such location (an apify_kvs.conf older than this module), no answer
  if res.status == 404 and not (res.header["Content-Type"] or ""):find("json", 1, true) then
    return nil
  end
  local msg = "nginx did not accept the certificate of " .. host .. ": see "
    .. "proxy_ssl_trusted_certificate and the nginx error log"
  if is_ip(host) then
    msg = msg .. "; nginx matches certificates against host names only, never an IP address:"
      .. " put the host name in base_url (an upstream{} block can pin its address)"
  end
  return msg
end

-- One exchange as a subrequest: "reply", status, headers, body (the body as it came, gzip
-- when the API compressed it: the C core inflates it) or "fault", kind, message for the
-- listing's finish(). gzip = false: ask for an uncompressed reply.
local function exchange(url, headers, gzip)
  local scheme, origin_host, host, path = url:match("^(https?)://(([^/:]+):?%d*)(.*)$")
  if not scheme then
    return "fault", "request", "apify.kvs.openresty: cannot read the URL's host"
  end
  local target = url
  local upstream = M.upstreams[scheme .. "://" .. origin_host]
  if upstream then target = scheme .. "://" .. upstream .. path end
  local vars = {
    apify_kvs_url = target, apify_kvs_host = origin_host, apify_kvs_ssl_name = host,
    apify_kvs_accept = "", apify_kvs_user_agent = "", apify_kvs_authorization = "",
    apify_kvs_accept_encoding = gzip == false and "" or "gzip",
  }
  for name, value in pairs(headers) do
    local var = HEADER_VARS[name:lower()]
    if not var then
      error("apify.kvs.openresty: no variable of " .. M.location .. " carries the request header "
        .. name .. " (apify_kvs.conf is older than the module?)", 0)
    end
    vars[var] = value
  end
  local res = ngx.location.capture(M.location, { method = ngx.HTTP_GET, vars = vars })
  local status = res.status
  if res.truncated then
    -- No complete reply. When nginx itself failed (no connection, no reply in time) the capture
    -- has its status (502, 504) and no body; when the upstream broke off in the middle of the
    -- body, the upstream's status. Either way the transport failed: a fault the listing retries.
    if status == 504 then
      return "fault", "timeout", "no reply within the proxy timeouts of " .. M.location
        .. " (see the nginx error log)"
    elseif status == 502 then
      if scheme == "https" and res.body == "" then
        local tls = diagnose_tls(vars, host)
        if tls then return "fault", "tls", tls end
      end
      return "fault", "network", "nginx got no reply from the upstream (see its error log)"
    elseif status >= 300 and res.body == "" then
      -- nginx refused the subrequest itself: a configuration error, not a network fault
      return "reply", status, nil, "nginx answered HTTP " .. status .. " itself to the "
        .. "subrequest to " .. M.location .. " (is apify_kvs.conf included in this server{}?)"
    end
    return "fault", "network", "reply cut short (see the nginx error log)"
  elseif status < 100 or status > 999 then
    return "fault", "network", "subrequest to " .. M.location .. " ended with status "
      .. tostring(status)
  end
  return "reply", status, res.header, res.body
end

local function subrequest_next(listing)
  while true do
    local url, headers = listing:request()
    if not url then return nil, headers end
    local what, a, b, c = exchange(url, headers)
    local step, x
    if what == "fault" then step, x = listing:finish(a, b) else step, x = listing:reply(a, b, c) end
    if step == "page" then
      return x
    elseif step == "retry" then
      ngx.sleep(x)
    else
      return nil, x
    end
  end
end

-- parallel = n: the sans-I/O planner (store:listing{ parallel = n }) decides which key ranges
-- to request and in what order pages come out; its requests run side by side as subrequests in
-- light threads (ngx.thread), and whichever reply comes first wakes the loop. A sleeper thread
-- stands in for the planner's pace (plan:timeout). A subrequest cannot be aborted: the reply
-- of a request the planner cancelled is dropped when it comes. Pages travel gzip-compressed, as
-- on the one-range path: the planner's range listings inflate them.
local unpack = table.unpack or unpack

local function plan_fetch(id, url, headers)
  return id, exchange(url, headers)
end

local function plan_sleep(seconds)   -- a Lua function: ngx.thread.spawn takes no C function
  ngx.sleep(seconds)
end

local function plan_next(p)
  local plan, inflight = p.plan, p.inflight
  while true do
    local n = plan:take()
    if n then return n end
    local err = plan:error()
    if err then return nil, err end
    if plan:finished() then return nil end
    for _, id in ipairs(plan:cancels()) do
      if inflight[id] then inflight[id].cancelled = true end
    end
    for _, r in ipairs(plan:requests(ngx.now())) do
      inflight[r.id] = { thread = assert(ngx.thread.spawn(plan_fetch, r.id, r.url, r.headers)) }
    end
    local threads = {}
    for _, f in pairs(inflight) do threads[#threads + 1] = f.thread end
    local wait, sleeper = plan:timeout(ngx.now()), nil
    if wait ~= nil or #threads == 0 then
      sleeper = assert(ngx.thread.spawn(plan_sleep, math.max(wait or 0.001, 0.001)))
      threads[#threads + 1] = sleeper
    end
    local ok, id, what, a, b, c = ngx.thread.wait(unpack(threads))
    if sleeper then ngx.thread.kill(sleeper) end
    if not ok then error(id, 0) end
    local f = id and inflight[id]
    if f then
      inflight[id] = nil
      if not f.cancelled then
        ngx.update_time()
        if what == "fault" then plan:finish(id, a, b, ngx.now()) else plan:reply(id, a, b, c, ngx.now()) end
      end
    end
  end
end

---------------------------------------------------------------------------------------------------
-- timers: the libcurl multi listing, polled

local function job_next(p)
  local job, keys, sizes, urls = p.job, p.keys, p.sizes, p.urls
  local idle = 0
  for i = p.n, 1, -1 do keys[i], sizes[i], urls[i] = nil, nil, nil end
  p.n = 0
  while true do
    local n = 0
    for key, size, url in job:poll(p.batch) do
      n = n + 1
      keys[n], sizes[n], urls[n] = key, size, url or false
    end
    if n > 0 then
      p.n = n
      return n
    end
    local status, err = job:status()
    if status == "failed" then return nil, err end
    if status ~= "running" then return nil end
    local t = job:timeout() or 0
    if t > M.poll_interval then t = M.poll_interval end
    -- t == 0: libcurl has work right now: poll again at once (it decodes a page in slices of
    -- about 0.4 ms), but give the event loop a turn every few polls, and never spin. (Not
    -- ngx.sleep(0): without OpenResty's delayed-events patch, Debian's nginx warns about it.)
    if t <= 0 and idle < 4 then
      idle = idle + 1
    else
      idle = 0
      ngx.sleep(t > 0.001 and t or 0.001)
    end
  end
end

local function job_page_keys(p)
  local i, keys, sizes, urls = 0, p.keys, p.sizes, p.urls
  return function()
    i = i + 1
    local key = keys[i]
    if key == nil then return nil end
    local url = urls[i]
    return key, sizes[i], url or nil
  end
end

---------------------------------------------------------------------------------------------------
-- the phase-independent API

local Pages = {}
Pages.__index = Pages

-- The keys of a store page by page, with the mechanism of the current phase. opts are those of
-- store:listing (prefix, collection, signature, exclusiveStartKey, page_size, limit).
function M.open(store, opts)
  local mechanism, phase = M.mechanism()
  if not mechanism then phase_error("open", phase) end
  local p = setmetatable({ mechanism = mechanism }, Pages)
  if opts and opts.parallel and opts.parallel ~= 1 and mechanism == "subrequest" then
    p.plan, p.inflight = store:listing(opts), {}
    return p
  end
  if opts and opts.parallel == 1 and mechanism == "subrequest" then   -- an ordinary listing
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.parallel = nil
    opts = copy
  end
  if mechanism == "subrequest" then
    p.listing = store:listing(opts)
  else
    p.job = store:job(opts)
    p.batch = opts and opts.page_size or 1000
    p.keys, p.sizes, p.urls, p.n = {}, {}, {}, 0
  end
  return p
end

-- Drives the listing until its next keys are ready: their number (read them with
-- pages:page_keys() before the next call), nil when finished, nil and the error when failed.
-- In timers a "page" is what arrived since the last call (at most page_size keys).
function Pages:next_page()
  if self.listing then return subrequest_next(self.listing) end
  if self.plan then return plan_next(self) end
  return job_next(self)
end

function Pages:page_keys()
  if self.listing then return self.listing:page_keys() end
  if self.plan then return self.plan:page_keys() end
  return job_page_keys(self)
end

function Pages:close()
  if self.listing then self.listing:close()
  elseif self.plan then self.plan:close()
  else self.job:close() end
end

-- Page by page over a store:listing{} (request phases), or over M.open's object (any phase):
-- the number of keys of the next page, nil when finished, nil and the error when failed.
function M.next_page(listing)
  if getmetatable(listing) == Pages then return listing:next_page() end
  local mechanism, phase = M.mechanism()
  if mechanism ~= "subrequest" then
    if mechanism == "timer" then
      error(new_error{ type = "unsupported-phase", message = "apify.kvs.openresty.next_page("
        .. "store:listing{}) needs subrequests, which nginx has not in a timer: use "
        .. "ngx_kvs.open(store, opts):next_page() (or ngx_kvs.keys), which work there" }, 2)
    end
    phase_error("next_page", phase)
  end
  return subrequest_next(listing)
end

-- Generic-for iterator over all keys: for key, size, url in M.keys(store, opts) do ... end.
-- Raises the error table ({type, message, status, retries}) when the listing fails, again on
-- every later call.
function M.keys(store, opts)
  local mechanism, phase = M.mechanism()
  if not mechanism then phase_error("keys", phase) end
  local p = M.open(store, opts)
  local page_next   -- the iterator over the current page
  local done, err = false, nil
  return function()
    while true do
      if err then error(err) end
      if done then return nil end
      if page_next then
        local key, size, url = page_next()
        if key ~= nil then return key, size, url end
        page_next = nil
      end
      local n
      n, err = p:next_page()
      if not n then
        done = true
        p:close()
      elseif n > 0 then
        page_next = p:page_keys()
      end
    end
  end
end

return M
