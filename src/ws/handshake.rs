//! Pure checks of the connection URL's query: the protocol version.

use crate::protocol::error::ErrorCode;

/// Lowest protocol version served.
pub const MIN_PROTOCOL: u32 = 5;
/// Highest protocol version served.
pub const MAX_PROTOCOL: u32 = 7;

/// Checks `protocol=N` in a raw query string (4008 missing, 4006 not a number, 4007 unsupported).
pub fn check_protocol(query: &str) -> Result<u32, ErrorCode> {
    let value = query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == "protocol")
        .map(|(_, value)| value)
        .ok_or(ErrorCode::NoProtocol)?;
    if value.is_empty() {
        return Err(ErrorCode::NoProtocol);
    }
    let version: u32 = value.parse().map_err(|_| ErrorCode::InvalidVersionFormat)?;
    if (MIN_PROTOCOL..=MAX_PROTOCOL).contains(&version) {
        Ok(version)
    } else {
        Err(ErrorCode::UnsupportedProtocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_version_is_checked() {
        assert_eq!(check_protocol("protocol=7&client=js"), Ok(7));
        assert_eq!(check_protocol("client=js&protocol=5"), Ok(5));
        assert_eq!(check_protocol("client=js"), Err(ErrorCode::NoProtocol));
        assert_eq!(check_protocol(""), Err(ErrorCode::NoProtocol));
        assert_eq!(check_protocol("protocol="), Err(ErrorCode::NoProtocol));
        assert_eq!(
            check_protocol("protocol=abc"),
            Err(ErrorCode::InvalidVersionFormat)
        );
        assert_eq!(
            check_protocol("protocol=4"),
            Err(ErrorCode::UnsupportedProtocol)
        );
        assert_eq!(
            check_protocol("protocol=8"),
            Err(ErrorCode::UnsupportedProtocol)
        );
    }
}
