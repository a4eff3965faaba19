-- PUT /api/tasks/shift-status pending -> in_progress, a different task every request.
-- BENCH_IDS: "<node index> <task id>" per line, from BENCH_OFFSET on; BENCH_TOKENS: one
-- access token per node index (0-based), so each task is started by its own node.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local tasks = read_lines(os.getenv("BENCH_IDS"))
local tokens = read_lines(os.getenv("BENCH_TOKENS"))
local next_task = tonumber(os.getenv("BENCH_OFFSET") or "0") + 1

function request()
  if next_task > #tasks then
    wrk.thread:stop()
  end
  local node, id = tasks[next_task]:match("(%d+) (%S+)")
  next_task = next_task + 1
  return wrk.format("PUT", "/api/tasks/shift-status", {
    ["Authorization"] = "Bearer " .. tokens[tonumber(node) + 1],
    ["Content-Type"] = "application/json",
  }, '{"taskId": "' .. id .. '", "taskStatus": "in_progress"}')
end
