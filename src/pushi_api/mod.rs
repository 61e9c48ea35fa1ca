//! pushi's HTTP API, for the unmodified PyPI `pushi` client (0.6.x), under
//! `/pushi/` on the server's port: a pushi user only changes the client's
//! `base_url` to `http(s)://host:port/pushi/`.
//!
//! The routes and answers follow pushi-service 0.6.10
//! (`pushi/app/controllers/*.py`, answers as appier's `map()` renders them)
//! and are mapped onto what rusher has:
//! - [`session`]: `login` / `logout` and the `sid` token, stateless (signed
//!   with the app secret) so any node of a cluster accepts it;
//! - [`routes`]: `events` → the publish path of `POST /apps/{id}/events`
//!   (same checks and limits) and the store; `subscriptions` → the follow
//!   API ([`crate::hub::persistence`]);
//! - [`associations`]: `webs`, `smtps`, `web_pushes` → the notification
//!   registrations ([`crate::notify`]);
//! - [`apps`]: `apps` (the session's own app; changes through the admin
//!   operations) and `vapid_key`;
//! - [`unsupported`]: the routes rusher does not serve (501 naming what to
//!   use instead);
//! - [`error`]: refusals in pushi's JSON shape;
//! - [`settings`]: the `pushi_api` config section.
//!
//! Every route is one function in the table of [`configure`].

pub mod apps;
pub mod associations;
pub mod auth;
pub mod error;
pub mod routes;
pub mod session;
pub mod settings;
pub mod unsupported;

use crate::apps::admin::AppsAdmin;
use crate::hub::invalidation::{Change, Invalidations, Kind, Received};
use actix_web::{web, HttpRequest, HttpResponse, Resource, ResponseError};
use error::PushiError;
use session::Revoked;
use settings::PushiApiConfig;
use std::sync::Arc;

/// The prefix every pushi route is served under.
pub const PREFIX: &str = "/pushi";

/// What the pushi routes share across workers: the settings, the
/// logged-out tokens of this node, and the app operations `PUT /apps` uses.
pub struct PushiApi {
    /// `[pushi_api]`.
    pub settings: PushiApiConfig,
    /// Tokens ended by `logout` (on any node, see [`Self::with_invalidations`]).
    pub revoked: Arc<Revoked>,
    /// Changes an app (`PUT /apps/{ident}`); `None`: apps cannot change.
    pub apps: Option<AppsAdmin>,
}

impl PushiApi {
    /// The shared state for `settings`, without app changes.
    pub fn new(settings: PushiApiConfig) -> Self {
        PushiApi {
            revoked: Arc::new(Revoked::new(settings.max_revoked_sessions)),
            settings,
            apps: None,
        }
    }

    /// Refuses the tokens logged out through other nodes too, as they
    /// announce them on `invalidations` (starts a task on the current runtime).
    pub fn with_invalidations(self, invalidations: &Invalidations) -> Self {
        let revoked = self.revoked.clone();
        let mut logouts = invalidations.subscribe(Kind::Logouts);
        tokio::spawn(async move {
            loop {
                match logouts.next().await {
                    Received::Change(Change::Logout { nonce, expiry }) => {
                        revoked.revoke(&nonce, expiry, crate::store::now_ms() / 1000);
                    }
                    Received::Change(_) => {}
                    Received::Missed => tracing::warn!(
                        "pushi logouts came faster than they were applied: some tokens logged out on other nodes stay valid here until they expire"
                    ),
                }
            }
        });
        self
    }

    /// With `admin` for `PUT /apps/{ident}`.
    pub fn with_apps(self, admin: AppsAdmin) -> Self {
        PushiApi {
            apps: Some(admin),
            ..self
        }
    }
}

/// Registers the pushi routes under [`PREFIX`] (nothing when disabled).
pub fn configure(cfg: &mut web::ServiceConfig, api: web::Data<PushiApi>) {
    if !api.settings.enabled {
        return;
    }
    use web::{delete, get, post, put};
    cfg.service(
        web::scope(PREFIX)
            .app_data(api)
            // login / logout: GET as the client calls them; POST as well.
            .service(
                route("/login")
                    .route(get().to(auth::login))
                    .route(post().to(auth::login)),
            )
            .service(
                route("/logout")
                    .route(get().to(auth::logout))
                    .route(post().to(auth::logout)),
            )
            .service(
                route("/events")
                    .route(get().to(routes::list_events))
                    .route(post().to(routes::create_event)),
            )
            .service(
                route("/subscriptions")
                    .route(get().to(routes::list_subscriptions))
                    .route(post().to(routes::create_subscription)),
            )
            .service(
                route("/subscriptions/{user_id}/{event}")
                    .route(delete().to(routes::delete_subscription)),
            )
            .service(
                route("/apps")
                    .route(get().to(apps::list))
                    .route(post().to(apps::create)),
            )
            .service(
                route("/apps/{ident}")
                    .route(get().to(apps::show))
                    .route(put().to(apps::update)),
            )
            .service(
                route("/webs")
                    .route(get().to(associations::list_webs))
                    .route(post().to(associations::create_web)),
            )
            .service(route("/webs/{tail:.*}").route(delete().to(associations::delete_web)))
            .service(
                route("/smtps")
                    .route(get().to(associations::list_smtps))
                    .route(post().to(associations::create_smtp)),
            )
            .service(route("/smtps/{email}").route(delete().to(associations::delete_smtps)))
            .service(route("/smtps/{email}/{event}").route(delete().to(associations::delete_smtp)))
            .service(
                route("/web_pushes")
                    .route(get().to(associations::list_web_pushes))
                    .route(post().to(associations::create_web_push)),
            )
            .service(
                route("/web_pushes/{tail:.*}").route(delete().to(associations::delete_web_push)),
            )
            .service(route("/vapid_key").route(get().to(apps::vapid_key)))
            // Not served: 501 with what rusher offers instead.
            .service(association("/apns", unsupported::apns))
            .service(association("/apns/{tail:.*}", unsupported::apns))
            .service(route("/messaging/{kind}").route(post().to(unsupported::messaging)))
            .default_service(web::to(not_found)),
    );
}

/// A pushi path; a method it does not serve gets 405 in pushi's shape.
fn route(path: &str) -> Resource {
    web::resource(path).default_service(web::to(|req: HttpRequest| async move {
        PushiError::method_not_allowed(format!(
            "{} {} is not served by pushi's API",
            req.method(),
            req.path()
        ))
        .error_response()
    }))
}

/// An association path (list, create, delete) answered by `handler`.
fn association<F>(path: &str, handler: F) -> Resource
where
    F: actix_web::Handler<()>,
    F::Output: actix_web::Responder + 'static,
{
    route(path)
        .route(web::get().to(handler.clone()))
        .route(web::post().to(handler.clone()))
        .route(web::delete().to(handler))
}

/// Any other path under the prefix: 404 in pushi's shape.
async fn not_found(req: HttpRequest) -> HttpResponse {
    PushiError::not_found(format!(
        "Request {} '{}' not handled",
        req.method(),
        req.path()
    ))
    .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::local::LocalAdapter;
    use crate::apps::AppRegistry;
    use crate::config::{AppConfig, WebhookSettings};
    use crate::http::HttpSettings;
    use crate::hub::node::Node;
    use crate::hub::Hub;
    use crate::metrics::Metrics;
    use crate::webhooks::Webhooks;
    use actix_web::http::{Method, StatusCode};
    use actix_web::{test, App};
    use serde_json::Value;
    use std::sync::Arc;

    fn hub() -> Arc<Hub> {
        let disabled = AppConfig {
            enabled: false,
            ..AppConfig::with_credentials("off", "off-key", "off-secret")
        };
        let apps = Arc::new(AppRegistry::new([
            AppConfig::with_credentials("1", "key", "secret"),
            disabled,
        ]));
        let node = Arc::new(Node::new(&apps));
        let metrics = Metrics::new();
        let webhooks = Webhooks::start(&apps, &WebhookSettings::default(), metrics.clone(), false);
        let adapter = Arc::new(LocalAdapter::new(node.clone()));
        Arc::new(Hub::new(apps, node, adapter, metrics, webhooks, None, 16))
    }

    /// Status and JSON body of `method uri` (with `body`) on the pushi routes.
    async fn call(method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
        let api = web::Data::new(PushiApi::new(PushiApiConfig::default()));
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(hub()))
                .app_data(web::Data::new(HttpSettings {
                    max_request_bytes: 1024,
                    metrics: false,
                }))
                .configure(|cfg| configure(cfg, api)),
        )
        .await;
        let request = test::TestRequest::default()
            .method(method)
            .uri(uri)
            .set_payload(body.to_owned())
            .to_request();
        let response = test::call_service(&app, request).await;
        let status = response.status();
        let body = test::read_body(response).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn token(body: &Value) -> String {
        body["token"].as_str().unwrap_or_default().to_owned()
    }

    #[actix_web::test]
    async fn login_needs_the_apps_id_key_and_secret_and_an_enabled_app() {
        let (status, body) = call(
            Method::GET,
            "/pushi/login?app_id=1&app_key=key&app_secret=secret",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!token(&body).is_empty());
        for query in [
            "app_id=1&app_key=key&app_secret=wrong",
            "app_id=1&app_key=wrong&app_secret=secret",
            "app_id=2&app_key=key&app_secret=secret",
            "",
            "app_id=off&app_key=off-key&app_secret=off-secret",
        ] {
            let (status, body) = call(Method::GET, &format!("/pushi/login?{query}"), "").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{query}");
            assert_eq!(body["result"], "error", "{query}");
        }
    }

    #[actix_web::test]
    async fn calls_without_a_valid_sid_are_403_in_pushis_shape() {
        for uri in [
            "/pushi/events",
            "/pushi/events?sid=",
            "/pushi/events?sid=garbage",
            "/pushi/events?sid=31.1.00000000000000000000000000000000.00",
        ] {
            let (status, body) = call(Method::GET, uri, "").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
            assert_eq!(body["code"], 403);
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("User not authenticated")),
                "{body}"
            );
        }
    }

    #[actix_web::test]
    async fn a_session_publishes_and_logout_ends_it() {
        let api = web::Data::new(PushiApi::new(PushiApiConfig::default()));
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(hub()))
                .app_data(web::Data::new(HttpSettings {
                    max_request_bytes: 1024,
                    metrics: false,
                }))
                .configure(|cfg| configure(cfg, api)),
        )
        .await;
        let send = |method: Method, uri: String, body: &str| {
            test::TestRequest::default()
                .method(method)
                .uri(&uri)
                .set_payload(body.to_owned())
                .to_request()
        };
        let login = test::call_service(
            &app,
            send(
                Method::GET,
                "/pushi/login?app_id=1&app_key=key&app_secret=secret".into(),
                "",
            ),
        )
        .await;
        let sid = token(&serde_json::from_slice(&test::read_body(login).await).unwrap_or_default());
        let event =
            |body: &'static str| send(Method::POST, format!("/pushi/events?sid={sid}"), body);
        let published = test::call_service(&app, event(r#"{"data": "hi", "channel": "c"}"#)).await;
        assert_eq!(published.status(), StatusCode::OK);
        let no_data = test::call_service(&app, event(r#"{"channel": "c"}"#)).await;
        assert_eq!(no_data.status(), StatusCode::BAD_REQUEST);
        let too_long = test::call_service(&app, event(r#"{"data": "x", "event": ""}"#)).await;
        assert_eq!(
            too_long.status(),
            StatusCode::BAD_REQUEST,
            "same checks as /events"
        );
        let unsupported = test::call_service(
            &app,
            send(Method::GET, format!("/pushi/apns?sid={sid}"), ""),
        )
        .await;
        assert_eq!(unsupported.status(), StatusCode::NOT_IMPLEMENTED);
        let logout = test::call_service(
            &app,
            send(Method::GET, format!("/pushi/logout?sid={sid}"), ""),
        )
        .await;
        assert_eq!(logout.status(), StatusCode::OK);
        let after = test::call_service(&app, event(r#"{"data": "hi"}"#)).await;
        assert_eq!(after.status(), StatusCode::FORBIDDEN);
    }

    #[actix_web::test]
    async fn unknown_pushi_paths_are_404_and_wrong_methods_405() {
        assert_eq!(
            call(Method::GET, "/pushi/nope", "").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(Method::PUT, "/pushi/events", "").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
