-- uses: begin_attempt_lib
-- The read before one delivery attempt, in one round trip (begin_attempt_lib.lua).
-- KEYS[1] delivery hash, [2] deliver schedule, [3] retry schedule, [4] outbox
-- ARGV[1] delivery id, [2] now, [3] lease end, [4] cap, [5] postponed until,
-- [6] a subscription's key up to its id, [7] its in-flight key after the id.
return begin_attempt(KEYS[1], KEYS[2], KEYS[3], KEYS[4], unpack(ARGV, 1, 7))
