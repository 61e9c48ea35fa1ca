//! `frame-fuzz`: a black-box fuzzer. Many connections each send a stream of
//! random and mutated frames ([`crate::mutate`]) and check the class of
//! every answer; a connection the server closes (as expected or not) is
//! reopened. Afterwards the server must be alive, serve a normal client
//! (connect, subscribe, receive an event triggered over the API), have
//! forgotten every fuzz connection, and its RSS must have stayed bounded.
//!
//! Each case is followed by a `pusher:ping` barrier (frames are answered in
//! order), so "no answer" is checked as exactly as "an error": whatever came
//! before the barrier's `pusher:pong` is the case's answer. A case whose
//! answer count is open (a mutated frame that is still JSON) ends its socket. Connection `i`
//! draws its cases from `Rng::stream(seed, i)` and sends a fixed share of
//! the frames, so `--seed` replays a run case by case.

use super::Common;
use crate::api::ApiClient;
use crate::mutate::{self, Case, Expect, Rng, Wire};
use crate::report::{Better, Metric, Report};
use crate::server_state;
use crate::stats::{self, human, RateMeter};
use crate::ws::{self, Ws};
use crate::{frame, system};
use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct Plan {
    pub connections: usize,
    /// Fuzz frames in all (barriers not counted).
    pub frames: u64,
    /// The server's `max_frame_bytes`.
    pub max_frame_bytes: usize,
    pub seed: u64,
    /// Longest wait for one case's answer.
    pub answer_timeout: Duration,
    /// Largest allowed growth of the server's peak RSS over the baseline, in MiB.
    pub rss_growth_mib: f64,
    /// Longest wait for the server to forget the connections at the end.
    pub deadline: Duration,
}

/// What came back for one case.
#[derive(Debug, Default)]
struct Seen {
    pongs: usize,
    errors: Vec<Option<u64>>,
    /// Other events, by name.
    others: Vec<String>,
    /// The connection ended: `Some(code)` from a close frame, `None` without.
    closed: Option<Option<u16>>,
    timed_out: bool,
}

impl Seen {
    /// The answer class counted in the report. `open_ended`: an
    /// [`Expect::Open`] case, read only up to the first pong.
    fn class(&self, barrier: bool, open_ended: bool) -> String {
        if self.timed_out {
            return "timeout".into();
        }
        if let Some(code) = self.closed {
            return code.map_or_else(|| "ended without close".into(), |c| format!("close {c}"));
        }
        if let Some(code) = self.errors.first() {
            return format!(
                "pusher:error {}",
                code.map_or_else(|| "code null".into(), |c| c.to_string())
            );
        }
        if let Some(event) = self.others.first() {
            return event.clone();
        }
        if self.pongs > usize::from(barrier) {
            "pusher:pong".into()
        } else if open_ended {
            // Read up to the first pong only: the case's or the barrier's.
            "no error (a pong, or nothing)".into()
        } else {
            "nothing".into()
        }
    }

    fn matches(&self, expect: Expect) -> bool {
        if self.timed_out && !expect.closes() {
            return false;
        }
        let open = self.closed.is_none();
        match expect {
            Expect::Pong => {
                open && self.pongs == 2 && self.errors.is_empty() && self.others.is_empty()
            }
            Expect::Silent => {
                open && self.pongs == 1 && self.errors.is_empty() && self.others.is_empty()
            }
            Expect::Error => {
                open && self.pongs == 1 && self.errors.len() == 1 && self.others.is_empty()
            }
            Expect::Open => open,
            Expect::Close(codes) => self.closed.flatten().is_some_and(|c| codes.contains(&c)),
            Expect::AnyClose => self.closed.is_some(),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_kind: BTreeMap<&'static str, u64>,
    answers: BTreeMap<String, u64>,
    /// Case kind → answer class → count.
    answers_by_kind: BTreeMap<&'static str, BTreeMap<String, u64>>,
    mismatches: u64,
    mismatch_examples: Vec<String>,
    reconnects: u64,
    connect_errors: BTreeMap<String, u64>,
}

struct Shared {
    common: Arc<Common>,
    plan: Plan,
    sent: AtomicU64,
    barriers: AtomicU64,
    counts: Mutex<Counts>,
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is written for a case: a frame through tungstenite, or raw bytes.
enum Outgoing {
    Frame(Message),
    Raw(Vec<u8>),
}

fn message(wire: &Wire) -> Outgoing {
    let whole = |message: Message| Outgoing::Frame(message);
    let raw = |payload: &[u8], opcode: OpCode| {
        Outgoing::Frame(Message::Frame(Frame::message(
            payload.to_vec(),
            opcode,
            true,
        )))
    };
    match wire {
        Wire::Text(text) => whole(Message::text(text.clone())),
        Wire::RawText(bytes) => raw(bytes, OpCode::Data(Data::Text)),
        Wire::Binary(bytes) => whole(Message::binary(bytes.clone())),
        Wire::Ping(bytes) => raw(bytes, OpCode::Control(Control::Ping)),
        Wire::Pong(bytes) => raw(bytes, OpCode::Control(Control::Pong)),
        Wire::Close(bytes) => raw(bytes, OpCode::Control(Control::Close)),
        Wire::ReservedBits(text) => {
            let mut frame =
                Frame::message(text.clone().into_bytes(), OpCode::Data(Data::Text), true);
            frame.header_mut().rsv1 = true;
            Outgoing::Frame(Message::Frame(frame))
        }
        Wire::ReservedOpcode(opcode, bytes) => raw(bytes, OpCode::Data(Data::Reserved(*opcode))),
        Wire::DeclaredHuge { declared, sent } => {
            Outgoing::Raw(mutate::declared_huge_bytes(*declared, *sent))
        }
    }
}

const BARRIER: &str = r#"{"event":"pusher:ping","data":{}}"#;

/// Reads the answer to a case: until the barrier's pong (`pongs_needed`
/// pongs), or until the connection ends when no barrier was sent.
async fn read_answer(ws: &mut Ws, pongs_needed: Option<usize>, seen: &mut Seen) {
    loop {
        if pongs_needed.is_some_and(|n| seen.pongs >= n) {
            return;
        }
        let Some(item) = ws.next().await else {
            seen.closed.get_or_insert(None);
            return;
        };
        match item {
            Ok(Message::Text(text)) => match frame::event_name(&text) {
                Some("pusher:pong") => seen.pongs += 1,
                Some("pusher:error") => seen.errors.push(frame::error_code(&text)),
                // The server's keep-alive: answer it, it is no answer to the case.
                Some("pusher:ping") => {
                    let _ = ws
                        .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                        .await;
                }
                Some(event) => seen.others.push(event.to_owned()),
                None => seen.others.push("unparsed".into()),
            },
            Ok(Message::Close(close)) => {
                // A close frame without a code reads as 1005 (RFC 6455 §7.1.5).
                seen.closed = Some(Some(close.map_or(1005, |c| u16::from(c.code))));
                return;
            }
            Ok(_) => {}
            Err(_) => {
                seen.closed.get_or_insert(None);
                return;
            }
        }
    }
}

/// Sends one case (and the barrier) and reads its answer.
async fn exchange(ws: &mut Ws, case: &Case, timeout: Duration, shared: &Shared) -> Seen {
    let mut seen = Seen::default();
    let barrier = !case.expect.closes();
    let work = async {
        let sent = match message(&case.wire) {
            Outgoing::Frame(message) => ws.send(message).await.map_err(anyhow::Error::from),
            // Under tungstenite (it writes whole frames only): its write
            // buffer is empty, every send before was awaited.
            Outgoing::Raw(bytes) => ws
                .get_mut()
                .write_all(&bytes)
                .await
                .map_err(anyhow::Error::from),
        };
        if sent.is_err() {
            seen.closed = Some(None);
            return;
        }
        let pongs_needed = if barrier {
            shared.barriers.fetch_add(1, Ordering::Relaxed);
            if ws.send(Message::text(BARRIER)).await.is_err() {
                // Closed under us: read what the server said before.
                read_answer(ws, None, &mut seen).await;
                return;
            }
            Some(1 + usize::from(case.expect == Expect::Pong))
        } else {
            None
        };
        read_answer(ws, pongs_needed, &mut seen).await;
    };
    if tokio::time::timeout(timeout, work).await.is_err() {
        seen.timed_out = true;
    }
    seen
}

async fn open(shared: &Shared) -> Result<Ws> {
    let addr = shared.common.addr()?;
    let (ws, _) = ws::connect(addr, &shared.common.app_key).await?;
    Ok(ws)
}

async fn fuzzer(index: usize, quota: u64, shared: Arc<Shared>) {
    let mut rng = Rng::stream(shared.plan.seed, index as u64);
    let mut ws: Option<Ws> = None;
    for n in 0..quota {
        let mut conn = match ws.take() {
            Some(conn) => conn,
            None => match open(&shared).await {
                Ok(conn) => conn,
                Err(e) => {
                    let key: String = format!("{e:#}").chars().take(160).collect();
                    *shared.counts().connect_errors.entry(key).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let case = mutate::next_case(&mut rng, shared.plan.max_frame_bytes);
        let seen = exchange(&mut conn, &case, shared.plan.answer_timeout, &shared).await;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let class = seen.class(!case.expect.closes(), case.expect == Expect::Open);
        let ok = seen.matches(case.expect);
        {
            let mut counts = shared.counts();
            *counts.by_kind.entry(case.kind).or_default() += 1;
            *counts.answers.entry(class.clone()).or_default() += 1;
            *counts
                .answers_by_kind
                .entry(case.kind)
                .or_default()
                .entry(class.clone())
                .or_default() += 1;
            if !ok {
                counts.mismatches += 1;
                if counts.mismatch_examples.len() < 20 {
                    let shown: String = format!("{:?}", case.wire).chars().take(120).collect();
                    counts.mismatch_examples.push(format!(
                        "seed {} connection {index} case {n} ({}): expected {:?}, got {class} \
                         (pongs {}, errors {:?}, others {:?}); frame {shown}",
                        shared.plan.seed,
                        case.kind,
                        case.expect,
                        seen.pongs,
                        seen.errors,
                        seen.others
                    ));
                }
            }
        }
        // Keep the socket while it is open and the answer was as expected;
        // otherwise start over on a new one. After an `Open` case the number
        // of answers is unknown (a mutated frame may have become a ping), so
        // what follows the barrier could be misread: start over too. Now and
        // then drop a socket abruptly (no close frame) to exercise reaping.
        let closed = seen.closed.is_some() || seen.timed_out || !ok || case.expect == Expect::Open;
        if closed {
            shared.counts().reconnects += 1;
        } else if rng.below(500) == 0 {
            shared.counts().reconnects += 1;
            let _ = conn.get_ref().set_zero_linger();
        } else {
            ws = Some(conn);
        }
    }
    if let Some(conn) = ws {
        ws::close(conn).await;
    }
}

/// A normal client after the storm: connect, subscribe, receive an event
/// triggered over the HTTP API.
async fn normal_client(common: &Common) -> Result<()> {
    let addr = common.addr()?;
    let (mut ws, _) = ws::connect(addr, &common.app_key).await?;
    let channel = "fuzz-after";
    ws::subscribe(&mut ws, channel).await?;
    let mut api = ApiClient::new(addr, common.app());
    let body = crate::api::event_body("after-fuzz", &[channel], "still-serving");
    match api.trigger(body).await? {
        crate::api::Outcome::Ok => {}
        crate::api::Outcome::Status(status, body) => bail!("trigger answered {status}: {body}"),
    }
    let got = tokio::time::timeout(ws::SETUP_TIMEOUT, async {
        loop {
            let text = ws::next_text(&mut ws).await?;
            if frame::event_name(&text) == Some("after-fuzz") {
                return Ok::<_, anyhow::Error>(text);
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the event triggered after the fuzz never arrived"))??;
    ws::close(ws).await;
    if !got.contains("still-serving") {
        bail!("the event arrived without its data: {got}");
    }
    Ok(())
}

fn mib(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| b as f64 / 1048576.0)
}

pub async fn run(common: Common, plan: Plan) -> Result<Report> {
    system::raise_open_files(plan.connections as u64 * 2 + 256);
    let addr = common.addr()?;
    let common = Arc::new(common);
    let pid = common.server_pid;
    let rss_baseline = pid.and_then(system::rss_bytes);
    let rss_peak = Arc::new(AtomicU64::new(rss_baseline.unwrap_or(0)));
    let shared = Arc::new(Shared {
        common: common.clone(),
        plan: plan.clone(),
        sent: AtomicU64::new(0),
        barriers: AtomicU64::new(0),
        counts: Mutex::new(Counts::default()),
    });

    let progress_stop = tokio_util::sync::CancellationToken::new();
    let progress = {
        let shared = shared.clone();
        let peak = rss_peak.clone();
        let meter = RateMeter::new();
        let total = plan.frames;
        stats::spawn_progress("frame-fuzz", progress_stop.clone(), move || {
            let sent = shared.sent.load(Ordering::Relaxed);
            let rss = pid
                .and_then(system::rss_bytes)
                .map_or_else(String::new, |b| {
                    peak.fetch_max(b, Ordering::Relaxed);
                    format!("  server RSS {:.1} MiB", b as f64 / 1048576.0)
                });
            let mismatches = shared.counts().mismatches;
            format!(
                "frames {sent}/{total} (mismatches {mismatches})  {}/s{rss}",
                human(meter.per_second(sent))
            )
        })
    };

    let started = Instant::now();
    let n = plan.connections.max(1) as u64;
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let quota = plan.frames / n + u64::from(i < plan.frames % n);
            tokio::spawn(fuzzer(i as usize, quota, shared.clone()))
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let fuzz_secs = started.elapsed().as_secs_f64();
    progress_stop.cancel();
    let _ = progress.await;
    if let Some(now) = pid.and_then(system::rss_bytes) {
        rss_peak.fetch_max(now, Ordering::Relaxed);
    }

    let alive = pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
    let normal = normal_client(&common).await;
    let mut api = ApiClient::new(addr, common.app());
    let after = server_state::wait_empty(&mut api, &[], plan.deadline).await;
    let rss_after = pid.and_then(system::rss_bytes);
    let rss_peak = pid.map(|_| rss_peak.load(Ordering::Relaxed));

    let sent = shared.sent.load(Ordering::Relaxed);
    let counts = std::mem::take(&mut *shared.counts());
    let mut problems = Vec::new();
    if !alive {
        problems.push("the server process is gone".into());
    }
    if let Err(e) = &normal {
        problems.push(format!("a normal client failed after the fuzz: {e:#}"));
    }
    match &after {
        Ok((snapshot, _)) if snapshot.is_empty() => {}
        Ok((snapshot, _)) => problems.push(format!(
            "the server did not forget the fuzz connections: {snapshot:?}"
        )),
        Err(e) => problems.push(format!("cannot read the server's state: {e:#}")),
    }
    if counts.mismatches > 0 {
        problems.push(format!(
            "{} answers of the wrong class: {:?}",
            counts.mismatches, counts.mismatch_examples
        ));
    }
    if !counts.connect_errors.is_empty() {
        problems.push(format!("connections failed: {:?}", counts.connect_errors));
    }
    if sent < plan.frames {
        problems.push(format!("only {sent} of {} frames were sent", plan.frames));
    }
    let growth_mib = match (rss_baseline, rss_peak) {
        (Some(b), Some(p)) => Some(p.saturating_sub(b) as f64 / 1048576.0),
        _ => None,
    };
    if let Some(growth) = growth_mib.filter(|g| *g > plan.rss_growth_mib) {
        problems.push(format!(
            "server RSS grew by {growth:.1} MiB at the peak (limit {} MiB)",
            plan.rss_growth_mib
        ));
    }

    eprintln!("| answer class | count |");
    eprintln!("|---|---|");
    for (class, count) in &counts.answers {
        eprintln!("| {class} | {count} |");
    }
    let frames_per_s = sent as f64 / fuzz_secs.max(1e-6);
    let metrics = vec![
        Metric::new("frames_per_s", frames_per_s, "frames/s", Better::Higher),
        Metric::new("rss_baseline_mib", mib(rss_baseline), "MiB", Better::Lower),
        Metric::new("rss_peak_mib", mib(rss_peak), "MiB", Better::Lower),
        Metric::new("rss_after_mib", mib(rss_after), "MiB", Better::Lower),
        Metric::new(
            "mismatches",
            counts.mismatches as f64,
            "frames",
            Better::Lower,
        ),
        Metric::new(
            "reconnects",
            counts.reconnects as f64,
            "conns",
            Better::Lower,
        ),
    ];
    Ok(Report {
        scenario: "frame-fuzz",
        target: common.target(),
        ok: problems.is_empty(),
        problems,
        params: json!({
            "connections": plan.connections,
            "frames": plan.frames,
            "max_frame_bytes": plan.max_frame_bytes,
            "seed": plan.seed,
            "answer_timeout_s": plan.answer_timeout.as_secs_f64(),
            "rss_growth_mib": plan.rss_growth_mib,
        }),
        metrics,
        details: json!({
            "frames_sent": sent,
            "barrier_pings": shared.barriers.load(Ordering::Relaxed),
            "seconds": fuzz_secs,
            "frames_per_s": frames_per_s,
            "by_kind": counts.by_kind,
            "answers": counts.answers,
            "answers_by_kind": counts.answers_by_kind,
            "mismatches": counts.mismatches,
            "mismatch_examples": counts.mismatch_examples,
            "reconnects": counts.reconnects,
            "connect_errors": counts.connect_errors,
            "server_alive": alive,
            "normal_client": normal.as_ref().map_or_else(|e| format!("{e:#}"), |()| "ok".into()),
            "after": after.as_ref().ok().map(|(s, _)| s),
            "server_rss_baseline_bytes": rss_baseline,
            "server_rss_peak_bytes": rss_peak,
            "server_rss_after_bytes": rss_after,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_matched_by_class() {
        let error = Seen {
            pongs: 1,
            errors: vec![None],
            ..Seen::default()
        };
        assert!(error.matches(Expect::Error));
        assert!(!error.matches(Expect::Silent));
        assert_eq!(error.class(true, false), "pusher:error code null");
        let pong = Seen {
            pongs: 2,
            ..Seen::default()
        };
        assert!(pong.matches(Expect::Pong) && !pong.matches(Expect::Silent));
        assert_eq!(pong.class(true, false), "pusher:pong");
        let first_pong = Seen {
            pongs: 1,
            ..Seen::default()
        };
        assert_eq!(first_pong.class(true, false), "nothing");
        assert_eq!(
            first_pong.class(true, true),
            "no error (a pong, or nothing)"
        );
        let closed = Seen {
            errors: vec![None],
            closed: Some(Some(1009)),
            ..Seen::default()
        };
        assert!(closed.matches(Expect::Close(&[1009])));
        assert!(!closed.matches(Expect::Close(&[1002])));
        assert!(!closed.matches(Expect::Open));
        assert_eq!(closed.class(false, false), "close 1009");
        let timed_out = Seen {
            pongs: 1,
            timed_out: true,
            ..Seen::default()
        };
        assert!(!timed_out.matches(Expect::Silent));
    }
}
