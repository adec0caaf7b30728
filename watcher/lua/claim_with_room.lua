-- Claim due deliveries only for subscribers with room, in chunks: a chunk is one in-flight
-- slot (its thread attempts it in order), so a subscriber gets at most `cap - attempts under
-- way` chunks. Deliveries of a full subscriber stay where they are, due, unclaimed: nothing is
-- claimed just to be handed back. Due first attempts come before due retries; at most `scan`
-- due members of each schedule are looked at, so a full subscriber's backlog cannot make a
-- claim long, and anyone due behind it within `scan` is still reached.
-- KEYS[1] deliver schedule, [2] retry schedule (or only [1])
-- ARGV[1] now, [2] lease end, [3] how many to claim, [4] scan, [5] chunk size, [6] cap,
-- [7] a delivery's key up to its id, [8] a subscription's key up to its id, [9] its in-flight
-- key after the id (made by keys.py; they share the hash tag of KEYS).
-- Returns {schedule index, subscription id, delivery id, ...} in claim order.
local now, lease_end = ARGV[1], ARGV[2]
local want, scan = tonumber(ARGV[3]), tonumber(ARGV[4])
local size, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local room, open, taken, count = {}, {}, {}, 0
for index, schedule in ipairs(KEYS) do
  if count >= want then
    break
  end
  local ids = redis.call('ZRANGEBYSCORE', schedule, '-inf', now, 'LIMIT', 0, scan)
  for _, id in ipairs(ids) do
    if count >= want then
      break
    end
    local sub = redis.call('HGET', ARGV[7] .. id, 'subscription_id') or ''
    if room[sub] == nil then
      local held = redis.call('ZCOUNT', ARGV[8] .. sub .. ARGV[9], '(' .. now, '+inf')
      room[sub], open[sub] = cap - held, 0
    end
    if open[sub] == 0 and room[sub] > 0 then
      room[sub], open[sub] = room[sub] - 1, size
    end
    if open[sub] > 0 then
      open[sub] = open[sub] - 1
      redis.call('ZADD', schedule, 'XX', lease_end, id)
      taken[#taken + 1] = index
      taken[#taken + 1] = sub
      taken[#taken + 1] = id
      count = count + 1
    end
  end
  -- chunks do not span schedules: a retry chunk takes a slot of its own
  for sub, left in pairs(open) do
    open[sub] = 0
  end
end
return taken
