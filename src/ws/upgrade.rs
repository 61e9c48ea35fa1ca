//! actix-http's upgrade service: a request asking for a WebSocket
//! (`Connection: upgrade` with `Upgrade: websocket`, RFC 6455 §4.1; actix-http
//! also sends CONNECT here) arrives with its connection, instead of being
//! answered by the HTTP/1 dispatcher. Other upgrades (`h2c`, ...) stay with
//! the dispatcher, which answers them as plain requests.
//!
//! The request still goes through the whole app (routes, middleware,
//! metrics, the WebSocket admission in [`super`]), with a payload read from
//! the socket by [`super::socket`]; only the answer's I/O differs: the
//! response head is encoded with the connection's HTTP/1 codec and then
//! the connection is [`socket::Upgraded`]: a WebSocket (101) for as long as
//! its session runs, any other answer written once and closed (the
//! connection cannot go back to the dispatcher, so `Connection: close`).

use super::context::Handover;
use super::inbound;
use super::socket::{self, Read, Served, Upgraded};
use actix_codec::{Encoder, Framed, FramedParts};
use actix_http::body::{BoxBody, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, HttpMessage, Method, Payload, Request, Response};
use actix_service::{Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::web::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use std::fmt;
use std::future::{poll_fn, Future};
use std::marker::PhantomData;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};

/// Marks a request the upgrade service runs through the app: only such a
/// request can be answered with a WebSocket (see [`super::context::start`]).
/// actix-http sends here only `Upgrade: websocket` exactly and no chunked
/// body, while the handshake check takes any `Upgrade` naming websocket: a
/// 101 the dispatcher wrote would leave the client with no session.
#[derive(Debug, Clone, Copy)]
pub struct OnUpgradeService;

/// The upgrade service's factory: one more instance of the app per worker
/// (the dispatcher's own instance cannot be shared with this service).
pub struct Upgrade<S, B> {
    app: S,
    config: AppConfig,
    _body: PhantomData<B>,
}

impl<S, B> Upgrade<S, B> {
    /// Serves upgrade requests with `app`, configured with `config` (as the
    /// dispatcher's instance is).
    pub fn new(app: S, config: AppConfig) -> Self {
        Upgrade {
            app,
            config,
            _body: PhantomData,
        }
    }
}

impl<T, S, B> ServiceFactory<(Request, Framed<T, Codec>)> for Upgrade<S, B>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: ServiceFactory<Request, Config = AppConfig>,
    S::Future: 'static,
    S::Service: 'static,
    S::Error: Into<actix_web::Error>,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_http::Error;
    type Config = ();
    type Service = UpgradeService<S::Service, B>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Service, ()>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(self.config.clone());
        Box::pin(async move {
            match app.await {
                Ok(app) => Ok(UpgradeService {
                    app: Rc::new(app),
                    _body: PhantomData,
                }),
                Err(error) => {
                    tracing::error!(?error, "cannot build the app for upgraded connections");
                    Err(())
                }
            }
        })
    }
}

/// Answers one upgrade request (never with an error: failures end the
/// connection and are logged) and serves its connection to the end.
pub struct UpgradeService<A, B> {
    app: Rc<A>,
    _body: PhantomData<B>,
}

impl<T, A, B> Service<(Request, Framed<T, Codec>)> for UpgradeService<A, B>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    A: Service<Request> + 'static,
    A::Error: Into<actix_web::Error>,
    A::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_http::Error;
    type Future = LocalBoxFuture<'static, Result<(), actix_http::Error>>;

    actix_service::always_ready!();

    fn call(&self, (req, framed): (Request, Framed<T, Codec>)) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move {
            // Boxed, so that the request's whole run through the app (its
            // future, the dispatcher's buffers) is freed before the
            // connection's long life; only the socket and the session stay.
            if let Some(upgraded) = Box::pin(answer(&*app, req, framed)).await {
                upgraded.await;
            }
            Ok(())
        })
    }
}

/// Runs `req` through the app while its payload is read from the socket;
/// gives the connection ready to write the answer and serve to its end
/// (`None`: the answer's head could not be encoded, the connection ends).
async fn answer<T, A, B>(app: &A, req: Request, framed: Framed<T, Codec>) -> Option<Upgraded<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
    A: Service<Request>,
    A::Error: Into<actix_web::Error>,
    A::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    // The dispatcher's read and write buffers end here: what the client
    // sent after its request head is copied out (the read buffer is 8 KiB).
    let FramedParts {
        mut io,
        mut codec,
        read_buf,
        write_buf,
        ..
    } = framed.into_parts();
    let head_only = req.head().method == Method::HEAD;
    let (sender, receiver) = inbound::channel();
    if !read_buf.is_empty() {
        sender.put(Bytes::copy_from_slice(&read_buf));
    }
    drop(read_buf);
    let mut payload = socket::Payload::new(Some(sender));
    let (req, _) = req.replace_payload(Payload::Stream {
        payload: Box::pin(receiver) as actix_http::BoxedPayloadStream,
    });
    req.extensions_mut().insert(OnUpgradeService);
    // A handler may read the body before it answers: feed it meanwhile.
    let mut call = pin!(app.call(req));
    let result = poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        while socket::feed(&mut io, &mut payload, cx) != socket::Fed::Nothing {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
        }
        Poll::Pending
    })
    .await;
    let response: Response<BoxBody> = match result {
        Ok(response) => response.into().map_into_boxed_body(),
        Err(error) => Response::from(error.into()),
    };
    let (mut head, body) = response.into_parts();
    let upgraded = head.status() == actix_http::StatusCode::SWITCHING_PROTOCOLS;
    // A WebSocket the handler started (context::start): it serves the
    // connection, with what the client sent after its request head.
    let handover = head
        .extensions_mut()
        .remove::<Handover>()
        .filter(|_| upgraded);
    if !upgraded {
        head.head_mut().set_connection_type(ConnectionType::Close);
    }
    // On an upgrade request the codec sends a streamed body as it is (no
    // chunked encoding) until the connection closes, a sized one as is.
    let size = body.size();
    // A HEAD answer's head says what GET's would; no body follows.
    let body = if head_only { BoxBody::new(()) } else { body };
    // Responses to requests pipelined before this one, not yet written.
    let mut encoded: BytesMut = write_buf;
    if let Err(error) = codec.encode(Message::Item((head, size)), &mut encoded) {
        tracing::debug!(%error, "cannot encode the response head");
        return None;
    }
    let served: Box<dyn Served> = match handover {
        Some(Handover(mut session)) => {
            let (unread, open) = payload.into_unread();
            if let Some(unread) = unread {
                session.input(Read::Bytes(&unread));
            }
            if !open {
                session.input(Read::End);
            }
            session
        }
        None => Box::new(socket::Body::new(body, payload)),
    };
    Some(Upgraded::new(io, encoded.freeze(), served))
}
