//! `[pushi_api]`: whether pushi's HTTP API is served under `/pushi/`, and
//! how long its session tokens live.

use serde::Deserialize;

/// pushi's HTTP API settings (see [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushiApiConfig {
    /// Serve the routes under `/pushi/` (true). Off: they answer 404 like
    /// any unknown path.
    pub enabled: bool,
    /// Seconds a session token from `GET /pushi/login` is valid. The PyPI
    /// client logs in again by itself when a call is refused with 403.
    pub session_ttl_secs: u64,
    /// Logged-out tokens remembered by a node until they expire; beyond it
    /// the ones closest to expiry are forgotten first (and would be accepted
    /// again until they expire).
    pub max_revoked_sessions: usize,
}

impl Default for PushiApiConfig {
    fn default() -> Self {
        PushiApiConfig {
            enabled: true,
            session_ttl_secs: 3600,
            max_revoked_sessions: 100_000,
        }
    }
}

impl PushiApiConfig {
    /// Checks the values; the error names the key (below `pushi_api.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.session_ttl_secs == 0 {
            return Err(("session_ttl_secs", "must be greater than 0".into()));
        }
        if self.max_revoked_sessions == 0 {
            return Err(("max_revoked_sessions", "must be greater than 0".into()));
        }
        Ok(())
    }
}
