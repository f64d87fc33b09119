-- emulator/kvs_emulator.lua
--
-- Owns: the request handling of the local Apify API emulator, run by nginx's Lua module (LuaJIT)
-- with the configuration rendered from emulator/nginx.conf.in by emulator/launch.lua. The API's
-- rules beyond paging (rate limit, latency jitter, collections, signatures) are in api_rules.lua.
--
--   GET /v2/key-value-stores/:storeId/keys   the "Get list of keys" endpoint, served from a
--                                            directory in the Apify CLI local layout:
--                                            <storage>/key_value_stores/<store>/<key>.<ext>
--   /_emulator/ping | faults | config | requests   test hooks (fault injection, latency,
--                                            request log): emu_control.lua.
--
-- The parts: this file (nginx's entry points, settings, the keys endpoint), emu_common.lua
-- (shared helpers and settings), emu_store.lua (stores, key lists, pages), emu_faults.lua (the
-- fault kinds), emu_control.lua (the control API), api_rules.lua (the API's rules beyond paging).
--
-- Settings (storage directory, optional token, control secret) are read at nginx start from
-- <nginx prefix>/settings.json (mode 0600), which the launcher writes into the run directory.
-- State shared between requests (faults, config, request log) lives in the lua_shared_dict
-- "kvs_emulator"; the sorted key list of each store is cached per worker. The launcher's
-- watchdog (launch.lua) stops nginx when the process that launched it is gone.
--
-- Safety (the emulator runs on shared machines): every request must name a loopback or
-- single-label Host (no DNS name: rebinding); the control API needs the run directory's secret
-- and refuses browsers (Origin); the request log and the config never hold a token; a raw
-- fault's body_file lies in the run directory; no symbolic link inside the storage directory is
-- followed. Started as root, nginx runs its workers as nobody: the master opens the storage
-- directory and the run directory's files/, and the workers reach them through those
-- descriptors (/proc/self/fd/N), so a storage directory under a parent only root may enter is
-- still served.

local cjson = require "cjson.safe"
local lfs = require "lfs"
local rules = require "api_rules"
local C = require "emu_common"
local S = require "emu_store"
local F = require "emu_faults"
local control = require "emu_control"

local ngx = ngx
local M = {}

local settings, dict, json_value, json_encode = C.settings, C.dict, C.json_value, C.json_encode
local error_body, percent_decode, percent_encode = C.error_body, C.percent_decode, C.percent_encode
local send_error, base_url, arg_string = C.send_error, C.base_url, C.arg_string
local MAX_LOGGED_REQUESTS = C.MAX_LOGGED_REQUESTS
local store_dir_name, store_path, store_listing, normal_page = S.store_dir_name, S.store_path, S.store_listing, S.normal_page
local take_fault, default_fault_body, apply_fault_headers = F.take_fault, F.default_fault_body, F.apply_fault_headers
local deliver, send_body_file, shape_page, send_oversized = F.deliver, F.send_body_file, F.shape_page, F.send_oversized

---------------------------------------------------------------------------------------------------
-- settings (nginx master, init_by_lua)

-- A directory opened in the master (which may run as root) and kept open for the workers
-- (which run as nobody then): "/proc/self/fd/N" reaches it without entering its parents.
local function open_dir(path)
  local ffi = require "ffi"
  pcall(ffi.cdef, "int open(const char *path, int flags);")
  local fd = ffi.C.open(path, 0) -- O_RDONLY, without O_CLOEXEC: the workers inherit it
  if fd < 0 then error("kvs_emulator: cannot open " .. path .. ": " .. ffi.errno()) end
  local root = "/proc/self/fd/" .. fd
  if lfs.attributes(root, "mode") ~= "directory" then error("kvs_emulator: not a directory: " .. path) end
  return root
end

function M.init()
  local prefix = ngx.config.prefix()
  if prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  local path = prefix .. "settings.json"
  local f, err = io.open(path, "rb")
  if not f then error("kvs_emulator: cannot read " .. path .. ": " .. tostring(err)) end
  local text = f:read("*a")
  f:close()
  local conf = cjson.decode(text)
  if type(conf) ~= "table" or type(conf.storage) ~= "string" or conf.storage == "" then
    error("kvs_emulator: " .. path .. " must be a JSON object with a \"storage\" string")
  end
  if type(conf.control_secret) ~= "string" or #conf.control_secret < 32 then
    error("kvs_emulator: " .. path .. " must hold a \"control_secret\" of 32 characters or more")
  end
  settings.storage = conf.storage:gsub("/+$", "")
  if settings.storage == "" then settings.storage = "/" end
  settings.rundir = prefix
  settings.storage_root = open_dir(settings.storage)
  settings.files = prefix .. "files/"
  settings.files_root = open_dir(settings.files)
  settings.control_secret = conf.control_secret
  local d = dict()
  if not d then error("kvs_emulator: lua_shared_dict " .. C.DICT_NAME .. " is not configured") end
  if type(conf.token) == "string" and conf.token ~= "" then
    d:set("token", conf.token)
  else
    d:delete("token")
  end
  d:set("faults", "[]")
  d:set("cfg:delay", 0)
  d:set("cfg:rate_limit", 0)
  rules.init()
end
---------------------------------------------------------------------------------------------------
-- GET /v2/key-value-stores/:storeId/keys

local function check_auth()
  local token = dict():get("token")
  if not token then return true end
  local header = ngx.var.http_authorization
  if not header or header == "" then
    return false, "token-not-provided", "Authentication token was not provided"
  end
  local given = header:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +(.-)%s*$")
  if given ~= token then
    return false, "invalid-token", "User was not found or authentication token is not valid"
  end
  return true
end
-- The 200 body of a keys page.
local function listing_body(store_id, listing, args, fault, meta)
  local page, bad_input = normal_page(listing, args, meta)
  if not page then return nil, bad_input end
  if fault then shape_page(page, listing, fault) end

  -- a store with a signing key gets signed record URLs (as the API makes them), others plain ones
  --
  -- The page is one table of pieces joined once: no string per key is made. Keys that differ only
  -- in a few characters make strings whose hashes collide in LuaJIT's string table, and a page
  -- made of per-key strings cost ~4 us a key (measured, 300,000 keys); pieces cost ~0.1 us.
  -- Sizes are still read per reply (overwriting a record does not touch the directory).
  local secret = rules.secret(meta)
  local url_prefix = json_value(base_url() .. "/v2/key-value-stores/" .. percent_encode(store_id)
    .. "/records/"):sub(1, -2) -- without its closing quote; a percent-encoded key needs no escaping
  local paths = listing.paths
  local out, n = { '{"data":{"items":[' }, 1
  for i, key in ipairs(page.items) do
    local path = paths[key]
    local size = path and lfs.symlinkattributes(path, "size") or 0
    local ukey, jkey = key, nil
    if key:find("[^%w%-_%.!~%*'%(%)]") then
      ukey, jkey = percent_encode(key), json_value(key):sub(2, -2)
    end
    -- a key percent_encode leaves as it is needs no JSON escaping either
    out[n + 1] = i > 1 and ',{"key":"' or '{"key":"'
    out[n + 2] = jkey or key
    out[n + 3] = '","size":'
    out[n + 4] = string.format("%d", size)
    out[n + 5] = ',"recordPublicUrl":'
    out[n + 6] = url_prefix
    out[n + 7] = ukey
    out[n + 8] = secret and '?signature=' .. rules.hmac_signature(secret, key) .. '"}' or '"}'
    n = n + 8
  end

  local esk = page.esk
  out[n + 1] = '],"count":' .. tostring(#page.items) .. ',"limit":' .. string.format("%d", page.limit)
    .. ',"exclusiveStartKey":' .. (esk and json_value(esk) or "null")
    .. ',"isTruncated":' .. (page.truncated and "true" or "false")
  if not page.omit_next then
    out[#out + 1] = ',"nextExclusiveStartKey":'
    out[#out + 1] = page.next_key and json_value(page.next_key) or "null"
  end
  out[#out + 1] = "}}"
  return table.concat(out)
end
local function handle_keys(store_id, log)
  local method = ngx.req.get_method()
  if method ~= "GET" and method ~= "HEAD" then
    ngx.header["Allow"] = "GET, HEAD"
    return send_error(405, "method-not-allowed", "This API endpoint can only be accessed using the following HTTP methods: GET, HEAD")
  end
  local store_name = store_dir_name(store_id)
  log.store = store_id

  -- the rate limit counts requests as they arrive; the latency delays every reply, 429s too
  local allowed, rate = rules.take(store_name or store_id)
  local wait = rules.latency()
  log.latency = wait
  if wait > 0 then ngx.sleep(wait) end
  if not allowed then
    log.rate_limited = true
    return send_error(429, "rate-limit-exceeded", string.format(
      "You have exceeded the rate limit of %d requests per second", rate))
  end

  local dir = store_name and store_path(store_name)
  local is_store = dir ~= nil
  local meta = is_store and rules.metadata(dir) or nil
  local nonempty
  local function has_items()
    if nonempty == nil then
      nonempty = false
      if is_store then
        local listing = store_listing(dir)
        local page = listing and normal_page(listing, log.args, meta)
        nonempty = page ~= nil and #page.items > 0
      end
    end
    return nonempty
  end
  local fault = take_fault(store_name, store_id, has_items)
  if fault then log.fault = fault.kind end
  local kind = fault and fault.kind

  if kind == "status" then
    if fault.retry_after ~= nil then ngx.header["Retry-After"] = tostring(fault.retry_after) end
    return deliver(fault.status, fault.body or default_fault_body(fault.status), fault)
  elseif kind == "redirect" then
    ngx.header["Location"] = fault.location or ngx.var.request_uri
    return deliver(fault.status, '{"redirect":' .. json_value(fault.location or ngx.var.request_uri) .. '}', fault)
  elseif kind == "raw" and fault.body_file then
    return send_body_file(fault)
  elseif kind == "raw" then
    ngx.status = fault.status
    apply_fault_headers(fault)
    local body = fault.body or ""
    if ngx.header["Content-Length"] == nil then ngx.header["Content-Length"] = #body end
    ngx.print(body)
    return
  elseif kind == "invalid_json" then
    return deliver(200, fault.body or '{"data":{"items":[{"key":"a","size":1,<html>502 Bad Gateway</html>', fault)
  elseif kind == "stall" then
    ngx.sleep(fault.seconds)
  end

  -- a store with a signing key accepts a valid signature instead of the token
  local secret = rules.secret(meta)
  local signature = arg_string(log.args, "signature")
  if secret and signature then
    local checked, good, why = pcall(rules.check_keys_signature, secret, rules.store_id(meta, store_name), signature)
    if not checked then
      ngx.log(ngx.ERR, good)
      return deliver(500, error_body("internal-server-error", tostring(good)), fault)
    end
    if not good then return deliver(403, error_body("insufficient-permissions", why), fault) end
  else
    local ok, err_type, message = check_auth()
    if not ok then return deliver(401, error_body(err_type, message), fault) end
  end

  local not_found = error_body("record-not-found", "Key-value store was not found")
  if not store_name then return deliver(404, not_found, fault) end
  if not is_store then return deliver(404, not_found, fault) end
  local listing, scan_err = store_listing(dir)
  if not listing then
    ngx.log(ngx.ERR, "kvs_emulator: cannot list ", dir, ": ", scan_err)
    return deliver(500, error_body("internal-server-error", "Cannot read the store directory"), fault)
  end

  if kind == "oversized" then return send_oversized(store_id, log.args, fault) end
  local body, bad_input = listing_body(store_id, listing, log.args, fault, meta)
  if not body then return deliver(400, error_body("invalid-input", bad_input), fault) end
  return deliver(200, body, fault)
end
---------------------------------------------------------------------------------------------------
-- nginx entry points

local function header_value(name)
  local v = ngx.var["http_" .. name]
  return v
end

-- The Host names a loopback address or a single-label name such as an nginx upstream{} block's
-- (with any port). A page a browser loaded from a DNS name that resolves to 127.0.0.1 (DNS
-- rebinding) sends that name, which has a dot, and is refused.
local LOOPBACK_HOSTS = { ["127.0.0.1"] = true, ["[::1]"] = true }

local function local_host(host)
  if not host then return false end
  local name = host:match("^(%[[%x:]+%])") or host:match("^([^:]+)")
  local rest = host:sub(#(name or "") + 1)
  if not name or not (rest == "" or rest:match("^:%d+$")) then return false end
  return LOOPBACK_HOSTS[name] == true or name:match("^[%w_-]+$") ~= nil
end

-- What the request log keeps of an Authorization header: never its value.
local function auth_summary(header)
  if not header then return nil end
  local token = dict():get("token")
  if token and header == "Bearer " .. token then return "token" end
  return "other"
end

function M.content()
  local request_uri = ngx.var.request_uri
  local path = request_uri:match("^[^?]*")
  local method = ngx.req.get_method()
  if not local_host(ngx.var.http_host) then
    return send_error(421, "misdirected-request",
      "The emulator answers only requests for 127.0.0.1, [::1] or a name without dots such as localhost")
  end
  if path:sub(1, 11) == "/_emulator/" then
    return control.handle(path, method)
  end

  -- Everything else is an API request and goes to the request log (written in M.log()).
  local log = {
    method = method,
    uri = request_uri,
    args = ngx.req.get_uri_args(0),
    auth = auth_summary(header_value("authorization")),
    headers = {
      ["accept-encoding"] = header_value("accept_encoding"),
      ["user-agent"] = header_value("user_agent"),
      host = header_value("host"),
      accept = header_value("accept"),
      connection = header_value("connection"),
    },
    connection = tonumber(ngx.var.connection),
    connection_requests = tonumber(ngx.var.connection_requests),
  }
  ngx.ctx.kvs_log = log

  local store_id = path:match("^/v2/key%-value%-stores/([^/]+)/keys/?$")
  if store_id then
    return handle_keys(percent_decode(store_id), log)
  end
  send_error(404, "page-not-found", "We have bad news: there is no API endpoint at this URL. Did you specify it correctly?")
end

function M.log()
  local log = ngx.ctx.kvs_log
  if not log then return end
  local d = dict()
  log.status = ngx.status
  log.content_encoding = ngx.var.sent_http_content_encoding
  log.body_bytes_sent = tonumber(ngx.var.body_bytes_sent)
  log.request_time = tonumber(ngx.var.request_time)
  local seq = d:incr("req:last", 1, 0)
  log.seq = seq
  local entry = json_encode(log)
  d:set("req:" .. seq, entry)
  d:delete("req:" .. (seq - MAX_LOGGED_REQUESTS))
end

return M
