-- examples/love/main.lua — a LÖVE 11 game that lists the keys of an Apify key-value store
-- from love.update with apify.kvs's job API: each frame does only the I/O that is ready and
-- takes at most KEYS_PER_FRAME keys, so listing never stalls the game.
--
--   APIFY_API_BASE_URL=... APIFY_TOKEN=... KVS_STORE=demo love examples/love
--
-- Quits with 0 when the job is done (printing "<n> keys, <bytes> bytes"), 1 when it failed
-- (printing the error). See docs/embedding.md for where the LuaJIT build of the module must live.

local KEYS_PER_FRAME = tonumber(os.getenv("KVS_KEYS_PER_FRAME") or "") or 250

-- Where require "apify.kvs" finds kvs.so (the LuaJIT build, build/jit/apify/kvs.so), in order:
--   1. LÖVE's own C loader: apify/kvs.so inside the game directory (not inside a .love zip)
--      or inside the save directory (~/.local/share/love/apify-kvs-love/apify/kvs.so)
--   2. LUA_CPATH (LÖVE's LuaJIT reads it), e.g. LUA_CPATH='/path/to/build/jit/?.so;;'
--   3. apify/kvs.so next to the game directory or .love file
--   4. the checkout's build/jit/apify/kvs.so, when this is examples/love of the checkout
local base = love.filesystem.getSourceBaseDirectory()
package.cpath = package.cpath .. ";" .. base .. "/?.so;" .. base .. "/../build/jit/?.so"

local kvs = require "apify.kvs"

local job, store_name
local count, bytes, last_key = 0, 0, nil
local started, finished_after
local frames, worst_update = 0, 0

local function fail(message)
  print("failed: " .. tostring(message))
  io.stdout:flush()
  love.event.quit(1)
end

function love.load(args)
  local base_url = os.getenv("APIFY_API_BASE_URL") or "https://api.apify.com"
  store_name = args[1] or os.getenv("KVS_STORE")
  if not store_name or store_name == "" then
    return fail("set KVS_STORE (or pass the store as an argument)")
  end
  local ok, client = pcall(kvs.new, { base_url = base_url, token = os.getenv("APIFY_TOKEN"),
                                      max_retries = 8, min_delay = 0.5, timeout = 30 })
  if not ok then return fail(client) end
  -- page by page: a page's decoding spread over frames (the default, "auto", decodes every
  -- page that arrived in the poll that sees it); no I/O yet
  job = client:store(store_name):job({ page_size = 1000, parallel = 1 })
  started = love.timer.getTime()
end

function love.update()
  if not job or finished_after then return end
  local t0 = love.timer.getTime()
  for key, size in job:poll(KEYS_PER_FRAME) do   -- never blocks
    count = count + 1
    bytes = bytes + size
    last_key = key
  end
  local status, err = job:status()
  frames = frames + 1
  worst_update = math.max(worst_update, love.timer.getTime() - t0)
  if status == "running" then return end
  finished_after = love.timer.getTime() - started
  job:close()
  if status == "done" then
    print(("%d keys, %d bytes"):format(count, bytes))
    io.stdout:flush()
    io.stderr:write(("%d frames in %.2f s, worst love.update %.3f ms\n")
                    :format(frames, finished_after, worst_update * 1000))
    love.event.quit(0)
  else
    fail(err)
  end
end

if love.graphics then
  function love.draw()
    local g = love.graphics
    local w = g.getWidth() - 40
    g.clear(0.08, 0.09, 0.12)
    g.setColor(1, 1, 1)
    g.print(("store %q: %d keys, %d bytes"):format(store_name or "?", count, bytes), 20, 20)
    g.print("last key: " .. tostring(last_key or "-"), 20, 44)
    g.print(finished_after and ("done in %.2f s"):format(finished_after)
            or ("listing... %d fps"):format(love.timer.getFPS()), 20, 68)
    -- the total is unknown until the end: a bar that grows by page (1000 keys) and a spinner
    local frac = finished_after and 1 or (count % 1000) / 1000
    g.setColor(0.3, 0.3, 0.35)
    g.rectangle("fill", 20, 110, w, 24)
    g.setColor(0.35, 0.75, 0.45)
    g.rectangle("fill", 20, 110, w * frac, 24)
    if not finished_after then
      local t = love.timer.getTime() * 4
      g.circle("fill", 30 + (w - 20) * (0.5 + 0.5 * math.sin(t)), 160, 6)
    end
  end
end
