-- emulator/emu_store.lua
--
-- Owns: the stores of the storage directory (Apify CLI layout,
-- <storage>/key_value_stores/<store>/<key>.<ext>): store ids to directories, record files to
-- keys, the sorted key list of a store (cached per worker), and the page a request asks for
-- before any fault shapes it. No symbolic link is followed (emu_common.lua's settings say how
-- workers reach the storage directory).

local lfs = require "lfs"
local rules = require "api_rules"
local C = require "emu_common"

local ngx = ngx
local M = {}

local settings, arg_string, json_value = C.settings, C.arg_string, C.json_value
local DEFAULT_LIMIT, MAX_LIMIT = C.DEFAULT_LIMIT, C.MAX_LIMIT

-- Per-worker cache: store directory -> { mtime, stable, keys (sorted), files (key -> file name) }
local key_cache = {}

---------------------------------------------------------------------------------------------------
-- stores and keys

-- "name", "username~name" and "~name" all name the directory "name".
local function store_dir_name(id)
  local name = id:match("^[^~]*~(.*)$") or id
  if name == "" or name == "." or name == ".." or name:find("/", 1, true) or name:find("%z") then
    return nil
  end
  return name
end

-- The directory of a store, or nil when there is none. Neither key_value_stores nor the store's
-- directory may be a symbolic link (one could lead out of the storage directory).
local function store_path(name)
  local stores = settings.storage_root .. "/key_value_stores"
  local dir = stores .. "/" .. name
  if lfs.symlinkattributes(stores, "mode") ~= "directory"
    or lfs.symlinkattributes(dir, "mode") ~= "directory" then
    return nil
  end
  return dir
end

-- Key of a record file: the file name without its last ".ext"; a name without a dot (or whose
-- only dot is the first character) is the key itself. nil for files that are not records.
local function key_of(file_name)
  if file_name == "__metadata__.json" or file_name:find("%.__metadata__%.json$") then
    return nil
  end
  local key = file_name:match("^(.+)%.[^.]*$")
  return key or file_name
end

local function scan_store(dir)
  local files, paths, keys = {}, {}, {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local key = key_of(name)
      local path = key and dir .. "/" .. name
      -- a symbolic link is never followed: it could lead out of the storage directory
      if key and lfs.symlinkattributes(path, "mode") == "file" then
        local prev = files[key]
        if not prev then
          keys[#keys + 1] = key
          files[key], paths[key] = name, path
        elseif name < prev then
          -- two files for one key (e.g. a.json and a.txt): keep one, deterministically
          files[key], paths[key] = name, path
        end
      end
    end
  end
  table.sort(keys) -- LuaJIT compares strings byte-wise: the API's UTF-8 binary order
  return keys, files, paths
end

-- The sorted key list of a store directory, cached until the directory's mtime changes.
-- lfs reports mtime in whole seconds, so a listing is only trusted while the directory was last
-- modified more than a second before the listing was taken; fresher directories are rescanned on
-- every request (at most ~1 s of rescans after a change). Overwriting a record in place does not
-- touch the directory: sizes are therefore read per reply, never cached.
local function store_listing(dir)
  local mtime = lfs.attributes(dir, "modification")
  if not mtime then return nil, "store directory vanished" end
  local cached = key_cache[dir]
  if cached and cached.stable and cached.mtime == mtime then
    return cached
  end
  ngx.update_time()
  local started = ngx.now()
  local ok, keys, files, paths = pcall(scan_store, dir)
  if not ok then return nil, keys end
  cached = { mtime = mtime, stable = (started - mtime) > 1.1, keys = keys, files = files,
             paths = paths }
  key_cache[dir] = cached
  return cached
end

-- First index i with keys[i] > k (strict) or >= k (not strict); #keys + 1 if none.
local function bound(keys, k, strict)
  local lo, hi = 1, #keys + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local v = keys[mid]
    if v < k or (strict and v == k) then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- The page a request asks for, as the API would send it, before any fault shapes it:
-- { items = keys (list), limit, esk, prefix, truncated, next_key, after (index in listing.keys of
-- the first key past the page) }; or nil and the message of a 400 invalid-input.
local function normal_page(listing, args, meta)
  local keys = listing.keys
  local limit_s = arg_string(args, "limit")
  local limit = DEFAULT_LIMIT
  if limit_s ~= nil then
    limit = tonumber(limit_s:match("^%s*(%d+)%s*$") or "")
    if not limit or limit < 1 or limit > MAX_LIMIT then
      return nil, "Invalid value of query parameter \"limit\": must be an integer between 1 and "
        .. MAX_LIMIT .. " (got " .. json_value(limit_s) .. ")"
    end
  end
  local esk = arg_string(args, "exclusiveStartKey")
  local prefix = arg_string(args, "prefix") or ""
  -- "collection": with a schema in the store's metadata, the keys of that collection; as the
  -- API does, the filter is applied to the chunk of `limit` keys the page scans, so a page may
  -- hold fewer keys than asked, or none, and still be truncated with a next cursor. Without a
  -- schema the parameter has nothing to work on and is ignored.
  local cname = arg_string(args, "collection")
  local coll
  if cname then
    local c, bad = rules.collection(meta, cname)
    if c == nil then return nil, bad end
    coll = c or nil
  end

  local first = 1
  if esk then first = bound(keys, esk, true) end
  if prefix ~= "" then first = math.max(first, bound(keys, prefix, false)) end

  local items, scanned = {}, 0
  local i = first
  while scanned < limit do
    local key = keys[i]
    if not key or key:sub(1, #prefix) ~= prefix then break end
    scanned = scanned + 1
    if not coll or (coll.prefix and key:sub(1, #coll.prefix) == coll.prefix)
      or (coll.key and key == coll.key) then
      items[#items + 1] = key
    end
    i = i + 1
  end
  local nxt = keys[i]
  local truncated = scanned > 0 and nxt ~= nil and nxt:sub(1, #prefix) == prefix
  return { items = items, limit = limit, esk = esk, prefix = prefix, truncated = truncated,
           next_key = truncated and keys[i - 1] or nil, after = i }
end

M.store_dir_name, M.store_path, M.store_listing, M.bound = store_dir_name, store_path, store_listing, bound
M.normal_page = normal_page

return M
