//! pusher-js's HTTP fallback transports, `xhr_streaming` and `xhr_polling`,
//! for clients that cannot hold a WebSocket (proxies, middleboxes).
//!
//! pusher-js (`src/core/http/`, `src/core/transports/url_schemes.ts`) builds
//! `{httpHost}:{httpPort}/pusher/app/{key}/{server}/{session}/` with a random
//! `{server}` (0-999) and `{session}` (8 characters) per socket, and POSTs:
//!
//! - `.../xhr_streaming?protocol=7&...` — one long response carrying frames;
//! - `.../xhr?protocol=7&...` — a long poll, repeated after each answer;
//! - `.../xhr_send` — a JSON array of the client's frames (`[]` = heartbeat).
//!
//! Each session is one [`Session`] like a WebSocket's (same socket_id
//! rules, hub path, auth, limits and close codes); only its outgoing side
//! differs ([`transport::Xhr`]). Lines are framed as in [`framing`];
//! sessions are found by id in [`registry`]; a request for a session
//! another node of the cluster holds goes through the [`relay`]. Every
//! answer carries CORS headers, and preflights are answered, so a page on
//! another origin can use them.

pub mod framing;
pub mod registry;
pub mod relay;
pub mod transport;

use crate::abuse::ConnectionRate;
use crate::http::cors;
use crate::http::error::ApiError;
use crate::http::sessions::HttpSessions;
use crate::http::streamed;
use crate::http::HttpSettings;
use crate::hub::Hub;
use crate::protocol::error::ErrorCode;
use crate::protocol::frames;
use crate::session::{Session, SessionSettings, TransportSettings};
use crate::ws::handshake;
use actix::AsyncContext;
use actix_web::{web, HttpRequest, HttpResponse};
use registry::{Entry, Registry};
use relay::{AttachAnswer, Relayed, SendAnswer, XhrRelay};
use std::sync::Arc;
use transport::{Attach, ClientFrames, Kind, Xhr};

/// What the handlers share: the sessions of this node and the cap.
pub struct XhrState {
    /// Sessions by id.
    pub registry: Arc<Registry>,
    /// The cap on HTTP sessions, shared with the other HTTP transports.
    pub cap: Arc<HttpSessions>,
    /// The connection-rate caps, counted when a session opens (not per request).
    pub rate: Arc<ConnectionRate>,
    /// The sessions other nodes hold ([`relay::NoRelay`] on a single node).
    pub relay: Arc<dyn XhrRelay>,
}

/// Chunks a poll response can hold before the session counts its client
/// as slow: a poll carries one line, then ends.
const POLL_BODY_CHUNKS: usize = 4;

/// Chunks a response of `kind` holds before its client counts as slow:
/// `stream_capacity` (the connection queue size) for a stream, a few for a poll.
pub fn body_capacity(kind: Kind, stream_capacity: usize) -> usize {
    match kind {
        Kind::Streaming => stream_capacity,
        Kind::Polling => POLL_BODY_CHUNKS,
    }
}

/// Registers the routes under `/pusher/app/{key}/{server}/{session}/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/pusher/app/{key}/{server}/{session}/xhr_streaming")
            .route(web::post().to(|req, path, hub, state, s, t| {
                receive(req, path, hub, state, s, t, Kind::Streaming)
            }))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(not_allowed)),
    )
    .service(
        web::resource("/pusher/app/{key}/{server}/{session}/xhr")
            .route(web::post().to(|req, path, hub, state, s, t| {
                receive(req, path, hub, state, s, t, Kind::Polling)
            }))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(not_allowed)),
    )
    .service(
        web::resource("/pusher/app/{key}/{server}/{session}/xhr_send")
            .route(web::post().to(send))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(not_allowed)),
    );
}

/// `{key}`, `{server}`, `{session}` of the URL.
type SessionPath = web::Path<(String, String, String)>;

/// The registry id of a session, or `None` when the path parts are not
/// what pusher-js sends (short ASCII letters, digits, `_`, `-`).
fn session_id((key, server, session): &(String, String, String)) -> Option<String> {
    let fits = |part: &str, most: usize| {
        !part.is_empty()
            && part.len() <= most
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    (fits(server, 16) && fits(session, 64)).then(|| format!("{key}/{server}/{session}"))
}

async fn preflight(req: HttpRequest) -> HttpResponse {
    cors::preflight(&req, "POST, OPTIONS")
}

/// Any other method: a JSON 405 naming the one served, readable by a page
/// on another origin like every other answer here.
async fn not_allowed(req: HttpRequest) -> HttpResponse {
    let message = format!("{} {} is not served; use POST", req.method(), req.path());
    let allow = "POST, OPTIONS";
    cors::refuse(&req, ApiError::MethodNotAllowed { message, allow })
}

/// The content type of every line-carrying answer (as SockJS sends it).
const LINES: &str = "application/javascript; charset=UTF-8";

/// A 200 whose body is `lines`, as pusher-js reads them.
fn lines(req: &HttpRequest, body: String) -> HttpResponse {
    streamed::response(req, LINES).body(body)
}

/// A refused session, told as a WebSocket's would be: open, the
/// `pusher:error`, then the close with its code (pusher-js acts on the code).
fn refused_session(hub: &Hub, req: &HttpRequest, code: ErrorCode) -> HttpResponse {
    hub.metrics().connection_refused(code.code());
    let error = frames::error_frame(Some(code.code()), code.message());
    let body = format!(
        "{}{}{}",
        framing::OPEN,
        framing::array([&error]),
        framing::close(code.code(), code.message())
    );
    lines(req, body)
}

async fn receive(
    req: HttpRequest,
    path: SessionPath,
    hub: web::Data<Arc<Hub>>,
    state: web::Data<XhrState>,
    settings: web::Data<SessionSettings>,
    transports: web::Data<TransportSettings>,
    kind: Kind,
) -> HttpResponse {
    let enabled = match kind {
        Kind::Streaming => transports.xhr_streaming,
        Kind::Polling => transports.xhr_polling,
    };
    if !enabled {
        let message = format!("the {} transport is turned off on this server", kind.name());
        return cors::refuse(&req, ApiError::NotFound(message));
    }
    let Some(id) = session_id(&path) else {
        return cors::refuse(&req, ApiError::NotFound("unknown session path".into()));
    };
    let capacity = body_capacity(kind, hub.outgoing_queue());
    let session = match state.registry.get(&id) {
        Some(Entry::Open(session)) => {
            state.relay.held(&id);
            session
        }
        // Closed lately: the client learns how (its close code), once more.
        Some(Entry::Closed(line, _)) => return lines(&req, line),
        None => {
            // Another node may hold it (no sticky routing): the request is
            // attached there and its lines come through this response.
            let (writer, body) = streamed::body(capacity);
            match state.relay.attach(&id, kind, writer).await {
                Relayed::Answer(AttachAnswer::Attached) => {
                    return streamed::response(&req, LINES).streaming(body)
                }
                Relayed::Answer(AttachAnswer::OtherKind) => return other_kind(&req, kind),
                Relayed::Answer(AttachAnswer::Closed(line)) => return lines(&req, line),
                Relayed::Busy => return relay_busy(&req),
                Relayed::NoOwner | Relayed::Answer(AttachAnswer::Unknown) => {}
            }
            match open(
                &req,
                &path.0,
                id,
                &hub,
                &state,
                &settings,
                &transports,
                kind,
            ) {
                Ok(session) => session,
                Err(response) => return *response,
            }
        }
    };
    let (writer, body) = streamed::body(capacity);
    match session.send(Attach { writer, kind }).await {
        Ok(true) => streamed::response(&req, LINES).streaming(body),
        Ok(false) => other_kind(&req, kind),
        // Stopped between the lookup and now: as if closed.
        Err(_) => lines(&req, framing::close(1006, "Session closed")),
    }
}

/// A receive request of `kind` for a session of the other kind: a 400.
fn other_kind(req: &HttpRequest, kind: Kind) -> HttpResponse {
    let message = format!("this session does not use {}", kind.name());
    cors::refuse(req, ApiError::BadRequest(message))
}

/// Too many requests relayed to other nodes wait on this node: a 503.
fn relay_busy(req: &HttpRequest) -> HttpResponse {
    let message = "too many requests relayed to other nodes are waiting; retry later".into();
    cors::refuse(req, ApiError::Unavailable(message))
}

/// Admits a new session: the same checks as a WebSocket handshake, then
/// the session's actor, registered under `id`.
#[allow(clippy::too_many_arguments)]
fn open(
    req: &HttpRequest,
    key: &str,
    id: String,
    hub: &Arc<Hub>,
    state: &XhrState,
    settings: &SessionSettings,
    transports: &TransportSettings,
    kind: Kind,
) -> Result<actix::Addr<Session<Xhr>>, Box<HttpResponse>> {
    // A new session is a new connection: the same caps as a WebSocket's.
    state
        .rate
        .admit_ip(req)
        .map_err(|refused| Box::new(refused.response(req)))?;
    let Some(app) = hub.apps().by_key(key) else {
        return Err(Box::new(refused_session(hub, req, ErrorCode::AppNotFound)));
    };
    if let Err(code) = handshake::check_protocol(req.query_string()) {
        return Err(Box::new(refused_session(hub, req, code)));
    }
    state
        .rate
        .admit_app(&app)
        .map_err(|refused| Box::new(refused.response(req)))?;
    // The id is taken before anything is admitted, so two first requests
    // of one id racing each other share one session: the later attaches
    // to the earlier (the newest request wins, as ever), and no second
    // session is started only to be thrown away.
    let context = actix::Context::<Session<Xhr>>::new();
    let address = context.address();
    if let Err(held) = state.registry.insert(id.clone(), address.clone()) {
        return Ok(held);
    }
    let refused = |response: HttpResponse| {
        state.registry.forget(&id, &address);
        Box::new(response)
    };
    let Some(permit) = state.cap.open() else {
        hub.metrics()
            .connection_refused(ErrorCode::OverCapacity.code());
        let message = format!(
            "this server holds its maximum of {} HTTP sessions; retry later",
            transports.max_sessions
        );
        return Err(refused(cors::refuse(req, ApiError::Unavailable(message))));
    };
    let receiver = match hub.connect(&app, false) {
        Ok(receiver) => receiver,
        Err(code) => return Err(refused(refused_session(hub, req, code))),
    };
    let transport = Xhr::new(
        kind,
        id.clone(),
        state.registry.clone(),
        *transports,
        settings.activity_timeout,
        hub.outgoing_queue(),
        permit,
        hub.metrics().slow_client_disconnects.clone(),
    );
    Ok(context.run(Session::new(
        transport,
        hub.clone(),
        app,
        receiver,
        *settings,
    )))
}

async fn send(
    req: HttpRequest,
    path: SessionPath,
    payload: web::Payload,
    state: web::Data<XhrState>,
    http: web::Data<HttpSettings>,
    settings: web::Data<SessionSettings>,
) -> HttpResponse {
    let unknown = || {
        cors::refuse(
            &req,
            ApiError::NotFound("no such session (closed or never opened)".into()),
        )
    };
    let Some(id) = session_id(&path) else {
        return unknown();
    };
    // Here, or on another node (no sticky routing), or nowhere.
    let held = match state.registry.get(&id) {
        Some(Entry::Open(session)) => Ok(session),
        Some(Entry::Closed(..)) => return unknown(),
        None => match state.relay.locate(&id).await {
            Some(owner) => Err(owner),
            None => return unknown(),
        },
    };
    let body =
        match crate::http::signed::read_body(payload.into_inner(), http.max_request_bytes).await {
            Ok(body) => body,
            Err(error) => return cors::refuse(&req, error),
        };
    let frames = match framing::parse_send(&body) {
        Ok(frames) => frames,
        Err(message) => return cors::refuse(&req, ApiError::BadRequest(message)),
    };
    let most = settings.max_frame_bytes;
    if frames.iter().any(|frame| frame.len() > most) {
        let message = format!("a frame is larger than the server accepts ({most} bytes)");
        return cors::refuse(&req, ApiError::PayloadTooLarge(message));
    }
    let answer = match held {
        Ok(session) => {
            state.relay.held(&id);
            // Waits for the session to take them (bounded mailbox): frames
            // of one send keep their order, and a flood of sends is slowed,
            // not queued.
            match session.send(ClientFrames(frames)).await {
                Ok(()) => SendAnswer::Taken,
                Err(_) => SendAnswer::Closed,
            }
        }
        Err(owner) => match state.relay.send(&owner, &id, &frames).await {
            Relayed::Answer(answer) => answer,
            Relayed::NoOwner => SendAnswer::Unknown,
            Relayed::Busy => return relay_busy(&req),
        },
    };
    match answer {
        SendAnswer::Taken => {
            let mut response = HttpResponse::NoContent();
            cors::allow(&req, &mut response);
            response.finish()
        }
        SendAnswer::Closed => cors::refuse(&req, ApiError::NotFound("the session closed".into())),
        SendAnswer::Unknown => unknown(),
    }
}
