-- ca_file and ca_path (kvs.new): trusting a private CA for one client. A real TLS front end,
-- a Debian nginx (`listen ... ssl; proxy_pass` to the emulator), serves certificates of a CA
-- made here with openssl; every libcurl driver lists through it.
local T = require "spec.support.env"

local kvs = T.kvs
local q = T.sh_quote
local TOKEN = "apify_api_trust_SECRET_7c1e"
local KEYS = T.numbered(25)

-- Runs openssl in dir; raises with its output when it fails.
local function openssl(dir, args)
  local out = T.read("cd " .. q(dir) .. " && openssl " .. args .. " 2>&1; echo \"rc=$?\"")
  assert(out:match("rc=0%s*$"), "openssl " .. args .. ":\n" .. out)
end

-- An EC key and a self-signed CA certificate: <name>.key, <name>.pem.
local function make_ca(dir, name, cn)
  openssl(dir, "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    .. " -subj " .. q("/CN=" .. cn) .. " -addext basicConstraints=critical,CA:TRUE"
    .. " -addext keyUsage=critical,keyCertSign,cRLSign"
    .. " -keyout " .. name .. ".key -out " .. name .. ".pem")
end

-- A server key and certificate <name>.key, <name>.pem for `san`, signed by the CA `ca`.
local function make_cert(dir, name, ca, cn, san)
  T.write_file(dir .. "/" .. name .. ".ext", "subjectAltName=" .. san .. "\n"
    .. "extendedKeyUsage=serverAuth\n")
  openssl(dir, "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj " .. q("/CN=" .. cn)
    .. " -keyout " .. name .. ".key -out " .. name .. ".csr")
  openssl(dir, "x509 -req -in " .. name .. ".csr -CA " .. ca .. ".pem -CAkey " .. ca .. ".key"
    .. " -CAcreateserial -days 2 -extfile " .. name .. ".ext -out " .. name .. ".pem")
end

-- Two TLS servers in front of the emulator: ports[1] with a certificate for localhost and
-- 127.0.0.1, ports[2] with one for another name, both signed by the CA. No `user root;`: the
-- master reads the certificates and keys (in the private run directory) when it loads this
-- configuration; the workers, nobody when the master is root, only relay bytes, and never
-- buffer a reply to disk.
local CONF = [[
@USER@
daemon on;
master_process on;
worker_processes 1;
error_log "@RUNDIR@/error.log" info;
pid "@RUNDIR@/nginx.pid";

events {
    worker_connections 64;
}

http {
    access_log off;
    proxy_max_temp_file_size 0;

    server {
        listen 127.0.0.1:@PORT@ ssl;
        ssl_certificate "@RUNDIR@/server.pem";
        ssl_certificate_key "@RUNDIR@/server.key";
        location / { proxy_pass http://127.0.0.1:@EMU_PORT@; }
    }
    server {
        listen 127.0.0.1:@OTHER_PORT@ ssl;
        ssl_certificate "@RUNDIR@/other.pem";
        ssl_certificate_key "@RUNDIR@/other.key";
        location / { proxy_pass http://127.0.0.1:@EMU_PORT@; }
    }
}
]]

-- Starts the front end in a new private directory holding the CAs and certificates.
local function start_front(emu)
  local dir = T.tmpdir()
  local ok, proc = pcall(function()
    make_ca(dir, "ca", "apify.kvs test CA")
    make_ca(dir, "stranger", "another test CA")
    make_cert(dir, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
    make_cert(dir, "other", "ca", "other.example", "DNS:other.example")
    assert(T.sh("chmod 0600 " .. q(dir) .. "/*.key"))
    return T.launch.start_nginx({
      name = "TLS front end", rundir = dir, nports = 2, timeout = 30 * T.slow,
      render = function(ports)
        return (CONF:gsub("@([%u_]+)@", {
          USER = T.launch.user_directive(), RUNDIR = dir,
          PORT = tostring(ports[1]), OTHER_PORT = tostring(ports[2]), EMU_PORT = tostring(emu.port),
        }))
      end,
    })
  end)
  if not ok then
    T.rmrf(dir)
    error(proc, 0)
  end
  -- stops it once this process is gone: a crashed run leaves no nginx behind
  T.launch.watch(dir, tonumber(T.read("echo $PPID"):match("%d+")), proc.pid)
  return { dir = dir, port = proc.ports[1], other_port = proc.ports[2], pid = proc.pid }
end

local list_by_keys, list_by_job = T.keys_via_keys, T.keys_via_job

local function list_by_list_keys(store, opts)
  local page, err = store:list_keys(opts)
  local keys = {}
  for i, item in ipairs(page and page.items or {}) do keys[i] = item.key end
  return keys, err
end

-- Every driver over libcurl: blocking, prefetching, parallel, non-blocking, one page.
local DRIVERS = {
  { "store:keys", list_by_keys, { page_size = 10 } },
  { "store:keys{prefetch=false}", list_by_keys, { page_size = 10, prefetch = false } },
  { "store:keys{parallel=3}", list_by_keys, { page_size = 10, parallel = 3 } },
  { "store:job", list_by_job, { page_size = 10 } },
  { "store:job{parallel=3}", list_by_job, { page_size = 10, parallel = 3 } },
  { "store:list_keys", list_by_list_keys, {} },
}

describe("trusting a private CA (ca_file, ca_path) through a real TLS front end", function()
  local ctx = T.emulated({ s = KEYS }, TOKEN)
  local front, retried

  lazy_setup(function() front = start_front(ctx.emu) end)
  lazy_teardown(function()
    if not front then return end
    local gone = T.launch.stop_nginx(front.dir, { front.pid })
    T.rmrf(front.dir)
    assert(gone, "the TLS front end is still running")
  end)
  before_each(function() retried = 0 end)

  local function client(opts, port, host)
    local o = { base_url = "https://" .. (host or "localhost") .. ":" .. (port or front.port),
                token = TOKEN, min_delay = 0.01, max_retries = 3, timeout = 5 * T.slow,
                on_retry = function() retried = retried + 1 end }
    for k, v in pairs(opts) do o[k] = v end
    return kvs.new(o)
  end

  -- fails at once as tls-error: no retry, nothing reached the emulator
  local function assert_tls_error(keys, err)
    assert.are.same({}, keys)
    assert.are.equal("table", type(err), tostring(err))
    assert.are.equal("tls-error", err.type, tostring(err.message))
    assert.are.equal(0, err.retries)
    assert.are.equal(0, retried)
    assert.is_nil(tostring(err):find(TOKEN, 1, true))
    assert.are.equal(0, #ctx.emu:requests())
  end

  for _, d in ipairs(DRIVERS) do
    local name, list, opts = d[1], d[2], d[3]

    it("lists every key with ca_file naming the CA [" .. name .. "]", function()
      local keys, err = list(client{ ca_file = front.dir .. "/ca.pem" }:store("s"), opts)
      assert.is_nil(err, err and tostring(err))
      assert.are.same(KEYS, keys)
      assert.are.equal(0, retried)
    end)

    it("without ca_file (the system store): tls-error at once, not retried [" .. name .. "]", function()
      assert_tls_error(list(client{}:store("s"), opts))
    end)
  end

  it("checks the address too: a certificate naming 127.0.0.1 in its subjectAltName", function()
    local keys, err = list_by_keys(client({ ca_file = front.dir .. "/ca.pem" }, nil, "127.0.0.1"):store("s"))
    assert.is_nil(err, err and tostring(err))
    assert.are.same(KEYS, keys)
  end)

  it("a certificate for another name, signed by the trusted CA: tls-error", function()
    local keys, err = list_by_keys(client({ ca_file = front.dir .. "/ca.pem" }, front.other_port):store("s"))
    assert_tls_error(keys, err)
    assert.matches("localhost", err.message)
  end)

  it("another CA's certificate in ca_file: tls-error", function()
    assert_tls_error(list_by_keys(client{ ca_file = front.dir .. "/stranger.pem" }:store("s")))
  end)

  it("lists every key with ca_path naming a directory hashed by openssl rehash", function()
    local hashed = T.tmpdir()
    assert(T.sh("cp " .. q(front.dir .. "/ca.pem") .. " " .. q(hashed .. "/private-ca.pem")))
    openssl(hashed, "rehash .")
    for _, d in ipairs(DRIVERS) do
      local keys, err = d[2](client{ ca_path = hashed }:store("s"), d[3])
      assert.is_nil(err, d[1] .. ": " .. tostring(err))
      assert.are.same(KEYS, keys, d[1])
    end
    -- the same directory without the hash links: OpenSSL finds no CA in it
    assert(T.sh("find " .. q(hashed) .. " -type l -delete"))
    ctx.emu:clear_requests()
    assert_tls_error(list_by_keys(client{ ca_path = hashed }:store("s")))
    T.rmrf(hashed)
  end)

  it("a CA file gone or unreadable as PEM after kvs.new: tls-error, not retried", function()
    local scratch = T.tmpdir()
    local gone = scratch .. "/ca.pem"
    assert(T.sh("cp " .. q(front.dir .. "/ca.pem") .. " " .. q(gone)))
    local c = client{ ca_file = gone }
    os.remove(gone)
    assert_tls_error(list_by_keys(c:store("s")))
    T.write_file(scratch .. "/junk.pem", "not a certificate\n")
    assert_tls_error(list_by_keys(client{ ca_file = scratch .. "/junk.pem" }:store("s")))
    T.rmrf(scratch)
  end)
end)

describe("ca_file and ca_path are checked at kvs.new", function()
  local dir
  lazy_setup(function()
    dir = T.tmpdir()
    T.write_file(dir .. "/ca.pem", "placeholder: kvs.new does not read it\n")
  end)
  lazy_teardown(function() T.rmrf(dir) end)

  local function new_error(opts)
    opts.base_url, opts.token = "https://127.0.0.1:1", false
    local err = T.raised(kvs.new, opts)
    assert.is_string(err)   -- a programmer mistake: a string, raised before any request
    return err
  end

  it("takes an existing file and an existing directory", function()
    local c = kvs.new{ base_url = "https://127.0.0.1:1", token = false, ca_file = dir .. "/ca.pem",
                       ca_path = dir }
    assert.matches("^apify%.kvs%.client", tostring(c))
  end)

  it("wants strings: no boolean turns verification off", function()
    for _, name in ipairs({ "ca_file", "ca_path" }) do
      for _, v in ipairs({ false, true, 1, {} }) do
        assert.matches("option '" .. name .. "' must be a string, got " .. type(v),
                       new_error{ [name] = v }, 1, true)
      end
      assert.matches("option '" .. name .. "' must not be empty", new_error{ [name] = "" }, 1, true)
      assert.matches("option '" .. name .. "' must not contain a NUL byte",
                     new_error{ [name] = dir .. "/ca.pem\0.txt" }, 1, true)
    end
    for _, off in ipairs({ "verify", "ssl_verify", "insecure", "ssl_verify_peer" }) do
      assert.matches("unknown option '" .. off .. "'", new_error{ [off] = false }, 1, true)
    end
  end)

  it("names the option and the path of a file or directory that is not there", function()
    local err = new_error{ ca_file = dir .. "/missing.pem" }
    assert.matches("option 'ca_file': cannot read " .. dir .. "/missing.pem (No such file or directory)",
                   err, 1, true)
    err = new_error{ ca_path = dir .. "/missing" }
    assert.matches("option 'ca_path': cannot read " .. dir .. "/missing (No such file or directory)",
                   err, 1, true)
  end)

  it("tells a directory from a file", function()
    assert.matches("option 'ca_file' names a directory (ca_path takes a directory of hashed "
      .. "certificates)", new_error{ ca_file = dir }, 1, true)
    assert.matches("option 'ca_path' names a file, not a directory (ca_file takes a file)",
                   new_error{ ca_path = dir .. "/ca.pem" }, 1, true)
  end)
end)
