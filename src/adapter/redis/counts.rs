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
use super::health::Scope;
use super::scripts::ANNOUNCE_COUNT;
use super::{failure, now_ms, RedisAdapter};
use crate::adapter::local::announce_count_locally;
use crate::adapter::CountSent;
use crate::protocol::frames;
use futures_util::future::join_all;
use redis::Value;
use std::collections::BTreeMap;
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
        // One pipeline per shard group (a pipeline stays in one slot on a
        // Redis Cluster), all at once; answers go back in the callers' order.
        let mut answers = vec![CountSent::Done; channels.len()];
        let mut by_group: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (at, (channel, _)) in channels.iter().enumerate() {
            by_group
                .entry(self.keys.group(app_id, channel))
                .or_default()
                .push(at);
        }
        let mut chunks = Vec::new();
        for (group, ats) in &by_group {
            for chunk in ats.chunks(CHUNK) {
                chunks.push((*group, chunk));
            }
        }
        let sends = chunks.iter().map(|(group, ats)| async move {
            let pipe = self.announce_pipeline(app_id, *group, channels, ats, gap);
            let sent = self
                .run_in(Scope::Group(*group), |mut connection| async move {
                    failure::query_pipeline::<Vec<Value>>(&pipe, &mut connection).await
                })
                .await;
            (ats, sent)
        });
        for (ats, sent) in join_all(sends).await {
            match sent {
                // The first answer is SCRIPT LOAD's.
                Some(values) if values.len() == ats.len() + 1 => {
                    for (at, value) in ats.iter().zip(&values[1..]) {
                        answers[*at] = match value {
                            Value::Int(-1) => CountSent::Later,
                            Value::Int(n) if *n > 0 => CountSent::Sent,
                            _ => CountSent::Done,
                        };
                    }
                }
                _ => {
                    for at in ats.iter() {
                        answers[*at] = announce_count_locally(&self.node, app_id, &channels[*at].0);
                    }
                }
            }
        }
        answers
    }

    /// `SCRIPT LOAD` then one `EVALSHA` per channel of one group: one round
    /// trip, and the script is known to Redis (the group's shard) before
    /// its calls even after a restart.
    fn announce_pipeline(
        &self,
        app_id: &str,
        group: u16,
        channels: &[(String, bool)],
        ats: &[usize],
        gap: Duration,
    ) -> redis::Pipeline {
        let sha = redis::Script::new(ANNOUNCE_COUNT).get_hash().to_owned();
        let (now, bus) = (now_ms(), self.keys.bus(group));
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(ANNOUNCE_COUNT);
        for (channel, force) in ats.iter().map(|at| &channels[*at]) {
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
                .arg(bus)
                .arg(head)
                .arg(tail)
                .arg(STATE_TTL.max(gap * 2).as_millis() as u64)
                .arg(self.publish_command);
        }
        pipe
    }
}
