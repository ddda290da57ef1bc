-- One single-event append per request, spread over 1,000 entities.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/events", nil,
    '{"entity_id":"e-' .. (counter % 1000) .. '","event_type":"bench.single","payload":{"n":' .. counter .. ',"note":"metrics overhead"}}')
end
