-- emulator/api_rules.lua
--
-- Owns: the rules of the real API that the emulator applies on top of plain paging, each
-- switched by the store's metadata or by the control API's config:
--   - the per-store rate limit: a token bucket (GCRA) shared by all workers in the
--     lua_shared_dict, answering 429 rate-limit-exceeded over it, and X-RateLimit-Limit;
--     on by default at the API's 60 requests/s (config enforce = false turns it off);
--   - per-page latency with deterministic, seedable jitter;
--   - collections from the store's schema in <store>/__metadata__.json;
--   - URL signatures (keys-list signatures checked, record URLs signed) when the store's
--     metadata holds a urlSigningSecretKey.
-- Used by the emulator (kvs_emulator.lua and its parts) inside nginx (LuaJIT); HMAC-SHA256 comes from luaossl (Debian's
-- lua-luaossl), loaded only when a store has a signing key.

local cjson = require "cjson.safe"
local bit = require "bit"

local ngx = ngx
local M = {}

local DICT_NAME = "kvs_emulator"
local DEFAULT_RATE = 60          -- the API's limit for this endpoint, requests/s per store

local function dict()
  return ngx.shared[DICT_NAME]
end

local function is_integer(n)
  return type(n) == "number" and n == math.floor(n) and n > -2 ^ 53 and n < 2 ^ 53
end

---------------------------------------------------------------------------------------------------
-- config (validated and stored by the control API; read per request)

-- The config fields this module owns.
M.CONFIG_FIELDS = { jitter = true, seed = true, enforce = true, burst = true }

-- Checks one config field this module owns; returns true, or nil and a message. `v` is the JSON
-- value (cjson.null for null).
function M.check_config(k, v)
  local null = v == cjson.null
  if k == "jitter" then
    if type(v) ~= "number" or v < 0 then return nil, "jitter must be a number >= 0" end
  elseif k == "seed" then
    if not is_integer(v) or v < 0 or v >= 2 ^ 32 then return nil, "seed must be an integer in 0..2^32-1" end
  elseif k == "enforce" then
    if not (null or type(v) == "boolean" or (type(v) == "number" and v >= 0 and v <= 1e6)) then
      return nil, "enforce must be true, false, null or a number of requests/s in 0..1e6"
    end
  elseif k == "burst" then
    if not (null or v == false or (is_integer(v) and v >= 1 and v <= 1e6)) then
      return nil, "burst must be an integer in 1..1e6 or null"
    end
  else
    return nil
  end
  return true
end

function M.apply_config(body)
  local d = dict()
  if body.jitter ~= nil then d:set("cfg:jitter", body.jitter) end
  if body.seed ~= nil then
    d:set("cfg:seed", body.seed)
    d:set("rng:n", 0)
  end
  if body.enforce ~= nil then
    local v = body.enforce
    d:set("cfg:enforce", (v == true and -1) or (type(v) == "number" and v) or 0)
  end
  if body.burst ~= nil then d:set("cfg:burst", type(body.burst) == "number" and body.burst or 0) end
  if body.enforce ~= nil or body.burst ~= nil or body.rate_limit ~= nil then
    d:incr("tb:gen", 1, 0) -- fresh buckets for every store
  end
end

function M.init()
  local d = dict()
  d:set("cfg:jitter", 0)
  d:set("cfg:seed", 1)
  d:set("rng:n", 0)
  d:set("cfg:enforce", -1)      -- on, as on the API: 60 requests/s a store (enforce = false: off)
  d:set("cfg:burst", 0)
  d:set("tb:gen", 0)
end

-- The enforced rate (requests/s, 0: none), the bucket size and the advertised limit (0: none).
local function limits()
  local d = dict()
  local header = d:get("cfg:rate_limit") or 0
  local enforce = d:get("cfg:enforce") or -1
  if enforce < 0 then enforce = header > 0 and header or DEFAULT_RATE end
  local burst = d:get("cfg:burst") or 0
  if burst < 1 then burst = math.max(1, math.floor(enforce)) end
  if header <= 0 and enforce > 0 then header = enforce end
  return enforce, burst, header
end

function M.config_fields()
  local d = dict()
  local enforce, burst = limits()
  return {
    jitter = d:get("cfg:jitter") or 0,
    seed = d:get("cfg:seed") or 1,
    enforce = enforce > 0 and enforce or false,
    burst = enforce > 0 and burst or cjson.null,
  }
end

---------------------------------------------------------------------------------------------------
-- rate limit

-- A tiny lock in the shared dict: the bucket (and the emulator's faults) are read and written
-- by every worker.  The lock expires after 5 s should its holder die.
function M.locked(name, fn)
  local d = dict()
  for _ = 1, 5000 do
    if d:add("lock:" .. name, true, 5) then
      local ok, a, b = pcall(fn)
      d:delete("lock:" .. name)
      if not ok then error(a, 0) end
      return a, b
    end
    ngx.sleep(0.001)
  end
  error("kvs_emulator: could not take lock " .. name)
end
local locked = M.locked

-- Sets X-RateLimit-Limit and takes a token for `store` (a directory name, or the id as sent
-- when it names none). Returns true, or false and the enforced rate when the request is over
-- the limit. The bucket is a GCRA: a request at time t is let through when the bucket's
-- theoretical arrival time is at most (burst - 1) / rate ahead of t, and then moves it 1/rate on;
-- requests over the limit do not use tokens.
function M.take(store)
  local enforce, burst, header = limits()
  if header > 0 then ngx.header["X-RateLimit-Limit"] = string.format("%d", header) end
  if enforce <= 0 then return true end
  local d = dict()
  local key = "tb:" .. (d:get("tb:gen") or 0) .. ":" .. store
  local interval = 1 / enforce
  local tolerance = (burst - 1) * interval
  return locked(key, function()
    ngx.update_time()
    local now = ngx.now()
    local tat = math.max(d:get(key) or now, now)
    if tat - now > tolerance + 1e-9 then return false, enforce end
    d:set(key, tat + interval, 3600)
    return true
  end)
end

---------------------------------------------------------------------------------------------------
-- latency with jitter

-- 32-bit multiply modulo 2^32, exact in doubles.
local function mul32(a, b)
  local alo, ahi = a % 65536, math.floor(a / 65536)
  local blo, bhi = b % 65536, math.floor(b / 65536)
  return ((ahi * blo + alo * bhi) % 65536 * 65536 + alo * blo) % 4294967296
end

-- murmur3's finalizer: a well-mixed 32-bit hash of a 32-bit value.
local function fmix32(h)
  h = bit.bxor(h, bit.rshift(h, 16)) % 4294967296
  h = mul32(h, 0x85ebca6b)
  h = bit.bxor(h, bit.rshift(h, 13)) % 4294967296
  h = mul32(h, 0xc2b2ae35)
  h = bit.bxor(h, bit.rshift(h, 16)) % 4294967296
  return h
end

-- The n-th value in [-1, 1) of the sequence named by seed.
function M.uniform(seed, n)
  return fmix32((mul32(seed, 0x9e3779b9) + n) % 4294967296) / 2147483648 - 1
end

-- The wait before the n-th endpoint reply (n counts replies since the seed was set):
-- delay + jitter * u(seed, n), never below 0.
function M.latency()
  local d = dict()
  local delay = d:get("cfg:delay") or 0
  local jitter = d:get("cfg:jitter") or 0
  if jitter <= 0 then return delay end
  local n = d:incr("rng:n", 1, 0)
  return math.max(0, delay + jitter * M.uniform(d:get("cfg:seed") or 1, n))
end

---------------------------------------------------------------------------------------------------
-- store metadata: schema (collections) and signing key

-- The decoded <dir>/__metadata__.json (a table), or nil when absent or not a JSON object.
function M.metadata(dir)
  local path = dir .. "/__metadata__.json"
  -- a symbolic link is never followed (see kvs_emulator.lua)
  if require("lfs").symlinkattributes(path, "mode") ~= "file" then return nil end
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local meta = cjson.decode(text or "")
  if type(meta) ~= "table" then return nil end
  return meta
end

-- The collection `name` of the store's schema: { prefix = "..." } or { key = "..." }; nil and a
-- message of a 400 when the schema has no such collection; false when the store has no schema
-- (then the API's "collection" has nothing to work on, and the emulator ignores it).
function M.collection(meta, name)
  local schema = meta and meta.schema
  if type(schema) == "string" then schema = cjson.decode(schema) end
  if type(schema) ~= "table" or type(schema.collections) ~= "table" then return false end
  local c = schema.collections[name]
  if type(c) == "table" then
    if type(c.keyPrefix) == "string" then return { prefix = c.keyPrefix } end
    if type(c.key) == "string" then return { key = c.key } end
  end
  return nil, "Collection \"" .. name .. "\" is not defined in the key-value store schema"
end

---------------------------------------------------------------------------------------------------
-- signatures

local BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

-- Base62 of a big-endian unsigned integer given as bytes (repeated division by 62).
local function base62(bytes)
  local digits = { bytes:byte(1, -1) }
  local out = {}
  while #digits > 0 do
    local rem, q = 0, {}
    for i = 1, #digits do
      local cur = rem * 256 + digits[i]
      local qd = math.floor(cur / 62)
      rem = cur - qd * 62
      if #q > 0 or qd > 0 then q[#q + 1] = qd end
    end
    out[#out + 1] = BASE62:sub(rem + 1, rem + 1)
    digits = q
  end
  if #out == 0 then return "0" end
  return string.reverse(table.concat(out))
end

local hmac_new
local function hmac_sha256(secret, message)
  if not hmac_new then
    local ok, mod = pcall(require, "openssl.hmac")
    if not ok then
      error("kvs_emulator: signing needs luaossl (apt-get install lua-luaossl): " .. tostring(mod), 0)
    end
    hmac_new = mod.new
  end
  return hmac_new(secret, "sha256"):final(message)
end

-- The API's HMAC signature: base62 of the first 30 hex digits (15 bytes) of
-- HMAC-SHA256(secret, message) read as an integer.
function M.hmac_signature(secret, message)
  return base62(hmac_sha256(secret, message):sub(1, 15))
end

-- The store's signing key, or nil.
function M.secret(meta)
  local s = meta and meta.urlSigningSecretKey
  if type(s) == "string" and s ~= "" then return s end
  return nil
end

-- The store id a signature is made for: the metadata's id, else the directory name.
function M.store_id(meta, dir_name)
  return (meta and type(meta.id) == "string" and meta.id ~= "") and meta.id or dir_name
end

local function base64url_decode(s)
  if s:find("[^%w%-_=]") then return nil end
  s = s:gsub("=+$", ""):gsub("%-", "+"):gsub("_", "/")
  s = s .. string.rep("=", (4 - #s % 4) % 4)
  return ngx.decode_base64(s)
end

-- Checks a keys-list signature: base64url("0.<expiresAtMillis>.<hmac of
-- "0.<expiresAtMillis>.<storeId>">"), expiresAt 0 meaning never. Returns true, or false and why.
function M.check_keys_signature(secret, store_id, signature)
  local text = base64url_decode(signature)
  local version, expires, mac = (text or ""):match("^(%d+)%.(%d+)%.([%w]+)$")
  if not version then return false, "The signature is malformed" end
  if version ~= "0" then return false, "Unknown signature version " .. version end
  if mac ~= M.hmac_signature(secret, version .. "." .. expires .. "." .. store_id) then
    return false, "The signature is not valid for this key-value store"
  end
  local expires_at = tonumber(expires)
  if expires_at ~= 0 then
    ngx.update_time()
    if ngx.now() * 1000 > expires_at then return false, "The signature has expired" end
  end
  return true
end

return M
