//! The bus outbox: this node's messages to the other nodes, sent in the
//! order they were queued by one task per bucket (a Redis Cluster's shard
//! group, or one for a single redis-server) that pipelines whatever queued up.
//!
//! Why: awaiting a PUBLISH round trip inside every publish made the HTTP API
//! wait on Redis (and on the Redis connection's task, which shares a thread
//! with the bus listener): under load a trigger took 45 ms at the median
//! instead of 7. Queued, a publish costs its caller a channel send, and the
//! task sends everything queued during its last round trip as one pipeline.
//!
//! Nothing waits on Redis here, so nothing can be held up by it: when Redis
//! (a bucket's shard) is down a batch fails after the operation timeout and
//! is dropped, with everything queued meanwhile in that bucket (the other
//! nodes miss those messages, as they would have before, instead of getting
//! them late); when a bucket's queue is full, new messages are dropped. Both
//! are counted. The other buckets' tasks go on meanwhile: a stopped shard
//! does not delay the other groups' messages.
//!
//! What the pipeline publishes is packed: the messages queued meanwhile
//! travel several to a Redis message ([`BusBatch`]), one batch per bus
//! channel at a time, in queue order. Only what is already queued is packed,
//! so a lone message leaves at once, as is; under load, one PUBLISH (one
//! message for Redis to fan out, one wake-up per receiving node) carries up
//! to [`super::bus::MAX_BATCH_MESSAGES`].
//!
//! History writes ([`HistoryWrite`]) ride in the same queue and pipeline, in
//! order with the messages: each is one script that stores the event and
//! publishes it on the bus. They are never dropped silently: one that fails
//! is handed back to the history side ([`RedisAdapter::history_unsent`]),
//! which delivers it on this node and queues it for a retry.

use super::bus::BusBatch;
use super::health::Scope;
use super::history::HistoryWrite;
use super::RedisAdapter;
use futures_util::future::join_all;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Messages waiting for the tasks before new ones are dropped (shared out
/// over the buckets, at least [`MIN_BUCKET_CAPACITY`] each).
const CAPACITY: usize = 65_536;

/// Smallest queue of one bucket.
const MIN_BUCKET_CAPACITY: usize = 4_096;

/// Most messages sent in one pipeline.
const MAX_BATCH: usize = 512;

enum Outgoing {
    /// An encoded message for a shard group's bus channel.
    Message(u16, String),
    History(HistoryWrite),
    /// Answered once everything queued before it was sent (or dropped).
    Flush(oneshot::Sender<()>),
}

/// The queues of messages for the bus: one per bucket (a Redis Cluster's
/// shard group, or one for a single redis-server), each drained by its own
/// task, so a bucket whose shard is slow or stopped holds up only its own
/// messages.
pub struct Outbox {
    queues: Vec<mpsc::Sender<Outgoing>>,
}

/// The tasks' ends of the queues, given to [`run`].
pub struct OutboxReceiver(Vec<mpsc::Receiver<Outgoing>>);

impl Outbox {
    /// An outbox of `buckets` queues (at least 1: a Redis Cluster's shard
    /// groups, or 1 for one redis-server) and the receivers [`run`] drains.
    pub fn new(buckets: u16) -> (Outbox, OutboxReceiver) {
        let buckets = usize::from(buckets.max(1));
        let capacity = (CAPACITY / buckets).max(MIN_BUCKET_CAPACITY);
        let (queues, pending) = (0..buckets).map(|_| mpsc::channel(capacity)).unzip();
        (Outbox { queues }, OutboxReceiver(pending))
    }

    /// The queue of a shard group.
    fn queue(&self, group: u16) -> &mpsc::Sender<Outgoing> {
        &self.queues[usize::from(group).min(self.queues.len() - 1)]
    }

    /// Queues an encoded bus message for a shard group's bus channel;
    /// `false` when it had to be dropped.
    pub fn send(&self, group: u16, message: String) -> bool {
        self.queue(group)
            .try_send(Outgoing::Message(group, message))
            .is_ok()
    }

    /// Queues a history write; gives it back when the queue is full.
    pub fn send_history(&self, write: HistoryWrite) -> Result<(), HistoryWrite> {
        self.queue(write.group)
            .try_send(Outgoing::History(write))
            .map_err(|error| match error.into_inner() {
                Outgoing::History(write) => write,
                _ => unreachable!("the item sent is the item refused"),
            })
    }

    /// Waits until every message queued so far has been sent or dropped.
    pub async fn flush(&self) {
        let flushed = self.queues.iter().map(|queue| async move {
            let (done, sent) = oneshot::channel();
            if queue.send(Outgoing::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        });
        join_all(flushed).await;
    }
}

/// Starts one task per bucket sending its queued messages, in order, for
/// as long as the adapter lives.
///
/// On a Redis Cluster a bucket is one shard group (a pipeline stays in one
/// slot): a group's messages keep their order, and a group whose shard is
/// down waits (and drops) alone while the others' pipelines go on.
pub async fn run(adapter: Arc<RedisAdapter>, OutboxReceiver(pending): OutboxReceiver) {
    let buckets = pending.len();
    let tasks = pending.into_iter().enumerate().map(|(bucket, pending)| {
        // One redis-server: one bucket for every group, its health the
        // whole server's (see `health`).
        let scope = match buckets {
            1 => Scope::Node,
            _ => Scope::Group(bucket as u16),
        };
        tokio::spawn(run_bucket(adapter.clone(), scope, pending))
    });
    join_all(tasks).await;
}

/// Sends one bucket's queued messages: each time, what queued up during the
/// last round trip as one pipeline (see [`Bucket`]).
async fn run_bucket(
    adapter: Arc<RedisAdapter>,
    scope: Scope,
    mut pending: mpsc::Receiver<Outgoing>,
) {
    let mut batch: Vec<Outgoing> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = pending.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Flush(done) => flushes.push(done),
                item => batch.push(item),
            }
            if batch.len() < MAX_BATCH {
                next = pending.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // The pipeline, whether the history script is loaded in it, its
            // packer, and its items. Messages go out packed several to a
            // PUBLISH, per channel, in order; a history write (its script
            // publishes too) sends what was packed before it first, so the
            // bus keeps the queue's order.
            let Bucket {
                mut pipeline,
                mut loaded,
                mut packer,
                mut items,
            } = Bucket::new(adapter.publish_command);
            for item in batch.drain(..) {
                match item {
                    Outgoing::Message(group, message) => {
                        packer.push(&mut pipeline, adapter.keys.bus(group), message);
                        // Kept to count it if the pipeline fails; the text
                        // is in the pipeline now.
                        items.push(Outgoing::Message(group, String::new()));
                    }
                    Outgoing::History(write) => {
                        if !loaded {
                            // Redis forgets scripts when it restarts: load
                            // it (a no-op when it is known) once per batch
                            // rather than per event.
                            adapter.history_script_load(&mut pipeline);
                            loaded = true;
                        }
                        packer.send_all(&mut pipeline);
                        adapter.history_script_call(&mut pipeline, &write);
                        items.push(Outgoing::History(write));
                    }
                    Outgoing::Flush(done) => flushes.push(done),
                }
            }
            packer.send_all(&mut pipeline);
            let sent = adapter
                .run_in(scope, |mut connection| async move {
                    super::failure::query_pipeline::<()>(&pipeline, &mut connection).await
                })
                .await;
            if sent.is_none() {
                // Redis (this bucket's shard) is down: what queued up here
                // while this batch waited for its timeout would only reach
                // the other nodes late, in a flood once it is back. Drop it
                // with the batch (history writes go back to the history
                // side, which retries them).
                while let Ok(item) = pending.try_recv() {
                    match item {
                        Outgoing::Flush(done) => flushes.push(done),
                        item => items.push(item),
                    }
                }
                let mut dropped = 0;
                let mut unsent = Vec::new();
                for item in items {
                    match item {
                        Outgoing::Message(..) => dropped += 1,
                        Outgoing::History(write) => unsent.push(write),
                        Outgoing::Flush(_) => {}
                    }
                }
                if dropped > 0 {
                    adapter.metrics.redis_bus_dropped.inc_by(dropped);
                }
                adapter.history_unsent(unsent);
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One batch's pipeline (one bucket's).
struct Bucket {
    pipeline: redis::Pipeline,
    /// Whether the history script is loaded in the pipeline already.
    loaded: bool,
    packer: Packer,
    items: Vec<Outgoing>,
}

impl Bucket {
    fn new(command: &'static str) -> Self {
        Bucket {
            pipeline: redis::pipe(),
            loaded: false,
            packer: Packer::new(command),
            items: Vec::new(),
        }
    }
}

/// Packs messages into one [`BusBatch`] per bus channel, adding a PUBLISH to
/// the pipeline whenever a batch is full, and for every batch left on
/// [`Packer::send_all`]. Within a channel, messages keep their order.
struct Packer {
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    command: &'static str,
    /// Channel and its open batch, in the order the channels came.
    open: Vec<(String, BusBatch)>,
}

impl Packer {
    /// An empty packer publishing with `command`.
    fn new(command: &'static str) -> Self {
        Packer {
            command,
            open: Vec::new(),
        }
    }

    /// Adds `message` for `channel`.
    fn push(&mut self, pipeline: &mut redis::Pipeline, channel: &str, message: String) {
        let index = match self.open.iter().position(|(open, _)| open == channel) {
            Some(index) => index,
            None => {
                self.open.push((channel.to_owned(), BusBatch::new()));
                self.open.len() - 1
            }
        };
        let (channel, batch) = &mut self.open[index];
        if let Err(message) = batch.push(message) {
            if let Some(full) = batch.take() {
                pipeline
                    .cmd(self.command)
                    .arg(channel.as_str())
                    .arg(full)
                    .ignore();
            }
            // An empty batch takes any message.
            let _ = batch.push(message);
        }
    }

    /// Publishes every open batch, in the order their channels came.
    fn send_all(&mut self, pipeline: &mut redis::Pipeline) {
        for (channel, mut batch) in self.open.drain(..) {
            if let Some(wire) = batch.take() {
                pipeline.cmd(self.command).arg(channel).arg(wire).ignore();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::bus::{batch_members, MAX_BATCH_MESSAGES};
    use super::*;

    /// The (channel, payload) PUBLISH commands of a pipeline, in order.
    fn published(pipeline: &redis::Pipeline) -> Vec<(String, String)> {
        pipeline
            .cmd_iter()
            .map(|cmd| {
                let args: Vec<String> = cmd
                    .args_iter()
                    .map(|arg| match arg {
                        redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                        _ => String::new(),
                    })
                    .collect();
                assert_eq!(args[0], "PUBLISH");
                (args[1].clone(), args[2].clone())
            })
            .collect()
    }

    #[test]
    fn messages_are_packed_per_channel_in_order() {
        let mut pipeline = redis::pipe();
        let mut packer = Packer::new("PUBLISH");
        packer.push(&mut pipeline, "bus", "m1".to_owned());
        packer.push(&mut pipeline, "other", "o1".to_owned());
        packer.push(&mut pipeline, "bus", "m2".to_owned());
        packer.send_all(&mut pipeline);
        packer.push(&mut pipeline, "bus", "m3".to_owned());
        packer.send_all(&mut pipeline);
        let sent = published(&pipeline);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].0, "bus");
        assert_eq!(batch_members(&sent[0].1), Some(vec!["m1", "m2"]));
        assert_eq!(sent[1], ("other".to_owned(), "o1".to_owned()));
        assert_eq!(sent[2], ("bus".to_owned(), "m3".to_owned()));
    }

    #[test]
    fn a_full_batch_is_sent_and_the_next_one_started() {
        let mut pipeline = redis::pipe();
        let mut packer = Packer::new("PUBLISH");
        for n in 0..=MAX_BATCH_MESSAGES {
            packer.push(&mut pipeline, "bus", format!("m{n}"));
        }
        packer.send_all(&mut pipeline);
        let sent = published(&pipeline);
        assert_eq!(sent.len(), 2);
        let first = batch_members(&sent[0].1).unwrap_or_default();
        assert_eq!(first.len(), MAX_BATCH_MESSAGES);
        assert_eq!(first[0], "m0");
        assert_eq!(sent[1].1, format!("m{MAX_BATCH_MESSAGES}"));
    }
}
