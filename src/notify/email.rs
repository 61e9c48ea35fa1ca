//! E-mail notifications through the configured SMTP server (`lettre`,
//! tokio + rustls), subject and body from `[notifications.smtp]` templates
//! ([`super::template`]). A server that is down or answers a transient
//! (4xx) error is retried with back-off, so an outage only delays mail, up
//! to the attempts; a permanent (5xx) refusal is final. Each exchange is
//! bounded by `timeout_ms` (a server that hangs is retried like one down).

use super::registration::Registration;
use super::settings::{SmtpConfig, SmtpTls};
use super::template::render;
use super::{Notification, Outcome, Sender};
use crate::apps::App;
use crate::webhooks::sender::{retry, Attempt, RetryPolicy};
use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Sends e-mails.
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    subject: String,
    body: String,
    policy: RetryPolicy,
    /// One whole SMTP exchange: lettre's own timeout bounds only the TCP
    /// connect, so a server that accepts and then never answers would hold
    /// a `concurrency` slot for ever.
    timeout: std::time::Duration,
}

impl EmailSender {
    /// A sender for `config` (validated: `from` parses); `timeout` bounds
    /// each SMTP exchange.
    pub fn new(
        config: &SmtpConfig,
        timeout: std::time::Duration,
        policy: RetryPolicy,
    ) -> Result<Self, String> {
        let host = config.host.as_str();
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("notifications.smtp: {e}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("notifications.smtp: {e}"))?,
        };
        let mut builder = builder.port(config.port).timeout(Some(timeout));
        if !config.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                config.username.clone(),
                config.password.clone(),
            ));
        }
        let from = config
            .from
            .parse()
            .map_err(|e| format!("notifications.smtp.from: {e}"))?;
        Ok(EmailSender {
            transport: builder.build(),
            from,
            subject: config.subject.clone(),
            body: config.body.clone(),
            policy,
            timeout,
        })
    }

    /// The message for one notification, or why it cannot be built.
    fn message(
        &self,
        notification: &Notification,
        registration: &Registration,
    ) -> Result<Message, String> {
        let values = [
            ("app_id", notification.app_id.as_str()),
            ("channel", notification.channel.as_str()),
            ("event", notification.event.as_str()),
            ("data", notification.data.as_str()),
            ("user_id", registration.user_id().unwrap_or("")),
        ];
        // A subject is one line.
        let subject = render(&self.subject, &values).replace(['\r', '\n'], " ");
        let to: Mailbox = registration
            .target
            .parse()
            .map_err(|e| format!("bad address: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(render(&self.body, &values))
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

#[async_trait]
impl Sender for EmailSender {
    async fn send(
        &self,
        _app: &App,
        notification: &Notification,
        registration: &Registration,
    ) -> Outcome {
        let message = match self.message(notification, registration) {
            Ok(message) => message,
            Err(reason) => return Outcome::Failed(reason),
        };
        let result = retry(
            self.policy,
            |_| async {
                let exchange = self.transport.send(message.clone());
                match tokio::time::timeout(self.timeout, exchange).await {
                    Ok(Ok(_)) => Attempt::Done,
                    Ok(Err(error)) if error.is_permanent() => Attempt::GiveUp(error.to_string()),
                    Ok(Err(error)) => Attempt::Retry(error.to_string()),
                    Err(_) => Attempt::Retry(format!(
                        "the SMTP server did not answer within {} ms",
                        self.timeout.as_millis()
                    )),
                }
            },
            |attempt, reason| {
                tracing::warn!(attempt, reason, "SMTP send failed; retrying");
            },
        )
        .await;
        match result {
            Ok(()) => Outcome::Sent,
            Err(reason) => Outcome::Failed(reason),
        }
    }
}
