-- One poll's whole write in one round trip: the counters and the latency observation it made,
-- then (only if the record still has the version read before the poll) its poll fields and
-- its next poll. A record changed meanwhile, or deleted, is left alone: 0, and the poller
-- reads it again. KEYS[1] payment hash, [2] poll schedule, [3] counters, [4] poll latency
-- ARGV[1] expected version ('' = any existing), [2] payment id, [3] next poll at or '',
-- [4] latency bucket field or '', [5] latency microseconds, [6] N counter pairs,
-- [7] M record increments, then N counter name/amount pairs, M record field/amount pairs,
-- then the field/value pairs to set.
local at = 8
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HINCRBY', KEYS[3], ARGV[at], ARGV[at + 1])
  at = at + 2
end
if ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  redis.call('HINCRBY', KEYS[4], 'count', 1)
  redis.call('HINCRBY', KEYS[4], 'sum_us', ARGV[5])
end
local version = redis.call('HGET', KEYS[1], 'version')
if not version or (ARGV[1] ~= '' and version ~= ARGV[1]) then
  return 0
end
for _ = 1, tonumber(ARGV[7]) do
  redis.call('HINCRBY', KEYS[1], ARGV[at], ARGV[at + 1])
  at = at + 2
end
if at <= #ARGV then
  redis.call('HSET', KEYS[1], unpack(ARGV, at))
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
end
return 1
