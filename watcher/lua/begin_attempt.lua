-- The read before one delivery attempt, in one round trip: the delivery, its subscription and
-- its event, and a slot among the subscription's concurrent deliveries (slots are leases).
-- A missing or finished delivery leaves the schedules: {'skipped'}. A subscription gone or
-- disabled, or an event no longer stored, takes no slot: {'drop', ...} (the caller
-- dead-letters it). No free slot puts the delivery back on its schedule: {'postponed'}.
-- Else {'acquired', delivery, subscription, event fields}, each a flat field/value list.
-- KEYS[1] delivery hash, [2] deliver schedule, [3] retry schedule, [4] outbox
-- ARGV[1] delivery id, [2] now, [3] lease end, [4] cap, [5] postponed until,
-- [6] a subscription's key up to its id, [7] its in-flight key after the id (both made by
-- keys.py; they share the hash tag of KEYS, so the script stays on one Cluster slot).
local flat = redis.call('HGETALL', KEYS[1])
local delivery = {}
for i = 1, #flat, 2 do
  delivery[flat[i]] = flat[i + 1]
end
if #flat == 0 or delivery.status == 'succeeded' or delivery.status == 'dead' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'skipped'}
end
local sub_id = delivery.subscription_id or ''
local sub = redis.call('HGETALL', ARGV[6] .. sub_id)
local enabled = false
for i = 1, #sub, 2 do
  if sub[i] == 'enabled' then
    enabled = sub[i + 1] == '1'
  end
end
local entry = delivery.outbox_entry or ''
local found = {}
if entry ~= '' then
  found = redis.call('XRANGE', KEYS[4], entry, entry, 'COUNT', 1)
end
local event = found[1] and found[1][2] or {}
if not enabled or not found[1] then
  return {'drop', flat, sub, event}
end
local inflight = ARGV[6] .. sub_id .. ARGV[7]
redis.call('ZREMRANGEBYSCORE', inflight, '-inf', ARGV[2])
local holds = redis.call('ZSCORE', inflight, ARGV[1])
if not holds and redis.call('ZCARD', inflight) >= tonumber(ARGV[4]) then
  local schedule = KEYS[2]
  if tonumber(delivery.attempts or '0') > 0 then
    schedule = KEYS[3]
  end
  redis.call('ZADD', schedule, 'XX', ARGV[5], ARGV[1])
  return {'postponed'}
end
redis.call('ZADD', inflight, ARGV[3], ARGV[1])
return {'acquired', flat, sub, event}
