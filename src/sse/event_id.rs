//! SSE event ids on channels with history: one id names the position of
//! every history channel of the stream, so the one `Last-Event-ID` a
//! browser keeps resumes them all. Pure code, no I/O.
//!
//! Shape: `<channel>=<serial>,<channel>=<serial>,...`, channel names
//! percent-encoded where they hold `%`, `,`, `=` or anything outside
//! printable ASCII (Pusher names may contain `,` and `=`). A plain serial
//! is accepted when the stream has a single channel.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use std::collections::HashMap;
use thiserror::Error;

/// What is encoded in a channel name inside an id.
const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b',').add(b'=');

/// A `Last-Event-ID` (or `lastEventId`) that is not an id this server gave.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventIdError {
    /// Not `<channel>=<serial>,...`.
    #[error("Last-Event-ID `{0}` is malformed: expected <channel>=<serial>[,<channel>=<serial>...] as the server sent it")]
    Malformed(String),
    /// A plain serial on a stream of several channels.
    #[error("Last-Event-ID `{0}` is a plain serial, which needs a stream of exactly one channel; use <channel>=<serial>,...")]
    AmbiguousSerial(String),
    /// The same channel twice.
    #[error("Last-Event-ID names channel `{0}` twice")]
    Duplicate(String),
}

/// The id for `positions` (channel, latest serial the client has), in order.
pub fn format(positions: &[(String, u64)]) -> String {
    let mut id = String::new();
    for (channel, serial) in positions {
        if !id.is_empty() {
            id.push(',');
        }
        id.extend(utf8_percent_encode(channel, ESCAPED));
        id.push('=');
        id.push_str(&serial.to_string());
    }
    id
}

/// The serial each channel resumes after, from `id` (empty: none), for a
/// stream of `channels`. Channels of the id that the stream does not have
/// are left out (the stream's channel list changed: they are not asked).
pub fn parse(id: &str, channels: &[String]) -> Result<HashMap<String, u64>, EventIdError> {
    let mut since = HashMap::new();
    let id = id.trim();
    if id.is_empty() {
        return Ok(since);
    }
    if id.bytes().all(|b| b.is_ascii_digit()) {
        let serial = id
            .parse()
            .map_err(|_| EventIdError::Malformed(id.to_owned()))?;
        return match channels {
            [channel] => {
                since.insert(channel.clone(), serial);
                Ok(since)
            }
            _ => Err(EventIdError::AmbiguousSerial(id.to_owned())),
        };
    }
    let malformed = || EventIdError::Malformed(id.to_owned());
    for part in id.split(',') {
        let (channel, serial) = part.split_once('=').ok_or_else(malformed)?;
        let channel = percent_decode_str(channel)
            .decode_utf8()
            .map_err(|_| malformed())?;
        if channel.is_empty() || serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let serial: u64 = serial.parse().map_err(|_| malformed())?;
        if since.contains_key(channel.as_ref()) {
            return Err(EventIdError::Duplicate(channel.into_owned()));
        }
        since.insert(channel.into_owned(), serial);
    }
    since.retain(|channel, _| channels.contains(channel));
    Ok(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_round_trip_names_with_commas_and_equals() {
        let positions = vec![
            ("news".to_string(), 42),
            ("a,b=c%d".to_string(), 0),
            ("private-x".to_string(), 7),
        ];
        let id = format(&positions);
        assert_eq!(id, "news=42,a%2Cb%3Dc%25d=0,private-x=7");
        let parsed = parse(&id, &names(&["news", "a,b=c%d", "private-x"])).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed["a,b=c%d"], 0);
        assert_eq!(parsed["news"], 42);
    }

    #[test]
    fn a_plain_serial_needs_a_single_channel() {
        assert_eq!(parse("12", &names(&["news"])).unwrap()["news"], 12);
        assert_eq!(
            parse("12", &names(&["a", "b"])),
            Err(EventIdError::AmbiguousSerial("12".into()))
        );
    }

    #[test]
    fn empty_is_nothing_and_unknown_channels_are_left_out() {
        assert!(parse("", &names(&["a"])).unwrap().is_empty());
        let parsed = parse("a=1,gone=5", &names(&["a", "b"])).unwrap();
        assert_eq!(
            parsed.into_iter().collect::<Vec<_>>(),
            vec![("a".into(), 1)]
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        let channels = names(&["a", "b"]);
        for id in [
            "a",
            "a=",
            "=3",
            "a=x",
            "a=-1",
            "a=1,",
            "a=1,,b=2",
            "a=99999999999999999999",
            "a=1 b=2",
            "%ff=1",
        ] {
            assert!(
                matches!(parse(id, &channels), Err(EventIdError::Malformed(_))),
                "{id}"
            );
        }
        assert_eq!(
            parse("a=1,a=2", &channels),
            Err(EventIdError::Duplicate("a".into()))
        );
    }
}
