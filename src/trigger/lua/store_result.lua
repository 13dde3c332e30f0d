-- Stores a task's state as Celery's Redis result backend does (SETEX, then PUBLISH on the same
-- name, which `AsyncResult.get()` waits on), unless a SUCCESS is there already: a task run again
-- never overwrites its first answer.
-- KEYS[1]: celery-task-meta-<task id>.
-- ARGV[1]: the state as JSON; ARGV[2]: seconds to keep it.
-- Returns 1 if stored, 0 if a SUCCESS stayed.
local previous = redis.call('GET', KEYS[1])
if previous and string.find(previous, '"status": *"SUCCESS"') then
  return 0
end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
