//! Lua scripts: each runs atomically in Redis, so "first subscriber in the
//! cluster" and "last socket of a user" are decided exactly once.
//!
//! Per channel, the keys hold each node's share:
//! - `subs`: HASH node → sockets subscribed on that node;
//! - `members`: HASH `node \x1f user` → 1 while the user has a socket there;
//! - `info`: HASH user → user_info JSON;
//! - `node_channels`: SET of `app \x1f channel` a node has a share in;
//! - `app_channels`: SET of an app's occupied channels;
//! - `held`: ZSET of an app's held-back leave webhooks (see [`super::held`]).

use redis::Script;

/// Records a socket joining (and, for presence, a member on this node).
///
/// KEYS: subs, members, info, node_channels, app_channels, held.
/// ARGV: node, node_channel_id, channel, new_socket (0/1), user ('' if none),
/// user_info, max_members, new_member_on_node (0/1), hold (0/1: the app's
/// leave webhooks are held back in `held`), peer (0/1: the member asked for
/// peer channels; its `members` field is then 2, not 1).
/// Returns `{total, added, reoccupied, readded}` or `{-1}` when the member
/// limit is reached, then the flat `user, info, ...` list of members for
/// presence, then (presence) the peer members' ids when `peer` is 1 (empty
/// otherwise). `reoccupied`: the first subscriber cancelled the channel's
/// held vacated; `readded`: the member cancelled its held removal.
pub fn join() -> Script {
    Script::new(
        r#"
local node = ARGV[1]
local user = ARGV[5]
local function user_of(field)
  local at = string.find(field, '\31', 1, true)
  return string.sub(field, at + 1)
end
local added = 0
if user ~= '' and ARGV[8] == '1' then
  local users = {}
  local present = false
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    local u = user_of(field)
    if u == user then present = true end
    users[u] = true
  end
  if not present then
    local count = 0
    for _ in pairs(users) do count = count + 1 end
    if count >= tonumber(ARGV[7]) then
      return {-1}
    end
    added = 1
  end
  local member = 1
  if ARGV[10] == '1' then member = 2 end
  redis.call('HSET', KEYS[2], node .. '\31' .. user, member)
  redis.call('HSET', KEYS[3], user, ARGV[6])
end
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[1], node, 1)
  redis.call('SADD', KEYS[4], ARGV[2])
  redis.call('SADD', KEYS[5], ARGV[3])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
local reoccupied = 0
local readded = 0
if ARGV[9] == '1' then
  if ARGV[4] == '1' and total == 1 then
    reoccupied = redis.call('ZREM', KEYS[6], 'v\31' .. ARGV[3])
  end
  if added == 1 then
    readded = redis.call('ZREM', KEYS[6], 'r\31' .. ARGV[3] .. '\31' .. user)
  end
end
if user ~= '' then
  local peers = {}
  if ARGV[10] == '1' then
    local flat = redis.call('HGETALL', KEYS[2])
    for i = 1, #flat, 2 do
      if flat[i + 1] == '2' then table.insert(peers, user_of(flat[i])) end
    end
  end
  return {total, added, reoccupied, readded, redis.call('HGETALL', KEYS[3]), peers}
end
return {total, added, reoccupied, readded}
"#,
    )
}

/// Records a socket leaving (and, for presence, the member leaving this node).
///
/// KEYS: subs, members, info, node_channels, app_channels, held.
/// ARGV: node, node_channel_id, channel, user ('' unless the user's last
/// socket on this node left), removal due and vacated due (unix ms; '0':
/// not held, the node emits them at once).
/// Returns `{total, removed, held}`: `held` 1 when the leave webhooks
/// (vacated, member_removed) were put in `held` instead.
pub fn leave() -> Script {
    Script::new(
        r#"
local node = ARGV[1]
local user = ARGV[4]
local mine = redis.call('HINCRBY', KEYS[1], node, -1)
if mine <= 0 then
  redis.call('HDEL', KEYS[1], node)
  redis.call('SREM', KEYS[4], ARGV[2])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total <= 0 then
  redis.call('SREM', KEYS[5], ARGV[3])
end
local removed = 0
if user ~= '' then
  redis.call('HDEL', KEYS[2], node .. '\31' .. user)
  local elsewhere = false
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    local at = string.find(field, '\31', 1, true)
    if string.sub(field, at + 1) == user then elsewhere = true break end
  end
  if not elsewhere then
    removed = 1
    redis.call('HDEL', KEYS[3], user)
  end
end
local held = 0
if ARGV[5] ~= '0' then
  held = 1
  if removed == 1 then
    redis.call('ZADD', KEYS[6], ARGV[5], 'r\31' .. ARGV[3] .. '\31' .. user)
  end
  if total <= 0 then
    redis.call('ZADD', KEYS[6], ARGV[6], 'v\31' .. ARGV[3])
  end
end
return {total, removed, held}
"#,
    )
}

/// Removes a node's shares in some channels of one shard group (dead, or
/// about to re-announce itself). Rust lists the channels (`SMEMBERS` of the
/// node's set of the group) and passes every key, so the script touches
/// one slot and builds no key name.
///
/// KEYS: the node's channels of the group, then per channel: subs,
/// members, info, the app's channels of the group.
/// ARGV: node, then per channel: app, channel.
/// Returns a flat list of `kind, app, channel, user` where kind is
/// `vacated` (user '') or `removed`, followed by `peer` for a removed
/// member that was a peer member (its `members` field 2).
pub fn reap() -> Script {
    Script::new(
        r#"
local node = ARGV[1]
local out = {}
local n = (#ARGV - 1) / 2
for i = 1, n do
  local app = ARGV[2 * i]
  local channel = ARGV[2 * i + 1]
  local subs = KEYS[4 * i - 2]
  local members = KEYS[4 * i - 1]
  local info = KEYS[4 * i]
  local channels = KEYS[4 * i + 1]
  redis.call('SREM', KEYS[1], app .. '\31' .. channel)
  redis.call('HDEL', subs, node)
  local total = 0
  for _, v in ipairs(redis.call('HVALS', subs)) do total = total + tonumber(v) end
  if total <= 0 then
    redis.call('DEL', subs)
    redis.call('SREM', channels, channel)
    table.insert(out, 'vacated'); table.insert(out, app); table.insert(out, channel); table.insert(out, '')
  end
  local flat = redis.call('HGETALL', members)
  local gone = {}
  local others = {}
  local peers = {}
  for i = 1, #flat, 2 do
    local field = flat[i]
    local sep = string.find(field, '\31', 1, true)
    local owner = string.sub(field, 1, sep - 1)
    local user = string.sub(field, sep + 1)
    if owner == node then
      redis.call('HDEL', members, field)
      gone[user] = true
      if flat[i + 1] == '2' then peers[user] = true end
    else
      others[user] = true
    end
  end
  for user, _ in pairs(gone) do
    if not others[user] then
      redis.call('HDEL', info, user)
      table.insert(out, 'removed'); table.insert(out, app); table.insert(out, channel); table.insert(out, user)
      if peers[user] then
        table.insert(out, 'peer'); table.insert(out, app); table.insert(out, channel); table.insert(out, user)
      end
    end
  end
end
return out
"#,
    )
}

/// Takes an app's held-back leave webhooks that are due: each is taken
/// by exactly one node, whichever asks first (also those of a dead node).
///
/// KEYS: held. ARGV: now (unix ms), most to take.
/// Returns the flat `member, due` list, oldest first.
pub fn release_held() -> Script {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]) end
return due
"#,
    )
}

/// Sends a channel's `pusher_internal:subscription_count` to every node
/// (the bus), with the cluster-wide count read in the same step, so the
/// last frame every node delivers carries the last count; at most once per
/// `gap` per channel for the whole cluster, and not again for an unchanged
/// count unless `force` (a new subscriber must learn it).
///
/// KEYS: subs, count. ARGV: now (unix ms), gap ms, force (0/1), bus
/// channel of the channel's group, message head, message tail, state ttl
/// ms, publish command (`PUBLISH`, or `SPUBLISH` on a Redis Cluster).
/// Returns the count sent, 0 (empty channel: nothing sent), -1 (another
/// send within `gap`: try later) or -2 (unchanged: nothing to send).
///
/// Loaded in the same pipeline as its calls (one round trip for every
/// channel of a tick).
pub const ANNOUNCE_COUNT: &str = r#"
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total <= 0 then
  redis.call('DEL', KEYS[2])
  return 0
end
local last = redis.call('HMGET', KEYS[2], 'n', 'at')
if last[2] and tonumber(ARGV[1]) - tonumber(last[2]) < tonumber(ARGV[2]) then
  return -1
end
if ARGV[3] ~= '1' and last[1] and tonumber(last[1]) == total then
  return -2
end
redis.call('HSET', KEYS[2], 'n', total, 'at', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call(ARGV[8], ARGV[4], ARGV[5] .. total .. ARGV[6])
return total
"#;

/// The next stored-message sequence of an app, never below `floor + 1`
/// (the node's view, seeded from the store).
///
/// KEYS: the app's sequence key. ARGV: floor.
pub fn next_sequence() -> Script {
    Script::new(
        r#"
local next = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if next <= floor then
  next = floor + 1
  redis.call('SET', KEYS[1], next)
end
return next
"#,
    )
}
