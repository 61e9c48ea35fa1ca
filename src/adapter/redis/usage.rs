//! The usage report task (see [`crate::usage`]): every
//! `redis.usage_interval_ms` it forgets the nodes that stopped reporting,
//! takes this node's report and, when [`Reporter`] says so, queues it on
//! the bus through the outbox (never waiting on Redis).

use super::bus::BusMessage;
use super::RedisAdapter;
use crate::usage::{ClusterUsage, Reporter};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reports this node's usage for as long as the adapter lives.
pub async fn report(adapter: Arc<RedisAdapter>, usage: Arc<ClusterUsage>) {
    let settings = &adapter.settings;
    let mut tick = tokio::time::interval(Duration::from_millis(settings.usage_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Refreshed once per heartbeat, which is shorter than the node timeout
    // after which the others forget this node's connections.
    let mut reporter = Reporter::new(Duration::from_secs(settings.heartbeat_secs));
    loop {
        tick.tick().await;
        let now = Instant::now();
        usage.expire(now);
        let report = usage.take_report(&adapter.node);
        if reporter.due(&report, now) {
            adapter.tell_other_nodes(
                adapter.keys.node_group(&adapter.node_id),
                &BusMessage::Usage {
                    node: &adapter.node_id,
                    report: &report.encode(),
                },
            );
            adapter.metrics.usage_reports_sent.inc();
        }
    }
}
