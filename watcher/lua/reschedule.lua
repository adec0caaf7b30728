-- Move a member's next time, but only if it is still scheduled: a payment that went final or
-- was stopped meanwhile must not be put back.
-- KEYS[1] schedule; ARGV[1] member, ARGV[2] score, ARGV[3] 'LT' to only move it earlier.
if ARGV[3] == 'LT' then
  return redis.call('ZADD', KEYS[1], 'XX', 'LT', 'CH', ARGV[2], ARGV[1])
end
return redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1])
