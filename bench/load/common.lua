-- Shared by the scenario scripts: count non-2xx (and 204) answers, report one JSON line.
-- wrk runs each thread in its own Lua state, so counts are gathered in done().

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

non2xx = 0
no_content = 0

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif status == 204 then
    no_content = no_content + 1
  end
end

function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    table.insert(lines, line)
  end
  return lines
end

function done(summary, latency, requests)
  local bad, empty = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    empty = empty + thread:get("no_content")
  end
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"non2xx": %d, "no_content": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, bad, empty, errors.connect + errors.read + errors.write + errors.timeout))
end
