//! The HTTP API the server SDKs call, plus health, readiness and metrics.
//!
//! - [`signed`]: app lookup, body limit and request signature for every API route.
//! - [`events`]: triggering events, single and batch.
//! - [`channels`]: channel list, channel info, presence users.
//! - [`history`]: a channel's kept events with serials, paged.
//! - [`users`]: terminating a user's connections.
//! - [`persistence`]: offline subscriptions and the messages kept for users.
//! - [`notifications`]: registrations of the notification handlers.
//! - [`error`]: refusals as status + JSON body, in one place.
//! - [`admin`]: the admin API (`/admin/apps`), behind the `[admin] token`.
//!
//! And what the HTTP transports (`xhr/`, `sse/`) share:
//! - [`streamed`]: a long response body written by an actor, bounded.
//! - [`cors`]: cross-origin access for browser pages.
//! - [`sessions`]: the node-wide cap on open HTTP sessions.

pub mod admin;
pub mod channels;
pub mod cors;
pub mod error;
pub mod events;
pub mod history;
pub mod notifications;
pub mod persistence;
pub mod sessions;
pub mod signed;
pub mod streamed;
pub mod users;

use crate::hub::Hub;
use actix_web::{
    guard, web, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, ResponseError,
};
use error::ApiError;
use std::sync::Arc;

/// HTTP settings taken from the server config.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Largest request body accepted.
    pub max_request_bytes: usize,
    /// Whether `/metrics` is served.
    pub metrics: bool,
}

/// Registers the API, health and metrics routes.
///
/// Every GET route answers HEAD the same way without the body (RFC 9110
/// §9.3.2; load balancers probe with HEAD), and a known path asked with
/// another method gets 405 with `Allow` instead of a 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/health", health))
        .service(get("/ready", ready))
        .service(get("/metrics", metrics))
        .service(post("/apps/{app_id}/events", events::trigger))
        .service(post("/apps/{app_id}/batch_events", events::trigger_batch))
        .service(get("/apps/{app_id}/channels", channels::list))
        .service(get("/apps/{app_id}/channels/{channel}", channels::show))
        .service(get(
            "/apps/{app_id}/channels/{channel}/users",
            channels::users,
        ))
        .service(get(
            "/apps/{app_id}/channels/{channel}/history",
            history::show,
        ))
        .service(post(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            users::terminate_connections,
        ))
        // The PyPI SDK (3.3) posts here, without `/apps/{app_id}`: the app is
        // the one whose key signed the request (see `signed`).
        .service(post(
            "/users/{user_id}/terminate_connections",
            users::terminate_connections,
        ))
        .service(post("/apps/{app_id}/subscribe", persistence::subscribe))
        .service(post("/apps/{app_id}/unsubscribe", persistence::unsubscribe))
        .service(get(
            "/apps/{app_id}/users/{user_id}/subscriptions",
            persistence::subscriptions,
        ))
        .service(get(
            "/apps/{app_id}/users/{user_id}/messages",
            persistence::messages,
        ))
        .service(post(
            "/apps/{app_id}/notifications/subscribe",
            notifications::subscribe,
        ))
        .service(post(
            "/apps/{app_id}/notifications/unsubscribe",
            notifications::unsubscribe,
        ))
        .service(get("/apps/{app_id}/notifications", notifications::list));
}

/// `path` served by `handler` for GET and HEAD; any other method gets 405.
fn get<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let get_or_head = guard::Any(guard::Get()).or(guard::Head());
    web::resource(path)
        .route(web::route().guard(get_or_head).to(handler))
        .default_service(web::to(|req: HttpRequest| {
            method_not_allowed(req, "GET, HEAD")
        }))
}

/// `path` served by `handler` for POST; any other method gets 405.
fn post<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|req: HttpRequest| method_not_allowed(req, "POST")))
}

/// 405 with `Allow: {allow}` and a JSON error naming the refused request.
async fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    ApiError::MethodNotAllowed {
        message: format!("{} {} is not served; use {allow}", req.method(), req.path()),
        allow,
    }
    .error_response()
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn ready(hub: web::Data<Arc<Hub>>) -> HttpResponse {
    if hub.is_accepting() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "shutting down" }))
    }
}

async fn metrics(hub: web::Data<Arc<Hub>>, settings: web::Data<HttpSettings>) -> HttpResponse {
    if !settings.metrics {
        return ApiError::NotFound("metrics are disabled".into()).error_response();
    }
    hub.refresh_history_gauges();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(hub.metrics().render())
}

/// Any other path: a WebSocket upgrade gets close code 4005, the rest a JSON 404.
pub async fn not_found(req: HttpRequest) -> actix_web::Result<HttpResponse> {
    if crate::ws::is_upgrade(&req) {
        return crate::ws::path_not_found(req).await;
    }
    Ok(
        ApiError::NotFound(format!("no route for {} {}", req.method(), req.path()))
            .error_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::local::LocalAdapter;
    use crate::apps::AppRegistry;
    use crate::config::{AppConfig, WebhookSettings};
    use crate::hub::node::Node;
    use crate::metrics::Metrics;
    use crate::protocol::error::ErrorCode;
    use crate::webhooks::Webhooks;
    use actix_web::http::{header, Method, StatusCode};
    use actix_web::{test, App};

    fn hub() -> Arc<Hub> {
        let apps = Arc::new(AppRegistry::new([AppConfig::with_credentials(
            "1", "key", "secret",
        )]));
        let node = Arc::new(Node::new(&apps));
        let metrics = Metrics::new();
        let webhooks = Webhooks::start(&apps, &WebhookSettings::default(), metrics.clone(), false);
        let adapter = Arc::new(LocalAdapter::new(node.clone()));
        Arc::new(Hub::new(apps, node, adapter, metrics, webhooks, None, 16))
    }

    /// Status and `Allow` header of `method path` on the API routes.
    async fn answer(
        hub: &Arc<Hub>,
        metrics: bool,
        method: Method,
        path: &str,
    ) -> (StatusCode, Option<String>) {
        let settings = HttpSettings {
            max_request_bytes: 1024,
            metrics,
        };
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(hub.clone()))
                .app_data(web::Data::new(settings))
                .configure(configure),
        )
        .await;
        let request = test::TestRequest::default()
            .method(method)
            .uri(path)
            .to_request();
        let response = test::call_service(&app, request).await;
        let allow = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (response.status(), allow)
    }

    #[actix_web::test]
    async fn head_probes_answer_like_get_including_draining_and_disabled_metrics() {
        let hub = hub();
        for path in ["/health", "/ready", "/metrics"] {
            let head = answer(&hub, true, Method::HEAD, path).await;
            assert_eq!(head.0, StatusCode::OK, "HEAD {path}");
        }
        let disabled = answer(&hub, false, Method::HEAD, "/metrics").await;
        assert_eq!(disabled.0, StatusCode::NOT_FOUND);
        hub.close_all(ErrorCode::ServerShuttingDown);
        for method in [Method::GET, Method::HEAD] {
            let ready = answer(&hub, true, method.clone(), "/ready").await;
            assert_eq!(ready.0, StatusCode::SERVICE_UNAVAILABLE, "{method} /ready");
            let health = answer(&hub, true, method.clone(), "/health").await;
            assert_eq!(health.0, StatusCode::OK, "{method} /health while draining");
        }
    }

    #[actix_web::test]
    async fn a_known_path_with_another_method_is_405_with_allow() {
        let hub = hub();
        let probe = answer(&hub, true, Method::DELETE, "/ready").await;
        assert_eq!(
            probe,
            (StatusCode::METHOD_NOT_ALLOWED, Some("GET, HEAD".into()))
        );
        let events = answer(&hub, true, Method::GET, "/apps/1/events").await;
        assert_eq!(
            events,
            (StatusCode::METHOD_NOT_ALLOWED, Some("POST".into()))
        );
        let terminate = answer(&hub, true, Method::GET, "/users/u/terminate_connections").await;
        assert_eq!(terminate.0, StatusCode::METHOD_NOT_ALLOWED);
        // An unknown path stays a 404 (the app's default service).
        let unknown = answer(&hub, true, Method::GET, "/apps/1/nope").await;
        assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn terminate_without_the_apps_prefix_finds_the_app_by_its_signed_key() {
        let hub = hub();
        // No auth_key: nothing names the app.
        let bare = answer(&hub, true, Method::POST, "/users/u/terminate_connections").await;
        assert_eq!(bare.0, StatusCode::UNAUTHORIZED);
        let stranger = answer(
            &hub,
            true,
            Method::POST,
            "/users/u/terminate_connections?auth_key=nobody",
        )
        .await;
        assert_eq!(stranger.0, StatusCode::UNAUTHORIZED);
        // The app's key but no valid signature: still refused.
        let unsigned = answer(
            &hub,
            true,
            Method::POST,
            "/users/u/terminate_connections?auth_key=key&auth_timestamp=1&auth_signature=00",
        )
        .await;
        assert_eq!(unsigned.0, StatusCode::UNAUTHORIZED);
    }
}
