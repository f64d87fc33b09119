-- emulator/emu_control.lua
--
-- Owns: the emulator's control API under /_emulator/ (tests only): the checks every call passes
-- (control secret, no Origin, JSON bodies), faults, config and the request log.
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
---- The fault kinds are described in emu_faults.lua.

local cjson = require "cjson.safe"
local bit = require "bit"
local rules = require "api_rules"
local C = require "emu_common"
local F = require "emu_faults"

local ngx = ngx
local M = {}

local settings, dict, json_encode, is_integer = C.settings, C.dict, C.json_encode, C.is_integer
local read_request_body, send, send_error, with_lock = C.read_request_body, C.send, C.send_error, C.with_lock
local check_fault, load_faults, save_faults = F.check_fault, F.load_faults, F.save_faults
local MAX_LOGGED_REQUESTS = C.MAX_LOGGED_REQUESTS

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

function M.handle(path, method)
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

return M
