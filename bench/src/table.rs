//! The comparison table: reads the JSON results written by `compare.sh`,
//! `{dir}/{server}-{label}.json` for one round or
//! `{dir}/{server}-{label}-r{N}.json` for round N of several, and renders
//! one markdown table: per server the median of the rounds (with the
//! min–max range when there are several), the ratios rusher/sockudo and
//! rusher/bare of the medians, then checks the benchmark issues' targets.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// Most rounds a table reads (`compare.sh` ROUNDS).
const MAX_ROUNDS: usize = 99;

/// The rounds of one server on one scenario (none when it was not run).
struct Run {
    /// (round number, result), in round order.
    rounds: Vec<(usize, Value)>,
}

impl Run {
    fn load(dir: &Path, server: &str, label: &str) -> Run {
        let read = |path: &Path| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
        };
        let mut rounds: Vec<(usize, Value)> = read(&dir.join(format!("{server}-{label}.json")))
            .map(|value| (1, value))
            .into_iter()
            .collect();
        // A failed round leaves no file: the others still count.
        rounds.extend((1..=MAX_ROUNDS).filter_map(|n| {
            read(&dir.join(format!("{server}-{label}-r{n}.json"))).map(|value| (n, value))
        }));
        Run { rounds }
    }

    fn found(&self) -> Option<&Value> {
        self.rounds.first().map(|(_, value)| value)
    }

    /// The metric's value in every round that has it.
    fn values(&self, name: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|(_, round)| {
                round["metrics"]
                    .as_array()?
                    .iter()
                    .find(|m| m["name"] == name)?["value"]
                    .as_f64()
            })
            .collect()
    }

    /// The median of the rounds (the mean of the middle two for an even count).
    fn metric(&self, name: &str) -> Option<f64> {
        median(&self.values(name))
    }

    /// Min and max of the rounds, when there are several.
    fn range(&self, name: &str) -> Option<(f64, f64)> {
        let values = self.values(name);
        if values.len() < 2 {
            return None;
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((min, max))
    }

    /// Whether every round ran clean; `None` when there is no round.
    fn ok(&self) -> Option<bool> {
        if self.rounds.is_empty() {
            return None;
        }
        Some(
            self.rounds
                .iter()
                .all(|(_, r)| r["ok"].as_bool() == Some(true)),
        )
    }

    fn problems(&self) -> Vec<String> {
        let several = self.rounds.len() > 1;
        self.rounds
            .iter()
            .flat_map(|(n, round)| {
                round["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .map(move |p| {
                        if several {
                            format!("round {n}: {p}")
                        } else {
                            p.to_owned()
                        }
                    })
            })
            .collect()
    }
}

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A short description of what a run did, from its params.
fn describe(label: &str, run: &Run) -> String {
    let Some(value) = run.found() else {
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
    // Per label, each server's rounds (read once).
    let all: Vec<Vec<Run>> = labels
        .iter()
        .map(|label| servers.iter().map(|s| Run::load(dir, s, label)).collect())
        .collect();
    // A server with no result at all was not run: one note, not one per row.
    let not_run: Vec<&String> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| all.iter().all(|runs| runs[*i].found().is_none()))
        .map(|(_, s)| s)
        .collect();
    for server in &not_run {
        notes.push(format!("- {server}: not run"));
    }
    for (label, runs) in labels.iter().zip(&all) {
        let index = |name: &str| servers.iter().position(|s| s == name);
        let reference = runs.iter().find_map(|r| r.found().map(|value| (r, value)));
        let Some((reference, reference_value)) = reference else {
            let _ = writeln!(
                out,
                "| {label} | (no results) |{}| | |",
                " |".repeat(servers.len())
            );
            continue;
        };
        let description = describe(label, reference);
        let names: Vec<String> = reference_value["metrics"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for (server, run) in servers.iter().zip(runs) {
            match run.ok() {
                Some(false) => notes.push(format!(
                    "- {server}, {description}: {}",
                    run.problems().join("; ")
                )),
                None if not_run.contains(&server) => {}
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
                .zip(runs)
                .map(|(v, r)| {
                    let flag = if r.ok() == Some(false) { " ⚠" } else { "" };
                    let range = r.range(name).map_or_else(String::new, |(min, max)| {
                        format!(" ({}–{})", number(Some(min)), number(Some(max)))
                    });
                    format!("{}{range}{flag}", number(*v))
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

/// The benchmark issues' targets, checked against the medians (rusher is
/// the first server): against the bare server (the limit), every throughput
/// row ≥ 0.95×, every fixed-rate p99 ≤ 1.1×, RSS per idle connection ≤ 1.2×;
/// against sockudo, the first benchmark issue's margins.
pub fn targets(dir: &Path, labels: &[String]) -> String {
    let mut out = String::from("\nTargets (medians; rusher vs bare, then vs sockudo):\n");
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
    let vs = |peer: &str, label: &str, metric: &str| {
        ratio(get("rusher", label, metric), get(peer, label, metric))
    };
    let fixed_rate =
        |l: &&String| (l.starts_with("fanout") && !l.contains("-max")) || l.starts_with("channels");
    for peer in ["bare", "sockudo"] {
        let (at_least, at_most_p99, rss) = if peer == "bare" {
            (0.95, 1.1, 1.2)
        } else {
            (1.5, 0.7, 0.5)
        };
        let rows = labels.iter().filter_map(|l| {
            let metric = if l.starts_with("fanout") && l.contains("-max") {
                "deliveries_per_s"
            } else if l.starts_with("publish") {
                "publish_per_s"
            } else if l.starts_with("presence") && peer == "bare" {
                "member_events_per_s"
            } else if l.starts_with("connect") && peer == "bare" {
                "connections_per_s"
            } else {
                return None;
            };
            Some((l, metric))
        });
        for (label, metric) in rows {
            check(
                format!("{label} {metric} vs {peer}"),
                vs(peer, label, metric),
                &|r| r >= at_least,
                &format!("≥ {at_least}×"),
            );
        }
        for label in labels.iter().filter(fixed_rate) {
            if peer == "sockudo" && !label.starts_with("fanout") {
                continue;
            }
            check(
                format!("{label} latency_p99_ms vs {peer}"),
                vs(peer, label, "latency_p99_ms"),
                &|r| r <= at_most_p99,
                &format!("≤ {at_most_p99}×"),
            );
        }
        for label in labels.iter().filter(|l| l.starts_with("connect")) {
            check(
                format!("{label} rss_per_conn_kib vs {peer}"),
                vs(peer, label, "rss_per_conn_kib"),
                &|r| r <= rss,
                &format!("≤ {rss}×"),
            );
        }
    }
    let lost: Vec<String> = labels
        .iter()
        .filter_map(|label| {
            let lost = Run::load(dir, "rusher", label).values("lost");
            let total: f64 = lost.iter().sum();
            (total > 0.0).then(|| format!("{label}: {total}"))
        })
        .collect();
    let _ = writeln!(
        out,
        "- rusher lost deliveries (all rounds): {}",
        if lost.is_empty() {
            "none PASS".to_owned()
        } else {
            format!("{} FAIL", lost.join(", "))
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, dps: f64, ok: bool) {
        let value = serde_json::json!({
            "scenario": "fanout",
            "ok": ok,
            "problems": if ok { vec![] } else { vec!["lost 1"] },
            "params": {"subscribers": 10, "rate": 0, "window": 4},
            "metrics": [{"name": "deliveries_per_s", "value": dps}],
        });
        std::fs::write(dir.join(name), value.to_string()).expect("write");
    }

    #[test]
    fn medians_and_ranges_of_rounds() {
        let dir = std::env::temp_dir().join(format!("table-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (n, dps) in [(1, 300.0), (2, 100.0), (3, 200.0)] {
            write(&dir, &format!("rusher-f-r{n}.json"), dps, true);
        }
        // bare's round 2 failed to write: rounds 1 and 3 still count.
        write(&dir, "bare-f-r1.json", 100.0, true);
        write(&dir, "bare-f-r3.json", 300.0, false);
        let servers = ["rusher", "sockudo", "bare"].map(String::from).to_vec();
        let table = render(&dir, &servers, &["f".to_owned()]);
        assert!(
            table.contains("| 200.0 (100.0–300.0) | — | 200.0 (100.0–300.0) ⚠ |"),
            "{table}"
        );
        assert!(table.contains("| 1.00× |"), "{table}");
        assert!(
            table.contains("bare, fanout: 10 subs, max rate (window 4 ev): round 3: lost 1"),
            "{table}"
        );
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0]), Some(2.0));
    }
}
