-- A probe-like mix for wrk: mostly heads, some feeds, the log now and then.
local paths = {"/v1/head.json", "/v1/head.json", "/v1/head.json", "/v1/feed.json", "/v1/log.json?limit=10", "/healthz"}
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
