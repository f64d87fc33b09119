-- spec/support/openresty_host.lua — Lua code of the test nginx of spec/openresty_spec.lua (runs
-- inside nginx's LuaJIT, not in the spec's process): listings through apify.kvs.openresty in
-- each phase, reported as JSON.
local kvs = require "apify.kvs"
local ngx_kvs = require "apify.kvs.openresty"
local cjson = require "cjson"

local M = {}

M.bases = {}          -- name -> base_url, filled by init_by_lua from the spec's ports
M.phase_errors = {}   -- phase -> what a listing call there raised (init: set in the master)

local function err_fields(err)
  if type(err) ~= "table" then return { type = "lua", message = tostring(err) } end
  return { type = err.type, status = err.status, retries = err.retries, message = err.message,
           tostring = tostring(err), is_error = kvs.is_error(err) }
end

-- What ngx_kvs.keys raises when called in this phase (nothing: "no error").
function M.try_phase(phase)
  local client = kvs.new{ base_url = "http://127.0.0.1:9", max_retries = 0 }
  local ok, err = pcall(ngx_kvs.keys, client:store("s"))
  local ok2, err2 = pcall(ngx_kvs.open, client:store("s"))
  local r = ok and { type = "no error" } or err_fields(err)
  r.open = ok2 and "no error" or (type(err2) == "table" and err2.type or tostring(err2))
  M.phase_errors[phase] = r
  local shared = ngx.shared.spec
  if shared then shared:set("phase:" .. phase, cjson.encode(r)) end
  return r
end

-- Lists with the arguments of the request: base (a name of M.bases), store, prefix,
-- page_size, retries, location, upstream (origin to map to an upstream block), pages (1: use
-- the page-by-page API). Returns { ok, n, first, last, ordered, pages, err, mechanism }.
function M.iterate(args)
  local location = ngx_kvs.location
  ngx_kvs.location = args.location or location
  local upstream_origin = args.map
  if upstream_origin then ngx_kvs.upstreams[upstream_origin] = args.upstream end
  local client = kvs.new{ base_url = M.bases[args.base or "direct"], min_delay = 0.01,
                          max_retries = tonumber(args.retries or 3), timeout = 5 }
  local r = { n = 0, ordered = true, pages = 0, mechanism = ngx_kvs.mechanism() }
  local last
  local ok, err = pcall(function()
    local opts = { prefix = args.prefix, page_size = tonumber(args.page_size),
                   parallel = tonumber(args.parallel) }
    local function take(key)
      r.n = r.n + 1
      r.first = r.first or key
      if last and not (key > last) then r.ordered = false end
      last = key
    end
    if args.pages then
      local pages = ngx_kvs.open(client:store(args.store or "s"), opts)
      while true do
        local n, e = pages:next_page()
        if e then pages:close() error(e) end
        if not n then break end
        r.pages = r.pages + 1
        for key in pages:page_keys() do take(key) end
      end
      pages:close()
    else
      for key in ngx_kvs.keys(client:store(args.store or "s"), opts) do take(key) end
    end
  end)
  ngx_kvs.location = location
  if upstream_origin then ngx_kvs.upstreams[upstream_origin] = nil end
  r.ok, r.last = ok, last
  if not ok then r.err = err_fields(err) end
  return r
end

-- The same in a timer (ngx.timer.at(0)), waited for with a semaphore.
function M.iterate_in_timer(args)
  local sema = require("ngx.semaphore").new()
  local result
  assert(ngx.timer.at(0, function()
    result = M.iterate(args)
    sema:post(1)
  end))
  assert(sema:wait(60))
  return result
end

function M.reply(r)
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(r))
end

local ffi = require "ffi"
ffi.cdef [[
  struct kvs_spec_timeval { long tv_sec; long tv_usec; };
  struct kvs_spec_rusage { struct kvs_spec_timeval ru_utime, ru_stime; long rest[14]; };
  int getrusage(int who, struct kvs_spec_rusage *usage);
]]

-- CPU seconds (user + system) this worker has used so far.
function M.cpu()
  local ru = ffi.new("struct kvs_spec_rusage")
  assert(ffi.C.getrusage(0, ru) == 0)
  return tonumber(ru.ru_utime.tv_sec) + tonumber(ru.ru_utime.tv_usec) / 1e6
    + tonumber(ru.ru_stime.tv_sec) + tonumber(ru.ru_stime.tv_usec) / 1e6
end

return M
