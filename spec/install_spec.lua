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
      local root = tmp .. "/root"
      -- directories that were there before: uninstall keeps them, empty or not
      assert(T.sh("mkdir -p " .. root .. "/usr/local/lib " .. root .. "/usr/local/bin && " ..
                  "echo other >" .. root .. "/usr/local/bin/other-tool"))
      local before = T.read("cd " .. root .. " && find . | sort")
      local log = T.read(make .. " install 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      local prefix = root .. "/usr/local"
      local files = T.read("cd " .. prefix .. " && find . -type f | sort")
      assert.are.equal(table.concat({
        "./bin/apify-kvs",
        "./bin/other-tool",
        "./lib/lua/" .. rocks_lua .. "/apify/kvs.so",
        "./share/apify-kvs/installed-" .. T.target,
        "./share/apify-kvs/types/apify/kvs.lua",
        "./share/apify-kvs/types/apify/kvs/openresty.lua",
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

      -- everything it made goes, directories included; what was there before stays
      log = T.read(make .. " uninstall 2>&1; echo \"exit=$?\"")
      assert.matches("exit=0%s*$", log)
      assert.are.equal(before, T.read("cd " .. root .. " && find . | sort"))
      log = T.read(make .. " uninstall 2>&1; echo \"exit=$?\"")
      assert.matches("nothing to uninstall.*exit=0%s*$", log)
    end)
  end)
end

-- LuaJIT has no directory of its own for C modules (Debian: its package.cpath is Lua 5.1's),
-- so LUA=jit and LUA=5.1 install the same paths: each build must load in both interpreters,
-- and uninstalling one must leave the other working.
if T.target == "jit" then
  describe("make install LUA=5.1 and LUA=jit", function()
    local tmp

    lazy_setup(function() tmp = T.tmpdir() end)
    lazy_teardown(function() T.rmrf(tmp) end)

    local function loads_in(lua, prefix)
      return T.read("LUA_CPATH='" .. prefix .. "/lib/lua/5.1/?.so' LUA_PATH='" .. prefix ..
        "/share/lua/5.1/?.lua' " .. lua .. " -e \"local k = require('apify.kvs'); " ..
        "require('apify.kvs.openresty'); io.write(k._VERSION)\" 2>&1")
    end

    it("install side by side, both load in lua5.1 and luajit, uninstall one by one", function()
      local root = tmp .. "/root"
      local prefix = root .. "/usr/local"
      local make = "make -s --no-print-directory DESTDIR=" .. root
      local expected = "apify.kvs " .. version()
      for _, order in ipairs({ { "5.1", "jit" }, { "jit", "5.1" } }) do
        for _, lua in ipairs(order) do
          assert.matches("exit=0%s*$", T.read(make .. " install LUA=" .. lua .. " 2>&1; echo \"exit=$?\""))
        end
        -- whichever came last, its kvs.so loads in both
        assert.are.equal(expected, loads_in("lua5.1", prefix), order[2] .. " installed last")
        assert.are.equal(expected, loads_in("luajit", prefix), order[2] .. " installed last")

        -- the first one's uninstall keeps what the second one needs, the tool running with it
        assert.matches("exit=0%s*$", T.read(make .. " uninstall LUA=" .. order[1] .. " 2>&1; echo \"exit=$?\""))
        assert.are.equal(expected, loads_in(order[2] == "jit" and "luajit" or "lua5.1", prefix))
        assert.are.equal("#!/usr/bin/env " .. (order[2] == "jit" and "luajit" or "lua5.1") .. "\n",
                         T.read("head -1 " .. prefix .. "/bin/apify-kvs"))
        assert.are.equal(expected .. "\n", T.read("LUA_CPATH='" .. prefix .. "/lib/lua/5.1/?.so' " ..
                         prefix .. "/bin/apify-kvs --version 2>&1"))

        assert.matches("exit=0%s*$", T.read(make .. " uninstall LUA=" .. order[2] .. " 2>&1; echo \"exit=$?\""))
        assert.are.equal("", T.read("find " .. root .. " -mindepth 1 2>&1"))
      end
    end)
  end)
end

-- `make demo` installs DEMO_DEBS and nothing else: each Lua module the demo's scripts and the
-- emulator require (unconditionally, not through pcall) must come from one of those packages,
-- or be built in. Found the way the interpreter finds it, then asked of dpkg which package owns it.
if T.target == "5.4" then
  describe("make demo's Debian packages", function()
    local function required(files)
      local names = {}
      for _, file in ipairs(files) do
        for line in io.lines(file) do
          if not line:find("pcall", 1, true) and not line:match("^%s*%-%-") then
            for name in line:gmatch("require%s*%(?%s*[\"']([%w_.]+)[\"']") do names[name] = true end
          end
        end
      end
      return names
    end
    local OWN = { ["apify.kvs"] = true, api_rules = true, ["emulator.launch"] = true, emu_common = true,
                  emu_store = true, emu_faults = true, emu_control = true }

    it("provide every module the demo and the emulator require", function()
      local debs = T.read("make -s --no-print-directory -f Makefile -f - print-demo-debs <<'MK'\n" ..
        "print-demo-debs:\n\t@echo $(DEMO_DEBS)\nMK")
      local listed = {}
      for p in debs:gmatch("%S+") do listed[p] = true end
      assert.is_true(listed["lua5.4"] and listed.nginx and listed["libnginx-mod-http-lua"])

      -- run by lua5.4: the demo's scripts and launch.lua; run in nginx (LuaJIT, 5.1 paths): the rest
      local sides = {
        { lua = "lua5.4", names = required { "emulator/launch.lua", "examples/list_keys.lua",
          "examples/resume.lua", "examples/one_page.lua", "bin/apify-kvs" } },
        { lua = "luajit", names = required { "emulator/kvs_emulator.lua", "emulator/api_rules.lua",
          "emulator/emu_common.lua", "emulator/emu_store.lua", "emulator/emu_faults.lua", "emulator/emu_control.lua" } },
      }
      local checked = 0
      for _, side in ipairs(sides) do
        for name in pairs(side.names) do
          if not OWN[name] then
            local where = T.read(side.lua .. " -e \"local n = '" .. name .. "'; " ..
              "if package.loaded[n] or package.preload[n] then return print('builtin') end " ..
              "local p = package.searchpath(n, package.path) or package.searchpath(n, package.cpath) " ..
              "or package.searchpath(n:match('^[^.]+'), package.cpath); print(p or 'missing')\"")
              :gsub("%s+$", "")
            assert.are_not.equal("missing", where, side.lua .. " cannot find module '" .. name .. "'")
            if where ~= "builtin" then
              local owner = T.read("dpkg -S " .. T.sh_quote(where) .. " 2>/dev/null | head -1 | cut -d: -f1")
                :gsub("%s+$", "")
              assert.is_true(listed[owner] == true, "module '" .. name .. "' (" .. where ..
                ") comes from Debian package '" .. owner .. "', which is not in the Makefile's DEMO_DEBS")
              checked = checked + 1
            end
          end
        end
      end
      assert.is_true(checked >= 4, "found only " .. checked .. " modules to check")
    end)
  end)
end
