-- spec/support/emulator.lua — what the emulator's own specs (spec/emulator_*_spec.lua) share:
-- scratch stores, raw HTTP requests to the emulator (exact bytes, any Host, with or without the
-- control secret), the key sets and pages they check, memory and stream meters, and the stores
-- of the main fixture (with_stores). Needs only luasocket and lua-cjson, no apify.kvs.

local cjson = require "cjson"
local launch = require "emulator.launch"

local M = {}

local sh_quote, write_file = launch.sh_quote, launch.write_file

-- A raw HTTP/1.1 client on one luasocket connection (keep-alive, exact bytes, partial bodies).
local connect = require("spec.support.http").connect
M.connect = connect

local function mkdir(path)
  assert(os.execute("mkdir -p " .. sh_quote(path)))
end

-- A scratch directory for a block's stores, and its removal (only what scratch_dir made). It is
-- readable by others: run as root, the emulator's workers run as nobody.
local function scratch_dir()
  local dir = assert(launch.mktemp_dir("kvs-emulator-spec"))
  assert(os.execute("chmod 755 " .. sh_quote(dir)))
  return dir
end

-- The headers of a control API call made without launch.lua's helpers.
local function control(emu, extra)
  local headers = { Authorization = "Bearer " .. emu.control_secret }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return headers
end

local function remove_scratch(dir)
  if dir and dir:match("/kvs%-emulator%-spec%.[%w]+$") then os.execute("rm -rf " .. sh_quote(dir)) end
end


-- One request on a fresh connection.
local function request(port, method, path, headers, body)
  local c = connect(port)
  local res, err, partial = c:request(method, path, headers, true, body)
  c:close()
  return res, err, partial
end

local function get(port, path, headers)
  return assert(request(port, "GET", path, headers))
end

local function keys_path(store, query)
  return "/v2/key-value-stores/" .. store .. "/keys" .. (query and ("?" .. query) or "")
end

local function list(port, store, query, headers)
  local res = get(port, keys_path(store, query), headers)
  res.json = cjson.decode(res.body)
  return res
end

local function keys_of(data)
  local out = {}
  for i, item in ipairs(data.items) do out[i] = item.key end
  return out
end

local function url_encode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Key set whose byte order differs from any case-insensitive or locale order.
local ORDER_FILES = {
  "!.json", "'.json", "(.json", ").json", "-.json", "0.json", "A.json", "Z.json", "_.json",
  "a.json", "a-b.json", "a.b.json", "z.json", "~.json", "\195\169.json",
}
local ORDER_KEYS = { "!", "'", "(", ")", "-", "0", "A", "Z", "_", "a", "a-b", "a.b", "z", "~", "\195\169" }

-- Upper time bounds are scaled for slow runs (valgrind, sanitizers): KVS_SLOW=4.
local SLOW = tonumber(os.getenv("KVS_SLOW") or "1") or 1

local PAGING_COUNT = 2500
local function paging_key(i) return string.format("k-%05d", i) end

-- paging_key(from) .. paging_key(to)
local function paging_keys(from, to)
  local out = {}
  for i = from, to do out[#out + 1] = paging_key(i) end
  return out
end

-- A page of the "paging" store: limit and an optional exclusiveStartKey.
local function paging_page(port, limit, esk)
  return list(port, "paging", "limit=" .. limit .. (esk and ("&exclusiveStartKey=" .. url_encode(esk)) or "")).json.data
end

-- Peak resident memory of a process in kB (VmHWM), after resetting it when clear_refs allows;
-- returns a function that reads the peak since then, or nil when the peak cannot be reset.
local function peak_meter(pid)
  local f = io.open("/proc/" .. pid .. "/clear_refs", "w")
  if not f then return nil end
  local ok = f:write("5")
  f:close()
  if not ok then return nil end
  return function()
    local status = io.open("/proc/" .. pid .. "/status"):read("*a")
    return tonumber(status:match("VmHWM:%s*(%d+) kB"))
  end
end

-- Streams one GET (HTTP/1.1, no gzip) and counts the occurrences of `pattern` in the body
-- without keeping it; returns status, count, the body's last 200 bytes, and its size.
local function stream_count(port, path, pattern)
  local c = connect(port)
  c.sock:settimeout(30)
  assert(c.sock:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
  local status = tonumber(assert(c.sock:receive("*l")):match("^HTTP/%d%.%d (%d%d%d)"))
  local headers = {}
  while true do
    local line = assert(c.sock:receive("*l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    headers[k:lower()] = v
  end
  local count, carry, total, tail = 0, "", 0, ""
  local function feed(data)
    total = total + #data
    local text = carry .. data
    local from = 1
    while true do
      local i = text:find(pattern, from, true)
      if not i then break end
      count = count + 1
      from = i + #pattern
    end
    carry = text:sub(-(#pattern - 1))   -- shorter than the pattern: no match is counted twice
    tail = (tail .. data):sub(-200)
  end
  if (headers["transfer-encoding"] or ""):find("chunked", 1, true) then
    while true do
      local size = tonumber(assert(c.sock:receive("*l")):match("^%x+"), 16)
      if size == 0 then break end
      feed(assert(c.sock:receive(size)))
      c.sock:receive("*l")
    end
  else
    feed(assert(c.sock:receive(tonumber(headers["content-length"]))))
  end
  c:close()
  return status, count, tail, total
end

-- For the describe block of the main fixture: stores "order" (ORDER_FILES), "empty", "paging"
-- (PAGING_COUNT keys), "files" (record file names of every kind) and "my store", an emulator
-- over them started once (no token), and a clean slate before each test. `set` is called with
-- { tmp, storage, emu, port } once they exist.
function M.with_stores(set)
  local busted = require "busted"
  local tmp, storage, emu, port
  busted.lazy_setup(function()
    tmp = scratch_dir()
    storage = tmp .. "/storage"
    local kvs = storage .. "/key_value_stores/"

    mkdir(kvs .. "order")
    for i, name in ipairs(ORDER_FILES) do write_file(kvs .. "order/" .. name, string.rep("x", i)) end
    write_file(kvs .. "order/__metadata__.json", '{"id":"order","name":"order"}')

    mkdir(kvs .. "empty")
    write_file(kvs .. "empty/__metadata__.json", '{"id":"empty","name":"empty"}')

    mkdir(kvs .. "paging")
    for i = 1, PAGING_COUNT do write_file(kvs .. "paging/" .. paging_key(i) .. ".json", "{}") end

    mkdir(kvs .. "files/subdir")
    write_file(kvs .. "files/hello.txt", "hello")
    write_file(kvs .. "files/noext", "abc")
    write_file(kvs .. "files/multi.dot.json", "[1,2]")
    write_file(kvs .. "files/x.__metadata__.json", "{}")
    write_file(kvs .. "files/__metadata__.json", "{}")

    mkdir(kvs .. "my store")
    write_file(kvs .. "my store/only.txt", "1")

    emu = launch.start{ storage = storage }
    port = emu.port
    set{ tmp = tmp, storage = storage, emu = emu, port = port }
  end)

  busted.lazy_teardown(function()
    if emu then emu:stop() end
    remove_scratch(tmp)
  end)

  busted.before_each(function()
    emu:clear_faults()
    emu:config{ delay = 0, rate_limit = 0 }
  end)
end

M.mkdir = mkdir
M.scratch_dir = scratch_dir
M.control = control
M.remove_scratch = remove_scratch
M.request = request
M.get = get
M.keys_path = keys_path
M.list = list
M.keys_of = keys_of
M.url_encode = url_encode
M.paging_key = paging_key
M.paging_keys = paging_keys
M.paging_page = paging_page
M.peak_meter = peak_meter
M.stream_count = stream_count
M.ORDER_FILES, M.ORDER_KEYS, M.SLOW, M.PAGING_COUNT = ORDER_FILES, ORDER_KEYS, SLOW, PAGING_COUNT

return M
