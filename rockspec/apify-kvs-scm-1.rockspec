-- LuaRocks build of apify.kvs from a checkout (works offline, no extra argument needed):
--   luarocks --lua-version 5.4 make rockspec/apify-kvs-scm-1.rockspec
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
decodes each page while it arrives and keeps one page in memory. Comes with
the apify-kvs command-line tool and lua-language-server definitions.
]],
   homepage = "https://github.com/apify-kvs/apify-kvs",
   license = "MIT",
   labels = { "apify", "http", "json" },
}
dependencies = {
   "lua >= 5.1, < 5.5",
}
external_dependencies = {
   -- curl/curl.h lives under the multiarch include directory on Debian and Ubuntu, where
   -- LuaRocks' header check does not look: check the library only, the compiler finds the header.
   CURL = { library = "curl" },
   YAJL = { header = "yajl/yajl_parse.h", library = "yajl" },
   ZLIB = { header = "zlib.h", library = "z" },
   -- raw HTTP/1.1 replies for drivers that move bytes themselves (Debian: libhttp-parser-dev)
   HTTP_PARSER = { header = "http_parser.h", library = "http_parser" },
}
build = {
   -- One compiler call straight into the rock's lib directory: no object file and no
   -- apify/kvs.so is left in the source tree, where ./?.so would load it instead of the
   -- installed module.
   type = "command",
   build_command = [[mkdir -p "$(LIBDIR)/apify" && $(CC) $(CFLAGS) -std=c99 -D_DEFAULT_SOURCE ]] ..
      [[-D_POSIX_C_SOURCE=200809L -fvisibility=hidden -I"$(LUA_INCDIR)" -I"$(CURL_INCDIR)" ]] ..
      [[-I"$(YAJL_INCDIR)" -I"$(ZLIB_INCDIR)" -I"$(HTTP_PARSER_INCDIR)" $(LIBFLAG) -o "$(LIBDIR)/apify/kvs.so" src/*.c ]] ..
      [[-L"$(CURL_LIBDIR)" -L"$(YAJL_LIBDIR)" -L"$(ZLIB_LIBDIR)" -L"$(HTTP_PARSER_LIBDIR)" ]] ..
      [[-lcurl -lyajl -lz -lhttp_parser]],
   install = {
      lua = { ["apify.kvs.openresty"] = "lua/apify/kvs/openresty.lua" },
      bin = { ["apify-kvs"] = "bin/apify-kvs" },
   },
   -- lua-language-server definitions (types/), see docs/reference.md, "Editor support"; the manual
   copy_directories = { "types", "docs" },
}
