-- spec/support/http.lua — the specs' HTTP/1.1 client over luasocket, for servers of the suite
-- (the emulator, the test nginx of the OpenResty spec). Two ways in:
--
--   local c = http.connect(port)          one keep-alive connection, exact bytes, partial bodies
--   local res, err, partial = c:request("GET", "/path", { Name = "v" }, close, body)
--       (a Host in the headers replaces the default 127.0.0.1:PORT; a body gets its Content-Length)
--   c:close()
--
--   http.run(port, reqs, opts)           many requests at once on one event loop (socket.select):
--       reqs: { path =, port =, at = seconds after start, headers = "Name: v\r\n...",
--               on_body = function(req) called once when the first body bytes arrive }
--       fills in each req: status, headers, body, t_start, t_body, t_done, elapsed
--       opts: timeout (seconds for all of them, 30), forbid (text no reply may contain)
--
-- Replies: status, headers (lower-case names), body (chunked bodies decoded; gzip left as is).
local socket = require "socket"

local M = {}

local SLOW = tonumber(os.getenv("KVS_SLOW") or "1") or 1

---------------------------------------------------------------------------------------------------
-- one connection

local Conn = {}
Conn.__index = Conn

function M.connect(port, timeout)
  local c = assert(socket.tcp())
  c:settimeout(timeout or 10)
  assert(c:connect("127.0.0.1", port))
  return setmetatable({ sock = c, port = port }, Conn)
end

-- Returns { status, headers (lower-case names), body, t_headers, t_done } or nil, err, partial.
function Conn:request(method, path, headers, close, body)
  local lines = { method .. " " .. path .. " HTTP/1.1" }
  if not (headers and headers.Host) then lines[2] = "Host: 127.0.0.1:" .. self.port end
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if close then lines[#lines + 1] = "Connection: close" end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  local t0 = socket.gettime()
  assert(self.sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
  local line, err = self.sock:receive("*l")
  if not line then return nil, err end
  local res = { status = tonumber(line:match("^HTTP/%d%.%d (%d%d%d)")), headers = {} }
  while true do
    line, err = self.sock:receive("*l")
    if not line then return nil, err end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    res.headers[k:lower()] = v
  end
  res.t_headers = socket.gettime() - t0
  local h = res.headers
  if method == "HEAD" or res.status == 204 or res.status == 304 then
    res.body = ""
  elseif h["content-length"] then
    local data, rerr, partial = self.sock:receive(tonumber(h["content-length"]))
    if not data then res.body = partial return nil, rerr, res end
    res.body = data
  elseif (h["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    local parts = {}
    while true do
      local size_line, serr = self.sock:receive("*l")
      if not size_line then res.body = table.concat(parts) return nil, serr, res end
      local size = tonumber(size_line:match("^%x+"), 16)
      if size == 0 then
        repeat line = self.sock:receive("*l") until not line or line == ""
        break
      end
      local data, derr, partial = self.sock:receive(size)
      if not data then parts[#parts + 1] = partial res.body = table.concat(parts) return nil, derr, res end
      parts[#parts + 1] = data
      self.sock:receive("*l")
    end
    res.body = table.concat(parts)
  else
    res.body = self.sock:receive("*a")
  end
  res.t_done = socket.gettime() - t0
  return res
end

function Conn:close()
  self.sock:close()
end

---------------------------------------------------------------------------------------------------
-- many at once

-- Parses a whole HTTP/1.1 reply read until the server closed the connection.
function M.parse(raw)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no complete HTTP header in: " .. raw:sub(1, 200))
  local status = tonumber(head:match("^HTTP/%d%.%d (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
  if (headers["transfer-encoding"] or ""):lower() == "chunked" then
    local parts, pos = {}, 1
    while true do
      local size_hex, data_at = body:match("^(%x+)[^\r\n]*\r\n()", pos)
      assert(size_hex, "bad chunked body")
      local size = tonumber(size_hex, 16)
      if size == 0 then break end
      parts[#parts + 1] = body:sub(data_at, data_at + size - 1)
      assert(body:sub(data_at + size, data_at + size + 1) == "\r\n", "bad chunk end")
      pos = data_at + size + 2
    end
    body = table.concat(parts)
  end
  return status, headers, body
end

function M.run(port, reqs, opts)
  opts = opts or {}
  local t0 = socket.gettime()
  local pending, active, by_sock = {}, {}, {}
  for _, r in ipairs(reqs) do
    r.at = r.at or 0
    pending[#pending + 1] = r
  end
  table.sort(pending, function(a, b) return a.at < b.at end)

  local function start(r)
    local c = assert(socket.tcp())
    c:settimeout(5 * SLOW)
    assert(c:connect("127.0.0.1", r.port or port))
    r.t_start = socket.gettime() - t0
    assert(c:send("GET " .. r.path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      .. (r.headers or "") .. "\r\n"))
    c:settimeout(0)
    r.sock, r.raw = c, {}
    active[c] = r
    by_sock[#by_sock + 1] = c
  end

  local function finish(r)
    r.t_done = socket.gettime() - t0
    r.elapsed = r.t_done - r.t_start
    r.sock:close()
    active[r.sock] = nil
    for i, s in ipairs(by_sock) do
      if s == r.sock then table.remove(by_sock, i) break end
    end
    r.sock = nil
    local raw = table.concat(r.raw)
    r.raw = nil
    r.status, r.headers, r.body = M.parse(raw)
    if opts.forbid then
      assert(not raw:find(opts.forbid, 1, true), "a reply contained the forbidden text")
    end
  end

  local deadline = t0 + (opts.timeout or 30) * SLOW
  while #pending > 0 or #by_sock > 0 do
    local now = socket.gettime()
    assert(now < deadline, "requests did not finish in time")
    while pending[1] and pending[1].at <= now - t0 do start(table.remove(pending, 1)) end
    local wait = pending[1] and math.max(0, pending[1].at - (socket.gettime() - t0)) or 1
    if #by_sock == 0 then
      socket.sleep(wait)
    else
      local readable = socket.select(by_sock, nil, wait)
      for _, s in ipairs(readable) do
        local r = active[s]
        local data, err, partial = s:receive(65536)
        local chunk = data or partial
        if chunk and #chunk > 0 then
          r.raw[#r.raw + 1] = chunk
          if not r.t_body then
            local all = table.concat(r.raw)
            local e = all:find("\r\n\r\n", 1, true)
            if e and #all > e + 3 then
              r.t_body = socket.gettime() - t0
              if r.on_body then r.on_body(r) end
            end
          end
        end
        if err == "closed" then
          finish(r)
        elseif err and err ~= "timeout" then
          error("reading from 127.0.0.1:" .. (r.port or port) .. ": " .. err)
        end
      end
    end
  end
  return reqs
end

return M
