//! `GET /apps/{app_id}/channels/{channel}/history?since=SERIAL&limit=N`:
//! a channel's kept events, oldest first, paged with a `next` cursor.

use super::error::{bad_request, ApiError};
use super::signed::{query_param, Signed};
use crate::hub::Hub;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use std::sync::Arc;

/// Events per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events per page.
pub const MAX_LIMIT: usize = 1000;

/// Parses `since` (default 0) and `limit` (default 100, 1..=1000).
pub(crate) fn paging(since: Option<&str>, limit: Option<&str>) -> Result<(u64, usize), ApiError> {
    let since = match since {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            bad_request(format!(
                "since must be a serial (an integer ≥ 0), got `{text}`"
            ))
        })?,
    };
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad_request(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}, got `{text}`"
                )))
            }
        },
    };
    Ok((since, limit))
}

/// `{"events": [{"serial","event","data","time_ms","socket_id"?}], "next", "oldest", "latest"}`;
/// 400 for a bad `since`/`limit` or channel name, 404 when the app keeps
/// no history for the channel (history off, or no `history_channels` prefix
/// matches), 503 when the store the page needs (Redis, or MongoDB for long
/// retention) cannot be reached.
pub async fn show(
    req: HttpRequest,
    signed: Signed,
    path: Path<(String, String)>,
    hub: Data<Arc<Hub>>,
) -> Result<HttpResponse, ApiError> {
    let (_, channel) = path.into_inner();
    let Signed { app, .. } = signed;
    super::channels::channel_name(&channel, app.max_channel_name_length)?;
    let (since, limit) = paging(
        query_param(&req, "since").as_deref(),
        query_param(&req, "limit").as_deref(),
    )?;
    match hub.history_page(&app, &channel, since, limit).await {
        Some(Ok(page)) => Ok(HttpResponse::Ok().json(page)),
        Some(Err(reason)) => Err(ApiError::Unavailable(format!(
            "{reason}; try again later (channel `{channel}`)"
        ))),
        None => Err(ApiError::NotFound(format!(
            "app `{}` keeps no history for channel `{channel}` (history is off or no history_channels prefix matches)",
            app.id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(paging(None, None).ok(), Some((0, 100)));
        assert_eq!(paging(Some("7"), Some("1000")).ok(), Some((7, 1000)));
        for (since, limit) in [
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("0")),
            (None, Some("1001")),
            (None, Some("ten")),
        ] {
            assert!(paging(since, limit).is_err(), "{since:?} {limit:?}");
        }
    }
}
