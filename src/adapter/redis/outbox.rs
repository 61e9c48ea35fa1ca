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
//! History writes ([`HistoryWrite`]) ride in the same queue and pipeline, in
//! order with the messages: each is one script that stores the event and
//! publishes it on the bus. They are never dropped silently: one that fails
//! is handed back to the history side ([`RedisAdapter::history_unsent`]),
//! which delivers it on this node and queues it for a retry.

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
            // bucket → (pipeline, whose history script is loaded, items).
            let mut pipelines: BTreeMap<u16, (redis::Pipeline, bool, Vec<Outgoing>)> =
                BTreeMap::new();
            for item in batch.drain(..) {
                let group = match &item {
                    Outgoing::Message(group, _) => *group,
                    Outgoing::History(write) => write.group,
                    Outgoing::Flush(_) => continue,
                };
                let bucket = if cluster { group } else { 0 };
                let (pipeline, loaded, items) = pipelines
                    .entry(bucket)
                    .or_insert_with(|| (redis::pipe(), false, Vec::new()));
                match &item {
                    Outgoing::Message(group, message) => {
                        pipeline
                            .cmd(adapter.publish_command)
                            .arg(adapter.keys.bus(*group))
                            .arg(message)
                            .ignore();
                    }
                    Outgoing::History(write) => {
                        if !*loaded {
                            // Redis forgets scripts when it restarts: load
                            // it (a no-op when it is known) once per batch
                            // and shard rather than per event.
                            adapter.history_script_load(pipeline);
                            *loaded = true;
                        }
                        adapter.history_script_call(pipeline, write);
                    }
                    Outgoing::Flush(_) => {}
                }
                items.push(item);
            }
            let sends = pipelines.into_values().map(|(pipeline, _, items)| {
                let adapter = &adapter;
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
