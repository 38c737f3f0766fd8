#!/usr/bin/env tarantool
-- kv's Tarantool instance: `tarantool deploy/tarantool/init.lua`.
--
-- The one instance file used by the tests, the compose profile and users. Configured by
-- environment variables (all optional):
--   KV_TARANTOOL_LISTEN    where to accept connections: port or host:port      (3301)
--   KV_TARANTOOL_WORK_DIR  data directory: WAL and snapshots, created if missing (.)
--   KV_TARANTOOL_SPACE     the space that holds the records                     (kv)
--   KV_TARANTOOL_USER      the user kv connects as                              (kv)
--   KV_TARANTOOL_PASSWORD  its password, set again at every start               (kv)
--   KV_MAX_BODY_BYTES      the service's body limit, to size tuples             (1048576)
--
-- Written for Tarantool 2.6 and later (2.11 and 3.x run it as a script too): only box.cfg,
-- box.schema.* with if_not_exists, and space methods that have not changed since 2.x.

local fio = require('fio')

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

if max_body_bytes == nil or max_body_bytes < 1 then
    error('KV_MAX_BODY_BYTES must be a whole number of bytes above 0', 0)
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

-- Recover and set up the schema first, listen last: a client that gets a connection finds
-- the space, the user and the functions ready.
box.cfg{
    work_dir = work_dir,
    -- A write is acknowledged once it is in the WAL file (written, not fsynced): it survives
    -- a crash of this process (kill -9), not a crash of the OS or a power loss.
    wal_mode = 'write',
    memtx_max_tuple_size = max_tuple_size,
}

local space = box.schema.space.create(space_name, {
    if_not_exists = true,
    format = {
        {name = 'key', type = 'string'},
        {name = 'value', type = 'string'},
        {name = 'revision', type = 'unsigned'},
    },
})
space:create_index('primary', {
    if_not_exists = true,
    type = 'TREE',
    parts = {{1, 'string'}},
})

-- The writes, each one atomic: memtx runs a function without yielding between the `get` and
-- the write that follows it (the fiber yields only for the WAL, after the change is applied),
-- so no other request sees the key in between. This holds with memtx's default, MVCC off.
--
-- Each answers two values, `applied, revision`: whether the write happened, and the record's
-- revision (after the write when applied, as found when not; nil when the key is absent).
-- The service already has the key and value, so the value is never sent back.

local function create(key, value)
    local current = space:get(key)
    if current ~= nil then
        return false, current[3]
    end
    space:insert{key, value, 1}
    return true, 1
end

-- Whether `key` is present and, when `expected` is given (an If-Match revision; absent or
-- null for no condition), at that revision; and its revision (nil when absent).
local function precondition(key, expected)
    local current = space:get(key)
    if current == nil then
        return false, nil
    end
    local revision = current[3]
    return expected == nil or revision == expected, revision
end

local function replace(key, value, expected)
    local ok, revision = precondition(key, expected)
    if not ok then
        return false, revision
    end
    space:replace{key, value, revision + 1}
    return true, revision + 1
end

local function upsert(key, value)
    local current = space:get(key)
    local revision = 1
    if current ~= nil then
        revision = current[3] + 1
    end
    space:replace{key, value, revision}
    return true, revision
end

local function delete(key, expected)
    local ok, revision = precondition(key, expected)
    if not ok then
        return false, revision
    end
    space:delete(key)
    return true, revision
end

-- The service sends every get and write through `batch`: the requests that arrive together
-- share one call, one round trip and, for the writes, one WAL write. Each operation keeps its
-- own atomicity (nothing yields between its check and its write) and its own answer; one
-- operation's error (a tuple too large, say) fails only that operation. The transaction exists
-- for the single WAL write: if the commit fails, the whole call fails and the service answers
-- every operation in it with 503 (outcome unknown).
--
-- `ops` is an array of operations, each an array: {0, key} get, {1, key, value} create,
-- {2, key, value, expected} replace, {3, key, value} upsert, {4, key, expected} delete.
-- The answer has one entry per operation: for a get, {value, revision} or null; for a
-- write, {applied, revision} as above (revision null when the key is absent); for an
-- operation that failed, its error message as a string.
local GET = 0
local writes = {[1] = create, [2] = replace, [3] = upsert, [4] = delete}

local function batch(ops)
    local answers = {}
    local in_transaction = false
    for i, op in ipairs(ops) do
        local code = op[1]
        if code == GET then
            local current = space:get(op[2])
            answers[i] = current == nil and box.NULL or {current[2], current[3]}
        else
            if not in_transaction then
                box.begin()
                in_transaction = true
            end
            local write = writes[code]
            if write == nil then
                answers[i] = 'unknown operation ' .. tostring(code)
            else
                local ok, applied, revision = pcall(write, op[2], op[3], op[4])
                if ok then
                    answers[i] = {applied, revision == nil and box.NULL or revision}
                else
                    answers[i] = tostring(applied)
                end
            end
        end
    end
    if in_transaction then
        box.commit()
    end
    return answers
end

-- Tarantool documents truncate as reserved to the admin and the space's creator (2.6 lets a
-- writer do it; other versions need not). This function runs with the rights of its owner
-- (setuid) and is bound to this one space, so the kv user gets no more than "empty kv".
local function clear()
    space:truncate()
    return true
end

local functions = {
    batch = {batch},
    clear = {clear, setuid = true},
}

box.schema.user.create(user, {password = password, if_not_exists = true})
box.schema.user.passwd(user, password)
-- Least privilege: this space and these functions, nothing on the universe.
box.schema.user.grant(user, 'read,write', 'space', space_name, {if_not_exists = true})
for suffix, spec in pairs(functions) do
    local name = space_name .. '_' .. suffix
    rawset(_G, name, spec[1])
    box.schema.func.create(name, {setuid = spec.setuid or false, if_not_exists = true})
    box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
end

box.cfg{listen = listen}
