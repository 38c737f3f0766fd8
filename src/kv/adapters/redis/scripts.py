"""kv's Lua scripts: every write, the listing page, the sweep, clear and reindex.

Each script is one atomic step in Redis. The write scripts (create, replace, upsert, delete,
transact) touch one group's keys only (a record, or a transaction's records, and the index,
expiry and expiring entries of their slot, see layout.py), declared in KEYS as Redis Cluster
requires: KEYS[1..3] are the group's index, expiry and expiring, KEYS[4..] the records. They
read only the head of a record (`GETRANGE 0 40`: the revision and expiry, not a 1 MB value),
check, write the record, keep the entries in step, and publish what changed, in one message,
last. The others (`#!lua flags=allow-cross-slot-keys`) take the tags of several groups in
ARGV: on a Cluster node they run over every slot it owns (a script may touch keys of several
slots of its own node when it says so, provided it does not declare them); on a standalone
Redis the one tag is ''.

Time is Redis's: `TIME`, read once per script. A record that expires is stored with
`PXAT expires_at - 1`, so that Redis itself never returns it from `expires_at` on (Redis
expires a key once its clock is past the time set); its entries stay until the sweeper, a
write or a listing meets them, since they hold what an expiry event needs: the revision.

Revisions are compared as text, so that any expected revision a client sends, however large,
is compared exactly rather than as a Lua float. Keys are never ordered in Lua: Lua compares
strings with the C library's locale (`strcoll`), which Redis sets from its environment; the
sorted sets order them by their bytes.
"""

import hashlib
from dataclasses import dataclass, fields

_PRELUDE = """
local PREFIX = {prefix}
local PLEN = #PREFIX
local changes, channels = {{}}, {{}}
local clock
local function now()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end
-- A change of the group S, published on its channel S[4] by `publish`, last.
local function note(S, kind, key, revision, expires_at, value)
  local list = changes[S[4]]
  if not list then
    list = {{}}
    changes[S[4]] = list
    channels[#channels + 1] = S[4]
  end
  list[#list + 1] = kind .. revision .. ':' .. expires_at .. ':' .. #key .. ':' ..
    #value .. ':' .. key .. value
end
local function publish()
  if not {publish} then return end
  for _, channel in ipairs(channels) do
    redis.call({publish_command}, channel, table.concat(changes[channel]))
  end
end
local function structures(tag)
  local base = PREFIX
  if tag ~= '' then base = PREFIX .. '{{' .. tag .. '}}' end
  return {{base .. 'index/', base .. 'expiry/', base .. 'expiring/', base .. 'changes/'}}
end
-- The revision and expiry ('' for none) at the head of a record: "rev:" or "rev,exp:".
local function parse(stored)
  local meta = string.sub(stored, 1, string.find(stored, ':', 1, true) - 1)
  local comma = string.find(meta, ',', 1, true)
  if comma then return string.sub(meta, 1, comma - 1), string.sub(meta, comma + 1) end
  return meta, ''
end
-- A record that expired: its entries go, and watchers learn it with its last revision.
local function forget(S, key, revision)
  redis.call('ZREM', S[1], key)
  redis.call('ZREM', S[2], key)
  redis.call('HDEL', S[3], key)
  note(S, 'x', key, revision, '', '')
end
-- The revision and expiry of the live record whose string (or head) is `stored` ('' or false
-- when Redis has none), or nil. One that expired is forgotten here, so that watchers see its
-- expiry before whatever the script does to the key next.
local function examine(S, rkey, key, stored)
  if not stored or stored == '' then
    local pending = redis.call('HGET', S[3], key)
    if pending then forget(S, key, pending) end
    return nil
  end
  local revision, expires_at = parse(stored)
  if expires_at ~= '' and tonumber(expires_at) <= now() then
    redis.call('DEL', rkey)
    forget(S, key, revision)
    return nil
  end
  return revision, expires_at
end
local function live(S, rkey, key)
  return examine(S, rkey, key, redis.call('GETRANGE', rkey, 0, 40))
end
-- Store a record at `revision`; its expiry in ms (0 for none).
local function write(S, rkey, key, value, revision, ttl, old_expiry, new)
  local expires_at = ''
  if ttl ~= '' then
    local at = now() + tonumber(ttl)
    expires_at = string.format('%d', at)
    redis.call('SET', rkey, revision .. ',' .. expires_at .. ':' .. value,
      'PXAT', string.format('%d', at - 1))
    redis.call('ZADD', S[2], expires_at, key)
    redis.call('HSET', S[3], key, revision)
  else
    redis.call('SET', rkey, revision .. ':' .. value)
    if old_expiry ~= '' then
      redis.call('ZREM', S[2], key)
      redis.call('HDEL', S[3], key)
    end
  end
  if new then redis.call('ZADD', S[1], 0, key) end
  note(S, 'p', key, revision, expires_at, value)
  return tonumber(expires_at) or 0
end
local function remove(S, rkey, key, revision, expires_at)
  redis.call('DEL', rkey)
  redis.call('ZREM', S[1], key)
  if expires_at ~= '' then
    redis.call('ZREM', S[2], key)
    redis.call('HDEL', S[3], key)
  end
  note(S, 'd', key, revision, '', '')
end
local function bump(revision)
  return string.format('%d', tonumber(revision) + 1)
end
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

# nil when absent, -current when at another revision, else {revision, expiry}.
# ARGV: value, expected revision or '', ttl ms or ''.
REPLACE = (
    _ONE_RECORD
    + """
local revision, expires_at = live(S, rkey, key)
if revision then
  if ARGV[2] ~= '' and ARGV[2] ~= revision then
    result = -tonumber(revision)
  else
    local next = bump(revision)
    result = {tonumber(next), write(S, rkey, key, ARGV[1], next, ARGV[3], expires_at, false)}
  end
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
    _ONE_RECORD
    + """
local revision, expires_at = live(S, rkey, key)
if revision then
  if ARGV[1] ~= '' and ARGV[1] ~= revision then
    result = -tonumber(revision)
  else
    remove(S, rkey, key, revision, expires_at)
    result = tonumber(revision)
  end
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

_MULTI = "#!lua flags=allow-cross-slot-keys,allow-oom\n"

# The groups of a script over several: ARGV from `first` on name them: '' (a standalone Redis's
# one group), a tag, or a range of Cluster slots "first-last", whose tags TAGS holds, three
# characters per slot in slot order (so that a page's call carries a few ranges, not 5,461
# tags: packing those took redis-py 20 ms a call).
_GROUPS = """
local TAGS = {tags}
local function group_tags(first)
  local tags = {{}}
  for i = first, #ARGV do
    local arg = ARGV[i]
    local dash = string.find(arg, '-', 1, true)
    if dash then
      for slot = tonumber(string.sub(arg, 1, dash - 1)), tonumber(string.sub(arg, dash + 1)) do
        tags[#tags + 1] = string.sub(TAGS, 3 * slot + 1, 3 * slot + 3)
      end
    else
      tags[#tags + 1] = arg
    end
  end
  return tags
end
"""

# A page: ARGV: min and max (ZRANGE BYLEX bounds), limit, values ('1' or ''), the groups to
# merge (see _GROUPS). Answers {1, n, n tags, key, revision, expiry, value, ...} with up to
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
# ARGV[2..]: the groups (see _GROUPS). Answers {how many expiry entries it handled, how many
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


@dataclass(frozen=True, slots=True)
class Scripts:
    """The sources of kv's scripts for one prefix, and their SHA1 digests."""

    create: str
    replace: str
    upsert: str
    delete: str
    transact: str
    list: str
    sweep: str
    clear: str
    prune: str
    reindex: str

    def sources(self) -> dict[str, str]:
        """Every script's source by its SHA1 (what EVALSHA names)."""
        return {sha1(source): source for source in (getattr(self, f.name) for f in fields(self))}


def build(prefix: str, *, cluster: bool, publish: bool = True, tags: str = "") -> Scripts:
    """The scripts for keys under `prefix`, publishing on each group's channel: with SPUBLISH
    on a Cluster, PUBLISH on a standalone Redis (see feed.py). `publish` False: no publication
    at all, only to measure its cost. `tags`: every Cluster slot's tag, three characters each,
    in slot order (layout.py)."""
    prelude = _PRELUDE.format(
        prefix=_lua_string(prefix),
        publish="true" if publish else "false",
        publish_command="'SPUBLISH'" if cluster else "'PUBLISH'",
    )

    groups = _GROUPS.format(tags=_lua_string(tags) if tags else '""')

    def script(body: str) -> str:
        body = body.replace("{groups}", groups)
        if body.startswith("#!"):  # the flags line must stay first
            flags, _, rest = body.partition("\n")
            return flags + "\n" + prelude + rest
        return prelude + body

    return Scripts(
        create=script(CREATE),
        replace=script(REPLACE),
        upsert=script(UPSERT),
        delete=script(DELETE),
        transact=script(TRANSACT),
        list=script(LIST),
        sweep=script(SWEEP),
        clear=script(CLEAR),
        prune=script(PRUNE),
        reindex=script(REINDEX),
    )


def sha1(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (what Redis names it by)


def _lua_string(text: str) -> str:
    """`text` as a Lua string literal, every byte escaped (any prefix is safe)."""
    return '"' + "".join(f"\\{byte:03d}" for byte in text.encode()) + '"'
