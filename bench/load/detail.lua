-- GET /api/tasks/{id}, a random id each time from the node's own tasks (BENCH_IDS: one per line).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = read_lines(os.getenv("BENCH_IDS"))
math.randomseed(os.time())

function request()
  return wrk.format("GET", "/api/tasks/" .. ids[math.random(#ids)])
end
