//! Channel history in Redis Streams, shared by every node
//! ([`crate::hub::history_store::SharedHistory`]).
//!
//! - Publish: one script ([`scripts::PUBLISH`]) gives the event the channel's
//!   next serial, adds it to the channel's stream (`MAXLEN ~ history_size`,
//!   TTL `history_ttl`) and publishes it on the bus. It rides in the outbox
//!   with the node's other bus messages, so the caller never waits on Redis.
//!   Every node, this one included, delivers it from the bus
//!   ([`crate::hub::node::Node::deliver_serial`]): bus order = serial order.
//! - Recovery and the history API read the stream ([`scripts::read`]). A
//!   recovery's read publishes a marker on the bus and waits (at most the
//!   operation timeout) until the marker comes back: every event the read
//!   saw has then reached this node's mirror, so joining the two leaves no
//!   gap and no duplicate. The marker goes on the channel's group's bus
//!   channel, the one its events take (one shard's order on a cluster).
//! - Redis unreachable: the event is delivered at once on this node, without
//!   a serial, and its write waits in a bounded [`retry::RetryQueue`]; once
//!   Redis answers again the heartbeat writes it (mirrored by every node,
//!   delivered by none: this node's subscribers had it). Recoveries and
//!   history pages answer "unavailable" at once.
//!
//! - Long retention (`history_retention`, MongoDB): the node that published
//!   an event writes it to the archive when the bus brings it back with its
//!   serial (the others only mirror it), so each event is stored once; the
//!   serial counter lives at least as long as the retention.
//!
//! A write whose reply is lost (a timeout while Redis did run it) is
//! delivered here and may also arrive from the bus and be stored twice: the
//! one case where fail-open costs exactness.

pub mod retry;
pub mod scripts;

use super::bus::BusMessage;
use super::health::Scope;
use super::RedisAdapter;
use crate::apps::App;
use crate::hub::history::{Fetched, Page, PageEvent};
use crate::hub::history_store::{Publication, SharedHistory, Unavailable};
use crate::hub::persistence::Persistence;
use crate::protocol::frames;
use async_trait::async_trait;
use bytestring::ByteString;
use redis::Value;
use retry::RetryQueue;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Shortest life of a channel's serial counter: a channel idle for less
/// keeps counting from its last serial, so an old `since` is never taken
/// for a serial of new events.
const SERIAL_TTL_SECS: u64 = 86_400;

/// Writes sent again per batch once Redis is back.
const RETRY_BATCH: usize = 512;

/// An event waiting to be stored: its frame up to the serial, encoded once.
#[derive(Debug)]
pub struct HistoryWrite {
    /// The channel's shard group (its bus channel and keys).
    pub(super) group: u16,
    app_id: String,
    channel: String,
    /// Excluded socket ('' for none).
    except: String,
    /// The frame up to its serial ([`frames::history_event_parts`]).
    head: String,
    /// Whether subscribers still need it (false once delivered here).
    live: bool,
    size: usize,
    ttl_ms: u64,
    /// The app's `history_retention` in seconds (0 = off; saturated, kept
    /// small so a write stays small): the serial counter must outlive the
    /// archived events.
    retention_secs: u32,
}

/// The adapter's history state.
pub struct State {
    publish: redis::Script,
    read: redis::Script,
    retry: RetryQueue<HistoryWrite>,
    markers: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_token: AtomicU64,
    /// Where this node's own events go for long retention (set at start).
    archive: std::sync::OnceLock<Arc<Persistence>>,
}

impl State {
    /// Scripts hashed, and a retry queue of `retry_capacity` writes.
    pub fn new(retry_capacity: usize) -> Self {
        State {
            publish: scripts::publish(),
            read: scripts::read(),
            retry: RetryQueue::new(retry_capacity),
            markers: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            archive: std::sync::OnceLock::new(),
        }
    }

    fn markers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.markers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The part of a stored frame a page shows.
#[derive(Deserialize)]
struct FrameParts {
    event: String,
    data: Box<RawValue>,
}

/// One stream entry as the read script returns it.
struct Entry {
    serial: u64,
    frame: String,
    time_ms: u64,
    except: String,
}

/// `{latest, oldest, (serial, frame, time, except)*}` → parts.
fn parse_read(values: Vec<Value>) -> (Option<u64>, Option<u64>, Vec<Entry>) {
    let number = |value: &Value| match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    };
    let text = |value: Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).unwrap_or_default(),
        _ => String::new(),
    };
    let positive = |n: Option<i64>| n.filter(|n| *n > 0).map(|n| n as u64);
    let latest = positive(values.first().and_then(number));
    let oldest = positive(values.get(1).and_then(number));
    let mut entries = Vec::new();
    let mut rest = values.into_iter().skip(2);
    while let (Some(serial), Some(frame), Some(time), Some(except)) =
        (rest.next(), rest.next(), rest.next(), rest.next())
    {
        let Some(serial) = positive(number(&serial)) else {
            continue;
        };
        entries.push(Entry {
            serial,
            frame: text(frame),
            time_ms: positive(number(&time)).unwrap_or(0),
            except: text(except),
        });
    }
    (latest, oldest, entries)
}

impl RedisAdapter {
    /// Sends the events this node publishes to `persistence`'s long-retention
    /// archive once they have their serial (apps with `history_retention`).
    pub fn keep_history_in(&self, persistence: Arc<Persistence>) {
        let _ = self.history.archive.set(persistence);
    }

    /// Whether the shard of `group` (a channel's group) answers: history
    /// there is read and written through Redis, else "unavailable" and
    /// kept for a retry (other groups' shards may be fine).
    fn history_available(&self, group: u16) -> bool {
        self.group_healthy(group)
    }

    /// Adds `SCRIPT LOAD` of the publish script to a batch (see the outbox).
    pub(super) fn history_script_load(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("SCRIPT")
            .arg("LOAD")
            .arg(scripts::PUBLISH)
            .ignore();
    }

    /// Adds one history write (the publish script) to a batch.
    pub(super) fn history_script_call(&self, pipe: &mut redis::Pipeline, write: &HistoryWrite) {
        let (app_id, channel) = (write.app_id.as_str(), write.channel.as_str());
        let serial_ttl_ms = write
            .ttl_ms
            .max(SERIAL_TTL_SECS * 1000)
            .max(u64::from(write.retention_secs) * 1000);
        let bus_head =
            BusMessage::history_head(&self.node_id, app_id, channel, &write.except, write.live);
        pipe.cmd("EVALSHA")
            .arg(self.history.publish.get_hash())
            .arg(2)
            .arg(self.keys.history_serial(app_id, channel))
            .arg(self.keys.history(app_id, channel))
            .arg(write.size)
            .arg(write.ttl_ms)
            .arg(serial_ttl_ms)
            .arg(self.keys.channel_bus(app_id, channel))
            .arg(bus_head)
            .arg(&write.head)
            .arg("}")
            .arg(&write.except)
            .arg(self.publish_command)
            .ignore();
    }

    /// Writes that did not reach Redis: delivered on this node now (those
    /// not yet delivered, without a serial), then queued for a retry.
    pub(super) fn history_unsent(&self, writes: Vec<HistoryWrite>) {
        if writes.is_empty() {
            return;
        }
        let mut first_time = 0;
        let writes: Vec<HistoryWrite> = writes
            .into_iter()
            .map(|mut write| {
                if write.live {
                    first_time += 1;
                    let frame = frames::without_serial(&write.head, "}");
                    let except = (!write.except.is_empty()).then_some(write.except.as_str());
                    let report = self
                        .node
                        .deliver(&write.app_id, &write.channel, &frame, except);
                    report.record(&self.metrics);
                    write.live = false;
                }
                write
            })
            .collect();
        self.metrics.history_writes_queued.inc_by(first_time);
        let dropped = self.history.retry.push(writes);
        self.metrics.history_writes_dropped.inc_by(dropped);
    }

    /// Sends the writes kept during an outage, oldest first, whose group's
    /// shard answers again (called by the heartbeat); those of groups still
    /// down stay queued, in order.
    pub(super) fn retry_history_writes(&self) {
        let mut waiting = Vec::new();
        let mut rounds = self.history.retry.len().div_ceil(RETRY_BATCH);
        while rounds > 0 && !self.history.retry.is_empty() {
            rounds -= 1;
            let writes = self.history.retry.take(RETRY_BATCH);
            let mut refused = Vec::new();
            for write in writes {
                if !self.history_available(write.group) {
                    waiting.push(write);
                    continue;
                }
                self.metrics.history_writes_retried.inc();
                if let Err(write) = self.outbox.send_history(write) {
                    refused.push(write);
                }
            }
            if !refused.is_empty() {
                // The outbox is full: keep them (in front would reorder
                // nothing that matters; they are the oldest) for the next beat.
                waiting.extend(refused);
                break;
            }
        }
        // Back behind anything queued meanwhile (older than those writes
        // only for other groups: each group keeps its order).
        let dropped = self.history.retry.push(waiting);
        self.metrics.history_writes_dropped.inc_by(dropped);
    }

    /// An event of a shared history from the bus: mirrored and, when live,
    /// delivered to this node's subscribers; archived when this node
    /// published it (`own`) and the app keeps history long.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_history_event(
        &self,
        own: bool,
        app_id: &str,
        channel: &str,
        except: &str,
        live: bool,
        serial: u64,
        frame: &str,
    ) {
        let except = (!except.is_empty()).then_some(except);
        let frame = ByteString::from(frame);
        if let (true, Some(persistence)) = (own, self.history.archive.get()) {
            persistence.record_history(app_id, channel, serial, &frame, except);
        }
        let report = self
            .node
            .deliver_serial(app_id, channel, serial, &frame, except, live);
        report.record(&self.metrics);
    }

    /// This node's marker came back from the bus.
    pub(super) fn on_marker(&self, token: u64) {
        if let Some(waiting) = self.history.markers().remove(&token) {
            let _ = waiting.send(());
        }
    }

    /// Runs the read script; `None` when Redis did not answer.
    async fn read_history(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
        marker: &str,
    ) -> Option<Vec<Value>> {
        let mut invocation = self.history.read.prepare_invoke();
        invocation
            .key(self.keys.history_serial(&app.id, channel))
            .key(self.keys.history(&app.id, channel))
            .arg(since)
            .arg(limit)
            .arg(app.history_ttl.saturating_mul(1000))
            .arg(app.history_size)
            .arg(self.keys.channel_bus(&app.id, channel))
            .arg(marker)
            .arg(self.publish_command);
        let group = self.keys.group(&app.id, channel);
        self.run_in(Scope::Group(group), |mut connection| async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }
}

#[async_trait]
impl SharedHistory for RedisAdapter {
    fn publish(&self, app: &App, event: Publication<'_>) {
        let (head, _) = frames::history_event_parts(
            event.message_id,
            event.event,
            event.channel,
            event.data,
            event.user_id,
        );
        let write = HistoryWrite {
            group: self.keys.group(&app.id, event.channel),
            app_id: app.id.clone(),
            channel: event.channel.to_owned(),
            except: event.except.unwrap_or_default().to_owned(),
            head,
            live: true,
            size: app.history_size,
            ttl_ms: app.history_ttl.saturating_mul(1000),
            retention_secs: u32::try_from(app.history_retention).unwrap_or(u32::MAX),
        };
        if !self.history_available(write.group) {
            self.history_unsent(vec![write]);
            return;
        }
        if let Err(write) = self.outbox.send_history(write) {
            self.history_unsent(vec![write]);
        }
    }

    fn available(&self, app: &App, channel: &str) -> bool {
        self.history_available(self.keys.group(&app.id, channel))
    }

    async fn fetch(&self, app: &App, channel: &str, since: u64) -> Result<Fetched, Unavailable> {
        if !self.available(app, channel) {
            return Err(Unavailable);
        }
        let token = self.history.next_token.fetch_add(1, Ordering::Relaxed);
        let (done, back) = oneshot::channel();
        self.history.markers().insert(token, done);
        let marker = BusMessage::Marker {
            node: &self.node_id,
            token,
        }
        .encode();
        let read = self
            .read_history(app, channel, since, app.history_size, &marker)
            .await;
        let came_back = match read {
            Some(_) => matches!(tokio::time::timeout(self.timeout(), back).await, Ok(Ok(()))),
            None => false,
        };
        self.history.markers().remove(&token);
        let (Some(values), true) = (read, came_back) else {
            return Err(Unavailable);
        };
        let (latest, oldest, entries) = parse_read(values);
        Ok(Fetched {
            latest,
            oldest,
            events: entries
                .into_iter()
                .map(|e| (e.serial, ByteString::from(e.frame)))
                .collect(),
        })
    }

    async fn page(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<Page, Unavailable> {
        if !self.available(app, channel) {
            return Err(Unavailable);
        }
        let values = self
            .read_history(app, channel, since, limit.saturating_add(1), "")
            .await
            .ok_or(Unavailable)?;
        let (latest, oldest, entries) = parse_read(values);
        let more = entries.len() > limit;
        let events: Vec<PageEvent> = entries
            .into_iter()
            .take(limit)
            .filter_map(|entry| {
                let parts: FrameParts = serde_json::from_str(&entry.frame).ok()?;
                Some(PageEvent {
                    serial: entry.serial,
                    event: parts.event,
                    data: parts.data,
                    time_ms: entry.time_ms,
                    socket_id: (!entry.except.is_empty()).then_some(entry.except),
                })
            })
            .collect();
        Ok(Page {
            next: if more {
                events.last().map(|e| e.serial)
            } else {
                None
            },
            events,
            oldest,
            latest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_reply_parses_into_latest_oldest_and_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let (latest, oldest, entries) = parse_read(vec![
            Value::Int(9),
            Value::Int(8),
            Value::Int(8),
            bulk("{\"event\":\"e\"}"),
            bulk("1700000000000"),
            bulk(""),
            Value::Int(9),
            bulk("f9"),
            bulk("1700000000001"),
            bulk("1.2"),
        ]);
        assert_eq!((latest, oldest), (Some(9), Some(8)));
        let serials: Vec<u64> = entries.iter().map(|e| e.serial).collect();
        assert_eq!(serials, vec![8, 9]);
        assert_eq!(
            (entries[1].time_ms, entries[1].except.as_str()),
            (1_700_000_000_001, "1.2")
        );
        let (latest, oldest, entries) = parse_read(vec![Value::Int(0), Value::Int(-1)]);
        assert_eq!((latest, oldest, entries.len()), (None, None, 0));
    }
}
