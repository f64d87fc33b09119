-- spec/support/openresty_host.lua — Lua code of the test nginx of spec/openresty_spec.lua (runs
-- inside nginx's LuaJIT, not in the spec's process): listings through apify.kvs.openresty in
-- each phase that can do I/O, reported as JSON. Loaded by the master (init_by_lua), with every
-- module it needs, so the workers read no file of the checkout.
local kvs = require "apify.kvs"
local ngx_kvs = require "apify.kvs.openresty"
local cjson = require "cjson"
local semaphore = require "ngx.semaphore"
local ffi = require "ffi"

local M = {}

M.bases = {}          -- name -> base_url, filled in by init_by_lua from the spec's ports

local function err_fields(err)
  if not kvs.is_error(err) then return { type = "lua", message = tostring(err) } end
  return { type = err.type, status = err.status, retries = err.retries, message = err.message,
           tostring = tostring(err), is_error = true }
end

local function reply(r)
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(r))
end

local PHASES = { "init", "init_worker", "set", "header_filter", "body_filter", "log" }

-- What ngx_kvs.keys and ngx_kvs.open raise when called in this phase, kept in the shared dict.
function M.try_phase(phase)
  local client = kvs.new{ base_url = "http://127.0.0.1:9", max_retries = 0 }
  local ok, err = pcall(ngx_kvs.keys, client:store("s"))
  local ok2, err2 = pcall(ngx_kvs.open, client:store("s"))
  local r = ok and { type = "no error" } or err_fields(err)
  r.open = ok2 and "no error" or (kvs.is_error(err2) and err2.type or tostring(err2))
  ngx.shared.spec:set("phase:" .. phase, cjson.encode(r))
end

function M.phase_errors()
  local out = {}
  for _, p in ipairs(PHASES) do
    local v = ngx.shared.spec:get("phase:" .. p)
    out[p] = v and cjson.decode(v) or nil
  end
  reply(out)
end

-- Lists with the arguments of the request: base (a name of M.bases), store, prefix, page_size,
-- parallel, retries, timeout, pages (1: the page-by-page API). Returns { ok, n, first, last,
-- ordered, pages, err, phase }.
function M.iterate(args)
  local client = kvs.new{ base_url = M.bases[args.base or "direct"], min_delay = 0.01,
                          max_retries = tonumber(args.retries or 3),
                          timeout = tonumber(args.timeout or 10) }
  local store = client:store(args.store or "s")
  local opts = { prefix = args.prefix, page_size = tonumber(args.page_size),
                 parallel = tonumber(args.parallel) }
  local r = { n = 0, ordered = true, pages = 0, phase = ngx.get_phase() }
  local last
  local function take(key)
    r.n = r.n + 1
    r.first = r.first or key
    if last and not (key > last) then r.ordered = false end
    last = key
  end
  local ok, err = true, nil
  if args.pages then
    local pages = ngx_kvs.open(store, opts)
    while true do
      local n, e = pages:next_page()
      if not n then err, ok = e, e == nil break end
      r.pages = r.pages + 1
      for key in pages:page_keys() do take(key) end
    end
    pages:close()
  else
    ok, err = pcall(function()
      for key in ngx_kvs.keys(store, opts) do take(key) end
    end)
  end
  r.ok, r.last = ok, last
  if not ok then r.err = err_fields(err) end
  return r
end

-- The timer started from init_worker_by_lua: it lists what requests hand it, each listing in a
-- light thread of its own (side by side).
local jobs, pending = {}, nil

local function run_job(job)
  job.result = M.iterate(job.args)
  job.done:post(1)
end

function M.start_dispatcher()
  pending = semaphore.new()
  assert(ngx.timer.at(0, function(premature)
    while not premature and not ngx.worker.exiting() do
      if pending:wait(1) then assert(ngx.thread.spawn(run_job, table.remove(jobs, 1))) end
    end
  end))
end

local function in_dispatcher(args)
  local job = { args = args, done = semaphore.new() }
  jobs[#jobs + 1] = job
  pending:post(1)
  assert(job.done:wait(120))
  return job.result
end

-- A listing in `mechanism` (rewrite, access, content: this request's phase; timer: the
-- dispatcher's), replied as JSON with the visitor's HTTP version.
function M.list(mechanism)
  local args = ngx.req.get_uri_args()
  local r = mechanism == "timer" and in_dispatcher(args) or M.iterate(args)
  r.http_version = ngx.req.http_version()
  r.worker = ngx.worker.pid()
  reply(r)
  if mechanism ~= "content" then ngx.exit(200) end
end

-- A listing of a missing store whose failure nobody catches: here, or in a timer.
local function fail_uncaught()
  local client = kvs.new{ base_url = M.bases.direct, max_retries = 0 }
  for _ in ngx_kvs.keys(client:store("nope")) do end
end

function M.uncaught(where)
  if where == "timer" then
    assert(ngx.timer.at(0, fail_uncaught))
    return ngx.print("started")
  end
  fail_uncaught()
end

-- The control of the non-blocking tests: the libcurl iterator, which blocks the worker.
function M.blocking()
  local client = kvs.new{ base_url = M.bases.direct, min_delay = 0.01, max_retries = 3 }
  local n = 0
  for _ in client:store("s"):keys{ page_size = 500 } do n = n + 1 end
  ngx.print(n)
end

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
