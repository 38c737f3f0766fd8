#!/usr/bin/env tarantool
-- kv's Tarantool instance: `tarantool deploy/tarantool/init.lua`.
--
-- The one instance file used by the tests, the compose profile and users. Configured by
-- environment variables (all optional):
--   KV_TARANTOOL_LISTEN        where to accept connections: port or host:port      (3301)
--   KV_TARANTOOL_WORK_DIR      data directory: WAL and snapshots, created if missing (.)
--   KV_TARANTOOL_SPACE         the space that holds the records                     (kv)
--   KV_TARANTOOL_USER          the user kv connects as                              (kv)
--   KV_TARANTOOL_PASSWORD      its password, set again at every start               (kv)
--   KV_MAX_BODY_BYTES          the service's body limit, to size tuples             (1048576)
--   KV_TARANTOOL_MEMTX_MEMORY  bytes of memory for records (box.cfg.memtx_memory)   (Tarantool's: 256 MiB)
--   KV_TARANTOOL_FEED_CHANGES  changes the change feed keeps for kv processes        (100000)
--
-- Written for Tarantool 2.6 and later (2.11 and 3.x run it as a script too): only box.cfg,
-- box.schema.* with if_not_exists, and space methods that have not changed since 2.x.
--
-- What lives here (README, "Tarantool", says it for users):
--   * the space `<space>` of {key, value, revision, expires_at} tuples, with a TREE index on
--     `key` (listing) and one on `expires_at` (expiry), upgraded in place from the earlier
--     three-field layout;
--   * the functions kv calls, each one atomic: `_batch` (gets and single-key writes),
--     `_list` (a page), `_transact` (a transaction), `_watch` (the change feed), `_clear`;
--   * the change feed: every committed change, in commit order, in a bounded ring;
--   * the expiry fiber, which deletes expired records in bounded batches.

local clock = require('clock')
local fiber = require('fiber')
local fio = require('fio')
local log = require('log')
local uuid = require('uuid')

local function env(name, default)
    local value = os.getenv(name)
    if value == nil or value == '' then
        return default
    end
    return value
end

local listen = env('KV_TARANTOOL_LISTEN', '3301')
local work_dir = env('KV_TARANTOOL_WORK_DIR', '.')
local space_name = env('KV_TARANTOOL_SPACE', 'kv')
local user = env('KV_TARANTOOL_USER', 'kv')
local password = env('KV_TARANTOOL_PASSWORD', 'kv')
local max_body_bytes = tonumber(env('KV_MAX_BODY_BYTES', '1048576'))
local memtx_memory = env('KV_TARANTOOL_MEMTX_MEMORY', nil)
local feed_changes = tonumber(env('KV_TARANTOOL_FEED_CHANGES', '100000'))

if max_body_bytes == nil or max_body_bytes < 1 then
    error('KV_MAX_BODY_BYTES must be a whole number of bytes above 0', 0)
end
if feed_changes == nil or feed_changes < 1 then
    error('KV_TARANTOOL_FEED_CHANGES must be a whole number above 0', 0)
end
if memtx_memory ~= nil then
    memtx_memory = tonumber(memtx_memory)
    if memtx_memory == nil or memtx_memory < 1 then
        error('KV_TARANTOOL_MEMTX_MEMORY must be a whole number of bytes', 0)
    end
end
-- The space name is also the prefix of the function names, which IPROTO CALL resolves as a
-- Lua path: keep it a plain identifier.
if not space_name:match('^[%a_][%w_]*$') then
    error('KV_TARANTOOL_SPACE must be letters, digits and _ (not starting with a digit)', 0)
end
if not fio.path.is_dir(work_dir) and not fio.mktree(work_dir) then
    error('cannot create KV_TARANTOOL_WORK_DIR ' .. work_dir, 0)
end

-- A stored value is the compact JSON the service writes, which can be longer than the body it
-- came from: orjson writes 1e15 as 1000000000000000.0, so an array of them grows 3.8 times.
-- Four times the body limit, plus room for the key (1024 bytes) and the tuple's header.
local max_tuple_size = math.max(1024 * 1024, max_body_bytes * 4 + 64 * 1024)

local major, minor = _TARANTOOL:match('^(%d+)%.(%d+)')
local version = tonumber(major) * 100 + tonumber(minor)

local cfg = {
    work_dir = work_dir,
    -- A write is acknowledged once it is in the WAL file (written, not fsynced): it survives
    -- a crash of this process (kill -9), not a crash of the OS or a power loss.
    wal_mode = 'write',
    memtx_max_tuple_size = max_tuple_size,
    memtx_memory = memtx_memory,
}
if version >= 210 then
    -- malloc under the memtx quota: freed memory is free for tuples of any size again (2.10+).
    cfg.memtx_allocator = 'system'
else
    -- Tarantool 2.6's slab allocator takes a whole 16 MiB slab for each size class of tuples
    -- above ~64 KiB and keeps one per class even once every tuple in it is freed. Its default
    -- factor, 1.05, makes ~57 such classes between 64 KiB and 1 MiB: values of varied sizes
    -- filled 256 MiB with 14 tuples, and after they were deleted, writes of 100 KB and more
    -- failed until a restart (issue 20, item 3). With 2, five classes; the cost is up to 50%
    -- slack in a tuple's slot (about 25% on average) above 256 bytes.
    cfg.slab_alloc_factor = 2
end

-- Recover and set up the schema first, listen last: a client that gets a connection finds
-- the space, the user and the functions ready.
box.cfg(cfg)

-- --- the schema --------------------------------------------------------------------------

local FORMAT = {
    {name = 'key', type = 'string'},
    {name = 'value', type = 'string'},
    {name = 'revision', type = 'unsigned'},
    -- Milliseconds since the Unix epoch by this instance's clock; absent for no expiry.
    {name = 'expires_at', type = 'unsigned', is_nullable = true},
    -- How many more parts of the value are in `<space>_parts` (see "values in parts").
    {name = 'parts', type = 'unsigned', is_nullable = true},
}
local KEY, VALUE, REVISION, EXPIRES_AT, PARTS = 1, 2, 3, 4, 5

local space = box.space[space_name]
if space == nil then
    space = box.schema.space.create(space_name, {format = FORMAT})
elseif #space:format() < #FORMAT then
    -- Written by the previous init.lua, as {key, value, revision}: adding trailing nullable
    -- fields changes no tuple (a missing field reads as null), so the upgrade is a schema
    -- change in place, done once.
    log.info('kv: adding expires_at and parts to space %s', space_name)
    space:format(FORMAT)
end
space:create_index('primary', {
    if_not_exists = true,
    type = 'TREE',
    -- The `string` type without a collation compares bytes: keys list in the order of their
    -- UTF-8 bytes, as the contract says.
    parts = {{KEY, 'string'}},
})
-- Records without expiry are in it too before 2.8 (no exclude_null), first, as nulls sort
-- before any number: the sweeper starts at 0, past them.
local expiry_part = {EXPIRES_AT, 'unsigned', is_nullable = true}
if version >= 208 then
    expiry_part.exclude_null = true
end
space:create_index('expiry', {
    if_not_exists = true,
    type = 'TREE',
    unique = false,
    parts = {expiry_part},
})
local expiry = space.index.expiry

-- The values' further parts: {key, n, bytes}, n from 1.
local parts_name = space_name .. '_parts'
local parts = box.schema.space.create(parts_name, {
    if_not_exists = true,
    format = {
        {name = 'key', type = 'string'},
        {name = 'n', type = 'unsigned'},
        {name = 'bytes', type = 'string'},
    },
})
parts:create_index('primary', {
    if_not_exists = true,
    type = 'TREE',
    parts = {{1, 'string'}, {2, 'unsigned'}},
})

-- One tuple, written when a feed subscribes while nobody listened (see "the change feed").
local sync_name = space_name .. '_sync'
local sync = box.schema.space.create(sync_name, {
    if_not_exists = true,
    format = {{name = 'id', type = 'unsigned'}, {name = 'n', type = 'unsigned'}},
})
sync:create_index('primary', {if_not_exists = true, parts = {{1, 'unsigned'}}})

-- --- time --------------------------------------------------------------------------------

-- Milliseconds since the Unix epoch. Each function reads it once, so everything one call
-- does happens at one instant.
local function now_ms()
    return math.floor(clock.realtime() * 1000)
end

local function is_expired(tuple, now)
    local expires_at = tuple[EXPIRES_AT]
    -- A tuple of the old layout has no 4th field (nil); a record without expiry stores none
    -- either, but a null read back from MessagePack is box.NULL, which equals nil.
    return expires_at ~= nil and expires_at <= now
end

local function expiry_of(ttl, now)
    if ttl == nil then
        return nil
    end
    return now + ttl
end

-- --- the change feed ---------------------------------------------------------------------
--
-- Every change committed to the space (a write, a delete, an expiry, a clear) is appended,
-- at its commit, to a ring of the last FEED_ENTRIES changes (and at most FEED_BYTES of keys
-- and values), numbered by a sequence. kv reads it with `_watch` (below), from the sequence
-- it has seen: each kv process is a cursor in this ring, so any number of them see every
-- change, and one that falls further behind than the ring reaches is told so.
--
-- Changes are taken from box.on_commit: triggers run in the order transactions reach the
-- WAL, which is the order in which changes to one key were made; a transaction that fails
-- to commit publishes nothing. While no kv has polled for LEASE_SECONDS, nobody listens:
-- transactions note nothing (a write costs nothing more), and the next poll finds a gap: a
-- cursor from before it is lost. A new subscriber while nobody listened first waits for
-- one WAL write of its own, so that every transaction begun unheard has committed before
-- its cursor is taken (nothing yields between a transaction's begin and its commit).

local FEED_ENTRIES = feed_changes
local FEED_BYTES = 64 * 1024 * 1024
local LEASE_SECONDS = 60
local MAX_WAIT_SECONDS = 10
local POLL_CHANGES = 1000
local POLL_BYTES = 4 * 1024 * 1024

local feed = {
    -- Sequences first..last are in the ring; a cursor c (the last sequence a reader has) can
    -- go on when first - 1 <= c <= last.
    first = 1,
    last = 0,
    ring = {},
    sizes = {},
    bytes = 0,
    -- A new identity at every start: a cursor from another run means nothing here.
    epoch = uuid.str(),
    listening_until = 0,
    cond = fiber.cond(),
}

local function drop_oldest()
    local slot = feed.first % FEED_ENTRIES + 1
    feed.bytes = feed.bytes - feed.sizes[slot]
    feed.ring[slot] = nil
    feed.sizes[slot] = nil
    feed.first = feed.first + 1
end

local function append(change)
    local seq = feed.last + 1
    if seq - feed.first >= FEED_ENTRIES then
        drop_oldest()
    end
    local slot = seq % FEED_ENTRIES + 1
    local value = change[3]
    local size = #change[1] + (value ~= nil and #value or 0)
    feed.ring[slot] = change
    feed.sizes[slot] = size
    feed.bytes = feed.bytes + size
    feed.last = seq
    while feed.bytes > FEED_BYTES and feed.first < seq do
        drop_oldest()
    end
end

local NULL = box.NULL

-- `changes` is flat, CHANGE fields a change (see note_put): no table per write is made
-- while nobody listens.
local CHANGE = 5

local function publish(changes)
    for i = 1, #changes, CHANGE do
        append({
            changes[i],
            changes[i + 1],
            changes[i + 2] or NULL,
            changes[i + 3] or NULL,
            changes[i + 4],
        })
    end
    feed.cond:broadcast()
end

local function publish_safely(changes)
    -- A commit trigger must not raise: log instead (a reader then misses these changes,
    -- which only an out-of-memory error in Lua can cause).
    local ok, err = pcall(publish, changes)
    if not ok then
        log.error('kv: the change feed lost changes: %s', tostring(err))
    end
end

-- The changes of a transaction begun while nobody listens: noted nowhere.
local UNHEARD = {}

-- Opens a transaction whose changes reach the feed when it commits; returns their list, to
-- which note_put and note_delete add.
local function begin()
    box.begin()
    if fiber.clock() >= feed.listening_until then
        return UNHEARD
    end
    local changes = {}
    box.on_commit(function() publish_safely(changes) end)
    return changes
end

-- A change as `_watch` sends it: {key, revision, value or null, expires_at or null, expired}
-- (false stands for null in `changes`, which must have no holes).
local function note_put(changes, key, revision, value, expires_at)
    if changes == UNHEARD then
        return
    end
    local n = #changes
    changes[n + 1] = key
    changes[n + 2] = revision
    changes[n + 3] = value
    changes[n + 4] = expires_at or false
    changes[n + 5] = false
end

local function note_delete(changes, tuple, expired)
    if changes == UNHEARD then
        return
    end
    local n = #changes
    changes[n + 1] = tuple[KEY]
    changes[n + 2] = tuple[REVISION]
    changes[n + 3] = false
    changes[n + 4] = false
    changes[n + 5] = expired
end

-- Nothing was kept while nobody listened: no cursor from before now can go on.
local function gap()
    feed.ring = {}
    feed.sizes = {}
    feed.bytes = 0
    feed.last = feed.last + 1
    feed.first = feed.last + 1
end

-- `_watch(nil)` subscribes: {'subscribed', epoch, cursor}; every change committed after it
-- answers has a sequence above `cursor`. `_watch(epoch, cursor, wait)` answers the changes
-- after `cursor` as {'changes', new_cursor, {change, ...}}, waiting up to `wait` seconds for
-- one (an empty list when none came), or {'lost'} when some of them are no longer kept.
local function watch(epoch, cursor, wait)
    local now = fiber.clock()
    local unheard = now >= feed.listening_until
    if unheard then
        gap()
    end
    feed.listening_until = now + LEASE_SECONDS
    if epoch == nil then
        if unheard then
            -- Transactions begun before now note nothing; the WAL commits in order, so once
            -- this write is in it, they are all committed.
            sync:replace({1, feed.last})
        end
        return {'subscribed', feed.epoch, feed.last}
    end
    if epoch ~= feed.epoch or cursor > feed.last then
        return {'lost'}
    end
    if cursor == feed.last and wait ~= nil and wait > 0 then
        local deadline = now + math.min(wait, MAX_WAIT_SECONDS)
        while cursor == feed.last do
            local left = deadline - fiber.clock()
            if left <= 0 or not feed.cond:wait(left) then
                break
            end
        end
        feed.listening_until = fiber.clock() + LEASE_SECONDS
    end
    if cursor < feed.first - 1 then
        return {'lost'}
    end
    local changes, bytes = {}, 0
    local seq = cursor
    while seq < feed.last and #changes < POLL_CHANGES and (bytes < POLL_BYTES or #changes == 0) do
        seq = seq + 1
        local slot = seq % FEED_ENTRIES + 1
        changes[#changes + 1] = feed.ring[slot]
        bytes = bytes + feed.sizes[slot]
    end
    return {'changes', seq, changes}
end

-- --- memory ------------------------------------------------------------------------------
--
-- A tuple that Lua code has read (every write reads the record it replaces or deletes) is
-- freed only once Lua's garbage collector drops that reference, which may be long after the
-- tuple left the space: after many deletes, memory that is free to the eye can still be
-- held, and a write fail for want of it. So a write that fails for memory collects Lua's
-- garbage (a few ms) and is tried once more, when some tuple has left the space since the
-- last collection; a Tarantool that is really full still answers at once.

local released = 0

local function release()
    released = released + 1
end

local function collect_for_memory(err)
    -- 2.6 raises OutOfMemory (without a code) when the memtx quota is spent.
    local memory = type(err) == 'cdata'
        and (err.type == 'OutOfMemory' or err.code == box.error.MEMORY_ISSUE)
    if not memory or released == 0 then
        return false
    end
    released = 0
    collectgarbage('collect')
    return true
end

local function truncate(changes, count)
    for j = #changes, count + 1, -1 do
        changes[j] = nil
    end
end

-- --- values in parts --------------------------------------------------------------------
--
-- A value longer than PART_BYTES keeps its first PART_BYTES in the record and the rest in
-- `<space>_parts`, PART_BYTES a tuple, the record's `parts` field saying how many. Why: on
-- 2.6 a tuple over ~1 MiB is not cut from slabs but malloc'ed under the same quota, and the
-- quota the slab arena has once taken it never gives back, so after memtx had been full of
-- small records, such a tuple could never be stored again (issue 20, item 3). No tuple is
-- now longer than PART_BYTES and a key: it fits the slab class of 528 KiB. Reading such a
-- value joins its parts (a copy of it); records of the common sizes are untouched.

local PART_BYTES = 510 * 1024

local function value_of(tuple)
    local count = tuple[PARTS]
    if count == nil then
        return tuple[VALUE]
    end
    local key = tuple[KEY]
    local pieces = {tuple[VALUE]}
    for n = 1, count do
        pieces[n + 1] = parts:get({key, n})[3]
    end
    return table.concat(pieces)
end

local function drop_parts(tuple)
    local count = tuple[PARTS]
    if count ~= nil then
        local key = tuple[KEY]
        for n = 1, count do
            parts:delete({key, n})
        end
    end
end

-- Runs fn(...) so that if it fails, none of the statements it made stays: a failed statement
-- undoes only itself, and these make several.
local function as_one(fn, ...)
    local savepoint = box.savepoint()
    local ok, err = pcall(fn, ...)
    if not ok then
        box.rollback_to_savepoint(savepoint)
        error(err, 0)
    end
end

local function store_in_parts(key, value, revision, expires_at, old)
    if old ~= nil then
        drop_parts(old)
    end
    if #value <= PART_BYTES then
        space:replace({key, value, revision, expires_at or NULL})
        return
    end
    local count = 0
    for offset = PART_BYTES + 1, #value, PART_BYTES do
        count = count + 1
        parts:replace({key, count, value:sub(offset, offset + PART_BYTES - 1)})
    end
    space:replace({key, value:sub(1, PART_BYTES), revision, expires_at or NULL, count})
end

-- Stores the record over `old` (the key's record, or nil).
local function store(key, value, revision, expires_at, old)
    if #value > max_tuple_size then
        -- No tuple reaches memtx_max_tuple_size any more: the limit is kept here.
        error(string.format('a value of %d bytes is longer than %d, the most this instance '
            .. 'stores (4 x KV_MAX_BODY_BYTES + 64 KiB)', #value, max_tuple_size), 0)
    end
    if #value > PART_BYTES or (old ~= nil and old[PARTS] ~= nil) then
        as_one(store_in_parts, key, value, revision, expires_at, old)
    elseif expires_at == nil then
        space:replace({key, value, revision})
    else
        space:replace({key, value, revision, expires_at})
    end
end

local function remove_in_parts(tuple)
    drop_parts(tuple)
    space:delete(tuple[KEY])
end

-- Removes a record and its parts.
local function remove(tuple)
    if tuple[PARTS] ~= nil then
        as_one(remove_in_parts, tuple)
    else
        space:delete(tuple[KEY])
    end
    release()
end

-- --- single-key operations ---------------------------------------------------------------
--
-- Each is atomic: memtx runs a function without yielding between the `get` and the write
-- that follows it (the fiber yields only for the WAL, after the change is applied), so no
-- other request sees the key in between. This holds with memtx's default, MVCC off.
--
-- A record whose expiry has come is absent for every operation, whether or not the expiry
-- fiber has deleted it yet. A write that replaces such a record (create, upsert) publishes
-- its expiry first, so a watcher sees the key expire before it is written again.
--
-- Each write answers `applied, revision, expires_at`: whether it happened, and the record's
-- revision (after the write when applied, as found when not; nil when the key is absent).
-- The service already has the key and value, so the value is never sent back.

local function live(key, now)
    local current = space:get(key)
    if current ~= nil and is_expired(current, now) then
        return nil, current
    end
    return current
end

-- Writes the record over `old` (the key's record, or nil); `expired`: `old` had expired.
local function write(changes, key, value, revision, expires_at, old, expired)
    if old ~= nil then
        if expired then
            note_delete(changes, old, true)
        end
        release()
    end
    store(key, value, revision, expires_at, old)
    note_put(changes, key, revision, value, expires_at)
    return true, revision, expires_at
end

local function create(changes, now, key, value, ttl)
    local current, dead = live(key, now)
    if current ~= nil then
        return false, current[REVISION]
    end
    return write(changes, key, value, 1, expiry_of(ttl, now), dead, true)
end

-- Whether `key` is present and, when `expected` is given (an If-Match revision; absent or
-- null for no condition), at that revision; and the record (nil when absent).
local function precondition(key, expected, now)
    local current = live(key, now)
    if current == nil then
        return false, nil
    end
    return expected == nil or current[REVISION] == expected, current
end

local function replace(changes, now, key, value, expected, ttl)
    local ok, current = precondition(key, expected, now)
    if not ok then
        return false, current and current[REVISION]
    end
    return write(changes, key, value, current[REVISION] + 1, expiry_of(ttl, now), current)
end

local function upsert(changes, now, key, value, ttl)
    local current, dead = live(key, now)
    local revision = current == nil and 1 or current[REVISION] + 1
    return write(changes, key, value, revision, expiry_of(ttl, now), current or dead, dead ~= nil)
end

local function delete(changes, now, key, expected)
    local ok, current = precondition(key, expected, now)
    if not ok then
        return false, current and current[REVISION]
    end
    remove(current)
    note_delete(changes, current, false)
    return true, current[REVISION]
end

-- The service sends every get and write through `batch`: the requests that arrive together
-- share one call, one round trip and, for the writes, one WAL write. Each operation keeps its
-- own atomicity (nothing yields between its check and its write) and its own answer; one
-- operation's error (a tuple too large, say) fails only that operation. The transaction exists
-- for the single WAL write: if the commit fails, the whole call fails and the service answers
-- every operation in it with 503 (outcome unknown).
--
-- `ops` is an array of operations, each an array: {0, key} get, {1, key, value, ttl} create,
-- {2, key, value, expected, ttl} replace, {3, key, value, ttl} upsert, {4, key, expected}
-- delete (ttl in milliseconds, or null). The answer has one entry per operation: for a get,
-- {value, revision, expires_at} or null; for a write, {applied, revision, expires_at} as
-- above (nulls where there is none); for an operation that failed, its error message as a
-- string.
local GET = 0
local writes = {
    [1] = function(changes, now, op) return create(changes, now, op[2], op[3], op[4]) end,
    [2] = function(changes, now, op) return replace(changes, now, op[2], op[3], op[4], op[5]) end,
    [3] = function(changes, now, op) return upsert(changes, now, op[2], op[3], op[4]) end,
    [4] = function(changes, now, op) return delete(changes, now, op[2], op[3]) end,
}

local function batch(ops)
    local now = now_ms()
    local answers = {}
    local changes = nil
    for i, op in ipairs(ops) do
        local code = op[1]
        if code == GET then
            local current = live(op[2], now)
            answers[i] = current == nil and NULL
                or {value_of(current), current[REVISION], current[EXPIRES_AT] or NULL}
        else
            if changes == nil then
                changes = begin()
            end
            local run = writes[code]
            if run == nil then
                answers[i] = 'unknown operation ' .. tostring(code)
            else
                -- An operation that fails has changed nothing (see as_one); its part of the
                -- feed goes too.
                local count = #changes
                local ok, applied, revision, expires_at = pcall(run, changes, now, op)
                if not ok then
                    truncate(changes, count)
                    if collect_for_memory(applied) then
                        ok, applied, revision, expires_at = pcall(run, changes, now, op)
                        if not ok then
                            truncate(changes, count)
                        end
                    end
                end
                if ok then
                    answers[i] = {applied, revision or NULL, expires_at or NULL}
                else
                    answers[i] = tostring(applied)
                end
            end
        end
    end
    if changes ~= nil then
        box.commit()
    end
    return answers
end

-- --- listing -----------------------------------------------------------------------------

-- Up to `limit` records whose key starts with `prefix`, after the key `after` (from the
-- first when null), in key order: {{key, revision, expires_at[, value]}, ...}, and whether
-- another follows. One select on the primary index from the cursor, stopped at the end of
-- the prefix: O(log n + limit) (plus the expired records not yet deleted that it steps
-- over), and one consistent read (nothing yields).
local function list(prefix, after, limit, values)
    local now = now_ms()
    local start, iterator = prefix, 'GE'
    if after ~= nil and after >= prefix then
        start, iterator = after, 'GT'
    end
    local length = #prefix
    local entries = {}
    for _, tuple in space.index.primary:pairs(start, {iterator = iterator}) do
        local key = tuple[KEY]
        if length > 0 and key:sub(1, length) ~= prefix then
            break
        end
        if not is_expired(tuple, now) then
            if #entries == limit then
                return entries, true
            end
            local expires_at = tuple[EXPIRES_AT] or NULL
            if values then
                entries[#entries + 1] = {key, tuple[REVISION], expires_at, value_of(tuple)}
            else
                entries[#entries + 1] = {key, tuple[REVISION], expires_at}
            end
        end
    end
    return entries, false
end

-- --- transactions ------------------------------------------------------------------------

-- `ops`: {code, key, value, expected, ttl} with the codes of `batch` for get (0), create (1),
-- put (2, replace) and delete (4), and 5 for check ({5, key, null, revision or null}).
-- Every condition is checked, in order, against the records as they are before the
-- transaction; the first that fails answers {false, index (0-based), reason} and nothing is
-- written. Otherwise every write is applied in one transaction, with no yield between the
-- checks and the writes (one WAL write), and the answer is {true, results}: per operation,
-- {revision, expires_at} for create and put, the deleted record's revision for delete,
-- {value, revision, expires_at} or null for get, the revision or null for check.
local T_GET, T_CREATE, T_PUT, T_DELETE, T_CHECK = 0, 1, 2, 4, 5

local function condition(code, expected, current)
    if code == T_CREATE then
        return current ~= nil and 'exists' or nil
    elseif code == T_PUT or code == T_DELETE then
        if current == nil then
            return 'not_found'
        end
        if expected ~= nil and current[REVISION] ~= expected then
            return 'revision_mismatch'
        end
    elseif code == T_CHECK then
        if expected == nil then
            return current ~= nil and 'exists' or nil
        end
        if current == nil then
            return 'not_found'
        end
        if current[REVISION] ~= expected then
            return 'revision_mismatch'
        end
    elseif code ~= T_GET then
        error('unknown operation ' .. tostring(code))
    end
    return nil
end

local function transact(ops)
    local now = now_ms()
    local found, dead = {}, {}
    for i, op in ipairs(ops) do
        found[i], dead[i] = live(op[2], now)
        local failure = condition(op[1], op[4], found[i])
        if failure ~= nil then
            return false, i - 1, failure
        end
    end
    local results, changes = {}, nil
    local function apply()
        for i, op in ipairs(ops) do
            local code, key, current = op[1], op[2], found[i]
            if code == T_CREATE then
                local _, revision, expires_at = write(
                    changes, key, op[3], 1, expiry_of(op[5], now), dead[i], true)
                results[i] = {revision, expires_at or NULL}
            elseif code == T_PUT then
                local _, revision, expires_at = write(
                    changes, key, op[3], current[REVISION] + 1, expiry_of(op[5], now), current)
                results[i] = {revision, expires_at or NULL}
            elseif code == T_DELETE then
                remove(current)
                note_delete(changes, current, false)
                results[i] = current[REVISION]
            elseif code == T_GET then
                results[i] = current == nil and NULL
                    or {value_of(current), current[REVISION], current[EXPIRES_AT] or NULL}
            else
                results[i] = current == nil and NULL or current[REVISION]
            end
        end
    end
    changes = begin()
    local ok, err = pcall(apply)
    if not ok then
        -- Nothing yields in between: the records checked above are still as they were.
        box.rollback()
        if not collect_for_memory(err) then
            error(err)
        end
        changes = begin()
        ok, err = pcall(apply)
        if not ok then
            box.rollback()
            error(err)
        end
    end
    box.commit()
    return true, results
end

-- --- expiry ------------------------------------------------------------------------------
--
-- A fiber deletes the records whose expiry has come, found through the `expiry` index (never
-- a scan of every record), SWEEP_BATCH per transaction with a yield between two (each batch
-- holds the instance for about a millisecond), every SWEEP_SECONDS: a watcher hears of an
-- expiry at most about SWEEP_SECONDS after it, and the memory is free by then.

local SWEEP_SECONDS = 0.25
local SWEEP_BATCH = 1000

local function sweep_batch()
    local now = now_ms()
    local due = {}
    for _, tuple in expiry:pairs(0, {iterator = 'GE'}) do
        if tuple[EXPIRES_AT] > now or #due == SWEEP_BATCH then
            break
        end
        due[#due + 1] = tuple
    end
    if #due == 0 then
        return 0
    end
    local changes = begin()
    for _, tuple in ipairs(due) do
        remove(tuple)
        note_delete(changes, tuple, true)
    end
    box.commit()
    return #due
end

local function sweep_forever()
    fiber.name('kv_expiry')
    while true do
        if not box.info.ro then
            local ok, swept = pcall(sweep_batch)
            while ok and swept == SWEEP_BATCH do
                fiber.yield()
                ok, swept = pcall(sweep_batch)
            end
            if not ok then
                if box.is_in_txn() then
                    box.rollback()
                end
                log.error('kv: the expiry sweep failed: %s', tostring(swept))
            end
        end
        fiber.sleep(SWEEP_SECONDS)
    end
end

-- --- clear -------------------------------------------------------------------------------

-- Deletes every record, CLEAR_BATCH per transaction (a yield between two), publishing a
-- delete for each, so watchers see a clear as what it is. Writes made meanwhile may survive
-- it: a clear is not one instant.
local CLEAR_BATCH = 1000

local function clear()
    while true do
        local now = now_ms()
        local batch_of = space:select({}, {limit = CLEAR_BATCH})
        if #batch_of == 0 then
            return true
        end
        local changes = begin()
        for _, tuple in ipairs(batch_of) do
            remove(tuple)
            note_delete(changes, tuple, is_expired(tuple, now))
        end
        box.commit()
    end
end

-- --- users, functions, listening ---------------------------------------------------------

local functions = {
    batch = {batch},
    list = {list},
    transact = {transact},
    watch = {watch},
    -- Runs with its owner's rights (setuid), as it did when it truncated the space; bound to
    -- this one space, so the kv user gets no more than "empty kv".
    clear = {clear, setuid = true},
}

box.schema.user.create(user, {password = password, if_not_exists = true})
box.schema.user.passwd(user, password)
-- Least privilege: this space and these functions, nothing on the universe.
box.schema.user.grant(user, 'read,write', 'space', space_name, {if_not_exists = true})
box.schema.user.grant(user, 'read,write', 'space', parts_name, {if_not_exists = true})
box.schema.user.grant(user, 'read,write', 'space', sync_name, {if_not_exists = true})
for suffix, spec in pairs(functions) do
    local name = space_name .. '_' .. suffix
    rawset(_G, name, spec[1])
    box.schema.func.create(name, {setuid = spec.setuid or false, if_not_exists = true})
    box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
end

fiber.create(sweep_forever)

box.cfg{listen = listen}
