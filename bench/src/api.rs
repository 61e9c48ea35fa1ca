//! A keep-alive HTTP/1.1 client for the signed HTTP API: one TCP connection
//! per client, requests one after another on it (so K clients = K
//! concurrent requests), reconnecting when the server closes it.

use crate::sign;
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;

/// The app an API client talks to.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub id: String,
    pub key: String,
    pub secret: String,
}

pub struct ApiClient {
    addr: SocketAddr,
    app: AppCredentials,
    sender: Option<SendRequest<Full<Bytes>>>,
    events_path: String,
}

/// How a trigger ended.
#[derive(Debug)]
pub enum Outcome {
    Ok,
    /// An HTTP status other than 2xx, with the start of the body.
    Status(u16, String),
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ApiClient {
    pub fn new(addr: SocketAddr, app: AppCredentials) -> Self {
        let events_path = format!("/apps/{}/events", app.id);
        ApiClient {
            addr,
            app,
            sender: None,
            events_path,
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP handshake failed")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// A connection ready for the next request; a kept-alive connection the
    /// server closed meanwhile is replaced.
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        for _ in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                self.connect().await?;
            }
            let sender = self.sender.as_mut().expect("connected above");
            if sender.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("connected above"));
            }
            self.sender = None;
        }
        Err(anyhow!("the server keeps closing new HTTP connections"))
    }

    /// Sends `request`, once more on a new connection when the kept-alive
    /// one closed before the request went out (so nothing is sent twice).
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut request = request;
        for _ in 0..2 {
            let sender = self.ready().await?;
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => {
                        self.sender = None;
                        request = unsent;
                    }
                    None => return Err(error.into_error().into()),
                },
            }
        }
        Err(anyhow!(
            "the server closed the HTTP connection twice before a request went out"
        ))
    }

    /// POSTs one signed `events` request with `body`.
    pub async fn trigger(&mut self, body: String) -> Result<Outcome> {
        let path = self.events_path.clone();
        let (status, body) = self.request("POST", &path, &[], body).await?;
        Ok(if (200..300).contains(&status) {
            Outcome::Ok
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Outcome::Status(status, text)
        })
    }

    /// One signed request to `path` (with the `extra` query parameters) on
    /// the app's API: the status and the whole response body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: String,
    ) -> Result<(u16, Bytes)> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let uri = sign::signed_uri_with(
            method,
            path,
            &self.app.key,
            &self.app.secret,
            body.as_bytes(),
            timestamp,
            extra,
        );
        let host = self.addr.to_string();
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let work = async {
            let response = self.send(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status.as_u16(), body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
            }
        }
    }

    /// The app's id.
    pub fn app_id(&self) -> &str {
        &self.app.id
    }
}

/// The JSON body of a trigger to `channels`.
pub fn event_body(name: &str, channels: &[&str], data: &str) -> String {
    // Channel names and bench data hold no characters JSON escapes; serde
    // keeps this correct for any input anyway.
    serde_json::json!({ "name": name, "channels": channels, "data": data }).to_string()
}
