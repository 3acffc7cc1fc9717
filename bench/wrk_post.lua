-- wrk script for bench/serving.py: POST one JSON body per request, cycling through a file of bodies.
--
-- Usage: wrk ... URL -- BODIES_FILE [AUTHORIZATION_HEADER_VALUE] [WORKLOAD] [SALT]
-- BODIES_FILE holds one JSON body per line. Each thread starts at its own offset in the file.
-- WORKLOAD: "cycle" (the default: the bodies as they are, cycled, so every body repeats), "unique" (no body ever
-- repeats: the first two numbers of each body are shifted by a per-request and a per-thread-and-SALT amount of
-- 1e-9 each, far below what changes a prediction's meaning), or "half" (every other request from the cycle, the
-- others unique: 50% repeats once the cycle has gone round). SALT: an integer the caller makes unique per wrk run,
-- so that no two runs send the same "unique" row.
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
local templates = {}
local position = 0
local workload = "cycle"
local salt = 0
local headers = {}
sent = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... URL -- BODIES_FILE [AUTHORIZATION]")
  end
  headers = { ["Content-Type"] = "application/json" }
  if args[2] ~= nil and args[2] ~= "" then
    headers["Authorization"] = args[2]
  end
  workload = args[3] or "cycle"
  salt = tonumber(args[4] or "0")
  for line in io.lines(path) do
    if #line > 0 then
      table.insert(requests, wrk.format("POST", nil, headers, line))
      local head, a, middle, b, rest = line:match("^(.-:%s*)(%-?[%d%.eE%+%-]+)(,.-:%s*)(%-?[%d%.eE%+%-]+)(.*)$")
      if workload ~= "cycle" and head == nil then
        error("cannot find two numbers to vary in: " .. line)
      end
      table.insert(templates, { head = head, a = tonumber(a), middle = middle, b = tonumber(b), rest = rest })
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
  if workload == "cycle" or (workload == "half" and sent % 2 == 0) then
    return requests[position]
  end
  local t = templates[position]
  local body = t.head .. string.format("%.17g", t.a + sent * 1e-9) .. t.middle ..
    string.format("%.17g", t.b + (salt * 16 + (id or 1)) * 1e-9) .. t.rest
  return wrk.format("POST", nil, headers, body)
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
