//! `GET /console/api/apps/{app_id}/live`: the console's live stream, as
//! Server-Sent Events (one-way, what the page needs; the browser's
//! `EventSource` reconnects by itself, sends the `HttpOnly` cookie, and no
//! WebSocket framing is needed on either side).
//!
//! Events: first `history` (the app's connection counts of the last
//! minutes, see [`super::history`]: `{"interval_ms", "samples": [[time_ms,
//! connections], ...]}`), then `log` (a [`super::tap::ConsoleEvent`]) as
//! things happen, and
//! `stats` every [`STATS_EVERY`]: `{"connections", "dropped", "time_ms"}`
//! (`connections`: the app's open connections on every node)
//! (`dropped`: log events this stream lost because the page read too
//! slowly; see [`super::tap`]). The stream ends when the server stops
//! accepting (shutdown), at the next stats tick.

use super::tap::{sse_frame, Watch};
use super::{ConsoleApp, ConsoleState};
use crate::hub::Hub;
use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::HttpResponse;
use futures_util::Stream;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How often the stream carries the connection count (the sparkline's step).
pub const STATS_EVERY: Duration = Duration::from_secs(1);

/// The response body: the watcher's queue until an empty chunk (the end
/// mark) or the client goes (the body is dropped, and the watch with it).
struct LiveBody {
    watch: Watch,
}

impl Stream for LiveBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.watch.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) if frame.is_empty() => Poll::Ready(None),
            Poll::Ready(frame) => Poll::Ready(frame.map(Ok)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `GET /console/api/apps/{app_id}/live`.
pub async fn live(
    ConsoleApp(app): ConsoleApp,
    hub: Data<Arc<Hub>>,
    state: Data<Arc<ConsoleState>>,
) -> HttpResponse {
    let watch = hub.console().watch(&app.id);
    let sender = watch.sender.clone();
    // Queued before any log event can be: the queue is empty and bounded
    // by more than these two frames.
    let _ = sender.try_send(Bytes::from_static(b"retry: 2000\n\n"));
    let _ = sender.try_send(sse_frame("history", &state.history.json(&app.id)));
    let dropped = watch.dropped.clone();
    let hub = hub.get_ref().clone();
    // Ends with the stream: `closed` resolves when the body is dropped.
    actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(STATS_EVERY);
        loop {
            tokio::select! {
                _ = sender.closed() => break,
                _ = ticks.tick() => {}
            }
            if !hub.is_accepting() {
                let _ = sender.try_send(Bytes::new());
                break;
            }
            let stats = serde_json::json!({
                "connections": hub.app_connection_count(&app.id),
                "dropped": dropped.load(Ordering::Relaxed),
                "time_ms": crate::store::now_ms(),
            });
            // A full queue: this tick's stats are skipped like a log event.
            let _ = sender.try_send(sse_frame("stats", &stats.to_string()));
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(LiveBody { watch })
}
