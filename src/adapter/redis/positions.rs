//! Signed-in users' recovery positions in Redis
//! ([`crate::hub::recovery_store::SharedPositions`]), so a user's new socket
//! on any node resumes where the old one's client last confirmed, also after
//! `kill -9` of the old socket's node.
//!
//! One HASH per app and user ([`super::keys::Keys::positions`]): field
//! `channel SEP socket_id`, value `serial:unix_seconds` (the position and
//! when it was last written, by Redis's clock). A position is usable for the
//! app's `recovery_window` after it was last written — set at join, raised
//! by a confirmation, touched when its socket closes — and the scripts drop
//! older ones; the whole key expires one window after its last write. So a
//! killed node's sockets stay recoverable one window after their last
//! confirmation, and at most [`MAX_POSITIONS_PER_USER`] positions are kept
//! per user.
//!
//! Each operation is one script on the adapter's command connection with
//! its operation timeout. Writes run in the background (at most
//! [`MAX_WRITES_IN_FLIGHT`] at once; beyond, one is skipped and counted in
//! `rusher_recovery_refused_total`): the hub's own positions stay exact,
//! and a write lost to an outage only costs duplicates, never a gap
//! (see [`crate::hub::recovery_store::lower`]).

use super::keys::SEP;
use super::RedisAdapter;
use crate::apps::App;
use crate::hub::recovery::MAX_POSITIONS_PER_USER;
use crate::hub::recovery_store::{SharedPositions, Unavailable, Write};
use async_trait::async_trait;
use redis::Script;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Background writes (one script each) in flight at most.
pub const MAX_WRITES_IN_FLIGHT: usize = 4096;

/// Shared by the scripts: `now` (Redis's clock, seconds), and `usable(v)`,
/// the serial of a value written less than ARGV[1] seconds ago, else nil.
const PRELUDE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call('TIME')[1])
local window = tonumber(ARGV[1])
local function usable(value)
  local serial, at = string.match(value or '', '^(%d+):(%d+)$')
  if serial and now - tonumber(at) < window then return serial end
  return nil
end
"#;

/// KEYS[1] the user's hash; ARGV: window (s), most fields, raise (1/0),
/// socket id, then (channel, serial) pairs. Sets (or raises) each position,
/// stamped now; a new field when the hash is full first drops the positions
/// past the window, and is refused when there is still no room. Returns the
/// number refused.
const WRITE: &str = r#"
local most, raise, socket = tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local refused = 0
for i = 5, #ARGV, 2 do
  local field = ARGV[i] .. '\31' .. socket
  local serial = ARGV[i + 1]
  local old = usable(redis.call('HGET', KEYS[1], field))
  local room = true
  if old then
    if raise and tonumber(old) > tonumber(serial) then serial = old end
  elseif redis.call('HLEN', KEYS[1]) >= most then
    local all = redis.call('HGETALL', KEYS[1])
    for j = 1, #all, 2 do
      if not usable(all[j + 1]) then redis.call('HDEL', KEYS[1], all[j]) end
    end
    room = redis.call('HLEN', KEYS[1]) < most
  end
  if room then
    redis.call('HSET', KEYS[1], field, serial .. ':' .. now)
  else
    refused = refused + 1
  end
end
redis.call('EXPIRE', KEYS[1], window)
return refused
"#;

/// KEYS[1] the user's hash; ARGV: window (s), channel, socket id. The
/// lowest usable position of another socket on the channel (-1 for none);
/// the highest is used up; positions past the window are dropped.
const TAKE: &str = r#"
local prefix, socket = ARGV[2] .. '\31', ARGV[3]
local lowest, highest, highest_field
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field = all[i]
  local serial = usable(all[i + 1])
  if not serial then
    redis.call('HDEL', KEYS[1], field)
  elseif string.sub(field, 1, #prefix) == prefix and string.sub(field, #prefix + 1) ~= socket then
    serial = tonumber(serial)
    if not lowest or serial < lowest then lowest = serial end
    if not highest or serial > highest then highest, highest_field = serial, field end
  end
end
if highest_field then redis.call('HDEL', KEYS[1], highest_field) end
return lowest or -1
"#;

/// KEYS[1] the user's hash; ARGV: window (s), socket id. Stamps the
/// socket's usable positions now (it closed: usable one window from now).
const CLOSED: &str = r#"
local suffix = '\31' .. ARGV[2]
local all = redis.call('HGETALL', KEYS[1])
local touched = 0
for i = 1, #all, 2 do
  local serial = usable(all[i + 1])
  if serial and string.sub(all[i], -#suffix) == suffix then
    redis.call('HSET', KEYS[1], all[i], serial .. ':' .. now)
    touched = touched + 1
  end
end
if touched > 0 then redis.call('EXPIRE', KEYS[1], window) end
return touched
"#;

/// The three scripts, hashed once for the process (a background write owns
/// its invocation, which borrows its script).
struct Scripts {
    write: Script,
    take: Script,
    closed: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            write: script(WRITE),
            take: script(TAKE),
            closed: script(CLOSED),
        }
    })
}

/// The positions store of a Redis adapter.
pub struct RedisPositions {
    adapter: Arc<RedisAdapter>,
    in_flight: Arc<AtomicUsize>,
}

impl RedisPositions {
    /// Positions kept through `adapter`'s Redis.
    pub fn new(adapter: Arc<RedisAdapter>) -> Self {
        RedisPositions {
            adapter,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `invocation` in the background; skipped (counted) when too many
    /// are in flight. With `counts_refused` the script's answer is the
    /// number of positions it refused (counted).
    fn spawn(&self, invocation: redis::ScriptInvocation<'static>, counts_refused: bool) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_WRITES_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.adapter.metrics.recovery_refused.inc();
            return;
        }
        let (adapter, in_flight) = (self.adapter.clone(), self.in_flight.clone());
        tokio::spawn(async move {
            let answer = adapter
                .run(|mut connection| async move {
                    invocation.invoke_async::<i64>(&mut connection).await
                })
                .await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
            if let (true, Some(refused)) = (counts_refused, answer) {
                adapter
                    .metrics
                    .recovery_refused
                    .inc_by(refused.max(0) as u64);
            }
        });
    }

    fn key(&self, app: &App, user: &str) -> String {
        self.adapter.keys.positions(&app.id, user)
    }

    fn window_secs(app: &App) -> u64 {
        app.recovery_window().as_secs().max(1)
    }
}

#[async_trait]
impl SharedPositions for RedisPositions {
    fn write(
        &self,
        app: &App,
        user: &str,
        socket_id: &str,
        positions: Vec<(String, u64)>,
        how: Write,
    ) {
        if positions.is_empty() {
            return;
        }
        let mut invocation = scripts().write.prepare_invoke();
        invocation
            .key(self.key(app, user))
            .arg(Self::window_secs(app))
            .arg(MAX_POSITIONS_PER_USER)
            .arg(u8::from(how == Write::Raise))
            .arg(socket_id);
        for (channel, serial) in positions {
            invocation.arg(channel).arg(serial);
        }
        self.spawn(invocation, true);
    }

    fn forget(&self, app: &App, user: &str, socket_id: &str, channel: &str) {
        let (adapter, key) = (self.adapter.clone(), self.key(app, user));
        let field = format!("{channel}{SEP}{socket_id}");
        tokio::spawn(async move {
            adapter
                .run(|mut connection| async move {
                    redis::cmd("HDEL")
                        .arg(key)
                        .arg(field)
                        .query_async::<i64>(&mut connection)
                        .await
                })
                .await;
        });
    }

    fn closed(&self, app: &App, user: &str, socket_id: &str) {
        let mut invocation = scripts().closed.prepare_invoke();
        invocation
            .key(self.key(app, user))
            .arg(Self::window_secs(app))
            .arg(socket_id);
        self.spawn(invocation, false);
    }

    async fn take(
        &self,
        app: &App,
        user: &str,
        socket_id: &str,
        channel: &str,
    ) -> Result<Option<u64>, Unavailable> {
        let mut invocation = scripts().take.prepare_invoke();
        invocation
            .key(self.key(app, user))
            .arg(Self::window_secs(app))
            .arg(channel)
            .arg(socket_id);
        let found =
            self.adapter
                .run(|mut connection| async move {
                    invocation.invoke_async::<i64>(&mut connection).await
                })
                .await
                .ok_or(Unavailable)?;
        Ok(u64::try_from(found).ok())
    }
}
