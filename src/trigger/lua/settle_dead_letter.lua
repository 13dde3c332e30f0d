-- Takes one entry out of the dead letters and, to requeue it, sends its message again at the
-- end of its queue's line, in one step (an operator's action from the dashboard).
-- KEYS[1]: the dead letters; KEYS[2]: the queue's list (ignored when dropping).
-- ARGV[1]: the entry, as stored; ARGV[2]: the message's raw bytes, or '' to drop it.
-- Returns 1 if the entry was there (and is now settled), 0 if not (then nothing is written).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  if ARGV[2] ~= '' then
    redis.call('LPUSH', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
