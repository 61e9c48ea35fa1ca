//! Signed-in users across the cluster, for watchlists.
//!
//! Per user, a HASH `signins:{app:user}` (node → 1) holds the nodes where
//! the user has a signed-in socket. One script per user ([`SIGNIN`]) sets
//! or clears one node's field and says whether the user went from no node
//! to one (`online`) or from one to none (`offline`): decided once for the
//! cluster, like presence member_added/removed. The deciding node tells its
//! own watchers and every other node ([`BusMessage::Watchlist`]), and each
//! node tells its own watchers of the user.
//!
//! Each node also keeps the SET of users it signed in (`node_signins`), so
//! whoever reaps a dead node clears that node's field user by user (one
//! single-slot script call each, pipelined) and announces the `offline`s.
//!
//! Changes wait in a bounded queue for one task that writes them in order,
//! many per round trip, each time writing what this node holds *now*: a
//! late write cannot undo a newer one. A full queue or a Redis failure: this
//! node's watchers are told from this node's view (as with one node) and the
//! whole state is written again once Redis answers ([`RedisAdapter::resync`]).

use super::bus::BusMessage;
use super::keys::SEP;
use super::slots::SlotBatch;
use super::RedisAdapter;
use crate::adapter::local::announce_watchlist_locally;
use redis::AsyncCommands;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Sign-in changes waiting to be written, at most.
pub const QUEUE: usize = 10_000;

/// Users written per round trip at most.
const CHUNK: usize = 500;

/// Sets (ARGV[2] = 1) or clears (0) the node ARGV[1] in a user's sign-ins.
///
/// KEYS: the user's `signins` hash. Returns 1 when the user went from no
/// node to one (online), -1 from one to none (offline), else 0.
///
/// Loaded in the same pipeline as its calls.
pub const SIGNIN: &str = r#"
local before = redis.call('HLEN', KEYS[1])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], 1)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local after = redis.call('HLEN', KEYS[1])
if before == 0 and after > 0 then return 1 end
if before > 0 and after == 0 then return -1 end
return 0
"#;

/// A user's sign-in changed on this node.
#[derive(Debug)]
pub struct Change {
    app_id: String,
    user_id: String,
    /// This node's view: the user's first socket here (true) or last (false).
    online: bool,
}

/// The queue's two ends.
pub fn queue() -> (mpsc::Sender<Change>, mpsc::Receiver<Change>) {
    mpsc::channel(QUEUE)
}

/// `app SEP user`, a member of a node's `node_signins` set.
fn member(app_id: &str, user_id: &str) -> String {
    format!("{app_id}{SEP}{user_id}")
}

/// Writes the queued changes, in order, until the adapter goes.
pub async fn run(adapter: Arc<RedisAdapter>, mut changes: mpsc::Receiver<Change>) {
    let mut batch = Vec::with_capacity(CHUNK);
    while changes.recv_many(&mut batch, CHUNK).await > 0 {
        let users: BTreeSet<(String, String)> = batch
            .iter()
            .map(|c| (c.app_id.clone(), c.user_id.clone()))
            .collect();
        let users: Vec<(String, String)> = users.into_iter().collect();
        if !adapter.write_own_sign_ins(&users).await {
            for change in &batch {
                announce_watchlist_locally(
                    &adapter.node,
                    &change.app_id,
                    &change.user_id,
                    change.online,
                );
            }
        }
        batch.clear();
    }
}

impl RedisAdapter {
    /// See [`crate::adapter::Adapter::sign_in_changed`]: queued for [`run`].
    pub(super) fn queue_sign_in(&self, app_id: &str, user_id: &str, online: bool) {
        let change = Change {
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            online,
        };
        if self.sign_ins.try_send(change).is_err() {
            // Told here as one node would; the cluster is corrected by the
            // next resync, which writes every sign-in again.
            self.health.resync_node();
            announce_watchlist_locally(&self.node, app_id, user_id, online);
        }
    }

    /// Tells this node's watchers of the user and every other node's.
    fn announce_watchlist(&self, app_id: &str, user_id: &str, online: bool) {
        announce_watchlist_locally(&self.node, app_id, user_id, online);
        // The user's group (as terminate_user): a user's changes in order.
        self.tell_other_nodes(
            self.keys.group(app_id, user_id),
            &BusMessage::Watchlist {
                node: &self.node_id,
                app_id,
                online,
                user_id,
            },
        );
    }

    /// Writes whether each user is signed in on this node now, and
    /// announces who went online or offline cluster-wide. False when Redis
    /// could not answer.
    pub(super) async fn write_own_sign_ins(&self, users: &[(String, String)]) -> bool {
        let entries: Vec<(&str, &str, bool)> = users
            .iter()
            .map(|(app_id, user_id)| {
                let here = self
                    .node
                    .app(app_id)
                    .is_some_and(|state| state.users.is_online(user_id));
                (app_id.as_str(), user_id.as_str(), here)
            })
            .collect();
        let node = self.node_id.clone();
        self.write_sign_ins(&node, &entries).await
    }

    /// Sets or clears `node` in each user's sign-ins (with its `node_signins`
    /// set: added before, removed after) in three round trips (the list,
    /// the users' hashes one pipeline per slot at once, the list), and
    /// announces the changes. False when Redis could not answer.
    async fn write_sign_ins(&self, node: &str, entries: &[(&str, &str, bool)]) -> bool {
        if entries.is_empty() {
            return true;
        }
        let sha = redis::Script::new(SIGNIN).get_hash().to_owned();
        let listed = self.keys.node_signins(node);
        // The node's list names a user before the user's hash names the
        // node, and forgets it only after: whoever reaps the node finds
        // every user it may have left signed in. The list is one key and the
        // users' hashes are spread over slots, so three steps.
        let (here, gone): (Vec<_>, Vec<_>) = entries.iter().partition(|(_, _, here)| *here);
        let members = |entries: &[&(&str, &str, bool)]| -> Vec<String> {
            entries
                .iter()
                .map(|(app_id, user_id, _)| member(app_id, user_id))
                .collect()
        };
        let (here, gone) = (members(&here), members(&gone));
        let mut batch = SlotBatch::new(self.client.is_cluster(), |pipe| {
            pipe.cmd("SCRIPT").arg("LOAD").arg(SIGNIN).ignore();
        });
        for (app_id, user_id, here) in entries {
            let key = self.keys.signins(app_id, user_id);
            batch.add(key.as_bytes(), |pipe| {
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(1)
                    .arg(&key)
                    .arg(node)
                    .arg(u8::from(*here));
            });
        }
        let changed = self
            .run(|mut connection| async move {
                if !here.is_empty() {
                    connection.sadd::<_, _, ()>(&listed, &here).await?;
                }
                let changed = batch.query::<i64>(&connection).await?;
                if !gone.is_empty() {
                    connection.srem::<_, _, ()>(&listed, &gone).await?;
                }
                Ok(changed)
            })
            .await;
        let Some(changed) = changed else {
            return false;
        };
        for ((app_id, user_id, _), change) in entries.iter().zip(changed) {
            if change != 0 {
                self.announce_watchlist(app_id, user_id, change > 0);
            }
        }
        true
    }

    /// The users `node` lists as signed in there (`app SEP user`); `None`
    /// when Redis failed.
    async fn listed_sign_ins(&self, node: &str) -> Option<Vec<String>> {
        let key = self.keys.node_signins(node);
        self.run(|mut connection| async move { connection.smembers(key).await })
            .await
    }

    /// Writes every sign-in of this node again: those Redis lists for it
    /// (gone meanwhile, or still here) and those it has. Users whose state
    /// changed cluster-wide meanwhile (an outage, a Redis restart, this node
    /// reaped while unreachable) are announced. False when Redis failed.
    pub(super) async fn resync_sign_ins(&self) -> bool {
        let Some(listed) = self.listed_sign_ins(&self.node_id).await else {
            return false;
        };
        let mut users: BTreeSet<(String, String)> = listed
            .iter()
            .filter_map(|id| id.split_once(SEP))
            .map(|(app_id, user_id)| (app_id.to_owned(), user_id.to_owned()))
            .collect();
        for app_id in self.node.app_ids() {
            if let Some(state) = self.node.app(&app_id) {
                users.extend(
                    state
                        .users
                        .signed_in()
                        .into_iter()
                        .map(|user_id| (app_id.clone(), user_id)),
                );
            }
        }
        let users: Vec<(String, String)> = users.into_iter().collect();
        for chunk in users.chunks(CHUNK) {
            if !self.write_own_sign_ins(chunk).await {
                return false;
            }
        }
        true
    }

    /// Clears a dead node's sign-ins (the caller holds the reaping lock):
    /// users whose last socket was there go offline, once.
    pub(super) async fn reap_sign_ins(&self, dead: &str) {
        let Some(ids) = self.listed_sign_ins(dead).await else {
            return;
        };
        let listed = self.keys.node_signins(dead);
        let entries: Vec<(&str, &str, bool)> = ids
            .iter()
            .filter_map(|id| id.split_once(SEP))
            .map(|(app_id, user_id)| (app_id, user_id, false))
            .collect();
        for chunk in entries.chunks(CHUNK) {
            if !self.write_sign_ins(dead, chunk).await {
                return;
            }
        }
        self.run(|mut connection| async move {
            redis::cmd("DEL")
                .arg(listed)
                .query_async::<()>(&mut connection)
                .await
        })
        .await;
    }

    /// See [`crate::adapter::Adapter::signed_in_elsewhere`]: one round trip.
    pub(super) async fn sign_ins_elsewhere(
        &self,
        app_id: &str,
        user_ids: Vec<String>,
    ) -> Vec<String> {
        let mut batch = SlotBatch::new(self.client.is_cluster(), |_| {});
        for user_id in &user_ids {
            let key = self.keys.signins(app_id, user_id);
            batch.add(key.as_bytes(), |pipe| {
                pipe.hkeys(&key);
            });
        }
        let nodes = self
            .run(|connection| async move { batch.query::<Vec<String>>(&connection).await })
            .await
            .unwrap_or_default();
        user_ids
            .into_iter()
            .zip(nodes)
            .filter(|(_, nodes)| nodes.iter().any(|node| *node != self.node_id))
            .map(|(user_id, _)| user_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::Keys;
    use super::*;

    #[test]
    fn node_signins_members_split_back_into_app_and_user() {
        let id = member("app-1", "user:1");
        assert_eq!(id.split_once(SEP), Some(("app-1", "user:1")));
        assert_eq!(Keys::node_channel_id("app-1", "user:1"), id);
    }
}
