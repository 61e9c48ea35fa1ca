//! The Pusher wire protocol (version 7) as pure code: no I/O happens here.
//!
//! - [`frames`]: client frames parsed into typed events, server frames encoded once.
//! - [`channel`]: channel names, their validation and their kind.
//! - [`auth`]: HMAC-SHA256 signatures for channels, users and HTTP requests.
//! - [`error`]: the Pusher error codes and what each tells the client.
//! - [`presence`]: presence `channel_data` and sign-in `user_data`.
//! - [`pushi`]: pushi's WebSocket dialect (pushi.js clients at `/{key}`).

pub mod auth;
pub mod channel;
pub mod error;
pub mod frames;
pub mod presence;
pub mod pushi;
