-- keys_handler.lua — GET /stores/<id>/keys?prefix=... : the keys of an Apify key-value store as
-- JSON lines, one per key, sent page by page while the listing goes on:
--
--   {"key":"img-0001.png","size":4211,"url":"https://api.apify.com/v2/key-value-stores/..."}
--
-- Only the stores of the allowlist M.stores are served; any other id is 404 with an error line
-- of type "store-not-served", and no request goes to the API for it. Why: the listing runs with
-- the server's token, which reads every store of its account (and the stores shared with it),
-- and for a store with a URL signing key each "url" is a signed record URL, which opens that
-- record to whoever holds it. Without the list, anyone who can reach this endpoint could list
-- any of those stores and get those links. Put only stores whose keys and records you would
-- publish on it (or replace the check in M.handle with your own access check, per client).
--
-- Failure before the first page: HTTP 502 with one line {"error":{type, message, status,
-- retries}}. Failure after keys were sent (the status line is gone by then): that same error
-- line as the last line of the 200 reply. A client that gets no error line got every key.
--
-- Wiring (see nginx.conf next to this file):
--   env APIFY_TOKEN;  env APIFY_API_BASE_URL;      (kvs.new reads them)
--   init_by_lua_block { require("keys_handler").stores = { ["my-store-id"] = true } }
--   location ~ ^/stores/([^/]+)/keys$ {
--       content_by_lua_block { require("keys_handler").handle(ngx.var[1]) }
--   }
-- plus `resolver` and `lua_ssl_trusted_certificate` for an https API (docs/openresty.md).

local kvs = require "apify.kvs"
local ngx_kvs = require "apify.kvs.openresty"
local cjson = require "cjson"

local ngx = ngx

-- A JSON string or number. cjson writes "/" as "\/" (valid JSON, but URLs become unreadable);
-- OpenResty's cjson can be told not to, Debian's 2.1.0 cannot: there every "/" comes out as
-- "\/" and never bare, so turning each "\/" back into "/" is exact.
local json = cjson.new()
local encode = json.encode
if json.encode_escape_forward_slash then
  json.encode_escape_forward_slash(false)
else
  encode = function(v) return (json.encode(v):gsub("\\/", "/")) end
end

local M = {}

-- Options for kvs.new (e.g. max_retries, min_delay); set them in init_by_lua before the first
-- request. token and base_url default to the environment (APIFY_TOKEN, APIFY_API_BASE_URL).
M.client_options = {}

-- The allowlist: store id (or "username~store-name", as it appears in the request path) -> true.
-- Set it in init_by_lua. Empty: nothing is served (see the top of this file for why).
M.stores = {}

local client -- one per worker, made on first use

local function get_client()
  if not client then client = kvs.new(M.client_options) end
  return client
end

local function key_line(key, size, url)
  return '{"key":' .. encode(key) .. ',"size":' .. string.format("%.0f", size)
    .. ',"url":' .. (url and encode(url) or "null") .. '}\n'
end

-- {"error":{"type":..,"message":..,"status":..,"retries":..}}; status only for HTTP errors
local function error_line(err)
  return '{"error":{"type":' .. encode(tostring(err.type)) .. ',"message":'
    .. encode(tostring(err.message)) .. (err.status and (',"status":' .. encode(err.status)) or "")
    .. ',"retries":' .. encode(err.retries or 0) .. '}}\n'
end

-- Serves the keys of store `store_id` if M.stores lists it. `opts`: extra options for
-- store:listing (page_size, limit, collection, signature, parallel = n for big stores); the
-- query argument `prefix` is read from the request.
function M.handle(store_id, opts)
  if ngx.req.get_method() ~= "GET" then
    ngx.header["Allow"] = "GET"
    return ngx.exit(ngx.HTTP_NOT_ALLOWED)
  end
  -- 404 rather than 403: the answer does not tell whether the token could read such a store
  if M.stores[store_id] ~= true then
    ngx.status = ngx.HTTP_NOT_FOUND
    ngx.header["Content-Type"] = "application/json"
    ngx.print(error_line({ type = "store-not-served", message = "this server does not list that store" }))
    return ngx.exit(ngx.OK)
  end
  local listing_opts = {}
  for k, v in pairs(opts or {}) do listing_opts[k] = v end
  local prefix = ngx.req.get_uri_args().prefix
  if type(prefix) == "table" then prefix = prefix[#prefix] end
  if type(prefix) == "string" and prefix ~= "" then listing_opts.prefix = prefix end

  local pages = ngx_kvs.open(get_client():store(store_id), listing_opts)
  local started = false
  while true do
    local n, err = pages:next_page()
    if err then
      pages:close()
      if not started then
        ngx.status = ngx.HTTP_BAD_GATEWAY
        ngx.header["Content-Type"] = "application/json"
      end
      ngx.print(error_line(err))
      return ngx.exit(ngx.OK)
    end
    if not started then
      started = true
      ngx.status = ngx.HTTP_OK
      ngx.header["Content-Type"] = "application/x-ndjson"
    end
    if not n then break end
    local lines, i = {}, 0
    for key, size, url in pages:page_keys() do
      i = i + 1
      lines[i] = key_line(key, size, url)
    end
    if i > 0 then
      ngx.print(lines)
      -- Waits until the client took the page; an error means it went away: stop listing.
      -- "buffering" is no error: for an HTTP/1.0 client lua_http10_buffering sends it all at
      -- the end.
      local _, flush_err = ngx.flush(true)
      if flush_err and flush_err ~= "buffering" then
        pages:close()
        return ngx.exit(ngx.OK)
      end
    end
  end
  pages:close()
  return ngx.exit(ngx.OK)
end

return M
