//! A node's usage report: what it tells the others every
//! `redis.usage_interval_ms` (see [`super`]), and its wire form (compact
//! JSON, carried by `BusMessage::Usage`).
//!
//! Shape: `{"a":[[app_id, authorized, unauthorized, connections,
//! api_requests], ...], "i":[[ip, connections], ...], "d":ips_dropped}`:
//! per app the connections open on the node now (authorized and not yet
//! authorized) and what it admitted since its last report (new connections,
//! HTTP API requests); per client address (the rate limit key) the new
//! connections it admitted since its last report, at most [`MAX_IPS`],
//! largest first, with how many addresses were left out.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most client addresses one report carries (the busiest ones): a flood of
/// many addresses costs the bus a bounded message.
pub const MAX_IPS: usize = 1000;

/// One app's usage on the sending node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppUsage(
    /// App id.
    pub String,
    /// Authorized connections open now (what `max_connections` limits).
    pub u64,
    /// Connections open now that are not authorized yet
    /// (`max_unauthorized_connections`).
    pub u64,
    /// New connections admitted since the last report (`connection_rate`).
    pub u64,
    /// HTTP API requests admitted since the last report
    /// (`max_api_requests_per_second`).
    pub u64,
);

impl AppUsage {
    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.0
    }
}

/// What one node reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Apps with connections open or admissions since the last report.
    #[serde(rename = "a", default)]
    pub apps: Vec<AppUsage>,
    /// Client addresses (rate limit keys) with connections admitted since
    /// the last report.
    #[serde(rename = "i", default)]
    pub ips: Vec<(IpAddr, u64)>,
    /// Addresses left out of this report (beyond [`MAX_IPS`], or not
    /// recorded because the node's table of them was full).
    #[serde(rename = "d", default)]
    pub ips_dropped: u64,
}

/// A report that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable usage report: {0}")]
pub struct BadReport(#[from] serde_json::Error);

impl Report {
    /// The wire form.
    pub fn encode(&self) -> String {
        // Strings, integers and addresses only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the wire form; at most [`MAX_IPS`] addresses are kept, so a
    /// report from a node of another version cannot grow the tables more.
    pub fn decode(text: &str) -> Result<Report, BadReport> {
        let mut report: Report = serde_json::from_str(text)?;
        if report.ips.len() > MAX_IPS {
            let extra = report.ips.len() - MAX_IPS;
            report.ips.truncate(MAX_IPS);
            report.ips_dropped = report.ips_dropped.saturating_add(extra as u64);
        }
        Ok(report)
    }

    /// Keeps the [`MAX_IPS`] addresses with the most connections; the rest
    /// are counted in `ips_dropped`.
    pub fn keep_busiest_ips(&mut self) {
        if self.ips.len() > MAX_IPS {
            self.ips.sort_unstable_by_key(|ip| std::cmp::Reverse(ip.1));
            let extra = self.ips.len() - MAX_IPS;
            self.ips.truncate(MAX_IPS);
            self.ips_dropped = self.ips_dropped.saturating_add(extra as u64);
        }
    }

    /// Whether the report says nothing (no connections, no admissions).
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty() && self.ips.is_empty() && self.ips_dropped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips() {
        let report = Report {
            apps: vec![
                AppUsage("app-1".into(), 3, 1, 2, 40),
                AppUsage("a\u{1f}\"b".into(), 0, 0, 0, 7),
            ],
            ips: vec![
                ("10.0.0.1".parse().unwrap(), 2),
                ("2001:db8::".parse().unwrap(), 1),
            ],
            ips_dropped: 5,
        };
        let wire = report.encode();
        assert!(wire.starts_with(r#"{"a":[["app-1",3,1,2,40]"#), "{wire}");
        assert_eq!(Report::decode(&wire).unwrap(), report);
        assert!(Report::default().is_empty());
        assert_eq!(Report::decode("{}").unwrap(), Report::default());
    }

    #[test]
    fn malformed_reports_are_errors() {
        for bad in [
            "",
            "garbage",
            r#"{"a":[["app",-1,0,0,0]]}"#,
            r#"{"a":[["app",1,0,0]]}"#,
            r#"{"i":[["not-an-ip",1]]}"#,
            r#"{"a":"x"}"#,
        ] {
            assert!(Report::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_busiest_addresses_are_kept() {
        let mut report = Report {
            ips: (0..MAX_IPS as u64 + 10)
                .map(|n| (IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]), n))
                .collect(),
            ..Report::default()
        };
        report.keep_busiest_ips();
        assert_eq!(report.ips.len(), MAX_IPS);
        assert_eq!(report.ips_dropped, 10);
        assert!(report.ips.iter().all(|(_, n)| *n >= 10), "the smallest go");
        // A longer list on the wire is cut too.
        let mut long = report.clone();
        long.ips.push(("10.9.9.9".parse().unwrap(), 1));
        let decoded = Report::decode(&long.encode()).unwrap();
        assert_eq!(decoded.ips.len(), MAX_IPS);
        assert_eq!(decoded.ips_dropped, 11);
    }
}
