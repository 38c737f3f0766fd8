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

This module holds the prelude every script starts with and builds the scripts for a prefix;
their bodies are in write_scripts.py (the writes) and scan_scripts.py (the others).
"""

import hashlib
from dataclasses import dataclass, fields

from kv.adapters.redis.scan_scripts import CLEAR, LIST, PRUNE, REINDEX, SWEEP
from kv.adapters.redis.write_scripts import CREATE, DELETE, REPLACE, TRANSACT, UPSERT

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
