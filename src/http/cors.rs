//! Cross-origin access for the transports a browser page on another origin
//! uses with `XMLHttpRequest` or `EventSource` (the Fetch standard's CORS
//! protocol): every origin may read the responses, and a preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) is answered 204.
//!
//! No credentials are allowed: pusher-js sends none (`withCredentials` is
//! off) and authorises with signatures, not cookies.

use crate::http::error::ApiError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "86400";

/// Adds the CORS response headers for `req` to a response being built.
pub fn allow(req: &HttpRequest, response: &mut HttpResponseBuilder) {
    response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed_origin(req)));
    response.insert_header((header::VARY, "Origin"));
}

/// Adds the CORS headers to a finished response (errors included, so a
/// page can read why it was refused).
pub fn allow_response(req: &HttpRequest, response: &mut HttpResponse) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed_origin(req));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// An API refusal (status, JSON `{"error": ...}`, `Allow` on a 405) a
/// page on another origin can read.
pub fn refuse(req: &HttpRequest, error: ApiError) -> HttpResponse {
    let mut response = error.error_response();
    allow_response(req, &mut response);
    response
}

/// The answer to a preflight: the methods given, and the request headers
/// the browser asked for (pusher-js sends `Content-Type: application/json`).
pub fn preflight(req: &HttpRequest, methods: &'static str) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    allow(req, &mut response);
    response.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, methods));
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()));
    }
    response.insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE));
    response.finish()
}

/// The request's `Origin` echoed back (a valid header value by
/// construction), or `*` when it has none.
fn allowed_origin(req: &HttpRequest) -> HeaderValue {
    req.headers()
        .get(header::ORIGIN)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("*"))
}
