-- spec/support/env.lua — what the specs share: the module under test, temp
-- store directories in the Apify CLI layout, and the local API emulator (a
-- real nginx on a free loopback port, see emulator/launch.lua).
local launch = require "emulator.launch"

local M = {}

M.kvs = require "apify.kvs"
M.lua = os.getenv("KVS_LUA") or "lua5.4"
M.cpath = os.getenv("KVS_CPATH") or "build/5.4/?.so"
M.target = os.getenv("KVS_TARGET") or "5.4"
-- valgrind and sanitizer runs are slower: specs scale their time limits by this
M.slow = tonumber(os.getenv("KVS_SLOW") or "1")
-- Claims about speed (frame times, overlap, speed-ups, rates) hold on a quiet machine only:
-- they are checked by `make test-timing` (KVS_TIMING=1), never by `make test`.
M.timing = os.getenv("KVS_TIMING") == "1"
-- asserts a timing claim only under make test-timing
function M.timed_claim(ok, msg)
  if M.timing then assert(ok, msg) end
end

-- os.execute as a boolean under every Lua
local sh = launch.run
M.sh = sh

-- The output of a shell command.
function M.read(cmd)
  return assert(launch.capture(cmd), "cannot run: " .. cmd)
end

-- A new scratch directory (on tmpfs when there is one: see launch.mktemp_dir), readable by
-- others: the emulator's workers run as nobody when the suite runs as root.
function M.tmpdir()
  local dir = assert(launch.mktemp_dir("apify-kvs-spec"), "cannot make a scratch directory")
  assert(launch.run("chmod 755 " .. launch.sh_quote(dir)))
  return dir
end

-- A file's bytes, or nil when it cannot be read.
M.read_file = launch.read_file

local write = launch.write_file

-- Shell and process helpers, written once in emulator/launch.lua.
M.sh_quote = launch.sh_quote
M.alive = launch.alive        -- true while a pid exists and is not a zombie
M.launch = launch

-- Creates <storage>/key_value_stores/<store>/ with one file per key:
-- `records` maps key -> content (size = #content), or is a list of keys.
function M.make_store(storage, store, records, ext)
  local dir = storage .. "/key_value_stores/" .. store
  assert(sh("mkdir -p '" .. dir .. "'"))
  ext = ext or ".txt"
  if records[1] ~= nil then
    for i, key in ipairs(records) do write(dir .. "/" .. key .. ext, ("x"):rep(i % 7)) end
  else
    for key, content in pairs(records) do write(dir .. "/" .. key .. ext, content) end
  end
  return dir
end

-- n keys "k00001".. in byte order, sizes i % 7
function M.numbered(n, prefix)
  local keys = {}
  for i = 1, n do keys[i] = string.format("%s%05d", prefix or "k", i) end
  return keys
end

function M.start_emulator(opts)
  return launch.start(opts)
end

function M.rmrf(dir)
  if dir and dir:match("/apify%-kvs%-spec%.[%w]+$") then sh("rm -rf " .. M.sh_quote(dir)) end
end

-- All keys of a listing, in order, with sizes.
function M.collect(store, opts)
  local keys, sizes, urls = {}, {}, {}
  for k, size, url in store:keys(opts) do
    keys[#keys + 1] = k
    sizes[#sizes + 1] = size
    urls[#urls + 1] = url or false
  end
  return keys, sizes, urls
end

-- Every key a listing hands out, and the error it ended with (nil when it finished).
-- Through store:keys (its error caught):
function M.keys_via_keys(store, opts)
  local keys = {}
  local ok, err = pcall(function()
    for k in store:keys(opts) do keys[#keys + 1] = k end
  end)
  return keys, (not ok) and err or nil
end

-- Through store:job, polled until it is over; 30 s at most (x KVS_SLOW), then it is closed
-- and the error says so.
function M.keys_via_job(store, opts)
  local socket = require "socket"
  local job = store:job(opts)
  local keys = {}
  local deadline = M.now() + 30 * M.slow
  while job:status() == "running" do
    for k in job:poll() do keys[#keys + 1] = k end
    if M.now() > deadline then
      job:close()
      return keys, "the job did not finish within " .. 30 * M.slow .. " s"
    end
    socket.sleep(math.max(0.001, math.min(job:timeout() or 0, 0.01)))
  end
  for k in job:poll() do keys[#keys + 1] = k end
  local status, err = job:status()
  return keys, status == "failed" and (err or "failed without an error") or nil
end

-- Distinct TCP connections in a request log of the emulator (emu:requests()).
function M.connections(reqs)
  local seen, n = {}, 0
  for _, q in ipairs(reqs) do
    if not seen[q.connection] then seen[q.connection], n = true, n + 1 end
  end
  return n
end

-- Waits until something accepts connections on 127.0.0.1:port, `seconds` (10) at most;
-- true when it does.
function M.wait_listening(port, seconds)
  local socket = require "socket"
  local deadline = M.now() + (seconds or 10)
  repeat
    if launch.listening(port) then return true end
    socket.sleep(0.05)
  until M.now() > deadline
  return false
end

-- Runs f and returns the error value it raised (fails the spec if none).
function M.raised(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error, got none")
  return err
end

-- The message of the error f raised, without the "file:line: " Lua puts before it.
function M.raised_message(f, ...)
  return (tostring(M.raised(f, ...)):gsub("^[^\n]-:%d+: ", ""))
end

-- For a describe block: a temp storage holding `stores` (name -> keys, see
-- make_store), an emulator over it started once, a client, and a clean slate
-- (no faults, no logged requests, no delay, fresh rate-limit buckets) before each
-- test.  The returned table is filled in when the block starts: ctx.emu,
-- ctx.client, ctx.storage.  opts.enforce = false: no rate-limit bucket.
function M.emulated(stores, token, opts)
  local busted = require "busted"
  local ctx = {}
  -- the emulator enforces the API's 60 requests/s a store, as the API does; a block that
  -- needs no bucket says so: T.emulated(stores, token, { enforce = false })
  local enforce = opts and opts.enforce
  if enforce == nil then enforce = true end
  busted.lazy_setup(function()
    ctx.storage = M.tmpdir()
    for name, records in pairs(stores) do M.make_store(ctx.storage, name, records) end
    ctx.emu = M.start_emulator({ storage = ctx.storage, token = token })
    ctx.client = M.client(ctx.emu, { token = token })
  end)
  busted.lazy_teardown(function()
    if ctx.emu then ctx.emu:stop() end
    M.rmrf(ctx.storage)
  end)
  busted.before_each(function()
    ctx.emu:clear_faults()
    ctx.emu:clear_requests()
    ctx.emu:config({ delay = 0, enforce = enforce })
  end)
  return ctx
end

-- A client with fast retries for the tests.
function M.client(emu, extra)
  local opts = { base_url = emu.base_url, token = emu.token or "test-token",
                 min_delay = 0.01, max_retries = 3, timeout = 5 * M.slow }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return M.kvs.new(opts)
end

-- A TCP port on 127.0.0.1 that nothing listens on (at the time of asking).
M.free_port = launch.free_port

M.write_file = write

function M.now()
  local ok, socket = pcall(require, "socket")
  if ok then return socket.gettime() end
  return os.time()
end

return M
