---@meta apify.kvs.openresty
-- lua-language-server definitions of apify.kvs.openresty: listing keys inside nginx on
-- cosockets (see docs/openresty.md; docs/reference.md, "Editor support", for .luarc.json).

---@class apify.kvs.openresty
local M = {}

---@alias apify.kvs.openresty.Options apify.kvs.StoreListingOptions|apify.kvs.PlanOptions

---Generic-for iterator over every key of a store: `for key, size, url in M.keys(store, opts)`.
---Raises the error table (logged at level error first) when the listing fails; raises an
---unsupported-phase error table in a phase without cosockets.
---@param store apify.kvs.Store
---@param opts? apify.kvs.openresty.Options options of store:listing{}, parallel included
---@return fun(): string?, integer?, string?
function M.keys(store, opts) end

---The keys of a store page by page.
---@param store apify.kvs.Store
---@param opts? apify.kvs.openresty.Options
---@return apify.kvs.openresty.Pages
function M.open(store, opts) end

---Page by page over a `M.open` object or a `store:listing{}` (a plan too): as `pages:next_page()`.
---@param listing apify.kvs.openresty.Pages|apify.kvs.Listing|apify.kvs.Plan
---@return integer? n
---@return apify.kvs.Error? err
function M.next_page(listing) end

---A listing driven page by page (`M.open`).
---@class apify.kvs.openresty.Pages
local Pages = {}

---Drives the listing to its next page: the number of keys ready in `page_keys()`, nil when
---finished, nil and the error table when it failed (nothing is raised for a failed listing).
---@return integer? n
---@return apify.kvs.Error? err
function Pages:next_page() end

---Iterator over the keys of the page `next_page` made ready.
---@return fun(): string?, integer?, string?
function Pages:page_keys() end

---Stops what is in flight and lets go of the listing; idempotent.
function Pages:close() end

return M
