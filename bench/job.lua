-- job.lua — the apify.kvs job peer: store:job{} polled in a loop as a game or
-- event loop would, every key handed out by job:poll(); prints
-- "count sum cpu" (cpu: seconds of CPU of the whole process, os.clock()).
-- When a poll has nothing, the loop sleeps until job:timeout() (at most 1 ms),
-- so the CPU is the listing's, not spinning.
-- Usage: lua5.4 bench/job.lua BASE_URL   (or luajit; APIFY_KVS_FFI=0: C iterators)
-- KVS_URLS=0: urls = false.  KVS_JV=FILE (LuaJIT): the JIT's trace log (-jv) into FILE.
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
local dir = jit and "jit" or _VERSION:match("%d+%.%d+")
package.cpath = root .. "/build/" .. dir .. "/?.so;" .. package.cpath

if jit and os.getenv("KVS_JV") then require("jit.v").start(os.getenv("KVS_JV")) end

local socket = require "socket"
local kvs = require "apify.kvs"
local client = kvs.new{ base_url = assert(arg[1], "usage: job.lua BASE_URL"), token = "bench" }
-- page by page (parallel = 1): the bench's server knows only the pages that follow each other
local job = client:store("bench"):job{ parallel = 1, urls = os.getenv("KVS_URLS") ~= "0" }

local n, sum = 0, 0
while true do
  local before = n
  for _, size in job:poll() do
    n = n + 1
    sum = sum + size
  end
  local status, err = job:status()
  if status == "failed" then error(tostring(err)) end
  if status ~= "running" then break end
  if n == before then
    local t = job:timeout()
    if t and t > 0 then socket.sleep(math.min(t, 0.001)) end
  end
end
print(string.format("%d %d %.4f", n, sum, os.clock()))
