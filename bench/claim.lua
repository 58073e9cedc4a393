-- wrk script for bench/service.py: POST a claim with a unique Idempotency-Key each time.
-- Usage: wrk ... -s bench/claim.lua URL -- API_KEY POOL
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  token = args[1]
  pool = args[2]
  math.randomseed(os.time() * 100 + tid)
  prefix = string.format("t%d-%d", tid, math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = prefix .. "-" .. counter,
  }
  local body = '{"recipient": "r-' .. prefix .. '-' .. counter .. '"}'
  return wrk.format("POST", "/v1/pools/" .. pool .. "/claims", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("LINKPOOL p50_us=%d p99_us=%d requests=%d errors_status=%d\n",
    latency:percentile(50), latency:percentile(99), summary.requests, summary.errors.status))
end
