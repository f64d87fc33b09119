-- LuaRocks build of apify.kvs from a checkout:
--   luarocks make rockspec/apify-kvs-scm-1.rockspec CURL_INCDIR=/usr/include/x86_64-linux-gnu
-- (Debian keeps curl/curl.h under the multiarch include directory.)
rockspec_format = "3.0"
package = "apify-kvs"
version = "scm-1"
source = {
   url = "git+https://github.com/apify-kvs/apify-kvs.git",
}
description = {
   summary = "List the keys of Apify key-value stores from Lua, fast",
   detailed = [[
A C module over libcurl and yajl: store:keys{} is a generic-for iterator that
hides exclusiveStartKey paging, retries 429/5xx/network errors with backoff,
decodes each page while it arrives and keeps one page in memory.
]],
   license = "MIT",
   labels = { "apify", "http", "json" },
}
dependencies = {
   "lua >= 5.1, < 5.5",
}
external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
   YAJL = { header = "yajl/yajl_parse.h", library = "yajl" },
}
build = {
   type = "builtin",
   modules = {
      ["apify.kvs"] = {
         sources = {
            "src/core_keyspace.c", "src/core_listing.c", "src/core_reply.c", "src/core_request.c",
            "src/driver_curl.c", "src/driver_multi.c", "src/driver_parallel.c", "src/lua_job.c", "src/lua_kvs.c",
            "src/lua_listing.c", "src/lua_sansio.c",
         },
         defines = { "_DEFAULT_SOURCE", "_POSIX_C_SOURCE=200809L" },
         incdirs = { "$(CURL_INCDIR)", "$(YAJL_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)", "$(YAJL_LIBDIR)" },
         libraries = { "curl", "yajl" },
      },
      ["apify.kvs.openresty"] = "lua/apify/kvs/openresty.lua",
   },
}
