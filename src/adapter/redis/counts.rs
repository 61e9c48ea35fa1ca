//! Subscription counts across the cluster.
//!
//! At its tick ([`crate::hub::counts`]) a node asks for the channels whose
//! count changed on it. For each, one script ([`super::scripts::announce_count`])
//! reads the cluster-wide count and publishes the frame on the bus in the
//! same atomic step, addressed to every node (the sender too), so the
//! frames every node delivers are in the order of the counts they carry and
//! the last one is the last count. The script also keeps the last count
//! sent and when: at most one frame per channel per interval for the whole
//! cluster, and none for an unchanged count. No bus message per join: a
//! node only speaks for channels that changed on it, once per interval.

use super::bus::BusMessage;
use super::scripts::ANNOUNCE_COUNT;
use super::{failure, now_ms, RedisAdapter};
use crate::adapter::local::announce_count_locally;
use crate::adapter::CountSent;
use crate::protocol::frames;
use redis::Value;
use std::time::Duration;

/// Channels announced per round trip at most.
const CHUNK: usize = 500;

/// How long a channel's last-sent state outlives its last frame: long
/// enough to dedupe, short enough that an abandoned one goes.
const STATE_TTL: Duration = Duration::from_secs(3600);

impl RedisAdapter {
    /// See [`crate::adapter::Adapter::announce_counts`]; a chunk Redis
    /// cannot answer is sent from this node's counts to its own subscribers.
    pub(super) async fn announce(
        &self,
        app_id: &str,
        channels: &[(String, bool)],
        gap: Duration,
    ) -> Vec<CountSent> {
        let mut answers = Vec::with_capacity(channels.len());
        for chunk in channels.chunks(CHUNK) {
            let pipe = self.announce_pipeline(app_id, chunk, gap);
            let sent = self
                .run(|mut connection| async move {
                    failure::query_pipeline::<Vec<Value>>(&pipe, &mut connection).await
                })
                .await;
            match sent {
                // The first answer is SCRIPT LOAD's.
                Some(values) if values.len() == chunk.len() + 1 => {
                    answers.extend(values[1..].iter().map(|value| match value {
                        Value::Int(-1) => CountSent::Later,
                        Value::Int(n) if *n > 0 => CountSent::Sent,
                        _ => CountSent::Done,
                    }))
                }
                _ => answers.extend(
                    chunk
                        .iter()
                        .map(|(channel, _)| announce_count_locally(&self.node, app_id, channel)),
                ),
            }
        }
        answers
    }

    /// `SCRIPT LOAD` then one `EVALSHA` per channel: one round trip, and
    /// the script is known to Redis before its calls even after a restart.
    fn announce_pipeline(
        &self,
        app_id: &str,
        chunk: &[(String, bool)],
        gap: Duration,
    ) -> redis::Pipeline {
        let sha = redis::Script::new(ANNOUNCE_COUNT).get_hash().to_owned();
        let (now, bus) = (now_ms(), self.keys.bus());
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(ANNOUNCE_COUNT);
        for (channel, force) in chunk {
            let (frame_head, tail) = frames::subscription_count_parts(channel);
            // Addressed from no node: every node delivers it, this one too.
            let head = format!(
                "{}{frame_head}",
                BusMessage::publish_head("", app_id, channel, "")
            );
            pipe.cmd("EVALSHA")
                .arg(&sha)
                .arg(2)
                .arg(self.keys.subs(app_id, channel))
                .arg(self.keys.count(app_id, channel))
                .arg(now)
                .arg(gap.as_millis() as u64)
                .arg(u8::from(*force))
                .arg(&bus)
                .arg(head)
                .arg(tail)
                .arg(STATE_TTL.max(gap * 2).as_millis() as u64);
        }
        pipe
    }
}
