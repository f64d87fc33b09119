-- On LUA_PATH first, this makes require "cjson" fail: for running code as if lua-cjson
-- were not installed.
error("lua-cjson hidden for this run", 0)
