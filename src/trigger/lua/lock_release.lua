-- Frees a persona's lock if this worker holds it.
-- KEYS[1]: the lock.
-- ARGV[1]: this worker's id.
-- Returns 1 if freed, 0 if another worker held it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
