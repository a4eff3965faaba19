-- POST the URL given to wrk with no body, as the next node each time: BENCH_TOKENS holds
-- one access token per line (heartbeat: a fleet of nodes; claim: the nodes with tasks).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local tokens = read_lines(os.getenv("BENCH_TOKENS"))
local path = nil
local next_token = 0

function init(args)
  path = wrk.path
  -- Connections start at different nodes of the fleet.
  math.randomseed(os.time())
  next_token = math.random(#tokens) - 1
end

function request()
  next_token = next_token % #tokens + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tokens[next_token],
    ["Content-Length"] = "0",
  })
end
