-- apify.kvs.openresty — list the keys of an Apify key-value store inside nginx (OpenResty, or
-- nginx with lua-nginx-module) without blocking the worker.
--
--   local kvs = require "apify.kvs"
--   local ngx_kvs = require "apify.kvs.openresty"
--   local store = kvs.new{ token = ... }:store(id)        -- create the client once per worker
--   for key, size, url in ngx_kvs.keys(store, { prefix = "img-" }) do ... end
--
--   local listing = store:listing{ ... }                  -- or page by page:
--   local n, err = ngx_kvs.next_page(listing)             -- n keys ready in listing:page_keys(),
--                                                         -- nil when done, nil + err on failure
--
-- Needs the internal location of examples/openresty/apify_kvs.conf in the server{} that runs the
-- code (`include .../apify_kvs.conf;`), and runs where subrequests can be made: rewrite_by_lua*,
-- access_by_lua*, content_by_lua*.
--
-- Do not call store:keys{} or store:list_keys{} in nginx: they do their I/O with libcurl and
-- block the whole worker (every request it serves) until the listing ends.
--
-- How it works. The C listing (store:listing) is sans-I/O: it builds each URL, decodes each reply
-- and decides about retries; this file only moves bytes. Every request is an nginx subrequest
-- (ngx.location.capture) to the internal location, which proxies it to the URL the C code chose;
-- a retry wait is ngx.sleep. Both hand control back to the nginx event loop, so the worker keeps
-- serving other requests while a listing waits for the network. No C function is ever on the
-- stack when this code yields: the C listing never calls back into Lua, the iterators below are
-- Lua functions, and the C calls (request/reply/page_keys) return before the next yield. So
-- call them from Lua code (LuaJIT also yields across pcall), not from a C callback such as a
-- table.sort comparator or a string.gsub function ("attempt to yield across C-call boundary").
--
-- Why a subrequest and not a cosocket (ngx.socket.tcp + sslhandshake): with a cosocket this file
-- would have to speak HTTP/1.1 itself (request line, headers, Content-Length and chunked bodies,
-- keep-alive bookkeeping, ...). nginx's proxy module already does all of that, tested and fast:
-- TLS with certificate checks and SNI, keep-alive connection pools (an upstream{} block with
-- `keepalive`), connect/send/read timeouts, error logging. The subrequest is an in-process call
-- into the proxy module, no extra network hop. Its limits: each reply is buffered in memory (one
-- page: at most 1000 keys, typically 100-200 kB); pages travel uncompressed (the capture takes the body
-- before nginx's gunzip filter would run, and the C listing reads plain JSON); and subrequests
-- exist only while serving a request, not in ngx.timer callbacks or init phases (there a
-- cosocket driver would be needed; none is provided).
--
-- Timeouts are the proxy_connect_timeout / proxy_send_timeout / proxy_read_timeout of the
-- internal location (the client's `timeout` option is a libcurl setting and does not apply here);
-- a timer-based guard would not help, a pending subrequest cannot be cancelled. When nginx
-- itself fails (no connection: 502, no reply in time: 504) or the upstream breaks off a reply,
-- the capture comes back truncated; the C listing gets that as a "network" or "timeout" fault
-- and retries it like any other driver's.

local ngx = ngx

local M = {}

-- URI of the internal location (see apify_kvs.conf); change it if you renamed the location.
M.location = "/_apify_kvs"

-- Request header -> nginx variable of the internal location (set per subrequest, never logged).
local HEADER_VARS = {
  ["accept"] = "apify_kvs_accept",
  ["user-agent"] = "apify_kvs_user_agent",
  ["authorization"] = "apify_kvs_authorization",
}

-- One exchange: the request the listing asks for, as a subrequest; returns the listing's step.
local function exchange(listing, url, headers)
  local vars = {
    apify_kvs_url = url, apify_kvs_accept = "", apify_kvs_user_agent = "",
    apify_kvs_authorization = "",
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
      return listing:finish("timeout", "no reply within the proxy timeouts of " .. M.location
        .. " (see the nginx error log)")
    elseif status == 502 then
      return listing:finish("network", "nginx got no reply from the upstream (see its error log)")
    elseif status >= 300 and res.body == "" then
      -- nginx refused the subrequest itself: a configuration error, not a network fault
      return listing:reply(status, nil, "nginx answered HTTP " .. status .. " itself to the "
        .. "subrequest to " .. M.location .. " (is apify_kvs.conf included in this server{}?)")
    end
    return listing:finish("network", "reply cut short (see the nginx error log)")
  elseif status < 100 or status > 999 then
    return listing:finish("network", "subrequest to " .. M.location .. " ended with status "
      .. tostring(status))
  end
  return listing:reply(status, res.header, res.body)
end

-- Drives `listing` until its next page is ready. Returns the number of keys of the page (read
-- them with listing:page_keys() before the next call), nil when the listing is finished, or
-- nil and the error table when it failed.
function M.next_page(listing)
  while true do
    local url, headers = listing:request()
    if not url then return nil, headers end
    local step, x = exchange(listing, url, headers)
    if step == "page" then
      return x
    elseif step == "retry" then
      ngx.sleep(x)
    else
      return nil, x
    end
  end
end

-- Generic-for iterator over all keys: for key, size, url in M.keys(store, opts) do ... end.
-- opts are those of store:listing (prefix, collection, signature, exclusiveStartKey, page_size,
-- limit). Raises the error table ({type, message, status, retries}) when the listing fails,
-- again on every later call.
function M.keys(store, opts)
  local listing = store:listing(opts)
  local page_next   -- the C iterator over the current page
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
      n, err = M.next_page(listing)
      if not n then
        done = true
        listing:close()
      elseif n > 0 then
        page_next = listing:page_keys()
      end
    end
  end
end

return M
