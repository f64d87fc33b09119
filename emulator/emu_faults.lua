-- emulator/emu_faults.lua
--
-- Owns: the fault kinds of the emulator: checking posted faults, the queue in the shared dict
-- (each consumed exactly once, whichever worker takes it), and how each kind breaks a reply:
-- replacing it, delivering it badly, or shaping the page. Posted through emu_control.lua.
--
-- Faults. Each keys request takes the first pending fault that applies to it and consumes one of
-- its `times` (default 1). Fields every kind accepts:
--   kind           one of the kinds below
--   times          integer >= 1 (default 1)
--   store          only requests for this store (its id as sent, or its directory name)
--   only_nonempty  true: only requests whose normal page has at least one key; the others pass
--                  the fault by without consuming it (so a fault meant for a page of keys never
--                  lands on an empty probe past the end of a range, whatever the request order)
--   headers        {name = value} added to the reply (false or null removes a header)
-- Kinds that replace the reply:
--   status         `status` (default 500) with `body` (default: an Apify error body for that
--                  status) and an optional `retry_after` (string or number) as Retry-After
--   redirect       `status` 301/302/303/307/308 (default 302) to `location` (default: the same URI)
--   raw            exactly `status` (default 200), `headers` and `body`; or, with `body_file` (an
--                  absolute path to a file in the run directory's files/, as launch.lua's
--                  emu:write_file writes them, instead of `body`), that file's bytes
--                  as they are, with identity transfer (nginx's gzip stays off, so e.g. a
--                  gzip bomb goes out with the test's own "Content-Encoding: gzip" header) and
--                  Content-Length set to the file's size unless `headers` give one
--   invalid_json   a 200 whose body (default: a page cut by an HTML error) is not JSON
-- Kinds that change how the reply is delivered (the reply itself is normal):
--   stall          waits `seconds` (default 1) before answering
--   stall_body     sends headers and the first `bytes` (default: half) of the body, waits
--                  `seconds` (default 1), then sends the rest
--   truncate       announces the full Content-Length, sends `bytes` (default: half), drops the
--                  connection (identity transfer)
--   drip           sends the body in pieces of `bytes` bytes (default 16) with `seconds`
--                  (default 0.2) between them (identity transfer, Content-Length announced)
-- Kinds that shape the 200 page (a page with no key is left as it is, except by cursor_stuck,
-- no_next_field and empty_page):
--   cursor_stuck   isTruncated true; nextExclusiveStartKey = `next` if given, else with
--                  mode "equal" (default) the request's exclusiveStartKey (or "" on the first
--                  page), with mode "before" the greatest key sorting before it (or "")
--   no_next_field  isTruncated = `is_truncated` (default true) and no nextExclusiveStartKey
--                  field; with `null` = true the field is there, as null
--   empty_page     no items, isTruncated true, and nextExclusiveStartKey = `next` if given, else
--                  by `mode`: "page_end" (default) the key the normal page would have ended at,
--                  as if a server-side filter had dropped the page's keys (past the end of the
--                  store: the cursor's successor, below); "successor": the request's
--                  exclusiveStartKey followed by "!" (the lowest character of the record-key
--                  alphabet: no valid key lies in between, so nothing is skipped); "null": null;
--                  "absent": no such field
--   cursor_behind  nextExclusiveStartKey = the key in the middle of the page (its floor(n/2)-th;
--                  on a one-key page the request's exclusiveStartKey, or ""): the next page
--                  repeats keys
--   cursor_ahead   nextExclusiveStartKey = the store's key `skip` (default 3) places after the
--                  page's last key (past the store's end: its last key followed by "~"): a
--                  client that follows it loses keys
--   reverse_page   the page's items in descending order (cursor and isTruncated as normal)
--   duplicate_items  each item twice, in place; to stay within the limit asked, the page holds
--                  the first max(1, floor(limit/2)) keys of the normal page (then truncated,
--                  with the cursor at the last of them)
--   include_cursor the page starts with the request's exclusiveStartKey itself when that is a key
--                  of the store, followed by the first limit-1 keys of the normal page
--   oversized      a truncated page of `items` (default 1,000,000; at most 100,000,000) items
--                  whatever limit was asked, keys increasing from just after the cursor
--                  (exclusiveStartKey .. 9 digits, or "o" .. 9 digits), sent chunked in pieces of
--                  1000 items, each flushed before the next is built (nginx memory stays small);
--                  generation stops once the client has gone

local cjson = require "cjson.safe"
local lfs = require "lfs"
local C = require "emu_common"
local S = require "emu_store"

local ngx = ngx
local M = {}

local settings, dict, json_value, json_encode = C.settings, C.dict, C.json_value, C.json_encode
local error_body, percent_encode, is_integer = C.error_body, C.percent_encode, C.is_integer
local send_error, with_lock, base_url, arg_string = C.send_error, C.with_lock, C.base_url, C.arg_string
local JSON_CT, DEFAULT_LIMIT = C.JSON_CT, C.DEFAULT_LIMIT
local bound = S.bound

-- A raw fault's body_file: an absolute path inside the run directory's files/ (no ".." step, no
-- symbolic link), to a regular file the workers can read. Returns the path workers open it by,
-- or nil and a message.
local function run_file(given)
  if type(given) ~= "string" then return nil, "body_file must be a string" end
  local rel = given:sub(1, #settings.files) == settings.files and given:sub(#settings.files + 1)
  if not rel or rel == "" then
    return nil, "body_file must be an absolute path inside " .. settings.files
  end
  local path = settings.files_root
  for step in rel:gmatch("[^/]+") do
    if step == ".." or step == "." then return nil, "body_file may not contain . or .. steps" end
    path = path .. "/" .. step
    local mode = lfs.symlinkattributes(path, "mode")
    if mode == "link" then return nil, "body_file may not pass through a symbolic link" end
  end
  local file = lfs.symlinkattributes(path, "mode") == "file" and io.open(path, "rb")
  if not file then return nil, "body_file is not a readable file: " .. given end
  file:close()
  return path
end

local FAULT_KINDS = {
  status = true, stall = true, stall_body = true, truncate = true, invalid_json = true,
  cursor_stuck = true, no_next_field = true, redirect = true, raw = true,
  empty_page = true, cursor_behind = true, cursor_ahead = true, reverse_page = true,
  duplicate_items = true, include_cursor = true, oversized = true, drip = true,
}

local EMPTY_PAGE_MODES = { page_end = true, successor = true, null = true, absent = true }
local MAX_OVERSIZED_ITEMS = 100000000

local REDIRECT_STATUS = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- Checks and normalises one posted fault; returns it, or nil and a message.
local function check_fault(f, i)
  local where = "fault #" .. i .. ": "
  if type(f) ~= "table" then return nil, where .. "must be an object" end
  if not FAULT_KINDS[f.kind] then return nil, where .. "unknown kind " .. tostring(f.kind) end
  if f.store ~= nil and type(f.store) ~= "string" then return nil, where .. "store must be a string" end
  if f.times == nil then f.times = 1 end
  if not is_integer(f.times) or f.times < 1 then return nil, where .. "times must be an integer >= 1" end
  if f.headers ~= nil and type(f.headers) ~= "table" then return nil, where .. "headers must be an object" end
  if f.body ~= nil and type(f.body) ~= "string" then return nil, where .. "body must be a string" end
  if f.seconds ~= nil and (type(f.seconds) ~= "number" or f.seconds < 0) then
    return nil, where .. "seconds must be a number >= 0"
  end
  if f.bytes ~= nil and (not is_integer(f.bytes) or f.bytes < 0) then
    return nil, where .. "bytes must be an integer >= 0"
  end
  if f.status ~= nil and (not is_integer(f.status) or f.status < 100 or f.status > 599) then
    return nil, where .. "status must be an integer 100..599"
  end
  if f.retry_after ~= nil and type(f.retry_after) ~= "string" and type(f.retry_after) ~= "number" then
    return nil, where .. "retry_after must be a string or a number"
  end
  if f.only_nonempty ~= nil and type(f.only_nonempty) ~= "boolean" then
    return nil, where .. "only_nonempty must be a boolean"
  end
  if f.kind == "redirect" then
    f.status = f.status or 302
    if not REDIRECT_STATUS[f.status] then return nil, where .. "redirect status must be 301/302/303/307/308" end
    if f.location ~= nil and type(f.location) ~= "string" then return nil, where .. "location must be a string" end
  elseif f.kind == "cursor_stuck" then
    if f.mode ~= nil and f.mode ~= "equal" and f.mode ~= "before" then
      return nil, where .. "mode must be \"equal\" or \"before\""
    end
    if f.next ~= nil and type(f.next) ~= "string" then return nil, where .. "next must be a string" end
  elseif f.kind == "no_next_field" then
    if f.is_truncated ~= nil and type(f.is_truncated) ~= "boolean" then
      return nil, where .. "is_truncated must be a boolean"
    end
    if f.null ~= nil and type(f.null) ~= "boolean" then return nil, where .. "null must be a boolean" end
  elseif f.kind == "empty_page" then
    if f.next ~= nil and type(f.next) ~= "string" then return nil, where .. "next must be a string" end
    if f.mode ~= nil and not EMPTY_PAGE_MODES[f.mode] then
      return nil, where .. "mode must be \"page_end\", \"successor\", \"null\" or \"absent\""
    end
    if f.next ~= nil and f.mode ~= nil then return nil, where .. "give next or mode, not both" end
  elseif f.kind == "cursor_ahead" then
    if f.skip == nil then f.skip = 3 end
    if not is_integer(f.skip) or f.skip < 1 then return nil, where .. "skip must be an integer >= 1" end
  elseif f.kind == "oversized" then
    if f.items == nil then f.items = 1000000 end
    if not is_integer(f.items) or f.items < 0 or f.items > MAX_OVERSIZED_ITEMS then
      return nil, where .. "items must be an integer in 0.." .. MAX_OVERSIZED_ITEMS
    end
  elseif f.kind == "drip" then
    if f.bytes == nil then f.bytes = 16 end
    if f.bytes < 1 then return nil, where .. "drip bytes must be an integer >= 1" end
    if f.seconds == nil then f.seconds = 0.2 end
  elseif f.kind == "status" then
    f.status = f.status or 500
  elseif f.kind == "raw" then
    f.status = f.status or 200
    if f.body_file ~= nil then
      if f.body ~= nil then return nil, where .. "give body or body_file, not both" end
      local path, why = run_file(f.body_file)
      if not path then return nil, where .. why end
    end
  elseif f.kind == "stall" or f.kind == "stall_body" then
    f.seconds = f.seconds or 1
  end
  return f
end

local function load_faults()
  return cjson.decode(dict():get("faults") or "[]") or {}
end

local function save_faults(list)
  dict():set("faults", json_encode(list, true))
end

-- Takes the first pending fault that applies to this store (consuming one of its "times").
-- has_items() tells whether the normal page of this request has a key (for only_nonempty).
local function take_fault(store_name, store_id, has_items)
  if (dict():get("faults") or "[]") == "[]" then return nil end
  return with_lock("faults", function()
    local list = load_faults()
    for i, f in ipairs(list) do
      if (f.store == nil or f.store == store_name or f.store == store_id)
        and (not f.only_nonempty or has_items()) then
        f.times = f.times - 1
        if f.times <= 0 then table.remove(list, i) end
        save_faults(list)
        return f
      end
    end
    return nil
  end)
end

local STATUS_ERROR_TYPES = {
  [400] = { "invalid-input", "Invalid input (emulated fault)" },
  [401] = { "invalid-token", "User was not found or authentication token is not valid (emulated fault)" },
  [403] = { "insufficient-permissions", "Insufficient permissions (emulated fault)" },
  [404] = { "record-not-found", "Key-value store was not found (emulated fault)" },
  [405] = { "method-not-allowed", "Method not allowed (emulated fault)" },
  [429] = { "rate-limit-exceeded", "You have exceeded the rate limit (emulated fault)" },
}

local function default_fault_body(status)
  local t = STATUS_ERROR_TYPES[status]
  if not t and status >= 500 then t = { "internal-server-error", "Server error (emulated fault)" } end
  if not t then t = { "emulated-error", "Emulated error " .. status } end
  return error_body(t[1], t[2])
end

local function apply_fault_headers(f)
  if f and f.headers then
    for k, v in pairs(f.headers) do
      if v == cjson.null or v == false then
        ngx.header[k] = nil
      else
        ngx.header[k] = tostring(v)
      end
    end
  end
end

-- ngx.flush(true) waits until nginx has sent what was printed; false once the client is gone.
-- (For HTTP/1.0 requests the Lua module buffers the whole reply to compute its Content-Length
-- and answers "buffering": not a failure.)
local function flushed()
  local ok, err = ngx.flush(true)
  return ok ~= nil or err == "buffering"
end

-- Delivers a reply, possibly broken by a stall_body / truncate / drip fault.
local function deliver(status, body, fault)
  ngx.status = status
  ngx.header["Content-Type"] = ngx.header["Content-Type"] or JSON_CT
  apply_fault_headers(fault)
  local kind = fault and fault.kind
  if kind == "truncate" then
    -- The full Content-Length is announced, part of the body is sent, then the connection is
    -- dropped. gzip would replace Content-Length by chunked encoding, so it is switched off here
    -- (the request log keeps the Accept-Encoding the client actually sent).
    ngx.req.clear_header("Accept-Encoding")
    ngx.header["Content-Length"] = #body
    local cut = fault.bytes or math.floor(#body / 2)
    if cut >= #body then cut = #body - 1 end
    if cut < 0 then cut = 0 end
    ngx.send_headers()
    if cut > 0 then ngx.print(body:sub(1, cut)) end
    ngx.flush(true)
    return ngx.exit(ngx.ERROR)
  elseif kind == "stall_body" then
    ngx.header["Content-Length"] = #body
    local cut = fault.bytes or math.floor(#body / 2)
    if cut > #body then cut = #body end
    ngx.send_headers()
    if cut > 0 then ngx.print(body:sub(1, cut)) end
    ngx.flush(true)
    ngx.sleep(fault.seconds)
    ngx.print(body:sub(cut + 1))
    return
  elseif kind == "drip" then
    -- identity encoding (see truncate), so the pieces on the wire are the pieces sent here
    ngx.req.clear_header("Accept-Encoding")
    ngx.header["Content-Length"] = #body
    ngx.send_headers()
    local step = fault.bytes
    for from = 1, #body, step do
      if from > 1 then ngx.sleep(fault.seconds) end
      if not ngx.print(body:sub(from, from + step - 1)) or not flushed() then return end
    end
    return
  end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

-- The raw fault with body_file: the file's bytes as they are (identity transfer, so nginx's gzip
-- does not touch a body that is already compressed), read and flushed 64 KiB at a time.
local function send_body_file(fault)
  local path = run_file(fault.body_file)
  local f = path and io.open(path, "rb")
  if not f then
    return send_error(500, "emulator-error", "cannot open body_file " .. fault.body_file)
  end
  local size = f:seek("end")
  f:seek("set", 0)
  ngx.req.clear_header("Accept-Encoding")
  ngx.status = fault.status
  apply_fault_headers(fault)
  if ngx.header["Content-Length"] == nil then ngx.header["Content-Length"] = size end
  while true do
    local chunk = f:read(65536)
    if not chunk then break end
    if not ngx.print(chunk) or not flushed() then break end
  end
  f:close()
end

-- The smallest record key sorting after k: "!" is the lowest character of the API's key alphabet
-- (a-z A-Z 0-9 ! - _ . ' ( )), so no valid key lies strictly between k and k .. "!".
local function successor(k)
  return (k or "") .. "!"
end

-- Applies a page-shaping fault to a normal page (see "Fault kinds" in the control API section).
local function shape_page(page, listing, fault)
  local kind = fault and fault.kind
  local items, keys = page.items, listing.keys
  if kind == "cursor_stuck" then
    page.truncated = true
    if fault.next then
      page.next_key = fault.next
    elseif fault.mode == "before" and page.esk then
      -- the greatest key sorting before the cursor, or "" when there is none
      local j = bound(keys, page.esk, false) - 1
      page.next_key = keys[j] or ""
    else
      page.next_key = page.esk or "" -- "" sorts before (and never after) any cursor
    end
  elseif kind == "no_next_field" then
    page.truncated = fault.is_truncated ~= false
    page.next_key = nil
    page.omit_next = not fault.null
  elseif kind == "empty_page" then
    local mode = fault.mode or "page_end"
    local nxt
    if fault.next then
      nxt = fault.next
    elseif mode == "page_end" then
      -- where the normal page ends, as if a server-side filter had dropped all of its keys;
      -- past the end of the store, the cursor still has to advance: its successor
      nxt = items[#items] or successor(page.esk)
    elseif mode == "successor" then
      nxt = successor(page.esk)
    end
    page.items, page.truncated, page.next_key = {}, true, nxt
    page.omit_next = mode == "absent" and not fault.next
  elseif #items == 0 then
    return -- the other kinds shape pages that have keys
  elseif kind == "cursor_behind" then
    local mid = math.floor(#items / 2)
    page.next_key = mid >= 1 and items[mid] or (page.esk or "")
  elseif kind == "cursor_ahead" then
    local skip = fault.skip or 3
    page.next_key = keys[page.after - 1 + skip] or (keys[#keys] .. "~")
  elseif kind == "reverse_page" then
    local rev = {}
    for i = #items, 1, -1 do rev[#rev + 1] = items[i] end
    page.items = rev
  elseif kind == "duplicate_items" then
    -- each key twice, but never more items than asked for: the first half of the page
    local keep = math.max(1, math.floor(page.limit / 2))
    local dup = {}
    for i = 1, math.min(keep, #items) do
      dup[#dup + 1] = items[i]
      dup[#dup + 1] = items[i]
    end
    if #items > keep then page.truncated, page.next_key = true, items[keep] end
    page.items = dup
  elseif kind == "include_cursor" then
    if page.esk and listing.files[page.esk] then
      local with = { page.esk }
      for i = 1, math.min(#items, page.limit - 1) do with[#with + 1] = items[i] end
      if #items > page.limit - 1 then page.truncated, page.next_key = true, with[#with] end
      page.items = with
    end
  end
end
-- The oversized fault: a truncated page of fault.items items (whatever limit was asked), keys
-- increasing from after the cursor, written in chunks of OVERSIZED_CHUNK items, each flushed
-- before the next is made, so nginx holds one chunk at a time. Stops when the client is gone.
local OVERSIZED_CHUNK = 1000

local function send_oversized(store_id, args, fault)
  local esk = arg_string(args, "exclusiveStartKey")
  local base = esk or "o"
  local n = fault.items or 1000000
  -- every key is base .. 9 digits: its JSON string and URL are base's plus the digits
  local json_base = json_value(base):sub(1, -2)
  local url_base = json_value(base_url() .. "/v2/key-value-stores/" .. percent_encode(store_id)
    .. "/records/" .. percent_encode(base)):sub(1, -2)
  ngx.status = 200
  ngx.header["Content-Type"] = JSON_CT
  apply_fault_headers(fault)
  if not ngx.print('{"data":{"items":[') then return end
  local i = 0
  while i < n do
    local parts = {}
    for j = 1, math.min(OVERSIZED_CHUNK, n - i) do
      local digits = string.format("%09d", i + j)
      parts[j] = '{"key":' .. json_base .. digits .. '","size":1,"recordPublicUrl":'
        .. url_base .. digits .. '"}'
    end
    local sep = i > 0 and "," or ""
    i = i + #parts
    if not ngx.print(sep, table.concat(parts, ",")) or not flushed() then return end
  end
  local last = n > 0 and json_base .. string.format("%09d", n) .. '"' or "null"
  local asked = tonumber((arg_string(args, "limit") or ""):match("^%s*(%d+)%s*$") or "") or DEFAULT_LIMIT
  ngx.print('],"count":', string.format("%d", n), ',"limit":', string.format("%d", asked),
    ',"exclusiveStartKey":', esk and json_value(esk) or "null",
    ',"isTruncated":true,"nextExclusiveStartKey":', last, '}}')
end

M.check_fault, M.load_faults, M.save_faults, M.take_fault = check_fault, load_faults, save_faults, take_fault
M.default_fault_body, M.apply_fault_headers, M.deliver = default_fault_body, apply_fault_headers, deliver
M.send_body_file, M.shape_page, M.send_oversized = send_body_file, shape_page, send_oversized

return M
