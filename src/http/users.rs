//! `POST /apps/{id}/users/{user_id}/terminate_connections`.

use super::error::ApiError;
use super::signed::admit;
use super::HttpSettings;
use crate::hub::Hub;
use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse};
use std::sync::Arc;

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`.
/// Closes every socket of the user with 4009 (no reconnect).
pub async fn terminate_connections(
    req: HttpRequest,
    payload: Payload,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
    settings: Data<HttpSettings>,
) -> Result<HttpResponse, ApiError> {
    let (app_id, user_id) = path.into_inner();
    let (app, _) = admit(&req, payload, &hub, &settings, &app_id).await?;
    hub.terminate_user(&app.id, &user_id).await;
    tracing::info!(app_id = %app.id, %user_id, "terminated user connections");
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
