-- wrk script for bench/serving.py: POST one JSON body per request, cycling through a file of bodies.
--
-- Usage: wrk ... URL -- BODIES_FILE [AUTHORIZATION_HEADER_VALUE]
-- BODIES_FILE holds one JSON body per line. Each thread starts at its own offset in the file.
-- done() prints one line "BENCH_JSON {...}" with wrk's own figures (latencies in microseconds) and the number of
-- requests issued, so the caller can bracket the server-side prediction log: completed <= logged <= sent.

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

local requests = {}
local position = 0
sent = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... URL -- BODIES_FILE [AUTHORIZATION]")
  end
  local headers = { ["Content-Type"] = "application/json" }
  if args[2] ~= nil and args[2] ~= "" then
    headers["Authorization"] = args[2]
  end
  for line in io.lines(path) do
    if #line > 0 then
      table.insert(requests, wrk.format("POST", nil, headers, line))
    end
  end
  if #requests == 0 then
    error("no bodies in " .. path)
  end
  position = ((id or 1) - 1) * 37 % #requests
end

function request()
  position = position % #requests + 1
  sent = sent + 1
  return requests[position]
end

function done(summary, latency, _)
  -- wrk calls request() once more on the first thread before the run, to check the script; that one is never sent.
  local written = -1
  for _, thread in ipairs(threads) do
    written = written + (thread:get("sent") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "sent": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.duration, summary.requests, written, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
