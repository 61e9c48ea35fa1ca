//! The console page's files, compiled into the binary (`include_str!` of
//! `src/console/assets/`): nothing is fetched from a CDN, so the page works
//! offline and is always the version of the server that serves it.
//!
//! Every asset is sent with a strict Content-Security-Policy (scripts,
//! styles and connections from this origin only; no inline script, no
//! framing), `X-Content-Type-Options: nosniff`, no referrer, and
//! `Cache-Control: no-cache` (revalidated each time: the file names carry
//! no version, and an old script against a new server would misbehave).

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The page's one ES module.
pub const CONSOLE_JS: &str = include_str!("assets/console.js");
/// The page's styles.
pub const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// The policy every console response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

/// `GET /console`.
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/console.js`.
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `GET /console/console.css`.
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

/// `GET /`: to the console (302; a later config may turn it off).
pub async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/console"))
        .finish()
}
