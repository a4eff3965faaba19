-- POST /api/auth/login with a node's email and password (BENCH_EMAIL, BENCH_PASSWORD).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username": "' .. os.getenv("BENCH_EMAIL") .. '", "password": "' ..
  os.getenv("BENCH_PASSWORD") .. '"}'
