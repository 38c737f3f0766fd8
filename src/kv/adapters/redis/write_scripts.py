"""The write scripts: create, replace, upsert, delete and transact, each over one group's
keys (see scripts.py, which puts the prelude before each and builds them for a prefix).
"""

_ONE_RECORD = """
local S = {KEYS[1], KEYS[2], KEYS[3], string.sub(KEYS[1], 1, -7) .. 'changes/'}
local rkey = KEYS[4]
local key = string.sub(rkey, PLEN + 1)
local result = false
"""

# nil when the key exists, else the expiry (0: none). ARGV: value, ttl ms or ''.
CREATE = (
    _ONE_RECORD
    + """
-- SET NX first: Redis's own expiry makes an expired record absent to it, and a create that
-- finds the key taken (the common conflict) costs one command.
local value, ttl = ARGV[1], ARGV[2]
local stored, expires_at, at = '1:' .. value, '', nil
if ttl ~= '' then
  at = now() + tonumber(ttl)
  expires_at = string.format('%d', at)
  stored = '1,' .. expires_at .. ':' .. value
end
local created
if at then
  created = redis.call('SET', rkey, stored, 'NX', 'PXAT', string.format('%d', at - 1))
else
  created = redis.call('SET', rkey, stored, 'NX')
end
if not created then return false end
local pending = redis.call('HGET', S[3], key)
if pending then forget(S, key, pending) end  -- an expiry not announced yet: first
if at then
  redis.call('ZADD', S[2], expires_at, key)
  redis.call('HSET', S[3], key, '1')
end
redis.call('ZADD', S[1], 0, key)
note(S, 'p', key, '1', expires_at, value)
publish()
return tonumber(expires_at) or 0
"""
)

# The start of the writes that need the key present, at the expected revision ARGV[1] unless
# that is '' (replace, delete): `revision` and `expires_at` are the record's, or `revision` is
# nil: absent (`result` stays false, nil to the caller) or at another revision (-current).
_PRESENT = (
    _ONE_RECORD
    + """
local revision, expires_at = live(S, rkey, key)
if revision and ARGV[1] ~= '' and ARGV[1] ~= revision then
  result = -tonumber(revision)
  revision = nil
end
"""
)

# nil when absent, -current when at another revision, else {revision, expiry}.
# ARGV: expected revision or '', value, ttl ms or ''.
REPLACE = (
    _PRESENT
    + """
if revision then
  local next = bump(revision)
  result = {tonumber(next), write(S, rkey, key, ARGV[2], next, ARGV[3], expires_at, false)}
end
publish()
return result
"""
)

# {revision, expiry}. ARGV: value, ttl ms or ''.
UPSERT = (
    _ONE_RECORD
    + """
local revision, expires_at = live(S, rkey, key)
local next = '1'
if revision then next = bump(revision) end
local at = write(S, rkey, key, ARGV[1], next, ARGV[2], expires_at or '', not revision)
result = {tonumber(next), at}
publish()
return result
"""
)

# nil when absent, -current when at another revision, else the deleted revision.
# ARGV: expected revision or ''.
DELETE = (
    _PRESENT
    + """
if revision then
  remove(S, rkey, key, revision, expires_at)
  result = tonumber(revision)
end
publish()
return result
"""
)

# KEYS[4..]: one record per operation. ARGV: four per operation: kind (c create, p put,
# d delete, g get, k check), value, expected revision ('' none; for k, '' means absent), ttl.
# {0, index, reason} when a condition fails (nothing written), else {1, results}: per operation
# {revision, expiry} (c, p), the deleted revision (d), {revision, expiry, value} or nil (g),
# the revision or nil (k).
TRANSACT = """
local S = {KEYS[1], KEYS[2], KEYS[3], string.sub(KEYS[1], 1, -7) .. 'changes/'}
local n = #KEYS - 3
local found, expiry = {}, {}
for i = 1, n do
  local rkey = KEYS[i + 3]
  local revision, expires_at = live(S, rkey, string.sub(rkey, PLEN + 1))
  found[i] = revision or false
  expiry[i] = expires_at or ''
end
for i = 1, n do
  local kind, expected, revision = ARGV[4 * i - 3], ARGV[4 * i - 1], found[i]
  local failure = nil
  if kind == 'c' or (kind == 'k' and expected == '') then
    if revision then failure = 'exists' end
  elseif kind ~= 'g' then
    if not revision then
      failure = 'not_found'
    elseif expected ~= '' and expected ~= revision then
      failure = 'revision_mismatch'
    end
  end
  if failure then
    publish()
    return {0, i - 1, failure}
  end
end
local results = {}
for i = 1, n do
  local rkey = KEYS[i + 3]
  local key = string.sub(rkey, PLEN + 1)
  local kind, value, ttl, revision = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i], found[i]
  if kind == 'c' then
    results[i] = {1, write(S, rkey, key, value, '1', ttl, '', true)}
  elseif kind == 'p' then
    local next = bump(revision)
    results[i] = {tonumber(next), write(S, rkey, key, value, next, ttl, expiry[i], false)}
  elseif kind == 'd' then
    remove(S, rkey, key, revision, expiry[i])
    results[i] = tonumber(revision)
  elseif kind == 'g' then
    if revision then
      local stored = redis.call('GET', rkey)
      local body = string.sub(stored, string.find(stored, ':', 1, true) + 1)
      results[i] = {tonumber(revision), tonumber(expiry[i]) or 0, body}
    else
      results[i] = false
    end
  else
    results[i] = revision and tonumber(revision) or false
  end
end
publish()
return {1, results}
"""
