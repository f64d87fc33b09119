-- examples/resume.lua — list in batches, and resume where a failed listing stopped.
--
--   lua5.4 examples/resume.lua <store-id> [batch] [retries]
--
-- The last key a loop has seen is a complete resume cursor: keys come in byte order and
-- exclusiveStartKey skips every key <= it. Save it as each key arrives (here a local variable;
-- a file or a database in real life) and pass it back: after a failure the next listing goes on
-- from there, not from the start.
local kvs = require "apify.kvs"

local USAGE = "usage: resume.lua <store-id> [batch] [retries]"
local GIVE_UP = 3          -- failed listings in a row
if arg[1] == "--help" or arg[1] == "-h" then
  print(USAGE .. "\n" ..
        "Lists the store `batch` keys at a time (an integer >= 1, default 10), each listing\n" ..
        "resuming after the last key seen. A listing that fails (after `retries` retries of a\n" ..
        "request, default 2) is resumed from that key; " .. GIVE_UP .. " failures in a row end it.\n" ..
        "Reads APIFY_TOKEN and APIFY_API_BASE_URL.")
  os.exit(0)
end
local function usage_error(problem)
  io.stderr:write("resume.lua: ", problem, "\n", USAGE, "\n")
  os.exit(2)
end
-- an integer in [min, max], or a usage error naming `what`
local function integer_arg(s, what, min, max)
  local n = tonumber(s)
  if not n or n < min or n > max or n % 1 ~= 0 then
    usage_error(what .. " must be an integer " .. (max < 2^53 and ("in " .. min .. ".." .. max)
                or (">= " .. min)) .. ", got " .. s)
  end
  return n
end
if not arg[1] then usage_error("missing <store-id>") end
if arg[1] == "" then usage_error("<store-id> must not be empty") end
if arg[4] then usage_error("too many arguments") end
-- a batch of 0 would list nothing, "fully", for ever: the loop ends on a short batch
local batch = arg[2] and integer_arg(arg[2], "batch", 1, 2^53) or 10
local retries = arg[3] and integer_arg(arg[3], "retries", 0, 100) or 2

-- Few retries of a request (the client's default is 8, with backoff up to minutes): a failure
-- shows soon, and the loop below resumes the listing instead.
local ok_new, client = pcall(kvs.new, { max_retries = retries })
if not ok_new then
  usage_error("bad APIFY_API_BASE_URL or APIFY_TOKEN: " .. tostring(client):gsub("^.-%((.*)%)$", "%1"))
end
local store = client:store(arg[1])

io.stdout:setvbuf("line")   -- the batches and the failures (stderr) in order, also in a pipe
local cursor, total, batches, failures = nil, 0, 0, 0
while true do
  local seen = 0
  -- a failure after the retries raises an error table; pcall catches it, the cursor stays
  local ok, err = pcall(function()
    for key in store:keys{ exclusiveStartKey = cursor, limit = batch } do
      cursor, seen = key, seen + 1
    end
  end)
  total = total + seen
  if ok then
    batches, failures = batches + 1, 0
    if seen > 0 then print(string.format("batch %d: %d keys, cursor now %q", batches, seen, cursor)) end
    if seen < batch then break end
  else
    failures = failures + 1
    io.stderr:write(string.format("listing failed after %d keys: %s\n", seen, tostring(err)))
    if failures == GIVE_UP then
      io.stderr:write(string.format("giving up after %d failures in a row; %d keys listed, last %s\n",
                                    GIVE_UP, total, cursor and string.format("%q", cursor) or "none"))
      os.exit(1)
    end
    io.stderr:write(cursor and string.format("resuming after %q\n", cursor) or "starting again\n")
  end
end
print(string.format("%d keys in %d batches", total, batches))
