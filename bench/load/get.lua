-- GET the URL given to wrk, with the Authorization header from the command line (-H).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
