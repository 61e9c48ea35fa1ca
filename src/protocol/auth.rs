//! HMAC-SHA256 signatures: channel auth, presence, user sign-in and HTTP requests.
//!
//! Every comparison goes through `Mac::verify_slice`, which is constant time.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::borrow::Cow;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `auth_timestamp` may be from the server clock, in seconds.
pub const MAX_TIMESTAMP_SKEW_SECS: i64 = 600;

fn mac(secret: &str, data: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in data {
        mac.update(part);
    }
    mac
}

/// Lowercase hex HMAC-SHA256 of `data` keyed with `secret`.
pub fn sign(secret: &str, data: &str) -> String {
    hex::encode(mac(secret, &[data.as_bytes()]).finalize().into_bytes())
}

/// The `auth` a backend gives for a private or presence channel:
/// `"{app_key}:{hex signature}"` over `socket_id:channel` or, with
/// `channel_data`, `socket_id:channel:channel_data` (what
/// [`verify_channel_auth`] checks).
pub fn channel_auth(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let signed = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{app_key}:{}", sign(secret, &signed))
}

/// The `auth` a backend gives for a user sign-in: over
/// `socket_id::user::user_data` (what [`verify_user_auth`] checks).
pub fn user_auth(app_key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    format!(
        "{app_key}:{}",
        sign(secret, &format!("{socket_id}::user::{user_data}"))
    )
}

/// Checks a lowercase or uppercase hex signature over `parts` in constant time.
fn verify_hex(secret: &str, parts: &[&[u8]], signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(raw) => mac(secret, parts).verify_slice(&raw).is_ok(),
        Err(_) => false,
    }
}

/// Checks `auth` = `"{app_key}:{hex signature}"` for a private or presence channel.
///
/// The signed string is `socket_id:channel` or, with `channel_data`,
/// `socket_id:channel:channel_data`.
pub fn verify_channel_auth(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let Some((key, signature)) = auth.split_once(':') else {
        return false;
    };
    if key != app_key {
        return false;
    }
    match channel_data {
        Some(data) => verify_hex(
            secret,
            &[
                socket_id.as_bytes(),
                b":",
                channel.as_bytes(),
                b":",
                data.as_bytes(),
            ],
            signature,
        ),
        None => verify_hex(
            secret,
            &[socket_id.as_bytes(), b":", channel.as_bytes()],
            signature,
        ),
    }
}

/// Checks a user sign-in `auth` over `socket_id::user::user_data`.
pub fn verify_user_auth(
    app_key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> bool {
    let Some((key, signature)) = auth.split_once(':') else {
        return false;
    };
    key == app_key
        && verify_hex(
            secret,
            &[socket_id.as_bytes(), b"::user::", user_data.as_bytes()],
            signature,
        )
}

/// Why a signed HTTP request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestAuthError {
    /// A required query parameter is absent.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// `auth_key` does not belong to the app.
    #[error("auth_key does not match the app")]
    WrongKey,
    /// `auth_version` is not 1.0.
    #[error("unsupported auth_version")]
    WrongVersion,
    /// `auth_timestamp` is too far from now.
    #[error("auth_timestamp is more than 600 seconds from the server time")]
    StaleTimestamp,
    /// `auth_timestamp` is not a whole number of seconds.
    #[error("auth_timestamp must be whole seconds since the Unix epoch")]
    BadTimestamp,
    /// A request with a body has no `body_md5`.
    #[error("missing query parameter body_md5 (hex MD5 of the request body)")]
    BodyMd5Missing,
    /// `body_md5` does not match the body.
    #[error("body_md5 does not match the request body")]
    BodyMd5Mismatch,
    /// The signature does not verify.
    #[error("invalid signature: check the app secret and the signing of method, path and query")]
    BadSignature,
    /// A parameter appears twice (after decoding and lower-casing its
    /// name): the signature covers both, the server would read one.
    #[error("query parameter `{0}` is repeated: a signed request names each parameter once")]
    RepeatedParameter(String),
    /// A parameter name holds `=` or `&` once decoded: the string to sign
    /// could then be read as other parameters.
    #[error("query parameter name `{0}` holds `=` or `&`")]
    BadParameterName(String),
}

/// A signed request as it arrived.
pub struct SignedRequest<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// The path, without query.
    pub path: &'a str,
    /// The raw query string, as received.
    pub raw_query: &'a str,
    /// The raw body.
    pub body: &'a [u8],
}

/// One parameter of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam<'a> {
    /// The name, percent-decoded and lower-cased: how Pusher's signing
    /// rules spell it, and how the API handlers look it up.
    pub name: Cow<'a, str>,
    /// The value exactly as sent.
    pub raw: &'a str,
    /// The value with `+` and `%XX` decoded (invalid UTF-8 replaced);
    /// borrowed from the query when there was nothing to decode.
    pub value: Cow<'a, str>,
}

/// The parameters of a raw query string, in order (empty pairs skipped).
/// The signature check and the API handlers both read a query through
/// this, so a parameter the signature covers is the one the handler reads.
pub fn query_params(raw_query: &str) -> Vec<QueryParam<'_>> {
    raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let mut name = decode(name);
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.to_mut().make_ascii_lowercase();
            }
            QueryParam {
                name,
                raw,
                value: decode(raw),
            }
        })
        .collect()
}

/// Longest parameter name quoted back in an error, in characters.
const MAX_QUOTED_NAME_CHARS: usize = 64;

/// Refuses a query whose parameters could be read in two ways: a name
/// given twice (the signature covers both, a handler reads one), or a
/// name holding `=` or `&` (the string to sign could then be split into
/// other parameters).
fn check_unambiguous(params: &[QueryParam<'_>]) -> Result<(), RequestAuthError> {
    let quoted = |name: &str| name.chars().take(MAX_QUOTED_NAME_CHARS).collect::<String>();
    // An SDK sends 4 or 5 parameters: comparing each with those before it
    // costs less than a hash set then; a long query gets the set.
    let mut seen = (params.len() > SMALL_QUERY)
        .then(|| std::collections::HashSet::with_capacity(params.len()));
    for (i, param) in params.iter().enumerate() {
        if param.name.contains(['=', '&']) {
            return Err(RequestAuthError::BadParameterName(quoted(&param.name)));
        }
        let repeated = match &mut seen {
            Some(seen) => !seen.insert(param.name.as_ref()),
            None => params[..i].iter().any(|before| before.name == param.name),
        };
        if repeated {
            return Err(RequestAuthError::RepeatedParameter(quoted(&param.name)));
        }
    }
    Ok(())
}

/// Most parameters checked for repeats by pairwise comparison.
const SMALL_QUERY: usize = 16;

/// `value` with `+` and `%XX` decoded (invalid UTF-8 replaced); borrowed
/// when it holds neither, as the SDKs' own parameters do.
fn decode(value: &str) -> Cow<'_, str> {
    if !value.contains(['+', '%']) {
        return Cow::Borrowed(value);
    }
    let spaced = value.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The string a client signs: `METHOD\nPATH\nk=v&k=v` (sorted by name then
/// value, without the signature), built in one buffer.
fn string_to_sign<'v>(
    method: &str,
    path: &str,
    pairs: impl Iterator<Item = (&'v str, &'v str)>,
) -> String {
    let mut sorted: Vec<(&str, &str)> = pairs.filter(|(k, _)| *k != "auth_signature").collect();
    sorted.sort_unstable();
    let query_len: usize = sorted.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = String::with_capacity(method.len() + path.len() + 2 + query_len);
    out.push_str(method);
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Whether `given` (hex, either case) is the MD5 digest of `body`,
/// compared without allocating.
fn md5_matches(given: &str, body: &[u8]) -> bool {
    let mut expected = [0u8; 16];
    hex::decode_to_slice(given, &mut expected).is_ok() && expected[..] == Md5::digest(body)[..]
}

/// Verifies a Pusher HTTP API request signature (PROTOCOL.md §5).
///
/// SDKs differ in what they sign: the Node SDK signs raw values, the Python SDK
/// signs URL-encoded ones. Both forms are accepted, each checked in constant time;
/// the decoded form only while no decoded value holds `&` (it would be
/// ambiguous). A parameter given twice, or whose decoded name holds `=` or
/// `&`, is refused before the signature: the query must read one way only.
pub fn verify_request(
    app_key: &str,
    secret: &str,
    request: &SignedRequest<'_>,
    now_unix: i64,
) -> Result<(), RequestAuthError> {
    let params = query_params(request.raw_query);
    check_unambiguous(&params)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|param| param.name == name)
            .map(|param| param.value.as_ref())
    };

    let key = get("auth_key").ok_or(RequestAuthError::Missing("auth_key"))?;
    if key != app_key {
        return Err(RequestAuthError::WrongKey);
    }
    let timestamp = get("auth_timestamp").ok_or(RequestAuthError::Missing("auth_timestamp"))?;
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| RequestAuthError::BadTimestamp)?;
    // `abs_diff`: any i64 on either side, no overflow.
    if now_unix.abs_diff(timestamp) > MAX_TIMESTAMP_SKEW_SECS.unsigned_abs() {
        return Err(RequestAuthError::StaleTimestamp);
    }
    if let Some(version) = get("auth_version") {
        if version != "1.0" {
            return Err(RequestAuthError::WrongVersion);
        }
    }
    match get("body_md5") {
        Some(md5) if !md5_matches(md5, request.body) => {
            return Err(RequestAuthError::BodyMd5Mismatch)
        }
        None if !request.body.is_empty() => return Err(RequestAuthError::BodyMd5Missing),
        _ => {}
    }
    let signature = get("auth_signature").ok_or(RequestAuthError::Missing("auth_signature"))?;

    let decoded = string_to_sign(
        request.method,
        request.path,
        params.iter().map(|p| (p.name.as_ref(), p.value.as_ref())),
    );
    // A decoded value holding `&` makes the decoded string ambiguous
    // (`a=x&b=y` is also one `a` of `x&b=y`): such a value verifies only
    // as sent, where `&` is encoded.
    let decoded_unambiguous = params.iter().all(|p| !p.value.contains('&'));
    if decoded_unambiguous && verify_hex(secret, &[decoded.as_bytes()], signature) {
        return Ok(());
    }
    // The form as sent is another string only when some value was encoded.
    // (A decoded `&` came from an encoded one, so it counts here too.)
    if params.iter().any(|p| p.raw != p.value) {
        let raw = string_to_sign(
            request.method,
            request.path,
            params.iter().map(|p| (p.name.as_ref(), p.raw)),
        );
        if verify_hex(secret, &[raw.as_bytes()], signature) {
            return Ok(());
        }
    }
    Err(RequestAuthError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_auths_pass_the_checks() {
        let auth = channel_auth("k", "s", "1.2", "private-a", None);
        assert!(verify_channel_auth(
            "k",
            "s",
            "1.2",
            "private-a",
            None,
            &auth
        ));
        assert!(!verify_channel_auth(
            "k",
            "s",
            "1.3",
            "private-a",
            None,
            &auth
        ));
        let data = r#"{"user_id":"u"}"#;
        let auth = channel_auth("k", "s", "1.2", "presence-a", Some(data));
        assert!(verify_channel_auth(
            "k",
            "s",
            "1.2",
            "presence-a",
            Some(data),
            &auth
        ));
        let auth = user_auth("k", "s", "1.2", r#"{"id":"u"}"#);
        assert!(verify_user_auth("k", "s", "1.2", r#"{"id":"u"}"#, &auth));
        assert!(!verify_user_auth("k", "s", "1.2", r#"{"id":"v"}"#, &auth));
    }

    #[test]
    fn private_channel_signature_matches_pusher_docs_example() {
        // From Pusher's authentication docs.
        let sig = sign("7ad3773142a6692b25b8", "1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth = format!("278d425bdf160c739803:{sig}");
        assert!(verify_channel_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            "1234.1234",
            "private-foobar",
            None,
            &auth
        ));
    }

    #[test]
    fn channel_auth_refuses_other_socket_channel_key_and_garbage() {
        let auth = format!("key:{}", sign("secret", "1.1:private-a"));
        assert!(verify_channel_auth(
            "key",
            "secret",
            "1.1",
            "private-a",
            None,
            &auth
        ));
        assert!(!verify_channel_auth(
            "key",
            "secret",
            "1.2",
            "private-a",
            None,
            &auth
        ));
        assert!(!verify_channel_auth(
            "key",
            "secret",
            "1.1",
            "private-b",
            None,
            &auth
        ));
        assert!(!verify_channel_auth(
            "other",
            "secret",
            "1.1",
            "private-a",
            None,
            &auth
        ));
        assert!(!verify_channel_auth(
            "key",
            "secret",
            "1.1",
            "private-a",
            None,
            "key:zz"
        ));
        assert!(!verify_channel_auth(
            "key",
            "secret",
            "1.1",
            "private-a",
            None,
            "nocolon"
        ));
    }

    #[test]
    fn presence_signature_covers_channel_data() {
        let data = r#"{"user_id":"u1"}"#;
        let auth = format!("key:{}", sign("s", &format!("1.1:presence-a:{data}")));
        assert!(verify_channel_auth(
            "key",
            "s",
            "1.1",
            "presence-a",
            Some(data),
            &auth
        ));
        assert!(!verify_channel_auth(
            "key",
            "s",
            "1.1",
            "presence-a",
            Some(r#"{"user_id":"u2"}"#),
            &auth
        ));
    }

    #[test]
    fn user_signature_uses_the_user_separator() {
        let data = r#"{"id":"u1"}"#;
        let auth = format!("key:{}", sign("s", &format!("1.1::user::{data}")));
        assert!(verify_user_auth("key", "s", "1.1", data, &auth));
        assert!(!verify_user_auth("key", "s", "1.2", data, &auth));
    }

    fn signed_query(secret: &str, method: &str, path: &str, body: &[u8], ts: i64) -> String {
        let md5 = hex::encode(Md5::digest(body));
        let query = format!("auth_key=key&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}");
        let sig = sign(secret, &format!("{method}\n{path}\n{query}"));
        format!("{query}&auth_signature={sig}")
    }

    #[test]
    fn request_signature_is_verified() {
        let body = br#"{"name":"e"}"#;
        let query = signed_query("secret", "POST", "/apps/1/events", body, 1000);
        let request = SignedRequest {
            method: "POST",
            path: "/apps/1/events",
            raw_query: &query,
            body,
        };
        assert_eq!(verify_request("key", "secret", &request, 1000), Ok(()));
        assert_eq!(
            verify_request("key", "wrong", &request, 1000),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            verify_request("other", "secret", &request, 1000),
            Err(RequestAuthError::WrongKey)
        );
        assert_eq!(
            verify_request("key", "secret", &request, 1601),
            Err(RequestAuthError::StaleTimestamp)
        );
        let tampered = SignedRequest {
            body: b"{}",
            ..request
        };
        assert_eq!(
            verify_request("key", "secret", &tampered, 1000),
            Err(RequestAuthError::BodyMd5Mismatch)
        );
    }

    #[test]
    fn a_missing_body_md5_and_a_fractional_timestamp_are_named() {
        let query = "auth_key=key&auth_timestamp=1000&auth_version=1.0&auth_signature=x";
        let request = SignedRequest {
            method: "POST",
            path: "/apps/1/events",
            raw_query: query,
            body: b"{}",
        };
        assert_eq!(
            verify_request("key", "secret", &request, 1000),
            Err(RequestAuthError::BodyMd5Missing)
        );
        let fractional = SignedRequest {
            raw_query: "auth_key=key&auth_timestamp=1000.5&auth_version=1.0&auth_signature=x",
            body: b"",
            ..request
        };
        assert_eq!(
            verify_request("key", "secret", &fractional, 1000),
            Err(RequestAuthError::BadTimestamp)
        );
    }

    fn get(query: &str, now: i64) -> Result<(), RequestAuthError> {
        let request = SignedRequest {
            method: "GET",
            path: "/apps/1/channels",
            raw_query: query,
            body: b"",
        };
        verify_request("key", "s", &request, now)
    }

    fn signed_get(query: &str) -> String {
        let mut pairs: Vec<&str> = query.split('&').collect();
        pairs.sort();
        let sig = sign("s", &format!("GET\n/apps/1/channels\n{}", pairs.join("&")));
        format!("{query}&auth_signature={sig}")
    }

    #[test]
    fn a_timestamp_at_the_ends_of_i64_is_stale_not_an_overflow() {
        // `now - timestamp` overflowed here (a panic in debug builds, and in
        // release a wrapped difference that could pass as fresh).
        for (stamp, now) in [(i64::MIN, 1000), (i64::MAX, -1000), (i64::MIN + 1000, 1000)] {
            let query = signed_get(&format!("auth_key=key&auth_timestamp={stamp}"));
            assert_eq!(
                get(&query, now),
                Err(RequestAuthError::StaleTimestamp),
                "{stamp}"
            );
        }
    }

    #[test]
    fn a_repeated_parameter_is_refused_whatever_its_spelling() {
        // Signed over both values, while the handlers read only the first:
        // reordering the pairs would change what a request means.
        for repeat in ["info=a&info=b", "info=a&INFO=a", "info=a&inf%6F=b"] {
            let query = signed_get(&format!("auth_key=key&auth_timestamp=5&{repeat}"));
            assert_eq!(
                get(&query, 5),
                Err(RequestAuthError::RepeatedParameter("info".into())),
                "{repeat}"
            );
        }
    }

    #[test]
    fn separators_decoded_from_a_query_cannot_forge_other_parameters() {
        // Signed decoded (as the Ruby SDK signs): two parameters.
        let sig = sign(
            "s",
            "GET\n/apps/1/channels\nauth_key=key&auth_timestamp=5&filter_by_prefix=a&info=b",
        );
        let two =
            format!("auth_key=key&auth_timestamp=5&filter_by_prefix=a&info=b&auth_signature={sig}");
        assert_eq!(get(&two, 5), Ok(()));
        // The same signature on one parameter whose decoded value spells both.
        let one = format!(
            "auth_key=key&auth_timestamp=5&filter_by_prefix=a%26info%3Db&auth_signature={sig}"
        );
        assert_eq!(get(&one, 5), Err(RequestAuthError::BadSignature));
        // A name that decodes to `x=y` is refused before the signature.
        let named = format!(
            "auth_key=key&auth_timestamp=5&filter_by_prefix%3Da=info%3Db&auth_signature={sig}"
        );
        assert_eq!(
            get(&named, 5),
            Err(RequestAuthError::BadParameterName(
                "filter_by_prefix=a".into()
            ))
        );
    }

    #[test]
    fn url_encoded_and_raw_values_both_verify() {
        let path = "/apps/1/channels";
        let md5 = hex::encode(Md5::digest(b""));
        // Python SDK: signs the URL-encoded value.
        let encoded = format!(
            "auth_key=key&auth_timestamp=5&auth_version=1.0&body_md5={md5}&info=user_count%2Csubscription_count"
        );
        let sig = sign("s", &format!("GET\n{path}\n{encoded}"));
        let query = format!("{encoded}&auth_signature={sig}");
        let request = SignedRequest {
            method: "GET",
            path,
            raw_query: &query,
            body: b"",
        };
        assert_eq!(verify_request("key", "s", &request, 5), Ok(()));
        // Node SDK: signs and sends the raw value.
        let raw =
            "auth_key=key&auth_timestamp=5&auth_version=1.0&info=user_count,subscription_count";
        let sig = sign("s", &format!("GET\n{path}\n{raw}"));
        let query = format!("{raw}&auth_signature={sig}");
        let request = SignedRequest {
            method: "GET",
            path,
            raw_query: &query,
            body: b"",
        };
        assert_eq!(verify_request("key", "s", &request, 5), Ok(()));
    }

    #[test]
    fn body_md5_is_compared_in_either_case_and_garbage_fails() {
        let body = b"{}";
        let md5 = hex::encode(Md5::digest(body));
        assert!(md5_matches(&md5, body));
        assert!(md5_matches(&md5.to_ascii_uppercase(), body));
        assert!(!md5_matches(&md5, b"{ }"));
        for bad in ["", "zz", &md5[..30], &format!("{md5}00")] {
            assert!(!md5_matches(bad, body), "{bad}");
        }
    }

    #[test]
    fn names_are_lower_cased_and_values_decoded_only_when_needed() {
        let params = query_params("Auth_Key=k&plain=v&sp=a+b&pc=%41");
        let names: Vec<&str> = params.iter().map(|p| p.name.as_ref()).collect();
        assert_eq!(names, ["auth_key", "plain", "sp", "pc"]);
        assert!(matches!(params[1].value, Cow::Borrowed("v")));
        assert_eq!(params[2].value, "a b");
        assert_eq!(params[3].value, "A");
    }

    #[test]
    fn a_repeat_in_a_long_query_is_refused_too() {
        // Past SMALL_QUERY parameters the check uses a set: same answers.
        let filler: Vec<String> = (0..SMALL_QUERY + 4).map(|i| format!("p{i}=x")).collect();
        let long = filler.join("&");
        assert_eq!(check_unambiguous(&query_params(&long)), Ok(()));
        let repeated = format!("{long}&P3=y");
        assert_eq!(
            check_unambiguous(&query_params(&repeated)),
            Err(RequestAuthError::RepeatedParameter("p3".into()))
        );
    }
}
