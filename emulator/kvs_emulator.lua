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
--                                            request log); see the section "Control API" below.
--
-- Fault kinds (described in "Control API"): replies: status, redirect, raw (body or body_file),
-- invalid_json; delivery: stall, stall_body, truncate, drip; page shapes: cursor_stuck,
-- no_next_field, empty_page, cursor_behind, cursor_ahead, reverse_page, duplicate_items,
-- include_cursor, oversized.
--
-- Settings (storage directory, optional token, control secret) are read at nginx start from
-- <nginx prefix>/settings.json (mode 0600), which the launcher writes into the run directory.
-- State shared between requests (faults, config, request log) lives in the lua_shared_dict
-- "kvs_emulator"; the sorted key list of each store is cached per worker. The launcher's
-- watchdog (launch.lua) stops nginx when the process that launched it is gone.
--
-- Safety (the emulator runs on shared machines): every request must name a loopback or
-- single-label Host (no DNS name: rebinding); the control API needs the run directory's secret and refuses browsers
-- (Origin); the request log and the config never hold a token; a raw fault's body_file lies in
-- the run directory; no symbolic link inside the storage directory is followed. Started as
-- root, nginx runs its workers as nobody: the master opens the storage and run directories,
-- and the workers reach them through those descriptors (/proc/self/fd/N), so a storage
-- directory under a parent only root may enter is still served.

local cjson = require "cjson.safe"
local lfs = require "lfs"
local bit = require "bit"
local rules = require "api_rules"

local ngx = ngx
local M = {}

local DICT_NAME = "kvs_emulator"
local MAX_LOGGED_REQUESTS = 1000
local DEFAULT_LIMIT = 1000
local MAX_LIMIT = 1000
local JSON_CT = "application/json; charset=utf-8"

-- Filled by M.init() in the nginx master; inherited by the worker. storage and files (the run
-- directory's files/, for raw faults' body_file) are the paths as given (for messages);
-- storage_root and files_root the paths workers open files by.
local settings = { storage = nil }

-- Per-worker cache: store directory -> { mtime, stable, keys (sorted), files (key -> file name) }
local key_cache = {}

---------------------------------------------------------------------------------------------------
-- small helpers

local function dict()
  return ngx.shared[DICT_NAME]
end

-- JSON string/number literal without escaping "/" (Debian's lua-cjson 2.1.0 has no
-- encode_escape_forward_slash). cjson escapes every "/" as "\/" and never emits a bare "/", so
-- turning each "\/" back into "/" is exact (an escaped backslash is "\\", never followed by "/").
local function json_value(v)
  -- a string of printable ASCII with no quote or backslash is its own JSON: no encoder needed
  -- (most keys and URLs; a page has two a key)
  if type(v) == "string" and not v:find('[^]-~ !#-[]') then return '"' .. v .. '"' end
  local s = cjson.encode(v)
  return (s:gsub("\\/", "/"))
end

-- Any Lua value to JSON; an empty table becomes "[]" when as_array is set ("{}" otherwise).
local function json_encode(v, as_array)
  if type(v) == "table" and next(v) == nil then
    return as_array and "[]" or "{}"
  end
  local s = cjson.encode(v)
  return s and (s:gsub("\\/", "/")) or "null"
end

local function error_body(err_type, message)
  return '{"error":{"type":' .. json_value(err_type) .. ',"message":' .. json_value(message) .. '}}'
end

-- Percent-decoding of one path segment ("+" stays "+", unlike in a query string).
local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Same set of unescaped characters as JavaScript's encodeURIComponent.
local function percent_encode(s)
  if not s:find("[^%w%-_%.!~%*'%(%)]") then return s end   -- nothing to encode (most keys)
  return (s:gsub("[^%w%-_%.!~%*'%(%)]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function is_integer(n)
  return type(n) == "number" and n == math.floor(n) and n > -2 ^ 53 and n < 2 ^ 53
end

local function read_request_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file()
  if not path then return "" end
  local f = io.open(path, "rb")
  if not f then return "" end
  body = f:read("*a")
  f:close()
  return body
end

-- Sends a complete reply (the normal case; faults use their own delivery below).
local function send(status, body, content_type)
  ngx.status = status
  ngx.header["Content-Type"] = content_type or JSON_CT
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

local function send_error(status, err_type, message)
  send(status, error_body(err_type, message))
end

-- Faults are consumed exactly once even with several workers.
local with_lock = rules.locked

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
  if not d then error("kvs_emulator: lua_shared_dict " .. DICT_NAME .. " is not configured") end
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
-- stores and keys

-- "name", "username~name" and "~name" all name the directory "name".
local function store_dir_name(id)
  local name = id:match("^[^~]*~(.*)$") or id
  if name == "" or name == "." or name == ".." or name:find("/", 1, true) or name:find("%z") then
    return nil
  end
  return name
end

-- The directory of a store, or nil when there is none. Neither key_value_stores nor the store's
-- directory may be a symbolic link (one could lead out of the storage directory).
local function store_path(name)
  local stores = settings.storage_root .. "/key_value_stores"
  local dir = stores .. "/" .. name
  if lfs.symlinkattributes(stores, "mode") ~= "directory"
    or lfs.symlinkattributes(dir, "mode") ~= "directory" then
    return nil
  end
  return dir
end

-- Key of a record file: the file name without its last ".ext"; a name without a dot (or whose
-- only dot is the first character) is the key itself. nil for files that are not records.
local function key_of(file_name)
  if file_name == "__metadata__.json" or file_name:find("%.__metadata__%.json$") then
    return nil
  end
  local key = file_name:match("^(.+)%.[^.]*$")
  return key or file_name
end

local function scan_store(dir)
  local files, paths, keys = {}, {}, {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local key = key_of(name)
      local path = key and dir .. "/" .. name
      -- a symbolic link is never followed: it could lead out of the storage directory
      if key and lfs.symlinkattributes(path, "mode") == "file" then
        local prev = files[key]
        if not prev then
          keys[#keys + 1] = key
          files[key], paths[key] = name, path
        elseif name < prev then
          -- two files for one key (e.g. a.json and a.txt): keep one, deterministically
          files[key], paths[key] = name, path
        end
      end
    end
  end
  table.sort(keys) -- LuaJIT compares strings byte-wise: the API's UTF-8 binary order
  return keys, files, paths
end

-- The sorted key list of a store directory, cached until the directory's mtime changes.
-- lfs reports mtime in whole seconds, so a listing is only trusted while the directory was last
-- modified more than a second before the listing was taken; fresher directories are rescanned on
-- every request (at most ~1 s of rescans after a change). Overwriting a record in place does not
-- touch the directory: sizes are therefore read per reply, never cached.
local function store_listing(dir)
  local mtime = lfs.attributes(dir, "modification")
  if not mtime then return nil, "store directory vanished" end
  local cached = key_cache[dir]
  if cached and cached.stable and cached.mtime == mtime then
    return cached
  end
  ngx.update_time()
  local started = ngx.now()
  local ok, keys, files, paths = pcall(scan_store, dir)
  if not ok then return nil, keys end
  cached = { mtime = mtime, stable = (started - mtime) > 1.1, keys = keys, files = files,
             paths = paths }
  key_cache[dir] = cached
  return cached
end

-- First index i with keys[i] > k (strict) or >= k (not strict); #keys + 1 if none.
local function bound(keys, k, strict)
  local lo, hi = 1, #keys + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local v = keys[mid]
    if v < k or (strict and v == k) then lo = mid + 1 else hi = mid end
  end
  return lo
end

---------------------------------------------------------------------------------------------------
-- faults

-- A raw fault's body_file: an absolute path inside the run directory's files/ (no ".." step, no
-- symbolic link), to a regular file the workers can read. Returns the path workers open it by,
-- or nil and a message.
local function run_file(given)
  if type(given) ~= "string" then return nil, "body_file must be a string" end
  local rel = given:sub(1, #settings.files) == settings.files and given:sub(#settings.files + 1)
  if not rel or rel == "" then
    return nil, "body_file must be an absolute path inside " .. settings.files
  end
  local path = settings.files_root
  for step in rel:gmatch("[^/]+") do
    if step == ".." or step == "." then return nil, "body_file may not contain . or .. steps" end
    path = path .. "/" .. step
    local mode = lfs.symlinkattributes(path, "mode")
    if mode == "link" then return nil, "body_file may not pass through a symbolic link" end
  end
  local file = lfs.symlinkattributes(path, "mode") == "file" and io.open(path, "rb")
  if not file then return nil, "body_file is not a readable file: " .. given end
  file:close()
  return path
end

local FAULT_KINDS = {
  status = true, stall = true, stall_body = true, truncate = true, invalid_json = true,
  cursor_stuck = true, no_next_field = true, redirect = true, raw = true,
  empty_page = true, cursor_behind = true, cursor_ahead = true, reverse_page = true,
  duplicate_items = true, include_cursor = true, oversized = true, drip = true,
}

local EMPTY_PAGE_MODES = { page_end = true, successor = true, null = true, absent = true }
local MAX_OVERSIZED_ITEMS = 100000000

local REDIRECT_STATUS = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- Checks and normalises one posted fault; returns it, or nil and a message.
local function check_fault(f, i)
  local where = "fault #" .. i .. ": "
  if type(f) ~= "table" then return nil, where .. "must be an object" end
  if not FAULT_KINDS[f.kind] then return nil, where .. "unknown kind " .. tostring(f.kind) end
  if f.store ~= nil and type(f.store) ~= "string" then return nil, where .. "store must be a string" end
  if f.times == nil then f.times = 1 end
  if not is_integer(f.times) or f.times < 1 then return nil, where .. "times must be an integer >= 1" end
  if f.headers ~= nil and type(f.headers) ~= "table" then return nil, where .. "headers must be an object" end
  if f.body ~= nil and type(f.body) ~= "string" then return nil, where .. "body must be a string" end
  if f.seconds ~= nil and (type(f.seconds) ~= "number" or f.seconds < 0) then
    return nil, where .. "seconds must be a number >= 0"
  end
  if f.bytes ~= nil and (not is_integer(f.bytes) or f.bytes < 0) then
    return nil, where .. "bytes must be an integer >= 0"
  end
  if f.status ~= nil and (not is_integer(f.status) or f.status < 100 or f.status > 599) then
    return nil, where .. "status must be an integer 100..599"
  end
  if f.retry_after ~= nil and type(f.retry_after) ~= "string" and type(f.retry_after) ~= "number" then
    return nil, where .. "retry_after must be a string or a number"
  end
  if f.only_nonempty ~= nil and type(f.only_nonempty) ~= "boolean" then
    return nil, where .. "only_nonempty must be a boolean"
  end
  if f.kind == "redirect" then
    f.status = f.status or 302
    if not REDIRECT_STATUS[f.status] then return nil, where .. "redirect status must be 301/302/303/307/308" end
    if f.location ~= nil and type(f.location) ~= "string" then return nil, where .. "location must be a string" end
  elseif f.kind == "cursor_stuck" then
    if f.mode ~= nil and f.mode ~= "equal" and f.mode ~= "before" then
      return nil, where .. "mode must be \"equal\" or \"before\""
    end
    if f.next ~= nil and type(f.next) ~= "string" then return nil, where .. "next must be a string" end
  elseif f.kind == "no_next_field" then
    if f.is_truncated ~= nil and type(f.is_truncated) ~= "boolean" then
      return nil, where .. "is_truncated must be a boolean"
    end
    if f.null ~= nil and type(f.null) ~= "boolean" then return nil, where .. "null must be a boolean" end
  elseif f.kind == "empty_page" then
    if f.next ~= nil and type(f.next) ~= "string" then return nil, where .. "next must be a string" end
    if f.mode ~= nil and not EMPTY_PAGE_MODES[f.mode] then
      return nil, where .. "mode must be \"page_end\", \"successor\", \"null\" or \"absent\""
    end
    if f.next ~= nil and f.mode ~= nil then return nil, where .. "give next or mode, not both" end
  elseif f.kind == "cursor_ahead" then
    if f.skip == nil then f.skip = 3 end
    if not is_integer(f.skip) or f.skip < 1 then return nil, where .. "skip must be an integer >= 1" end
  elseif f.kind == "oversized" then
    if f.items == nil then f.items = 1000000 end
    if not is_integer(f.items) or f.items < 0 or f.items > MAX_OVERSIZED_ITEMS then
      return nil, where .. "items must be an integer in 0.." .. MAX_OVERSIZED_ITEMS
    end
  elseif f.kind == "drip" then
    if f.bytes == nil then f.bytes = 16 end
    if f.bytes < 1 then return nil, where .. "drip bytes must be an integer >= 1" end
    if f.seconds == nil then f.seconds = 0.2 end
  elseif f.kind == "status" then
    f.status = f.status or 500
  elseif f.kind == "raw" then
    f.status = f.status or 200
    if f.body_file ~= nil then
      if f.body ~= nil then return nil, where .. "give body or body_file, not both" end
      local path, why = run_file(f.body_file)
      if not path then return nil, where .. why end
    end
  elseif f.kind == "stall" or f.kind == "stall_body" then
    f.seconds = f.seconds or 1
  end
  return f
end

local function load_faults()
  return cjson.decode(dict():get("faults") or "[]") or {}
end

local function save_faults(list)
  dict():set("faults", json_encode(list, true))
end

-- Takes the first pending fault that applies to this store (consuming one of its "times").
-- has_items() tells whether the normal page of this request has a key (for only_nonempty).
local function take_fault(store_name, store_id, has_items)
  if (dict():get("faults") or "[]") == "[]" then return nil end
  return with_lock("faults", function()
    local list = load_faults()
    for i, f in ipairs(list) do
      if (f.store == nil or f.store == store_name or f.store == store_id)
        and (not f.only_nonempty or has_items()) then
        f.times = f.times - 1
        if f.times <= 0 then table.remove(list, i) end
        save_faults(list)
        return f
      end
    end
    return nil
  end)
end

local STATUS_ERROR_TYPES = {
  [400] = { "invalid-input", "Invalid input (emulated fault)" },
  [401] = { "invalid-token", "User was not found or authentication token is not valid (emulated fault)" },
  [403] = { "insufficient-permissions", "Insufficient permissions (emulated fault)" },
  [404] = { "record-not-found", "Key-value store was not found (emulated fault)" },
  [405] = { "method-not-allowed", "Method not allowed (emulated fault)" },
  [429] = { "rate-limit-exceeded", "You have exceeded the rate limit (emulated fault)" },
}

local function default_fault_body(status)
  local t = STATUS_ERROR_TYPES[status]
  if not t and status >= 500 then t = { "internal-server-error", "Server error (emulated fault)" } end
  if not t then t = { "emulated-error", "Emulated error " .. status } end
  return error_body(t[1], t[2])
end

local function apply_fault_headers(f)
  if f and f.headers then
    for k, v in pairs(f.headers) do
      if v == cjson.null or v == false then
        ngx.header[k] = nil
      else
        ngx.header[k] = tostring(v)
      end
    end
  end
end

-- ngx.flush(true) waits until nginx has sent what was printed; false once the client is gone.
-- (For HTTP/1.0 requests the Lua module buffers the whole reply to compute its Content-Length
-- and answers "buffering": not a failure.)
local function flushed()
  local ok, err = ngx.flush(true)
  return ok ~= nil or err == "buffering"
end

-- Delivers a reply, possibly broken by a stall_body / truncate / drip fault.
local function deliver(status, body, fault)
  ngx.status = status
  ngx.header["Content-Type"] = ngx.header["Content-Type"] or JSON_CT
  apply_fault_headers(fault)
  local kind = fault and fault.kind
  if kind == "truncate" then
    -- The full Content-Length is announced, part of the body is sent, then the connection is
    -- dropped. gzip would replace Content-Length by chunked encoding, so it is switched off here
    -- (the request log keeps the Accept-Encoding the client actually sent).
    ngx.req.clear_header("Accept-Encoding")
    ngx.header["Content-Length"] = #body
    local cut = fault.bytes or math.floor(#body / 2)
    if cut >= #body then cut = #body - 1 end
    if cut < 0 then cut = 0 end
    ngx.send_headers()
    if cut > 0 then ngx.print(body:sub(1, cut)) end
    ngx.flush(true)
    return ngx.exit(ngx.ERROR)
  elseif kind == "stall_body" then
    ngx.header["Content-Length"] = #body
    local cut = fault.bytes or math.floor(#body / 2)
    if cut > #body then cut = #body end
    ngx.send_headers()
    if cut > 0 then ngx.print(body:sub(1, cut)) end
    ngx.flush(true)
    ngx.sleep(fault.seconds)
    ngx.print(body:sub(cut + 1))
    return
  elseif kind == "drip" then
    -- identity encoding (see truncate), so the pieces on the wire are the pieces sent here
    ngx.req.clear_header("Accept-Encoding")
    ngx.header["Content-Length"] = #body
    ngx.send_headers()
    local step = fault.bytes
    for from = 1, #body, step do
      if from > 1 then ngx.sleep(fault.seconds) end
      if not ngx.print(body:sub(from, from + step - 1)) or not flushed() then return end
    end
    return
  end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

-- The raw fault with body_file: the file's bytes as they are (identity transfer, so nginx's gzip
-- does not touch a body that is already compressed), read and flushed 64 KiB at a time.
local function send_body_file(fault)
  local path = run_file(fault.body_file)
  local f = path and io.open(path, "rb")
  if not f then
    return send_error(500, "emulator-error", "cannot open body_file " .. fault.body_file)
  end
  local size = f:seek("end")
  f:seek("set", 0)
  ngx.req.clear_header("Accept-Encoding")
  ngx.status = fault.status
  apply_fault_headers(fault)
  if ngx.header["Content-Length"] == nil then ngx.header["Content-Length"] = size end
  while true do
    local chunk = f:read(65536)
    if not chunk then break end
    if not ngx.print(chunk) or not flushed() then break end
  end
  f:close()
end

---------------------------------------------------------------------------------------------------
-- GET /v2/key-value-stores/:storeId/keys

-- The emulator's own address, never the request's Host header.
local function base_url()
  return ngx.var.scheme .. "://" .. ngx.var.server_addr .. ":" .. ngx.var.server_port
end

-- One query parameter as a string (a repeated parameter: its last value; a bare flag: "").
local function arg_string(args, name)
  local v = args[name]
  if type(v) == "table" then v = v[#v] end
  if v == true then v = "" end
  return v
end

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

-- The page a request asks for, as the API would send it, before any fault shapes it:
-- { items = keys (list), limit, esk, prefix, truncated, next_key, after (index in listing.keys of
-- the first key past the page) }; or nil and the message of a 400 invalid-input.
local function normal_page(listing, args, meta)
  local keys = listing.keys
  local limit_s = arg_string(args, "limit")
  local limit = DEFAULT_LIMIT
  if limit_s ~= nil then
    limit = tonumber(limit_s:match("^%s*(%d+)%s*$") or "")
    if not limit or limit < 1 or limit > MAX_LIMIT then
      return nil, "Invalid value of query parameter \"limit\": must be an integer between 1 and "
        .. MAX_LIMIT .. " (got " .. json_value(limit_s) .. ")"
    end
  end
  local esk = arg_string(args, "exclusiveStartKey")
  local prefix = arg_string(args, "prefix") or ""
  -- "collection": with a schema in the store's metadata, the keys of that collection; as the
  -- API does, the filter is applied to the chunk of `limit` keys the page scans, so a page may
  -- hold fewer keys than asked, or none, and still be truncated with a next cursor. Without a
  -- schema the parameter has nothing to work on and is ignored.
  local cname = arg_string(args, "collection")
  local coll
  if cname then
    local c, bad = rules.collection(meta, cname)
    if c == nil then return nil, bad end
    coll = c or nil
  end

  local first = 1
  if esk then first = bound(keys, esk, true) end
  if prefix ~= "" then first = math.max(first, bound(keys, prefix, false)) end

  local items, scanned = {}, 0
  local i = first
  while scanned < limit do
    local key = keys[i]
    if not key or key:sub(1, #prefix) ~= prefix then break end
    scanned = scanned + 1
    if not coll or (coll.prefix and key:sub(1, #coll.prefix) == coll.prefix)
      or (coll.key and key == coll.key) then
      items[#items + 1] = key
    end
    i = i + 1
  end
  local nxt = keys[i]
  local truncated = scanned > 0 and nxt ~= nil and nxt:sub(1, #prefix) == prefix
  return { items = items, limit = limit, esk = esk, prefix = prefix, truncated = truncated,
           next_key = truncated and keys[i - 1] or nil, after = i }
end

-- The smallest record key sorting after k: "!" is the lowest character of the API's key alphabet
-- (a-z A-Z 0-9 ! - _ . ' ( )), so no valid key lies strictly between k and k .. "!".
local function successor(k)
  return (k or "") .. "!"
end

-- Applies a page-shaping fault to a normal page (see "Fault kinds" in the control API section).
local function shape_page(page, listing, fault)
  local kind = fault and fault.kind
  local items, keys = page.items, listing.keys
  if kind == "cursor_stuck" then
    page.truncated = true
    if fault.next then
      page.next_key = fault.next
    elseif fault.mode == "before" and page.esk then
      -- the greatest key sorting before the cursor, or "" when there is none
      local j = bound(keys, page.esk, false) - 1
      page.next_key = keys[j] or ""
    else
      page.next_key = page.esk or "" -- "" sorts before (and never after) any cursor
    end
  elseif kind == "no_next_field" then
    page.truncated = fault.is_truncated ~= false
    page.next_key = nil
    page.omit_next = not fault.null
  elseif kind == "empty_page" then
    local mode = fault.mode or "page_end"
    local nxt
    if fault.next then
      nxt = fault.next
    elseif mode == "page_end" then
      -- where the normal page ends, as if a server-side filter had dropped all of its keys;
      -- past the end of the store, the cursor still has to advance: its successor
      nxt = items[#items] or successor(page.esk)
    elseif mode == "successor" then
      nxt = successor(page.esk)
    end
    page.items, page.truncated, page.next_key = {}, true, nxt
    page.omit_next = mode == "absent" and not fault.next
  elseif #items == 0 then
    return -- the other kinds shape pages that have keys
  elseif kind == "cursor_behind" then
    local mid = math.floor(#items / 2)
    page.next_key = mid >= 1 and items[mid] or (page.esk or "")
  elseif kind == "cursor_ahead" then
    local skip = fault.skip or 3
    page.next_key = keys[page.after - 1 + skip] or (keys[#keys] .. "~")
  elseif kind == "reverse_page" then
    local rev = {}
    for i = #items, 1, -1 do rev[#rev + 1] = items[i] end
    page.items = rev
  elseif kind == "duplicate_items" then
    -- each key twice, but never more items than asked for: the first half of the page
    local keep = math.max(1, math.floor(page.limit / 2))
    local dup = {}
    for i = 1, math.min(keep, #items) do
      dup[#dup + 1] = items[i]
      dup[#dup + 1] = items[i]
    end
    if #items > keep then page.truncated, page.next_key = true, items[keep] end
    page.items = dup
  elseif kind == "include_cursor" then
    if page.esk and listing.files[page.esk] then
      local with = { page.esk }
      for i = 1, math.min(#items, page.limit - 1) do with[#with + 1] = items[i] end
      if #items > page.limit - 1 then page.truncated, page.next_key = true, with[#with] end
      page.items = with
    end
  end
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

-- The oversized fault: a truncated page of fault.items items (whatever limit was asked), keys
-- increasing from after the cursor, written in chunks of OVERSIZED_CHUNK items, each flushed
-- before the next is made, so nginx holds one chunk at a time. Stops when the client is gone.
local OVERSIZED_CHUNK = 1000

local function send_oversized(store_id, args, fault)
  local esk = arg_string(args, "exclusiveStartKey")
  local base = esk or "o"
  local n = fault.items or 1000000
  -- every key is base .. 9 digits: its JSON string and URL are base's plus the digits
  local json_base = json_value(base):sub(1, -2)
  local url_base = json_value(base_url() .. "/v2/key-value-stores/" .. percent_encode(store_id)
    .. "/records/" .. percent_encode(base)):sub(1, -2)
  ngx.status = 200
  ngx.header["Content-Type"] = JSON_CT
  apply_fault_headers(fault)
  if not ngx.print('{"data":{"items":[') then return end
  local i = 0
  while i < n do
    local parts = {}
    for j = 1, math.min(OVERSIZED_CHUNK, n - i) do
      local digits = string.format("%09d", i + j)
      parts[j] = '{"key":' .. json_base .. digits .. '","size":1,"recordPublicUrl":'
        .. url_base .. digits .. '"}'
    end
    local sep = i > 0 and "," or ""
    i = i + #parts
    if not ngx.print(sep, table.concat(parts, ",")) or not flushed() then return end
  end
  local last = n > 0 and json_base .. string.format("%09d", n) .. '"' or "null"
  local asked = tonumber((arg_string(args, "limit") or ""):match("^%s*(%d+)%s*$") or "") or DEFAULT_LIMIT
  ngx.print('],"count":', string.format("%d", n), ',"limit":', string.format("%d", asked),
    ',"exclusiveStartKey":', esk and json_value(esk) or "null",
    ',"isTruncated":true,"nextExclusiveStartKey":', last, '}}')
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
-- Control API (tests only)
--
-- Every call needs "Authorization: Bearer <secret>", the secret the launcher wrote to
-- <rundir>/control-secret (mode 0600; emu:faults() and the other launch.lua calls send it), and
-- no Origin header (browsers send one; the control API is never for them); a POST needs
-- "Content-Type: application/json". Otherwise: 401, 403 or 415, and nothing changes.
--
--   GET    /_emulator/ping      {"ok":true,"rundir":...,"storage":...}
--   GET    /_emulator/faults    pending faults;  POST: append a JSON array (or one object);
--   DELETE /_emulator/faults    drop all pending faults
--   GET    /_emulator/config    {"delay":s,"jitter":s,"seed":n,"rate_limit":n,"enforce":n|false,
--                               "burst":n|null,"token_set":bool}; POST: change some of them
--                               ({"delay":0.2} or {"latency":0.2}, {"jitter":0.03,"seed":7},
--                               {"rate_limit":60} (X-RateLimit-Limit), {"enforce":true|n|false},
--                               {"burst":n|null}, {"token":"t"} / {"token":null});
--                               api_rules.lua says what the rules do
--   GET    /_emulator/requests  the last MAX_LOGGED_REQUESTS API requests, oldest first (the
--                               Authorization header's value is never kept: "auth" says
--                               "token" when it was "Bearer <the emulator's token>", "other"
--                               for any other value, and is absent without the header);
--   DELETE /_emulator/requests  forget them
--
-- Faults. Each keys request takes the first pending fault that applies to it and consumes one of
-- its `times` (default 1). Fields every kind accepts:
--   kind           one of the kinds below
--   times          integer >= 1 (default 1)
--   store          only requests for this store (its id as sent, or its directory name)
--   only_nonempty  true: only requests whose normal page has at least one key; the others pass
--                  the fault by without consuming it (so a fault meant for a page of keys never
--                  lands on an empty probe past the end of a range, whatever the request order)
--   headers        {name = value} added to the reply (false or null removes a header)
-- Kinds that replace the reply:
--   status         `status` (default 500) with `body` (default: an Apify error body for that
--                  status) and an optional `retry_after` (string or number) as Retry-After
--   redirect       `status` 301/302/303/307/308 (default 302) to `location` (default: the same URI)
--   raw            exactly `status` (default 200), `headers` and `body`; or, with `body_file` (an
--                  absolute path to a file in the run directory's files/, as launch.lua's
--                  emu:write_file writes them, instead of `body`), that file's bytes
--                  as they are, with identity transfer (nginx's gzip stays off, so e.g. a
--                  gzip bomb goes out with the test's own "Content-Encoding: gzip" header) and
--                  Content-Length set to the file's size unless `headers` give one
--   invalid_json   a 200 whose body (default: a page cut by an HTML error) is not JSON
-- Kinds that change how the reply is delivered (the reply itself is normal):
--   stall          waits `seconds` (default 1) before answering
--   stall_body     sends headers and the first `bytes` (default: half) of the body, waits
--                  `seconds` (default 1), then sends the rest
--   truncate       announces the full Content-Length, sends `bytes` (default: half), drops the
--                  connection (identity transfer)
--   drip           sends the body in pieces of `bytes` bytes (default 16) with `seconds`
--                  (default 0.2) between them (identity transfer, Content-Length announced)
-- Kinds that shape the 200 page (a page with no key is left as it is, except by cursor_stuck,
-- no_next_field and empty_page):
--   cursor_stuck   isTruncated true; nextExclusiveStartKey = `next` if given, else with
--                  mode "equal" (default) the request's exclusiveStartKey (or "" on the first
--                  page), with mode "before" the greatest key sorting before it (or "")
--   no_next_field  isTruncated = `is_truncated` (default true) and no nextExclusiveStartKey
--                  field; with `null` = true the field is there, as null
--   empty_page     no items, isTruncated true, and nextExclusiveStartKey = `next` if given, else
--                  by `mode`: "page_end" (default) the key the normal page would have ended at,
--                  as if a server-side filter had dropped the page's keys (past the end of the
--                  store: the cursor's successor, below); "successor": the request's
--                  exclusiveStartKey followed by "!" (the lowest character of the record-key
--                  alphabet: no valid key lies in between, so nothing is skipped); "null": null;
--                  "absent": no such field
--   cursor_behind  nextExclusiveStartKey = the key in the middle of the page (its floor(n/2)-th;
--                  on a one-key page the request's exclusiveStartKey, or ""): the next page
--                  repeats keys
--   cursor_ahead   nextExclusiveStartKey = the store's key `skip` (default 3) places after the
--                  page's last key (past the store's end: its last key followed by "~"): a
--                  client that follows it loses keys
--   reverse_page   the page's items in descending order (cursor and isTruncated as normal)
--   duplicate_items  each item twice, in place; to stay within the limit asked, the page holds
--                  the first max(1, floor(limit/2)) keys of the normal page (then truncated,
--                  with the cursor at the last of them)
--   include_cursor the page starts with the request's exclusiveStartKey itself when that is a key
--                  of the store, followed by the first limit-1 keys of the normal page
--   oversized      a truncated page of `items` (default 1,000,000; at most 100,000,000) items
--                  whatever limit was asked, keys increasing from just after the cursor
--                  (exclusiveStartKey .. 9 digits, or "o" .. 9 digits), sent chunked in pieces of
--                  1000 items, each flushed before the next is built (nginx memory stays small);
--                  generation stops once the client has gone

local function control_config(method)
  local d = dict()
  if method == "POST" then
    local body = cjson.decode(read_request_body())
    if type(body) ~= "table" then return send_error(400, "invalid-input", "config body must be a JSON object") end
    if body.latency ~= nil then
      if body.delay ~= nil then return send_error(400, "invalid-input", "give delay or latency, not both") end
      body.delay, body.latency = body.latency, nil
    end
    for k, v in pairs(body) do
      if k == "delay" then
        if type(v) ~= "number" or v < 0 then return send_error(400, "invalid-input", "delay must be a number >= 0") end
      elseif rules.CONFIG_FIELDS[k] then
        local ok, why = rules.check_config(k, v)
        if not ok then return send_error(400, "invalid-input", why) end
      elseif k == "rate_limit" then
        if v ~= cjson.null and (not is_integer(v) or v < 0) then
          return send_error(400, "invalid-input", "rate_limit must be an integer >= 0 or null")
        end
      elseif k == "token" then
        if v ~= cjson.null and v ~= false and type(v) ~= "string" then
          return send_error(400, "invalid-input", "token must be a string or null")
        end
      else
        return send_error(400, "invalid-input", "unknown config field " .. tostring(k))
      end
    end
    if body.delay ~= nil then d:set("cfg:delay", body.delay) end
    if body.rate_limit ~= nil then d:set("cfg:rate_limit", body.rate_limit == cjson.null and 0 or body.rate_limit) end
    rules.apply_config(body)
    if body.token ~= nil then
      if type(body.token) == "string" and body.token ~= "" then d:set("token", body.token) else d:delete("token") end
    end
  elseif method ~= "GET" then
    ngx.header["Allow"] = "GET, POST"
    return send_error(405, "method-not-allowed", "use GET or POST")
  end
  local rate_limit = d:get("cfg:rate_limit") or 0
  local out = rules.config_fields()
  out.delay = d:get("cfg:delay") or 0
  out.rate_limit = rate_limit > 0 and rate_limit or cjson.null
  out.token_set = d:get("token") ~= nil
  send(200, json_encode(out))
end

local function control_faults(method)
  if method == "GET" then
    return send(200, dict():get("faults") or "[]")
  elseif method == "DELETE" then
    with_lock("faults", function() save_faults({}) end)
    return send(200, "[]")
  elseif method ~= "POST" then
    ngx.header["Allow"] = "GET, POST, DELETE"
    return send_error(405, "method-not-allowed", "use GET, POST or DELETE")
  end
  local posted = cjson.decode(read_request_body())
  if type(posted) ~= "table" then
    return send_error(400, "invalid-input", "body must be a JSON array of faults")
  end
  if posted.kind ~= nil then posted = { posted } end
  local checked = {}
  for i, f in ipairs(posted) do
    local ok, err = check_fault(f, i)
    if not ok then return send_error(400, "invalid-input", err) end
    checked[#checked + 1] = ok
  end
  if next(posted) ~= nil and #checked == 0 then
    return send_error(400, "invalid-input", "body must be a JSON array of faults")
  end
  local pending = with_lock("faults", function()
    local list = load_faults()
    for _, f in ipairs(checked) do list[#list + 1] = f end
    save_faults(list)
    return dict():get("faults")
  end)
  send(200, pending)
end

local function control_requests(method)
  local d = dict()
  if method == "DELETE" then
    d:set("req:first", (d:get("req:last") or 0) + 1)
    return send(200, "[]")
  elseif method ~= "GET" then
    ngx.header["Allow"] = "GET, DELETE"
    return send_error(405, "method-not-allowed", "use GET or DELETE")
  end
  local last = d:get("req:last") or 0
  local first = math.max(d:get("req:first") or 1, last - MAX_LOGGED_REQUESTS + 1)
  local out = {}
  for seq = first, last do
    local entry = d:get("req:" .. seq)
    if entry then out[#out + 1] = entry end
  end
  send(200, "[" .. table.concat(out, ",") .. "]")
end

-- The control secret, compared without an early exit.
local function is_control_secret(header)
  local given = header and header:match("^Bearer (.*)$")
  local want = settings.control_secret
  if not given or #given ~= #want then return false end
  local diff = 0
  for i = 1, #want do diff = bit.bor(diff, bit.bxor(given:byte(i), want:byte(i))) end
  return diff == 0
end

local function handle_control(path, method)
  if ngx.var.http_origin then
    return send_error(403, "insufficient-permissions", "The control API does not answer browsers")
  end
  if not is_control_secret(ngx.var.http_authorization) then
    return send_error(401, "invalid-token", "The control API needs the run directory's control-secret")
  end
  if method == "POST" and not (ngx.var.http_content_type or ""):match("^application/json") then
    return send_error(415, "unsupported-media-type", "POST a JSON body as application/json")
  end
  local what = path:match("^/_emulator/([%w_]+)/?$")
  if what == "ping" then
    return send(200, json_encode({ ok = true, rundir = settings.rundir, storage = settings.storage, pid = ngx.worker.pid() }))
  elseif what == "faults" then
    return control_faults(method)
  elseif what == "config" then
    return control_config(method)
  elseif what == "requests" then
    return control_requests(method)
  end
  send_error(404, "page-not-found", "Unknown emulator control endpoint")
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
    return handle_control(path, method)
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
