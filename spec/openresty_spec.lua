-- The OpenResty/nginx driver (lua/apify/kvs/openresty.lua) and its examples
-- (examples/openresty/): a second nginx, the "test host", runs the example handler, the
-- background refresher and spec/support/openresty_host.lua against the emulator. This process
-- only starts processes and speaks HTTP over luasocket, so the spec runs the same under every
-- Lua of the suite; the test host always loads build/jit/apify/kvs.so.
local T = require "spec.support.env"
local http = require "spec.support.http"
local socket = require "socket"
local cjson = require "cjson"

local TOKEN = "apify_api_openresty_SECRET_4f9c"
local SLOW = T.slow
local N = 4                -- concurrent listings in the non-blocking test

local ROOT = (T.read("pwd"):gsub("%s+$", ""))
local JIT_SO = ROOT .. "/build/jit/apify/kvs.so"
local SNIPPET = ROOT .. "/examples/openresty/apify_kvs.conf"
local CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
local sh_quote, read_file, write_file = T.sh_quote, T.read_file, T.write_file

local function run(port, reqs)
  return http.run(port, reqs, { forbid = TOKEN })
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

-- Distinct TCP connections in a request log of the emulator.
local function connections(reqs)
  local seen, n = {}, 0
  for _, q in ipairs(reqs) do
    if not seen[q.connection] then seen[q.connection], n = true, n + 1 end
  end
  return n
end

---------------------------------------------------------------------------------------------------
-- the test host

-- The blocking libcurl iterator that must never be used in nginx: the control of the
-- non-blocking test.
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

    lua_package_path "@ROOT@/lua/?.lua;@ROOT@/examples/openresty/?.lua;@ROOT@/spec/support/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "@ROOT@/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    proxy_ssl_trusted_certificate "@CA_BUNDLE@";

    lua_shared_dict apify_keys 8m;
    lua_shared_dict spec 1m;

    init_by_lua_block {
        require("keys_handler").client_options = { min_delay = 0.01, max_retries = 3 }
        require("keys_handler").stores = { s = true, nope = true }   -- not "other"
        local host = require "openresty_host"
        host.bases = { direct = os.getenv("APIFY_API_BASE_URL"), upstream = "http://kvs_emulator",
                       dead = "http://127.0.0.1:@DEAD_PORT@",
                       tls = "https://localhost:@TLS_PORT@", tls_ip = "https://127.0.0.1:@TLS_PORT@" }
        host.try_phase("init")
    }
    init_worker_by_lua_block {
        local host = require "openresty_host"
        local init = host.phase_errors.init
        ngx.shared.spec:set("phase:init", require("cjson").encode(init))
        host.try_phase("init_worker")
        -- the example: every key of store "s" into the dict apify_keys, from a timer
        require("refresh").start{ store = "s", dict = "apify_keys", every = 0,
                                  client = { min_delay = 0.01, max_retries = 3 } }
        -- Stops this nginx once the spec's process is gone (a crashed run leaves nothing behind).
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
    # a base URL with a port, mapped to this block by ngx_kvs.upstreams
    upstream emulator_pool {
        server 127.0.0.1:@EMU_PORT@;
        keepalive 4;
    }
    upstream tls_front {
        server 127.0.0.1:@TLS_PORT@;
        keepalive 4;
    }
    upstream tls_trusted {
        server 127.0.0.1:@TLS_PORT@;
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
                local host = require "openresty_host"
                host.reply(host.iterate(ngx.req.get_uri_args()))
            }
        }
        location = /iterate-rewrite {
            rewrite_by_lua_block {
                local host = require "openresty_host"
                host.reply(host.iterate(ngx.req.get_uri_args()))
                ngx.exit(200)
            }
        }
        location = /iterate-access {
            access_by_lua_block {
                local host = require "openresty_host"
                host.reply(host.iterate(ngx.req.get_uri_args()))
                ngx.exit(200)
            }
        }
        location = /iterate-timer {
            content_by_lua_block {
                local host = require "openresty_host"
                host.reply(host.iterate_in_timer(ngx.req.get_uri_args()))
            }
        }
        location = /blocking {
            content_by_lua_block {
@BLOCKING@
            }
        }
        # the phases without I/O: what a listing call raises there
        location = /phases {
            set_by_lua_block $set_phase {
                require("openresty_host").try_phase("set")
                return "x"
            }
            header_filter_by_lua_block { require("openresty_host").try_phase("header_filter") }
            body_filter_by_lua_block {
                if ngx.arg[2] then require("openresty_host").try_phase("body_filter") end
            }
            log_by_lua_block { require("openresty_host").try_phase("log") }
            content_by_lua_block { ngx.say("ok") }
        }
        location = /phase-errors {
            content_by_lua_block {
                local out = {}
                for _, p in ipairs({ "init", "init_worker", "set", "header_filter", "body_filter", "log" }) do
                    local v = ngx.shared.spec:get("phase:" .. p)
                    out[p] = v and require("cjson").decode(v) or nil
                end
                require("openresty_host").reply(out)
            }
        }
        # the example refresher and its dict
        location = /refresh {
            content_by_lua_block { ngx.print(tostring(require("refresh").now())) }
        }
        location = /dict {
            content_by_lua_block {
                local d = ngx.shared.apify_keys
                local key = ngx.var.arg_key
                require("openresty_host").reply({
                    count = d:get("count"), listed_at = d:get("listed_at"), running = d:get("running"),
                    progress = d:get("progress"), error = d:get("error"),
                    size = key and d:get("key:" .. key) or nil,
                    now = ngx.now(),
                })
            }
        }
        location = /cpu {
            content_by_lua_block { ngx.print(string.format("%.6f", require("openresty_host").cpu())) }
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
                local host = require "openresty_host"
                host.reply(host.iterate(ngx.req.get_uri_args()))
            }
        }

        include "@RUNDIR@/apify_kvs_short.conf";
    }

    # An https front of the emulator with a self-signed certificate (localhost, 127.0.0.1)...
    server {
        listen 127.0.0.1:@TLS_PORT@ ssl;
        ssl_certificate "@RUNDIR@/cert.pem";
        ssl_certificate_key "@RUNDIR@/key.pem";
        location / {
            proxy_pass http://127.0.0.1:@EMU_PORT@;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

    # ... and a server whose listings trust that certificate.
    server {
        listen 127.0.0.1:@TRUST_PORT@;

        location = /iterate {
            content_by_lua_block {
                local host = require "openresty_host"
                host.reply(host.iterate(ngx.req.get_uri_args()))
            }
        }

        include "@RUNDIR@/apify_kvs_trust.conf";
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
  -- a self-signed certificate for the https front
  assert(T.sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost"
    .. " -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
    .. " -keyout " .. sh_quote(rundir .. "/key.pem") .. " -out " .. sh_quote(rundir .. "/cert.pem")
    .. " >/dev/null 2>&1"), "openssl could not make a certificate")
  local snippet = assert(read_file(SNIPPET))
  local short, count = snippet:gsub("proxy_read_timeout %d+s;", "proxy_read_timeout 500ms;")
  assert(count == 1, "apify_kvs.conf has no proxy_read_timeout to shorten")
  write_file(rundir .. "/apify_kvs_short.conf", short)
  -- the location of a server whose listings trust the self-signed certificate
  local trust, n = snippet:gsub("proxy_ssl_verify on;", "proxy_ssl_verify on;\n    "
    .. "proxy_ssl_trusted_certificate \"" .. rundir .. "/cert.pem\";")
  assert(n == 1, "apify_kvs.conf has no proxy_ssl_verify")
  write_file(rundir .. "/apify_kvs_trust.conf", trust)
  local owner_pid = tonumber(T.read("echo $PPID"):match("%d+"))
  local ok, proc = pcall(T.launch.start_nginx, {
    name = "test nginx", rundir = rundir, nports = 5, timeout = 30 * SLOW,
    env = { APIFY_TOKEN = TOKEN, APIFY_API_BASE_URL = emu.base_url },
    render = function(ports)
      local vars = {
        RUNDIR = rundir, ROOT = ROOT, SNIPPET = SNIPPET, OWNER_PID = tostring(owner_pid),
        PORT = tostring(ports[1]), SHORT_PORT = tostring(ports[2]), DEAD_PORT = tostring(ports[3]),
        TLS_PORT = tostring(ports[4]), TRUST_PORT = tostring(ports[5]),
        EMU_PORT = tostring(emu.port), CA_BUNDLE = CA_BUNDLE,
        USER = T.launch.is_root() and "user root;" or "", BLOCKING = BLOCKING,
      }
      return render(CONF, vars)
    end,
  })
  if not ok then
    T.rmrf(rundir)
    error(proc)
  end
  local host = setmetatable({ rundir = rundir, port = proc.ports[1], short_port = proc.ports[2],
    tls_port = proc.ports[4], trust_port = proc.ports[5], master_pid = proc.pid }, Host)
  host.worker_pid = tonumber(get(host.port, "/lua-ping").body)
  return host
end

function Host:log(name)
  return read_file(self.rundir .. "/" .. name) or ""
end

-- Stops nginx (TERM, then KILL) and checks that neither master nor worker is left.
function Host:stop(keep_rundir)
  local gone = T.launch.stop_nginx(self.rundir, { self.master_pid, self.worker_pid })
  if not keep_rundir and not os.getenv("KVS_KEEP_HOST") then T.rmrf(self.rundir) end
  assert(gone, "the test nginx is still running")
end

---------------------------------------------------------------------------------------------------

describe("OpenResty driver (apify.kvs.openresty) in a real nginx", function()
  local emu, storage, host

  lazy_setup(function()
    storage = T.tmpdir()
    T.make_store(storage, "s", T.numbered(2500))
    T.make_store(storage, "other", { "secret-1", "secret-2" })   -- readable, not on the allowlist
    emu = T.start_emulator({ storage = storage, token = TOKEN })
    host = start_host(emu)
    -- the example refresher lists store "s" as soon as the worker starts: let it finish
    local deadline = socket.gettime() + 30 * SLOW
    repeat
      local d = cjson.decode(get(host.port, "/dict").body)
      if d.count and not d.running then break end
      socket.sleep(0.05)
    until socket.gettime() > deadline
  end)

  lazy_teardown(function()
    local ok, err = true, nil
    if host then ok, err = pcall(host.stop, host) end
    if emu then emu:stop() end
    T.rmrf(storage)
    assert(ok, err)
  end)

  -- A stalled request reaches the emulator's log only when its stall is over, after nginx gave
  -- up on it: wait for it, so that it does not land in the next test's request log.  With
  -- at_least, more are fine (on a loaded machine an ordinary page too can outlast a short
  -- proxy_read_timeout, and be retried).
  local function wait_requests(n, at_least)
    local deadline = socket.gettime() + 5 * SLOW
    local reqs = emu:requests()
    while #reqs < n and socket.gettime() < deadline do
      socket.sleep(0.05)
      reqs = emu:requests()
    end
    if at_least then
      assert.is_true(#reqs >= n, #reqs .. " requests, expected at least " .. n)
    else
      assert.are.equal(n, #reqs)
    end
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
      assert.are.equal("token", r.auth)
      assert.are.equal("application/json", r.headers.accept)
      assert.matches("^apify%.kvs/", r.headers["user-agent"])
      assert.are.equal("gzip", r.headers["accept-encoding"])
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

    it("serves only the stores of its allowlist: 404 for any other, and no request for it", function()
      for _, path in ipairs({ "/stores/other/keys", "/paged/stores/other/keys", "/stores/other/keys?prefix=secret",
                              "/stores/S/keys", "/stores/%6Fther/keys" }) do
        local res = get(host.port, path)
        assert.are.equal(404, res.status, path)
        assert.are.equal("application/json", res.headers["content-type"])
        local keys, _, _, err = lines_of(res.body)
        assert.are.equal(0, #keys)
        assert.are.equal("store-not-served", err.type)
        assert.is_nil(res.body:find("secret", 1, true))
      end
      assert.are.equal(0, #emu:requests())
      -- a store of the list is served
      local res = get(host.port, "/stores/s/keys?prefix=k00001")
      assert.are.equal(200, res.status)
      assert.are.same({ "k00001" }, (lines_of(res.body)))
      assert.are.equal(1, #emu:requests())
      -- and the list is all that kept "other" out: the server's token reads it
      local page = assert(T.client(emu, { token = TOKEN }):store("other"):list_keys())
      assert.are.equal(2, #page.items)
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
      wait_requests(4, true)   -- the stalled one, its retry, pages 2 and 3
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
      -- structural: the worker answered pings while its listings were still running (a worker
      -- blocked by its listings would answer them all at the end)
      local during, n_pings = 0, 0
      for _, r in ipairs(reqs) do
        if r.ping then
          n_pings = n_pings + 1
          assert.is_true(r.t_start < tn, "a ping after the listings")
          if r.t_done < tn then during = during + 1 end
        end
      end
      assert.is_true(during * 2 >= n_pings, during .. " of " .. n_pings .. " pings answered during the listings")
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
      assert.are.equal("2500", listings[1].body, host:log("error.log"):sub(-1500))
      io.stderr:write(string.format("[openresty] control, store:keys{} (libcurl) in the worker: "
        .. "%.3f s; pings meanwhile: max %.1f ms\n", listings[1].elapsed, ping_max * 1000))
      assert.is_true(ping_max > 0.5, "ping took " .. ping_max .. " s")
    end)
  end)

  describe("every phase that can do I/O", function()
    local function call(path, port)
      local res = get(port or host.port, path)
      assert.are.equal(200, res.status, res.body)
      return cjson.decode(res.body)
    end

    for _, case in ipairs({ { "/iterate-rewrite", "subrequest" }, { "/iterate-access", "subrequest" },
                            { "/iterate", "subrequest" }, { "/iterate-timer", "timer" } }) do
      local path, mechanism = case[1], case[2]
      it(path .. ": every key once, in order, with both APIs (" .. mechanism .. ")", function()
        local r = call(path .. "?page_size=300")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.equal(mechanism, r.mechanism)
        assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
        assert.are.equal(9, #emu:requests())
        emu:clear_requests()
        r = call(path .. "?page_size=1000&pages=1&prefix=k01")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.same({ 1000, "k01000", "k01999", true }, { r.n, r.first, r.last, r.ordered })
        assert.is_true(r.pages >= 1)
      end)
    end

    it("in a timer: retries 503 and a truncated reply, every key exactly once", function()
      emu:faults({ { kind = "status", status = 503 }, { kind = "truncate" } })
      local r = call("/iterate-timer?page_size=1000")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
      local faults = {}
      for _, q in ipairs(emu:requests()) do faults[#faults + 1] = q.fault or "-" end
      assert.are.same({ "status", "truncate", "-", "-", "-" }, faults)
    end)

    it("in a timer: the error tables of an API error and of an unreachable API", function()
      local r = call("/iterate-timer?store=nope")
      assert.is_false(r.ok)
      assert.are.same({ "record-not-found", 404, 0 }, { r.err.type, r.err.status, r.err.retries })
      r = call("/iterate-timer?base=dead&retries=2")
      assert.is_false(r.ok)
      assert.are.same({ "network-error", 2 }, { r.err.type, r.err.retries })
      assert.matches("^apify%.kvs: ", r.err.tostring)
    end)

    it("in a phase without I/O: its own error table, naming the phase and the way out", function()
      assert.are.equal(200, get(host.port, "/phases").status)
      local deadline = socket.gettime() + 5 * SLOW
      local r
      repeat      -- log_by_lua runs after the reply went out
        r = call("/phase-errors")
        if r.log then break end
        socket.sleep(0.02)
      until socket.gettime() > deadline
      for _, phase in ipairs({ "init", "init_worker", "set", "header_filter", "body_filter", "log" }) do
        local e = r[phase]
        assert.is_table(e, phase)
        assert.are.equal("unsupported-phase", e.type, phase)
        assert.are.equal("unsupported-phase", e.open, phase)
        assert.are.equal(0, e.retries)
        assert.matches("apify%.kvs%.openresty%.keys cannot do I/O in nginx's " .. phase .. " phase",
          e.message)
        assert.matches("ngx.timer.at(0, function(premature)", e.message, 1, true)
        assert.matches("^apify%.kvs: .*%(unsupported%-phase%)$", e.tostring)
        assert.is_true(e.is_error, phase)
        assert.is_nil(e.message:find("API disabled", 1, true))
      end
    end)
  end)

  describe("parallel = n, on the sans-I/O planner, in request phases", function()
    local function call(path)
      local res = get(host.port, path)
      assert.are.equal(200, res.status, res.body)
      return cjson.decode(res.body)
    end

    for _, path in ipairs({ "/iterate", "/iterate-access" }) do
      it(path .. ": every key once, in order, with both APIs, requests side by side", function()
        emu:config({ delay = 0.05 })
        local r = call(path .. "?parallel=4&page_size=100")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
        local reqs = emu:requests()
        assert.is_true(#reqs >= 25, #reqs .. " requests")
        emu:clear_requests()
        r = call(path .. "?parallel=3&page_size=200&pages=1&prefix=k01")
        assert.is_true(r.ok, r.err and r.err.message)
        assert.are.same({ 1000, "k01000", "k01999", true }, { r.n, r.first, r.last, r.ordered })
      end)
    end

    it("retries 503 and truncated replies of its ranges, every key exactly once", function()
      emu:faults({ { kind = "status", status = 503 }, { kind = "truncate" }, { kind = "status", status = 500 } })
      local r = call("/iterate?parallel=4&page_size=250")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
      local faults = 0
      for _, q in ipairs(emu:requests()) do if q.fault then faults = faults + 1 end end
      assert.are.equal(3, faults)
    end)

    it("raises the error table of an API error", function()
      local r = call("/iterate?parallel=4&store=nope")
      assert.is_false(r.ok)
      assert.are.same({ "record-not-found", 404 }, { r.err.type, r.err.status })
    end)

    it("lists side by side while the worker answers pings", function()
      emu:config({ delay = 0.1 })   -- 10 pages of 250 keys, each after 0.1 s
      local one = run(host.port, { { path = "/iterate?page_size=250" } })[1]
      local reqs = { { path = "/iterate?parallel=4&page_size=250" } }
      for i = 1, 6 do reqs[#reqs + 1] = { path = "/ping", at = 0.05 * i, ping = true } end
      run(host.port, reqs)
      local par = reqs[1]
      local r = cjson.decode(par.body)
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, true }, { r.n, r.ordered })
      local during, ping_max = 0, 0
      for i = 2, #reqs do
        if reqs[i].t_done < par.t_done then during = during + 1 end
        ping_max = math.max(ping_max, reqs[i].elapsed)
      end
      assert.is_true(during >= 3, during .. " pings answered during the listing")
      io.stderr:write(string.format("[openresty] 10 pages x 0.1 s: %.3f s one by one, %.3f s with "
        .. "parallel = 4 (%.1fx); pings meanwhile: max %.1f ms\n", one.elapsed, par.elapsed,
        one.elapsed / par.elapsed, ping_max * 1000))
      T.timed_claim(par.elapsed < one.elapsed / 1.5, "parallel " .. par.elapsed .. " s, one " .. one.elapsed)
    end)

    it("parallel = 1 is the ordinary listing", function()
      local r = call("/iterate?parallel=1&page_size=1000")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.equal(2500, r.n)
    end)
  end)

  describe("parallel = n in a timer: the planner over libcurl multi (store:job{parallel})", function()
    local function call(path)
      local res = get(host.port, path)
      assert.are.equal(200, res.status, res.body)
      return cjson.decode(res.body)
    end

    it("every key once, in order, with both APIs, requests side by side", function()
      emu:config({ delay = 0.05 })
      local r = call("/iterate-timer?parallel=4&page_size=100")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.equal("timer", r.mechanism)
      assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
      local reqs = emu:requests()
      assert.is_true(#reqs >= 25, #reqs .. " requests")
      local ranged = 0       -- requests from a boundary the planner made (not a page's end)
      for _, q in ipairs(reqs) do
        local esk = q.args.exclusiveStartKey
        if esk and not esk:match("00$") then ranged = ranged + 1 end
        assert.are.equal("token", q.auth)
      end
      assert.is_true(ranged > 0, "no range boundaries were made")
      emu:clear_requests()
      r = call("/iterate-timer?parallel=3&page_size=200&pages=1&prefix=k01")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 1000, "k01000", "k01999", true }, { r.n, r.first, r.last, r.ordered })
    end)

    it("retries 503 and truncated replies of its ranges, every key exactly once", function()
      emu:faults({ { kind = "status", status = 503 }, { kind = "truncate" }, { kind = "status", status = 500 } })
      local r = call("/iterate-timer?parallel=4&page_size=250")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, "k00001", "k02500", true }, { r.n, r.first, r.last, r.ordered })
      local faults = 0
      for _, q in ipairs(emu:requests()) do if q.fault then faults = faults + 1 end end
      assert.are.equal(3, faults)
    end)

    it("raises the error tables of an API error and of an unreachable API", function()
      local r = call("/iterate-timer?parallel=4&store=nope")
      assert.is_false(r.ok)
      assert.are.same({ "record-not-found", 404 }, { r.err.type, r.err.status })
      r = call("/iterate-timer?parallel=4&base=dead&retries=1")
      assert.is_false(r.ok)
      assert.are.same({ "network-error", 1 }, { r.err.type, r.err.retries })
      assert.is_nil(r.err.message:find(TOKEN, 1, true))
    end)

    it("lists side by side while the worker answers pings", function()
      emu:config({ delay = 0.1 })   -- 10 pages of 250 keys, each after 0.1 s
      local one = run(host.port, { { path = "/iterate-timer?page_size=250" } })[1]
      local reqs = { { path = "/iterate-timer?parallel=4&page_size=250" } }
      for i = 1, 12 do reqs[#reqs + 1] = { path = "/ping", at = 0.025 * i, ping = true } end
      run(host.port, reqs)
      local par = reqs[1]
      local r = cjson.decode(par.body)
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, true }, { r.n, r.ordered })
      local during, ping_max = 0, 0
      for i = 2, #reqs do
        if reqs[i].t_done < par.t_done then
          during = during + 1
          ping_max = math.max(ping_max, reqs[i].elapsed)
        end
      end
      assert.is_true(during >= 5, during .. " pings answered during the listing")
      io.stderr:write(string.format("[openresty] timer, 10 pages x 0.1 s: %.3f s one by one, "
        .. "%.3f s with parallel = 4 (%.1fx); %d pings meanwhile: max %.1f ms\n", one.elapsed,
        par.elapsed, one.elapsed / par.elapsed, during, ping_max * 1000))
      T.timed_claim(par.elapsed < one.elapsed / 1.5, "parallel " .. par.elapsed .. " s, one " .. one.elapsed)
      T.timed_claim(ping_max < 0.05 * SLOW, "a ping took " .. ping_max .. " s")
    end)

    it("costs little CPU while its ranges wait for the API (polling)", function()
      emu:config({ delay = 2 })
      local cpu0 = tonumber(get(host.port, "/cpu").body)
      local t0 = socket.gettime()
      local r = cjson.decode(get(host.port, "/iterate-timer?parallel=4&page_size=1000&prefix=k01").body)
      local wall = socket.gettime() - t0
      local cpu = tonumber(get(host.port, "/cpu").body) - cpu0
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.equal(1000, r.n)
      io.stderr:write(string.format("[openresty] a parallel timer listing waiting %.2f s for its "
        .. "pages: worker CPU %.1f ms (%.2f%% of one core)\n", wall, cpu * 1000, 100 * cpu / wall))
      T.timed_claim(cpu / wall < 0.05, "CPU " .. cpu .. " s in " .. wall .. " s")
    end)
  end)

  describe("the example: a timer from init_worker_by_lua fills a lua_shared_dict", function()
    it("holds every key of the store after the start-up listing", function()
      local d = cjson.decode(get(host.port, "/dict?key=k01234").body)
      assert.are.equal(2500, d.count)
      assert.are.equal(1234 % 7, d.size)
      assert.is_false(d.running)
      assert.is_nil(d.error)
      assert.is_nil(cjson.decode(get(host.port, "/dict?key=nope").body).size)
    end)

    it("refreshes in the background while the worker answers other requests", function()
      emu:config({ delay = 0.2 })      -- 3 pages of 1000 keys, each after 0.2 s
      local before = cjson.decode(get(host.port, "/dict").body)
      assert.are.equal("1", get(host.port, "/refresh").body)
      -- while the timer lists: ask the same worker (worker_processes 1) every 20 ms
      local answers, t_first, t_last_running = {}, nil, nil
      local t0 = socket.gettime()
      local deadline = t0 + 20 * SLOW
      while socket.gettime() < deadline do
        local t = socket.gettime()
        local res = get(host.port, "/dict?key=k00001")
        local d = cjson.decode(res.body)
        answers[#answers + 1] = { elapsed = socket.gettime() - t, running = d.running, progress = d.progress }
        if d.running then t_first = t_first or t; t_last_running = t end
        if not d.running and d.listed_at and d.listed_at > before.listed_at then break end
        socket.sleep(0.02)
      end
      local d = cjson.decode(get(host.port, "/dict?key=k02500").body)
      assert.are.equal(2500, d.count)
      assert.are.equal(2500 % 7, d.size)
      assert.is_true(d.listed_at > before.listed_at)
      -- the structural proof: the worker answered requests while its timer's listing went on,
      -- and saw it go on (progress between pages)
      local running, max_ms, progressed = 0, 0, {}
      for _, a in ipairs(answers) do
        if a.running then
          running = running + 1
          max_ms = math.max(max_ms, a.elapsed * 1000)
          progressed[a.progress] = true
        end
      end
      assert.is_true(running >= 5, running .. " answers during the listing")
      assert.is_true(progressed[1000] or progressed[2000], "no answer between two pages")
      io.stderr:write(string.format("\n[openresty] timer refresh of 2500 keys (3 pages x 0.2 s): "
        .. "%.3f s; %d requests answered meanwhile, max %.1f ms\n",
        (t_last_running or t0) - (t_first or t0), running, max_ms))
      T.timed_claim(max_ms < 50, "a request took " .. max_ms .. " ms during the refresh")
    end)

    it("keeps the last complete listing when a refresh fails", function()
      emu:faults({ { kind = "status", status = 500, times = 10 } })
      assert.are.equal("1", get(host.port, "/refresh").body)
      local deadline, d = socket.gettime() + 10 * SLOW, nil
      repeat
        socket.sleep(0.05)
        d = cjson.decode(get(host.port, "/dict?key=k00007").body)
      until (d.error and not d.running) or socket.gettime() > deadline
      assert.matches("internal%-server%-error", d.error)
      assert.are.equal(2500, d.count)
      assert.are.equal(0, d.size)
    end)

    it("costs little CPU while a timer's listing waits for the API (polling)", function()
      emu:config({ delay = 2 })
      local cpu0 = tonumber(get(host.port, "/cpu").body)
      local t0 = socket.gettime()
      local r = cjson.decode(get(host.port, "/iterate-timer?page_size=1000&prefix=k01").body)
      local wall = socket.gettime() - t0
      local cpu = tonumber(get(host.port, "/cpu").body) - cpu0
      assert.is_true(r.ok)
      assert.are.equal(1000, r.n)
      io.stderr:write(string.format("[openresty] a timer listing waiting %.2f s for its page: "
        .. "worker CPU %.1f ms (%.2f%% of one core)\n", wall, cpu * 1000, 100 * cpu / wall))
      T.timed_claim(cpu / wall < 0.05, "CPU " .. cpu .. " s in " .. wall .. " s")
    end)
  end)

  describe("deployments: gzip, keep-alive pools, TLS", function()
    local function iterate(query, port)
      local res = get(port or host.port, "/iterate?" .. query)
      assert.are.equal(200, res.status)
      return cjson.decode(res.body)
    end

    it("asks for gzip through the subrequest and reads the compressed pages", function()
      local r = iterate("page_size=1000")
      assert.is_true(r.ok)
      assert.are.equal(2500, r.n)
      for _, q in ipairs(emu:requests()) do assert.are.equal("gzip", q.headers["accept-encoding"]) end
      -- bytes on the wire of one full page, as the emulator sends them
      local c = http.connect(emu.port)
      local path = "/v2/key-value-stores/s/keys?limit=1000"
      local auth = { Authorization = "Bearer " .. TOKEN }
      local plain = assert(c:request("GET", path, auth))
      auth["Accept-Encoding"] = "gzip"
      local zipped = assert(c:request("GET", path, auth, true))
      c:close()
      assert.are.equal("gzip", zipped.headers["content-encoding"])
      io.stderr:write(string.format("[openresty] a 1000-key page on the wire: %d bytes plain, "
        .. "%d gzip (%.1fx less)\n", #plain.body, #zipped.body, #plain.body / #zipped.body))
      assert.is_true(#zipped.body < #plain.body / 3)
    end)

    it("asks for gzip on parallel subrequests too, and reads the compressed pages", function()
      local r = iterate("parallel=4&page_size=1000")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, true }, { r.n, r.ordered })
      local reqs = emu:requests()
      assert.is_true(#reqs >= 2)
      -- the same requests again without gzip: what each page would have cost on the wire
      local c = http.connect(emu.port)
      local zipped, plain = 0, 0
      for _, q in ipairs(reqs) do
        assert.are.equal("gzip", q.headers["accept-encoding"])
        zipped = zipped + q.body_bytes_sent
        local res = assert(c:request("GET", q.uri, { Authorization = "Bearer " .. TOKEN }))
        plain = plain + #res.body
        -- the emulator compresses bodies of 256 bytes and more (gzip_min_length)
        if #res.body >= 256 then assert.are.equal("gzip", q.content_encoding, q.uri) end
      end
      c:close()
      io.stderr:write(string.format("[openresty] parallel = 4, %d pages of up to 1000 keys on "
        .. "the wire: %.0f bytes a page plain, %.0f gzip (%.1fx less)\n", #reqs, plain / #reqs,
        zipped / #reqs, plain / zipped))
      assert.is_true(zipped < plain / 3)
    end)

    it("pools connections for a base URL with a port mapped to an upstream{} block", function()
      local direct = iterate("page_size=250")
      assert.is_true(direct.ok)
      local before = connections(emu:requests())
      emu:clear_requests()
      local r = iterate("page_size=250&map=" .. emu.base_url .. "&upstream=emulator_pool")
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, true }, { r.n, r.ordered })
      local reqs = emu:requests()
      assert.are.equal(10, #reqs, cjson.encode(reqs))
      assert.are.equal("127.0.0.1:" .. emu.port, reqs[1].headers.host)   -- the base URL's, not the pool's
      local after = connections(reqs)
      io.stderr:write(string.format("[openresty] TCP connections for a 10-page listing of "
        .. "%s: %d direct, %d through upstream{} keepalive\n", emu.base_url, before, after))
      assert.are.equal(10, before)
      assert.are.equal(1, after)
    end)

    it("fails at once with tls-error when nginx refuses the upstream's certificate", function()
      local t0 = socket.gettime()
      local r = iterate("base=tls&retries=3&map=https://localhost:" .. host.tls_port .. "&upstream=tls_front")
      assert.is_false(r.ok)
      assert.are.equal("tls-error", r.err.type)
      assert.are.equal(0, r.err.retries)
      assert.is_true(r.err.is_error)
      assert.matches("nginx did not accept the certificate of localhost", r.err.message)
      assert.matches("proxy_ssl_trusted_certificate", r.err.message)
      assert.matches("upstream SSL certificate verify error", host:log("error.log"))
      -- one check without certificate verification, and without the token
      local reqs = emu:requests()
      assert.are.equal(1, #reqs)
      assert.is_nil(reqs[1].auth)
      T.timed_claim(socket.gettime() - t0 < 2, "tls-error after " .. (socket.gettime() - t0) .. " s")
    end)

    it("lists over https with keep-alive when the certificate is trusted", function()
      local r = iterate("base=tls&page_size=500&map=https://localhost:" .. host.tls_port
        .. "&upstream=tls_trusted", host.trust_port)
      assert.is_true(r.ok, r.err and r.err.message)
      assert.are.same({ 2500, true }, { r.n, r.ordered })
    end)

    it("says why https to an IP address cannot be verified by nginx", function()
      local r = iterate("base=tls_ip&retries=3", host.trust_port)
      assert.is_false(r.ok)
      assert.are.equal("tls-error", r.err.type)
      assert.are.equal(0, r.err.retries)
      assert.matches("never an IP address", r.err.message)
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
      local out = T.read("env -u LD_PRELOAD " .. T.launch.NGINX .. " -t -p " .. sh_quote(prefix .. "/")
        .. " -c examples/openresty/nginx.conf -e " .. sh_quote(prefix .. "/build/openresty-example/error.log")
        .. " 2>&1; echo \"exit=$?\"")
      T.rmrf(prefix)
      assert.matches("test is successful", out)
      assert.matches("exit=0", out)
    end)
  end)
end)
