-- Compare-and-set of a payment's status. Only the worker whose expected version still holds
-- wins; a final status never changes again. A final move also leaves the schedule and
-- appends its event to the outbox in the same step, so two racing pollers make one event;
-- the event names the app that owns the payment, for the fan-out.
-- The poll that made the move is counted on the record here too (no second round trip).
-- KEYS[1] payment hash, KEYS[2] poll schedule, KEYS[3] outbox stream, KEYS[4] transitions,
-- KEYS[5] pending by creation time
-- ARGV[1] expected version, [2] new status, [3] '1' if final, [4] now, [5] transition JSON,
-- [6] event id, [7] event type, [8] event body, [9] payment id, [10..] field/value pairs.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  return {'missing', ''}
end
if version ~= ARGV[1] then
  return {'stale', version}
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' or status == 'failed' or status == 'expired' then
  return {'final', version}
end
local new_version = tostring(tonumber(version) + 1)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'version', new_version,
           'status_changed_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'poll_count', 1)
if #ARGV >= 10 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
end
redis.call('RPUSH', KEYS[4], ARGV[5])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[9])
  redis.call('ZREM', KEYS[5], ARGV[9])
  local app = redis.call('HGET', KEYS[1], 'app') or ''
  local entry = redis.call('XADD', KEYS[3], '*', 'event_id', ARGV[6], 'type', ARGV[7],
                           'payment_id', ARGV[9], 'body', ARGV[8], 'app', app)
  redis.call('HSET', KEYS[1], 'event_id', ARGV[6], 'outbox_entry', entry,
             'final_at', ARGV[4])
end
return {'ok', new_version}
