-- store:job — the non-blocking listing for frame loops: poll() never waits.
local T = require "spec.support.env"
local socket = require "socket"
local lfs = require "lfs"

local TOKEN = "apify_api_job_SECRET_31"

-- The inode of this process's descriptor fd if it is a socket (Linux /proc).
local function socket_inode(fd)
  local target = lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
  return target and target:match("^socket:%[(%d+)%]$")
end

-- The remote port of this process's TCP socket with that inode.
local function remote_port(inode)
  for _, table_file in ipairs({ "/proc/self/net/tcp", "/proc/self/net/tcp6" }) do
    local f = io.open(table_file)
    for line in f and f:lines() or function() end do
      local port, ino = line:match("^%s*%d+: %x+:%x+ %x+:(%x+) %x+ %x+:%x+ %x+:%x+ %x+%s+%d+%s+%d+%s+(%d+)")
      if ino == inode then f:close(); return tonumber(port, 16) end
    end
    if f then f:close() end
  end
end

describe("store:job", function()
  local ctx = T.emulated({ s = T.numbered(2500) }, TOKEN)
  local emu, store
  lazy_setup(function() emu = ctx.emu; store = ctx.client:store("s") end)

  -- runs a "frame loop": poll every ~2 ms until the job settles
  local function frames(job, per_frame)
    local keys, worst, polls = {}, 0, 0
    local deadline = socket.gettime() + 20 * T.slow
    while job:status() == "running" do
      local t0 = socket.gettime()
      for key in job:poll(per_frame) do keys[#keys + 1] = key end
      local dt = socket.gettime() - t0
      if dt > worst then worst = dt end
      polls = polls + 1
      assert(socket.gettime() < deadline, "job did not finish")
      socket.sleep(0.002)
    end
    return keys, worst, polls
  end

  it("lists every key across polls, in order", function()
    local job = store:job({ page_size = 1000 })
    local keys = frames(job)
    assert.are.same(T.numbered(2500), keys)
    assert.are.equal("done", job:status())
    assert.is_nil(job:timeout())
    assert.are.equal(1, select("#", job:timeout()))   -- an explicit nil, not no value
    assert.are.equal("apify.kvs.job (done)", tostring(job))
    job:close()                                       -- nothing left to cancel
    assert.are.equal("done", job:status())
  end)

  it("never blocks in poll, even when each page takes 0.2 s", function()
    emu:config({ delay = 0.2 })
    local job = store:job({ page_size = 1000 })
    local keys, worst, polls = frames(job)
    assert.are.equal(2500, #keys)
    assert.is_true(polls > 50, polls .. " polls")
    -- far below a 60 Hz frame (16.7 ms); decoding a 1000-key page happens inside one poll
    T.timed_claim(worst < 0.010 * T.slow, ("worst poll %.2f ms"):format(worst * 1000))
  end)

  it("hands out at most max_keys per poll", function()
    local job = store:job({ page_size = 100, limit = 250 })
    local sizes = {}
    while job:status() == "running" do
      local n = 0
      for _ in job:poll(40) do n = n + 1 end
      if n > 0 then sizes[#sizes + 1] = n end
      socket.sleep(0.001)
    end
    local total = 0
    for _, n in ipairs(sizes) do
      assert.is_true(n <= 40)
      total = total + n
    end
    assert.are.equal(250, total)
    assert.matches("max_keys must be an integer >= 1", T.raised(job.poll, job, 0))
  end)

  it("waits out retries as deadlines, not sleeps", function()
    emu:faults({ { kind = "status", status = 503, retry_after = "1" } })
    local job = store:job({})
    local t0 = socket.gettime()
    local keys, worst = frames(job)
    assert.are.equal(2500, #keys)
    assert.is_true(socket.gettime() - t0 >= 0.95)
    T.timed_claim(worst < 0.010 * T.slow, ("worst poll %.2f ms"):format(worst * 1000))
  end)

  it("reports failure through status() with the error table", function()
    emu:faults({ { kind = "status", status = 500, times = 10 } })
    local job = store:job({})
    local keys = frames(job)
    assert.are.equal(0, #keys)
    local status, err = job:status()
    assert.are.equal("failed", status)
    assert.are.equal(500, err.status)
    assert.are.equal(3, err.retries)
    assert.is_nil(job:timeout())
    assert.are.equal(1, select("#", job:timeout()))
    assert.are.equal("apify.kvs.job (failed)", tostring(job))
  end)

  it("tells an event loop when to come back and which sockets to watch", function()
    emu:config({ delay = 0.3 })
    local job = store:job({ limit = 5 })
    assert.are.equal(0, job:timeout())          -- nothing started yet: poll now
    for _ in job:poll() do end                  -- the request goes out
    local t = job:timeout()
    assert.is_number(t)
    assert.is_true(t > 0 and t <= 30)
    local r, w = job:sockets()
    assert.is_true(#r + #w >= 1)
    assert.is_number(r[1] or w[1])
    local keys = frames(job)
    assert.are.equal(5, #keys)
    local r2, w2 = job:sockets()
    assert.are.same({}, r2)
    assert.are.same({}, w2)
  end)

  -- polls until the job's request is out and it waits for the reply: one socket, to read
  local function awaiting_reply(job)
    local r, w
    local deadline = socket.gettime() + 2 * T.slow
    repeat
      for _ in job:poll() do end
      r, w = job:sockets()
      if #r == 1 and #w == 0 then break end
      socket.sleep(0.002)
    until socket.gettime() > deadline
    return r, w
  end

  it("names the socket a request in flight waits on, and that it waits to read", function()
    emu:faults({ { kind = "stall", seconds = 1 * T.slow } })   -- the reply comes after 1 s
    local job = store:job({ limit = 5 })
    local r, w = awaiting_reply(job)
    assert.are.equal(1, #r, "read fds: " .. table.concat(r, ","))
    assert.are.same({}, w)
    local inode = socket_inode(r[1])
    assert.is_string(inode, "fd " .. r[1] .. " is not a socket")
    assert.are.equal(emu.port, remote_port(inode))          -- the connection to the API
    local keys = frames(job)
    assert.are.equal(5, #keys)
    r, w = job:sockets()
    assert.are.same({}, r)
    assert.are.same({}, w)
  end)

  it("names sockets whatever their descriptor number, past FD_SETSIZE (1024) too", function()
    emu:faults({ { kind = "stall", seconds = 1 * T.slow } })
    local files = {}
    for i = 1, 1100 do
      files[i] = io.open("/dev/null")
      if not files[i] then break end
    end
    if #files < 1100 then
      for _, f in ipairs(files) do f:close() end
      pending("needs 1100 open files; ulimit -n is lower")
    end
    local ok, err = pcall(function()
      -- a client of its own connects now, on a descriptor above all those files
      local job = T.client(emu, { token = TOKEN }):store("s"):job({ limit = 5 })
      local r, w = awaiting_reply(job)
      assert.are.equal(1, #r, "read fds: " .. table.concat(r, ","))
      assert.are.same({}, w)
      assert.is_true(r[1] >= 1024, "fd " .. r[1])
      assert.are.equal(emu.port, remote_port(socket_inode(r[1])))
      job:close()
    end)
    for _, f in ipairs(files) do f:close() end
    assert(ok, err)
  end)

  it("can be closed while a request is in flight", function()
    emu:config({ delay = 1 })
    local job = store:job({})
    assert.are.equal("apify.kvs.job (running)", tostring(job))
    for _ in job:poll() do end
    local t0 = socket.gettime()
    job:close()
    assert.is_true(socket.gettime() - t0 < 0.2)
    assert.are.equal("cancelled", job:status())
    assert.are.equal(1, select("#", job:status()))
    assert.are.equal("apify.kvs.job (cancelled)", tostring(job))
    assert.is_nil(job:timeout())
    assert.are.equal(1, select("#", job:timeout()))
    for _ in job:poll() do error("no keys after close") end
    job:close()                                       -- idempotent
    assert.are.equal("cancelled", job:status())
  end)

  it("has methods of its own: given any other listing they raise at once", function()
    local _, keys_state = store:keys({})
    local _, parallel = store:keys({ parallel = 4 })
    local methods = store:job({})               -- the job methods, taken from a job
    local others = { { store:listing({ parallel = 1 }), "apify.kvs.listing" }, { keys_state, "apify.kvs.keys" },
                     { parallel, "apify.kvs.keys" } }
    for _, other in ipairs(others) do
      local o, name = other[1], other[2]
      local function expect(method, f)
        assert.are.equal(("bad argument #1 to '%s' (apify.kvs.job expected, got %s)"):format(method, name),
                         T.raised_message(f))
        assert.is_nil(o[method])
      end
      expect("poll", function() methods.poll(o) end)
      expect("status", function() methods.status(o) end)
      expect("timeout", function() methods.timeout(o) end)
      expect("sockets", function() methods.sockets(o) end)
      assert.matches("attempt to call .*'poll'", T.raised(function() o:poll() end))
      o:close()
    end
    methods:close()
    local job = store:job({})
    local listing = store:listing({ parallel = 1 })
    assert.are.equal("bad argument #1 to 'request' (apify.kvs.listing expected, got apify.kvs.job)",
                     T.raised_message(function() listing.request(job) end))
    assert.are.equal("bad argument #1 to 'page_keys' (apify.kvs.listing expected, got apify.kvs.job)",
                     T.raised_message(function() listing.page_keys(job) end))
    listing:close()
    job:close()
    assert.matches("unknown option 'prefetch'", T.raised(store.job, store, { prefetch = false }))
  end)
end)
