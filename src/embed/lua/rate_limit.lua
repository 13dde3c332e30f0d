-- Takes one request and ARGV[3] tokens from a provider key's buckets, if both hold enough.
-- Buckets refill continuously, a minute's allowance a minute, and hold at most that: as
-- providers count. A second's allowance is held back: the provider counts a call when it
-- arrives, later than it is taken here, and its bucket may have been full (and wasted refill)
-- meanwhile. A call larger than what a bucket can hold waits for a full one, then leaves it
-- in debt. Time is the Redis server's, so every daemon sharing the key agrees on it.
-- KEYS[1]: the buckets (hash: requests, tokens, at in ms).
-- ARGV[1]: requests a minute (0: no limit); ARGV[2]: tokens a minute (0: no limit);
-- ARGV[3]: the call's tokens.
-- Returns 0 when taken, else the milliseconds to wait before asking again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'requests', 'tokens', 'at')
local elapsed = math.max(0, now - (tonumber(state[3]) or now))
local function level(value, per_minute)
  if per_minute == 0 then return 0 end
  local current = tonumber(value) or per_minute
  return math.min(per_minute, current + elapsed * per_minute / 60000)
end
local requests, tokens = level(state[1], rpm), level(state[2], tpm)
local wait = 0
local requests_needed = math.min(1 + rpm / 60, rpm)
if rpm > 0 and requests < requests_needed then
  wait = math.max(wait, math.ceil((requests_needed - requests) * 60000 / rpm))
end
local needed = math.min(cost + tpm / 60, tpm)
if tpm > 0 and tokens < needed then
  wait = math.max(wait, math.ceil((needed - tokens) * 60000 / tpm))
end
if wait == 0 then
  if rpm > 0 then requests = requests - 1 end
  if tpm > 0 then tokens = tokens - cost end
end
redis.call('HSET', KEYS[1], 'requests', tostring(requests), 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], 120000)
return wait
