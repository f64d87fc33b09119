-- The release: one version everywhere (_VERSION, the versioned rockspec, CHANGELOG.md's top
-- entry), and the source rock `make rock` builds offline installs and loads under every Lua
-- (that part runs once, as the target "hosts": it does not depend on the driving Lua).
local T = require "spec.support.env"

local function slurp(path)
  return assert(T.read_file(path), "cannot read " .. path)
end

local function version()
  return (T.kvs._VERSION:match("^apify%.kvs (%S+)$"))
end

describe("release version", function()
  it("is one in _VERSION, src/kvs.h, the versioned rockspec and CHANGELOG.md's top entry", function()
    local v = version()
    assert.is_string(v)
    assert.matches("^%d+%.%d+%.%d+$", v)
    assert.are.equal(v, slurp("src/kvs.h"):match('#define KVS_VERSION "([^"]+)"'))

    local rockspec_path = "rockspec/apify-kvs-" .. v .. "-1.rockspec"
    local spec, chunk = {}, nil
    if setfenv then   -- 5.1, LuaJIT
      chunk = assert(loadstring(slurp(rockspec_path), rockspec_path))
      setfenv(chunk, spec)
    else
      chunk = assert(load(slurp(rockspec_path), rockspec_path, "t", spec))
    end
    chunk()
    assert.are.equal("apify-kvs", spec.package)
    assert.are.equal(v .. "-1", spec.version)
    assert.are.equal("https://github.com/apify-kvs/apify-kvs/archive/refs/tags/v" .. v .. ".tar.gz",
                     spec.source.url)
    assert.are.equal("apify-kvs-" .. v, spec.source.dir)
    assert.are.equal("MIT", spec.description.license)
    assert.is_string(spec.description.homepage)

    local top = slurp("CHANGELOG.md"):match("\n## (%d%S*)")   -- the newest release, below "Unreleased"
    assert.are.equal(v, top)
    assert.matches("Copyright %(c%) 2026 the apify%.kvs authors", slurp("LICENSE"))
  end)
end)

if T.target == "hosts" then
  describe("make rock", function()
    local tmp

    lazy_setup(function() tmp = T.tmpdir() end)
    lazy_teardown(function() T.rmrf(tmp) end)

    it("builds a .src.rock offline that installs and loads under 5.1, 5.2, 5.3, 5.4 and LuaJIT", function()
      -- from a copy, so the spec neither needs nor disturbs this checkout's build/
      assert(T.sh("mkdir -p " .. tmp .. "/src && " ..
        "{ git ls-files --cached --others --exclude-standard 2>/dev/null; } | sort -u" ..
        " | tar -cf - -T - | tar -C " .. tmp .. "/src -xf -"))
      local v = version()
      local rock = tmp .. "/src/build/rock/apify-kvs-" .. v .. "-1.src.rock"
      -- no network: proxies that lead nowhere
      local offline = "http_proxy=http://127.0.0.1:1 https_proxy=http://127.0.0.1:1 " ..
                      "all_proxy=http://127.0.0.1:1 "
      local log = T.read("cd " .. tmp .. "/src && " .. offline .. "make -s --no-print-directory rock 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      assert.is_truthy(io.open(rock, "rb"), "no " .. rock .. "\n" .. log)

      -- LuaJIT: the 5.1 build as is, and one against LuaJIT's own headers (what a LuaRocks
      -- configured for LuaJIT does)
      for _, t in ipairs({ { "5.1", "lua5.1" }, { "5.2", "lua5.2" }, { "5.3", "lua5.3" },
                           { "5.4", "lua5.4" }, { "5.1", "luajit", "LUA_INCDIR=/usr/include/luajit-2.1" },
                           { "5.1", "luajit", nil, "lua5.1" } }) do
        local abi, lua, extra, same_tree_as = t[1], t[2], t[3], t[4]
        local tree = tmp .. "/tree-" .. (same_tree_as or lua)
        if not same_tree_as then
          log = T.read(offline .. "luarocks --lua-version " .. abi .. " --tree " .. tree ..
            " install " .. rock .. " " .. (extra or "") .. " 2>&1; echo \"exit=$?\"")
          assert.matches("exit=0%s*$", log, lua)
        end
        local out = T.read("LUA_CPATH='" .. tree .. "/lib/lua/" .. abi .. "/?.so' LUA_PATH='" .. tree ..
          "/share/lua/" .. abi .. "/?.lua' " .. lua .. " -e \"local k = require('apify.kvs'); " ..
          "require('apify.kvs.openresty'); io.write(k._VERSION)\" 2>&1")
        assert.are.equal("apify.kvs " .. v, out, lua)
        assert.is_truthy(io.open(tree .. "/lib/luarocks/rocks-" .. abi .. "/apify-kvs/" .. v ..
          "-1/types/apify/kvs.lua", "rb"), lua .. ": no types in the rock")
        -- the tool: LuaRocks' wrapper runs the interpreter LuaRocks knows (lua5.1 for the
        -- 5.1 trees); under LuaJIT, run the script itself
        local tool = tree .. "/bin/apify-kvs"
        if lua == "luajit" then
          tool = "LUA_CPATH='" .. tree .. "/lib/lua/5.1/?.so' luajit " .. tree ..
                 "/lib/luarocks/rocks-5.1/apify-kvs/" .. v .. "-1/bin/apify-kvs"
        end
        assert.are.equal("apify.kvs " .. v .. "\n", T.read(tool .. " --version 2>&1"), lua)
      end
    end)
  end)
end
