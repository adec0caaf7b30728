-- The read before one delivery attempt: the delivery, its subscription and its event, and a
-- slot among the subscription's concurrent deliveries (slots are leases). A function:
-- begin_attempt.lua calls it, and so does finish_attempt.lua for a chunk's next delivery, so
-- the write after one attempt is also the read before the next.
-- A missing or finished delivery leaves the schedules: {'skipped'}. A subscription gone or
-- disabled, or an event no longer stored, takes no slot: {'drop', ...} (the caller
-- dead-letters it). No free slot puts the delivery back on its schedule, and a delivery
-- whose POST is under way is left to it: {'postponed'}.
-- Else {'acquired', delivery, subscription, event fields}, each a flat field/value list.
-- sub_head is a subscription's key up to its id, inflight_tail its in-flight key after the id
-- (both made by keys.py; they share the hash tag of KEYS, so a script stays on one slot).
local function begin_attempt(delivery_key, deliver_schedule, retry_schedule, outbox, id, now,
                               lease_end, cap, postpone_until, sub_head, inflight_tail)
  local flat = redis.call('HGETALL', delivery_key)
  local delivery = {}
  for i = 1, #flat, 2 do
    delivery[flat[i]] = flat[i + 1]
  end
  if #flat == 0 or delivery.status == 'succeeded' or delivery.status == 'dead' then
    redis.call('ZREM', deliver_schedule, id)
    redis.call('ZREM', retry_schedule, id)
    return {'skipped'}
  end
  local sub_id = delivery.subscription_id or ''
  local sub = redis.call('HGETALL', sub_head .. sub_id)
  local enabled = false
  for i = 1, #sub, 2 do
    if sub[i] == 'enabled' then
      enabled = sub[i + 1] == '1'
    end
  end
  local entry = delivery.outbox_entry or ''
  local found = {}
  if entry ~= '' then
    found = redis.call('XRANGE', outbox, entry, entry, 'COUNT', 1)
  end
  local event = found[1] and found[1][2] or {}
  if not enabled or not found[1] then
    return {'drop', flat, sub, event}
  end
  local inflight = sub_head .. sub_id .. inflight_tail
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
  if redis.call('ZSCORE', inflight, id) then
    -- Its POST is under way on another thread (whose claim ran out): never a second one.
    -- That thread renewed the claim when it began, so the schedule is left as it is.
    return {'postponed'}
  end
  if redis.call('ZCARD', inflight) >= tonumber(cap) then
    -- A re-send waits on the first-attempt schedule whatever its attempts: XX on both.
    redis.call('ZADD', deliver_schedule, 'XX', postpone_until, id)
    redis.call('ZADD', retry_schedule, 'XX', postpone_until, id)
    return {'postponed'}
  end
  -- The claim runs from now, however long the chunk took to reach this delivery.
  redis.call('ZADD', deliver_schedule, 'XX', lease_end, id)
  redis.call('ZADD', retry_schedule, 'XX', lease_end, id)
  redis.call('ZADD', inflight, lease_end, id)
  return {'acquired', flat, sub, event}
end
