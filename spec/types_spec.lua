-- types/apify/kvs.lua (lua-language-server definitions) against the module itself: every
-- function, method, option and error field the module has is declared, and nothing more.
-- Methods come from the objects' method tables (debug.getmetatable sees past the locked
-- metatable); options from asking the module (an unknown name raises "unknown option") and
-- from the option registry (src/lua_options.h), per call and with each option's kind; the
-- manual (docs/reference.md) names every option.
local T = require "spec.support.env"
local kvs = T.kvs

local function slurp(path)
  return assert(T.read_file(path), "cannot read " .. path)
end

-- The definitions: functions/methods per class, fields per class (with inheritance), and
-- each field's type as written.
local function parse_defs(text)
  local methods, fields, parent, var_class, types = {}, {}, {}, {}, {}
  local current
  for line in text:gmatch("[^\n]*") do
    local cls, par = line:match("^%-%-%-@class%s+([%w%._]+)%s*:?%s*([%w%._]*)")
    if cls then
      current = cls
      fields[cls] = fields[cls] or {}
      if par ~= "" then parent[cls] = par end
    else
      local f, ty = line:match("^%-%-%-@field%s+([%w_]+)%??%s+(%S+)")
      if f and current then
        fields[current][f] = true
        types[current] = types[current] or {}
        types[current][f] = ty
      end
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
  local function all_fields(cls, with_types)
    local out = {}
    while cls do
      for k in pairs(fields[cls] or {}) do
        if out[k] == nil then out[k] = with_types and types[cls][k] or true end
      end
      cls = parent[cls]
    end
    return out
  end
  return methods, all_fields
end

-- The options registry of src/lua_options.h: for each call (KVS_CALL_NEW, ...), its options
-- as { name = kind } (kind: STRING, STRING_OR_FALSE, INTEGER, NUMBER, BOOLEAN, FUNCTION).
local function parse_registry(text)
  text = text:gsub("\\\n", " ")                  -- one line per macro
  local masks = {}
  for name, expr in text:gmatch("#define (KVS_[%u_]+)%s+([^\n]-)\n") do masks[name] = expr end
  local function calls_of(expr, depth)
    local out = {}
    for word in expr:gmatch("KVS_[%u_]+") do
      if word:match("^KVS_CALL_") then out[word] = true
      elseif masks[word] and depth < 4 then
        for c in pairs(calls_of(masks[word], depth + 1)) do out[c] = true end
      end
    end
    return out
  end
  local per_call, rows = {}, 0
  for name, kind, calls in text:gmatch('X%([%w_]+,%s*"([%w_]+)",%s*([%u_]+),%s*([%u_|%s]-),') do
    rows = rows + 1
    for call in pairs(calls_of(calls, 0)) do
      per_call[call] = per_call[call] or {}
      if per_call[call][name] == nil then per_call[call][name] = kind end
    end
  end
  assert(rows >= 20, "src/lua_options.h: only " .. rows .. " option rows found")
  return per_call
end

-- The kind an editor definition's type says, as the registry writes kinds.
local DEF_KIND = { string = "STRING", ["string|false"] = "STRING_OR_FALSE", integer = "INTEGER",
                   ['integer|"auto"'] = "INTEGER_OR_AUTO", number = "NUMBER", boolean = "BOOLEAN",
                   ["apify.kvs.on_retry"] = "FUNCTION" }

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
    local objects = union(method_names(keys_listing), method_names(store:listing{ parallel = 1 }),
                          method_names(store:job{}))
    keys_listing:close()
    same(objects, union(defs_methods["apify.kvs.Listing"] or {}, defs_methods["apify.kvs.Job"] or {}),
         "listing and job methods")
    local plan = store:listing{}
    same(method_names(plan), defs_methods["apify.kvs.Plan"] or {}, "plan methods")
    plan:close()
  end)

  -- For each call: the options the module takes (asked: an unknown name raises "unknown
  -- option") are the registry's for that call, and the definitions' class declares exactly
  -- those, with the registry's kinds.
  local function check_options(fn, call, class)
    local registry = parse_registry(slurp("src/lua_options.h"))[call]
    assert(registry, "no option of " .. call .. " in src/lua_options.h")
    local defs = defs_fields(class, true)
    local candidates = union(registry, defs, { parallel = true, rate_limit = true, prefetch = true })
    local module_side = {}
    for name in pairs(candidates) do
      if knows(fn, name) then module_side[name] = true end
    end
    assert.is_false(knows(fn, "no_such_option_at_all"))
    same(module_side, registry, call .. " (the module against src/lua_options.h)")
    same(registry, defs, class)
    for name, kind in pairs(registry) do
      assert.are.equal(kind, DEF_KIND[defs[name]], class .. "." .. name .. " is " .. tostring(defs[name]))
    end
  end

  it("declare kvs.new's options as the registry does", function()
    check_options(kvs.new, "KVS_CALL_NEW", "apify.kvs.ClientOptions")
  end)

  it("declare the options of each listing call as the registry does", function()
    check_options(function(o) local _, l = store:keys(o); l:close() end, "KVS_CALL_KEYS",
                  "apify.kvs.KeysOptions")
    check_options(function(o) store:job(o) end, "KVS_CALL_JOB", "apify.kvs.JobOptions")
    check_options(function(o) local l = store:listing(o); l:close() end, "KVS_CALL_PLAN",
                  "apify.kvs.PlanOptions")
    -- list_keys with a known option goes on to the request: to port 1, refused at once
    local quick = kvs.new{ base_url = "http://127.0.0.1:1", token = false, max_retries = 0 }
    local qstore = quick:store("s")
    check_options(function(o) qstore:list_keys(o) end, "KVS_CALL_LIST_KEYS", "apify.kvs.ListKeysOptions")
  end)

  it("declare store:listing{ parallel = 1 }'s options: one range's (rate_limit or ordered give the planner)", function()
    local registry = parse_registry(slurp("src/lua_options.h")).KVS_CALL_LISTING
    local module_side, defs = {}, defs_fields("apify.kvs.StoreListingOptions", true)
    for name in pairs(union(registry, defs, { prefetch = true })) do
      if knows(function(o)
        if o.parallel == nil then o.parallel = 1 end
        local l = store:listing(o); l:close()
      end, name) then module_side[name] = true end
    end
    same(module_side, registry, "store:listing{ parallel = 1 }")
    same(registry, defs, "apify.kvs.StoreListingOptions")
    for name, kind in pairs(registry) do
      assert.are.equal(kind, DEF_KIND[defs[name]], "apify.kvs.StoreListingOptions." .. name)
    end
    for _, o in ipairs({ { parallel = 1, rate_limit = 5 }, { parallel = 1, ordered = false } }) do
      assert.matches("^apify%.kvs%.plan ", tostring(store:listing(o)))
    end
  end)

  it("name every option in the manual (docs/reference.md)", function()
    local manual = slurp("docs/reference.md")
    local missing = {}
    for _, options in pairs(parse_registry(slurp("src/lua_options.h"))) do
      for name in pairs(options) do
        if not (manual:find("`" .. name .. "`", 1, true) or manual:find("%f[%w_]" .. name .. "%s*=")) then
          missing[name] = true
        end
      end
    end
    local names = {}
    for name in pairs(missing) do names[#names + 1] = name end
    table.sort(names)
    assert(#names == 0, "options docs/reference.md never names: " .. table.concat(names, ", "))
  end)

  it("declare the error table's fields", function()
    local listing = store:listing{ parallel = 1 }
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
describe("type definitions of apify.kvs.openresty (types/apify/kvs/openresty.lua)", function()
  it("declare the module's functions and the methods of what open returns", function()
    local defs = parse_defs(slurp("types/apify/kvs/openresty.lua"))
    -- loaded where nginx would say "content" (it reads ngx when it loads); open makes no
    -- request, so a store of a client of port 1 does
    local saved = rawget(_G, "ngx")
    _G.ngx = { get_phase = function() return "content" end }
    local ok, ngx_kvs = pcall(assert(loadfile("lua/apify/kvs/openresty.lua")))
    local pages
    if ok then
      local store = kvs.new{ base_url = "http://127.0.0.1:1", token = false }:store("s")
      ok, pages = pcall(ngx_kvs.open, store, { parallel = 2 })
    end
    _G.ngx = saved
    assert(ok, pages or ngx_kvs)
    local fns, fields = {}, {}
    for k, v in pairs(ngx_kvs) do
      if type(v) == "function" then fns[k] = true else fields[k] = true end
    end
    same(fns, defs["apify.kvs.openresty"] or {}, "apify.kvs.openresty functions")
    assert.are.same({}, fields)
    same(method_names(pages), defs["apify.kvs.openresty.Pages"] or {}, "the methods of ngx_kvs.open's object")
    pages:close()
  end)
end)

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
    -- the first: where make install puts them by default (the Makefile's INSTALL_TYPES, as
    -- make expands it)
    local types_dir = T.read("make -s --no-print-directory -f Makefile -f - print-types <<'MK'\n"
      .. "print-types:\n\t@echo $(INSTALL_TYPES)\nMK"):gsub("%s+$", "")
    assert.are.equal(types_dir, library[1])
    assert.matches('install %-m 644 types/apify/kvs.lua "[^"]*%$%(INSTALL_TYPES%)/apify/kvs.lua"',
                   slurp("Makefile"))
    -- the second: a checkout's types/, relative to the workspace
    assert.matches("^[^/].*/types$", library[2])
  end)
end)
