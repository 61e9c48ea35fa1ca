//! `POST /apps/{id}/users/{user_id}/terminate_connections`, also served as
//! `POST /users/{user_id}/terminate_connections` (the PyPI SDK's path).

use super::error::ApiError;
use super::signed::Signed;
use crate::hub::Hub;
use actix_web::web::{Data, Path};
use actix_web::HttpResponse;
use serde::Deserialize;
use std::sync::Arc;

/// The path segment both forms of the route share.
#[derive(Deserialize)]
pub struct UserPath {
    user_id: String,
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`, or without
/// `/apps/{app_id}` (the app is then the signing key's, see [`Signed`]).
/// Closes every socket of the user with 4009 (no reconnect).
pub async fn terminate_connections(
    signed: Signed,
    path: Path<UserPath>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let UserPath { user_id } = path.into_inner();
    let Signed { app, .. } = signed;
    hub.terminate_user(&app.id, &user_id).await;
    tracing::info!(app_id = %app.id, %user_id, "terminated user connections");
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
