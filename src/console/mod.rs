//! The console: a live view of an app in the browser, served by rusher
//! itself at `/console` (issue 15), like hosted Pusher's debug console.
//!
//! - [`tap`]: what happens in an app, copied to the consoles watching it
//!   (one atomic load when nobody watches).
//! - [`session`]: the signed, `HttpOnly` login cookie naming one app, bound
//!   to the app's current secret (or the admin token).
//! - [`login`]: login with the app's secret or the admin token, rate limited.
//! - [`api`]: overview, channels, presence members, test events.
//! - [`live`]: the live stream (Server-Sent Events).
//! - [`history`]: each app's connection counts of the last minutes, for
//!   the page's sparkline.
//! - [`assets`]: the page (HTML, one ES module, CSS), compiled in.
//!
//! Turned on by `[console] enabled`: on by default when rusher runs without
//! a config file (the built-in app, a newcomer's first run), off when a
//! config file does not turn it on (a deployment opts in). When off, no
//! `/console` route exists (404, as any unknown path) and `/` stays 404.
//!
//! Front end: plain HTML, one ES module and one CSS file, no framework and
//! no build step: the page is small (a form, two lists, a log), a
//! framework would have to be vendored and kept up to date for little gain,
//! and the files are readable as shipped.

pub mod api;
pub mod assets;
pub mod history;
pub mod live;
pub mod login;
pub mod session;
pub mod tap;

use crate::apps::App;
use crate::config::ConsoleConfig;
use crate::http::error::ApiError;
use crate::hub::Hub;
use crate::throttled_log::ThrottledLog;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::{ready, Ready};
use std::sync::Arc;
use std::time::SystemTime;

/// What the console routes share, for every worker.
pub struct ConsoleState {
    keys: session::SessionKeys,
    admin_token: Option<String>,
    limiter: login::LoginLimiter,
    refused_log: ThrottledLog,
    max_log_events: usize,
    /// Connection counts sampled for the sparkline (see [`history`]).
    pub history: Arc<history::ConnectionHistory>,
}

impl ConsoleState {
    /// The console of `config`; `admin_token` (`[admin] token`) also logs in.
    pub fn new(config: &ConsoleConfig, admin_token: Option<String>) -> Self {
        ConsoleState {
            keys: session::SessionKeys::new(config.session_secret.as_deref()),
            admin_token,
            limiter: login::LoginLimiter::default(),
            refused_log: ThrottledLog::new(10_000),
            max_log_events: config.max_log_events,
            history: Arc::new(history::ConnectionHistory::new(
                std::time::Duration::from_millis(config.sample_interval_ms),
            )),
        }
    }

    /// The app id of the request's valid session cookie, whose credential
    /// (the app's secret, or the admin token) is still the current one.
    fn session_app(&self, req: &HttpRequest, hub: &Hub) -> Option<String> {
        let cookies = req
            .headers()
            .get_all(header::COOKIE)
            .filter_map(|value| value.to_str().ok());
        let value = session::cookie_value(cookies)?;
        self.keys
            .verify(value, SystemTime::now(), |app_id, proof| match proof {
                session::Proof::AppSecret => hub.apps().by_id(app_id).map(|app| app.secret.clone()),
                session::Proof::AdminToken => self.admin_token.clone(),
            })
    }

    /// The app `app_id` when the request's session opens it: 401 without a
    /// valid session (or when its app is gone), 403 for another app's.
    fn authorize(&self, req: &HttpRequest, app_id: &str, hub: &Hub) -> Result<Arc<App>, ApiError> {
        let Some(session) = self.session_app(req, hub) else {
            return Err(ApiError::Unauthorized(
                "not logged in to the console (POST /console/api/login), or the session ended (the app's secret changed)".into(),
            ));
        };
        match hub.apps().by_id(&session) {
            Some(app) if app.id == app_id || app.id_aliases.iter().any(|a| a == app_id) => Ok(app),
            Some(_) => Err(ApiError::Forbidden(format!(
                "this console session is for app {session}, not {app_id}"
            ))),
            None => Err(ApiError::Unauthorized(
                "the session's app no longer exists".into(),
            )),
        }
    }
}

/// The app of a console API request (`{app_id}` in its path), once the
/// request's session cookie opens it: every console API handler takes one,
/// so none answers without the check. Refused as `ConsoleState::authorize`
/// says (401 / 403, `{"error": ...}`).
pub struct ConsoleApp(pub Arc<App>);

impl FromRequest for ConsoleApp {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (Some(state), Some(hub)) = (
            req.app_data::<web::Data<Arc<ConsoleState>>>(),
            req.app_data::<web::Data<Arc<Hub>>>(),
        ) else {
            return ready(Err(ApiError::Unavailable(
                "the console is not configured".into(),
            )));
        };
        let app_id = req.match_info().get("app_id").unwrap_or_default();
        ready(state.authorize(req, app_id, hub).map(ConsoleApp))
    }
}

/// Registers the console routes when `enabled`; none otherwise.
pub fn configure(cfg: &mut web::ServiceConfig, state: Option<web::Data<Arc<ConsoleState>>>) {
    let Some(state) = state else {
        return;
    };
    let api = |path: &str| format!("/console/api/apps/{{app_id}}{path}");
    cfg.app_data(state)
        .route("/", web::get().to(assets::root))
        .route("/console", web::get().to(assets::index))
        .route("/console/", web::get().to(assets::index))
        .route("/console/console.js", web::get().to(assets::script))
        .route("/console/console.css", web::get().to(assets::style))
        .route("/console/api/login", web::post().to(login::login))
        .route("/console/api/logout", web::post().to(login::logout))
        .route("/console/api/session", web::get().to(login::current))
        .route(&api("/overview"), web::get().to(api::overview))
        .route(&api("/channels"), web::get().to(api::channels))
        .route(
            &api("/channels/{channel}/members"),
            web::get().to(api::members),
        )
        .route(&api("/events"), web::post().to(api::send))
        .route(&api("/live"), web::get().to(live::live));
}
