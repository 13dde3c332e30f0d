-- Takes the oldest message of the first non-empty list into a worker's in-flight list.
-- KEYS: the lists in the order to serve them, then the in-flight list.
-- ARGV: none.
-- Returns {list, message} (the message as bytes), or false when every list is empty.
for i = 1, #KEYS - 1 do
  local message = redis.call('LMOVE', KEYS[i], KEYS[#KEYS], 'RIGHT', 'LEFT')
  if message then return {KEYS[i], message} end
end
return false
