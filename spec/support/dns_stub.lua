-- spec/support/dns_stub.lua — a DNS server for the OpenResty spec's nginx (`resolver`): answers
-- A queries for the names given with 127.0.0.1 and every other question with NXDOMAIN, over UDP
-- on 127.0.0.1. nginx's resolver reads no /etc/hosts, so host names in base URLs (TLS with SNI
-- and a certificate for a name) need a server; this one stops once its owner process is gone.
--
--   lua5.4 spec/support/dns_stub.lua PORTFILE OWNER_PID name...
--       binds a free port, writes it to PORTFILE, serves until OWNER_PID exits
local socket = require "socket"

local port_file, owner = arg[1], arg[2]
local names = {}
for i = 3, #arg do names[arg[i]:lower()] = true end

local udp = assert(socket.udp())
assert(udp:setsockname("127.0.0.1", 0))
local _, port = udp:getsockname()
local f = assert(io.open(port_file .. ".tmp", "w"))
f:write(port, "\n")
f:close()
assert(os.rename(port_file .. ".tmp", port_file))
udp:settimeout(1)

local function alive(pid)
  local stat = io.open("/proc/" .. pid .. "/stat", "r")
  if not stat then return false end
  local s = stat:read("*a") or ""
  stat:close()
  return s:match("^%d+ %b() (%a)") ~= "Z"
end

-- The question's name (lower case) and where the question ends, or nil.
local function question(q)
  local labels, pos = {}, 13
  while true do
    local len = q:byte(pos)
    if not len or len > 63 then return nil end
    if len == 0 then break end
    labels[#labels + 1] = q:sub(pos + 1, pos + len)
    pos = pos + 1 + len
  end
  return table.concat(labels, "."):lower(), pos + 4    -- the zero byte, QTYPE, QCLASS
end

local function u16(n) return string.char(math.floor(n / 256) % 256, n % 256) end

while alive(owner) do
  local q, peer, peer_port = udp:receivefrom()
  if q and #q >= 17 then
    local name, qend = question(q)
    local qtype = q:byte(qend - 3) * 256 + q:byte(qend - 2)
    if name and qend <= #q then
      local found = names[name] and qtype == 1
      local flags = names[name] and 0x8180 or 0x8183          -- answer, or NXDOMAIN
      local reply = q:sub(1, 2) .. u16(flags) .. u16(1) .. u16(found and 1 or 0) .. u16(0)
        .. u16(0) .. q:sub(13, qend)
      if found then
        reply = reply .. u16(0xC00C) .. u16(1) .. u16(1) .. u16(0) .. u16(5) .. u16(4)
          .. string.char(127, 0, 0, 1)
      end
      udp:sendto(reply, peer, peer_port)
    end
  end
end
