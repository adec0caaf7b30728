"""Lua scripts: each is one atomic step that must not be split across round trips."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

# Take at most N due members of a schedule and push their score to the lease's end, so a
# worker that dies holding them loses nothing: they come due again when the lease runs out.
# KEYS[1] schedule; ARGV now, lease_until, limit.
CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
end
return ids
"""

# Start watching a payment unless it is watched already (watching twice is harmless). A
# payment that is already final when adopted gets its one event here, atomically.
# KEYS[1] payment hash, KEYS[2] payments index, KEYS[3] poll schedule, KEYS[4] outbox,
# KEYS[5] pending by creation time
# ARGV[1] payment id, [2] now, [3] first poll at, [4] '1' to schedule, [5] event id or '',
# [6] event type, [7] event body, [8] created at (unix), [9..] field/value pairs.
ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1])
end
if ARGV[5] ~= '' then
  local entry = redis.call('XADD', KEYS[4], '*', 'event_id', ARGV[5], 'type', ARGV[6],
                           'payment_id', ARGV[1], 'body', ARGV[7])
  redis.call('HSET', KEYS[1], 'event_id', ARGV[5], 'outbox_entry', entry, 'final_at', ARGV[2])
end
return 1
"""

# Compare-and-set of a payment's status. Only the worker whose expected version still holds
# wins; a final status never changes again. A final move also leaves the schedule and
# appends its event to the outbox in the same step, so two racing pollers make one event.
# KEYS[1] payment hash, KEYS[2] poll schedule, KEYS[3] outbox stream, KEYS[4] transitions,
# KEYS[5] pending by creation time
# ARGV[1] expected version, [2] new status, [3] '1' if final, [4] now, [5] transition JSON,
# [6] event id, [7] event type, [8] event body, [9] payment id, [10..] field/value pairs.
TRANSITION = """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  return {'missing', ''}
end
if version ~= ARGV[1] then
  return {'stale', version}
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' or status == 'failed' or status == 'expired' then
  return {'final', version}
end
local new_version = tostring(tonumber(version) + 1)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'version', new_version,
           'status_changed_at', ARGV[4])
if #ARGV >= 10 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
end
redis.call('RPUSH', KEYS[4], ARGV[5])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[9])
  redis.call('ZREM', KEYS[5], ARGV[9])
  local entry = redis.call('XADD', KEYS[3], '*', 'event_id', ARGV[6], 'type', ARGV[7],
                           'payment_id', ARGV[9], 'body', ARGV[8])
  redis.call('HSET', KEYS[1], 'event_id', ARGV[6], 'outbox_entry', entry,
             'final_at', ARGV[4])
end
return {'ok', new_version}
"""

# Move a member's next time, but only if it is still scheduled: a payment that went final or
# was stopped meanwhile must not be put back.
# KEYS[1] schedule; ARGV[1] member, ARGV[2] score, ARGV[3] 'LT' to only move it earlier.
RESCHEDULE = """
if ARGV[3] == 'LT' then
  return redis.call('ZADD', KEYS[1], 'XX', 'LT', 'CH', ARGV[2], ARGV[1])
end
return redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1])
"""

# Raise a hash field to a number, never lower it: two sweeps finishing out of order must not
# move the watermark back. KEYS[1] hash; ARGV[1] field, ARGV[2] value. Returns the value kept.
RAISE_FIELD = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if current == nil or tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return tostring(current)
"""


@dataclass(frozen=True)
class Scripts:
    claim_due: Script
    adopt: Script
    transition: Script
    reschedule: Script
    raise_field: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            claim_due=client.register_script(CLAIM_DUE),
            adopt=client.register_script(ADOPT),
            transition=client.register_script(TRANSITION),
            reschedule=client.register_script(RESCHEDULE),
            raise_field=client.register_script(RAISE_FIELD),
        )
