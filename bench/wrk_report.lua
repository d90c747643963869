-- Shared by every case of the API bench: the bearer token and the request paths come from
-- files named by environment variables; done() prints one JSON line the bench reads.
local token_file = os.getenv("DP_WRK_TOKEN")
if token_file then
  local f = assert(io.open(token_file))
  wrk.headers["Authorization"] = "Bearer " .. f:read("*l")
  f:close()
end

local paths = {}
local paths_file = os.getenv("DP_WRK_PATHS")
if paths_file then
  for line in io.lines(paths_file) do paths[#paths + 1] = line end
end

local bodies = {}
local bodies_file = os.getenv("DP_WRK_BODIES")
if bodies_file then
  for line in io.lines(bodies_file) do bodies[#bodies + 1] = line end
end
local counter = 0
math.randomseed(7)

request = function()
  if #bodies > 0 then
    -- POST the prepared bodies in order (each finding on its own site), then round again
    counter = counter % #bodies + 1
    -- headers given to wrk.format replace wrk.headers: carry the token over
    local headers = {["Content-Type"] = "application/json"}
    for name, value in pairs(wrk.headers) do headers[name] = value end
    return wrk.format("POST", paths[1], headers, bodies[counter])
  end
  if #paths > 0 then
    return wrk.format("GET", paths[math.random(#paths)])
  end
  return wrk.format("GET")
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'DPJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "min_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, latency.min, errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
