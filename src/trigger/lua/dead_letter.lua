-- Dead-letters a message that is in flight: it leaves the in-flight list and its entry (the
-- reason and the raw bytes, as JSON) joins the dead letters, in one step.
-- KEYS[1]: the in-flight list; KEYS[2]: the dead letters.
-- ARGV[1]: the message; ARGV[2]: its dead-letter entry.
-- Returns 1 if it was in flight, 0 if not (then nothing is written).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
