-- spec/emulator_access_spec.lua
--
-- Owns: who may use the emulator: the token, the watchdog and stop, and what makes it safe to run
-- on a shared machine (control secret, Host, no token handed out, confined files, no
-- symlinks, workers never root).
-- The emulator (emulator/kvs_emulator.lua and its parts) runs in nginx, started through
-- emulator/launch.lua; the helpers are spec/support/emulator.lua's. Needs only luasocket and
-- lua-cjson. Run from the repository root: lua5.X /usr/bin/busted spec/emulator_access_spec.lua

package.path = "./?.lua;" .. package.path

local socket = require "socket"
local cjson = require "cjson"
local launch = require "emulator.launch"
local E = require "spec.support.emulator"

local sh_quote, capture, write_file = launch.sh_quote, launch.capture, launch.write_file
local connect = E.connect
local mkdir, scratch_dir, control, remove_scratch = E.mkdir, E.scratch_dir, E.control, E.remove_scratch
local request, get, keys_path, list = E.request, E.get, E.keys_path, E.list
local keys_of, SLOW = E.keys_of, E.SLOW

---------------------------------------------------------------------------------------------------

describe("kvs emulator with a token", function()
  local tmp, emu, port

  lazy_setup(function()
    tmp = scratch_dir()
    mkdir(tmp .. "/key_value_stores/s")
    write_file(tmp .. "/key_value_stores/s/one.txt", "1")
    emu = launch.start{ storage = tmp, token = "t0k3n" }
    port = emu.port
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    remove_scratch(tmp)
  end)

  it("answers 401 token-not-provided without Authorization", function()
    local res = list(port, "s")
    assert.equal(401, res.status)
    assert.equal("token-not-provided", res.json.error.type)
  end)

  it("answers 401 invalid-token for a wrong token (a token query parameter does not count)", function()
    local res = list(port, "s", nil, { Authorization = "Bearer wrong" })
    assert.equal(401, res.status)
    assert.equal("invalid-token", res.json.error.type)
    assert.equal(401, list(port, "s", "token=t0k3n").status)
  end)

  it("lists with the right bearer token", function()
    local res = list(port, "s", nil, { Authorization = "Bearer t0k3n" })
    assert.equal(200, res.status)
    assert.same({ "one" }, keys_of(res.json.data))
  end)

  it("stops by itself when the watched process exits", function()
    local pid = tonumber(capture("sleep 60 >/dev/null 2>&1 & echo $!"):match("%d+"))
    local orphan = launch.start{ storage = tmp, watch = pid }
    assert.equal(200, get(orphan.port, "/_emulator/ping", control(orphan)).status)
    os.execute("kill " .. pid)
    local deadline, closed = socket.gettime() + 5 * SLOW, false
    repeat
      socket.sleep(0.1)
      local c = socket.tcp()
      c:settimeout(1)
      closed = c:connect("127.0.0.1", orphan.port) == nil
      c:close()
    until closed or socket.gettime() > deadline
    assert.is_true(closed)
    orphan:stop()
  end)

  it("stops: nginx gone, port closed, run directory removed", function()
    local rundir, pid = emu.rundir, tonumber(io.open(emu.rundir .. "/nginx.pid"):read("*a"):match("%d+"))
    emu:stop()
    emu = nil
    local c = socket.tcp()
    c:settimeout(1)
    assert.is_nil(c:connect("127.0.0.1", port))
    c:close()
    assert.is_nil(io.open(rundir .. "/nginx.conf"))
    assert.equal("gone", capture("test -d " .. sh_quote(rundir) .. " || echo gone"):match("%a+"))
    local stat = io.open("/proc/" .. pid .. "/stat")
    if stat then
      assert.equal("Z", stat:read("*a"):match("^%d+ %b() (%a)"))
      stat:close()
    end
  end)
end)

describe("kvs emulator: safe to run on a shared machine", function()
  local tmp, outside, emu, port
  local TOKEN = "t0k3n-shared"

  lazy_setup(function()
    tmp, outside = scratch_dir(), scratch_dir()
    mkdir(tmp .. "/key_value_stores/s")
    write_file(tmp .. "/key_value_stores/s/one.txt", "1")
    -- links out of the storage directory: a record, a whole store, a store's metadata
    write_file(outside .. "/secret.txt", "outside the storage directory")
    mkdir(outside .. "/store")
    write_file(outside .. "/store/leaked.txt", "x")
    write_file(outside .. "/meta.json", '{"schema":{"collections":{"c":{"keyPrefix":"o"}}}}')
    assert(os.execute("ln -s " .. sh_quote(outside .. "/secret.txt") .. " " .. sh_quote(tmp .. "/key_value_stores/s/two.txt")))
    assert(os.execute("ln -s " .. sh_quote(outside .. "/meta.json") .. " " .. sh_quote(tmp .. "/key_value_stores/s/__metadata__.json")))
    assert(os.execute("ln -s " .. sh_quote(outside .. "/store") .. " " .. sh_quote(tmp .. "/key_value_stores/linked")))
    emu = launch.start{ storage = tmp, token = TOKEN }
    port = emu.port
  end)

  lazy_teardown(function()
    if emu then emu:stop() end
    remove_scratch(tmp)
    remove_scratch(outside)
  end)

  local AUTH = { Authorization = "Bearer " .. TOKEN }

  it("control API: no secret, a wrong one or a browser's Origin change nothing", function()
    -- the attack of a local process or a web page: a text/plain POST, no secret
    local shadow = '{"kind":"raw","body_file":"/etc/shadow"}'
    for _, headers in ipairs({ {}, { Authorization = "Bearer " .. TOKEN },
                               { Authorization = "Bearer " .. ("0"):rep(64) } }) do
      headers["Content-Type"] = "text/plain"
      for _, what in ipairs({ "ping", "faults", "config", "requests" }) do
        assert.equal(401, get(port, "/_emulator/" .. what, headers).status, what)
      end
      assert.equal(401, request(port, "POST", "/_emulator/faults", headers, shadow).status)
      assert.equal(401, request(port, "POST", "/_emulator/config", headers, '{"token":null}').status)
      assert.equal(401, request(port, "DELETE", "/_emulator/requests", headers).status)
    end
    assert.equal(403, get(port, "/_emulator/config", control(emu, { Origin = "http://evil.example" })).status)
    assert.equal(415, request(port, "POST", "/_emulator/config",
      control(emu, { ["Content-Type"] = "text/plain" }), '{"delay":3600}').status)
    assert.same({}, emu:pending_faults())
    local config = emu:config()
    assert.equal(0, config.delay)
    assert.is_true(config.token_set)
    -- authentication is still on, and nothing from outside the storage directory is served
    assert.equal(401, list(port, "s").status)
    local res = list(port, "s", nil, AUTH)
    assert.equal(200, res.status)
    assert.is_nil(res.body:find("shadow", 1, true))
  end)

  it("never hands out a token: the config says whether one is set, the log whether it was sent", function()
    emu:clear_requests()
    assert.equal(200, list(port, "s", nil, AUTH).status)
    assert.equal(401, list(port, "s", nil, { Authorization = "Bearer not-" .. TOKEN }).status)
    assert.equal(401, list(port, "s").status)
    local log = emu:requests()
    assert.equal(3, #log)
    assert.same({ "token", "other" }, { log[1].auth, log[2].auth })
    assert.is_nil(log[3].auth)
    local raw = get(port, "/_emulator/requests", control(emu)).body .. get(port, "/_emulator/config", control(emu)).body
    assert.is_nil(raw:find(TOKEN, 1, true))
    assert.is_nil(raw:find("authorization", 1, true))
  end)

  it("refuses DNS names in Host (DNS rebinding) and does not echo Host", function()
    for _, host in ipairs({ "evil.example", "evil.example:" .. port, "127.0.0.1.evil.example",
                            "localhost.evil.example:" .. port, "127.0.0.1:" .. port .. "@evil",
                            "10.0.0.1", "[::2]:" .. port, "localhost.", "" }) do
      -- 421 from the emulator; nginx itself answers 400 to a Host that is not a host name
      local refused = { [421] = true, [400] = true }
      local status = get(port, keys_path("s"), { Host = host, Authorization = AUTH.Authorization }).status
      assert.is_true(refused[status], host .. ": " .. status)
      status = get(port, "/_emulator/config", control(emu, { Host = host })).status
      assert.is_true(refused[status], host .. ": " .. status)
    end
    assert.equal(421, get(port, keys_path("s"), { Host = "evil.example:" .. port, Authorization = AUTH.Authorization }).status)
    for _, host in ipairs({ "localhost:" .. port, "LOCALHOST", "[::1]:" .. port, "127.0.0.1", "kvs_upstream" }) do
      local res = list(port, "s", nil, { Host = host, Authorization = AUTH.Authorization })
      assert.equal(200, res.status, host)
      assert.equal(emu.base_url .. "/v2/key-value-stores/s/records/one", res.json.data.items[1].recordPublicUrl)
    end
  end)

  it("follows no symbolic link out of the storage directory", function()
    local res = list(port, "s", nil, AUTH)
    assert.same({ "one" }, keys_of(res.json.data))          -- not two (a link to a file outside)
    assert.equal(404, list(port, "linked", nil, AUTH).status)
    -- the linked metadata's schema is not read: the collection is ignored, not applied
    assert.same({ "one" }, keys_of(list(port, "s", "collection=c", AUTH).json.data))
  end)

  it("keeps its secrets private: a 0700 run directory, 0600 files", function()
    local function mode(path) return capture("stat -c %a " .. sh_quote(path)):match("%d+") end
    assert.equal("700", mode(emu.rundir))
    assert.equal("600", mode(emu.rundir .. "/settings.json"))
    assert.equal("600", mode(emu.rundir .. "/control-secret"))
    assert.equal(emu.control_secret, (io.open(emu.rundir .. "/control-secret"):read("*a"):gsub("%s+$", "")))
    assert.is_nil(io.open(emu.rundir .. "/nginx.conf"):read("*a"):find(TOKEN, 1, true))
  end)

  it("never runs a worker as root", function()
    local pid = cjson.decode(get(port, "/_emulator/ping", control(emu)).body).pid
    local uid = tonumber(io.open(string.format("/proc/%d/status", pid)):read("*a"):match("\nUid:%s*(%d+)"))
    local me = tonumber(capture("id -u"):match("%d+"))
    if me == 0 then assert.are_not.equal(0, uid) else assert.equal(me, uid) end
  end)

  it("takes the token from a file or the environment, never from the command line", function()
    local cmd = "lua5.4 emulator/launch.lua"
    local out = capture(cmd .. " start --storage " .. sh_quote(tmp) .. " --token secret-on-argv 2>&1; echo \"exit=$?\"")
    assert.matches("%-%-token is refused", out)
    assert.matches("exit=2", out)
    write_file(tmp .. "/token", "from-a-file\n")
    for _, how in ipairs({ "--token-file " .. sh_quote(tmp .. "/token"), "KVS_EMULATOR_TOKEN=from-a-file" }) do
      local rundir = tmp .. "/run-" .. (how:match("^%-%-") and "file" or "env")
      local env, flag = how:match("^KVS") and how .. " " or "", how:match("^%-%-") and how or ""
      local url = capture(env .. cmd .. " start --storage " .. sh_quote(tmp) .. " --rundir " .. sh_quote(rundir)
        .. " " .. flag .. " 2>/dev/null"):match("http://[%d.:]+")
      assert.truthy(url, how)
      local p = tonumber(url:match(":(%d+)$"))
      local ok = pcall(function()
        assert.equal(401, list(p, "s").status)
        assert.equal(200, list(p, "s", nil, { Authorization = "Bearer from-a-file" }).status)
      end)
      os.execute(cmd .. " stop --rundir " .. sh_quote(rundir))
      assert.is_true(ok, how)
    end
  end)

  it("the watchdog removes only its own run directory, whatever its path", function()
    -- a scratch base whose name would break out of shell quotes: a'b c'd
    local base = tmp .. "/x/a'b c'd"
    mkdir(base)
    mkdir(tmp .. "/x/ab")                 -- what a watchdog that pasted the path into sh removed
    local script = "package.path = './?.lua;' .. package.path; local l = require 'emulator.launch'; "
      .. "local e = l.start{ storage = " .. string.format("%q", tmp) .. " }; io.write(e.rundir, ' ', e.port)"
    local out = capture("KVS_TMPDIR=" .. sh_quote(base) .. " lua5.4 -e " .. sh_quote(script))
    local rundir, p = out:match("^(.*) (%d+)$")
    assert.truthy(rundir, out)
    assert.equal(base, rundir:match("^(.*)/kvs%-emulator%.[%w]+$"))
    -- the process that started it has exited: the watchdog stops nginx and removes the run dir
    local deadline = socket.gettime() + 10 * SLOW
    repeat socket.sleep(0.1) until capture("test -e " .. sh_quote(rundir) .. " || echo gone"):match("gone")
      or socket.gettime() > deadline
    assert.equal("gone", capture("test -e " .. sh_quote(rundir) .. " || echo gone"):match("%a+"))
    assert.is_false(launch.listening(tonumber(p)))
    assert.equal("yes", capture("test -d " .. sh_quote(tmp .. "/x/ab") .. " && test -d " .. sh_quote(base) .. " && echo yes"):match("%a+"))
  end)
end)
