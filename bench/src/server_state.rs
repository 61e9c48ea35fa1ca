//! What is left on the server after a run: occupied channels
//! (`GET /apps/{id}/channels`), open connections (`rusher_connections` in
//! `/metrics`, Prometheus text format) and presence members
//! (`GET /apps/{id}/channels/{channel}/users`), with a wait until all are
//! empty. The soak and frame-fuzz scenarios check these after their cycles.

use crate::api::ApiClient;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::time::Duration;

/// The server's leftovers at one moment.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Snapshot {
    /// Names of the app's occupied channels.
    pub channels: Vec<String>,
    /// `rusher_connections` (every app, every transport); `None` when the
    /// server has no such metric (not rusher, or metrics turned off).
    pub connections: Option<f64>,
    /// Presence channel → its member count.
    pub members: Vec<(String, usize)>,
}

impl Snapshot {
    /// No channel, no connection, no member.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.connections.is_none_or(|c| c == 0.0)
            && self.members.iter().all(|(_, n)| *n == 0)
    }

    pub fn member_total(&self) -> usize {
        self.members.iter().map(|(_, n)| n).sum()
    }
}

/// The value of an unlabelled sample `name` in Prometheus text output.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next()? == name).then(|| parts.next()?.parse().ok())?
        })
}

async fn get_json(api: &mut ApiClient, path: &str) -> Result<Value> {
    let (status, body) = api.request("GET", path, &[], String::new()).await?;
    if status != 200 {
        bail!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
}

/// Reads the leftovers; `presence` names the presence channels to list.
pub async fn snapshot(api: &mut ApiClient, presence: &[String]) -> Result<Snapshot> {
    let app = api.app_id().to_owned();
    let channels = get_json(api, &format!("/apps/{app}/channels")).await?;
    let channels = channels["channels"]
        .as_object()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    let (status, metrics) = api.request("GET", "/metrics", &[], String::new()).await?;
    let connections = (status == 200)
        .then(|| metric_value(&String::from_utf8_lossy(&metrics), "rusher_connections"))
        .flatten();
    let mut members = Vec::with_capacity(presence.len());
    for channel in presence {
        let users = get_json(api, &format!("/apps/{app}/channels/{channel}/users")).await?;
        let n = users["users"].as_array().map_or(0, Vec::len);
        members.push((channel.clone(), n));
    }
    Ok(Snapshot {
        channels,
        connections,
        members,
    })
}

/// Polls [`snapshot`] until it is empty or `deadline` passes; returns the
/// last snapshot and how long it took.
pub async fn wait_empty(
    api: &mut ApiClient,
    presence: &[String],
    deadline: Duration,
) -> Result<(Snapshot, Duration)> {
    let started = tokio::time::Instant::now();
    loop {
        let now = snapshot(api, presence).await?;
        if now.is_empty() || started.elapsed() >= deadline {
            return Ok((now, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_gauge_is_read_and_prefixes_do_not_match() {
        let text = "# HELP rusher_connections Open\n# TYPE rusher_connections gauge\n\
                    rusher_connections_total 12\nrusher_connections 3\n";
        assert_eq!(metric_value(text, "rusher_connections"), Some(3.0));
        assert_eq!(metric_value(text, "rusher_connections_total"), Some(12.0));
        assert_eq!(metric_value(text, "rusher_nope"), None);
    }

    #[test]
    fn empty_means_no_channel_connection_or_member() {
        let mut s = Snapshot {
            connections: Some(0.0),
            members: vec![("presence-a".into(), 0)],
            ..Snapshot::default()
        };
        assert!(s.is_empty());
        s.members[0].1 = 1;
        assert!(!s.is_empty());
        s.members[0].1 = 0;
        s.connections = Some(1.0);
        assert!(!s.is_empty());
    }
}
