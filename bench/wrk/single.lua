-- One usage event per request: POST /api/v1/credits/usage with a new event id each time.
--   wrk -t1 -c32 -d20s -s bench/wrk/single.lua http://127.0.0.1:PORT -- <prefix> <secret>
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")

function request()
   local body = event_json(next_id(), sent)
   return wrk.format("POST", "/api/v1/credits/usage", nil, body)
end
