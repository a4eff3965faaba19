-- PUT /api/tasks/progress, each request a report on the next in-progress task, by its node.
-- BENCH_IDS: "<node index> <task id>" per line (cycled); BENCH_TOKENS: one access token
-- per node index (0-based). A percent, a message and a small checkpoint, as a worker sends.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local tasks = read_lines(os.getenv("BENCH_IDS"))
local tokens = read_lines(os.getenv("BENCH_TOKENS"))
local next_task = 0

function init(args)
  math.randomseed(os.time())
  next_task = math.random(#tasks) - 1
end

function request()
  next_task = next_task % #tasks + 1
  local node, id = tasks[next_task]:match("(%d+) (%S+)")
  local percent = next_task % 100
  return wrk.format("PUT", "/api/tasks/progress", {
    ["Authorization"] = "Bearer " .. tokens[tonumber(node) + 1],
    ["Content-Type"] = "application/json",
  }, '{"taskId": "' .. id .. '", "percent": ' .. percent .. ', "message": "row ' .. percent ..
     ' of 100", "checkpoint": {"row": ' .. percent .. ', "file": "part-0007.csv"}}')
end
