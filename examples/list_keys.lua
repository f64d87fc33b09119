-- examples/list_keys.lua — list every key of a store, paging hidden.
--
--   APIFY_TOKEN=... lua5.4 examples/list_keys.lua <store-id> [prefix]
--
-- APIFY_API_BASE_URL points it at another server (make demo uses the local emulator).
local kvs = require "apify.kvs"

local USAGE = "usage: list_keys.lua <store-id> [prefix]"
if arg[1] == "--help" or arg[1] == "-h" then
  print(USAGE .. "\n" ..
        "Prints every key of the store with its size, then the totals; with a prefix, only\n" ..
        "the keys that start with it. Reads APIFY_TOKEN and APIFY_API_BASE_URL.")
  os.exit(0)
end
local function usage_error(problem)
  io.stderr:write("list_keys.lua: ", problem, "\n", USAGE, "\n")
  os.exit(2)
end
local store_id, prefix = arg[1], arg[2]
if not store_id then usage_error("missing <store-id>") end
if store_id == "" then usage_error("<store-id> must not be empty") end
if arg[3] then usage_error("too many arguments") end

-- token from APIFY_TOKEN, base URL from APIFY_API_BASE_URL; a bad base URL raises here
local ok_new, client = pcall(kvs.new)
if not ok_new then
  usage_error("bad APIFY_API_BASE_URL or APIFY_TOKEN: " .. tostring(client):gsub("^.-%((.*)%)$", "%1"))
end
local store = client:store(store_id)

local count, bytes = 0, 0
-- a failure after the retries raises an error table; pcall turns it into a message
local ok, err = pcall(function()
  for key, size in store:keys{ prefix = prefix } do
    count, bytes = count + 1, bytes + size
    print(string.format("%10d  %s", size, key))
  end
end)
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
print(string.format("%d keys, %d bytes", count, bytes))
