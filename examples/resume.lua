-- examples/resume.lua — list in batches and resume where the last run stopped.
--
--   lua5.4 examples/resume.lua <store-id> [batch]
--
-- The last key a loop has seen is a complete resume cursor: keys come in byte
-- order and exclusiveStartKey skips every key <= it. Save it anywhere (here a
-- local variable; a file or a database in real life) and pass it back.
local kvs = require "apify.kvs"

local store = kvs.new():store(assert(arg[1], "usage: resume.lua <store-id> [batch]"))
local batch = tonumber(arg[2]) or 10

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
