-- One 100-event batch per request, each connection on its own 100 entities.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local thread_id = 0
setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local events = {}
  for i = 0, 99 do
    events[#events + 1] = '{"entity_id":"b-' .. thread_id .. '-' .. i ..
      '","event_type":"bench.batch","payload":{"n":' .. counter .. ',"i":' .. i .. '}}'
  end
  return wrk.format(nil, "/api/v1/events/batch", nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end
