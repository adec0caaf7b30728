-- Take at most N due members of a schedule and push their score to the lease's end, so a
-- worker that dies holding them loses nothing: they come due again when the lease runs out.
-- KEYS[1] schedule; ARGV now, lease_until, limit.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
end
return ids
