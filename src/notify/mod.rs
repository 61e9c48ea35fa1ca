//! Notifications to followers beyond their WebSocket (issue 16, pushi's
//! handlers). This module: the Web Push sender.
//! - [`ece`]: RFC 8291 / RFC 8188 `aes128gcm` message encryption.
//! - [`vapid`]: RFC 8292 VAPID keys and the signed `Authorization` header.
//! - [`web_push`]: one message to one subscription, and what became of it.

pub mod ece;
pub mod vapid;
pub mod web_push;
