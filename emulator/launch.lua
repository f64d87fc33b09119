-- emulator/launch.lua
--
-- Owns: starting and stopping the local Apify API emulator (nginx + emulator/kvs_emulator.lua,
-- configured from emulator/nginx.conf.in), and the client side of its /_emulator/ control API.
-- Runs unchanged under Lua 5.1-5.4 and LuaJIT; needs luasocket (and lua-cjson for the control
-- calls only).
--
-- As a module (from the repository root, where package.path has "./?.lua"):
--   local launch = require "emulator.launch"
--   local emu = launch.start{ storage = "storage", token = nil, port = nil, rundir = nil }
--   (nginx stops by itself when the calling process exits without emu:stop(); watch = false
--   turns that off)
--   emu.base_url, emu.port, emu.rundir
--   emu:faults{ {kind = "status", status = 503} }; emu:clear_faults(); emu:pending_faults()
--   emu:config{ delay = 0.2, rate_limit = 60 }; emu:requests(); emu:clear_requests()
--   emu:write_file(name, bytes) -> the absolute path of <rundir>/files/<name> (for raw faults)
--   emu:config{ latency = 0.15, jitter = 0.03, seed = 1, rate_limit = 60, enforce = true, burst = 60 }
--   (the API's rules, see docs/emulator.md; enforce = 30 with rate_limit = 60: a header that lies)
--   emu:stop()
--   launch.stop_rundir(dir)     -- stop the nginx of a run directory and clean it up
--
-- As a command:
--   lua emulator/launch.lua start --storage DIR [--token-file FILE] [--port N] [--rundir DIR] [--workers N]
--       prints the base URL (http://127.0.0.1:PORT) and leaves nginx running; the token the
--       emulator asks for comes from FILE or $KVS_EMULATOR_TOKEN (never from the command line,
--       which every local user can read); the control API's secret is <rundir>/control-secret
--
-- Safety: the run directory is 0700 and the files holding the token or the control secret
-- 0600; started as root, nginx runs its workers as nobody (kvs_emulator.lua says how they still
-- reach the storage directory); the watchdog that stops nginx once its owner is gone is a shell
-- loop given the run directory as an argument, and removes only the files the launcher made.
--   lua emulator/launch.lua stop --rundir DIR
--   lua emulator/launch.lua url --rundir DIR

local socket = require "socket"

local M = {}

local NGINX = "/usr/sbin/nginx"
local START_TIMEOUT = 30    -- seconds until the emulator must answer (a loaded machine is slow)
local STOP_TIMEOUT = 5      -- seconds until nginx must be gone (then SIGKILL)
local PORT_ATTEMPTS = 5     -- free-port race: tries with a fresh port when nginx cannot bind

-- Files the launcher (or nginx) creates in a run directory; stop removes exactly these.
local RUNDIR_FILES = {
  "nginx.conf", "settings.json", "control-secret", "nginx.pid", "error.log", "access.log",
  "startup.log", "base_url",
}

---------------------------------------------------------------------------------------------------
-- shell and file helpers

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute's result as a boolean, for Lua 5.1/LuaJIT (a number) and 5.2+ (true/nil, ...).
local function run(cmd)
  local a = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true
end

local function capture(cmd)
  local p = io.popen(cmd, "r")
  if not p then return nil end
  local out = p:read("*a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, content, private)
  -- a private file is created empty with mode 0600 before anything is written to it
  if private and not run("umask 077 && : >" .. sh_quote(path)) then
    error("emulator: cannot write " .. path, 0)
  end
  local f, err = io.open(path, "wb")
  if not f then error("emulator: cannot write " .. path .. ": " .. tostring(err), 0) end
  f:write(content)
  f:close()
end

local function is_dir(path)
  return run("test -d " .. sh_quote(path))
end

local cwd_cache
local function abspath(path)
  path = tostring(path)
  if path:sub(1, 1) ~= "/" then
    cwd_cache = cwd_cache or (capture("pwd") or ""):gsub("%s+$", "")
    path = cwd_cache .. "/" .. path
  end
  path = path:gsub("/%./", "/"):gsub("/%.$", ""):gsub("//+", "/")
  if #path > 1 then path = path:gsub("/$", "") end
  return path
end

local function tail(path, lines)
  local text = read_file(path)
  if not text or text == "" then return "" end
  local all = {}
  for line in text:gmatch("[^\n]+") do all[#all + 1] = line end
  local from = math.max(1, #all - (lines or 15) + 1)
  local out = {}
  for i = from, #all do out[#out + 1] = all[i] end
  return table.concat(out, "\n")
end

-- Minimal JSON string encoder for settings.json (the launcher must not need cjson to start).
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- This file's directory (the emulator directory), absolute.
-- Where scratch directories go: $KVS_TMPDIR if set, else /dev/shm when it is a
-- writable tmpfs with room to spare (stores are one small file per key: on a disk
-- file system creating thousands of them costs more than the specs that read them),
-- else /tmp.
local scratch_base
local function scratch_dir()
  if scratch_base then return scratch_base end
  local env = os.getenv("KVS_TMPDIR")
  if env and env ~= "" then scratch_base = env; return env end
  local free = capture("df -P -k /dev/shm 2>/dev/null | awk 'NR == 2 && $1 == \"tmpfs\" { print $4 }'")
  free = tonumber(free and free:match("%d+") or "")
  if free and free >= 1024 * 1024 and run("test -w /dev/shm") then scratch_base = "/dev/shm"
  else scratch_base = "/tmp" end
  return scratch_base
end

-- A new private directory under scratch_dir(), named <name>.XXXXXX.
function M.mktemp_dir(name)
  local made = capture("mktemp -d " .. sh_quote(scratch_dir() .. "/" .. name) .. ".XXXXXX 2>/dev/null")
  made = made and made:gsub("%s+$", "")
  if not made or made == "" then return nil end
  return made
end

local function emulator_dir()
  local source = debug.getinfo(1, "S").source
  local dir = source:match("^@(.*)/[^/]*$") or "."
  return abspath(dir)
end

-- Paths that go into nginx.conf (quoted there) and lua_package_path must stay simple.
local function check_conf_path(what, path)
  if path:find('[%c"\\%$;{}#%?]') then
    error("emulator: " .. what .. " path may not contain control characters or any of \" \\ $ ; { } # ?: " .. path, 0)
  end
end

---------------------------------------------------------------------------------------------------
-- processes

local function read_pid(rundir)
  local s = read_file(rundir .. "/nginx.pid")
  return s and tonumber(s:match("%d+"))
end

-- true while the process exists and is not a zombie
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if stat then
    return stat:match("^%d+ %b() (%a)") ~= "Z"
  end
  if is_dir("/proc/self") then return false end
  return run("kill -0 " .. pid .. " 2>/dev/null")
end

local function wait_gone(pid, seconds)
  local deadline = socket.gettime() + seconds
  while alive(pid) do
    if socket.gettime() > deadline then return false end
    socket.sleep(0.02)
  end
  return true
end

local function free_port()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  server:close()
  return tonumber(port)
end

-- GET /_emulator/ping over a raw socket; returns the body when nginx answers 200.
local function ping(port, secret)
  local c = socket.tcp()
  c:settimeout(0.5)
  if not c:connect("127.0.0.1", port) then c:close() return nil end
  c:send("GET /_emulator/ping HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " .. secret .. "\r\n\r\n")
  local reply = c:receive("*a")
  c:close()
  if reply and reply:match("^HTTP/1%.%d 200") then
    return reply:match("\r\n\r\n(.*)$") or ""
  end
  return nil
end

local function remove_rundir_files(rundir)
  for _, name in ipairs(RUNDIR_FILES) do os.remove(rundir .. "/" .. name) end
  run("rm -rf " .. sh_quote(rundir .. "/tmp") .. " " .. sh_quote(rundir .. "/files"))
  run("rmdir " .. sh_quote(rundir) .. " 2>/dev/null")
end

local function stop_pid(pid)
  if not pid or not alive(pid) then return true end
  run("kill -TERM " .. pid .. " 2>/dev/null")
  if wait_gone(pid, STOP_TIMEOUT) then return true end
  run("kill -KILL " .. pid .. " 2>/dev/null")
  return wait_gone(pid, 2)
end

-- Stops the nginx of a run directory (if running) and removes the files the launcher made there;
-- the directory itself goes when it is then empty. keep = true leaves the files (for debugging).
function M.stop_rundir(rundir, keep)
  rundir = abspath(rundir)
  local ok = stop_pid(read_pid(rundir))
  if not ok then error("emulator: nginx of " .. rundir .. " did not stop", 0) end
  if not keep then remove_rundir_files(rundir) end
  return true
end

---------------------------------------------------------------------------------------------------
-- any nginx of the suite: start on free ports, wait until it answers

function M.is_root()
  return (capture("id -u 2>/dev/null") or ""):match("^%s*0%s*$") ~= nil
end

-- true when something accepts TCP connections on 127.0.0.1:port
function M.listening(port)
  local c = socket.tcp()
  c:settimeout(0.5)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

-- Starts nginx (daemon on, pid file and error.log in opts.rundir) on a configuration made for
-- fresh free ports, and waits until it answers. opts:
--   name      words for errors ("emulator", "test nginx")
--   rundir    absolute run directory (exists); nginx.conf, error.log, startup.log go there
--   render    function(ports) -> the text of nginx.conf
--   nports    how many free ports render gets (1); port: the first one fixed (one attempt)
--   env       extra environment of nginx: { NAME = value }
--   ready     function(ports) -> true: up; nil: not yet; false: wrong server, give up
--             (default: something listens on ports[1])
--   timeout   seconds until it must be ready (START_TIMEOUT)
-- Another process may take a free port before nginx binds it: then it tries with fresh ports,
-- up to PORT_ATTEMPTS times. Returns { rundir, ports, pid }; raises with the error log's tail.
function M.start_nginx(opts)
  local rundir, name = opts.rundir, opts.name or "nginx"
  local timeout = opts.timeout or START_TIMEOUT
  local ready = opts.ready or function(ports) return M.listening(ports[1]) or nil end
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. " " .. k .. "=" .. sh_quote(v) end
  local attempts = opts.port and 1 or PORT_ATTEMPTS
  local last_error
  for _ = 1, attempts do
    local ports = {}
    for i = 1, opts.nports or 1 do ports[i] = free_port() end
    if opts.port then ports[1] = tonumber(opts.port) end
    write_file(rundir .. "/nginx.conf", opts.render(ports))
    os.remove(rundir .. "/error.log")
    os.remove(rundir .. "/nginx.pid")
    -- env -u LD_PRELOAD: a sanitizer preloaded into the test process must not reach nginx
    local cmd = "env -u LD_PRELOAD" .. env .. " " .. NGINX .. " -p " .. sh_quote(rundir .. "/")
      .. " -c " .. sh_quote(rundir .. "/nginx.conf") .. " -e " .. sh_quote(rundir .. "/error.log")
      .. " </dev/null >" .. sh_quote(rundir .. "/startup.log") .. " 2>&1"
    if run(cmd) then
      -- daemon on: nginx has bound its ports and forked; wait for the worker to answer
      local deadline = socket.gettime() + timeout
      local up
      repeat
        up = ready(ports)
        if up ~= nil then break end
        socket.sleep(0.02)
      until socket.gettime() > deadline
      if up then return { rundir = rundir, ports = ports, pid = read_pid(rundir) } end
      local log = tail(rundir .. "/error.log")
      stop_pid(read_pid(rundir))
      last_error = name .. ": nginx did not answer on port " .. ports[1] .. " within "
        .. timeout .. " s; tail of " .. rundir .. "/error.log:\n" .. log
      break
    end
    local log = tail(rundir .. "/error.log") .. "\n" .. tail(rundir .. "/startup.log")
    last_error = name .. ": nginx failed to start on port " .. ports[1] .. "; tail of "
      .. rundir .. "/error.log:\n" .. log
    if not log:find("Address already in use", 1, true) then
      -- nginx binds before it daemonizes, so a master may be running despite a failed command
      -- only in this case: give it a moment to write its pid file, and stop it
      local deadline, pid = socket.gettime() + 1, read_pid(rundir)
      while not pid and socket.gettime() < deadline do
        socket.sleep(0.05)
        pid = read_pid(rundir)
      end
      stop_pid(pid)
      break
    end
  end
  error(last_error, 0)
end

-- Stops the nginx of a run directory, and `extra` pids (its workers) should they outlive it.
-- true when none of them is left.
function M.stop_nginx(rundir, extra)
  local ok = stop_pid(read_pid(rundir))
  for _, pid in ipairs(extra or {}) do ok = stop_pid(pid) and ok end
  return ok
end

-- Helpers the specs share (spec/support/env.lua re-exports them).
M.NGINX, M.sh_quote, M.run, M.capture = NGINX, sh_quote, run, capture
M.read_file, M.write_file, M.free_port, M.alive = read_file, write_file, free_port, alive

---------------------------------------------------------------------------------------------------
-- the emulator object

local Emu = {}
Emu.__index = Emu

-- One HTTP call to the control API; returns the decoded JSON reply (raises on failure).
function Emu:control(method, path, body)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local cjson = require "cjson"
  local chunks = {}
  local req = {
    url = self.base_url .. path,
    method = method,
    sink = ltn12.sink.table(chunks),
    headers = { authorization = "Bearer " .. self.control_secret },
  }
  if body ~= nil then
    local text = type(body) == "string" and body or cjson.encode(body)
    if type(body) == "table" and next(body) == nil then text = "[]" end
    req.source = ltn12.source.string(text)
    req.headers["content-type"] = "application/json"
    req.headers["content-length"] = tostring(#text)
  end
  local old_timeout = http.TIMEOUT
  http.TIMEOUT = 10
  local ok, status = http.request(req)
  http.TIMEOUT = old_timeout
  if not ok then error("emulator: " .. method .. " " .. path .. " failed: " .. tostring(status), 2) end
  local text = table.concat(chunks)
  if status ~= 200 then
    error("emulator: " .. method .. " " .. path .. " -> " .. tostring(status) .. " " .. text, 2)
  end
  local decoded = cjson.decode(text)
  return decoded
end

-- Appends faults (a list of fault objects, see emu_faults.lua) to the pending queue.
function Emu:faults(list)
  return self:control("POST", "/_emulator/faults", list)
end

function Emu:clear_faults()
  return self:control("DELETE", "/_emulator/faults")
end

function Emu:pending_faults()
  return self:control("GET", "/_emulator/faults")
end

-- config{ delay = seconds, rate_limit = n, token = "t" | false }; returns the whole config.
function Emu:config(tbl)
  if tbl == nil then return self:control("GET", "/_emulator/config") end
  local cjson = require "cjson"
  local body = {}
  for k, v in pairs(tbl) do body[k] = (v == false and k == "token") and cjson.null or v end
  if next(body) == nil then return self:control("GET", "/_emulator/config") end
  return self:control("POST", "/_emulator/config", body)
end

-- Writes a file into <rundir>/files/ (readable by the emulator's workers) and returns its
-- absolute path: what a raw fault's body_file may name.
function Emu:write_file(name, content)
  if type(name) ~= "string" or not name:match("^[%w][%w._-]*$") then
    error("emulator: write_file needs a plain file name", 2)
  end
  local path = self.rundir .. "/files/" .. name
  write_file(path, content)
  return path
end

function Emu:requests()
  return self:control("GET", "/_emulator/requests")
end

function Emu:clear_requests()
  return self:control("DELETE", "/_emulator/requests")
end

function Emu:stop()
  if self.stopped then return true end
  self.stopped = true
  return M.stop_rundir(self.rundir, self.keep_rundir)
end

---------------------------------------------------------------------------------------------------
-- start

-- 32 random bytes from the kernel as 64 hex digits.
local function random_secret()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(32)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- The user directive of an nginx.conf: started as root, the workers run as nobody (with its own
-- group); otherwise nginx keeps the current user and the directive is a comment.
function M.user_directive()
  if not M.is_root() then return "# (not root: nginx keeps the current user)" end
  local group = (capture("id -gn nobody 2>/dev/null") or ""):match("^%s*([%w_.-]+)%s*$") or "nogroup"
  return "user nobody " .. group .. ";"
end

-- Start time (field 22 of /proc/PID/stat) as the watchdog reads it; with the pid it names one
-- process even after the pid is reused.
local function start_time(pid)
  local stat = pid and read_file("/proc/" .. pid .. "/stat")
  local fields = {}
  for field in (stat and stat:match("^.*%)%s+(.*)$") or ""):gmatch("%S+") do fields[#fields + 1] = field end
  return fields[20]
end

-- The watchdog: a shell loop, given its values as arguments (never built into its code), that
-- stops nginx once the owner process is gone (or nginx.conf was removed: the run directory is
-- being cleaned up), then, when the launcher made the run directory, removes the files it made
-- and the directory once empty.
local WATCHDOG = [=[
rundir=$1 owner=$2 owner_start=$3 master=$4 master_start=$5 cleanup=$6
same() { # same PID START: that process is still the one started then (not a zombie)
  line=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  set -- "$2" ${line##*") "}
  [ "$2" != Z ] && [ "${21}" = "$1" ]
}
while same "$owner" "$owner_start" && same "$master" "$master_start" && [ -f "$rundir/nginx.conf" ]; do
  sleep 1
done
if same "$master" "$master_start"; then
  kill -TERM "$master"
  i=0; while same "$master" "$master_start" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
fi
if [ "$cleanup" = 1 ]; then
  for f in @FILES@; do rm -f -- "$rundir/$f"; done
  rm -rf -- "$rundir/tmp" "$rundir/files"
  rmdir -- "$rundir" 2>/dev/null
fi
]=]

-- Starts the watchdog of the nginx `master_pid` running in `rundir` for the process
-- `owner_pid`; with `cleanup`, it also removes the launcher's files there at the end.
function M.watch(rundir, owner_pid, master_pid, cleanup)
  local script = WATCHDOG:gsub("@FILES@", table.concat(RUNDIR_FILES, " "))
  local args = { rundir, owner_pid, start_time(owner_pid) or "gone", master_pid,
                 start_time(master_pid) or "gone", cleanup and "1" or "0" }
  for i, a in ipairs(args) do args[i] = sh_quote(a) end
  run("sh -c " .. sh_quote(script) .. " kvs-emulator-watchdog " .. table.concat(args, " ")
    .. " </dev/null >/dev/null 2>&1 &")
end

local function render_conf(template, vars)
  return (template:gsub("@([%u_]+)@", function(name)
    local v = vars[name]
    if v == nil then error("emulator: nginx.conf.in uses unknown placeholder @" .. name .. "@", 0) end
    return v
  end))
end

-- opts: storage (required), token, port, rundir, workers (nginx worker processes, default 1),
-- keep_rundir (leave files on stop),
-- watch (default true: nginx stops by itself once the calling Lua process has exited; a pid:
-- once that process has exited; false: never),
-- timeout (seconds to wait for the first answer, default 30).
function M.start(opts)
  opts = opts or {}
  if type(opts.storage) ~= "string" or opts.storage == "" then
    error("emulator: start{ storage = DIR } is required", 2)
  end
  local storage = abspath(opts.storage)
  if not is_dir(storage) then error("emulator: storage directory not found: " .. storage, 2) end
  if M.is_root() and not run("test \"$(stat -L -c %A " .. sh_quote(storage) .. " | cut -c8,10)\" = rx") then
    error("emulator: started as root, nginx's workers run as nobody and cannot read " .. storage
      .. ": make it readable by others (chmod o+rx; its parents may stay private), or start the"
      .. " emulator as the directory's owner", 2)
  end
  if opts.token ~= nil and type(opts.token) ~= "string" then error("emulator: token must be a string", 2) end
  if opts.port ~= nil and not tonumber(opts.port) then error("emulator: port must be a number", 2) end
  local workers = tonumber(opts.workers or 1)
  if not workers or workers < 1 or workers > 64 or workers % 1 ~= 0 then
    error("emulator: workers must be a whole number from 1 to 64", 2)
  end

  local edir = emulator_dir()
  local template = read_file(edir .. "/nginx.conf.in")
  if not template then error("emulator: cannot read " .. edir .. "/nginx.conf.in", 2) end
  check_conf_path("emulator", edir)

  local rundir
  if opts.rundir then
    rundir = abspath(opts.rundir)
    check_conf_path("run directory", rundir)
    local pid = read_pid(rundir)
    if pid and alive(pid) then
      error("emulator: an nginx (pid " .. pid .. ") is already running in " .. rundir, 2)
    end
    if not run("mkdir -p -m 700 " .. sh_quote(rundir)) then error("emulator: cannot create " .. rundir, 2) end
    -- the run directory holds secrets: only its owner may enter it
    if not run("test -O " .. sh_quote(rundir) .. " && chmod 700 " .. sh_quote(rundir)) then
      error("emulator: the run directory " .. rundir .. " must belong to the user starting the emulator", 2)
    end
  else
    rundir = M.mktemp_dir("kvs-emulator")
    if not rundir then error("emulator: mktemp -d failed", 2) end
    check_conf_path("run directory", rundir)
  end
  run("mkdir -p " .. sh_quote(rundir .. "/tmp"))
  -- files/ (raw faults' body files) is the one part of the run directory the workers read
  run("mkdir -p -m 755 " .. sh_quote(rundir .. "/files"))

  -- owner_pid: the watchdog stops nginx when this Lua process is gone;
  -- "echo $PPID" run through io.popen's shell prints the pid of the process calling popen.
  local owner_pid = type(opts.watch) == "number" and opts.watch
    or opts.watch ~= false and tonumber((capture("echo $PPID") or ""):match("%d+")) or nil
  local secret = random_secret()
  write_file(rundir .. "/control-secret", secret .. "\n", true)
  write_file(rundir .. "/settings.json", '{"storage":' .. json_string(storage)
    .. ',"token":' .. (opts.token and opts.token ~= "" and json_string(opts.token) or "null")
    .. ',"control_secret":' .. json_string(secret) .. '}\n', true)

  local timeout = opts.timeout or START_TIMEOUT
  local ok, proc = pcall(M.start_nginx, {
    name = "emulator", rundir = rundir, port = opts.port, timeout = timeout,
    render = function(ports)
      return render_conf(template, {
        RUNDIR = rundir,
        PORT = string.format("%d", ports[1]),
        WORKERS = string.format("%d", workers),
        EMULATOR_DIR = edir,
        USER_DIRECTIVE = M.user_directive(),
      })
    end,
    -- the answer names this run directory: not some other server on a recycled port
    ready = function(ports)
      local answer = ping(ports[1], secret)
      if answer == nil then return nil end
      return answer:find(json_string(rundir .. "/"), 1, true) ~= nil
    end,
  })
  if ok then
    local port = proc.ports[1]
    local base_url = "http://127.0.0.1:" .. port
    write_file(rundir .. "/base_url", base_url .. "\n")
    if owner_pid then M.watch(rundir, owner_pid, proc.pid, not opts.rundir) end
    return setmetatable({
      base_url = base_url, port = port, rundir = rundir, control_secret = secret,
      storage = storage, token = opts.token, keep_rundir = opts.keep_rundir,
    }, Emu)
  end
  if not opts.keep_rundir and not opts.rundir then remove_rundir_files(rundir) end
  error(proc, 2)
end

---------------------------------------------------------------------------------------------------
-- command line

local function usage(msg)
  if msg then io.stderr:write("launch.lua: ", msg, "\n") end
  io.stderr:write([[
usage: lua emulator/launch.lua start --storage DIR [--token-file FILE] [--port N] [--rundir DIR] [--workers N]
       (the token: FILE's first line, or $KVS_EMULATOR_TOKEN; none: no authentication)
       lua emulator/launch.lua stop --rundir DIR
       lua emulator/launch.lua url --rundir DIR
]])
  os.exit(2)
end

local function cli(args)
  local command = args[1]
  local opts = {}
  local i = 2
  while i <= #args do
    local name, value = args[i], args[i + 1]
    local key = name:match("^%-%-([%a-]+)$")
    if key == "token" then
      usage("--token is refused: every local user can read a command line; use --token-file FILE or KVS_EMULATOR_TOKEN")
    end
    if not key or (key ~= "storage" and key ~= "token-file" and key ~= "port" and key ~= "rundir"
                    and key ~= "workers") then
      usage("unknown option " .. name)
    end
    if value == nil then usage("option " .. name .. " needs a value") end
    opts[key] = value
    i = i + 2
  end
  if command == "start" then
    if not opts.storage then usage("start needs --storage DIR") end
    if opts["token-file"] then
      local text = read_file(opts["token-file"])
      if not text then usage("cannot read the token file " .. opts["token-file"]) end
      opts.token = text:match("^([^\r\n]*)")
      opts["token-file"] = nil
    else
      opts.token = os.getenv("KVS_EMULATOR_TOKEN")
    end
    local auto_rundir = opts.rundir == nil
    opts.watch = false -- the command exits now; nginx keeps running until "stop"
    local ok, emu = pcall(M.start, opts)
    if not ok then io.stderr:write(tostring(emu), "\n") os.exit(1) end
    if auto_rundir then io.stderr:write("emulator run directory: ", emu.rundir, "\n") end
    io.stdout:write(emu.base_url, "\n")
  elseif command == "stop" then
    if not opts.rundir then usage("stop needs --rundir DIR") end
    local ok, err = pcall(M.stop_rundir, opts.rundir)
    if not ok then io.stderr:write(tostring(err), "\n") os.exit(1) end
  elseif command == "url" then
    if not opts.rundir then usage("url needs --rundir DIR") end
    local url = read_file(abspath(opts.rundir) .. "/base_url")
    if not url then io.stderr:write("launch.lua: no emulator in ", opts.rundir, "\n") os.exit(1) end
    io.stdout:write(url)
  else
    usage(command and ("unknown command " .. command) or nil)
  end
end

-- Run as a script (not required as a module): `...` are then the command-line arguments.
local first_arg = ...
if type(arg) == "table" and type(arg[0]) == "string" and arg[0]:match("launch%.lua$")
  and first_arg == arg[1] and not (first_arg or ""):match("launch$") then
  cli(arg)
  return M
end

return M
