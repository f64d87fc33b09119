-- examples/embed/frame.lua — the Lua side of examples/embed/host.c.
--
-- host.c runs this chunk once with (base_url, store, keys_per_frame): it creates the job (no
-- I/O yet; the token comes from APIFY_TOKEN) and defines two globals the host calls:
--   frame()    once per 60 Hz frame: polls the job, takes at most keys_per_frame keys;
--              returns running (false once the job is done or failed), keys taken
--   summary()  after the loop: returns status, keys, bytes, error message (or nil)
local base_url, store_name, per_frame = ...

local kvs = require "apify.kvs"

-- no token option: kvs.new reads APIFY_TOKEN
local client = kvs.new({ base_url = base_url, max_retries = 8, min_delay = 0.5, timeout = 30 })
-- a bigger page means fewer requests but more JSON to decode in the frame it arrives in
local page_size = tonumber(os.getenv("KVS_PAGE_SIZE") or "") or 1000
-- page by page: a page's decoding spread over frames (the default, "auto", decodes every page
-- that arrived in the poll that sees it)
local job = client:store(store_name):job({ page_size = page_size, parallel = 1 })

local count, bytes = 0, 0

function frame()
  local n = 0
  for _, size in job:poll(per_frame) do      -- only ready I/O, only the keys that arrived
    n = n + 1
    bytes = bytes + size
  end
  count = count + n
  return job:status() == "running", n
end

function summary()
  local status, err = job:status()
  job:close()
  return status, count, bytes, err and tostring(err) or nil
end
