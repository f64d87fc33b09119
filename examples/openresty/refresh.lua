-- refresh.lua — keeps every key of an Apify key-value store in a lua_shared_dict, refreshed in
-- the background by a timer started from init_worker_by_lua*, so that requests look keys up
-- in memory and never wait for the API:
--
--   lua_shared_dict apify_keys 20m;                    # http{}: room for the keys
--   init_worker_by_lua_block {
--       require("refresh").start{ store = "my-store", dict = "apify_keys", every = 300 }
--   }
--   location = /has { content_by_lua_block {
--       local size = ngx.shared.apify_keys:get("key:" .. ngx.var.arg_key)   -- nil: no such key
--       ngx.say(size and ("yes, " .. size .. " bytes") or "no")
--   } }
--
-- One worker (ngx.worker.id() == 0) lists, in ngx.timer callbacks (apify.kvs.openresty on
-- cosockets: the worker serves other requests meanwhile); all workers read the dict, and any
-- worker may ask for a listing now (M.now: a flag in the dict that worker 0's watcher timer
-- picks up within M.watch_interval). What the dict holds:
--   "key:<key>"   the record's size in bytes, for every key of the latest complete listing
--   "count"       number of keys of the latest complete listing
--   "listed_at"   ngx.now() when it completed
--   "running"     true while a listing is under way; "progress": keys seen by it so far
--   "error"       tostring of the last failure (kept until a listing succeeds)
--   "wanted"      a listing was asked for (M.now) and has not started yet
-- While a listing runs the dict still answers from the last one, plus the keys seen so far;
-- keys gone from the store are removed when a listing completes. A failed listing removes
-- nothing (the dict keeps the last complete state) and the next run starts afresh.

local kvs = require "apify.kvs"
local ngx_kvs = require "apify.kvs.openresty"

local ngx = ngx

local M = {}

-- Seconds between two looks of worker 0 at the "wanted" flag: the most a listing asked for
-- with M.now() waits to start.
M.watch_interval = 0.5

local cfg, client, dict
local seen = {}          -- key -> generation of the listing that saw it last (worker 0 only)
local generation = 0
local running = false

local function run_once()
  if running then return end
  running = true
  dict:delete("wanted")
  generation = generation + 1
  local gen, n = generation, 0
  dict:set("running", true)
  dict:set("progress", 0)
  local pages = ngx_kvs.open(client:store(cfg.store), cfg.listing)
  local err
  while true do
    local count, e = pages:next_page()
    if not count then err = e break end
    for key, size in pages:page_keys() do
      n = n + 1
      seen[key] = gen
      local stored, set_err = dict:set("key:" .. key, size)
      if not stored then err = "lua_shared_dict " .. cfg.dict .. ": " .. tostring(set_err) break end
    end
    if err then break end
    dict:set("progress", n)
  end
  pages:close()
  if not err then
    for key, g in pairs(seen) do        -- gone from the store
      if g ~= gen then
        seen[key] = nil
        dict:delete("key:" .. key)
      end
    end
    dict:set("count", n)
    dict:set("listed_at", ngx.now())
    dict:delete("error")
  else
    dict:set("error", tostring(err))
    ngx.log(ngx.ERR, "refresh of store ", cfg.store, " failed: ", tostring(err))
  end
  dict:set("progress", n)
  dict:set("running", false)
  running = false
end

local function timer(premature)
  if not premature then run_once() end
end

-- Asks for a listing now, from any worker and any phase (it starts within M.watch_interval,
-- after the one running, if any). true, or nil and why not.
function M.now()
  if not dict then return nil, "refresh.start was not called" end
  return dict:set("wanted", true)
end

-- opts: store (id or username~name), dict (name of a lua_shared_dict), every (seconds between
-- listings, 0: only at start and on M.now()), listing (options of the listing: prefix,
-- page_size, parallel = n for key ranges side by side in big stores, ...), client (options of
-- kvs.new; token and base_url default to the environment, APIFY_TOKEN and APIFY_API_BASE_URL,
-- which nginx.conf must pass with `env`). Call it in init_worker_by_lua* of every worker.
function M.start(opts)
  cfg = opts
  dict = assert(ngx.shared[opts.dict], "no lua_shared_dict " .. tostring(opts.dict))
  if ngx.worker.id() ~= 0 then return end    -- one worker lists for all
  client = kvs.new(opts.client or {})
  assert(ngx.timer.at(0, timer))             -- the first listing, right away
  if (opts.every or 0) > 0 then assert(ngx.timer.every(opts.every, timer)) end
  assert(ngx.timer.every(M.watch_interval, function(premature)
    if not premature and not running and dict:get("wanted") then run_once() end
  end))
end

return M
