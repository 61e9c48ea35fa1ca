//! The comparison table: reads the JSON results `{dir}/{server}-{label}.json`
//! written by `compare.sh`, and renders one markdown table with absolute
//! figures and the ratios rusher/sockudo and rusher/bare, then checks the
//! targets of the benchmark issue.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// One result file, or why there is none.
enum Run {
    Missing,
    Found(Value),
}

impl Run {
    fn load(dir: &Path, server: &str, label: &str) -> Run {
        let path = dir.join(format!("{server}-{label}.json"));
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
        {
            Some(value) => Run::Found(value),
            None => Run::Missing,
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let Run::Found(value) = self else { return None };
        value["metrics"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)?["value"]
            .as_f64()
    }

    fn ok(&self) -> Option<bool> {
        match self {
            Run::Found(value) => value["ok"].as_bool(),
            Run::Missing => None,
        }
    }

    fn problems(&self) -> Vec<String> {
        match self {
            Run::Found(value) => value["problems"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Run::Missing => Vec::new(),
        }
    }
}

/// A short description of what a run did, from its params.
fn describe(label: &str, run: &Run) -> String {
    let Run::Found(value) = run else {
        return label.to_owned();
    };
    let p = &value["params"];
    let n = |key: &str| p[key].as_f64().unwrap_or(0.0);
    match value["scenario"].as_str().unwrap_or("") {
        "fanout" if n("rate") > 0.0 => format!(
            "fanout: {} subs, {} ev/s, {} B",
            n("subscribers"),
            n("rate"),
            n("payload_bytes")
        ),
        "fanout" => format!(
            "fanout: {} subs, max rate (window {} ev)",
            n("subscribers"),
            n("window")
        ),
        "channels" => format!(
            "channels: {} conns/channels, {} ch/event, {} ev/s",
            n("subscribers"),
            n("channels_per_event"),
            if n("rate") > 0.0 {
                n("rate").to_string()
            } else {
                "max".into()
            }
        ),
        "connect" => format!("connect: {} idle conns", n("connections")),
        "publish" => format!(
            "publish: {} HTTP clients, {} subs",
            n("publishers"),
            n("subscribers")
        ),
        "presence" => format!(
            "presence: {} ch × ({} observers + {} churners)",
            n("channels"),
            n("observers_per_channel"),
            n("churners_per_channel")
        ),
        other => format!("{other} ({label})"),
    }
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "—".into(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{r:.2}×"))
}

/// Renders the table for `labels` (in order) over `servers`; the first
/// server is the one compared, ratios are taken against `sockudo` and `bare`.
pub fn render(dir: &Path, servers: &[String], labels: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | metric | {} | rusher/sockudo | rusher/bare |",
        servers.join(" | ")
    );
    let _ = writeln!(out, "|---|---|{}---|---|", "---|".repeat(servers.len()));
    let mut notes = Vec::new();
    for label in labels {
        let runs: Vec<Run> = servers.iter().map(|s| Run::load(dir, s, label)).collect();
        let index = |name: &str| servers.iter().position(|s| s == name);
        let reference = runs.iter().find(|r| matches!(r, Run::Found(_)));
        let Some(Run::Found(reference_value)) = reference else {
            let _ = writeln!(
                out,
                "| {label} | (no results) |{}| | |",
                " |".repeat(servers.len())
            );
            continue;
        };
        let description = describe(label, reference.expect("found"));
        let names: Vec<String> = reference_value["metrics"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for (server, run) in servers.iter().zip(&runs) {
            match run.ok() {
                Some(false) => notes.push(format!(
                    "- {server}, {description}: {}",
                    run.problems().join("; ")
                )),
                None => notes.push(format!(
                    "- {server}, {description}: no result (not run, or the run failed)"
                )),
                Some(true) => {}
            }
        }
        for (row, name) in names.iter().enumerate() {
            let values: Vec<Option<f64>> = runs.iter().map(|r| r.metric(name)).collect();
            let cells: Vec<String> = values
                .iter()
                .zip(&runs)
                .map(|(v, r)| {
                    let flag = if r.ok() == Some(false) { " ⚠" } else { "" };
                    format!("{}{flag}", number(*v))
                })
                .collect();
            let first = values.first().copied().flatten();
            let vs = |name: &str| ratio_text(index(name).and_then(|i| ratio(first, values[i])));
            let scenario = if row == 0 { description.as_str() } else { "" };
            let _ = writeln!(
                out,
                "| {scenario} | {name} | {} | {} | {} |",
                cells.join(" | "),
                vs("sockudo"),
                vs("bare")
            );
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n⚠ = the run was not clean:");
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
    }
    out
}

/// The targets, checked against the results (rusher is the first server).
pub fn targets(dir: &Path, labels: &[String]) -> String {
    let mut out = String::from("\nTargets (rusher vs sockudo / bare):\n");
    let get =
        |server: &str, label: &str, metric: &str| Run::load(dir, server, label).metric(metric);
    let mut check = |what: String, r: Option<f64>, ok: &dyn Fn(f64) -> bool, goal: &str| {
        let verdict = match r {
            None => "n/a".to_owned(),
            Some(r) if ok(r) => format!("{r:.2}× PASS"),
            Some(r) => format!("{r:.2}× FAIL"),
        };
        let _ = writeln!(out, "- {what}: {verdict} (target {goal})");
    };
    for label in labels
        .iter()
        .filter(|l| l.starts_with("fanout") && l.ends_with("max"))
    {
        let rusher = get("rusher", label, "deliveries_per_s");
        check(
            format!("{label} deliveries/s vs sockudo"),
            ratio(rusher, get("sockudo", label, "deliveries_per_s")),
            &|r| r >= 1.5,
            "≥ 1.5×",
        );
        check(
            format!("{label} deliveries/s vs bare"),
            ratio(rusher, get("bare", label, "deliveries_per_s")),
            &|r| r >= 0.75,
            "≥ 0.75×",
        );
    }
    for label in labels
        .iter()
        .filter(|l| l.starts_with("fanout") && !l.ends_with("max"))
    {
        check(
            format!("{label} p99 latency vs sockudo"),
            ratio(
                get("rusher", label, "latency_p99_ms"),
                get("sockudo", label, "latency_p99_ms"),
            ),
            &|r| r <= 0.7,
            "≤ 0.7×",
        );
    }
    for label in labels.iter().filter(|l| l.starts_with("connect")) {
        check(
            format!("{label} RSS per idle connection vs sockudo"),
            ratio(
                get("rusher", label, "rss_per_conn_kib"),
                get("sockudo", label, "rss_per_conn_kib"),
            ),
            &|r| r <= 0.5,
            "≤ 0.5×",
        );
    }
    for label in labels.iter().filter(|l| l.starts_with("publish")) {
        check(
            format!("{label} HTTP publish/s vs sockudo"),
            ratio(
                get("rusher", label, "publish_per_s"),
                get("sockudo", label, "publish_per_s"),
            ),
            &|r| r >= 1.5,
            "≥ 1.5×",
        );
    }
    let lost: Vec<String> = labels
        .iter()
        .filter_map(|label| {
            let lost = get("rusher", label, "lost")?;
            (lost > 0.0).then(|| format!("{label}: {lost}"))
        })
        .collect();
    let _ = writeln!(
        out,
        "- rusher lost deliveries: {}",
        if lost.is_empty() {
            "none PASS".to_owned()
        } else {
            format!("{} FAIL", lost.join(", "))
        }
    );
    out
}
