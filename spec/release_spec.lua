-- The release: one version everywhere (_VERSION, the versioned rockspec, CHANGELOG.md's top
-- entry), and the source rock `make rock` builds offline (the release's at its tag, an scm rock
-- elsewhere) installs and loads under every Lua (that part runs once, as the target "hosts":
-- it does not depend on the driving Lua).
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
    -- no network: proxies that lead nowhere
    local offline = "http_proxy=http://127.0.0.1:1 https_proxy=http://127.0.0.1:1 " ..
                    "all_proxy=http://127.0.0.1:1 "
    local GIT = "git -c user.name=spec -c user.email=spec@localhost -c init.defaultBranch=main "

    lazy_setup(function() tmp = T.tmpdir() end)
    lazy_teardown(function() T.rmrf(tmp) end)

    -- a copy of the checkout's files (tracked, and new ones not ignored), without its git
    -- history: the spec neither needs nor disturbs this checkout's build/
    local function copy(dir)
      assert(T.sh("mkdir -p " .. dir .. " && " ..
        "{ git ls-files --cached --others --exclude-standard 2>/dev/null; } | sort -u" ..
        " | tar -cf - -T - | tar -C " .. dir .. " -xf -"))
    end

    local function make_rock(dir)
      return (T.read("cd " .. dir .. " && " .. offline .. "make -s --no-print-directory rock 2>&1; echo \"exit=$?\""))
    end

    -- The rock installs and loads under every Lua. LuaJIT: the 5.1 build as is, and one against
    -- LuaJIT's own headers (what a LuaRocks configured for LuaJIT does).
    local function installs_everywhere(rock, rock_version, name)
      for _, t in ipairs({ { "5.1", "lua5.1" }, { "5.2", "lua5.2" }, { "5.3", "lua5.3" },
                           { "5.4", "lua5.4" }, { "5.1", "luajit", "LUA_INCDIR=/usr/include/luajit-2.1" },
                           { "5.1", "luajit", nil, "lua5.1" } }) do
        local abi, lua, extra, same_tree_as = t[1], t[2], t[3], t[4]
        local tree = tmp .. "/tree-" .. name .. "-" .. (same_tree_as or lua)
        if not same_tree_as then
          local log = T.read(offline .. "luarocks --lua-version " .. abi .. " --tree " .. tree ..
            " install " .. rock .. " " .. (extra or "") .. " 2>&1; echo \"exit=$?\"")
          assert.matches("exit=0%s*$", log, lua)
        end
        local out = T.read("LUA_CPATH='" .. tree .. "/lib/lua/" .. abi .. "/?.so' LUA_PATH='" .. tree ..
          "/share/lua/" .. abi .. "/?.lua' " .. lua .. " -e \"local k = require('apify.kvs'); " ..
          "require('apify.kvs.openresty'); io.write(k._VERSION)\" 2>&1")
        assert.are.equal("apify.kvs " .. version(), out, lua)
        local rock_dir = tree .. "/lib/luarocks/rocks-" .. abi .. "/apify-kvs/" .. rock_version
        assert.is_truthy(io.open(rock_dir .. "/types/apify/kvs.lua", "rb"), lua .. ": no types in the rock")
        -- the tool: LuaRocks' wrapper runs the interpreter LuaRocks knows (lua5.1 for the
        -- 5.1 trees); under LuaJIT, run the script itself
        local tool = tree .. "/bin/apify-kvs"
        if lua == "luajit" then
          tool = "LUA_CPATH='" .. tree .. "/lib/lua/5.1/?.so' luajit " .. rock_dir .. "/bin/apify-kvs"
        end
        assert.are.equal("apify.kvs " .. version() .. "\n", T.read(tool .. " --version 2>&1"), lua)
      end
    end

    it("builds an scm rock of a tree that is no release, offline; it installs under every Lua", function()
      local src = tmp .. "/scm"
      copy(src)
      local log = make_rock(src)
      assert.matches("exit=0%s*$", log)
      -- the tree is not the release v<version>: no rock may say it is
      assert.are.equal("apify-kvs-scm-1.src.rock\n", T.read("ls " .. src .. "/build/rock"))
      installs_everywhere(src .. "/build/rock/apify-kvs-scm-1.src.rock", "scm-1", "scm")

      -- a git checkout: at a commit after the tag, scm again; a tag that is not src/kvs.h's
      -- version is refused
      local git = "cd " .. src .. " && " .. GIT
      assert(T.sh(git .. "init -q && " .. GIT .. "add -A && " .. GIT .. "commit -qm release && " ..
                  GIT .. "tag v" .. version() .. " && echo change >>README.md && " ..
                  GIT .. "commit -qam 'after the release'"))
      assert.matches("build/rock/apify%-kvs%-scm%-1%.src%.rock\nexit=0", make_rock(src))
      assert(T.sh(git .. "tag v99.0.0"))
      assert.matches("rock: HEAD is tagged v99%.0%.0 but src/kvs%.h says " .. version():gsub("%p", "%%%0") ..
                     "\n.*exit=2", make_rock(src))
    end)

    it("builds the release's rock at its tag, from the tag's files; it installs under every Lua", function()
      local src = tmp .. "/tagged"
      copy(src)
      local git = "cd " .. src .. " && " .. GIT
      assert(T.sh(git .. "init -q && " .. GIT .. "add -A && " .. GIT .. "commit -qm release && " ..
                  GIT .. "tag v" .. version()))
      -- an uncommitted change is not part of the release
      assert(T.sh("echo 'uncommitted' >>" .. src .. "/README.md"))
      local log = make_rock(src)
      assert.matches("exit=0%s*$", log)
      local name = "apify-kvs-" .. version() .. "-1"
      assert.are.equal(name .. ".src.rock\n", T.read("ls " .. src .. "/build/rock"))
      local rock = src .. "/build/rock/" .. name .. ".src.rock"
      -- the rockspec and the tarball its source.url names, as GitHub serves it for the tag
      assert.are.equal(name .. ".rockspec\nv" .. version() .. ".tar.gz\n",
                       T.read("unzip -Z1 " .. rock .. " | sort"))
      assert.are.equal("", T.read("unzip -p " .. rock .. " v" .. version() .. ".tar.gz | tar -xzOf - apify-kvs-" ..
                                  version() .. "/README.md | grep -x uncommitted"))
      installs_everywhere(rock, version() .. "-1", "tagged")
    end)
  end)
end
