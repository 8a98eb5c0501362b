-- GET of the URL's path with the usage key (reads: the balance).
--   wrk -t1 -c1 -d10s -s bench/wrk/get.lua URL/api/v1/credits/balance -- <prefix> <secret>
dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
