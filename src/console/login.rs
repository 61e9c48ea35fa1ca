//! `POST /console/api/login`, `POST /console/api/logout` and
//! `GET /console/api/session`.
//!
//! A login names an app and proves it with the app's secret, or with the
//! `[admin] token` when one is set (an operator can then open any app).
//! Both are compared in constant time. A refusal is 401 whatever was wrong
//! (unknown app or wrong secret: the answer does not tell which apps
//! exist), counted in `rusher_console_logins_total{result="refused"}`, and
//! costs the client address a token of a [`TokenBucket`]
//! ([`LOGIN_BURST`] refusals at once, then [`LOGIN_RATE`] a second): past
//! that every attempt is 429 with `Retry-After`, before the secret is even
//! looked at (`result="limited"`). Successful logins cost nothing.

use super::session::{self, SESSION_LIFETIME};
use super::ConsoleState;
use crate::abuse::bucket::TokenBucket;
use crate::abuse::client_ip::limit_key;
use crate::abuse::ConnectionRate;
use crate::hub::Hub;
use actix_web::http::{header, StatusCode};
use actix_web::web::{Data, Json};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Refused logins a client address may make at once.
pub const LOGIN_BURST: u32 = 5;
/// Refused logins a second a client address may make past the burst.
pub const LOGIN_RATE: u32 = 1;
/// Addresses tracked at most; full buckets are forgotten first.
const MAX_TRACKED: usize = 10_000;

/// Refused logins by client address (IPv4, or IPv6 /64).
#[derive(Default)]
pub struct LoginLimiter {
    buckets: Mutex<HashMap<IpAddr, (TokenBucket, Option<Instant>)>>,
}

impl LoginLimiter {
    /// `Err(wait)` while `ip` is blocked after too many refusals.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(buckets) = self.buckets.lock() else {
            return Ok(());
        };
        match buckets.get(&limit_key(ip)) {
            Some((_, Some(until))) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Counts a refused login of `ip`.
    pub fn refused(&self, ip: IpAddr, now: Instant) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (bucket, _)| !bucket.is_full(LOGIN_RATE, LOGIN_BURST, now));
            if buckets.len() >= MAX_TRACKED {
                // Flooded from many addresses: forget the oldest state
                // rather than grow (each still costs a 401 and a metric).
                buckets.clear();
            }
        }
        let (bucket, blocked) = buckets
            .entry(limit_key(ip))
            .or_insert_with(|| (TokenBucket::full(LOGIN_BURST, now), None));
        if let Err(wait) = bucket.take(LOGIN_RATE, LOGIN_BURST, now) {
            *blocked = Some(now + wait);
        }
    }
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct Login {
    app_id: String,
    /// The app's secret, or the admin token.
    secret: String,
}

fn count(hub: &Hub, result: &str) {
    hub.metrics()
        .console_logins
        .with_label_values(&[result])
        .inc();
}

/// `POST /console/api/login` with `{"app_id", "secret"}` (JSON: a
/// cross-site form cannot send it without a preflight).
pub async fn login(
    req: HttpRequest,
    form: Json<Login>,
    state: Data<Arc<ConsoleState>>,
    hub: Data<Arc<Hub>>,
    rate: Data<Arc<ConnectionRate>>,
) -> HttpResponse {
    let ip = rate.client_ip(&req);
    let now = Instant::now();
    if let Err(wait) = state.limiter.check(ip, now) {
        count(&hub, "limited");
        let seconds = wait.as_secs().max(1);
        return HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, seconds.to_string()))
            .json(json!({ "error": format!("too many failed logins: retry in {seconds} s") }));
    }
    let app = hub.apps().by_id(&form.app_id);
    let proof = app.as_ref().and_then(|app| {
        if crate::http::admin::same_secret(&form.secret, &app.secret) {
            Some(session::Proof::AppSecret)
        } else {
            state
                .admin_token
                .as_deref()
                .filter(|token| crate::http::admin::same_secret(&form.secret, token))
                .map(|_| session::Proof::AdminToken)
        }
    });
    let (Some(app), Some(proof)) = (app, proof) else {
        state.limiter.refused(ip, now);
        count(&hub, "refused");
        if let Some(suppressed) = state.refused_log.ready() {
            tracing::warn!(%ip, suppressed, "console login with a wrong app id or secret refused");
        }
        return HttpResponse::Unauthorized().json(json!({ "error": "wrong app id or secret" }));
    };
    count(&hub, "ok");
    let cookie = state
        .keys
        .issue(&app.id, proof, &form.secret, SystemTime::now());
    HttpResponse::Ok()
        .insert_header((
            header::SET_COOKIE,
            session::set_cookie(&cookie, SESSION_LIFETIME, is_tls(&req)),
        ))
        .json(json!({ "app_id": app.id, "max_log_events": state.max_log_events }))
}

/// `POST /console/api/logout`: the cookie is expired.
pub async fn logout(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::SET_COOKIE,
            session::set_cookie("", Duration::ZERO, is_tls(&req)),
        ))
        .json(json!({}))
}

/// `GET /console/api/session`: the app the cookie opens, or 401 (the page
/// then shows the login form).
pub async fn current(
    req: HttpRequest,
    state: Data<Arc<ConsoleState>>,
    hub: Data<Arc<Hub>>,
) -> HttpResponse {
    match state.session_app(&req, &hub) {
        Some(app_id) => HttpResponse::Ok()
            .json(json!({ "app_id": app_id, "max_log_events": state.max_log_events })),
        None => {
            HttpResponse::build(StatusCode::UNAUTHORIZED).json(json!({ "error": "not logged in" }))
        }
    }
}

/// Whether the request came over TLS (the cookie is then `Secure`).
fn is_tls(req: &HttpRequest) -> bool {
    req.conn_data::<crate::listen::Scheme>() == Some(&crate::listen::Scheme::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_past_the_burst_block_the_address_then_it_recovers() {
        let limiter = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("an address");
        let other: IpAddr = "10.0.0.2".parse().expect("an address");
        let now = Instant::now();
        for _ in 0..LOGIN_BURST {
            assert!(limiter.check(ip, now).is_ok());
            limiter.refused(ip, now);
        }
        assert!(
            limiter.check(ip, now).is_ok(),
            "the burst itself is allowed"
        );
        limiter.refused(ip, now);
        let wait = limiter.check(ip, now).expect_err("blocked past the burst");
        assert!(wait <= Duration::from_secs(1));
        assert!(limiter.check(other, now).is_ok(), "another address is not");
        assert!(limiter.check(ip, now + Duration::from_secs(2)).is_ok());
    }
}
