//! The token an app's backend signs so a browser may open an SSE stream on
//! private, presence and `#server-to-user-{id}` channels: there is no
//! socket id to sign before the stream exists, so the backend signs the
//! stream's request instead, with an expiry. Pure code, no I/O.
//!
//! Query parameters: `auth=<app key>:<hex HMAC-SHA256>`, `expires=<unix
//! seconds>`, and for presence channels or a signed-in stream
//! `user_data=<JSON {"id":..,"user_info":..}>` (as `pusher.signin()` signs
//! it). The string signed with the app secret is
//! `sse:<app_id>:<channels>:<expires>` or, with user data,
//! `sse:<app_id>:<channels>:<expires>:<user_data>`, where `<channels>` is the
//! `channels` parameter exactly as given (decoded from the URL).

use crate::apps::App;
use crate::protocol::presence::parse_user_data;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use sha2::Sha256;
use thiserror::Error;

/// The token's query parameters, as given (each absent when not in the URL).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenParams<'a> {
    /// `auth`: `<app key>:<hex signature>`.
    pub auth: Option<&'a str>,
    /// `expires`: unix time in seconds after which the token is refused.
    pub expires: Option<&'a str>,
    /// `user_data`: the signed-in user, `{"id":..,"user_info":..}`.
    pub user_data: Option<&'a str>,
    /// The app id as the request's path names it: the app's id or one of
    /// its `id_aliases` (a backend whose SDK knows the app as `1` signs
    /// `sse:1:...`). A token signed with the app's own id is good too.
    /// `None`: the app's id.
    pub app_id: Option<&'a str>,
}

/// The user a token signs the stream in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    /// The user id (`user_data.id`, a non-empty string as for `pusher:signin`).
    pub id: String,
    /// `user_data` exactly as signed, for the session's sign-in.
    pub user_data: String,
    /// Presence `channel_data` for this user: `{"user_id":..,"user_info":..}`.
    pub presence_data: String,
}

/// What a request's token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// No token: public channels only.
    Unsigned,
    /// A valid token, signing the stream in as a user when it has user data.
    Signed(Option<TokenUser>),
}

/// Why a token was refused. [`TokenError::status`] is the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// `auth` is not `<app key>:<hex signature>`.
    #[error("auth must be <app key>:<hex HMAC-SHA256>")]
    Malformed,
    /// `auth` names another app's key.
    #[error("auth names key `{0}`, not this app's key")]
    WrongKey(String),
    /// The signature does not match.
    #[error("Invalid signature: expected <app key>:HMAC-SHA256 with the app secret of `{0}`")]
    BadSignature(String),
    /// `expires` is absent or not unix seconds.
    #[error("expires must be the token's expiry in unix seconds")]
    BadExpires,
    /// `expires` is in the past.
    #[error("the token expired at {expires} (unix seconds); the server time is {now}")]
    Expired {
        /// The token's expiry.
        expires: u64,
        /// The server's clock.
        now: u64,
    },
    /// `user_data` without `auth`, or not a user object with an id.
    #[error("invalid user_data: {0}")]
    BadUserData(String),
}

impl TokenError {
    /// 403 for an expired token (it was valid: sign a new one), 400 for a
    /// malformed `expires` or `user_data`, 401 for a signature that does
    /// not prove the app's backend signed the request.
    pub fn status(&self) -> u16 {
        match self {
            TokenError::Expired { .. } => 403,
            TokenError::BadExpires | TokenError::BadUserData(_) => 400,
            TokenError::Malformed | TokenError::WrongKey(_) | TokenError::BadSignature(_) => 401,
        }
    }
}

/// The string the backend signs for a stream of `channels` (the
/// `channels` parameter as given) of `app_id`, valid until `expires`.
pub fn string_to_sign(
    app_id: &str,
    channels: &str,
    expires: &str,
    user_data: Option<&str>,
) -> String {
    match user_data {
        Some(user_data) => format!("sse:{app_id}:{channels}:{expires}:{user_data}"),
        None => format!("sse:{app_id}:{channels}:{expires}"),
    }
}

/// Checks the token of a stream request for `channels` (as given) at unix
/// time `now`. No `auth` at all is [`Verified::Unsigned`]; whether the
/// channels may be read unsigned is the caller's decision.
pub fn verify(
    app: &App,
    channels: &str,
    params: TokenParams<'_>,
    now: u64,
) -> Result<Verified, TokenError> {
    let Some(auth) = params.auth.filter(|auth| !auth.is_empty()) else {
        if params.user_data.is_some() {
            return Err(TokenError::BadUserData(
                "user_data must be signed: add auth and expires".into(),
            ));
        }
        return Ok(Verified::Unsigned);
    };
    let (key, signature) = auth.split_once(':').ok_or(TokenError::Malformed)?;
    let signature = hex::decode(signature).map_err(|_| TokenError::Malformed)?;
    if key != app.key {
        return Err(TokenError::WrongKey(key.to_owned()));
    }
    let expires_text = params.expires.ok_or(TokenError::BadExpires)?;
    let expires: u64 = expires_text.parse().map_err(|_| TokenError::BadExpires)?;
    let named = params.app_id.unwrap_or(&app.id);
    let mut ids = vec![named];
    if named != app.id {
        ids.push(&app.id);
    }
    let mut valid = false;
    for id in ids {
        let signed = string_to_sign(id, channels, expires_text, params.user_data);
        // Constant time, as every signature check of the crate.
        let mut mac = Hmac::<Sha256>::new_from_slice(app.secret.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        mac.update(signed.as_bytes());
        valid |= mac.verify_slice(&signature).is_ok();
    }
    if !valid {
        let shape = match params.user_data {
            Some(_) => format!("sse:{named}:<channels>:<expires>:<user_data>"),
            None => format!("sse:{named}:<channels>:<expires>"),
        };
        return Err(TokenError::BadSignature(shape));
    }
    // Checked after the signature: only the backend learns about its clock.
    if expires < now {
        return Err(TokenError::Expired { expires, now });
    }
    let user = params.user_data.map(token_user).transpose()?;
    Ok(Verified::Signed(user))
}

/// The user of a signed `user_data`, with its presence data.
fn token_user(user_data: &str) -> Result<TokenUser, TokenError> {
    let user = parse_user_data(user_data).map_err(|e| TokenError::BadUserData(e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Info<'a> {
        #[serde(borrow, default)]
        user_info: Option<&'a RawValue>,
    }
    let info: Info<'_> =
        serde_json::from_str(user_data).map_err(|e| TokenError::BadUserData(e.to_string()))?;
    let presence = match info.user_info {
        Some(info) => serde_json::json!({ "user_id": user.id, "user_info": info }),
        None => serde_json::json!({ "user_id": user.id }),
    };
    Ok(TokenUser {
        id: user.id,
        user_data: user_data.to_owned(),
        presence_data: presence.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::protocol::auth::sign;

    const NOW: u64 = 1_800_000_000;

    fn app() -> App {
        AppConfig::with_credentials("app-1", "key", "secret")
    }

    fn token(channels: &str, expires: &str, user_data: Option<&str>) -> String {
        let signature = sign(
            "secret",
            &string_to_sign("app-1", channels, expires, user_data),
        );
        format!("key:{signature}")
    }

    fn params<'a>(auth: &'a str, expires: &'a str, user_data: Option<&'a str>) -> TokenParams<'a> {
        TokenParams {
            auth: Some(auth),
            expires: Some(expires),
            user_data,
            app_id: None,
        }
    }

    #[test]
    fn an_alias_in_the_path_signs_as_well_as_the_app_id() {
        let by_alias = format!(
            "key:{}",
            sign(
                "secret",
                &string_to_sign("7", "private-a", "1800000060", None)
            )
        );
        let as_named = |auth: &str, named: Option<&'static str>| {
            let mut given = params(auth, "1800000060", None);
            given.app_id = named;
            verify(&app(), "private-a", given, NOW)
        };
        assert_eq!(as_named(&by_alias, Some("7")), Ok(Verified::Signed(None)));
        let by_id = token("private-a", "1800000060", None);
        assert_eq!(as_named(&by_id, Some("7")), Ok(Verified::Signed(None)));
        // An alias token is good only where the path names that alias.
        assert!(matches!(
            as_named(&by_alias, None),
            Err(TokenError::BadSignature(shape)) if shape == "sse:app-1:<channels>:<expires>"
        ));
    }

    #[test]
    fn the_documented_string_is_signed() {
        assert_eq!(
            string_to_sign("app-1", "a,private-b", "1800000060", None),
            "sse:app-1:a,private-b:1800000060"
        );
        assert_eq!(
            string_to_sign("app-1", "a", "5", Some(r#"{"id":"u"}"#)),
            r#"sse:app-1:a:5:{"id":"u"}"#
        );
    }

    #[test]
    fn no_token_is_unsigned_and_a_valid_one_verifies() {
        let none = verify(&app(), "a", TokenParams::default(), NOW);
        assert_eq!(none, Ok(Verified::Unsigned));
        let auth = token("private-a", "1800000060", None);
        let ok = verify(&app(), "private-a", params(&auth, "1800000060", None), NOW);
        assert_eq!(ok, Ok(Verified::Signed(None)));
    }

    #[test]
    fn a_signature_over_other_channels_or_expiry_is_401() {
        let auth = token("private-a", "1800000060", None);
        let other = verify(&app(), "private-b", params(&auth, "1800000060", None), NOW);
        assert!(matches!(other, Err(TokenError::BadSignature(_))));
        let later = verify(&app(), "private-a", params(&auth, "1800000061", None), NOW);
        assert_eq!(later.map_err(|e| e.status()), Err(401));
        let user = Some(r#"{"id":"u"}"#);
        let added = verify(&app(), "private-a", params(&auth, "1800000060", user), NOW);
        assert_eq!(added.map_err(|e| e.status()), Err(401));
    }

    #[test]
    fn malformed_or_foreign_auth_is_401() {
        for auth in ["nocolon", "key:not-hex", "key:"] {
            let result = verify(&app(), "a", params(auth, "1800000060", None), NOW);
            assert_eq!(result.map_err(|e| e.status()), Err(401), "{auth}");
        }
        let auth = token("a", "1800000060", None).replacen("key", "other", 1);
        let result = verify(&app(), "a", params(&auth, "1800000060", None), NOW);
        assert_eq!(result, Err(TokenError::WrongKey("other".into())));
    }

    #[test]
    fn an_expired_token_is_403_and_a_bad_expiry_400() {
        let auth = token("a", "1799999999", None);
        let expired = verify(&app(), "a", params(&auth, "1799999999", None), NOW);
        assert_eq!(
            expired,
            Err(TokenError::Expired {
                expires: 1_799_999_999,
                now: NOW
            })
        );
        assert_eq!(expired.map_err(|e| e.status()), Err(403));
        let auth = token("a", "soon", None);
        let bad = verify(&app(), "a", params(&auth, "soon", None), NOW);
        assert_eq!(bad, Err(TokenError::BadExpires));
        let missing = verify(
            &app(),
            "a",
            TokenParams {
                auth: Some(&auth),
                ..TokenParams::default()
            },
            NOW,
        );
        assert_eq!(missing.map_err(|e| e.status()), Err(400));
    }

    #[test]
    fn user_data_gives_the_user_and_its_presence_data() {
        let data = r#"{"id":"u1","user_info":{"name":"Ann"}}"#;
        let auth = token("presence-a", "1800000060", Some(data));
        let verified = verify(
            &app(),
            "presence-a",
            params(&auth, "1800000060", Some(data)),
            NOW,
        );
        let Ok(Verified::Signed(Some(user))) = verified else {
            panic!("{verified:?}");
        };
        assert_eq!(user.id, "u1");
        assert_eq!(user.user_data, data);
        assert_eq!(
            user.presence_data,
            r#"{"user_id":"u1","user_info":{"name":"Ann"}}"#
        );
        // The id is a non-empty string, as for pusher:signin.
        let data = r#"{"id":7}"#;
        let auth = token("a", "1800000060", Some(data));
        let verified = verify(&app(), "a", params(&auth, "1800000060", Some(data)), NOW);
        assert!(matches!(verified, Err(TokenError::BadUserData(_))));
    }

    #[test]
    fn user_data_must_be_signed_and_name_a_user() {
        let unsigned = TokenParams {
            user_data: Some(r#"{"id":"u"}"#),
            ..TokenParams::default()
        };
        let result = verify(&app(), "a", unsigned, NOW);
        assert_eq!(result.map_err(|e| e.status()), Err(400));
        let data = r#"{"user_info":{}}"#;
        let auth = token("a", "1800000060", Some(data));
        let result = verify(&app(), "a", params(&auth, "1800000060", Some(data)), NOW);
        assert!(matches!(result, Err(TokenError::BadUserData(_))));
    }
}
