-- A create finding its payment already adopted by a Voltage webhook (for it: the claim said
-- whose) makes the record what the create would have: its source, its client id. Answers 1
-- when it did, 0 when the record was the create's own already (a repeated create).
-- KEYS[1] the payment hash; ARGV field/value pairs to set besides `source`
if redis.call('HGET', KEYS[1], 'source') ~= 'watched' then
  return 0
end
redis.call('HSET', KEYS[1], 'source', 'created')
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return 1
