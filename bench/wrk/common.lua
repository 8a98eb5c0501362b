-- Shared by the wrk scripts of bench/run.py (loaded with dofile). Arguments after `--`:
--   <run prefix> <usage key secret>
-- Every thread gets a number in setup(); every request a new event id
-- "<prefix>:<thread>:<counter>", so no request is a retry. done() prints one JSON line,
-- prefixed "WRK_JSON ", that bench/run.py reads: requests, seconds, errors by kind, the
-- responses by status, and latency percentiles in ms.

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

function init(args)
   prefix = args[1] or "wrk"
   secret = args[2] or ""
   sent = 0
   statuses = {}
   wrk.headers["Authorization"] = "Bearer " .. secret
   wrk.headers["Content-Type"] = "application/json"
end

function next_id()
   sent = sent + 1
   return prefix .. ":" .. tid .. ":" .. sent
end

-- Token counts cycle through a small set drawn from the chat workload's quantiles
-- (credits/traffic.py): the events are not all alike, and the set is the same every run.
local PROMPTS = {31, 112, 406, 812, 1020, 1653, 2048, 3390, 57, 640}
local COMPLETIONS = {12, 190, 304, 43, 251, 126, 470, 18, 233, 97}

function event_json(id, n)
   local i = (n % #PROMPTS) + 1
   return '{"id":"' .. id .. '","model":"gpt-4o","prompt_tokens":' .. PROMPTS[i] ..
      ',"completion_tokens":' .. COMPLETIONS[i] .. '}'
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local by_status = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses")
      for status, n in pairs(counts) do
         by_status[status] = (by_status[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(by_status) do
      table.insert(parts, '"' .. status .. '":' .. n)
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"seconds":%.3f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d},"statuses":{%s},"latency_ms":{"p50":%.3f,"p90":%.3f,' ..
      '"p99":%.3f,"max":%.3f,"mean":%.3f}}\n',
      summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
      table.concat(parts, ","), latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
