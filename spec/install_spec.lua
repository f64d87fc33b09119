-- Installing: `luarocks make` from a copy of the checkout (no extra argument, the copy left
-- as it was), and `make install` / `make uninstall` into a DESTDIR, each for the target's
-- Lua; the installed module loads in a fresh interpreter. Offline; Debian's luarocks.
local T = require "spec.support.env"

local VERSIONS = { ["5.1"] = "5.1", ["5.2"] = "5.2", ["5.3"] = "5.3", ["5.4"] = "5.4", jit = "5.1" }
local rocks_lua = VERSIONS[T.target]

local function version()
  local f = assert(io.open("src/kvs.h", "rb"))
  local v = f:read("*a"):match('#define KVS_VERSION "([^"]+)"')
  f:close()
  return v
end

-- the files of the checkout (tracked, and new ones not ignored), as a sorted listing
local CHECKOUT_FILES = "{ git ls-files --cached --others --exclude-standard 2>/dev/null; } | sort -u"

local function loads(cpath, lpath)
  return T.read("LUA_CPATH='" .. cpath .. "' LUA_PATH='" .. (lpath or "") .. "' " .. T.lua ..
    " -e \"local k = require('apify.kvs'); require('apify.kvs.openresty'); io.write(k._VERSION, ' ', " ..
    "tostring(k.new{ base_url = 'http://127.0.0.1:1', token = false }))\" 2>&1")
end

-- the sanitizer and valgrind passes re-run the C code, not the packaging
if rocks_lua then
  describe("luarocks make", function()
    local tmp

    lazy_setup(function() tmp = T.tmpdir() end)
    lazy_teardown(function() T.rmrf(tmp) end)

    it("installs apify.kvs, its Lua files, apify-kvs and the types; leaves the tree as it was", function()
      assert(T.sh("mkdir -p " .. tmp .. "/src && " .. CHECKOUT_FILES ..
        " | tar -cf - -T - | tar -C " .. tmp .. "/src -xf -"))
      local listing = "cd " .. tmp .. "/src && find . -path ./.git -prune -o -print | sort"
      local before = T.read(listing)
      assert.matches("./rockspec/apify%-kvs%-scm%-1.rockspec", before)

      local log = T.read("cd " .. tmp .. "/src && luarocks --lua-version " .. rocks_lua ..
        " --tree " .. tmp .. "/tree make rockspec/apify-kvs-scm-1.rockspec 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      -- nothing new: no src/*.o, no ./apify/kvs.so that ./?.so would load instead
      assert.are.equal(before, T.read(listing))

      local tree = tmp .. "/tree"
      local so = tree .. "/lib/lua/" .. rocks_lua .. "/apify/kvs.so"
      assert.is_truthy(io.open(so, "rb"), "no " .. so .. "\n" .. log)
      local lua_module = tree .. "/share/lua/" .. rocks_lua .. "/apify/kvs/openresty.lua"
      assert.is_truthy(io.open(lua_module, "rb"), "no " .. lua_module)
      local types = tree .. "/lib/luarocks/rocks-" .. rocks_lua .. "/apify-kvs/scm-1/types/apify/kvs.lua"
      assert.is_truthy(io.open(types, "rb"), "no " .. types)

      -- only luaopen_apify_kvs is exported
      local syms = T.read("nm -D --defined-only " .. so .. " | awk '$2 == \"T\" {print $3}'")
      assert.are.equal("luaopen_apify_kvs\n", syms)

      assert.are.equal("apify.kvs " .. version() .. " apify.kvs.client (http://127.0.0.1:1, no token)",
        loads(tree .. "/lib/lua/" .. rocks_lua .. "/?.so", tree .. "/share/lua/" .. rocks_lua .. "/?.lua"))
      -- the wrapper LuaRocks writes runs bin/apify-kvs with the tree on its paths
      assert.are.equal("apify.kvs " .. version() .. "\n", T.read(tree .. "/bin/apify-kvs --version 2>&1"))
    end)
  end)

  describe("make install", function()
    local tmp

    lazy_setup(function() tmp = T.tmpdir() end)
    lazy_teardown(function() T.rmrf(tmp) end)

    it("installs into DESTDIR where this Lua looks, and make uninstall removes it all", function()
      local make = "make -s --no-print-directory LUA=" .. T.target .. " DESTDIR=" .. tmp .. "/root"
      local log = T.read(make .. " install 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      local prefix = tmp .. "/root/usr/local"
      local files = T.read("cd " .. prefix .. " && find . -type f | sort")
      assert.are.equal(table.concat({
        "./bin/apify-kvs",
        "./lib/lua/" .. rocks_lua .. "/apify/kvs.so",
        "./share/apify-kvs/types/apify/kvs.lua",
        "./share/lua/" .. rocks_lua .. "/apify/kvs/openresty.lua",
      }, "\n") .. "\n", files)

      assert.are.equal("apify.kvs " .. version() .. " apify.kvs.client (http://127.0.0.1:1, no token)",
        loads(prefix .. "/lib/lua/" .. rocks_lua .. "/?.so", prefix .. "/share/lua/" .. rocks_lua .. "/?.lua"))
      -- the tool runs with the interpreter it was installed for
      local interpreter = T.target == "jit" and "luajit" or "lua" .. T.target
      local bin = prefix .. "/bin/apify-kvs"
      assert.are.equal("#!/usr/bin/env " .. interpreter .. "\n", T.read("head -1 " .. bin))
      assert.are.equal("apify.kvs " .. version() .. "\n",
        T.read("LUA_CPATH='" .. prefix .. "/lib/lua/" .. rocks_lua .. "/?.so' " .. bin .. " --version 2>&1"))

      -- PREFIX moves everything; the pkg-config prefix (/usr on Debian) uses its INSTALL_CMOD
      local moved = T.read(make .. " -n install PREFIX=/opt/kvs")
      assert.matches("/opt/kvs/lib/lua/" .. rocks_lua .. "/apify/kvs.so", moved)
      assert.matches("/opt/kvs/share/lua/" .. rocks_lua .. "/apify/kvs/openresty.lua", moved)
      local cmod = T.read("pkg-config --variable=INSTALL_CMOD " ..
        (T.target == "jit" and "luajit" or "lua" .. T.target) .. " 2>/dev/null"):gsub("%s+$", "")
      if cmod ~= "" then
        assert.matches(cmod:gsub("%p", "%%%0") .. "/apify/kvs.so", T.read(make .. " -n install PREFIX=/usr"))
      end

      log = T.read(make .. " uninstall 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      assert.are.equal("", T.read("find " .. tmp .. "/root -type f"))
    end)
  end)
end
