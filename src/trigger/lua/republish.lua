-- Acknowledges a message in flight and publishes its successor (a retry, with its countdown)
-- to the back of a queue, in one step: the task is never in neither place nor in both.
-- KEYS[1]: the in-flight list; KEYS[2]: the queue.
-- ARGV[1]: the message in flight; ARGV[2]: the message to publish.
-- Returns 1 if it was in flight, 0 if not (then nothing is published).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
