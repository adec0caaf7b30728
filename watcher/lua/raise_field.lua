-- Raise a hash field to a number, never lower it: two sweeps finishing out of order must not
-- move the watermark back. KEYS[1] hash; ARGV[1] field, ARGV[2] value. Returns the value kept.
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if current == nil or tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return tostring(current)
