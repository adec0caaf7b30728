-- Start watching a payment unless it is watched already (watching twice is harmless). A
-- payment that is already final when adopted gets its one event here, atomically; the
-- event names the app that owns the payment (its `app` field), for the fan-out.
-- KEYS[1] payment hash, KEYS[2] payments index, KEYS[3] poll schedule, KEYS[4] outbox,
-- KEYS[5] pending by creation time
-- ARGV[1] payment id, [2] now, [3] first poll at, [4] '1' to schedule, [5] event id or '',
-- [6] event type, [7] event body, [8] created at (unix), [9..] field/value pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1])
end
if ARGV[5] ~= '' then
  local app = redis.call('HGET', KEYS[1], 'app') or ''
  local entry = redis.call('XADD', KEYS[4], '*', 'event_id', ARGV[5], 'type', ARGV[6],
                           'payment_id', ARGV[1], 'body', ARGV[7], 'app', app)
  redis.call('HSET', KEYS[1], 'event_id', ARGV[5], 'outbox_entry', entry, 'final_at', ARGV[2])
end
return 1
