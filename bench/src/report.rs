//! The JSON result of a scenario: what was asked, what happened, the
//! headline metrics (a flat list the compare script tabulates), and whether
//! the run was clean.

use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    pub better: Better,
}

impl Metric {
    pub fn new(
        name: &str,
        value: impl Into<Option<f64>>,
        unit: &'static str,
        better: Better,
    ) -> Self {
        Metric {
            name: name.to_owned(),
            value: value.into(),
            unit,
            better,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub target: Target,
    /// True when nothing was lost, refused, dropped or failed.
    pub ok: bool,
    /// Why `ok` is false, one line each.
    pub problems: Vec<String>,
    pub params: Value,
    pub metrics: Vec<Metric>,
    pub details: Value,
}

impl Report {
    /// Prints a short human summary to stderr, the JSON to stdout, and
    /// writes the JSON to `path` when given.
    pub fn emit(&self, path: Option<&Path>) -> anyhow::Result<()> {
        eprintln!(
            "== {} against {}:{} ==",
            self.scenario, self.target.host, self.target.port
        );
        for metric in &self.metrics {
            let value = metric
                .value
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
            eprintln!("  {:<28} {:>14} {}", metric.name, value, metric.unit);
        }
        if self.ok {
            eprintln!("  result: OK");
        } else {
            for problem in &self.problems {
                eprintln!("  PROBLEM: {problem}");
            }
        }
        let json = serde_json::to_string_pretty(self)?;
        println!("{json}");
        if let Some(path) = path {
            std::fs::write(path, format!("{json}\n"))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        Ok(())
    }
}
