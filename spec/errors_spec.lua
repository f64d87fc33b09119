-- Failures: API errors, retries with backoff, timeouts, broken replies, cursor
-- faults, redirects.  Every fault is a real reply from the emulator over loopback.
local T = require "spec.support.env"
local socket = require "socket"

local TOKEN = "apify_api_errors_SECRET_51a2"

describe("errors and retries", function()
  local ctx = T.emulated({ s = T.numbered(30) }, TOKEN)
  local emu, client, store
  lazy_setup(function() emu, client = ctx.emu, ctx.client; store = client:store("s") end)

  local function no_token_in(err)
    assert.is_nil(tostring(err):find(TOKEN, 1, true))
    assert.is_nil((err.message or ""):find(TOKEN, 1, true))
  end

  describe("API errors (4xx) are not retried", function()
    it("surfaces 401 invalid-token from the iterator as a raised error table", function()
      local bad = T.client(emu, { token = "wrong" })
      local err = T.raised(T.collect, bad:store("s"))
      assert.are.equal("invalid-token", err.type)
      assert.are.equal(401, err.status)
      assert.are.equal(0, err.retries)
      assert.matches("%(invalid%-token, HTTP 401%)$", tostring(err))
      assert.are.equal(1, #emu:requests())
    end)

    it("surfaces 404 for a missing store", function()
      local err = T.raised(T.collect, client:store("nope"))
      assert.are.equal("record-not-found", err.type)
      assert.are.equal(404, err.status)
      no_token_in(err)
    end)

    it("passes an injected 403 error body through", function()
      emu:faults({ { kind = "status", status = 403,
        body = '{"error":{"type":"insufficient-permissions","message":"No access to this store"}}' } })
      local page, err = store:list_keys()
      assert.is_nil(page)
      assert.are.equal("insufficient-permissions", err.type)
      assert.are.equal("No access to this store", err.message)
      assert.are.equal(403, err.status)
      assert.are.equal(1, #emu:requests())
    end)

    it("describes a non-JSON error body by status and a snippet", function()
      emu:faults({ { kind = "status", status = 418, body = "<html><h1>I'm a teapot</h1></html>" } })
      local _, err = store:list_keys()
      assert.are.equal("http-error", err.type)
      assert.are.equal(418, err.status)
      assert.matches("HTTP 418: <html><h1>I'm a teapot", err.message, 1, true)
    end)
  end)

  describe("retries", function()
    it("retries 5xx and then lists every key exactly once", function()
      emu:faults({ { kind = "status", status = 500 }, { kind = "status", status = 503 } })
      local keys = T.collect(store, { page_size = 7, parallel = 1 })
      assert.are.same(T.numbered(30), keys)
      assert.are.equal(2 + 5, #emu:requests())
    end)

    it("a failure on a later page does not yield a key twice", function()
      -- page 1 fine, then page 2 fails twice (500, truncated), then succeeds
      local keys = {}
      local it = store:keys({ page_size = 10 })
      for _ = 1, 10 do keys[#keys + 1] = it() end
      emu:faults({ { kind = "status", status = 502 }, { kind = "truncate" }, { kind = "invalid_json" } })
      for k in it do keys[#keys + 1] = k end
      assert.are.same(T.numbered(30), keys)
    end)

    it("retries 429 and honours Retry-After in seconds", function()
      emu:faults({ { kind = "status", status = 429, retry_after = "1",
        body = '{"error":{"type":"rate-limit-exceeded","message":"Too many requests"}}' } })
      local t0 = T.now()
      assert.are.equal(30, #T.collect(store))
      local waited = T.now() - t0
      assert.is_true(waited >= 0.95, "waited " .. waited)
      assert.is_true(waited < 3 * T.slow, "waited " .. waited)
    end)

    it("honours Retry-After given as an HTTP date", function()
      local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
      emu:faults({ { kind = "status", status = 503, retry_after = date } })
      local t0 = T.now()
      assert.are.equal(30, #T.collect(store))
      local waited = T.now() - t0
      -- the date has one-second resolution: at least ~1 s, at most ~2 s (+ slack)
      assert.is_true(waited >= 0.9, "waited " .. waited)
      assert.is_true(waited < 4 * T.slow, "waited " .. waited)
    end)

    it("backs off exponentially with jitter in [D, 2D]", function()
      local c = T.client(emu, { token = TOKEN, min_delay = 0.2, max_retries = 2 })
      emu:faults({ { kind = "status", status = 500, times = 2 } })
      local t0 = T.now()
      assert.are.equal(30, #T.collect(c:store("s")))
      local waited = T.now() - t0
      -- D = 0.2 then 0.4: total in [0.6, 1.2]
      assert.is_true(waited >= 0.6, "waited " .. waited)
      assert.is_true(waited < 1.2 + 0.8 * T.slow, "waited " .. waited)
    end)

    it("gives up after max_retries with the last error, counting the retries", function()
      emu:faults({ { kind = "status", status = 503, times = 10,
        body = '{"error":{"type":"server-busy","message":"Try later"}}' } })
      local err = T.raised(T.collect, store)
      assert.are.equal("server-busy", err.type)
      assert.are.equal(503, err.status)
      assert.are.equal(3, err.retries)
      assert.matches("gave up after 3 retries", err.message)
      assert.are.equal(4, #emu:requests())
    end)

    it("re-raises the same error if the iterator is called again", function()
      emu:faults({ { kind = "status", status = 500, times = 10 } })
      local it = store:keys()
      local e1 = T.raised(it)
      local e2 = T.raised(it)
      assert.are.equal(e1.type, e2.type)
      assert.are.equal(4, #emu:requests())
    end)

    it("list_keys retries too and returns nil, err when it gives up", function()
      emu:faults({ { kind = "status", status = 500, times = 10, body = "<html>oops</html>" } })
      local page, err = store:list_keys()
      assert.is_nil(page)
      assert.are.equal("http-error", err.type)
      assert.are.equal(500, err.status)
      assert.are.equal(3, err.retries)
    end)

    it("max_retries = 0 fails on the first fault", function()
      local c = T.client(emu, { token = TOKEN, max_retries = 0 })
      emu:faults({ { kind = "status", status = 500 } })
      local err = T.raised(T.collect, c:store("s"))
      assert.are.equal(0, err.retries)
      assert.are.equal(1, #emu:requests())
    end)
  end)

  describe("broken replies", function()
    it("retries a truncated body", function()
      emu:faults({ { kind = "truncate" } })
      assert.are.same(T.numbered(30), T.collect(store))
      assert.are.equal(2, #emu:requests())
    end)

    it("retries a 200 that is not JSON, then reports invalid-response", function()
      emu:faults({ { kind = "invalid_json", times = 10 } })
      local err = T.raised(T.collect, store)
      assert.are.equal("invalid-response", err.type)
      assert.are.equal(200, err.status)
      assert.matches("not valid JSON", err.message)
    end)

    local shapes = {
      { '[]', "not a JSON object" },
      { '{"data":[]}', '"data" is not an object' },
      { '{"data":{"isTruncated":false}}', 'no "items" array' },
      { '{"data":{"items":{},"isTruncated":false}}', '"items" is not an array' },
      { '{"data":{"items":[]}}', 'no boolean "isTruncated"' },
      { '{"data":{"items":[5],"isTruncated":false}}', "an item is not an object" },
      { '{"data":{"items":[{"size":1}],"isTruncated":false}}', 'no "key" string' },
      { '{"data":{"items":[{"key":1,"size":1}],"isTruncated":false}}', '"key" is not a string' },
      { '{"data":{"items":[{"key":"a"}],"isTruncated":false}}', 'no integer "size"' },
      { '{"data":{"items":[{"key":"a","size":-1}],"isTruncated":false}}', '"size" is not a non%-negative integer' },
      { '{"data":{"items":[{"key":"a","size":1.5}],"isTruncated":false}}', '"size" is not a non%-negative integer' },
      { '{"data":{"items":[],"isTruncated":"no"}}', '"isTruncated" is not a boolean' },
      { '{"data":{"items":[],"isTruncated":true,"nextExclusiveStartKey":5}}', '"nextExclusiveStartKey" is not a string' },
      { '', "the body is empty" },
      { '{"data":{"items":[{"key":"a","size":1}', "cut short" },
      { '{"data":{"items":[]},"isTruncated":false} trailing', "not valid JSON" },
    }
    for _, case in ipairs(shapes) do
      it("rejects a malformed page: " .. case[2]:gsub("%%", ""), function()
        emu:faults({ { kind = "raw", status = 200, body = case[1], times = 10 } })
        local page, err = store:list_keys()
        assert.is_nil(page)
        assert.are.equal("invalid-response", err.type)
        assert.matches(case[2], err.message)
        assert.are.equal(4, #emu:requests())   -- retried like any broken reply
      end)
    end

    it("accepts extra fields, nested values and integral floats", function()
      emu:faults({ { kind = "raw", status = 200, body = [=[
        {"meta":{"a":[1,{"b":null}]},"data":{"extra":{"x":[[]]},"items":[
          {"key":"a","size":36.0,"recordPublicUrl":null,"more":{"k":[1,2]}},
          {"key":"b","size":9007199254740991,"recordPublicUrl":"u"}],
         "count":2,"limit":1000,"exclusiveStartKey":null,"isTruncated":false}}]=] } })
      local keys, sizes, urls = T.collect(store)
      assert.are.same({ "a", "b" }, keys)
      assert.are.equal(36, sizes[1])
      assert.are.equal(9007199254740991, sizes[2])
      assert.are.same({ false, "u" }, urls)
    end)

    it("passes keys with any bytes through unchanged", function()
      emu:faults({ { kind = "raw", status = 200,
        body = '{"data":{"items":[{"key":"nul\\u0000byte","size":1},{"key":"quote\\"slash\\\\","size":3},' ..
               '{"key":"\\u00e9\\ud83d\\ude00","size":2}],"isTruncated":false}}' } })
      local keys = T.collect(store)
      assert.are.same({ "nul\0byte", 'quote"slash\\', "\195\169\240\159\152\128" }, keys)
    end)

    it("keeps sizes above 2^32 exact", function()
      emu:faults({ { kind = "raw", status = 200,
        body = '{"data":{"items":[{"key":"huge","size":6000000000123}],"isTruncated":false}}' } })
      local _, sizes = T.collect(store)
      assert.are.equal(6000000000123, sizes[1])
    end)
  end)

  describe("paging faults", function()
    it("goes on after the page's last key when the next cursor does not advance", function()
      local want = {}
      for i = 4, 30 do want[#want + 1] = T.numbered(30)[i] end
      emu:faults({ { kind = "cursor_stuck", times = 3 } })
      assert.are.same(want, T.collect(store, { page_size = 10, exclusiveStartKey = "k00003", parallel = 1 }))
      assert.are.equal(4, #emu:requests())
      -- a server stuck for good: every key once, then an error instead of a loop
      emu:clear_requests()
      emu:faults({ { kind = "cursor_stuck", times = 10 } })
      local keys = {}
      local ok, err = pcall(function()
        for k in store:keys({ page_size = 10, exclusiveStartKey = "k00003", parallel = 1 }) do
          keys[#keys + 1] = k
        end
      end)
      assert.is_false(ok)
      assert.are.equal("cursor-not-advancing", err.type)
      assert.are.same(want, keys)
      assert.are.equal(4, #emu:requests())
    end)

    it("fails loudly when a page with no new key has a cursor that does not advance", function()
      emu:faults({ { kind = "raw", status = 200,
        body = '{"data":{"items":[{"key":"k00003","size":1}],"isTruncated":true,' ..
               '"nextExclusiveStartKey":"k00002"}}' } })
      local keys = {}
      local ok, err = pcall(function()
        for k in store:keys({ exclusiveStartKey = "k00003" }) do keys[#keys + 1] = k end
      end)
      assert.is_false(ok)
      assert.are.equal("cursor-not-advancing", err.type)
      assert.are.equal(0, err.retries)
      assert.are.same({}, keys)
      assert.are.equal(1, #emu:requests())
    end)

    it("goes on after the last key when a truncated page has no next cursor field", function()
      emu:faults({ { kind = "no_next_field" } })
      local keys = T.collect(store, { page_size = 10, parallel = 1 })
      assert.are.same(T.numbered(30), keys)
      assert.is_true(#emu:requests() >= 3 and #emu:requests() <= 4)
    end)

    it("goes on after an empty page that says it is truncated", function()
      emu:faults({ { kind = "raw", status = 200,
        body = '{"data":{"items":[],"isTruncated":true,"nextExclusiveStartKey":"k00015"}}' } })
      local keys = T.collect(store)
      local want = {}
      for i = 16, 30 do want[#want + 1] = T.numbered(30)[i] end
      assert.are.same(want, keys)
      assert.are.equal(2, #emu:requests())
    end)

    it("fails at once on a page with more items than asked for", function()
      emu:faults({ { kind = "raw", status = 200,
        body = '{"data":{"items":[{"key":"a","size":1},{"key":"b","size":1},{"key":"c","size":1}],' ..
               '"isTruncated":true,"nextExclusiveStartKey":"c"}}' } })
      local err = T.raised(T.collect, store, { limit = 2 })
      assert.are.equal("invalid-response", err.type)
      assert.matches("more items than the 2 asked for", err.message, 1, true)
      assert.are.equal(0, err.retries)
      assert.are.equal(1, #emu:requests())
    end)
  end)

  describe("network", function()
    it("times out a stalled reply, retries, and lists everything", function()
      local c = T.client(emu, { token = TOKEN, timeout = 0.5 * T.slow })
      emu:faults({ { kind = "stall", seconds = 1.5 * T.slow } })
      local t0 = T.now()
      assert.are.same(T.numbered(30), T.collect(c:store("s")))
      T.timed_claim(T.now() - t0 < 1.4 * T.slow, "took " .. (T.now() - t0))
    end)

    it("reports a timeout once retries are spent, without compounding the timeout", function()
      local c = T.client(emu, { token = TOKEN, timeout = 0.3 * T.slow, max_retries = 2 })
      emu:faults({ { kind = "stall_body", seconds = 2 * T.slow, times = 3 } })
      local t0 = T.now()
      local err = T.raised(T.collect, c:store("s"))
      local took = T.now() - t0
      assert.are.equal("timeout", err.type)
      assert.are.equal(2, err.retries)
      -- 3 attempts of 0.3 s + two short waits: far below what compounding would take
      assert.is_true(took < 1.6 * T.slow, "took " .. took)
      no_token_in(err)
    end)

    it("reports a refused connection as network-error", function()
      local c = T.kvs.new({ base_url = "http://127.0.0.1:1", token = TOKEN, max_retries = 1, min_delay = 0.01 })
      local err = T.raised(T.collect, c:store("s"))
      assert.are.equal("network-error", err.type)
      assert.is_nil(err.status)
      assert.are.equal(1, err.retries)
      no_token_in(err)
    end)

    it("follows a redirect on the same host with the token", function()
      emu:faults({ { kind = "redirect", status = 307,
        location = emu.base_url .. "/v2/key-value-stores/s/keys?limit=1000" } })
      assert.are.equal(30, #T.collect(store))
      local reqs = emu:requests()
      assert.are.equal("token", reqs[#reqs].auth)
    end)

    it("never follows an https base_url's redirect to http: request-error, nothing sent over http", function()
      -- An https server of the spec's own (openssl s_server -HTTP, a self-signed certificate the
      -- client trusts through ca_file) answers every listing's first request with a redirect
      -- to the emulator over plain http.
      local dir = T.tmpdir()
      local path = "v2/key-value-stores/s/keys?limit=1000"
      assert(T.sh("cd '" .. dir .. "' && openssl req -x509 -newkey rsa:2048 -nodes -days 1"
        .. " -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -keyout key.pem -out cert.pem"
        .. " >/dev/null 2>&1 && mkdir -p v2/key-value-stores/s"))
      -- a path of its own, told apart in the emulator's log from a late request of another test
      T.write_file(dir .. "/" .. path, "HTTP/1.1 302 Found\r\nLocation: " .. emu.base_url
        .. "/v2/key-value-stores/redirected/keys\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
      local port = T.free_port()
      local pid = tonumber(T.read("cd '" .. dir .. "' && { openssl s_server -accept 127.0.0.1:" .. port
        .. " -cert cert.pem -key key.pem -HTTP -quiet </dev/null >/dev/null 2>&1 & echo $!; }"):match("%d+"))
      local ok, failure = pcall(function()
        local socket = require "socket"
        T.wait_listening(port)
        local https = T.kvs.new{ base_url = "https://127.0.0.1:" .. port, token = TOKEN, max_retries = 2,
                                 min_delay = 0.01, ca_file = dir .. "/cert.pem" }:store("s")
        local function job(opts)
          local j = https:job(opts)
          for _ = 1, 100000 do
            for _ in j:poll() do end
            if j:status() ~= "running" then break end
            socket.sleep(0.005)
          end
          local _, err = j:status()
          error(err)
        end
        local kinds = {
          keys = function() T.collect(https) end,
          parallel = function() T.collect(https, { parallel = 2 }) end,
          list_keys = function() local _, e = https:list_keys{}; error(e) end,
          job = function() job{} end,
        }
        for kind, list in pairs(kinds) do
          local err = T.raised(list)
          assert.are.equal("request-error", err.type, kind .. ": " .. tostring(err))
          assert.are.equal(0, err.retries, kind)
          assert.matches("redirect from https to http://127.0.0.1:" .. emu.port, err.message, 1, true)
          no_token_in(err)
        end
        for _, r in ipairs(emu:requests()) do    -- nothing went over plain http
          assert.is_nil(r.uri:find("/redirected/", 1, true), r.uri)
        end
      end)
      if pid then T.sh("kill " .. pid .. " 2>/dev/null") end
      T.rmrf(dir)
      assert(ok, failure)
    end)

    it("does not send the token to another host after a redirect", function()
      local other_storage = T.tmpdir()
      T.make_store(other_storage, "s", T.numbered(3))
      local other = T.start_emulator({ storage = other_storage })
      local ok, err = pcall(function()
        emu:faults({ { kind = "redirect", status = 302,
          location = other.base_url .. "/v2/key-value-stores/s/keys" } })
        assert.are.equal(3, #T.collect(store))
        local reqs = other:requests()
        assert.are.equal(1, #reqs)
        assert.is_nil(reqs[1].auth)
      end)
      other:stop()
      T.rmrf(other_storage)
      assert(ok, err)
    end)
  end)

  describe("kvs.is_error tells runtime failures from programmer mistakes", function()
    local kvs = T.kvs

    local function job_error(job)
      local deadline = T.now() + 10 * T.slow
      while job:status() == "running" do
        for _ in job:poll() do end
        assert(T.now() < deadline, "the job did not finish")
        socket.sleep(0.005)
      end
      return select(2, job:status())
    end

    it("is true for the error tables of every kind of listing, and on_retry's", function()
      local missing = client:store("nope")
      local errs = {}
      errs["store:keys"] = T.raised(T.collect, missing)
      errs["store:keys{parallel=2}"] = T.raised(T.collect, missing, { parallel = 2 })
      errs["store:list_keys"] = select(2, missing:list_keys())
      errs["store:job"] = job_error(missing:job{})
      local listing = missing:listing{ parallel = 1 }
      listing:request()
      errs["store:listing"] = select(2, listing:reply(404, {},
        '{"error":{"type":"record-not-found","message":"Key-value store was not found"}}'))
      local seen
      emu:faults({ { kind = "status", status = 503 } })
      local watched = T.client(emu, { token = TOKEN, on_retry = function(e) seen = e end })
      assert.are.equal(30, #T.collect(watched:store("s")))
      errs.on_retry = seen
      for where, err in pairs(errs) do
        assert.are.equal("table", type(err), where)
        assert.is_true(kvs.is_error(err), where)
      end
    end)

    it("is false for the strings of programmer mistakes and for anything else", function()
      local mistakes = {
        T.raised(store.keys, store, { page_size = 0 }),
        T.raised(kvs.new, { tokne = "x" }),
        T.raised(client.store, client, ""),
        T.raised(store.list_keys, store, { limit = 1001 }),
      }
      for _, m in ipairs(mistakes) do
        assert.is_string(m)
        assert.is_false(kvs.is_error(m), m)
      end
      local real = T.raised(T.collect, client:store("nope"))
      local lookalike = {}
      for k, v in pairs(real) do lookalike[k] = v end
      for _, v in ipairs({ lookalike, { type = "network-error", message = "m", retries = 0 },
                           setmetatable({}, { __name = "apify.kvs.error" }), tostring(real),
                           "apify.kvs.error", 42, true, client, store, kvs.is_error }) do
        assert.is_false(kvs.is_error(v), tostring(v))
      end
      assert.is_false(kvs.is_error(nil))
      assert.is_false(kvs.is_error())
    end)

    it("lets a handler around a listing loop tell them apart (as the README and docs/reference.md show)", function()
      local function handle(s, opts)
        local ok, err = pcall(function()
          for _ in s:keys(opts) do end
        end)
        if ok then return "listed" end
        if kvs.is_error(err) then return "failed: " .. err.type end
        error(err, 0)
      end
      assert.are.equal("listed", handle(store))
      assert.are.equal("failed: record-not-found", handle(client:store("nope")))
      assert.matches("option 'page_size' must be an integer in 1..1000",
                     T.raised(handle, store, { page_size = 0 }), 1, true)
    end)
  end)
end)
