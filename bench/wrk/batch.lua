-- A batch of BATCH usage events per request ({"events": [...]}), each with a new event id.
--   wrk -t1 -c4 -d20s --timeout 60s -s bench/wrk/batch.lua URL -- <prefix> <secret> [size]
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

local base_init = init
function init(args)
   base_init(args)
   size = tonumber(args[3] or "1000")
end

function request()
   local events = {}
   for i = 1, size do
      events[i] = event_json(next_id(), sent)
   end
   local body = '{"events":[' .. table.concat(events, ",") .. ']}'
   return wrk.format("POST", "/api/v1/credits/usage", nil, body)
end
