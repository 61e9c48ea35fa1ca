//! Held-back leave webhooks, kept in Redis so the whole cluster decides.
//!
//! A leave that empties a channel (or removes a presence member) on any
//! node puts its `channel_vacated` (or `member_removed`) in the app's `held`
//! ZSET, scored by when it is due, instead of sending it (the leave script,
//! [`super::scripts::leave`]). A join on any node within the hold-back takes
//! it out again and sends no `channel_occupied` (`member_added`) either
//! ([`super::scripts::join`]): a page reload that lands on another node
//! makes no webhook (one ZSET per app and shard group: the leave's
//! channel's group, so the scripts touch one slot). Every node takes the
//! due ones out of the ZSETs
//! atomically every [`TICK`] ([`super::scripts::release_held`]), so each is
//! sent by exactly one node, also when the node that held it died.

use super::health::Scope;
use super::{now_ms, RedisAdapter};
use crate::hub::counts_subscriptions;
use crate::webhooks::event::WebhookEvent;
use crate::webhooks::HoldBack;
use std::sync::Arc;
use std::time::Duration;

/// How often a node looks for due leaves: the hold-back is kept to about this.
pub const TICK: Duration = Duration::from_millis(100);

/// Most due leaves one node takes per app and round trip.
const BATCH: usize = 1000;

/// When a leave's held webhooks are due (unix ms): `(member_removed,
/// channel_vacated)`; `(0, 0)` (not held: sent at once) when both delays
/// are 0. A presence channel's vacated is never due before a removal of
/// the same leave, so it is sent after it.
pub fn due(channel: &str, hold: HoldBack, now_ms: u64) -> (u64, u64) {
    if hold.member_removed.is_zero() && hold.channel_vacated.is_zero() {
        return (0, 0);
    }
    let ms = |d: Duration| d.as_millis() as u64;
    let removal = now_ms + ms(hold.member_removed);
    let vacated = match counts_subscriptions(channel) {
        true => now_ms + ms(hold.channel_vacated),
        false => now_ms + ms(hold.channel_vacated.max(hold.member_removed)),
    };
    (removal.max(1), vacated.max(1))
}

/// A held leave taken out of the ZSET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// When it was due (unix ms).
    pub due: u64,
    /// The channel.
    pub channel: String,
    /// `Some(user)`: `member_removed`; `None`: `channel_vacated`.
    pub user_id: Option<String>,
}

/// Parses the script's flat `member, due` list, in the order to send:
/// by due time, a channel's removals before its vacated of the same time.
pub fn parse_released(flat: &[String]) -> Vec<Released> {
    let mut released: Vec<Released> = flat
        .chunks_exact(2)
        .filter_map(|pair| {
            let due = pair[1].parse::<f64>().ok()? as u64;
            let (kind, rest) = pair[0].split_once(super::keys::SEP)?;
            match kind {
                "v" => Some(Released {
                    due,
                    channel: rest.to_owned(),
                    user_id: None,
                }),
                "r" => {
                    let (channel, user) = rest.split_once(super::keys::SEP)?;
                    Some(Released {
                        due,
                        channel: channel.to_owned(),
                        user_id: Some(user.to_owned()),
                    })
                }
                _ => None,
            }
        })
        .collect();
    released.sort_by_key(|r| (r.due, r.user_id.is_none()));
    released
}

/// Sends the due leaves of every app with held webhooks, forever (the
/// apps are looked at every tick: webhooks may be set at runtime).
pub async fn release(adapter: Arc<RedisAdapter>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for app_id in adapter.node.app_ids() {
            if adapter.webhooks.hold_back(&app_id).is_some() {
                adapter.release_held(&app_id).await;
            }
        }
    }
}

impl RedisAdapter {
    /// Takes the app's due leaves out of Redis and sends their webhooks:
    /// one `held` ZSET per shard group, all at once (a group whose shard is
    /// down waits for it alone).
    async fn release_held(&self, app_id: &str) {
        let groups = (0..self.keys.groups()).map(|group| self.release_held_in(app_id, group));
        futures_util::future::join_all(groups).await;
    }

    async fn release_held_in(&self, app_id: &str, group: u16) {
        loop {
            let mut invocation = self.scripts.release_held.prepare_invoke();
            invocation
                .key(self.keys.held(app_id, group))
                .arg(now_ms())
                .arg(BATCH);
            let Some(flat) = self
                .run_in(Scope::Group(group), |mut connection| async move {
                    invocation
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                })
                .await
            else {
                return;
            };
            for leave in parse_released(&flat) {
                let channel = &leave.channel;
                match &leave.user_id {
                    Some(user_id) => self
                        .webhooks
                        .emit_decided(app_id, WebhookEvent::member_removed(channel, user_id)),
                    None => {
                        self.webhooks
                            .emit_decided(app_id, WebhookEvent::channel_vacated(channel));
                        if counts_subscriptions(channel) {
                            self.webhooks
                                .emit_decided(app_id, WebhookEvent::subscription_count(channel, 0));
                        }
                    }
                }
            }
            if flat.len() < BATCH * 2 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_leaves_come_by_due_time_removals_before_the_vacated() {
        let flat: Vec<String> = [
            "v\u{1f}presence-a",
            "200",
            "r\u{1f}presence-a\u{1f}u1",
            "200",
            "v\u{1f}room",
            "100",
            "junk",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = parse_released(&flat);
        let order: Vec<(&str, Option<&str>)> = got
            .iter()
            .map(|r| (r.channel.as_str(), r.user_id.as_deref()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("room", None),
                ("presence-a", Some("u1")),
                ("presence-a", None)
            ]
        );
    }

    #[test]
    fn a_presence_vacated_is_never_due_before_its_removal() {
        let hold = HoldBack {
            member_removed: Duration::from_millis(3000),
            channel_vacated: Duration::from_millis(1000),
        };
        assert_eq!(due("presence-a", hold, 10), (3010, 3010));
        assert_eq!(due("room", hold, 10), (3010, 1010));
        assert_eq!(due("room", HoldBack::default(), 10), (0, 0));
    }
}
