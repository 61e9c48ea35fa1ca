//! Presence `channel_data` and sign-in `user_data`: parsing and limits.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use thiserror::Error;

/// A presence member as announced in `channel_data`.
#[derive(Debug, Clone)]
pub struct PresenceMember {
    /// The user id, stringified when a number was sent.
    pub user_id: String,
    /// The user's info, kept as sent (JSON), `None` when absent.
    pub user_info: Option<Box<RawValue>>,
    /// Whether the member wants peer channels with the other peers.
    pub peer: bool,
}

/// Why `channel_data` or `user_data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemberDataError {
    /// Not a JSON object.
    #[error("data is not a JSON object")]
    NotJson,
    /// No usable user id.
    #[error("`{0}` must be a non-empty string or number")]
    MissingId(&'static str),
    /// A sign-in `user_data` without a string id (Pusher requires a string).
    #[error("`{0}` must be a non-empty string")]
    IdNotString(&'static str),
    /// `user_info` over the limit.
    #[error("user_info is larger than {0} bytes")]
    UserInfoTooLarge(usize),
}

#[derive(Deserialize)]
struct ChannelData<'a> {
    user_id: Option<Value>,
    #[serde(borrow)]
    user_info: Option<&'a RawValue>,
    #[serde(default)]
    peer: Option<Value>,
}

fn id_string(value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses presence `channel_data` (`{"user_id":..,"user_info":{..}}`).
pub fn parse_channel_data(
    channel_data: &str,
    max_user_info_bytes: usize,
) -> Result<PresenceMember, MemberDataError> {
    let data: ChannelData<'_> =
        serde_json::from_str(channel_data).map_err(|_| MemberDataError::NotJson)?;
    let user_id = id_string(data.user_id).ok_or(MemberDataError::MissingId("user_id"))?;
    if let Some(info) = data.user_info {
        if info.get().len() > max_user_info_bytes {
            return Err(MemberDataError::UserInfoTooLarge(max_user_info_bytes));
        }
    }
    Ok(PresenceMember {
        user_id,
        user_info: data.user_info.map(ToOwned::to_owned),
        peer: data.peer == Some(Value::Bool(true)),
    })
}

/// A signed-in user as announced in `user_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInUser {
    /// The user id.
    pub id: String,
    /// Users whose online/offline state this user watches.
    pub watchlist: Vec<String>,
}

#[derive(Deserialize)]
struct UserData {
    id: Option<Value>,
    #[serde(default)]
    watchlist: Option<Vec<Value>>,
}

/// Parses sign-in `user_data` (`{"id":"u1","watchlist":["u2"],..}`).
pub fn parse_user_data(user_data: &str) -> Result<SignedInUser, MemberDataError> {
    let data: UserData = serde_json::from_str(user_data).map_err(|_| MemberDataError::NotJson)?;
    let id = match data.id {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(MemberDataError::IdNotString("id")),
    };
    let watchlist = data
        .watchlist
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| id_string(Some(v)))
        .collect();
    Ok(SignedInUser { id, watchlist })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_accepts_string_and_number_ids() {
        let member = parse_channel_data(r#"{"user_id":"u1","user_info":{"n":"A"}}"#, 100).unwrap();
        assert_eq!(member.user_id, "u1");
        assert_eq!(member.user_info.unwrap().get(), r#"{"n":"A"}"#);
        let member = parse_channel_data(r#"{"user_id":42}"#, 100).unwrap();
        assert_eq!(member.user_id, "42");
        assert!(member.user_info.is_none());
    }

    #[test]
    fn channel_data_errors() {
        assert_eq!(
            parse_channel_data("x", 10).err(),
            Some(MemberDataError::NotJson)
        );
        assert_eq!(
            parse_channel_data(r#"{"user_info":{}}"#, 10).err(),
            Some(MemberDataError::MissingId("user_id"))
        );
        assert_eq!(
            parse_channel_data(r#"{"user_id":""}"#, 10).err(),
            Some(MemberDataError::MissingId("user_id"))
        );
        assert_eq!(
            parse_channel_data(r#"{"user_id":"a","user_info":{"n":"0123456789"}}"#, 10).err(),
            Some(MemberDataError::UserInfoTooLarge(10))
        );
    }

    #[test]
    fn user_data_needs_a_string_id() {
        let user = parse_user_data(r#"{"id":"u1","watchlist":["u2",3]}"#).unwrap();
        assert_eq!(user.id, "u1");
        assert_eq!(user.watchlist, vec!["u2".to_string(), "3".to_string()]);
        let refused = parse_user_data(r#"{"id":5}"#).err();
        assert_eq!(refused, Some(MemberDataError::IdNotString("id")));
        // The message a client reads says what is accepted, and only that.
        assert_eq!(
            refused.map(|e| e.to_string()).as_deref(),
            Some("`id` must be a non-empty string")
        );
        assert!(parse_user_data("[]").is_err());
    }
}
