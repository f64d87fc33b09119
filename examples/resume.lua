-- examples/resume.lua — list in batches and resume where the last run stopped.
--
--   lua5.4 examples/resume.lua <store-id> [batch]
--
-- The last key a loop has seen is a complete resume cursor: keys come in byte
-- order and exclusiveStartKey skips every key <= it. Save it anywhere (here a
-- local variable; a file or a database in real life) and pass it back.
local kvs = require "apify.kvs"

local USAGE = "usage: resume.lua <store-id> [batch]"
if arg[1] == "--help" or arg[1] == "-h" then
  print(USAGE .. "\n" ..
        "Lists the store `batch` keys at a time (an integer >= 1, default 10), each listing\n" ..
        "resuming after the last key of the one before. Reads APIFY_TOKEN and APIFY_API_BASE_URL.")
  os.exit(0)
end
local function usage_error(problem)
  io.stderr:write("resume.lua: ", problem, "\n", USAGE, "\n")
  os.exit(2)
end
if not arg[1] then usage_error("missing <store-id>") end
if arg[3] then usage_error("too many arguments") end
local batch = 10
if arg[2] then
  -- a batch of 0 would list nothing, "fully", for ever: the loop ends on a short batch
  batch = tonumber(arg[2])
  if not batch or batch < 1 or batch % 1 ~= 0 or batch > 2^53 then
    usage_error("batch must be an integer >= 1, got " .. arg[2])
  end
end

local store = kvs.new():store(arg[1])
local cursor, total, batches = nil, 0, 0
repeat
  local seen = 0
  for key in store:keys{ exclusiveStartKey = cursor, limit = batch } do
    cursor, seen = key, seen + 1
  end
  total, batches = total + seen, batches + 1
  if seen > 0 then print(string.format("batch %d: %d keys, cursor now %q", batches, seen, cursor)) end
until seen < batch
print(string.format("%d keys in %d batches", total, batches))
