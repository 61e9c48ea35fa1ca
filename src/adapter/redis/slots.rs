//! Batches a Redis Cluster accepts: one pipeline per hash slot.
//!
//! A cluster refuses a pipeline whose keys hash to several slots (the
//! client routes a pipeline by its first key and answers `CROSSSLOT`), so a
//! batch over many users' or sessions' keys (sign-ins, HTTP session owners)
//! is split by slot, the pipelines sent at once, and the answers put back in
//! the order the commands were added. On one redis-server the batch stays a
//! single pipeline, as before.
//!
//! Slots follow the Redis Cluster specification ("Keys distribution model"):
//! CRC16 (XMODEM) of the key's hash tag, the part between the first `{` and
//! the next `}` when not empty, else of the whole key, modulo 16384.

use super::connection::Connection;
use futures_util::future::join_all;
use redis::{FromRedisValue, Pipeline, RedisResult};
use std::collections::BTreeMap;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key` (see the module doc).
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// Commands grouped into one pipeline per slot (one in all off a cluster),
/// each command answering one value.
pub struct SlotBatch {
    clustered: bool,
    /// Commands every pipeline starts with, their answers ignored (e.g. the
    /// `SCRIPT LOAD` of the script the batch calls: it must reach the node
    /// that runs the calls).
    start: fn(&mut Pipeline),
    /// Per slot: the pipeline and, in order, the positions of its answers.
    pipelines: BTreeMap<u16, (Pipeline, Vec<usize>)>,
    added: usize,
}

impl SlotBatch {
    /// An empty batch; `clustered`: whether the connection is a Redis Cluster.
    pub fn new(clustered: bool, start: fn(&mut Pipeline)) -> Self {
        SlotBatch {
            clustered,
            start,
            pipelines: BTreeMap::new(),
            added: 0,
        }
    }

    /// Adds a command routed by `key`: `build` adds exactly one command
    /// whose answer is kept (it may add others with `.ignore()`, on keys of
    /// the same slot).
    pub fn add(&mut self, key: &[u8], build: impl FnOnce(&mut Pipeline)) {
        let slot = if self.clustered { slot(key) } else { 0 };
        let start = self.start;
        let (pipe, positions) = self.pipelines.entry(slot).or_insert_with(|| {
            let mut pipe = redis::pipe();
            start(&mut pipe);
            (pipe, Vec::new())
        });
        build(pipe);
        positions.push(self.added);
        self.added += 1;
    }

    /// Commands added so far.
    pub fn len(&self) -> usize {
        self.added
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.added == 0
    }

    /// Sends every pipeline at once; the answers in the order the commands
    /// were added. Errors: the first pipeline that failed (the others may
    /// have run).
    pub async fn query<T: FromRedisValue>(self, connection: &Connection) -> RedisResult<Vec<T>> {
        let added = self.added;
        let sent = self.pipelines.into_values().map(|(pipe, positions)| {
            let mut connection = connection.clone();
            async move {
                let answers: Vec<T> = pipe.query_async(&mut connection).await?;
                Ok::<_, redis::RedisError>((positions, answers))
            }
        });
        let mut ordered: Vec<Option<T>> = (0..added).map(|_| None).collect();
        for result in join_all(sent).await {
            let (positions, answers) = result?;
            for (position, answer) in positions.into_iter().zip(answers) {
                if let Some(slot) = ordered.get_mut(position) {
                    *slot = Some(answer);
                }
            }
        }
        ordered
            .into_iter()
            .map(|answer| {
                answer.ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a pipeline answered fewer values than commands",
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(
            slot(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % SLOTS
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn one_pipeline_per_slot_on_a_cluster_one_in_all_otherwise() {
        let start: fn(&mut Pipeline) = |pipe| {
            pipe.cmd("SCRIPT").arg("LOAD").arg("return 1").ignore();
        };
        let keys: [&[u8]; 4] = [b"{a}x", b"{b}x", b"{a}y", b"{c}x"];
        let mut clustered = SlotBatch::new(true, start);
        let mut single = SlotBatch::new(false, start);
        for key in keys {
            clustered.add(key, |pipe| {
                pipe.get(key);
            });
            single.add(key, |pipe| {
                pipe.get(key);
            });
        }
        assert_eq!(clustered.len(), 4);
        assert_eq!(clustered.pipelines.len(), 3, "{{a}} twice, {{b}}, {{c}}");
        assert_eq!(clustered.pipelines[&slot(b"a")].1, vec![0, 2]);
        assert_eq!(single.pipelines.len(), 1);
        assert_eq!(single.pipelines[&0].1, vec![0, 1, 2, 3]);
    }
}
