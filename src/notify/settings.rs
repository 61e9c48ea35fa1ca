//! `[notifications]` (server-wide: queues, retries, limits, SMTP) and
//! `[apps.notifications]` (per app: each handler's mode).

use super::registration::Kind;
use serde::{Deserialize, Serialize};

/// When a handler sends an app's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Never: registrations are kept but nothing is sent.
    Off,
    /// Only while nobody is connected to see the event live: for a
    /// `personal-{u}` registration, no connection signed in as `u` and none
    /// subscribed to `personal-{u}`; for another channel, no subscriber.
    Offline,
    /// For every event.
    Always,
}

/// One app's `[apps.notifications]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppNotifications {
    /// HTTP callbacks; default `always` (a server-side receiver wants every event).
    pub web: Mode,
    /// E-mails; default `offline` (no e-mail for what the user saw live).
    pub email: Mode,
    /// Web Push; default `offline` (like a mobile push).
    pub web_push: Mode,
}

impl Default for AppNotifications {
    fn default() -> Self {
        AppNotifications {
            web: Mode::Always,
            email: Mode::Offline,
            web_push: Mode::Offline,
        }
    }
}

impl AppNotifications {
    /// The mode of one handler.
    pub fn mode(&self, kind: Kind) -> Mode {
        match kind {
            Kind::Web => self.web,
            Kind::Email => self.email,
            Kind::WebPush => self.web_push,
        }
    }
}

/// `[notifications]`: shared by every app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Notifications waiting per handler kind (and events waiting to be
    /// routed); beyond it new ones are dropped and counted.
    pub queue: usize,
    /// Notifications being sent at once per handler kind, retries included.
    pub concurrency: usize,
    /// Milliseconds an HTTP callback (or an SMTP exchange) may take.
    pub timeout_ms: u64,
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    /// Milliseconds before the first retry; doubled for each further one.
    pub backoff_ms: u64,
    /// Registrations per channel at most.
    pub max_per_channel: usize,
    /// Registrations per app at most.
    pub max_per_app: usize,
    /// The SMTP server for e-mails; e-mail is off while `host` is empty.
    pub smtp: SmtpConfig,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            queue: 10_000,
            concurrency: 16,
            timeout_ms: 10_000,
            max_attempts: 8,
            backoff_ms: 500,
            max_per_channel: 100,
            max_per_app: 100_000,
            smtp: SmtpConfig::default(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local relay only).
    None,
    /// Plain, then `STARTTLS` (required); port 587 usually.
    Starttls,
    /// TLS from the first byte (SMTPS); port 465 usually.
    Tls,
}

/// `[notifications.smtp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The server's host name; empty = e-mail notifications off.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// Login (AUTH PLAIN/LOGIN) when not empty.
    pub username: String,
    /// The password for `username`.
    pub password: String,
    /// The `From` address, e.g. `rusher <noreply@example.com>`.
    pub from: String,
    /// The subject; placeholders `{app_id}`, `{channel}`, `{event}`,
    /// `{data}`, `{user_id}` (empty when the registration is not a user's).
    pub subject: String,
    /// The plain-text body; same placeholders.
    pub body: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: String::new(),
            password: String::new(),
            from: "rusher <rusher@localhost>".into(),
            subject: "[{app_id}] {event} on {channel}".into(),
            body: "Event Notification\n==================\n\nChannel: {channel}\nEvent: {event}\n\nData:\n{data}\n".into(),
        }
    }
}

impl NotificationsConfig {
    /// Checks ranges and the `from` address; `Err((key under
    /// notifications., reason))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = [
            ("queue", self.queue),
            ("concurrency", self.concurrency),
            ("timeout_ms", self.timeout_ms as usize),
            ("max_attempts", self.max_attempts as usize),
            ("max_per_channel", self.max_per_channel),
            ("max_per_app", self.max_per_app),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key.into(), "must be greater than 0".into()));
            }
        }
        if !self.smtp.host.is_empty() {
            self.smtp
                .from
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| ("smtp.from".to_owned(), format!("not a mailbox: {e}")))?;
            if self.smtp.password.is_empty() != self.smtp.username.is_empty() {
                return Err((
                    "smtp.username".into(),
                    "username and password go together".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let config = NotificationsConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let app = AppNotifications::default();
        assert_eq!(app.mode(Kind::Web), Mode::Always);
        assert_eq!(app.mode(Kind::Email), Mode::Offline);
        let mut bad = config.clone();
        bad.smtp.host = "smtp.example".into();
        bad.smtp.from = "not an address".into();
        assert_eq!(bad.validate().unwrap_err().0, "smtp.from");
        let zero = NotificationsConfig { queue: 0, ..config };
        assert_eq!(zero.validate().unwrap_err().0, "queue");
        let parsed: AppNotifications = toml::from_str("email = \"always\"\nweb = \"off\"").unwrap();
        assert_eq!((parsed.web, parsed.email), (Mode::Off, Mode::Always));
        assert!(toml::from_str::<AppNotifications>("email = \"sometimes\"").is_err());
    }

    #[test]
    fn the_example_config_documents_the_defaults() {
        let text = include_str!("../../config.example.toml");
        let config = crate::config::Config::from_toml(text).unwrap();
        assert_eq!(config.notifications, NotificationsConfig::default());
        assert_eq!(config.apps[0].notifications, AppNotifications::default());
    }
}
