//! The bus outbox: this node's messages to the other nodes, sent in the
//! order they were queued by one task that pipelines whatever queued up.
//!
//! Why: awaiting a PUBLISH round trip inside every publish made the HTTP API
//! wait on Redis (and on the Redis connection's task, which shares a thread
//! with the bus listener): under load a trigger took 45 ms at the median
//! instead of 7. Queued, a publish costs its caller a channel send, and the
//! task sends everything queued during its last round trip as one pipeline.
//!
//! Nothing waits on Redis here, so nothing can be held up by it: when Redis
//! is down a batch fails after the operation timeout and is dropped, with
//! everything queued meanwhile (the other nodes miss those messages, as they
//! would have before, instead of getting them late); when the queue is full,
//! new messages are dropped. Both are counted.
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
use super::history::HistoryWrite;
use super::RedisAdapter;
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Messages waiting for the task before new ones are dropped.
const CAPACITY: usize = 65_536;

/// Most messages sent in one pipeline.
const MAX_BATCH: usize = 512;

enum Outgoing {
    /// An encoded message for a shard group's bus channel.
    Message(u16, String),
    History(HistoryWrite),
    /// Answered once everything queued before it was sent (or dropped).
    Flush(oneshot::Sender<()>),
}

/// The queue of messages for the bus.
pub struct Outbox {
    queue: mpsc::Sender<Outgoing>,
}

/// The task's end of the queue, given to [`run`].
pub struct OutboxReceiver(mpsc::Receiver<Outgoing>);

impl Outbox {
    /// An outbox and the receiver its task ([`run`]) drains.
    pub fn new() -> (Outbox, OutboxReceiver) {
        let (queue, pending) = mpsc::channel(CAPACITY);
        (Outbox { queue }, OutboxReceiver(pending))
    }

    /// Queues an encoded bus message for a shard group's bus channel;
    /// `false` when it had to be dropped.
    pub fn send(&self, group: u16, message: String) -> bool {
        self.queue
            .try_send(Outgoing::Message(group, message))
            .is_ok()
    }

    /// Queues a history write; gives it back when the queue is full.
    pub fn send_history(&self, write: HistoryWrite) -> Result<(), HistoryWrite> {
        self.queue
            .try_send(Outgoing::History(write))
            .map_err(|error| match error.into_inner() {
                Outgoing::History(write) => write,
                _ => unreachable!("the item sent is the item refused"),
            })
    }

    /// Waits until every message queued so far has been sent or dropped.
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.queue.send(Outgoing::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }
}

/// Sends the queued messages, in order, for as long as the adapter lives.
///
/// On a Redis Cluster a batch is one pipeline per shard group (a pipeline
/// stays in one slot), sent at once: a group's messages keep their order,
/// and a group whose shard is down drops only its own messages.
pub async fn run(adapter: Arc<RedisAdapter>, OutboxReceiver(mut pending): OutboxReceiver) {
    let cluster = adapter.client.is_cluster();
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
            // bucket → its pipeline, whether the history script is loaded
            // in it, its packer, and its items. Messages go out packed
            // several to a PUBLISH, per channel, in order; a history write
            // (its script publishes too) sends what was packed before it
            // first, so the bus keeps the queue's order.
            let mut pipelines: BTreeMap<u16, Bucket> = BTreeMap::new();
            for item in batch.drain(..) {
                let group = match &item {
                    Outgoing::Message(group, _) => *group,
                    Outgoing::History(write) => write.group,
                    Outgoing::Flush(_) => continue,
                };
                let bucket = if cluster { group } else { 0 };
                let Bucket {
                    pipeline,
                    loaded,
                    packer,
                    items,
                } = pipelines
                    .entry(bucket)
                    .or_insert_with(|| Bucket::new(adapter.publish_command));
                match item {
                    Outgoing::Message(group, message) => {
                        packer.push(pipeline, adapter.keys.bus(group), message);
                        // Kept to count it if the pipeline fails; the text
                        // is in the pipeline now.
                        items.push(Outgoing::Message(group, String::new()));
                    }
                    Outgoing::History(write) => {
                        if !*loaded {
                            // Redis forgets scripts when it restarts: load
                            // it (a no-op when it is known) once per batch
                            // and shard rather than per event.
                            adapter.history_script_load(pipeline);
                            *loaded = true;
                        }
                        packer.send_all(pipeline);
                        adapter.history_script_call(pipeline, &write);
                        items.push(Outgoing::History(write));
                    }
                    Outgoing::Flush(_) => {}
                }
            }
            let sends = pipelines.into_values().map(|mut bucket| {
                let adapter = &adapter;
                bucket.packer.send_all(&mut bucket.pipeline);
                let Bucket {
                    pipeline, items, ..
                } = bucket;
                async move {
                    let sent = adapter
                        .run(|mut connection| async move {
                            super::failure::query_pipeline::<()>(&pipeline, &mut connection).await
                        })
                        .await;
                    (sent.is_some(), items)
                }
            });
            let results = join_all(sends).await;
            let all_failed = results.iter().all(|(sent, _)| !sent);
            let mut failed: Vec<Outgoing> = results
                .into_iter()
                .filter(|(sent, _)| !sent)
                .flat_map(|(_, items)| items)
                .collect();
            if all_failed && !failed.is_empty() {
                // Redis is down: what queued up while this batch waited for
                // its timeout would only reach the other nodes late, in a
                // flood once Redis is back. Drop it with the batch (history
                // writes go back to the history side, which retries them).
                while let Ok(item) = pending.try_recv() {
                    match item {
                        Outgoing::Flush(done) => flushes.push(done),
                        item => failed.push(item),
                    }
                }
            }
            let mut dropped = 0;
            let mut unsent = Vec::new();
            for item in failed {
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
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One pipeline of a batch (one per shard group on a Redis Cluster).
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
