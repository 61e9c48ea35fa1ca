//! Acknowledged delivery's shared store (`[apps.delivery] store = "redis"`,
//! [`ParkedStore`]): a signed-in user's unacknowledged messages, in Redis, so
//! a reconnect to any node gets them and the death of the node holding the
//! connection does not lose them.
//!
//! One HASH per app and user ([`Keys::delivery`], hash-tagged `{app:user}`
//! so a later Redis Cluster keeps it in one slot), field = message id, value
//! `node SEP socket SEP channel SEP resends SEP expires_unix_ms SEP frame`:
//! - live (`node`, `socket` set): mirrored by the connection that holds it
//!   ([`ParkedStore::mirror`], batched per connection); only that connection
//!   resends it while its node heartbeats;
//! - parked (`node`, `socket` empty): its connection closed
//!   ([`ParkedStore::park`]).
//!
//! A claim ([`claim_script`]) reads and deletes, in one script, the entries
//! of the claimed channels that are parked or whose node is no longer among
//! the live nodes (heartbeat within `node_timeout_secs`), so exactly one
//! connection gets each. Bounded: at most `max_pending` entries per user
//! (the oldest go first); the key expires `message_ttl` after its last write
//! and every entry carries its own expiry. All-or-nothing per call, with the
//! adapter's operation timeout: a failure is [`Unavailable`] and the caller
//! falls back to this node's memory.

use super::keys::SEP;
use super::{now_ms, RedisAdapter};
use crate::apps::App;
use crate::delivery::pending::Entry;
use crate::delivery::store::{Claimed, ParkedStore, Unavailable};
use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes and forgets entries of KEYS[1] for the connection ARGV[1]
/// (`node SEP socket`). ARGV[2]: `park` (written as parked, unless another
/// live connection owns the id) or `live` (written as the connection's);
/// ARGV[3] max entries, ARGV[4] key TTL in ms, ARGV[5] number of writes,
/// then id/rest pairs (`rest` = the value after `node SEP socket SEP`), then
/// the ids to forget (only where this connection owns them). Drops the
/// entries with the earliest expiry beyond the maximum; returns how many
/// of those were parked (lost; live ones are still held by their connection).
pub fn sync_script() -> Script {
    Script::new(
        r#"
local key, owner, park = KEYS[1], ARGV[1] .. '\31', ARGV[2] == 'park'
local max, ttl, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function mine(v) return v and string.sub(v, 1, #owner) == owner end
local i = 6
for _ = 1, n do
  local id, rest = ARGV[i], ARGV[i + 1]
  i = i + 2
  if park then
    local v = redis.call('HGET', key, id)
    if (not v) or mine(v) then redis.call('HSET', key, id, '\31\31' .. rest) end
  else
    redis.call('HSET', key, id, owner .. rest)
  end
end
for j = i, #ARGV do
  if mine(redis.call('HGET', key, ARGV[j])) then redis.call('HDEL', key, ARGV[j]) end
end
local dropped, len = 0, redis.call('HLEN', key)
if len > max then
  local all, rows = redis.call('HGETALL', key), {}
  for k = 1, #all, 2 do
    local v, at = all[k + 1], 0
    local a = string.find(v, '\31', 1, true)
    local b = a and string.find(v, '\31', a + 1, true)
    local c = b and string.find(v, '\31', b + 1, true)
    local d = c and string.find(v, '\31', c + 1, true)
    local e = d and string.find(v, '\31', d + 1, true)
    if e then at = tonumber(string.sub(v, d + 1, e - 1)) or 0 end
    rows[#rows + 1] = {all[k], at, a == 1}
  end
  table.sort(rows, function(x, y) return x[2] < y[2] end)
  for k = 1, len - max do
    redis.call('HDEL', key, rows[k][1])
    if rows[k][3] then dropped = dropped + 1 end
  end
end
if n > 0 then redis.call('PEXPIRE', key, ttl) end
return dropped
"#,
    )
}

/// Claims from KEYS[1] for the connection ARGV[1] (`node SEP socket`) at
/// ARGV[2] (unix ms): ARGV[3] channels follow, then the live node ids.
/// Takes (reads and deletes) every unexpired entry of those channels that is
/// parked or whose node is not live; deletes expired entries nobody live
/// holds. Returns `{expired, held_elsewhere (0/1), id, value, id, value…}`.
pub fn claim_script() -> Script {
    Script::new(
        r#"
local key, owner, now, m = KEYS[1], ARGV[1] .. '\31', tonumber(ARGV[2]), tonumber(ARGV[3])
local channels, live = {}, {}
for i = 4, 3 + m do channels[ARGV[i]] = true end
for i = 4 + m, #ARGV do live[ARGV[i]] = true end
local all = redis.call('HGETALL', key)
local out, expired, elsewhere = {'', ''}, 0, 0
for k = 1, #all, 2 do
  local id, v = all[k], all[k + 1]
  local a = string.find(v, '\31', 1, true)
  local b = a and string.find(v, '\31', a + 1, true)
  local c = b and string.find(v, '\31', b + 1, true)
  local d = c and string.find(v, '\31', c + 1, true)
  local e = d and string.find(v, '\31', d + 1, true)
  if not e then
    redis.call('HDEL', key, id)
  elseif string.sub(v, 1, #owner) ~= owner then
    local node = string.sub(v, 1, a - 1)
    local free = node == '' or not live[node]
    if free and (tonumber(string.sub(v, d + 1, e - 1)) or 0) <= now then
      redis.call('HDEL', key, id)
      expired = expired + 1
    elseif channels[string.sub(v, b + 1, c - 1)] then
      if free then
        redis.call('HDEL', key, id)
        out[#out + 1] = id
        out[#out + 1] = v
      else
        elsewhere = 1
      end
    end
  end
end
out[1], out[2] = tostring(expired), tostring(elsewhere)
return out
"#,
    )
}

/// The stored value of an entry after `node SEP socket SEP`.
fn rest_of(entry: &Entry, now: Instant, now_ms: u64) -> String {
    let left = entry.expires.saturating_duration_since(now).as_millis() as u64;
    format!(
        "{}{SEP}{}{SEP}{}{SEP}{}",
        entry.channel,
        entry.resends,
        now_ms + left,
        entry.frame
    )
}

/// An entry from its id and stored value; `None` for an unreadable value.
pub(crate) fn entry_of(id: &str, value: &str, now: Instant, now_ms: u64) -> Option<Entry> {
    let mut fields = value.splitn(6, SEP);
    let (_node, _socket) = (fields.next()?, fields.next()?);
    let channel = fields.next()?;
    let resends = fields.next()?.parse().ok()?;
    let expires_ms: u64 = fields.next()?.parse().ok()?;
    let frame = fields.next()?;
    Some(Entry {
        id: id.into(),
        channel: channel.into(),
        frame: frame.into(),
        resends,
        expires: now + Duration::from_millis(expires_ms.saturating_sub(now_ms)),
    })
}

impl RedisAdapter {
    /// This node's owner token for one of its connections.
    fn delivery_owner(&self, socket_id: &str) -> String {
        format!("{}{SEP}{socket_id}", self.node_id)
    }

    /// Runs [`sync_script`] for the connection.
    async fn sync_deliveries(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        mode: &str,
        writes: &[Entry],
        gone: &[Arc<str>],
    ) -> Result<usize, Unavailable> {
        if writes.is_empty() && gone.is_empty() {
            return Ok(0);
        }
        let (now, now_ms) = (Instant::now(), now_ms());
        let settings = &app.delivery;
        let mut invocation = self.scripts.delivery_sync.prepare_invoke();
        invocation
            .key(self.keys.delivery(&app.id, user_id))
            .arg(self.delivery_owner(socket_id))
            .arg(mode)
            .arg(settings.max_pending)
            .arg(settings.message_ttl.saturating_mul(1000))
            .arg(writes.len());
        for entry in writes {
            invocation.arg(&*entry.id).arg(rest_of(entry, now, now_ms));
        }
        for id in gone {
            invocation.arg(&**id);
        }
        self.run(
            |mut connection| async move { invocation.invoke_async::<u64>(&mut connection).await },
        )
        .await
        .map(|dropped| dropped as usize)
        .ok_or(Unavailable)
    }
}

#[async_trait]
impl ParkedStore for RedisAdapter {
    async fn park(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        entries: Vec<Entry>,
        gone: Vec<Arc<str>>,
    ) -> Result<usize, Unavailable> {
        self.sync_deliveries(app, user_id, socket_id, "park", &entries, &gone)
            .await
    }

    async fn mirror(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        writes: Vec<Entry>,
        gone: Vec<Arc<str>>,
    ) -> Result<usize, Unavailable> {
        self.sync_deliveries(app, user_id, socket_id, "live", &writes, &gone)
            .await
    }

    async fn claim(
        &self,
        app: &App,
        user_id: &str,
        socket_id: &str,
        channels: &[String],
        now: Instant,
    ) -> Result<Claimed, Unavailable> {
        if channels.is_empty() {
            return Ok(Claimed::default());
        }
        let timeout_ms = self.settings.node_timeout_secs.saturating_mul(1000);
        let nodes = self.keys.nodes();
        let mut invocation = self.scripts.delivery_claim.prepare_invoke();
        invocation
            .key(self.keys.delivery(&app.id, user_id))
            .arg(self.delivery_owner(socket_id))
            .arg(now_ms())
            .arg(channels.len());
        for channel in channels {
            invocation.arg(channel);
        }
        let own = self.node_id.clone();
        let found = self
            .run(|mut connection| async move {
                let mut invocation = invocation;
                // Nodes that heartbeat within the timeout: the reaper's rule.
                let floor = now_ms().saturating_sub(timeout_ms);
                let live: Vec<String> = connection.zrangebyscore(&nodes, floor, "+inf").await?;
                invocation.arg(own);
                for node in live {
                    invocation.arg(node);
                }
                invocation
                    .invoke_async::<Vec<String>>(&mut connection)
                    .await
            })
            .await
            .ok_or(Unavailable)?;
        let now_ms = now_ms();
        let mut rows = found.into_iter();
        let expired = rows.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let elsewhere = rows.next().is_some_and(|held| held == "1");
        let mut entries = Vec::new();
        while let (Some(id), Some(value)) = (rows.next(), rows.next()) {
            match entry_of(&id, &value, now, now_ms) {
                Some(entry) => entries.push(entry),
                None => tracing::warn!(%id, "unreadable parked delivery in redis dropped"),
            }
        }
        // Oldest first, as a connection parks them.
        entries.sort_by_key(|entry| entry.expires);
        let heartbeat = Duration::from_secs(self.settings.heartbeat_secs);
        Ok(Claimed {
            entries,
            expired,
            retry_after: elsewhere.then(|| Duration::from_millis(timeout_ms) + heartbeat),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let now = Instant::now();
        let entry = Entry {
            id: "ab-1".into(),
            channel: "orders-1".into(),
            frame: r#"{"message_id":"ab-1","channel":"orders-1"}"#.into(),
            resends: 2,
            expires: now + Duration::from_secs(60),
        };
        let value = format!("n{SEP}1.2{SEP}{}", rest_of(&entry, now, 1_000));
        let back = entry_of("ab-1", &value, now, 1_000).unwrap();
        assert_eq!(
            (&*back.id, &*back.channel, &*back.frame, back.resends),
            ("ab-1", "orders-1", &*entry.frame, 2)
        );
        assert_eq!(back.expires, entry.expires);
        // Already past its expiry when read: expires now, not in the past.
        assert_eq!(entry_of("x", &value, now, 100_000).unwrap().expires, now);
        assert!(entry_of("x", "no separators", now, 0).is_none());
    }
}
