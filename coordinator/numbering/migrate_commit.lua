-- Commit one migration run into the `default` series: rename its staged copies to their final
-- names and write both sequences' settings, all at once -- unless another run committed first.
-- The invoice settings are the marker: the series is in use as soon as they exist.
--
-- KEYS[1] {ser:default}:invoice:settings   KEYS[2] {ser:default}:credit_note:settings
-- KEYS[3..] pairs: staged key, final key (all in {ser:default})
--
-- ARGV[1] JSON settings of invoice   ARGV[2] JSON settings of credit_note
--
-- Returns 'done' | 'already' (another run committed; drop the staged copies)
--         | 'incomplete' (a staged key is missing: copy again)

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'already'
end
for i = 3, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return 'incomplete'
  end
end
for i = 3, #KEYS, 2 do
  redis.call('RENAME', KEYS[i], KEYS[i + 1])
end
for i, json in ipairs({ARGV[1], ARGV[2]}) do
  redis.call('DEL', KEYS[i])
  for field, value in pairs(cjson.decode(json)) do
    redis.call('HSET', KEYS[i], field, value)
  end
end
return 'done'
