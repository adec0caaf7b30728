-- One request from a token bucket: `rate` tokens a second refill it up to `burst`; a request
-- takes one. Answers {1, '0'} when taken, else {0, seconds until one is there} (a string:
-- Redis would cut a Lua number to an integer). The bucket expires once it would be full.
-- KEYS[1] the bucket hash; ARGV[1] now (seconds), [2] rate, [3] burst
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1]) or burst
local at = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = tokens >= 1
if taken then
  tokens = tokens - 1
end
-- API processes' clocks differ: a request stamped before the last one never winds `at` back.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at',
           string.format('%.6f', math.max(at, now)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
if taken then
  return {1, '0'}
end
return {0, string.format('%.6f', (1 - tokens) / rate)}
