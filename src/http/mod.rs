//! The HTTP API the server SDKs call, plus health, readiness and metrics.
//!
//! - [`signed`]: app lookup, body limit and request signature for every API route.
//! - [`events`]: triggering events, single and batch.
//! - [`channels`]: channel list, channel info, presence users.
//! - [`users`]: terminating a user's connections.
//! - [`persistence`]: offline subscriptions and the messages kept for users.
//! - [`error`]: refusals as status + JSON body, in one place.

pub mod channels;
pub mod error;
pub mod events;
pub mod persistence;
pub mod signed;
pub mod users;

use crate::hub::Hub;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
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
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route("/apps/{app_id}/events", web::post().to(events::trigger))
        .route(
            "/apps/{app_id}/batch_events",
            web::post().to(events::trigger_batch),
        )
        .route("/apps/{app_id}/channels", web::get().to(channels::list))
        .route(
            "/apps/{app_id}/channels/{channel}",
            web::get().to(channels::show),
        )
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            web::get().to(channels::users),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            web::post().to(users::terminate_connections),
        )
        .route(
            "/apps/{app_id}/subscribe",
            web::post().to(persistence::subscribe),
        )
        .route(
            "/apps/{app_id}/unsubscribe",
            web::post().to(persistence::unsubscribe),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/subscriptions",
            web::get().to(persistence::subscriptions),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/messages",
            web::get().to(persistence::messages),
        );
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
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(hub.metrics().render())
}

/// Any other path: a WebSocket upgrade gets close code 4005, the rest a JSON 404.
pub async fn not_found(req: HttpRequest, stream: web::Payload) -> actix_web::Result<HttpResponse> {
    if crate::ws::is_upgrade(&req) {
        return crate::ws::path_not_found(req, stream).await;
    }
    Ok(
        ApiError::NotFound(format!("no route for {} {}", req.method(), req.path()))
            .error_response(),
    )
}
