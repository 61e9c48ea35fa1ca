//! The WebSocket transport: `/app/{key}` handshake and one actor per connection.
//! pushi.js clients connect to `/{key}` and get the same session speaking
//! pushi's dialect (see [`crate::protocol::pushi`]).
//!
//! This is the only module that knows actix-web-actors (its handshake
//! check and frame types; the actor context is rusher's own).
//!
//! - [`handshake`]: pure checks of the URL (key, protocol version).
//! - [`context`]: the actor context of a WebSocket connection: frames
//!   encoded straight into the socket's output, client frames read from
//!   the socket's input.
//! - [`transport`]: the WebSocket as a session [`Transport`](crate::session::Transport):
//!   frames out, client frames in.
//! - [`rejected`]: the short-lived actor that reports a refused handshake.
//! - [`frame_guard`]: refuses an oversized client frame at its header, before
//!   its payload is buffered.
//! - [`upgrade`]: actix-http's upgrade service: an upgrade request goes
//!   through the app (its payload read through [`inbound`]) and its
//!   connection is then served by [`socket`], not by the HTTP/1 dispatcher.

pub mod context;
pub mod frame_guard;
pub mod handshake;
pub mod inbound;
pub mod rejected;
pub mod socket;
pub mod transport;
pub mod upgrade;

use crate::abuse::ConnectionRate;
use crate::console::tap::ConsoleEvent;
use crate::hub::Hub;
use crate::protocol::error::ErrorCode;
use crate::protocol::pushi::Dialect;
use crate::session::{Session, SessionSettings, TransportSettings};
use actix_web::{guard, web, HttpRequest, HttpResponse, HttpResponseBuilder};
use std::sync::Arc;

/// Registers the WebSocket routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/app/{key}", web::get().to(connect));
}

/// Registers pushi.js's `/{key}` (registered after every other route): it
/// takes only a WebSocket upgrade whose last path segment is a known app
/// key while the WebSocket transport is on, so every other request on a
/// one-segment path (`/ready`, `/metrics`, a typo) goes on to its own route
/// or the 404.
pub fn configure_pushi(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/{key}")
            .guard(guard::Get())
            .guard(guard::fn_guard(is_pushi_upgrade))
            .to(connect_pushi),
    );
}

/// A WebSocket upgrade on `/{key}` for an app this server knows.
fn is_pushi_upgrade(ctx: &guard::GuardContext<'_>) -> bool {
    let upgrade = ctx
        .head()
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return false;
    }
    let on = ctx
        .app_data::<web::Data<TransportSettings>>()
        .is_some_and(|t| t.ws);
    let key = ctx.head().uri.path().trim_start_matches('/');
    on && ctx
        .app_data::<web::Data<Arc<Hub>>>()
        .is_some_and(|hub| hub.apps().by_key(key).is_some())
}

async fn connect_pushi(
    req: HttpRequest,
    key: web::Path<String>,
    hub: web::Data<Arc<Hub>>,
    settings: web::Data<SessionSettings>,
    transports: web::Data<TransportSettings>,
    rate: web::Data<Arc<ConnectionRate>>,
) -> actix_web::Result<HttpResponse> {
    let route = Route {
        req,
        key: key.into_inner(),
        dialect: Dialect::Pushi,
    };
    open(route, hub, settings, transports, rate).await
}

/// Reports `code` on the upgraded connection `handshake` answers, then closes.
fn start_rejected(code: ErrorCode, handshake: HttpResponseBuilder) -> HttpResponse {
    context::start(rejected::Rejected { code }, handshake, MAX_REJECTED_FRAME)
}

/// Largest client frame a refused connection reads (it reads none of them).
const MAX_REJECTED_FRAME: usize = 64 * 1024;

async fn connect(
    req: HttpRequest,
    key: web::Path<String>,
    hub: web::Data<Arc<Hub>>,
    settings: web::Data<SessionSettings>,
    transports: web::Data<TransportSettings>,
    rate: web::Data<Arc<ConnectionRate>>,
) -> actix_web::Result<HttpResponse> {
    let route = Route {
        req,
        key: key.into_inner(),
        dialect: Dialect::Pusher,
    };
    open(route, hub, settings, transports, rate).await
}

/// The upgrade request and what its path says.
struct Route {
    req: HttpRequest,
    key: String,
    dialect: Dialect,
}

/// One admission for both dialects: the same checks, limits and metrics.
async fn open(
    route: Route,
    hub: web::Data<Arc<Hub>>,
    settings: web::Data<SessionSettings>,
    transports: web::Data<TransportSettings>,
    rate: web::Data<Arc<ConnectionRate>>,
) -> actix_web::Result<HttpResponse> {
    let Route { req, key, dialect } = route;
    // Check the upgrade first: a connection is admitted (and counted) only
    // once the WebSocket handshake is sure to succeed.
    let handshake = context::handshake(&req)?;
    // Turned off in [transports]: as if the path did not exist.
    if !transports.ws {
        return refuse(&hub, ErrorCode::PathNotFound, handshake);
    }
    // Over a connection rate: 429 before the upgrade (see abuse::connection_rate).
    if let Err(refused) = rate.admit_ip(&req) {
        return Ok(refused.response(&req));
    }
    let Some(app) = hub.apps().by_key(&key) else {
        return refuse(&hub, ErrorCode::AppNotFound, handshake);
    };
    // pushi.js names no protocol version (its URL is `{base}{key}`).
    if dialect == Dialect::Pusher {
        if let Err(code) = handshake::check_protocol(req.query_string()) {
            hub.console().emit(&app.id, || ConsoleEvent::refused(code));
            return refuse(&hub, code, handshake);
        }
    }
    if let Err(refused) = rate.admit_app(&app) {
        hub.console().emit(&app.id, || {
            ConsoleEvent::new("refused").detail("429 over the app's connection rate", true)
        });
        return Ok(refused.response(&req));
    }
    let receiver = match hub.connect(&app, false) {
        Ok(receiver) => receiver,
        Err(code) => return refuse(&hub, code, handshake),
    };
    receiver.connection.set_dialect(dialect);
    let session = Session::new(
        transport::WebSocket::new(settings.max_frame_bytes),
        hub.get_ref().clone(),
        app,
        receiver,
        **settings,
    );
    Ok(context::start(session, handshake, settings.max_frame_bytes))
}

fn refuse(
    hub: &Hub,
    code: ErrorCode,
    handshake: HttpResponseBuilder,
) -> actix_web::Result<HttpResponse> {
    hub.metrics().connection_refused(code.code());
    Ok(start_rejected(code, handshake))
}

/// For WebSocket upgrades on any other path: refuse with 4005 as Pusher does.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade on an unknown path with close code 4005.
pub async fn path_not_found(req: HttpRequest) -> actix_web::Result<HttpResponse> {
    let handshake = context::handshake(&req)?;
    Ok(start_rejected(ErrorCode::PathNotFound, handshake))
}
