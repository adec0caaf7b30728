-- uses: begin_attempt_lib
-- The write after one delivery attempt, in one round trip: the attempt logged, the delivery
-- moved to its next state (a retry scheduled, or none), counted, its slot given back, and the
-- subscriber's health noted: a success clears `failing_since`, a failure sets it unless set.
-- When a chunk goes on after a success, the same round trip begins the next delivery.
-- KEYS[1] delivery hash, [2] its attempt log, [3] deliver schedule, [4] retry schedule,
-- [5] counters, [6] the subscription's in-flight slots, [7] the subscription hash,
-- and to begin the next: [8] its delivery hash, [9] the outbox
-- ARGV[1] delivery id, [2] attempt JSON, [3] status, [4] next attempt at or '',
-- [5] 'success', 'failure' or '', [6] now, [7] F, the number of field/value arguments of the
-- delivery that follow, [8..7+F] them; to begin the next, [8+F..] its begin_attempt ARGV.
-- Returns {since when the subscriber has been failing (now when the subscription is gone or
-- fine), the next delivery's begin_attempt answer or nothing}.
local fields = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 8, 7 + fields))
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
end
redis.call('HINCRBY', KEYS[5], 'deliveries:' .. ARGV[3], 1)
redis.call('ZREM', KEYS[6], ARGV[1])
local since = ARGV[6]
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[7]) == 1 then
  if ARGV[5] == 'success' then
    redis.call('HDEL', KEYS[7], 'failing_since')
  else
    redis.call('HSETNX', KEYS[7], 'failing_since', ARGV[6])
    since = redis.call('HGET', KEYS[7], 'failing_since')
  end
end
if KEYS[8] == nil then
  return {since}
end
return {since, begin_attempt(KEYS[8], KEYS[3], KEYS[4], KEYS[9], unpack(ARGV, 8 + fields))}
