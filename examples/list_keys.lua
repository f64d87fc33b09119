-- examples/list_keys.lua — list every key of a store, paging hidden.
--
--   APIFY_TOKEN=... lua5.4 examples/list_keys.lua <store-id> [prefix]
--
-- APIFY_API_BASE_URL points it at another server (make demo uses the local emulator).
local kvs = require "apify.kvs"

local store_id, prefix = arg[1], arg[2]
if not store_id then
  io.stderr:write("usage: list_keys.lua <store-id> [prefix]\n")
  os.exit(2)
end

local client = kvs.new()            -- token from APIFY_TOKEN, base URL from APIFY_API_BASE_URL
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
