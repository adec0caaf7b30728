-- Create the delivery unless it exists, index it and make it due, in one step.
-- KEYS[1] delivery hash, [2] deliveries index, [3] subscription's deliveries, [4] schedule
-- ARGV[1] delivery id, [2] now, [3..] field/value pairs
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 1
