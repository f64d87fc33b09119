-- The OpenResty/nginx driver (lua/apify/kvs/openresty.lua) and its example
-- (examples/openresty/): a second nginx, the "test host", runs the example handler against the
-- emulator. This process only starts processes and speaks HTTP over luasocket, so the spec runs
-- the same under every Lua of the suite; the test host always loads build/jit/apify/kvs.so.
local T = require "spec.support.env"
local socket = require "socket"
local cjson = require "cjson"

local TOKEN = "apify_api_openresty_SECRET_4f9c"
local NGINX = "/usr/sbin/nginx"
local SLOW = T.slow
local N = 4                -- concurrent listings in the non-blocking test

local ROOT = (T.read("pwd"):gsub("%s+$", ""))
local JIT_SO = ROOT .. "/build/jit/apify/kvs.so"
local SNIPPET = ROOT .. "/examples/openresty/apify_kvs.conf"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local read_file = T.read_file

local function write_file(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
end

local function free_port()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  server:close()
  return tonumber(port)
end

-- true while the process exists and is not a zombie
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() [ZX]")
end

---------------------------------------------------------------------------------------------------
-- HTTP over luasocket: many requests at once, one event loop (socket.select)

-- Parses a whole HTTP/1.1 reply read until the server closed the connection.
local function parse(raw)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no complete HTTP header in: " .. raw:sub(1, 200))
  local status = tonumber(head:match("^HTTP/%d%.%d (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
  if (headers["transfer-encoding"] or ""):lower() == "chunked" then
    local parts, pos = {}, 1
    while true do
      local size_hex, data_at = body:match("^(%x+)[^\r\n]*\r\n()", pos)
      assert(size_hex, "bad chunked body")
      local size = tonumber(size_hex, 16)
      if size == 0 then break end
      parts[#parts + 1] = body:sub(data_at, data_at + size - 1)
      assert(body:sub(data_at + size, data_at + size + 1) == "\r\n", "bad chunk end")
      pos = data_at + size + 2
    end
    body = table.concat(parts)
  end
  return status, headers, body
end

-- reqs: list of { path, port =, at = seconds after start, headers = "Name: v\r\n...",
-- on_body = function(req) called once when the first body bytes arrive }.
-- Fills in each req: status, headers, body, t_start, t_body (first body bytes), t_done, elapsed.
local function run(port, reqs)
  local t0 = socket.gettime()
  local pending, active, by_sock = {}, {}, {}
  for _, r in ipairs(reqs) do
    r.at = r.at or 0
    pending[#pending + 1] = r
  end
  table.sort(pending, function(a, b) return a.at < b.at end)

  local function start(r)
    local c = assert(socket.tcp())
    c:settimeout(5 * SLOW)
    assert(c:connect("127.0.0.1", r.port or port))
    r.t_start = socket.gettime() - t0
    assert(c:send("GET " .. r.path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      .. (r.headers or "") .. "\r\n"))
    c:settimeout(0)
    r.sock, r.raw, r.size = c, {}, 0
    active[c] = r
    by_sock[#by_sock + 1] = c
  end

  local function finish(r)
    r.t_done = socket.gettime() - t0
    r.elapsed = r.t_done - r.t_start
    r.sock:close()
    active[r.sock] = nil
    for i, s in ipairs(by_sock) do
      if s == r.sock then table.remove(by_sock, i) break end
    end
    r.sock = nil
    r.status, r.headers, r.body = parse(table.concat(r.raw))
    local raw = table.concat(r.raw)
    assert(not raw:find(TOKEN, 1, true), "the token appeared in a reply of the test host")
  end

  local deadline = t0 + 30 * SLOW
  while #pending > 0 or #by_sock > 0 do
    local now = socket.gettime()
    assert(now < deadline, "requests to the test host did not finish in time")
    while pending[1] and pending[1].at <= now - t0 do start(table.remove(pending, 1)) end
    local wait = pending[1] and math.max(0, pending[1].at - (socket.gettime() - t0)) or 1
    if #by_sock == 0 then
      socket.sleep(wait)
    else
      local readable = socket.select(by_sock, nil, wait)
      for _, s in ipairs(readable) do
        local r = active[s]
        local data, err, partial = s:receive(65536)
        local chunk = data or partial
        if chunk and #chunk > 0 then
          r.raw[#r.raw + 1] = chunk
          if not r.t_body then
            local all = table.concat(r.raw)
            local e = all:find("\r\n\r\n", 1, true)
            if e and #all > e + 3 then
              r.t_body = socket.gettime() - t0
              if r.on_body then r.on_body(r) end
            end
          end
        end
        if err == "closed" then
          finish(r)
        elseif err and err ~= "timeout" then
          error("reading from the test host: " .. err)
        end
      end
    end
  end
  return reqs
end

local function get(port, path, headers)
  return run(port, { { path = path, headers = headers } })[1]
end

-- The JSON lines of a reply: keys, sizes, urls, and the error object of an error line (if any).
local function lines_of(body)
  local keys, sizes, urls, err = {}, {}, {}, nil
  for line in body:gmatch("[^\n]+") do
    local obj = cjson.decode(line)
    if obj.error then
      assert(err == nil, "two error lines")
      err = obj.error
    else
      assert(err == nil, "a key after the error line")
      keys[#keys + 1] = obj.key
      sizes[#sizes + 1] = obj.size
      urls[#urls + 1] = obj.url
    end
  end
  return keys, sizes, urls, err
end


-- Compares key lists without printing thousands of keys on failure.
local function same_keys(expected, got)
  for i = 1, math.max(#expected, #got) do
    if expected[i] ~= got[i] then
      error(string.format("keys differ at #%d: expected %s, got %s (%d expected, %d got)", i,
        tostring(expected[i]), tostring(got[i]), #expected, #got), 2)
    end
  end
end

---------------------------------------------------------------------------------------------------
-- the test host

-- Handlers of the test host besides the example's: the generic-for iterator with a client of
-- its own (base = direct | upstream | dead), and, as the control of the non-blocking test, the
-- blocking libcurl iterator that must never be used in nginx.
local ITERATE = [[
            local kvs = require "apify.kvs"
            local ngx_kvs = require "apify.kvs.openresty"
            local cjson = require "cjson"
            local args = ngx.req.get_uri_args()
            local bases = { direct = os.getenv("APIFY_API_BASE_URL"),
                            upstream = "http://kvs_emulator", dead = "http://127.0.0.1:@DEAD_PORT@" }
            local location = ngx_kvs.location
            ngx_kvs.location = args.location or location
            local client = kvs.new{ base_url = bases[args.base or "direct"], min_delay = 0.01,
                                    max_retries = tonumber(args.retries or 3) }
            local n, first, last = 0, nil, nil
            local ok, err = pcall(function()
                for key, size, url in ngx_kvs.keys(client:store(args.store or "s"),
                        { prefix = args.prefix, page_size = tonumber(args.page_size) }) do
                    n = n + 1
                    first = first or key
                    last = key
                end
            end)
            ngx_kvs.location = location
            if not ok and type(err) ~= "table" then err = { type = "lua", message = tostring(err) } end
            ngx.print(cjson.encode({ ok = ok, n = n, first = first, last = last,
                err = not ok and { type = err.type, status = err.status, retries = err.retries,
                                   message = err.message } or nil }))
]]

local BLOCKING = [[
            local client = require("apify.kvs").new{ min_delay = 0.01, max_retries = 3 }
            local n = 0
            for _ in client:store("s"):keys{ page_size = 500 } do n = n + 1 end
            ngx.print(n)
]]

local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;

@USER@
daemon on;
master_process on;
worker_processes 1;
error_log "@RUNDIR@/error.log" info;
pid "@RUNDIR@/nginx.pid";
env APIFY_TOKEN;
env APIFY_API_BASE_URL;

events {
    worker_connections 256;
}

http {
    access_log "@RUNDIR@/access.log" combined;
    client_body_temp_path "@RUNDIR@/tmp/client_body";
    proxy_temp_path "@RUNDIR@/tmp/proxy";
    fastcgi_temp_path "@RUNDIR@/tmp/fastcgi";
    uwsgi_temp_path "@RUNDIR@/tmp/uwsgi";
    scgi_temp_path "@RUNDIR@/tmp/scgi";

    lua_package_path "@ROOT@/lua/?.lua;@ROOT@/examples/openresty/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "@ROOT@/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";

    init_by_lua_block {
        require("keys_handler").client_options = { min_delay = 0.01, max_retries = 3 }
    }
    # Stops this nginx once the spec's process is gone (a crashed run leaves nothing behind).
    init_worker_by_lua_block {
        ngx.timer.every(0.5, function(premature)
            if premature then return end
            local f = io.open("/proc/@OWNER_PID@/stat", "rb")
            local stat = f and f:read("*a") or ""
            if f then f:close() end
            if stat == "" or stat:match("^%d+ %b() [ZX]") then
                os.execute("kill -TERM " .. require("ngx.process").get_master_pid())
            end
        end)
    }

    upstream kvs_emulator {
        server 127.0.0.1:@EMU_PORT@;
        keepalive 4;
    }

    server {
        listen 127.0.0.1:@PORT@;

        location = /ping {
            return 200 "pong";
        }
        location = /lua-ping {
            content_by_lua_block {
                ngx.print(ngx.worker.pid())
            }
        }
        location ~ ^/stores/([^/]+)/keys$ {
            content_by_lua_block {
                require("keys_handler").handle(ngx.var[1])
            }
        }
        location ~ ^/paged/stores/([^/]+)/keys$ {
            content_by_lua_block {
                require("keys_handler").handle(ngx.var[1], { page_size = 500 })
            }
        }
        location = /iterate {
            content_by_lua_block {
@ITERATE@
            }
        }
        location = /blocking {
            content_by_lua_block {
@BLOCKING@
            }
        }

        include "@SNIPPET@";
    }

    # The same internal location with a short proxy_read_timeout, for the timeout path.
    server {
        listen 127.0.0.1:@SHORT_PORT@;

        location ~ ^/stores/([^/]+)/keys$ {
            content_by_lua_block {
                require("keys_handler").handle(ngx.var[1])
            }
        }

        location = /iterate {
            content_by_lua_block {
@ITERATE@
            }
        }

        include "@RUNDIR@/apify_kvs_short.conf";
    }
}
]]

local function render(template, vars)
  return (template:gsub("@([%u_]+)@", function(name)
    return assert(vars[name], "no value for @" .. name .. "@")
  end))
end

local Host = {}
Host.__index = Host

local function start_host(emu)
  assert(read_file(JIT_SO), JIT_SO .. " is missing: run `make build/jit/apify/kvs.so` first "
    .. "(nginx's Lua is LuaJIT, whatever Lua runs this spec)")
  local rundir = T.tmpdir()
  assert(T.sh("mkdir -p " .. sh_quote(rundir .. "/tmp")))
  local snippet = assert(read_file(SNIPPET))
  local short, count = snippet:gsub("proxy_read_timeout %d+s;", "proxy_read_timeout 500ms;")
  assert(count == 1, "apify_kvs.conf has no proxy_read_timeout to shorten")
  write_file(rundir .. "/apify_kvs_short.conf", short)
  local is_root = T.read("id -u"):match("^%s*0%s*$") ~= nil
  local owner_pid = tonumber(T.read("echo $PPID"):match("%d+"))
  local last_log
  for _ = 1, 5 do
    local vars = {
      RUNDIR = rundir, ROOT = ROOT, SNIPPET = SNIPPET, OWNER_PID = tostring(owner_pid),
      PORT = tostring(free_port()), SHORT_PORT = tostring(free_port()),
      DEAD_PORT = tostring(free_port()), EMU_PORT = tostring(emu.port),
      USER = is_root and "user root;" or "",
    }
    vars.ITERATE = render(ITERATE, vars)
    vars.BLOCKING = BLOCKING
    write_file(rundir .. "/nginx.conf", render(CONF, vars))
    os.remove(rundir .. "/error.log")
    -- env -u LD_PRELOAD: a sanitizer preloaded into this process must not reach nginx
    local ok = T.sh("env -u LD_PRELOAD APIFY_TOKEN=" .. sh_quote(TOKEN)
      .. " APIFY_API_BASE_URL=" .. sh_quote(emu.base_url) .. " " .. NGINX
      .. " -p " .. sh_quote(rundir .. "/") .. " -c " .. sh_quote(rundir .. "/nginx.conf")
      .. " -e " .. sh_quote(rundir .. "/error.log")
      .. " </dev/null >" .. sh_quote(rundir .. "/startup.log") .. " 2>&1")
    local host = setmetatable({ rundir = rundir, port = tonumber(vars.PORT),
      short_port = tonumber(vars.SHORT_PORT) }, Host)
    if ok then
      local deadline = socket.gettime() + 30 * SLOW   -- a loaded machine starts nginx slowly
      repeat
        local c = socket.tcp()
        c:settimeout(0.5)
        if c:connect("127.0.0.1", host.port) then
          c:close()
          local res = get(host.port, "/lua-ping")
          host.worker_pid = tonumber(res.body)
          host.master_pid = tonumber((read_file(rundir .. "/nginx.pid") or ""):match("%d+"))
          return host
        end
        c:close()
        socket.sleep(0.02)
      until socket.gettime() > deadline
    end
    last_log = (read_file(rundir .. "/error.log") or "") .. (read_file(rundir .. "/startup.log") or "")
    host:stop(true)
    if not last_log:find("Address already in use", 1, true) then break end
  end
  T.rmrf(rundir)
  error("the test nginx did not start:\n" .. tostring(last_log))
end

function Host:log(name)
  return read_file(self.rundir .. "/" .. name) or ""
end

-- Stops nginx (TERM, then KILL) and checks that neither master nor worker is left.
function Host:stop(keep_rundir)
  local pid = tonumber((read_file(self.rundir .. "/nginx.pid") or ""):match("%d+")) or self.master_pid
  for _, p in ipairs({ pid, self.worker_pid }) do
    if p and alive(p) then T.sh("kill -TERM " .. p .. " 2>/dev/null") end
  end
  local deadline = socket.gettime() + 5
  local function any_alive()
    return (pid and alive(pid)) or (self.worker_pid and alive(self.worker_pid))
  end
  while any_alive() and socket.gettime() < deadline do socket.sleep(0.02) end
  if any_alive() then
    for _, p in ipairs({ pid, self.worker_pid }) do
      if p then T.sh("kill -KILL " .. p .. " 2>/dev/null") end
    end
    socket.sleep(0.1)
  end
  local left = any_alive()
  if not keep_rundir then T.rmrf(self.rundir) end
  assert(not left, "the test nginx is still running")
end

---------------------------------------------------------------------------------------------------

describe("OpenResty driver (apify.kvs.openresty) in a real nginx", function()
  local emu, storage, host

  lazy_setup(function()
    storage = T.tmpdir()
    T.make_store(storage, "s", T.numbered(2500))
    emu = T.start_emulator({ storage = storage, token = TOKEN })
    host = start_host(emu)
  end)

  lazy_teardown(function()
    local ok, err = true, nil
    if host then ok, err = pcall(host.stop, host) end
    if emu then emu:stop() end
    T.rmrf(storage)
    assert(ok, err)
  end)

  -- A stalled request reaches the emulator's log only when its stall is over, after nginx gave
  -- up on it: wait for it, so that it does not land in the next test's request log.
  local function wait_requests(n)
    local deadline = socket.gettime() + 5 * SLOW
    local reqs = emu:requests()
    while #reqs < n and socket.gettime() < deadline do
      socket.sleep(0.05)
      reqs = emu:requests()
    end
    assert.are.equal(n, #reqs)
    return reqs
  end

  before_each(function()
    emu:clear_faults()
    emu:config({ delay = 0, token = TOKEN })
    emu:clear_requests()
  end)

  describe("the example endpoint GET /stores/<id>/keys", function()
    it("streams all 2500 keys in order as JSON lines, one subrequest per page", function()
      local res = get(host.port, "/stores/s/keys")
      assert.are.equal(200, res.status)
      assert.are.equal("application/x-ndjson", res.headers["content-type"])
      local keys, sizes, urls, err = lines_of(res.body)
      assert.is_nil(err)
      same_keys(T.numbered(2500), keys)
      for i = 1, #sizes do assert.are.equal(i % 7, sizes[i]) end
      assert.are.equal(emu.base_url .. "/v2/key-value-stores/s/records/k00001", urls[1])
      local reqs = emu:requests()
      assert.are.equal(3, #reqs)
      assert.is_nil(reqs[1].args.exclusiveStartKey)
      assert.are.equal("k01000", reqs[2].args.exclusiveStartKey)
      assert.are.equal("k02000", reqs[3].args.exclusiveStartKey)
    end)

    it("sends the module's headers upstream and none of the client's", function()
      local res = get(host.port, "/stores/s/keys?prefix=k0249",
        "Authorization: Basic Y2xpZW50OnNlY3JldA==\r\nAccept-Encoding: gzip\r\n"
        .. "Accept: text/html\r\nUser-Agent: some-browser\r\nCookie: session=1\r\n")
      assert.are.equal(200, res.status)
      assert.are.equal(10, #lines_of(res.body))
      local r = emu:requests()[1]
      assert.are.equal("Bearer " .. TOKEN, r.headers.authorization)
      assert.are.equal("application/json", r.headers.accept)
      assert.matches("^apify%.kvs/", r.headers["user-agent"])
      assert.is_nil(r.headers["accept-encoding"])
      assert.are.equal("127.0.0.1:" .. emu.port, r.headers.host)
    end)

    it("passes the prefix on", function()
      local res = get(host.port, "/stores/s/keys?prefix=k024")
      assert.are.equal(200, res.status)
      local keys = lines_of(res.body)
      assert.are.equal(100, #keys)
      assert.are.equal("k02400", keys[1])
      assert.are.equal("k02499", keys[100])
      assert.are.equal("k024", emu:requests()[1].args.prefix)
    end)

    it("answers 502 with an error line for a wrong token (401), nothing retried", function()
      emu:config({ token = "some-other-token" })
      local res = get(host.port, "/stores/s/keys")
      assert.are.equal(502, res.status)
      assert.are.equal("application/json", res.headers["content-type"])
      local keys, _, _, err = lines_of(res.body)
      assert.are.equal(0, #keys)
      assert.are.equal("invalid-token", err.type)
      assert.are.equal(401, err.status)
      assert.are.equal(0, err.retries)
      assert.are.equal(1, #emu:requests())
    end)

    it("answers 502 with an error line for a missing store (404)", function()
      local res = get(host.port, "/stores/nope/keys")
      assert.are.equal(502, res.status)
      local _, _, _, err = lines_of(res.body)
      assert.are.equal("record-not-found", err.type)
      assert.are.equal(404, err.status)
    end)

    it("retries 503 and a truncated reply, every key exactly once", function()
      emu:faults({ { kind = "status", status = 503 }, { kind = "truncate" } })
      local res = get(host.port, "/stores/s/keys")
      assert.are.equal(200, res.status)
      local keys, _, _, err = lines_of(res.body)
      assert.is_nil(err)
      same_keys(T.numbered(2500), keys)
      local faults = {}
      for _, r in ipairs(emu:requests()) do faults[#faults + 1] = r.fault or "-" end
      assert.are.same({ "status", "truncate", "-", "-", "-" }, faults)
      assert.matches("upstream prematurely closed connection", host:log("error.log"))
    end)

    it("retries faults on a later page without repeating keys already sent", function()
      emu:config({ delay = 0.1 })
      local res = run(host.port, { { path = "/paged/stores/s/keys", on_body = function()
        emu:faults({ { kind = "status", status = 503 }, { kind = "truncate" } })
      end } })[1]
      assert.are.equal(200, res.status)
      local keys, _, _, err = lines_of(res.body)
      assert.is_nil(err)
      same_keys(T.numbered(2500), keys)
      local hit = 0
      for _, r in ipairs(emu:requests()) do
        if r.fault then
          hit = hit + 1
          assert.is_string(r.args.exclusiveStartKey) -- not the first page
        end
      end
      assert.are.equal(2, hit)
    end)

    it("writes the error as the last line when a later page fails for good", function()
      emu:config({ delay = 0.1 })
      local res = run(host.port, { { path = "/paged/stores/s/keys", on_body = function()
        emu:faults({ { kind = "status", status = 500, times = 10 } })
      end } })[1]
      assert.are.equal(200, res.status)
      local keys, _, _, err = lines_of(res.body)
      assert.is_true(#keys >= 500 and #keys < 2500 and #keys % 500 == 0, "#keys " .. #keys)
      same_keys(T.numbered(#keys), keys)
      assert.are.equal("internal-server-error", err.type)
      assert.are.equal(500, err.status)
      assert.are.equal(3, err.retries)
    end)

    it("turns nginx's upstream timeout (504) into a retried timeout", function()
      emu:faults({ { kind = "stall", seconds = 0.8 } })
      local res = get(host.short_port, "/stores/s/keys")
      assert.are.equal(200, res.status)
      local keys, _, _, err = lines_of(res.body)
      assert.is_nil(err)
      same_keys(T.numbered(2500), keys)
      assert.matches("upstream timed out", host:log("error.log"))
      wait_requests(4)   -- the stalled one, its retry, pages 2 and 3
    end)
  end)

  describe("the iterator ngx_kvs.keys", function()
    local function iterate(query)
      local res = get(host.port, "/iterate?" .. query)
      assert.are.equal(200, res.status)
      return cjson.decode(res.body)
    end

    it("yields every key from inside a generic for, through ngx.location.capture", function()
      local r = iterate("page_size=300")
      assert.is_true(r.ok)
      assert.are.same({ 2500, "k00001", "k02500" }, { r.n, r.first, r.last })
      assert.are.equal(9, #emu:requests())
      r = iterate("prefix=k01")
      assert.are.same({ 1000, "k01000", "k01999" }, { r.n, r.first, r.last })
    end)

    it("raises the error table of an API error", function()
      local r = iterate("store=nope")
      assert.is_false(r.ok)
      assert.are.same({ type = "record-not-found", status = 404, retries = 0 },
        { type = r.err.type, status = r.err.status, retries = r.err.retries })
    end)

    it("turns an unreachable upstream (nginx's 502) into network errors, retried then raised", function()
      local r = iterate("base=dead&retries=2")
      assert.is_false(r.ok)
      assert.are.equal("network-error", r.err.type)
      assert.are.equal(2, r.err.retries)
      assert.matches("nginx got no reply from the upstream", r.err.message)
      assert.matches("connect%(%) failed", host:log("error.log"))
    end)

    it("gives up with a timeout error when every attempt times out (504 from nginx)", function()
      emu:faults({ { kind = "stall", seconds = 0.8, times = 2 } })
      local res = get(host.short_port, "/iterate?retries=1")
      local r = cjson.decode(res.body)
      assert.is_false(r.ok)
      assert.are.equal("timeout", r.err.type)
      assert.are.equal(1, r.err.retries)
      assert.matches("no reply within the proxy timeouts", r.err.message)
      wait_requests(2)
    end)

    it("does not follow redirects: a 3xx ends the listing", function()
      emu:faults({ { kind = "redirect", status = 307,
        location = emu.base_url .. "/v2/key-value-stores/s/keys" } })
      local r = iterate("")
      assert.is_false(r.ok)
      assert.are.equal("http-error", r.err.type)
      assert.are.equal(307, r.err.status)
      assert.are.equal(1, #emu:requests())
    end)

    it("says so when the internal location is missing", function()
      local r = iterate("location=/nowhere")
      assert.is_false(r.ok)
      assert.are.equal("http-error", r.err.type)
      assert.are.equal(404, r.err.status)
      assert.matches("is apify_kvs.conf included", r.err.message)
      assert.are.equal(0, #emu:requests())
    end)

    it("keeps upstream connections alive when base_url names an upstream{} block", function()
      local r = iterate("base=upstream&page_size=250")
      assert.is_true(r.ok)
      assert.are.equal(2500, r.n)
      local reqs = emu:requests()
      assert.are.equal(10, #reqs)
      assert.are.equal("kvs_emulator", reqs[1].headers.host)
      local conns = {}
      for _, q in ipairs(reqs) do conns[q.connection] = true end
      local n = 0
      for _ in pairs(conns) do n = n + 1 end
      assert.are.equal(1, n, "10 pages over " .. n .. " connections")
    end)
  end)

  describe("never blocks the worker", function()
    local function pings(from, to, step)
      local list = {}
      local t = from
      while t <= to do
        list[#list + 1] = { path = (#list % 2 == 0) and "/ping" or "/lua-ping", at = t, ping = true }
        t = t + step
      end
      return list
    end

    local function summarize(reqs)
      local listings, ping_max, ping_sum, n_ping, t_end = {}, 0, 0, 0, 0
      for _, r in ipairs(reqs) do
        if r.ping then
          assert.are.equal(200, r.status)
          ping_max = math.max(ping_max, r.elapsed)
          ping_sum = ping_sum + r.elapsed
          n_ping = n_ping + 1
        else
          listings[#listings + 1] = r
          t_end = math.max(t_end, r.t_done)
        end
      end
      return listings, t_end, ping_max, n_ping > 0 and ping_sum / n_ping or 0
    end

    it("runs " .. N .. " slow listings at once in about the time of one; pings answer in ms", function()
      emu:config({ delay = 0.3 })   -- each page takes 0.3 s; 2500 keys / 500 = 5 pages
      local one = run(host.port, { { path = "/paged/stores/s/keys" } })[1]
      assert.are.equal(200, one.status)
      same_keys(T.numbered(2500), (lines_of(one.body)))
      local t1 = one.elapsed
      assert.is_true(t1 >= 1.4, "one listing took " .. t1)
      -- streamed page by page: the first keys arrive long before the last page
      T.timed_claim(one.t_body - one.t_start < t1 / 2, "first keys after " .. one.t_body)

      local reqs = {}
      for i = 1, N do reqs[i] = { path = "/paged/stores/s/keys" } end
      for _, p in ipairs(pings(0.1, 1.3, 0.1)) do reqs[#reqs + 1] = p end
      run(host.port, reqs)
      local listings, tn, ping_max, ping_avg = summarize(reqs)
      for _, r in ipairs(listings) do
        assert.are.equal(200, r.status)
        same_keys(T.numbered(2500), (lines_of(r.body)))
      end
      for _, r in ipairs(reqs) do
        if r.ping then assert.is_true(r.t_start < tn, "a ping after the listings") end
      end
      io.stderr:write(string.format("\n[openresty] 1 listing (5 pages x 0.3 s): %.3f s; %d at once: "
        .. "%.3f s (%.2fx); %d pings meanwhile: max %.1f ms, mean %.1f ms\n",
        t1, N, tn, tn / t1, #reqs - N, ping_max * 1000, ping_avg * 1000))
      T.timed_claim(tn < 2 * t1, N .. " listings took " .. tn .. " s, one " .. t1 .. " s")
      T.timed_claim(ping_max < 0.1 * SLOW, "ping took " .. ping_max .. " s")
    end)

    it("(control) the blocking libcurl iterator would stall the same pings", function()
      emu:config({ delay = 0.3 })
      local reqs = { { path = "/blocking" } }
      for _, p in ipairs(pings(0.2, 0.6, 0.2)) do reqs[#reqs + 1] = p end
      run(host.port, reqs)
      local listings, _, ping_max = summarize(reqs)
      assert.are.equal("2500", listings[1].body)
      io.stderr:write(string.format("[openresty] control, store:keys{} (libcurl) in the worker: "
        .. "%.3f s; pings meanwhile: max %.1f ms\n", listings[1].elapsed, ping_max * 1000))
      assert.is_true(ping_max > 0.5, "ping took " .. ping_max .. " s")
    end)
  end)

  describe("configuration and secrets", function()
    it("never writes the token into the test host's logs", function()
      local logs = host:log("error.log") .. host:log("access.log")
      assert.is_true(#logs > 0)
      assert.is_nil(logs:find(TOKEN, 1, true))
      assert.is_nil(logs:find("Bearer", 1, true))
    end)

    it("keeps the internal location internal", function()
      local res = get(host.port, "/_apify_kvs")
      assert.are.equal(404, res.status)
      res = get(host.port, "/_apify_kvs?x=http://127.0.0.1:" .. emu.port .. "/v2/key-value-stores/s/keys")
      assert.are.equal(404, res.status)
      assert.are.equal(0, #emu:requests())
    end)

    it("the example nginx.conf passes nginx -t", function()
      -- run from a scratch prefix that links the checkout's lua/, build/jit/ and examples/
      local prefix = T.tmpdir()
      assert(T.sh("mkdir -p " .. sh_quote(prefix .. "/build/openresty-example")
        .. " && ln -s " .. sh_quote(ROOT .. "/build/jit") .. " " .. sh_quote(prefix .. "/build/jit")
        .. " && ln -s " .. sh_quote(ROOT .. "/lua") .. " " .. sh_quote(prefix .. "/lua")
        .. " && ln -s " .. sh_quote(ROOT .. "/examples") .. " " .. sh_quote(prefix .. "/examples")))
      local out = T.read("env -u LD_PRELOAD " .. NGINX .. " -t -p " .. sh_quote(prefix .. "/")
        .. " -c examples/openresty/nginx.conf -e " .. sh_quote(prefix .. "/build/openresty-example/error.log")
        .. " 2>&1; echo \"exit=$?\"")
      T.rmrf(prefix)
      assert.matches("test is successful", out)
      assert.matches("exit=0", out)
    end)
  end)
end)
