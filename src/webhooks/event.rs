//! Webhook events with the fields hosted Pusher sends (PROTOCOL.md §6).

use serde::Serialize;

/// One event in a webhook body's `events` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEvent {
    /// The event type, e.g. `channel_occupied`.
    pub name: &'static str,
    /// The channel it happened on.
    pub channel: String,
    /// `member_added`, `member_removed`, and client events on presence channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `client_event`: the event name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `client_event`: the data, as a JSON string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `client_event`: the sender's socket id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    /// `subscription_count`: subscribers now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<usize>,
}

impl WebhookEvent {
    fn new(name: &'static str, channel: &str) -> Self {
        WebhookEvent {
            name,
            channel: channel.to_owned(),
            user_id: None,
            event: None,
            data: None,
            socket_id: None,
            subscription_count: None,
        }
    }

    /// The channel got its first subscriber.
    pub fn channel_occupied(channel: &str) -> Self {
        Self::new("channel_occupied", channel)
    }

    /// The channel lost its last subscriber.
    pub fn channel_vacated(channel: &str) -> Self {
        Self::new("channel_vacated", channel)
    }

    /// A user's first socket joined a presence channel.
    pub fn member_added(channel: &str, user_id: &str) -> Self {
        WebhookEvent {
            user_id: Some(user_id.to_owned()),
            ..Self::new("member_added", channel)
        }
    }

    /// A user's last socket left a presence channel.
    pub fn member_removed(channel: &str, user_id: &str) -> Self {
        WebhookEvent {
            user_id: Some(user_id.to_owned()),
            ..Self::new("member_removed", channel)
        }
    }

    /// A client sent a `client-*` event.
    pub fn client_event(
        channel: &str,
        event: &str,
        data: &str,
        socket_id: &str,
        user_id: Option<&str>,
    ) -> Self {
        WebhookEvent {
            event: Some(event.to_owned()),
            data: Some(data.to_owned()),
            socket_id: Some(socket_id.to_owned()),
            user_id: user_id.map(str::to_owned),
            ..Self::new("client_event", channel)
        }
    }

    /// A subscriber to a cache channel found nothing cached.
    pub fn cache_miss(channel: &str) -> Self {
        Self::new("cache_miss", channel)
    }

    /// The channel's subscriber count changed.
    pub fn subscription_count(channel: &str, count: usize) -> Self {
        WebhookEvent {
            subscription_count: Some(count),
            ..Self::new("subscription_count", channel)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_only_their_fields() {
        let occupied = serde_json::to_value(WebhookEvent::channel_occupied("a")).unwrap();
        assert_eq!(
            occupied,
            serde_json::json!({"name":"channel_occupied","channel":"a"})
        );
        let member =
            serde_json::to_value(WebhookEvent::member_removed("presence-a", "u1")).unwrap();
        assert_eq!(
            member,
            serde_json::json!({"name":"member_removed","channel":"presence-a","user_id":"u1"})
        );
        let client = serde_json::to_value(WebhookEvent::client_event(
            "private-a",
            "client-x",
            "{}",
            "1.1",
            None,
        ))
        .unwrap();
        assert_eq!(client["event"], "client-x");
        assert_eq!(client["data"], "{}");
        assert_eq!(client["socket_id"], "1.1");
        assert!(client.get("user_id").is_none());
    }
}
