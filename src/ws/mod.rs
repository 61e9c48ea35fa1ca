//! The WebSocket transport: `/app/{key}` handshake and one actor per connection.
//!
//! This is the only module that knows actix-web-actors.
//!
//! - [`handshake`]: pure checks of the URL (key, protocol version).
//! - [`session`]: the per-connection actor: frames, keep-alive, limits.
//! - [`rejected`]: the short-lived actor that reports a refused handshake.

pub mod handshake;
pub mod rejected;
pub mod session;

use crate::hub::Hub;
use crate::protocol::error::ErrorCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use std::sync::Arc;
use std::time::Duration;

/// Per-connection settings taken from the server config.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Silence before the server pings (announced to the client).
    pub activity_timeout: Duration,
    /// Wait for an answer to our ping before closing with 4201.
    pub pong_timeout: Duration,
    /// Largest frame accepted from a client.
    pub max_frame_bytes: usize,
    /// How long a subscription waits for the sign-in or presence membership
    /// that would authorise it (see `hub::held`); zero refuses at once.
    pub subscribe_wait: Duration,
}

/// Registers the WebSocket routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/app/{key}", web::get().to(connect));
}

fn start_rejected(
    code: ErrorCode,
    req: &HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    ws::start(rejected::Rejected { code }, req, stream)
}

async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    key: web::Path<String>,
    hub: web::Data<Arc<Hub>>,
    settings: web::Data<WsSettings>,
) -> actix_web::Result<HttpResponse> {
    // Check the upgrade first: a connection is admitted (and counted) only
    // once the WebSocket handshake is sure to succeed.
    ws::handshake(&req)?;
    let Some(app) = hub.apps().by_key(&key) else {
        return refuse(&hub, ErrorCode::AppNotFound, &req, stream);
    };
    if let Err(code) = handshake::check_protocol(req.query_string()) {
        return refuse(&hub, code, &req, stream);
    }
    let receiver = match hub.connect(&app) {
        Ok(receiver) => receiver,
        Err(code) => return refuse(&hub, code, &req, stream),
    };
    let session = session::Session::new(hub.get_ref().clone(), app, receiver, **settings);
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(settings.max_frame_bytes)
        .start()
}

fn refuse(
    hub: &Hub,
    code: ErrorCode,
    req: &HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    hub.metrics()
        .connections_refused
        .with_label_values(&[&code.code().to_string()])
        .inc();
    start_rejected(code, req, stream)
}

/// For WebSocket upgrades on any other path: refuse with 4005 as Pusher does.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade on an unknown path with close code 4005.
pub async fn path_not_found(
    req: HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    start_rejected(ErrorCode::PathNotFound, &req, stream)
}
