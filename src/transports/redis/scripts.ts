/*
 * The Lua scripts of the Redis transport and their typed handles. They live apart because each one
 * is an atomic step whose correctness rests on the key layout described in index.ts: the stream and
 * its id index change together (dispatch, trim), and presence cleanup checks and deletes at once.
 */
import type { Cluster, Redis } from 'ioredis';

/**
 * Appends the update and indexes it; trims the stream when it outgrew `size + slack`.
 *
 * The id index is a sorted set whose members all have score 0, so it is ordered by member bytes:
 * `<byte length of id, 10 digits><id><entry ms, 20 digits><entry n, 20 digits>`. The length prefix
 * makes `<length><id>` a prefix shared by exactly the occurrences of that id, and the zero-padded
 * entry id sorts them in stream order: the first member of the range is the earliest occurrence
 * still in the stream. Trimming is done here rather than with `XADD MAXLEN ~` because this script
 * has to know which entries go in order to drop exactly their index members: the index never points
 * at a trimmed entry and never forgets a later occurrence of a reused id. The trim is batched (every
 * `slack` entries, 1 % of `size`), which keeps it approximate and cheap like `MAXLEN ~`.
 *
 * Deduplication, in the same atomic step: when the newest entry of the same id is younger than the
 * dedupe window (its entry id's milliseconds against the server's TIME), nothing is written and the
 * entry id returned is ''. A retry after a lost answer is therefore stored once.
 *
 * KEYS: stream, index. ARGV: size, slack, update id, dedupe window (ms, 0 = off), field/value
 * pairs. Returns { entry id or '' for a duplicate, length }.
 */
export const DISPATCH_SCRIPT = `
local function member(id, eid)
  local dash = string.find(eid, '-', 1, true)
  local ms = string.sub(eid, 1, dash - 1)
  local n = string.sub(eid, dash + 1)
  return string.format('%010d', #id) .. id .. string.rep('0', 20 - #ms) .. ms .. string.rep('0', 20 - #n) .. n
end
local window = tonumber(ARGV[4])
if window > 0 then
  local p = string.format('%010d', #ARGV[3]) .. ARGV[3]
  local last = redis.call('ZREVRANGEBYLEX', KEYS[2], '[' .. p .. ':', '[' .. p, 'LIMIT', 0, 1)
  if #last > 0 then
    -- Redis 6.2 replicates scripts verbatim unless told otherwise: TIME needs effects replication.
    if redis.replicate_commands then redis.replicate_commands() end
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now - tonumber(string.sub(last[1], #p + 1, #p + 20)) < window then
      return { '', redis.call('XLEN', KEYS[1]) }
    end
  end
end
local eid = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], 0, member(ARGV[3], eid))
local size = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if len > size + tonumber(ARGV[2]) then
  local k = len - size
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', k + 1)
  for i = 1, k do
    local f = old[i][2]
    for j = 1, #f, 2 do
      if f[j] == 'i' then
        redis.call('ZREM', KEYS[2], member(f[j + 1], old[i][1]))
        break
      end
    end
  end
  redis.call('XTRIM', KEYS[1], 'MINID', old[k + 1][1])
  len = redis.call('XLEN', KEYS[1])
end
return { eid, len }
`;

/**
 * Finds the earliest entry of an update id and returns it with the first page after it, or nil.
 * KEYS: stream, index. ARGV: update id, page size.
 */
const FIND_SCRIPT = `
local p = string.format('%010d', #ARGV[1]) .. ARGV[1]
local m = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. p, '[' .. p .. ':', 'LIMIT', 0, 1)
if #m == 0 then return false end
local s = string.sub(m[1], #p + 1)
local ms = (string.gsub(string.sub(s, 1, 20), '^0+(%d)', '%1'))
local n = (string.gsub(string.sub(s, 21), '^0+(%d)', '%1'))
local eid = ms .. '-' .. n
return { eid, redis.call('XRANGE', KEYS[1], '(' .. eid, '+', 'COUNT', tonumber(ARGV[2])) }
`;

/**
 * Drops presence records of nodes whose heartbeat key is gone. Checks and deletes atomically, so a
 * node that comes back (and re-adds its records) at the same moment cannot lose them. The heartbeat
 * keys are passed as KEYS, not derived here: Redis Cluster routes and checks a script by its KEYS,
 * and a record whose node key is not among them is kept.
 * KEYS: presence hash, heartbeat keys of the fields' nodes. ARGV: node key prefix, fields.
 */
const CLEANUP_SCRIPT = `
local alive = {}
for i = 2, #KEYS do alive[KEYS[i]] = redis.call('EXISTS', KEYS[i]) == 1 end
local removed = 0
for i = 2, #ARGV do
  local node = string.match(ARGV[i], '^([^|]*)|')
  if node and alive[ARGV[1] .. node] == false then removed = removed + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return removed
`;

export type Entry = [id: string, fields: string[]];

export interface Scripts {
  qsDispatch(stream: string, index: string, ...args: (string | number)[]): Promise<[string, number]>;
  qsFind(stream: string, index: string, id: string, count: number): Promise<[string, Entry[]] | null>;
  /** numKeys = 1 + nodeKeys.length; args: hash, node keys, node key prefix, fields. */
  qsCleanup(numKeys: number, ...args: string[]): Promise<number>;
}

/** Registers the scripts on the command connection (ioredis sends EVALSHA, falling back to EVAL). */
export function defineScripts(client: Redis | Cluster): Scripts {
  client.defineCommand('qsDispatch', { numberOfKeys: 2, lua: DISPATCH_SCRIPT });
  client.defineCommand('qsFind', { numberOfKeys: 2, lua: FIND_SCRIPT });
  client.defineCommand('qsCleanup', { lua: CLEANUP_SCRIPT });
  return client as unknown as Scripts;
}
