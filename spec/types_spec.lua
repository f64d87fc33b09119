-- types/apify/kvs.lua (lua-language-server definitions) against the module itself: every
-- function, method, option and error field the module has is declared, and nothing more.
-- Methods come from the objects' method tables (debug.getmetatable sees past the locked
-- metatable); options from asking the module (an unknown name raises "unknown option"),
-- over the names of the definitions and of the option tables in src/.
local T = require "spec.support.env"
local kvs = T.kvs

local function slurp(path)
  return assert(T.read_file(path), "cannot read " .. path)
end

-- The definitions: functions/methods per class, fields per class (with inheritance).
local function parse_defs(text)
  local methods, fields, parent, var_class = {}, {}, {}, {}
  local current
  for line in text:gmatch("[^\n]*") do
    local cls, par = line:match("^%-%-%-@class%s+([%w%._]+)%s*:?%s*([%w%._]*)")
    if cls then
      current = cls
      fields[cls] = fields[cls] or {}
      if par ~= "" then parent[cls] = par end
    else
      local f = line:match("^%-%-%-@field%s+([%w_]+)%??%s")
      if f and current then fields[current][f] = true end
      local var = line:match("^local%s+([%w_]+)%s*=%s*{}")
      if var and current then var_class[var] = current end
      local obj, sep, name = line:match("^function%s+([%w_]+)([%.:])([%w_]+)%s*%(")
      if obj then
        local c = var_class[obj] or obj
        methods[c] = methods[c] or {}
        methods[c][name] = sep
      end
    end
  end
  local function all_fields(cls)
    local out = {}
    while cls do
      for k in pairs(fields[cls] or {}) do out[k] = true end
      cls = parent[cls]
    end
    return out
  end
  return methods, all_fields
end

local function union(...)
  local out = {}
  for _, s in ipairs({ ... }) do for k in pairs(s) do out[k] = true end end
  return out
end

local function method_names(obj)
  local mt = debug.getmetatable(obj)
  local index = mt and mt.__index
  assert(type(index) == "table", "no method table on " .. tostring(obj))
  local out = {}
  for k, v in pairs(index) do
    if type(k) == "string" and type(v) == "function" then out[k] = true end
  end
  return out
end

-- option names written in the src option tables: { "name", LUA_T...
local function src_option_names(file)
  local out = {}
  for name in slurp(file):gmatch('{%s*"([%w_]+)"%s*,%s*LUA_T%u+') do out[name] = true end
  return out
end

-- does call(opts) know the option `name`? (a table is the wrong type for every option)
local function knows(call, name)
  local ok, err = pcall(call, { [name] = {} })
  return ok or not tostring(err):find("unknown option", 1, true)
end

-- fails naming what is missing on which side
local function same(module_side, defs_side, what)
  local only_module, only_defs = {}, {}
  for k in pairs(module_side) do if not defs_side[k] then only_module[#only_module + 1] = k end end
  for k in pairs(defs_side) do if not module_side[k] then only_defs[#only_defs + 1] = k end end
  table.sort(only_module)
  table.sort(only_defs)
  assert(#only_module == 0 and #only_defs == 0, what .. ": in the module, not in " ..
    "types/apify/kvs.lua: {" .. table.concat(only_module, ", ") .. "}; in the definitions, " ..
    "not in the module: {" .. table.concat(only_defs, ", ") .. "}")
end

describe("type definitions (types/apify/kvs.lua)", function()
  local defs_methods, defs_fields
  local client, store

  lazy_setup(function()
    local text = slurp("types/apify/kvs.lua")
    assert.matches("^%-%-%-@meta", text)
    defs_methods, defs_fields = parse_defs(text)
    client = kvs.new{ base_url = "http://127.0.0.1:1", token = false }
    store = client:store("s")
  end)

  it("declare the module's functions and fields", function()
    local module_fns, module_fields = {}, {}
    for k, v in pairs(kvs) do
      if type(v) == "function" then module_fns[k] = true else module_fields[k] = true end
    end
    same(module_fns, defs_methods["apify.kvs"] or {}, "functions")
    same(module_fields, defs_fields("apify.kvs"), "module fields")
  end)

  it("declare every method of clients, stores, listings and jobs", function()
    same(method_names(client), defs_methods["apify.kvs.Client"] or {}, "client methods")
    same(method_names(store), defs_methods["apify.kvs.Store"] or {}, "store methods")
    -- store:keys and store:listing give listings, store:job jobs; however the module splits
    -- them into types, what these objects have is what Listing and Job declare together
    local _, keys_listing = store:keys{}
    local objects = union(method_names(keys_listing), method_names(store:listing{}),
                          method_names(store:job{}))
    keys_listing:close()
    same(objects, union(defs_methods["apify.kvs.Listing"] or {}, defs_methods["apify.kvs.Job"] or {}),
         "listing and job methods")
  end)

  local function check_options(call, class, src_names)
    local candidates = union(src_names, defs_fields(class))
    local module_side = {}
    for name in pairs(candidates) do
      if knows(call, name) then module_side[name] = true end
    end
    assert.is_false(knows(call, "no_such_option_at_all"))
    same(module_side, defs_fields(class), class)
  end

  it("declare kvs.new's options", function()
    check_options(kvs.new, "apify.kvs.ClientOptions", src_option_names("src/lua_kvs.c"))
  end)

  it("declare the options of keys, listing, job and list_keys", function()
    local names = src_option_names("src/lua_listing.c")
    check_options(function(o) local _, l = store:keys(o); l:close() end,
                  "apify.kvs.KeysOptions", names)
    check_options(function(o) local l = store:listing(o); l:close() end,
                  "apify.kvs.StoreListingOptions", names)
    check_options(function(o) store:job(o) end, "apify.kvs.JobOptions", names)
    -- list_keys with a known option goes on to the request: to port 1, refused at once
    local quick = kvs.new{ base_url = "http://127.0.0.1:1", token = false, max_retries = 0 }
    local qstore = quick:store("s")
    check_options(function(o) qstore:list_keys(o) end, "apify.kvs.ListKeysOptions", names)
  end)

  it("declare the error table's fields", function()
    local listing = store:listing{}
    assert.is_string((listing:request()))
    local step, err = listing:reply(404, { ["Content-Type"] = "application/json" },
      '{"error":{"type":"record-not-found","message":"Key-value store was not found"}}')
    assert.are.equal("failed", step)
    local fields = {}
    for k in pairs(err) do fields[k] = true end
    same(fields, defs_fields("apify.kvs.Error"), "error fields")
  end)
end)

-- docs/reference.md's "Editor support": the .luarc.json that points lua-language-server at the definitions
-- (Debian 12 packages no lua-language-server to run on them: its settings are checked here).
describe("the manual's .luarc.json for lua-language-server", function()
  local cjson = require "cjson"
  local section, config

  lazy_setup(function()
    section = assert((slurp("docs/reference.md") .. "\n##"):match("\n## Editor support\n(.-)\n##"),
                     "docs/reference.md has no section \"Editor support\"")
    local json = assert(section:match("```json\n(.-)```"), "no ```json block in Editor support")
    config = cjson.decode(json)
  end)

  it("is the section the definitions file sends its readers to", function()
    assert.matches('(see docs/reference.md, "Editor support")', slurp("types/apify/kvs.lua"), 1, true)
  end)

  it("names a Lua lua-language-server knows and the directories holding the definitions", function()
    local versions = { ["Lua 5.1"] = true, ["Lua 5.2"] = true, ["Lua 5.3"] = true,
                       ["Lua 5.4"] = true, LuaJIT = true }
    assert.is_true(versions[config.runtime.version], tostring(config.runtime.version))
    local library = config.workspace.library
    assert.are.equal(2, #library)
    -- the first: where make install puts them by default (Makefile: PREFIX, INSTALL_TYPES)
    local makefile = slurp("Makefile")
    local prefix = assert(makefile:match("\nPREFIX%s*%?=%s*(%S+)"))
    local types_dir = assert(makefile:match("\nINSTALL_TYPES%s*%?=%s*(%S+)")):gsub("%$%(PREFIX%)", prefix)
    assert.are.equal(types_dir, library[1])
    assert.matches("install %-m 644 types/apify/kvs.lua %$%(DESTDIR%)%$%(INSTALL_TYPES%)/apify/kvs.lua",
                   makefile)
    -- the second: a checkout's types/, relative to the workspace
    assert.matches("^[^/].*/types$", library[2])
  end)
end)
