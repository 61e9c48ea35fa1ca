//! Invalidations across nodes ([`crate::hub::invalidation`]): this node's
//! changes leave on the bus as [`BusMessage::Follow`],
//! [`BusMessage::Registrations`] and [`BusMessage::Logout`] (through the
//! outbox, in order, never waiting); those of other nodes are handed to this
//! node's caches. Nothing is kept in Redis: a node cut off from the bus
//! catches up at its caches' periodic reload.

use super::bus::BusMessage;
use super::RedisAdapter;
use crate::hub::invalidation::{Change, Invalidations};
use std::sync::Arc;

impl RedisAdapter {
    /// Carries `invalidations` between this node and the others (once, at start).
    pub fn share_invalidations(self: &Arc<Self>, invalidations: Arc<Invalidations>) {
        let adapter = Arc::downgrade(self);
        invalidations.connect(move |change| {
            if let Some(adapter) = adapter.upgrade() {
                let group = adapter.keys.node_group(&adapter.node_id);
                adapter.tell_other_nodes(group, &outgoing(&adapter.node_id, change));
            }
        });
        if self.invalidations.set(invalidations).is_err() {
            tracing::warn!("redis adapter: invalidations shared twice");
        }
    }

    /// An invalidation from another node (own ones are applied already).
    pub(super) fn on_invalidation(&self, message: &BusMessage) {
        let Some((node, change)) = incoming(message) else {
            return;
        };
        if node == self.node_id {
            return;
        }
        if let Some(invalidations) = self.invalidations.get() {
            invalidations.received(change);
        }
    }
}

/// The bus message of a change this node made.
fn outgoing<'a>(node: &'a str, change: &'a Change) -> BusMessage<'a> {
    match change {
        Change::Follow {
            app_id,
            user_id,
            channel,
        } => BusMessage::Follow {
            node,
            app_id,
            channel,
            user_id,
        },
        Change::Registrations { app_id, channel } => BusMessage::Registrations {
            node,
            app_id,
            channel,
        },
        Change::Logout { nonce, expiry } => BusMessage::Logout {
            node,
            expiry: *expiry,
            nonce,
        },
    }
}

/// The sending node and the change of an invalidation message; `None` for
/// other messages.
fn incoming<'a>(message: &BusMessage<'a>) -> Option<(&'a str, Change)> {
    match *message {
        BusMessage::Follow {
            node,
            app_id,
            channel,
            user_id,
        } => Some((
            node,
            Change::Follow {
                app_id: app_id.to_owned(),
                user_id: user_id.to_owned(),
                channel: channel.to_owned(),
            },
        )),
        BusMessage::Registrations {
            node,
            app_id,
            channel,
        } => Some((
            node,
            Change::Registrations {
                app_id: app_id.to_owned(),
                channel: channel.to_owned(),
            },
        )),
        BusMessage::Logout {
            node,
            expiry,
            nonce,
        } => Some((
            node,
            Change::Logout {
                nonce: nonce.to_owned(),
                expiry,
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_survives_the_bus() {
        for change in [
            Change::Follow {
                app_id: "a".into(),
                user_id: "u".into(),
                channel: "c".into(),
            },
            Change::Registrations {
                app_id: "a".into(),
                channel: "personal-u".into(),
            },
            Change::Logout {
                nonce: "ab".into(),
                expiry: 5,
            },
        ] {
            let wire = outgoing("n", &change).encode();
            let decoded = BusMessage::decode(&wire);
            let back = decoded.as_ref().and_then(incoming);
            assert_eq!(back, Some(("n", change)));
        }
        let terminate = BusMessage::Terminate {
            node: "n",
            app_id: "a",
            user_id: "u",
        };
        assert_eq!(incoming(&terminate), None);
    }
}
