---@meta apify.kvs
-- lua-language-server definitions for apify.kvs (the C module): put this directory
-- (types/) on `workspace.library` (see docs/reference.md, "Editor support"). Never on package.path:
-- it declares the API, it does not implement it.
-- spec/types_spec.lua keeps it in step with the module: every function, method and option
-- below exists in the module, and the other way round.

---@class apify.kvs
---@field _VERSION string "apify.kvs 0.4.0"
---@field _TRANSPORT string the libcurl version string the module runs on
---@field _FFI boolean true when the iterators read pages through LuaJIT's FFI (LuaJIT only; APIFY_KVS_FFI=0 turns it off)
local kvs = {}

---@alias apify.kvs.on_retry fun(err: apify.kvs.Error, attempt: integer, delay: number): boolean?

---Options of `kvs.new`; every field is optional.
---@class apify.kvs.ClientOptions
---@field token? string|false default `os.getenv("APIFY_TOKEN")`; false: send no token
---@field base_url? string default `os.getenv("APIFY_API_BASE_URL")` or "https://api.apify.com"
---@field timeout? number seconds per attempt (connect + transfer + decoding), default 30
---@field max_retries? integer retries of one request, default 8
---@field min_delay? number seconds: first backoff step, doubling per retry, default 0.5
---@field max_delay? number seconds: the longest wait between tries, default 60
---@field max_elapsed? number seconds one page may spend retrying (default: no cap)
---@field on_retry? apify.kvs.on_retry called before each retry; returning false gives up
---@field user_agent? string default "apify.kvs/<version> (<Lua>; <libcurl>)"
---@field gzip? boolean ask for compressed replies, default true
---@field ca_file? string CA certificates (PEM) to trust instead of the system store; checked to exist at kvs.new
---@field ca_path? string a directory of CA certificates hashed by `openssl rehash`, trusted instead of the system store

---A client: shared connections, DNS cache and retry policy.
---@param opts? apify.kvs.ClientOptions
---@return apify.kvs.Client
function kvs.new(opts) end

---True for the error tables of runtime failures (`apify.kvs.Error`), false for anything
---else, such as the strings programmer mistakes raise.
---@param v any
---@return boolean
function kvs.is_error(v) end

---@class apify.kvs.Client
local Client = {}

---@return string base_url the base URL the requests go to (scheme in lower case, no trailing slash or /v2); never a token
function Client:base_url() end

---@param id string a store id, "username~store-name" or "~store-name"
---@return apify.kvs.Store
function Client:store(id) end

---@class apify.kvs.Store
local Store = {}

---The options every listing call takes.
---@class apify.kvs.ListKeysOptions
---@field prefix? string only keys starting with this
---@field collection? string stores with a schema: one collection
---@field signature? string for stores shared by signature, without a token
---@field exclusiveStartKey? string start after this key (resume)
---@field limit? integer most keys (list_keys: 1..1000)
---@field urls? boolean false: no recordPublicUrl (iterators give nil, items have no field), faster; default true

---What every listing of many pages takes (`store:keys`, `store:listing`, `store:job`).
---@class apify.kvs.ListingOptions: apify.kvs.ListKeysOptions
---@field page_size? integer keys per request, 1..1000

---Options of `store:listing{ parallel = 1 }`: a sans-I/O listing of one range, page by page.
---@class apify.kvs.StoreListingOptions: apify.kvs.ListingOptions
---@field parallel integer|"auto" 1 here; anything else (or none, or with `rate_limit` or `ordered`) and `store:listing` returns the planner: see apify.kvs.PlanOptions
---@field seed? integer seed of the retry delays' jitter (0..2^53-1): the same replies and clock give the same run; default: a new seed each call

---Options of `store:listing{}`: the parallel planner (`apify.kvs.Plan`).
---@class apify.kvs.PlanOptions: apify.kvs.ListingOptions
---@field parallel? integer|"auto" requests in flight: "auto" (default) as many as the rate times the round trip asks for, at most 64; n: at most n (1..64)
---@field rate_limit? number requests per second
---@field ordered? boolean false: pages in arrival order, default true
---@field seed? integer seed of the retry delays' jitter (0..2^53-1), default: a new seed each call

---Options of `store:job`: key ranges side by side, still without waiting.
---@class apify.kvs.JobOptions: apify.kvs.ListingOptions
---@field parallel? integer|"auto" requests in flight: "auto" (default) as many as the rate times the round trip asks for, at most 64; n: at most n (1..64); 1: page by page
---@field rate_limit? number requests per second
---@field ordered? boolean false: pages in arrival order, default true
---@field seed? integer seed of the retry delays' jitter (0..2^53-1), default: a new seed each call

---Options of `store:keys`.
---@class apify.kvs.KeysOptions: apify.kvs.ListingOptions
---@field prefetch? boolean fetch page k+1 while the loop works through page k, default true; false: page by page (parallel then defaults to 1)
---@field parallel? integer|"auto" requests in flight: "auto" (default) as many as the rate times the round trip asks for, at most 64; n: at most n (1..64); 1: page by page
---@field rate_limit? number requests per second
---@field ordered? boolean false: pages in arrival order, default true

---@class apify.kvs.Item
---@field key string
---@field size integer
---@field recordPublicUrl? string

---The API's `data` object of one page.
---@class apify.kvs.Page
---@field items apify.kvs.Item[]
---@field count integer
---@field limit? integer
---@field isTruncated boolean
---@field exclusiveStartKey? string
---@field nextExclusiveStartKey? string

---Every key, in byte order; raises an `apify.kvs.Error` when a page cannot be had.
---Returns the iterator, the listing, nil and the listing again (Lua 5.4's to-be-closed value).
---@param opts? apify.kvs.KeysOptions
---@return fun(): string?, integer?, string? next_key key, size, url (nil with urls = false)
---@return apify.kvs.Keys listing
---@return nil
---@return apify.kvs.Keys closing
function Store:keys(opts) end

---Exactly one request (plus retries): the page, or nil and the error.
---@param opts? apify.kvs.ListKeysOptions
---@return apify.kvs.Page? page
---@return apify.kvs.Error? err
function Store:list_keys(opts) end

---A non-blocking listing driven by `job:poll()`, over key ranges side by side (`parallel`).
---@param opts? apify.kvs.JobOptions
---@return apify.kvs.Job
function Store:job(opts) end

---A sans-I/O listing: the core decides, your driver moves the bytes.  The parallel planner
---(`apify.kvs.Plan`); with `parallel = 1` (no `rate_limit`, no `ordered`), the page-by-page
---listing (`apify.kvs.Listing`) instead.
---@param opts? apify.kvs.PlanOptions
---@return apify.kvs.Plan
---@overload fun(self: apify.kvs.Store, opts: apify.kvs.StoreListingOptions): apify.kvs.Listing
function Store:listing(opts) end

---@return string id the store id as given
function Store:id() end

---@alias apify.kvs.Step "page"|"retry"|"failed"
---@alias apify.kvs.Fault "none"|"timeout"|"network"|"tls"|"request"

---The state of a `store:keys` loop (type apify.kvs.keys): it has only `close`.
---@class apify.kvs.Keys
local Keys = {}

---Cancels what is in flight and lets go of the connection; idempotent.
function Keys:close() end

---A sans-I/O listing (`store:listing`, type apify.kvs.listing).
---@class apify.kvs.Listing
local Listing = {}

---Releases the listing's connection; idempotent.
function Listing:close() end

---The next request to make: url and headers (including Authorization: a secret);
---nil when finished, nil and the error when failed.
---@return string? url
---@return table<string, string>|apify.kvs.Error|nil headers
function Listing:request() end

---Starts a reply.
---@param status integer HTTP status, 100..999
function Listing:begin(status) end

---One reply header (value may be a list of values).
---@param name string
---@param value string|string[]
function Listing:header(name, value) end

---A chunk of the reply body; false when the rest of the body cannot matter.
---@param chunk string
---@return boolean
function Listing:body(chunk) end

---Ends a reply; `fault` names a transfer that did not complete.
---@param fault? apify.kvs.Fault
---@param message? string
---@param now? number seconds on the caller's clock, for max_elapsed
---@return apify.kvs.Step step
---@return integer|number|apify.kvs.Error x keys ready, seconds to wait, or the error
function Listing:finish(fault, message, now) end

---A whole reply at once.
---@param status integer
---@param headers? table<string, string|string[]>
---@param body? string
---@param now? number
---@return apify.kvs.Step step
---@return integer|number|apify.kvs.Error x
function Listing:reply(status, headers, body, now) end

---A request as raw HTTP/1.1 bytes, for a driver that moves bytes itself.
---@class apify.kvs.HttpRequest
---@field request string the bytes to send: GET line, Host, Accept, Accept-Encoding, User-Agent, Authorization (a secret)
---@field host string where to connect (an IPv6 address without brackets)
---@field port integer
---@field tls boolean https: verify the certificate and the host name
---@field timeout number the client's seconds per attempt

---The next request as raw HTTP/1.1 bytes (its reply goes to `http_feed`); nil when finished,
---nil and the error when failed.
---@return apify.kvs.HttpRequest|nil request
---@return apify.kvs.Error? err
function Listing:http_request() end

---Bytes of the reply to `http_request` as they came, cut anywhere; nil: the connection closed.
---Returns nothing while the reply goes on; at its end what `reply` returns, and whether the
---connection may carry the next request.
---@param bytes string|nil
---@param now? number
---@return apify.kvs.Step? step
---@return integer|number|apify.kvs.Error|nil x
---@return boolean? keep_alive
function Listing:http_feed(bytes, now) end

---Iterator over the keys of the latest page (the same function every call).
---@return fun(): string?, integer?, string?
function Listing:page_keys() end

---@return boolean
function Listing:finished() end

---@return apify.kvs.Error? err the error of a failed listing
function Listing:error() end

---@alias apify.kvs.JobStatus "running"|"done"|"failed"|"cancelled"

---A non-blocking listing (`store:job`, type apify.kvs.job).
---@class apify.kvs.Job
local Job = {}

---Does the I/O that is ready and returns at once with an iterator over the keys that arrived
---(the same function every call: one per job).
---@param max_keys? integer at most this many keys this call
---@return fun(): string?, integer?, string?
function Job:poll(max_keys) end

---@return apify.kvs.JobStatus status
---@return apify.kvs.Error? err
function Job:status() end

---Seconds until `poll` has work (0: now), nil when finished.
---@return number?
function Job:timeout() end

---File descriptors to watch.
---@return integer[] read
---@return integer[] write
function Job:sockets() end

---Cancels a request in flight; idempotent.
function Job:close() end

---A request the planner wants sent now.
---@class apify.kvs.PlanRequest
---@field id integer names the transfer in replies and cancels
---@field url string
---@field headers table<string, string> Accept, User-Agent and Authorization (a secret)
---@field shard integer which key range it is for
---@field attempt integer 0 for the first try of a page

---The parallel planner (`store:listing{}`): key ranges side by side, paced, in
---order; your driver sends several requests at once and keeps the clock (`now`, seconds).
---@class apify.kvs.Plan
local Plan = {}

---The requests that may go out now (the pace is the plan's).
---@param now? number
---@return apify.kvs.PlanRequest[]
function Plan:requests(now) end

---A request of `http_requests`: raw HTTP/1.1 bytes and where they go.
---@class apify.kvs.PlanHttpRequest: apify.kvs.HttpRequest
---@field id integer names the transfer in `http_feed` and cancels
---@field shard integer which key range it is for
---@field attempt integer 0 for the first try of a page

---The requests that may go out now, as raw HTTP/1.1 bytes; their replies go to `http_feed`.
---@param now? number
---@return apify.kvs.PlanHttpRequest[]
function Plan:http_requests(now) end

---Bytes of the reply to request `id` as they came, cut anywhere; nil: the connection closed.
---Returns nothing while the reply goes on; at its end true (the plan took it) and whether the
---connection may carry the next request.
---@param id integer
---@param bytes string|nil
---@param now? number
---@return boolean? ended
---@return boolean? keep_alive
function Plan:http_feed(id, bytes, now) end

---Ids of transfers to abort: a range was cut or stopped (their replies would be ignored).
---@return integer[]
function Plan:cancels() end

---A whole reply to request `id`.
---@param id integer
---@param status integer
---@param headers? table<string, string|string[]>
---@param body? string
---@param now? number
function Plan:reply(id, status, headers, body, now) end

---@param id integer
---@param status integer
function Plan:begin(id, status) end

---@param id integer
---@param name string
---@param value string|string[]
function Plan:header(id, name, value) end

---@param id integer
---@param chunk string
---@return boolean go_on false: the rest of the body cannot matter
function Plan:body(id, chunk) end

---The end of transfer `id`: "none" after begin/header/body, else why it failed.
---@param id integer
---@param fault? apify.kvs.Fault
---@param message? string
---@param now? number
function Plan:finish(id, fault, message, now) end

---Seconds until `requests` has one (0: now), or nil: not before a reply comes.
---@param now? number
---@return number?
function Plan:timeout(now) end

---Takes the next page (in key order unless `ordered = false`); nil when none is ready.
---@return integer? count keys of the page, then iterate `page_keys`
function Plan:take() end

---Iterates the keys of the page taken last.
---@return fun(): string?, integer?, string?
function Plan:page_keys() end

---@return boolean finished every page handed out
function Plan:finished() end

---@return apify.kvs.Error? err why the listing failed
function Plan:error() end

---Figures: requests made, 429s seen, ranges made, the pace (requests/s), requests in flight, ranges
---now, pages held and in flight, requests wanted in flight (rate x round trip), the round trip
---measured (s, 0 before the first reply).
---@return { requests: integer, throttled: integer, ranges: integer, rate: number, inflight: integer, alive: integer, held: integer, parallel: integer, rtt: number }
function Plan:stats() end

---Lets go of everything (the driver aborts its own transfers); idempotent.
function Plan:close() end

---A runtime failure; `tostring(err)` reads
---"apify.kvs: <message> (<type>, HTTP <status>)".
---@class apify.kvs.Error
---@field type string the API's error.type, or network-error, timeout, invalid-response, cursor-not-advancing, http-error, tls-error, request-error, callback-error, out-of-memory, unsupported-phase (apify.kvs.openresty)
---@field message string
---@field status? integer the HTTP status, nil if no reply was had
---@field retries integer how many retries were made

return kvs
