-- The API key a request presents, found by its digest: {} when there is none, or when it
-- belongs to an app that is gone (a deletion revokes the app's keys, but a key made or used
-- while the deletion ran must not outlive it).
-- KEYS[1] the digest hash; ARGV[1] the key name of an app hash, less the app id
local found = redis.call('HGETALL', KEYS[1])
if #found == 0 then
  return found
end
local app_id = redis.call('HGET', KEYS[1], 'app_id')
if app_id and app_id ~= '' and redis.call('EXISTS', ARGV[1] .. app_id) == 0 then
  return {}
end
return found
