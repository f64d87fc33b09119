-- bench/openresty-load.lua — apify.kvs.openresty under load in a real nginx (2 workers):
-- C concurrent listings of a K-key store, L listings in all, against the local emulator, and
-- meanwhile an unrelated location asked every 10 ms. Reports throughput, p50/p99/max of the
-- listings and of the unrelated requests, errors, the workers' RSS before and after, then the
-- workers' CPU while one listing waits on pages that take 1 s each.
-- Run by bench/openresty-load.sh (which builds what it needs); from the repository root:
--
--   lua5.4 bench/openresty-load.lua [MODE]      MODE: content (content_by_lua, default)
--                                               or timer (each listing in ngx.timer.at)
-- Settings (environment): C=50 L=3000 K=2000 PAGE=1000 WORKERS=2, PARALLEL (parallel = n for
-- each listing; default none), KEEP=1 (keep the run directory).
package.path = "./?.lua;./spec/support/?.lua;" .. package.path
local socket = require "socket"
local launch = require "emulator.launch"
local http = require "spec.support.http"

local MODE = arg[1] or "content"
local C = tonumber(os.getenv("C") or 50)
local L = tonumber(os.getenv("L") or 3000)
local K = tonumber(os.getenv("K") or 2000)
local PAGE = tonumber(os.getenv("PAGE") or 1000)
local WORKERS = tonumber(os.getenv("WORKERS") or 2)
local PARALLEL = os.getenv("PARALLEL") or "nil"
local ROOT = (launch.capture("pwd"):gsub("%s+$", ""))
assert(MODE == "content" or MODE == "timer", "MODE: content or timer")

-- scratch directories the workers (nobody, when run as root) can enter
local function tmpdir()
  local dir = assert(launch.mktemp_dir("apify-kvs-bench"))
  assert(launch.run("chmod 755 " .. launch.sh_quote(dir)))
  return dir
end

-- the store
local storage = tmpdir()
local dir = storage .. "/key_value_stores/s"
assert(launch.run("mkdir -p " .. launch.sh_quote(dir)))
for i = 1, K do launch.write_file(string.format("%s/k%06d.txt", dir, i), "x") end
local emu = launch.start{ storage = storage, token = "bench-token" }

-- Every module is loaded by the master (init_by_lua): the workers read nothing of the checkout.
local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
@USER@
daemon on;
worker_processes @WORKERS@;
error_log "@RUNDIR@/error.log" warn;
pid "@RUNDIR@/nginx.pid";
env APIFY_TOKEN;
env APIFY_API_BASE_URL;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path "@RUNDIR@/tmp/client_body";
    proxy_temp_path "@RUNDIR@/tmp/proxy";
    fastcgi_temp_path "@RUNDIR@/tmp/fastcgi";
    uwsgi_temp_path "@RUNDIR@/tmp/uwsgi";
    scgi_temp_path "@RUNDIR@/tmp/scgi";
    lua_package_path "@ROOT@/lua/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "@ROOT@/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    lua_socket_pool_size 64;
    init_by_lua_block {
        require "apify.kvs"
        require "apify.kvs.openresty"
        require "ngx.semaphore"
    }
    server {
        listen 127.0.0.1:@PORT@ backlog=4096;
        location = /ping { content_by_lua_block { ngx.print("pong") } }
        location = /list {
            content_by_lua_block {
                local ngx_kvs = require "apify.kvs.openresty"
                local client = ngx_kvs.bench_client   -- one client per worker
                if not client then
                    client = require("apify.kvs").new{ min_delay = 0.05, max_retries = 5 }
                    ngx_kvs.bench_client = client
                end
                local function count()
                    local n = 0
                    local ok, err = pcall(function()
                        for _ in ngx_kvs.keys(client:store("s"), { page_size = @PAGE@, parallel = @PARALLEL@ }) do
                            n = n + 1
                        end
                    end)
                    return ok and tostring(n) or ("error " .. tostring(err))
                end
                if "@MODE@" == "timer" then
                    local sema, out = require("ngx.semaphore").new(), nil
                    ngx.timer.at(0, function() out = count() sema:post(1) end)
                    sema:wait(120)
                    ngx.print(out)
                else
                    ngx.print(count())
                end
            }
        }
    }
}
]]

local rundir = tmpdir()
assert(launch.run("mkdir -p " .. launch.sh_quote(rundir .. "/tmp")))
local proc = launch.start_nginx{
  name = "bench nginx", rundir = rundir,
  env = { APIFY_TOKEN = "bench-token", APIFY_API_BASE_URL = emu.base_url },
  render = function(ports)
    return (CONF:gsub("@([%u_]+)@", {
      USER = launch.user_directive(), WORKERS = tostring(WORKERS), RUNDIR = rundir, ROOT = ROOT,
      PORT = tostring(ports[1]), PAGE = tostring(PAGE), MODE = MODE, PARALLEL = PARALLEL,
    }))
  end,
}
local port = proc.ports[1]

local function workers()
  local pids = {}
  for pid in launch.capture("ps -o pid= --ppid " .. proc.pid):gmatch("%d+") do pids[#pids + 1] = pid end
  return pids
end
local function rss_kb()
  local out = {}
  for _, pid in ipairs(workers()) do
    out[#out + 1] = tonumber((launch.read_file("/proc/" .. pid .. "/status") or ""):match("VmRSS:%s*(%d+)"))
  end
  return out
end

-- warm up: every worker loads the module and makes its client
for _ = 1, 4 * WORKERS do http.run(port, { { path = "/list" } }) end
local rss_before = rss_kb()

-- the load: C listings in flight at all times, L in all; a ping every 10 ms
local t0 = socket.gettime()
local started, done, errors = 0, 0, 0
local lat, ping_lat = {}, {}
local active, socks = {}, {}
local next_ping = t0

local function start(path, kind)
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
  c:settimeout(0)
  active[c] = { kind = kind, t = socket.gettime(), raw = {} }
  socks[#socks + 1] = c
end

local function finish(c)
  local r = active[c]
  active[c] = nil
  for i, s in ipairs(socks) do if s == c then table.remove(socks, i) break end end
  c:close()
  local elapsed = socket.gettime() - r.t
  local status, _, body = http.parse(table.concat(r.raw))
  if r.kind == "ping" then
    ping_lat[#ping_lat + 1] = elapsed
    if status ~= 200 then errors = errors + 1 end
  else
    done = done + 1
    lat[#lat + 1] = elapsed
    if status ~= 200 or body ~= tostring(K) then
      errors = errors + 1
      if errors <= 3 then io.stderr:write("error: ", status, " ", body:sub(1, 300), "\n") end
    end
  end
end

while done < L do
  while started < L and (started - done) < C do
    start("/list", "list")
    started = started + 1
  end
  local now = socket.gettime()
  if now >= next_ping then
    start("/ping", "ping")
    next_ping = now + 0.01
  end
  local readable = socket.select(socks, nil, math.max(0, next_ping - socket.gettime()))
  for _, c in ipairs(readable) do
    local data, err, partial = c:receive(65536)
    local chunk = data or partial
    if chunk and #chunk > 0 then table.insert(active[c].raw, chunk) end
    if err == "closed" then finish(c) elseif err and err ~= "timeout" then error(err) end
  end
end
while next(active) do
  local readable = socket.select(socks, nil, 1)
  for _, c in ipairs(readable) do
    local data, err, partial = c:receive(65536)
    local chunk = data or partial
    if chunk and #chunk > 0 then table.insert(active[c].raw, chunk) end
    if err == "closed" then finish(c) end
  end
end
local wall = socket.gettime() - t0
local rss_after = rss_kb()

-- CPU seconds the workers have run (/proc/PID/schedstat: nanoseconds on a CPU)
local function cpu()
  local total = 0
  for _, pid in ipairs(workers()) do
    total = total + tonumber((launch.read_file("/proc/" .. pid .. "/schedstat") or "0"):match("%d+")) / 1e9
  end
  return total
end

-- one listing waiting on pages of 1 s each: the workers' CPU meanwhile
emu:config{ delay = 1 }
socket.sleep(1)
local cpu0, t_idle = cpu(), socket.gettime()
local idle = http.run(port, { { path = "/list" } }, { timeout = 60 })[1]
local idle_wall, idle_cpu = socket.gettime() - t_idle, cpu() - cpu0
assert(idle.body == tostring(K), "the slow listing: " .. tostring(idle.body))

local function pct(list, p)
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p))] * 1000
end
local function kb(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = string.format("%.1f MB", v / 1024) end
  return table.concat(t, ", ")
end

print(string.format("apify.kvs.openresty load, mode %s: %d workers, %d concurrent listings, %d "
  .. "listings of %d keys (%d pages of %d), parallel = %s", MODE, WORKERS, C, L, K, math.ceil(K / PAGE),
  PAGE, PARALLEL))
print(string.format("  wall %.2f s: %.1f listings/s, %.0f keys/s, %d errors", wall, L / wall,
  L * K / wall, errors))
print(string.format("  listing latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms", pct(lat, 0.5),
  pct(lat, 0.99), pct(lat, 1)))
print(string.format("  unrelated /ping (%d): p50 %.1f ms, p99 %.1f ms, max %.1f ms", #ping_lat,
  pct(ping_lat, 0.5), pct(ping_lat, 0.99), pct(ping_lat, 1)))
print(string.format("  worker RSS before: %s; after: %s", kb(rss_before), kb(rss_after)))
print(string.format("  one listing waiting on %d pages of 1 s: %.2f s, workers' CPU %.1f ms (%.2f%% of a core)",
  math.ceil(K / PAGE), idle_wall, idle_cpu * 1000, 100 * idle_cpu / idle_wall))
print("  load average at the end: " .. (launch.read_file("/proc/loadavg") or "?"):match("^(%S+ %S+ %S+)"))

launch.stop_nginx(rundir, workers())
local log = launch.read_file(rundir .. "/error.log") or ""
local n_err = select(2, log:gsub("%[error%]", ""))
print(string.format("  nginx error log: %d [error] lines%s", n_err,
  n_err > 0 and (" (first: " .. log:match("%[error%][^\n]*"):sub(1, 200) .. ")") or ""))
if os.getenv("KEEP") then print("  kept " .. rundir) else launch.run("rm -rf " .. launch.sh_quote(rundir)) end
emu:stop()
launch.run("rm -rf " .. launch.sh_quote(storage))
