-- emulator/emu_common.lua
--
-- Owns: what every part of the emulator shares: the settings read at start (filled by
-- kvs_emulator.init in the nginx master, inherited by the workers), the shared dict, JSON and
-- percent-encoding helpers, complete replies, query parameters and the emulator's own address.
-- The parts: kvs_emulator.lua (entry points, the keys endpoint), emu_store.lua (stores and
-- pages), emu_faults.lua (fault kinds), emu_control.lua (the /_emulator/ control API),
-- api_rules.lua (the API's rules beyond paging).

local cjson = require "cjson.safe"
local rules = require "api_rules"

local ngx = ngx
local M = {}

M.DICT_NAME = "kvs_emulator"
M.MAX_LOGGED_REQUESTS = 1000
M.DEFAULT_LIMIT = 1000
M.MAX_LIMIT = 1000
M.JSON_CT = "application/json; charset=utf-8"
local JSON_CT = M.JSON_CT

-- storage and files (the run directory's files/, for raw faults' body_file) are the paths as
-- given (for messages); storage_root and files_root the paths workers open files by; rundir,
-- control_secret.
M.settings = { storage = nil }

---------------------------------------------------------------------------------------------------
-- small helpers

local function dict()
  return ngx.shared[M.DICT_NAME]
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

M.dict, M.json_value, M.json_encode, M.error_body = dict, json_value, json_encode, error_body
M.percent_decode, M.percent_encode, M.is_integer = percent_decode, percent_encode, is_integer
M.read_request_body, M.send, M.send_error, M.with_lock = read_request_body, send, send_error, with_lock
M.base_url, M.arg_string = base_url, arg_string

return M
