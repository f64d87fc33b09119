-- LuaRocks: `luarocks make` from a copy of the checkout installs a module that
-- a fresh interpreter can load and use. Offline; Debian's luarocks.
local T = require "spec.support.env"

local VERSIONS = { ["5.1"] = "5.1", ["5.2"] = "5.2", ["5.3"] = "5.3", ["5.4"] = "5.4", jit = "5.1" }
local rocks_lua = VERSIONS[T.target]

-- the sanitizer and valgrind passes re-run the C code, not the packaging
if rocks_lua then
  describe("luarocks make", function()
    local tmp

    lazy_setup(function() tmp = T.tmpdir() end)
    lazy_teardown(function() T.rmrf(tmp) end)

    it("builds and installs apify.kvs into a tree, and the module loads", function()
      assert(T.sh("mkdir -p " .. tmp .. "/src && cp -r src lua rockspec " .. tmp .. "/src/"))
      local log = T.read("cd " .. tmp .. "/src && luarocks --lua-version " .. rocks_lua ..
        " --tree " .. tmp .. "/tree make rockspec/apify-kvs-scm-1.rockspec" ..
        " CURL_INCDIR=/usr/include/x86_64-linux-gnu 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      local so = tmp .. "/tree/lib/lua/" .. rocks_lua .. "/apify/kvs.so"
      assert.is_truthy(io.open(so, "rb"), "no " .. so .. "\n" .. log)

      local lua_module = tmp .. "/tree/share/lua/" .. rocks_lua .. "/apify/kvs/openresty.lua"
      assert.is_truthy(io.open(lua_module, "rb"), "no " .. lua_module)

      -- only luaopen_apify_kvs is exported
      local syms = T.read("nm -D --defined-only " .. so .. " | awk '$2 == \"T\" {print $3}'")
      assert.are.equal("luaopen_apify_kvs\n", syms)

      local out = T.read("LUA_CPATH='" .. tmp .. "/tree/lib/lua/" .. rocks_lua .. "/?.so' " ..
        T.lua .. " -e \"local k = require('apify.kvs'); io.write(k._VERSION, ' ', " ..
        "tostring(k.new{ base_url = 'http://127.0.0.1:1', token = false }))\" 2>&1")
      assert.are.equal("apify.kvs 0.1.0 apify.kvs.client (http://127.0.0.1:1, no token)", out)
    end)
  end)
end
