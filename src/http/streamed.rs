//! A long HTTP response whose body an actor writes as it goes (xhr_streaming,
//! a long poll, Server-Sent Events), through a bounded channel: a client
//! that reads too slowly fills it and is treated as a slow client, never
//! buffered without bound.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use futures_util::Stream;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// A 200 for a long response of `content_type` (a stream, a poll): CORS
/// for `req`, never cached, and not buffered by proxies such as nginx
/// (`X-Accel-Buffering: no`), so each chunk reaches the client at once.
pub fn response(req: &HttpRequest, content_type: &str) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    super::cors::allow(req, &mut response);
    response
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store, no-cache, max-age=0"))
        .insert_header(("X-Accel-Buffering", "no"));
    response
}

/// Why a chunk was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The client reads more slowly than frames arrive: the channel is full.
    Full,
    /// The response is over (the client went away or it was ended).
    Closed,
}

/// The writing end of a streamed response body.
#[derive(Debug, Clone)]
pub struct BodyWriter {
    chunks: mpsc::Sender<Bytes>,
    /// Changes (is dropped) when the body is dropped: a watcher holding it
    /// does not keep the response open, as a clone of `chunks` would.
    gone: watch::Receiver<()>,
}

impl BodyWriter {
    /// Queues one chunk; never waits.
    pub fn write(&self, chunk: impl Into<Bytes>) -> Result<(), WriteError> {
        self.chunks
            .try_send(chunk.into())
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => WriteError::Full,
                mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
            })
    }

    /// Whether the response is over (the client closed it or it was dropped).
    pub fn is_closed(&self) -> bool {
        self.chunks.is_closed()
    }

    /// Resolves when the response is over, for the writer to notice a
    /// client that went away without waiting for its next write.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut gone = self.gone.clone();
        async move {
            // Nothing is ever sent: this returns when the body is dropped.
            let _ = gone.changed().await;
        }
    }
}

/// The response body: the chunks written, until every writer is dropped.
struct Body {
    chunks: ReceiverStream<Bytes>,
    /// Dropped with the body, which wakes [`BodyWriter::closed`].
    _gone: watch::Sender<()>,
}

impl Stream for Body {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.chunks)
            .poll_next(cx)
            .map(|chunk| chunk.map(Ok))
    }
}

/// A body of at most `capacity` queued chunks: the writer, and the stream
/// to hand to `HttpResponseBuilder::streaming`. Dropping every writer ends
/// the response.
pub fn body(
    capacity: usize,
) -> (
    BodyWriter,
    impl Stream<Item = Result<Bytes, Infallible>> + 'static,
) {
    let (chunks, receiver) = mpsc::channel(capacity.max(1));
    let (gone_tx, gone) = watch::channel(());
    (
        BodyWriter { chunks, gone },
        Body {
            chunks: ReceiverStream::new(receiver),
            _gone: gone_tx,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn bounded_and_closes_when_the_reader_goes() {
        let (writer, stream) = body(2);
        assert_eq!(writer.write("a"), Ok(()));
        assert_eq!(writer.write("b"), Ok(()));
        assert_eq!(writer.write("c"), Err(WriteError::Full));
        let mut stream = Box::pin(stream);
        assert_eq!(
            stream.next().await.and_then(Result::ok),
            Some(Bytes::from("a"))
        );
        drop(stream);
        assert!(writer.is_closed());
        writer.closed().await;
        assert_eq!(writer.write("d"), Err(WriteError::Closed));
    }

    #[tokio::test]
    async fn a_watcher_does_not_keep_the_body_open() {
        let (writer, stream) = body(4);
        let watching = writer.closed();
        assert_eq!(writer.write("a"), Ok(()));
        drop(writer);
        let mut stream = Box::pin(stream);
        assert_eq!(
            stream.next().await.and_then(Result::ok),
            Some(Bytes::from("a"))
        );
        // Every writer dropped: the body ends although a watcher waits.
        assert!(stream.next().await.is_none());
        drop(stream);
        watching.await;
    }
}
