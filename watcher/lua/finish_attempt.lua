-- The write after one delivery attempt, in one round trip: the attempt logged, the delivery
-- moved to its next state (a retry scheduled, or none), counted, its slot given back, and the
-- subscriber's health noted: a success clears `failing_since`, a failure sets it unless set
-- and returns it (as the time now when the subscription is gone).
-- KEYS[1] delivery hash, [2] its attempt log, [3] deliver schedule, [4] retry schedule,
-- [5] counters, [6] the subscription's in-flight slots, [7] the subscription hash
-- ARGV[1] delivery id, [2] attempt JSON, [3] status, [4] next attempt at or '',
-- [5] 'success', 'failure' or '', [6] now, [7..] field/value pairs of the delivery.
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
end
redis.call('HINCRBY', KEYS[5], 'deliveries:' .. ARGV[3], 1)
redis.call('ZREM', KEYS[6], ARGV[1])
if ARGV[5] == '' or redis.call('EXISTS', KEYS[7]) == 0 then
  return ARGV[6]
end
if ARGV[5] == 'success' then
  redis.call('HDEL', KEYS[7], 'failing_since')
  return ARGV[6]
end
redis.call('HSETNX', KEYS[7], 'failing_since', ARGV[6])
return redis.call('HGET', KEYS[7], 'failing_since')
