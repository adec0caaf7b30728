-- Claim a payment id for an owner unless someone holds it: answers the holder. (SET NX GET
-- would do it in one command, but only from Redis 7.0 on.)
-- KEYS[1] the claim; ARGV[1] the owner (an app id, '' for an admin), [2] TTL in seconds
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
