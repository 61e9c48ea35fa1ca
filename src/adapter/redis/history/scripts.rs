//! The history scripts. Redis runs one script at a time, so the serial a
//! publish gets, its place in the stream and its place on the bus are one
//! order, the same on every node.
//!
//! Per channel (the group's hash tag, so one slot with the group's bus channel): `serial` (STRING, the last
//! serial) and `history` (STREAM, entry id `serial-0`, fields `f` frame,
//! `t` unix ms, `x` excluded socket).

use redis::Script;

/// See [`publish`].
pub const PUBLISH: &str = r#"
local serial = redis.call('INCR', KEYS[1])
if serial == 1 then
  -- The counter was lost while the stream was kept: go on above its last
  -- entry (stream ids must grow, and old serials must not come back).
  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if top[1] then
    local last = tonumber(string.match(top[1][1], '^(%d+)'))
    if last and last >= serial then
      serial = last + 1
      redis.call('SET', KEYS[1], serial)
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local frame = ARGV[6] .. serial .. ARGV[7]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], serial .. '-0', 'f', frame, 't', ms, 'x', ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call(ARGV[9], ARGV[4], ARGV[5] .. serial .. '\31' .. frame)
return serial
"#;

/// Stores an event with the channel's next serial and publishes it on the bus.
///
/// KEYS: serial, history.
/// ARGV: history_size, history_ttl ms, serial ttl ms, bus channel, bus
/// message head (up to the serial), frame head (up to the serial), frame
/// tail, excluded socket ('' for none), publish command (`PUBLISH`, or
/// `SPUBLISH` on a Redis Cluster: the bus channel is in the keys' slot).
/// Returns the serial.
pub fn publish() -> Script {
    Script::new(PUBLISH)
}

/// Reads a channel's history after a serial.
///
/// KEYS: serial, history.
/// ARGV: since, limit, history_ttl ms, history_size, bus channel of the
/// channel's group, marker (published after the read when not '', see
/// [`super::super::bus::BusMessage::Marker`]: on the group's channel, so it
/// comes back after every event of this channel published before it),
/// publish command (`PUBLISH` or `SPUBLISH`).
/// Returns `{latest, oldest, serial, frame, time ms, excluded socket, ...}`
/// (latest 0 and oldest -1 for none) with at most `limit` events after
/// `since` that are within `history_size` of the latest and younger than
/// `history_ttl`.
pub fn read() -> Script {
    Script::new(
        r#"
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
local floor = latest - tonumber(ARGV[4]) + 1
if floor < 1 then floor = 1 end
-- Entries are in time order: the expired ones come first.
local oldest = -1
local from = floor
while oldest < 0 do
  local batch = redis.call('XRANGE', KEYS[2], string.format('%d-0', from), '+', 'COUNT', 32)
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local serial = tonumber(string.match(entry[1], '^(%d+)'))
    if tonumber(entry[2][4]) >= cutoff then
      oldest = serial
      break
    end
    from = serial + 1
  end
end
local out = {latest, oldest}
-- Lua numbers are doubles, printed by `..` as 1e+14 from 14 digits on,
-- which XRANGE refuses: nothing follows a since at or past the latest,
-- and ids are printed as integers.
local start = tonumber(ARGV[1]) + 1
if oldest >= 0 and start <= latest then
  if start < oldest then start = oldest end
  local entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', start), '+', 'COUNT', tonumber(ARGV[2]))
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    table.insert(out, tonumber(string.match(entry[1], '^(%d+)')))
    table.insert(out, fields[2])
    table.insert(out, fields[4])
    table.insert(out, fields[6])
  end
end
if ARGV[6] ~= '' then
  redis.call(ARGV[7], ARGV[5], ARGV[6])
end
return out
"#,
    )
}
