-- wrk.lua: grabbench's script for wrk 4 (RunWrk), embedded by wrk.go.
--
-- wrk -t T -c C -d D --timeout 60s -s wrk.lua URL -- OPS T
--
-- Arguments (after wrk's --):
--   OPS  the ops file: one request a line, "METHOD PATH USER", sent with
--        X-User-Id: USER and no body
--   T    wrk's threads (-t)
-- Without OPS, wrk sends its URL's GET for D, as it would without a script
-- (the /healthz run), and the answers are not read.
--
-- Thread i (0-based, numbered by setup) sends lines i+1, i+1+T, … of OPS,
-- once each, and counts each answer by its API code: OK for a 2xx, the
-- "code" of a JSON error body otherwise, ERROR when it has none (as the Go
-- client, HTTP.Grab, names them). When every one of its requests has
-- been answered it writes "grabbench-wrk: thread done" to stderr and stops.
-- wrk's own main thread sleeps for D whatever its threads do: grabbench
-- sends it SIGINT once every thread is done, and it reports at once.
--
-- A connection that comes free when its thread has sent all its requests
-- (its others still in flight) must send something: it sends EXTRA, a GET
-- of a POST-only path, answered 405 METHOD_NOT_ALLOWED, which no request
-- of OPS gets and which is not counted.
--
-- done prints one JSON line on stdout:
--   {"requests": wrk's requests, extras included, "duration_us": the run,
--    "errors": {"connect", "read", "write", "timeout"}: wrk's socket errors,
--    "latency_us": {"p50", "p90", "p99", "p99.9"}: wrk's latency (extras included),
--    "answers": {CODE: count}: the answers to OPS, every thread's}

local threads = {} -- setup's, for done
local started = 0

function setup(thread)
   thread:set("id", started)
   started = started + 1
   table.insert(threads, thread)
end

answers = {} -- read by done through thread:get

local reqs = {}
local sent, answered = 0, 0
local extra
local verifying = false

function init(args)
   local ops, nthreads = args[1], tonumber(args[2])
   if ops == nil then
      request, response = nil, nil
      return
   end
   local f = assert(io.open(ops, "r"))
   local line = 0
   for l in f:lines() do
      if line % nthreads == id then
         local method, path, user = l:match("^(%S+) (%S+) (%S+)$")
         assert(method, "grabbench-wrk: bad line in " .. ops .. ": " .. l)
         reqs[#reqs + 1] = wrk.format(method, path, {["X-User-Id"] = user})
         extra = extra or wrk.format("GET", path)
      end
      line = line + 1
   end
   f:close()
   -- wrk calls the first thread's request once before it runs, to count
   -- the requests it returns, and never sends that one.
   verifying = id == 0
end

function request()
   if verifying then
      verifying = false
      return extra
   end
   if sent < #reqs then
      sent = sent + 1
      return reqs[sent]
   end
   return extra
end

function response(status, headers, body)
   if status == 405 then
      return -- an extra
   end
   local code = "OK"
   if status < 200 or status > 299 then
      code = body:match('"code"%s*:%s*"([%w_]+)"') or "ERROR"
   end
   answers[code] = (answers[code] or 0) + 1
   answered = answered + 1
   if answered == #reqs then
      io.stderr:write("grabbench-wrk: thread done\n")
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(threads) do
      for code, n in pairs(t:get("answers")) do
         total[code] = (total[code] or 0) + n
      end
   end
   local codes = {}
   for code, n in pairs(total) do
      codes[#codes + 1] = string.format('"%s":%d', code, n)
   end
   table.sort(codes)
   local e = summary.errors
   io.write(string.format('{"requests":%d,"duration_us":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p99.9":%d},"answers":{%s}}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      table.concat(codes, ",")))
end
