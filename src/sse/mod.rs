//! Server-Sent Events: `GET /apps/{app_id}/events/stream?channels=a,b`
//! opens one receive-only session (`text/event-stream`) on the listed
//! channels, for `EventSource` in browsers and any HTTP client.
//!
//! - [`token`]: the signed token private, presence and user channels need.
//! - [`event_id`]: event ids and `Last-Event-ID` on channels with history.
//! - [`transport`]: the SSE session [`Transport`](crate::session::Transport).
//!
//! The request is checked here (channels, token, `Last-Event-ID`, the
//! node's HTTP session cap and the app's connection quota), then the
//! session joins the channels as a WebSocket client would: the same
//! subscribe, presence, sign-in and history replay, with signatures the
//! server makes for what the token allowed.

pub mod event_id;
pub mod token;
pub mod transport;

use crate::abuse::ConnectionRate;
use crate::apps::App;
use crate::http::cors;
use crate::http::error::ApiError;
use crate::http::sessions::HttpSessions;
use crate::http::streamed;
use crate::hub::Hub;
use crate::protocol::auth::{channel_auth, user_auth};
use crate::protocol::channel::{channel_type, validate_channel_name, ChannelKind};
use crate::protocol::error::ErrorCode;
use crate::protocol::frames::SubscribeRequest;
use crate::session::{Session, SessionSettings, TransportSettings};
use actix::Actor;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use token::{TokenError, TokenParams, TokenUser, Verified};
use transport::{Join, Sse};

/// Registers the stream route (GET, and the CORS preflight).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/apps/{app_id}/events/stream")
            .route(web::get().to(stream))
            .route(
                web::route()
                    .method(actix_web::http::Method::OPTIONS)
                    .to(preflight),
            )
            .default_service(web::to(|req: HttpRequest| async move {
                let message = format!("{} {} is not served; use GET", req.method(), req.path());
                let allow = "GET, OPTIONS";
                cors::refuse(&req, ApiError::MethodNotAllowed { message, allow })
            })),
    );
}

/// The stream's query parameters; others (cache busters) are ignored.
#[derive(Debug, Default, Deserialize)]
struct StreamQuery {
    channels: Option<String>,
    auth: Option<String>,
    expires: Option<String>,
    user_data: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// A refused stream: status and `{"error": message}`, with the Pusher close
/// code as `code` where the refusal is one (quota, shutdown, capacity).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    code: Option<u16>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            code: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }

    /// A connection the hub refused, with its Pusher code.
    fn pusher(code: ErrorCode) -> Self {
        let status = match code {
            ErrorCode::AppNotFound => StatusCode::NOT_FOUND,
            ErrorCode::AppDisabled => StatusCode::FORBIDDEN,
            ErrorCode::OverConnectionQuota => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal {
            status,
            message: code.message().to_owned(),
            code: Some(code.code()),
        }
    }

    /// The response, readable by a page on any origin.
    fn response(&self, req: &HttpRequest) -> HttpResponse {
        let body = match self.code {
            Some(code) => serde_json::json!({ "error": self.message, "code": code }),
            None => serde_json::json!({ "error": self.message }),
        };
        let mut response = HttpResponse::build(self.status);
        cors::allow(req, &mut response);
        response.json(body)
    }
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Refusal::new(status, error.to_string())
    }
}

async fn preflight(req: HttpRequest) -> HttpResponse {
    cors::preflight(&req, "GET")
}

async fn stream(
    req: HttpRequest,
    app_id: web::Path<String>,
    hub: web::Data<Arc<Hub>>,
    settings: web::Data<SessionSettings>,
    transports: web::Data<TransportSettings>,
    sessions: web::Data<Arc<HttpSessions>>,
    rate: web::Data<Arc<ConnectionRate>>,
) -> HttpResponse {
    // A new stream is a new connection: the same caps as a WebSocket's
    // (when SSE is served at all; turned off, the path does not exist).
    if transports.sse {
        if let Err(refused) = rate.admit_ip(&req) {
            return refused.response(&req);
        }
        if let Some(app) = hub.apps().by_id(&app_id) {
            if let Err(refused) = rate.admit_app(&app) {
                return refused.response(&req);
            }
        }
    }
    match open(&req, &app_id, &hub, **settings, &transports, &sessions) {
        Ok(response) => response,
        Err(refusal) => {
            tracing::debug!(app_id = %app_id, status = %refusal.status, reason = %refusal.message, "SSE stream refused");
            refusal.response(&req)
        }
    }
}

/// The stream's channels and what the session sends to join them.
struct Plan {
    app: Arc<App>,
    channels: Vec<String>,
    user: Option<TokenUser>,
    since: HashMap<String, u64>,
}

/// Checks the request and starts the session.
fn open(
    req: &HttpRequest,
    app_id: &str,
    hub: &Arc<Hub>,
    settings: SessionSettings,
    transports: &TransportSettings,
    sessions: &Arc<HttpSessions>,
) -> Result<HttpResponse, Refusal> {
    // Turned off in [transports]: as if the path did not exist.
    if !transports.sse {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no route for GET {}", req.path()),
        ));
    }
    let app = hub
        .apps()
        .by_id(app_id)
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, format!("Unknown app `{app_id}`")))?;
    let plan = plan(req, app, app_id)?;
    let Some(slot) = sessions.open() else {
        hub.metrics()
            .connection_refused(ErrorCode::OverCapacity.code());
        let mut refusal = Refusal::pusher(ErrorCode::OverCapacity);
        refusal.message = format!(
            "Over capacity: this node serves at most {} HTTP sessions (transports.max_sessions)",
            sessions.max()
        );
        return Err(refusal);
    };
    // A token that signs a user in or names a signed channel is the
    // backend's authorization: such a stream is authorized from the start
    // (and counts against max_connections at once); a public one is not.
    let authorized = plan.user.is_some()
        || plan
            .channels
            .iter()
            .any(|channel| channel_type(channel).needs_auth());
    let receiver = hub.connect(&plan.app, authorized).map_err(|code| {
        hub.metrics().connection_refused(code.code());
        Refusal::pusher(code)
    })?;
    let socket_id = receiver.connection.socket_id.clone();
    // As deep as the connection's queue: a replay that fits the queue fits
    // the body, and the bytes held stay bounded by both.
    let (writer, body) = streamed::body(hub.outgoing_queue());
    let transport = Sse::new(writer, transports.heartbeat, slot);
    let session =
        Session::new(transport, hub.clone(), plan.app.clone(), receiver, settings).start();
    // The token proved the backend allowed all of this: the server signs
    // the frames a WebSocket client would send with its backend's signatures.
    let Plan {
        app,
        channels,
        user,
        mut since,
    } = plan;
    if let Some(user) = &user {
        session.do_send(Join::SignIn {
            auth: user_auth(&app.key, &app.secret, &socket_id, &user.user_data),
            user_data: user.user_data.clone(),
        });
    }
    for channel in channels {
        let kind = channel_type(&channel).kind;
        let channel_data = match kind {
            ChannelKind::Presence => user.as_ref().map(|user| user.presence_data.clone()),
            _ => None,
        };
        let auth = (kind != ChannelKind::Public).then(|| {
            let data = channel_data.as_deref();
            channel_auth(&app.key, &app.secret, &socket_id, &channel, data)
        });
        let since = since.remove(&channel);
        session.do_send(Join::Subscribe(SubscribeRequest {
            channel,
            auth,
            channel_data,
            since,
        }));
    }
    Ok(streamed::response(req, "text/event-stream").streaming(body))
}

/// The channels, the token's user and where to resume, or why not.
fn plan(req: &HttpRequest, app: Arc<App>, app_id: &str) -> Result<Plan, Refusal> {
    let query = web::Query::<StreamQuery>::from_query(req.query_string())
        .map_err(|e| Refusal::bad_request(format!("Invalid query: {e}")))?
        .into_inner();
    let given = query.channels.as_deref().unwrap_or_default();
    if given.is_empty() {
        return Err(Refusal::bad_request(
            "channels is required: a comma-separated list of channel names",
        ));
    }
    let mut channels: Vec<String> = Vec::new();
    for name in given.split(',') {
        validate_channel_name(name, app.max_channel_name_length)
            .map_err(|e| Refusal::bad_request(format!("Invalid channel `{name}`: {e}")))?;
        if !channels.iter().any(|known| known == name) {
            channels.push(name.to_owned());
        }
    }
    if channels.len() > app.max_channels_per_connection {
        return Err(Refusal::bad_request(format!(
            "{} channels asked; a stream may have at most {} (max_channels_per_connection)",
            channels.len(),
            app.max_channels_per_connection
        )));
    }
    let params = TokenParams {
        auth: query.auth.as_deref(),
        expires: query.expires.as_deref(),
        user_data: query.user_data.as_deref(),
        app_id: Some(app_id),
    };
    let user = match token::verify(&app, given, params, unix_now())? {
        Verified::Signed(user) => user,
        Verified::Unsigned => {
            if let Some(channel) = channels
                .iter()
                .find(|channel| channel_type(channel).kind != ChannelKind::Public)
            {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    format!("Channel `{channel}` needs a token signed by the app's backend: auth, expires (and user_data for presence and user channels)"),
                ));
            }
            None
        }
    };
    for channel in &channels {
        match channel_type(channel).kind {
            ChannelKind::Presence if user.is_none() => {
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    format!("Presence channel `{channel}` needs user_data in the token: {{\"id\":..,\"user_info\":..}}"),
                ));
            }
            ChannelKind::ServerToUser => {
                let owner = channel.trim_start_matches("#server-to-user-");
                match &user {
                    None => {
                        return Err(Refusal::new(
                            StatusCode::UNAUTHORIZED,
                            format!("Channel `{channel}` needs user_data with id `{owner}` in the token"),
                        ))
                    }
                    Some(user) if user.id != owner => {
                        return Err(Refusal::new(
                            StatusCode::FORBIDDEN,
                            format!("Channel `{channel}` belongs to user `{owner}`; the token signs in user `{}`", user.id),
                        ))
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }
    // EventSource sends the id it last saw as the header when it
    // reconnects: newer than the URL's, which it keeps from the first open.
    let header_id = req
        .headers()
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Refusal::bad_request("Last-Event-ID is not printable ASCII"))
        })
        .transpose()?;
    let id = header_id
        .filter(|id| !id.trim().is_empty())
        .or(query.last_event_id.as_deref())
        .unwrap_or_default();
    let since = event_id::parse(id, &channels).map_err(|e| Refusal::bad_request(e.to_string()))?;
    Ok(Plan {
        app,
        channels,
        user,
        since,
    })
}

/// Seconds since the unix epoch (0 on a clock before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
