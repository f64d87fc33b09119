-- The OpenResty driver (lua/apify/kvs/openresty.lua, nginx cosockets over the core's raw
-- HTTP/1.1) and its examples (examples/openresty/), in Debian's nginx + lua-nginx-module:
--   the test host   spec/openresty/host.conf: listings in each phase that can do I/O
--                   (spec/support/openresty_host.lua), visitors over HTTP/1.1 and HTTP/2 with
--                   TLS, the emulator behind a TLS front with a private CA, names resolved by
--                   spec/support/dns_stub.lua; the example handler
--   a bare host     spec/openresty/bare.conf: no resolver, no lua_ssl_trusted_certificate
--   the example     examples/openresty/nginx.conf as shipped (two workers), its port and user
--                   set
-- This process only starts processes and speaks HTTP (luasocket; curl for HTTP/2), so the spec
-- runs the same under every Lua of the suite; nginx always loads build/jit/apify/kvs.so.
local T = require "spec.support.env"
local http = require "spec.support.http"
local socket = require "socket"
local cjson = require "cjson"

local TOKEN = "apify_api_openresty_SECRET_4f9c"
local SLOW = T.slow
local ROOT = (T.read("pwd"):gsub("%s+$", ""))
local JIT_SO = ROOT .. "/build/jit/apify/kvs.so"
local CONF_DIR = ROOT .. "/spec/openresty"
local sh, sh_quote, read_file, write_file = T.sh, T.sh_quote, T.read_file, T.write_file
local OWNER_PID = T.read("echo $PPID"):match("%d+")

local function run(port, reqs)
  return http.run(port, reqs, { forbid = TOKEN })
end

local function get(port, path)
  return run(port, { { path = path } })[1]
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

local connections = T.connections

-- The JSON lines of a reply of the example handler: keys, and its error line (if any).
local function lines_of(body)
  local keys, err = {}, nil
  for line in body:gmatch("[^\n]+") do
    local obj = cjson.decode(line)
    assert(err == nil, "a line after the error line")
    if obj.error then err = obj.error else keys[#keys + 1] = obj.key end
  end
  return keys, err
end

---------------------------------------------------------------------------------------------------
-- the nginx instances

local function render(text, vars)
  return (text:gsub("@([%u_%d]+)@", function(name)
    return assert(vars[name], "no value for @" .. name .. "@")
  end))
end

-- A private CA and a certificate for kvs.test it signed, in dir (read by nginx's master).
local function make_certs(dir)
  local q = function(name) return sh_quote(dir .. "/" .. name) end
  write_file(dir .. "/leaf.ext", "subjectAltName=DNS:kvs.test\n")
  assert(sh("cd " .. sh_quote(dir) .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
    .. " -nodes -days 2 -subj /CN=apify-kvs-spec-ca -keyout ca.key -out " .. q("ca.pem")
    .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign >/dev/null 2>&1"
    .. " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=kvs.test"
    .. " -keyout kvs.test.key -out kvs.test.csr >/dev/null 2>&1"
    .. " && openssl x509 -req -in kvs.test.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
    .. " -extfile leaf.ext -out kvs.test.pem >/dev/null 2>&1"), "openssl could not make the certificates")
end

-- The DNS stub: kvs.test and alias.test are 127.0.0.1; stops once this process is gone.
local function start_dns(dir)
  local port_file = dir .. "/dns.port"
  assert(sh("lua5.4 " .. sh_quote(ROOT .. "/spec/support/dns_stub.lua") .. " " .. sh_quote(port_file)
    .. " " .. OWNER_PID .. " kvs.test alias.test </dev/null >" .. sh_quote(dir .. "/dns.log")
    .. " 2>&1 & echo $! >" .. sh_quote(dir .. "/dns.pid")))
  local deadline = socket.gettime() + 10 * SLOW
  while not read_file(port_file) do
    assert(socket.gettime() < deadline, "the DNS stub did not start: " .. (read_file(dir .. "/dns.log") or ""))
    socket.sleep(0.02)
  end
  return tonumber(read_file(port_file):match("%d+")), tonumber(read_file(dir .. "/dns.pid"):match("%d+"))
end

local Host = {}
Host.__index = Host

-- Starts nginx on the template `conf` of spec/openresty/ (with main.conf and http.conf beside
-- it in the run directory), `names` the placeholders of its free ports.
local function start_host(conf, names, vars, rundir)
  rundir = rundir or T.tmpdir()
  assert(sh("mkdir -p " .. sh_quote(rundir .. "/tmp")))
  vars.RUNDIR, vars.ROOT, vars.USER = rundir, ROOT, T.launch.user_directive()
  local ok, proc = pcall(T.launch.start_nginx, {
    name = conf, rundir = rundir, nports = #names, timeout = 30 * SLOW,
    env = { APIFY_TOKEN = TOKEN },
    render = function(ports)
      for i, name in ipairs(names) do vars[name] = tostring(ports[i]) end
      for _, part in ipairs({ "main.conf", "http.conf" }) do
        write_file(rundir .. "/" .. part, render(assert(read_file(CONF_DIR .. "/" .. part)), vars))
      end
      return render(assert(read_file(CONF_DIR .. "/" .. conf)), vars)
    end,
  })
  if not ok then T.rmrf(rundir) error(proc) end
  T.launch.watch(rundir, OWNER_PID, proc.pid)   -- stops it once this process is gone
  local host = setmetatable({ rundir = rundir, master_pid = proc.pid }, Host)
  for i, name in ipairs(names) do host[name:lower()] = proc.ports[i] end
  host.worker_pid = tonumber(get(proc.ports[1], "/lua-ping").body)
  return host
end

function Host:log(name)
  return read_file(self.rundir .. "/" .. name) or ""
end

-- Stops nginx (TERM, then KILL) and checks that neither master nor worker is left.
function Host:stop()
  local gone = T.launch.stop_nginx(self.rundir, { self.master_pid, self.worker_pid })
  if not os.getenv("KVS_KEEP_HOST") then T.rmrf(self.rundir) end
  assert(gone, "an nginx of the spec is still running")
end

-- One request over HTTP/2 with TLS, by curl: status, body, the HTTP version curl saw.
local function get_h2(port, path)
  local out = T.read("curl -sk --http2 --max-time " .. (60 * SLOW) .. " -w '\\n%{http_code} %{http_version}' "
    .. sh_quote("https://127.0.0.1:" .. port .. path))
  local body, status, version = out:match("^(.*)\n(%d+) (%S+)$")
  return { status = tonumber(status), body = body, version = version }
end

-- The example's nginx.conf as shipped, from a scratch prefix linking the checkout's lua/,
-- build/jit/ and examples/; only its port, its run files' places, (as root) its user and its
-- retries' pace differ, and it runs two workers, each connection going to either (reuseport).
local function start_example(emu)
  local prefix = T.tmpdir()
  assert(sh("mkdir -p " .. sh_quote(prefix .. "/build")
    .. " && ln -s " .. sh_quote(ROOT .. "/build/jit") .. " " .. sh_quote(prefix .. "/build/jit")
    .. " && ln -s " .. sh_quote(ROOT .. "/lua") .. " " .. sh_quote(prefix .. "/lua")
    .. " && ln -s " .. sh_quote(ROOT .. "/examples") .. " " .. sh_quote(prefix .. "/examples")))
  local ok, proc = pcall(T.launch.start_nginx, {
    name = "the example", rundir = prefix, timeout = 30 * SLOW,
    env = { APIFY_TOKEN = TOKEN, APIFY_API_BASE_URL = emu.base_url },
    render = function(ports)
      local conf = assert(read_file(ROOT .. "/examples/openresty/nginx.conf"))
      local edits = {
        { "build/openresty%-example/", "", 8 },
        { "listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:" .. ports[1] .. " reuseport;", 1 },
        { "worker_processes auto;", "worker_processes 2;\n" .. T.launch.user_directive(), 1 },
        { '(require%("keys_handler"%)%.stores = [^\n]*)', "%1\n        require(\"keys_handler\")"
          .. ".client_options = { min_delay = 0.01, max_retries = 3 }   -- quick retries", 1 },
      }
      for _, e in ipairs(edits) do
        local n
        conf, n = conf:gsub(e[1], e[2])
        assert(n == e[3], "examples/openresty/nginx.conf: " .. e[1] .. " found " .. n .. " times")
      end
      return conf
    end,
  })
  if not ok then T.rmrf(prefix) error(proc) end
  T.launch.watch(prefix, OWNER_PID, proc.pid)
  return setmetatable({ rundir = prefix, master_pid = proc.pid, port = proc.ports[1] }, Host)
end

---------------------------------------------------------------------------------------------------

describe("apify.kvs.openresty on cosockets in a real nginx", function()
  local emu, storage, host, dns_pid

  lazy_setup(function()
    assert(read_file(JIT_SO), JIT_SO .. " is missing: run `make build/jit/apify/kvs.so` first "
      .. "(nginx's Lua is LuaJIT, whatever Lua runs this spec)")
    storage = T.tmpdir()
    T.make_store(storage, "s", T.numbered(2500))
    T.make_store(storage, "other", { "secret-1", "secret-2" })   -- readable, not on the allowlist
    emu = T.start_emulator({ storage = storage, token = TOKEN })
    local rundir = T.tmpdir()
    make_certs(rundir)
    local dns_port
    dns_port, dns_pid = start_dns(rundir)
    host = start_host("host.conf", { "PORT", "H2_PORT", "TLS_PORT", "DEAD_PORT" },
      { EMU_PORT = tostring(emu.port), DNS_PORT = tostring(dns_port) }, rundir)
  end)

  lazy_teardown(function()
    local ok, err = true, nil
    if host then ok, err = pcall(host.stop, host) end
    if dns_pid then sh("kill " .. dns_pid .. " 2>/dev/null") end
    if emu then emu:stop() end
    T.rmrf(storage)
    assert(ok, err)
  end)

  before_each(function()
    emu:clear_faults()
    -- no rate-limit bucket: the tests count requests, dozens of listings in a row
    emu:config({ delay = 0, token = TOKEN, enforce = false })
    emu:clear_requests()
  end)

  -- Waits until the requests an earlier listing left running have come back (the log stops
  -- growing), then forgets them: a test that counts requests or places faults needs that.
  local function quiet()
    local seen, deadline = -1, socket.gettime() + 10 * SLOW
    while #emu:requests() ~= seen and socket.gettime() < deadline do
      seen = #emu:requests()
      socket.sleep(0.3)
    end
    emu:clear_requests()
  end

  -- A listing by the test host: mechanism rewrite, access, content or timer (the timer started
  -- from init_worker), over HTTP/1.1 or HTTP/2 with TLS; query: its arguments.
  local function list(mechanism, query, h2)
    local path = "/list/" .. mechanism .. "?" .. (query or "")
    local res = h2 and get_h2(host.h2_port, path) or get(host.port, path)
    assert.are.equal(200, res.status, res.body)
    local r = cjson.decode(res.body)
    r.version = res.version
    return r
  end

  describe("every phase that can do I/O, visitors over HTTP/1.1 and HTTP/2", function()
    for _, mechanism in ipairs({ "rewrite", "access", "content", "timer" }) do
      for _, h2 in ipairs({ false, true }) do
        for _, parallel in ipairs({ 1, 4 }) do
          local name = string.format("%s, %s, %s: every key once, in order, with both APIs",
            mechanism, h2 and "HTTP/2 over TLS" or "HTTP/1.1", parallel > 1 and "parallel = 4" or "one range")
          it(name, function()
            local r = list(mechanism, "page_size=250&parallel=" .. parallel, h2)
            assert.is_true(r.ok, r.err and r.err.message)
            assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
            assert.are.equal(mechanism, r.phase)
            assert.are.equal(h2 and 2 or 1.1, r.http_version)
            local reqs = emu:requests()
            if parallel == 1 then
              assert.are.equal(10, #reqs)
              assert.are.equal(1, connections(reqs), "10 pages, one kept-alive connection")
            else
              assert.is_true(#reqs >= 10, #reqs .. " requests")
              assert.is_true(connections(reqs) <= 5, connections(reqs) .. " connections")
            end
            for _, q in ipairs(reqs) do
              assert.are.equal("token", q.auth)
              assert.are.equal("gzip", q.headers["accept-encoding"])
              -- (the emulator compresses bodies of 256 bytes and more)
              if parallel == 1 then assert.are.equal("gzip", q.content_encoding) end
            end
            emu:clear_requests()
            r = list(mechanism, "page_size=200&pages=1&prefix=k01&parallel=" .. parallel, h2)
            assert.is_true(r.ok, r.err and r.err.message)
            assert.are.same({ 1000, "k01000", "k01999", true }, { r.n, r.first, r.last, r.ordered })
            assert.is_true(r.pages >= 5)
          end)
        end
      end
    end
  end)

  describe("failures, in a request and in a timer", function()
    for _, mechanism in ipairs({ "content", "timer" }) do
      it(mechanism .. ": the API's 404 and 401 end the listing at once", function()
        local r = list(mechanism, "store=nope&pages=1")
        assert.is_false(r.ok)
        assert.are.same({ "record-not-found", 404, 0, true },
          { r.err.type, r.err.status, r.err.retries, r.err.is_error })
        r = list(mechanism, "store=nope&parallel=4")
        assert.are.same({ "record-not-found", 404, true }, { r.err.type, r.err.status, r.err.is_error })
        emu:config({ token = "some-other-token" })
        r = list(mechanism, "")
        assert.are.same({ "invalid-token", 401, 0 }, { r.err.type, r.err.status, r.err.retries })
        assert.matches("^apify%.kvs: .*%(invalid%-token, HTTP 401%)$", r.err.tostring)
      end)

      it(mechanism .. ": waits out a 429's Retry-After, retries 5xx and cut replies", function()
        emu:faults({ { kind = "status", status = 429, headers = { ["Retry-After"] = "1" } },
                     { kind = "status", status = 503 }, { kind = "truncate" }, { kind = "status", status = 500 } })
        local t0 = socket.gettime()
        local r = list(mechanism, "page_size=1000&retries=4")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.same({ 2500, true }, { r.n, r.ordered })
        assert.is_true(socket.gettime() - t0 >= 1, "the Retry-After was not waited out")
        local faults = {}
        for _, q in ipairs(emu:requests()) do faults[#faults + 1] = q.fault or "-" end
        assert.are.same({ "status", "status", "truncate", "status", "-", "-", "-" }, faults)
        r = list(mechanism, "page_size=250&parallel=4", false)
        assert.is_true(r.ok, r.err and r.err.message)
      end)

      it(mechanism .. ": a refused connection is a network error, retried, then raised", function()
        local r = list(mechanism, "base=dead&retries=2")
        assert.is_false(r.ok)
        assert.are.same({ "network-error", 2 }, { r.err.type, r.err.retries })
        assert.matches("127%.0%.0%.1:" .. host.dead_port, r.err.message)
        assert.matches("refused", r.err.message)
      end)

      it(mechanism .. ": a page slower than timeout is retried, and fails as timeout at last", function()
        emu:faults({ { kind = "stall", seconds = 1.5 } })
        local r = list(mechanism, "timeout=0.5&page_size=1000")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.equal(2500, r.n)
        emu:faults({ { kind = "stall", seconds = 1.5, times = 2 } })
        r = list(mechanism, "timeout=0.5&retries=1&pages=1")
        assert.is_false(r.ok)
        assert.are.same({ "timeout", 1 }, { r.err.type, r.err.retries })
        assert.matches("within 0%.5 s", r.err.message)
        -- a stalled request reaches the emulator's log when its stall is over: not in the next
        -- test's. Three stall faults were posted; wait for the three stalled requests' entries.
        local function stalled()
          local n = 0
          for _, q in ipairs(emu:requests()) do if q.fault == "stall" then n = n + 1 end end
          return n
        end
        local deadline = socket.gettime() + 10 * SLOW
        while stalled() < 3 and socket.gettime() < deadline do socket.sleep(0.05) end
        quiet()
      end)
    end

    it("an uncaught failure logs its whole message, in a request and in a timer", function()
      local MESSAGE = "apify%.kvs: Key%-value store was not found[^\n]*%(record%-not%-found, HTTP 404%)"
      for _, where in ipairs({ "request", "timer" }) do
        local before = #host:log("error.log")
        local res = get(host.port, "/uncaught?where=" .. where)
        assert.are.equal(where == "timer" and 200 or 500, res.status)
        local deadline, log = socket.gettime() + 10 * SLOW, ""
        repeat
          socket.sleep(0.02)
          log = host:log("error.log"):sub(before + 1)
        until log:find("entry thread aborted", 1, true) or socket.gettime() > deadline
        -- the message before nginx's own line, which cannot read an error table
        assert.matches("%[error%][^\n]*" .. MESSAGE .. "[^\n]*\n[^\n]*lua entry thread aborted", log)
      end
    end)

    it("in a phase without I/O: an unsupported-phase error naming the phase and the way out", function()
      assert.are.equal(200, get(host.port, "/phases").status)
      local deadline, r = socket.gettime() + 5 * SLOW, nil
      repeat      -- log_by_lua runs after the reply went out
        r = cjson.decode(get(host.port, "/phase-errors").body)
        if r.log then break end
        socket.sleep(0.02)
      until socket.gettime() > deadline
      for _, phase in ipairs({ "init", "init_worker", "set", "header_filter", "body_filter", "log" }) do
        local e = r[phase]
        assert.is_table(e, phase)
        assert.are.same({ "unsupported-phase", "unsupported-phase", 0, true },
          { e.type, e.open, e.retries, e.is_error }, phase)
        assert.matches("apify%.kvs%.openresty%.keys cannot do I/O in nginx's " .. phase .. " phase",
          e.message)
        assert.matches("ngx.timer.at(0, function(premature)", e.message, 1, true)
      end
    end)
  end)

  describe("TLS and names: a private CA through lua_ssl_trusted_certificate", function()
    for _, mechanism in ipairs({ "content", "timer" }) do
      it(mechanism .. ": lists over https from kvs.test, resolved by nginx", function()
        local r = list(mechanism, "base=tls&page_size=500")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.same({ 2500, true }, { r.n, r.ordered })
        r = list(mechanism, "base=tls&page_size=500&parallel=4")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.equal(2500, r.n)
      end)

      it(mechanism .. ": a certificate for another name fails at once as tls-error", function()
        local r = list(mechanism, "base=tls_alias&retries=3")
        assert.is_false(r.ok)
        assert.are.same({ "tls-error", 0 }, { r.err.type, r.err.retries })
        assert.matches("https://alias%.test:" .. host.tls_port, r.err.message)
        assert.matches("lua_ssl_trusted_certificate", r.err.message)
        r = list(mechanism, "base=tls_ip&retries=3")
        assert.are.same({ "tls-error", 0 }, { r.err.type, r.err.retries })
        assert.matches("not IP addresses", r.err.message)
        assert.are.equal(0, #emu:requests())
      end)
    end

    it("a name the resolver does not know is a network error, retried", function()
      local r = list("content", "base=nxdomain&retries=1")
      assert.are.same({ "network-error", 1 }, { r.err.type, r.err.retries })
      assert.matches("nowhere%.test", r.err.message)
    end)

    it("without resolver or lua_ssl_trusted_certificate the first call names the directive", function()
      local bare = start_host("bare.conf", { "PORT" }, { TLS_PORT = tostring(host.tls_port) })
      local ok, err = pcall(function()
        local r = cjson.decode(get(bare.port, "/list/content?base=tls&retries=3").body)
        assert.are.same({ "request-error", 0 }, { r.err.type, r.err.retries }, r.err.message)
        assert.matches("no resolver for kvs%.test: add `resolver", r.err.message)
        r = cjson.decode(get(bare.port, "/list/content?base=tls_ip&retries=3").body)
        assert.are.same({ "tls-error", 0 }, { r.err.type, r.err.retries }, r.err.message)
        assert.matches("lua_ssl_trusted_certificate", r.err.message)
      end)
      bare:stop()
      assert(ok, err)
    end)
  end)

  describe("never blocks the worker", function()
    local function pings(from, to, step)
      local list_ = {}
      for t = from, to, step do
        list_[#list_ + 1] = { path = (#list_ % 2 == 0) and "/ping" or "/lua-ping", at = t, ping = true }
      end
      return list_
    end

    -- Listings of 5 pages x 0.3 s side by side with pings: the pings answered while the listings
    -- went on (a blocked worker would answer them all at the end) and how fast.
    for _, mechanism in ipairs({ "content", "timer" }) do
      it(mechanism .. ": listings waiting on slow pages while the worker answers pings", function()
        emu:config({ delay = 0.3 })
        local reqs = {}
        for i = 1, 3 do
          reqs[i] = { path = "/list/" .. mechanism .. "?page_size=500" .. (i == 3 and "&parallel=4" or "") }
        end
        for _, p in ipairs(pings(0.15, 1.2, 0.1)) do reqs[#reqs + 1] = p end
        run(host.port, reqs)
        local t_end, during, n_pings, ping_max = 0, 0, 0, 0
        for i = 1, 3 do
          local r = cjson.decode(reqs[i].body)
          assert.is_true(r.ok, r.err and r.err.message)
          assert.are.equal(2500, r.n)
          t_end = math.max(t_end, reqs[i].t_done)
        end
        for _, r in ipairs(reqs) do
          if r.ping then
            assert.are.equal(200, r.status)
            n_pings = n_pings + 1
            ping_max = math.max(ping_max, r.elapsed)
            if r.t_done < t_end then during = during + 1 end
          end
        end
        assert.is_true(during * 2 >= n_pings, during .. " of " .. n_pings .. " pings answered during the listings")
        io.stderr:write(string.format("\n[openresty] %s: 3 listings (5 pages x 0.3 s) in %.2f s; "
          .. "%d pings meanwhile, max %.1f ms\n", mechanism, t_end, during, ping_max * 1000))
        T.timed_claim(ping_max < 0.05, "a ping took " .. ping_max .. " s")
      end)
    end

    it("(control) the blocking libcurl iterator stalls the same pings", function()
      emu:config({ delay = 0.3 })
      local reqs = { { path = "/blocking" } }
      for _, p in ipairs(pings(0.2, 0.6, 0.2)) do reqs[#reqs + 1] = p end
      run(host.port, reqs)
      assert.are.equal("2500", reqs[1].body, host:log("error.log"):sub(-1500))
      local ping_max = 0
      for i = 2, #reqs do ping_max = math.max(ping_max, reqs[i].elapsed) end
      assert.is_true(ping_max > 0.5, "ping took " .. ping_max .. " s")
    end)

    for _, mechanism in ipairs({ "content", "timer" }) do
      it(mechanism .. ": sleeps while its pages take 1 s each (worker CPU)", function()
        emu:config({ delay = 1 })
        local cpu0 = tonumber(get(host.port, "/cpu").body)
        local t0 = socket.gettime()
        local r = list(mechanism, "page_size=1000&prefix=k01&parallel=" .. (mechanism == "timer" and 4 or 1))
        local wall = socket.gettime() - t0
        local cpu = tonumber(get(host.port, "/cpu").body) - cpu0
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.equal(1000, r.n)
        io.stderr:write(string.format("[openresty] %s: a listing waiting %.2f s on its pages: worker "
          .. "CPU %.1f ms (%.2f%% of one core)\n", mechanism, wall, cpu * 1000, 100 * cpu / wall))
        T.timed_claim(cpu / wall < 0.01, "CPU " .. cpu .. " s in " .. wall .. " s")
      end)
    end
  end)

  describe("the example (examples/openresty/nginx.conf, two workers)", function()
    local example

    lazy_setup(function()
      T.make_store(storage, "demo", T.numbered(2500, "img-"))
      example = start_example(emu)
      local deadline = socket.gettime() + 20 * SLOW
      while get(example.port, "/has?key=img-00007").status ~= 200 do    -- the start-up listing
        assert(socket.gettime() < deadline, "the start-up listing did not fill the dict")
        socket.sleep(0.05)
      end
    end)

    lazy_teardown(function()
      if example then example:stop() end
    end)

    it("streams every key of an allowed store as JSON lines, its ranges side by side", function()
      local res = get(example.port, "/stores/demo/keys")
      assert.are.equal(200, res.status)
      assert.are.equal("application/x-ndjson", res.headers["content-type"])
      local keys, err = lines_of(res.body)
      assert.is_nil(err)
      same_keys(T.numbered(2500, "img-"), keys)
      local first = cjson.decode(res.body:match("^[^\n]+"))
      assert.are.equal(emu.base_url .. "/v2/key-value-stores/demo/records/img-00001", first.url)
      assert.is_true(#emu:requests() >= 3)
      quiet()
      keys = lines_of(get(example.port, "/stores/demo/keys?prefix=img-024").body)
      assert.are.equal(100, #keys)
      assert.are.same({ "img-02400", "img-02499" }, { keys[1], keys[100] })
      assert.are.equal("img-024", emu:requests()[1].args.prefix)
    end)

    it("serves only the stores of its allowlist: 404 for any other, and no request for it", function()
      for _, path in ipairs({ "/stores/other/keys", "/stores/other/keys?prefix=secret",
                              "/stores/DEMO/keys", "/stores/%6Fther/keys" }) do
        local res = get(example.port, path)
        assert.are.equal(404, res.status, path)
        assert.are.equal("application/json", res.headers["content-type"])
        local keys, err = lines_of(res.body)
        assert.are.equal(0, #keys)
        assert.are.equal("store-not-served", err.type)
        assert.is_nil(res.body:find("secret", 1, true))
      end
      assert.are.equal(0, #emu:requests())
      -- and the list is all that kept "other" out: the server's token reads it
      local page = assert(T.client(emu, { token = TOKEN }):store("other"):list_keys())
      assert.are.equal(2, #page.items)
    end)

    it("answers 502 with an error line when the first page fails, nothing retried on a 401", function()
      quiet()
      emu:config({ token = "some-other-token" })
      local res = get(example.port, "/stores/demo/keys")
      assert.are.equal(502, res.status)
      local keys, err = lines_of(res.body)
      assert.are.equal(0, #keys)
      assert.are.same({ "invalid-token", 401, 0 }, { err.type, err.status, err.retries })
      assert.are.equal(1, #emu:requests())
    end)

    it("retries faults on later pages without repeating keys already sent", function()
      emu:config({ delay = 0.1 })
      local res = run(example.port, { { path = "/stores/demo/keys", on_body = function()
        emu:faults({ { kind = "status", status = 503 }, { kind = "truncate" } })
      end } })[1]
      assert.are.equal(200, res.status)
      local keys, err = lines_of(res.body)
      assert.is_nil(err)
      same_keys(T.numbered(2500, "img-"), keys)
      local hit = 0
      for _, q in ipairs(emu:requests()) do if q.fault then hit = hit + 1 end end
      assert.are.equal(2, hit)
    end)

    it("writes the error as the last line when a later page fails for good", function()
      emu:config({ delay = 0.1 })
      -- the first page gets through, every request after it fails (the planner asks for the
      -- other pages side by side as soon as the first one is in); none taken by a request an
      -- earlier listing left running
      quiet()
      emu:faults({ { kind = "stall", seconds = 0, only_nonempty = true },
                   { kind = "status", status = 500, times = 40 } })
      local res = run(example.port, { { path = "/stores/demo/keys" } })[1]
      assert.are.equal(200, res.status)
      local keys, err = lines_of(res.body)
      assert.is_true(#keys >= 1000 and #keys < 2500, "#keys " .. #keys)
      same_keys(T.numbered(#keys, "img-"), keys)
      assert.are.same({ "internal-server-error", 500, 3 }, { err.type, err.status, err.retries })
    end)

    it("keeps the keys in a shared dict, and any worker can ask for a listing now", function()
      assert.are.equal("0\n", get(example.port, "/has?key=img-00007").body)
      assert.are.equal(404, get(example.port, "/has?key=img-new").status)
      T.make_store(storage, "demo", { ["img-new"] = "12345" })
      -- ask from worker 1 (each connection lands on either worker: reuseport)
      local asked = {}
      for _ = 1, 64 do
        local answer = cjson.decode(get(example.port, "/refresh").body)
        assert.is_true(answer.wanted)
        asked[answer.worker] = true
        if asked[1] then break end
      end
      assert.is_true(asked[1], "no /refresh reached worker 1")
      local deadline = socket.gettime() + 20 * SLOW
      while get(example.port, "/has?key=img-new").status ~= 200 do
        assert.is_true(socket.gettime() < deadline, "the listing asked for did not run")
        socket.sleep(0.05)
      end
      assert.are.equal("5\n", get(example.port, "/has?key=img-new").body)
    end)
  end)

  describe("configuration and secrets", function()
    it("never writes the token into the test host's logs", function()
      local logs = host:log("error.log") .. host:log("access.log")
      assert.is_true(#logs > 0)
      assert.is_nil(logs:find(TOKEN, 1, true))
      assert.is_nil(logs:find("Bearer", 1, true))
    end)

    it("the example nginx.conf passes nginx -t", function()
      -- run from a scratch prefix that links the checkout's lua/, build/jit/ and examples/
      local prefix = T.tmpdir()
      assert(sh("mkdir -p " .. sh_quote(prefix .. "/build/openresty-example")
        .. " && ln -s " .. sh_quote(ROOT .. "/build/jit") .. " " .. sh_quote(prefix .. "/build/jit")
        .. " && ln -s " .. sh_quote(ROOT .. "/lua") .. " " .. sh_quote(prefix .. "/lua")
        .. " && ln -s " .. sh_quote(ROOT .. "/examples") .. " " .. sh_quote(prefix .. "/examples")))
      local out = T.read("env -u LD_PRELOAD " .. T.launch.NGINX .. " -t -p " .. sh_quote(prefix .. "/")
        .. " -c examples/openresty/nginx.conf -e " .. sh_quote(prefix .. "/build/openresty-example/error.log")
        .. " 2>&1; echo \"exit=$?\"")
      T.rmrf(prefix)
      assert.matches("test is successful", out)
      assert.matches("exit=0", out)
    end)
  end)
end)
