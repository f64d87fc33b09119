-- spec/private_checkout_spec.lua
--
-- Owns: the suite's own servers from a checkout inside a private (0700) directory, as a clone
-- into /root or a home directory is: the bench's nginx and the emulator serve files there
-- although, run as root, their workers run as nobody and cannot enter the parent. The copy is
-- of the working tree (what git tracks, as it is now) plus the built modules (the bench runs every Lua).

package.path = "./?.lua;" .. package.path

local launch = require "emulator.launch"
local sh_quote, capture = launch.sh_quote, launch.capture

local function sh(cmd)
  local out = capture("{ " .. cmd .. "; } 2>&1; echo \"exit=$?\"")
  return out:match("exit=0%s*$") ~= nil, out
end

describe("a checkout under a 0700 directory", function()
  local private, copy

  lazy_setup(function()
    private = assert(capture("mktemp -d /tmp/apify-kvs-private.XXXXXX"):match("%S+"))
    assert(sh("chmod 700 " .. sh_quote(private)))
    copy = private .. "/apify-kvs"
    local ok, out = sh("mkdir " .. sh_quote(copy) .. " && git ls-files -z | tar --null -T - -cf - "
      .. "| tar -xf - -C " .. sh_quote(copy) .. " && mkdir -p " .. sh_quote(copy .. "/build")
      .. " && cp -a build/5.1 build/5.2 build/5.3 build/5.4 build/jit " .. sh_quote(copy .. "/build/"))
    assert(ok, out)
  end)

  lazy_teardown(function()
    if private and private:match("^/tmp/apify%-kvs%-private%.[%w]+$") then sh("rm -rf " .. sh_quote(private)) end
  end)

  it("runs the bench smoke (its nginx serves the store through a descriptor)", function()
    local ok, out = sh("cd " .. sh_quote(copy) .. " && N=2000 R=1 STRICT=1 PEERS='kvs|floor' "
      .. "RESULTS=" .. sh_quote(private .. "/bench.md") .. " bash bench/run.sh")
    assert(ok, out)
    assert.matches("floor", launch.read_file(private .. "/bench.md"))
  end)

  it("runs the emulator over its examples/storage", function()
    local rundir = private .. "/emu"
    local ok, out = sh("cd " .. sh_quote(copy) .. " && KVS_EMULATOR_TOKEN=t lua5.4 emulator/launch.lua start "
      .. "--storage examples/storage --rundir " .. sh_quote(rundir) .. " 2>&1")
    assert(ok, out)
    local url = out:match("http://[%d.:]+")
    local listed = capture("curl -s -H 'Authorization: Bearer t' " .. sh_quote(url .. "/v2/key-value-stores/demo/keys"))
    sh("cd " .. sh_quote(copy) .. " && lua5.4 emulator/launch.lua stop --rundir " .. sh_quote(rundir))
    local n = 0
    for _ in listed:gmatch('"key":') do n = n + 1 end
    assert.equal(25, n, listed)
  end)
end)
