"""The scripts over many records: the listing page, the sweep, clear, prune and reindex (see
scripts.py, which puts the prelude before each, fills in `{groups}` and builds them for a
prefix)."""

_MULTI = "#!lua flags=allow-cross-slot-keys,allow-oom\n"

# A page: ARGV: min and max (ZRANGE BYLEX bounds), limit, values ('1' or ''), the groups to
# merge (see scripts._GROUPS). Answers {1, n, n tags, key, revision, expiry, value, ...} with up to
# limit + 1 records in key order, the n tags naming groups whose index is not on this node
# (a slot moving: the caller reads those apart), or {0, error} when a record is not (its slot
# is moving: the caller asks again). Entries whose record is gone are removed on the way (and
# an expiry announced). With several groups (a Cluster node's slots), their first keys are
# merged through a sorted set of this script's own that is never replicated nor written to
# the AOF (REPL_NONE) and is deleted before the script ends. With one group, KEYS[1] may name
# its index, so that Redis Cluster routes the call to the node that has it.
LIST = (
    _MULTI
    + "{groups}"
    + """
local min, max, want, values = ARGV[1], ARGV[2], tonumber(ARGV[3]) + 1, ARGV[4] == '1'
local tags = group_tags(5)
local out = {}
local skipped = {}
local count = 0
local function failed(reply) return type(reply) == 'table' and reply.err end
local function visit(S, key)
  local rkey = PREFIX .. key
  local stored
  if values then
    stored = redis.pcall('GET', rkey)
  else
    stored = redis.pcall('GETRANGE', rkey, 0, 40)
  end
  if failed(stored) then return stored.err end
  local revision, expires_at = examine(S, rkey, key, stored)
  if not revision then
    redis.call('ZREM', S[1], key)
    return nil
  end
  count = count + 1
  local body = ''
  if values then body = string.sub(stored, string.find(stored, ':', 1, true) + 1) end
  out[#out + 1] = key
  out[#out + 1] = tonumber(revision)
  out[#out + 1] = tonumber(expires_at) or 0
  out[#out + 1] = body
  return nil
end
local err = nil
if #tags == 1 then
  local S = structures(tags[1])
  while not err and count < want do
    local keys = redis.pcall('ZRANGE', S[1], min, max, 'BYLEX', 'LIMIT', 0, want - count)
    if failed(keys) then err = keys.err break end
    if #keys == 0 then break end
    for _, key in ipairs(keys) do
      err = visit(S, key)
      if err then break end
    end
    min = '(' .. keys[#keys]
  end
else
  -- The merge set goes in a slot this node has for sure now (not one that is moving).
  local MERGE = nil
  redis.set_repl(redis.REPL_NONE)
  for _, tag in ipairs(tags) do
    local name = PREFIX .. '{' .. tag .. '}merge/'
    if not failed(redis.pcall('DEL', name)) then
      MERGE = name
      break
    end
  end
  if not MERGE then
    redis.set_repl(redis.REPL_ALL)
    return {0, 'no slot of this node is settled'}
  end
  local owner, heads = {}, {}
  for i, tag in ipairs(tags) do
    local index = PREFIX .. '{' .. tag .. '}index/'
    local first = redis.pcall('ZRANGE', index, min, max, 'BYLEX', 'LIMIT', 0, 1)
    if failed(first) then
      skipped[#skipped + 1] = tag
    elseif first[1] then
      owner[first[1]] = i
      heads[#heads + 1] = '0'
      heads[#heads + 1] = first[1]
      if #heads >= 1000 then
        redis.call('ZADD', MERGE, unpack(heads))
        heads = {}
      end
    end
  end
  if not err and #heads > 0 then redis.call('ZADD', MERGE, unpack(heads)) end
  while not err and count < want do
    local top = redis.call('ZPOPMIN', MERGE)
    if #top == 0 then break end
    local key = top[1]
    local i = owner[key]
    local S = structures(tags[i])
    redis.set_repl(redis.REPL_ALL)
    err = visit(S, key)
    redis.set_repl(redis.REPL_NONE)
    if not err then
      local next = redis.pcall('ZRANGE', S[1], '(' .. key, max, 'BYLEX', 'LIMIT', 0, 1)
      if failed(next) then
        err = next.err
      elseif next[1] then
        owner[next[1]] = i
        redis.call('ZADD', MERGE, 0, next[1])
      end
    end
  end
  redis.call('DEL', MERGE)
  redis.set_repl(redis.REPL_ALL)
end
publish()
if err then return {0, err} end
local answer = {1, #skipped}
for _, tag in ipairs(skipped) do answer[#answer + 1] = tag end
for _, item in ipairs(out) do answer[#answer + 1] = item end
return answer
"""
)

# Remove up to ARGV[1] records whose expiry has come (and their entries), announcing each;
# ARGV[2..]: the groups (see scripts._GROUPS). Answers {how many expiry entries it handled, how many
# groups or records were not on this node} (resharding: the caller reloads the layout).
SWEEP = (
    _MULTI
    + "{groups}"
    + """
local budget = tonumber(ARGV[1])
local done, missed = 0, 0
for _, tag in ipairs(group_tags(2)) do
  local S = structures(tag)
  local due = redis.pcall('ZRANGE', S[2], '-inf', now(), 'BYSCORE', 'LIMIT', 0, budget - done)
  if due.err then
    missed = missed + 1
  else
    for _, key in ipairs(due) do
      local rkey = PREFIX .. key
      local head = redis.pcall('GETRANGE', rkey, 0, 40)
      if type(head) ~= 'string' then  -- the record is mid-migration: next time
        missed = missed + 1
      else
        local revision, expires_at = examine(S, rkey, key, head)
        if revision then  -- a live record under an entry that was not kept in step: mend it
          if expires_at == '' then
            redis.call('ZREM', S[2], key)
            redis.call('HDEL', S[3], key)
          else
            redis.call('ZADD', S[2], expires_at, key)
          end
        else  -- gone (and announced above if its revision was known)
          redis.call('ZREM', S[2], key)
          redis.call('ZREM', S[1], key)
        end
      end
      done = done + 1
    end
  end
  if done >= budget then break end
end
publish()
return {done, missed}
"""
)

# Delete records and their entries, announcing each. ARGV: record name, tag, record name, ...
# A record not on this node (resharding) is skipped.
CLEAR = (
    _MULTI
    + """
for i = 1, #ARGV, 2 do
  local rkey, S = ARGV[i], structures(ARGV[i + 1])
  local head = redis.pcall('GETRANGE', rkey, 0, 40)
  if type(head) == 'string' then
    local key = string.sub(rkey, PLEN + 1)
    local revision, expires_at = examine(S, rkey, key, head)
    if revision then remove(S, rkey, key, revision, expires_at) end
  end
end
publish()
return 1
"""
)

# Index entries whose record is gone, from ARGV[1] (a BYLEX bound), at most ARGV[2] of them:
# removed (an expiry announced). Answers the last key looked at, or nil at the end.
PRUNE = """
local S = {KEYS[1], KEYS[2], KEYS[3], string.sub(KEYS[1], 1, -7) .. 'changes/'}
local keys = redis.call('ZRANGE', S[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(keys) do
  if not live(S, PREFIX .. key, key) then redis.call('ZREM', S[1], key) end
end
publish()
if #keys < tonumber(ARGV[2]) then return false end
return keys[#keys]
"""

# Index records written by a kv that kept no index. ARGV: record name, tag, ... Answers how
# many it indexed.
REINDEX = (
    _MULTI
    + """
local indexed = 0
for i = 1, #ARGV, 2 do
  local rkey = ARGV[i]
  local head = redis.pcall('GETRANGE', rkey, 0, 40)
  if type(head) == 'string' and head ~= '' then
    redis.call('ZADD', structures(ARGV[i + 1])[1], 0, string.sub(rkey, PLEN + 1))
    indexed = indexed + 1
  end
end
return indexed
"""
)
