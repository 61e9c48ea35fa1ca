//! `POST /apps/{id}/users/{user_id}/terminate_connections`.

use super::error::ApiError;
use super::signed::Signed;
use crate::hub::Hub;
use actix_web::web::{Data, Path};
use actix_web::HttpResponse;
use std::sync::Arc;

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`.
/// Closes every socket of the user with 4009 (no reconnect).
pub async fn terminate_connections(
    signed: Signed,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (_, user_id) = path.into_inner();
    let Signed { app, .. } = signed;
    hub.terminate_user(&app.id, &user_id).await;
    tracing::info!(app_id = %app.id, %user_id, "terminated user connections");
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
