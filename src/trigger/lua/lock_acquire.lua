-- Takes a persona's lock unless another worker whose lease lives holds it.
-- KEYS[1]: the lock.
-- ARGV[1]: this worker's id; ARGV[2]: the prefix of lease keys (the holder's id follows).
-- Returns 1 if this worker holds it now, 0 if another live worker does.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. holder) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
