-- uses: begin_attempt_lib
-- The write after one delivery attempt, in one round trip: the attempt logged, the delivery
-- moved to its next state (a retry scheduled, or none), counted, its slot given back, the
-- subscriber's health noted (a success clears `failing_since`, a failure sets it unless set)
-- and the attempt counted in the subscription's hourly health bucket (delivery/health_stats).
-- When a chunk goes on after a success, the same round trip begins the next delivery.
-- KEYS[1] delivery hash, [2] its attempt log, [3] deliver schedule, [4] retry schedule,
-- [5] counters, [6] the subscription's in-flight slots, [7] the subscription hash,
-- [8] the subscription's health bucket for this hour,
-- and to begin the next: [9] its delivery hash, [10] the outbox
-- ARGV[1] delivery id, [2] attempt JSON, [3] status, [4] next attempt at or '',
-- [5] 'success', 'failure' or '', [6] now, [7] the latency bucket field, [8] '1' if the
-- attempt succeeded else '0', [9] the failure record JSON or '', [10] the bucket's TTL,
-- [11] F, the number of field/value arguments of the delivery that follow, [12..11+F] them;
-- to begin the next, [12+F..] its begin_attempt ARGV.
-- Returns {since when the subscriber has been failing (after a success: had been; now when
-- the subscription is gone or was fine), the next delivery's begin_attempt answer or nothing}.
local fields = tonumber(ARGV[11])
redis.call('HSET', KEYS[1], unpack(ARGV, 12, 11 + fields))
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
end
redis.call('HINCRBY', KEYS[5], 'deliveries:' .. ARGV[3], 1)
redis.call('ZREM', KEYS[6], ARGV[1])
local since = ARGV[6]
if redis.call('EXISTS', KEYS[7]) == 1 then
  if ARGV[5] == 'success' then
    since = redis.call('HGET', KEYS[7], 'failing_since') or ARGV[6]  -- it recovers: since when
    redis.call('HDEL', KEYS[7], 'failing_since')
  elseif ARGV[5] == 'failure' then
    redis.call('HSETNX', KEYS[7], 'failing_since', ARGV[6])
    since = redis.call('HGET', KEYS[7], 'failing_since')
  end
  redis.call('HINCRBY', KEYS[8], 'attempts', 1)
  redis.call('HINCRBY', KEYS[8], 'succeeded', tonumber(ARGV[8]))
  redis.call('HINCRBY', KEYS[8], ARGV[7], 1)
  if ARGV[9] ~= '' then
    -- Two workers may finish out of order: keep the later failure.
    local kept = redis.call('HGET', KEYS[8], 'last_failure_at')
    if not kept or tonumber(kept) <= tonumber(ARGV[6]) then
      redis.call('HSET', KEYS[8], 'last_failure_at', ARGV[6], 'last_failure', ARGV[9])
    end
  end
  redis.call('EXPIRE', KEYS[8], ARGV[10])
end
if KEYS[9] == nil then
  return {since}
end
return {since, begin_attempt(KEYS[9], KEYS[3], KEYS[4], KEYS[10], unpack(ARGV, 12 + fields))}
