-- Moves one message from a list to the head of the line of another, if it is still there.
-- KEYS[1]: the list it is in (an in-flight list); KEYS[2]: the queue it goes back to.
-- ARGV[1]: the message.
-- Returns 1 if moved, 0 if it was not there.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
