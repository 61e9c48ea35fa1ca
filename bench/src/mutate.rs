//! The frames the black-box fuzzer (`frame-fuzz`) sends, and the answer each
//! one must get. Pure: a seeded generator picks a case, so a run is replayed
//! exactly with the same `--seed`.
//!
//! The expected answers follow rusher's documented behaviour (README
//! "Channels and client features" and "Operations", src/session,
//! src/ws/transport.rs): a frame that is not a usable Pusher frame gets a
//! `pusher:error` and the socket stays open; a frame over `max_frame_bytes`
//! is closed with 1009; what breaks the WebSocket framing itself (reserved
//! bits or opcodes, a control frame over 125 bytes) fails the connection
//! with 1002 (RFC 6455 §5.2, §5.5), invalid UTF-8 in a text frame with 1007
//! (RFC 6455 §7.4.1, §8.1).

/// SplitMix64: small, fast and deterministic; quality is ample for picking
/// test cases.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for stream `index` of a run with `seed` (one per connection).
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut mixer = Rng(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        Rng(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; 0 gives 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// `n` printable ASCII characters (valid UTF-8, JSON-hostile).
    pub fn printable(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b' ' + self.below(95) as u8))
            .collect()
    }
}

/// What goes on the wire: a WebSocket frame of some opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// A text frame holding valid UTF-8.
    Text(String),
    /// A text frame whose payload is not UTF-8 (written as a raw frame).
    RawText(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame with this exact payload (may be malformed).
    Close(Vec<u8>),
    /// A text frame with the RSV1 bit set (no extension was negotiated).
    ReservedBits(String),
    /// A data frame with a reserved opcode (3..=7).
    ReservedOpcode(u8, Vec<u8>),
    /// Raw bytes: a masked text frame header declaring `declared` payload
    /// bytes, then only `sent` of them (the server must refuse at the header).
    DeclaredHuge {
        declared: u64,
        sent: usize,
    },
}

/// The answer a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `pusher:pong`, nothing else.
    Pong,
    /// Nothing at all.
    Silent,
    /// Exactly one `pusher:error`, the socket stays open.
    Error,
    /// Anything but a close (e.g. a mutated frame that is still valid JSON).
    Open,
    /// A close frame with one of these codes (a `pusher:error` may come first).
    Close(&'static [u16]),
    /// The server closes, with any code or none (a malformed close frame).
    AnyClose,
}

impl Expect {
    pub fn closes(self) -> bool {
        matches!(self, Expect::Close(_) | Expect::AnyClose)
    }
}

/// One fuzz case: a name (its kind, for the counts), the frame, the answer.
#[derive(Debug, Clone)]
pub struct Case {
    pub kind: &'static str,
    pub wire: Wire,
    pub expect: Expect,
}

fn case(kind: &'static str, wire: Wire, expect: Expect) -> Case {
    Case { kind, wire, expect }
}

const PING: &str = r#"{"event":"pusher:ping","data":{}}"#;

/// Valid frames the mutations start from. None of them can close the
/// socket (no sign-in), whatever a mutation makes of them.
fn valid_frames(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => PING.to_owned(),
        1 => r#"{"event":"pusher:pong","data":{}}"#.to_owned(),
        2 => format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"fuzz-pub-{}"}}}}"#,
            rng.below(5)
        ),
        3 => format!(
            r#"{{"event":"pusher:unsubscribe","data":{{"channel":"fuzz-pub-{}"}}}}"#,
            rng.below(5)
        ),
        4 => format!(
            r#"{{"event":"client-fuzz","channel":"private-fuzz-{}","data":{{"n":{}}}}}"#,
            rng.below(1000),
            rng.below(1000)
        ),
        _ => format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"private-fuzz-{}","auth":"app-key:{}"}}}}"#,
            rng.below(1000),
            rng.printable(8).replace(['"', '\\'], "x")
        ),
    }
}

/// The answer a text frame gets from rusher: not a JSON object is an error;
/// a JSON object may be anything but a close.
fn text_expect(text: &str) -> Expect {
    let object = text.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object());
    if object {
        Expect::Open
    } else {
        Expect::Error
    }
}

/// A ping frame padded to exactly `len` bytes (`len` ≥ 40).
fn ping_of_len(len: usize) -> String {
    let head = r#"{"event":"pusher:ping","data":{"pad":""#;
    let tail = r#""}}"#;
    let pad = len.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// The bytes of [`Wire::DeclaredHuge`]: FIN + text, masked, 64-bit length.
pub fn declared_huge_bytes(declared: u64, sent: usize) -> Vec<u8> {
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&declared.to_be_bytes());
    bytes.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    bytes.resize(bytes.len() + sent, b' ' ^ 0x11);
    bytes
}

/// Picks the next case. `max_frame_bytes` is the server's limit.
pub fn next_case(rng: &mut Rng, max_frame_bytes: usize) -> Case {
    match rng.below(100) {
        0..=9 => {
            let valid = valid_frames(rng);
            let cut = rng.below(valid.len());
            case(
                "truncated",
                Wire::Text(valid[..cut].to_owned()),
                Expect::Error,
            )
        }
        10..=21 => {
            let mut bytes = valid_frames(rng).into_bytes();
            for _ in 0..rng.between(1, 3) {
                let at = rng.below(bytes.len());
                bytes[at] = b' ' + rng.below(95) as u8;
            }
            let text = String::from_utf8(bytes).unwrap_or_default();
            let expect = text_expect(&text);
            case("flipped", Wire::Text(text), expect)
        }
        22..=26 => {
            let text = match rng.below(3) {
                0 => r#"{"event":"pusher:ping","event":"pusher:ping","data":{}}"#.to_owned(),
                1 => {
                    r#"{"event":"pusher:subscribe","data":{"channel":"a"},"data":{"channel":"b"}}"#
                        .to_owned()
                }
                _ => {
                    r#"{"event":"client-x","channel":"private-a","channel":"private-b","data":{}}"#
                        .to_owned()
                }
            };
            case("duplicate-keys", Wire::Text(text), Expect::Error)
        }
        27..=34 => {
            let text = match rng.below(9) {
                0 => r#"{"event":123,"data":{}}"#,
                1 => r#"{"event":["pusher:ping"]}"#,
                2 => r#"{"event":"pusher:subscribe","data":5}"#,
                3 => r#"{"event":"pusher:subscribe","data":{"channel":7}}"#,
                4 => r#"{"event":"pusher:unsubscribe","data":{"channel":null}}"#,
                5 => r#"{"event":"client-x","channel":5,"data":{}}"#,
                6 => "[1,2,3]",
                7 => r#""pusher:ping""#,
                _ => "null",
            };
            case("wrong-types", Wire::Text(text.to_owned()), Expect::Error)
        }
        35..=39 => {
            let n = rng.between(1, max_frame_bytes.saturating_sub(128).max(1));
            if rng.below(2) == 0 {
                let text = format!(r#"{{"event":"pusher:ping","data":"{}"}}"#, "y".repeat(n));
                case("huge-string", Wire::Text(text), Expect::Pong)
            } else {
                let text = format!(
                    r#"{{"event":"client-big","channel":"private-fuzz-nosub","data":"{}"}}"#,
                    "y".repeat(n)
                );
                case("huge-string", Wire::Text(text), Expect::Error)
            }
        }
        40..=42 => {
            let depth = rng.between(1_000, 10_000);
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            if rng.below(2) == 0 {
                // Nesting in `event`: past serde_json's recursion limit.
                let text = format!(r#"{{"event":{nested}}}"#);
                case("deep-nesting", Wire::Text(text), Expect::Error)
            } else {
                // Nesting in `data` of a ping: skipped as raw JSON or refused.
                let text = format!(r#"{{"event":"pusher:ping","data":{nested}}}"#);
                case("deep-nesting", Wire::Text(text), Expect::Open)
            }
        }
        43..=47 => {
            let mut bytes = valid_frames(rng).into_bytes();
            let at = rng.below(bytes.len());
            let bad: &[u8] = match rng.below(4) {
                0 => &[0xff],
                1 => &[0xc3],             // a lead byte without its continuation
                2 => &[0xed, 0xa0, 0x80], // a UTF-16 surrogate
                _ => &[0xf8, 0x88, 0x80, 0x80, 0x80],
            };
            bytes.splice(at..at, bad.iter().copied());
            case("invalid-utf8", Wire::RawText(bytes), Expect::Close(&[1007]))
        }
        48..=50 => case("empty-text", Wire::Text(String::new()), Expect::Error),
        51..=52 => case(
            "at-max-size",
            Wire::Text(ping_of_len(max_frame_bytes)),
            Expect::Pong,
        ),
        53..=54 => {
            let len = max_frame_bytes + rng.between(1, 4096);
            case(
                "over-max-size",
                Wire::Text(ping_of_len(len)),
                Expect::Close(&[1009]),
            )
        }
        55..=59 => {
            let n = rng.below(512);
            case("binary", Wire::Binary(rng.bytes(n)), Expect::Error)
        }
        60..=63 => {
            let n = rng.below(126);
            case("ws-ping", Wire::Ping(rng.bytes(n)), Expect::Silent)
        }
        64..=66 => {
            let n = rng.below(126);
            case("ws-pong", Wire::Pong(rng.bytes(n)), Expect::Silent)
        }
        67 => {
            let n = rng.between(126, 300);
            case(
                "ws-ping-too-long",
                Wire::Ping(rng.bytes(n)),
                Expect::Close(&[1002]),
            )
        }
        68..=69 => {
            let payload = match rng.below(5) {
                0 => Vec::new(),
                1 => vec![0x03],
                2 => vec![0x03, 0xe7], // 999: not a valid close code
                3 => {
                    let mut p = vec![0x03, 0xe8]; // 1000 with an invalid UTF-8 reason
                    p.extend_from_slice(&[0xff, 0xfe]);
                    p
                }
                _ => {
                    let mut p = vec![0x0f, 0xa0]; // 4000 with a random reason
                    let n = rng.below(100);
                    p.extend(rng.printable(n).into_bytes());
                    p
                }
            };
            case("ws-close-odd", Wire::Close(payload), Expect::AnyClose)
        }
        70 => case(
            "reserved-bits",
            Wire::ReservedBits(PING.to_owned()),
            Expect::Close(&[1002]),
        ),
        71 => {
            let opcode = rng.between(3, 7) as u8;
            case(
                "reserved-opcode",
                Wire::ReservedOpcode(opcode, PING.as_bytes().to_vec()),
                Expect::Close(&[1002]),
            )
        }
        72..=79 => {
            let prefix = if rng.below(2) == 0 {
                "pusher"
            } else {
                "pusher_internal"
            };
            let n = rng.between(1, 20);
            let name: String = rng
                .printable(n)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let text = format!(r#"{{"event":"{prefix}:x{name}","data":{{}}}}"#);
            case("unknown-event", Wire::Text(text), Expect::Error)
        }
        80..=87 => {
            let channel = match rng.below(3) {
                0 => format!("private-fuzz-nosub-{}", rng.below(100)),
                1 => format!("presence-fuzz-nosub-{}", rng.below(100)),
                _ => format!("fuzz-pub-nosub-{}", rng.below(100)),
            };
            let text = format!(r#"{{"event":"client-fuzz","channel":"{channel}","data":{{}}}}"#);
            case(
                "client-event-not-subscribed",
                Wire::Text(text),
                Expect::Error,
            )
        }
        88..=93 => {
            let n = rng.between(1, 200);
            let text = rng.printable(n);
            let expect = text_expect(&text);
            case("random-text", Wire::Text(text), expect)
        }
        94..=95 => {
            let declared = (max_frame_bytes as u64 + 1) << rng.between(0, 20);
            let sent = rng.below(max_frame_bytes.min(4096));
            case(
                "declared-huge",
                Wire::DeclaredHuge { declared, sent },
                Expect::Close(&[1009]),
            )
        }
        _ => {
            let text = valid_frames(rng);
            let expect = if text == PING {
                Expect::Pong
            } else {
                text_expect(&text)
            };
            case("valid", Wire::Text(text), expect)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_cases() {
        let mut a = Rng::stream(42, 7);
        let mut b = Rng::stream(42, 7);
        for _ in 0..1000 {
            let (x, y) = (next_case(&mut a, 65536), next_case(&mut b, 65536));
            assert_eq!((x.kind, &x.wire, x.expect), (y.kind, &y.wire, y.expect));
        }
        let mut c = Rng::stream(42, 8);
        assert_ne!(Rng::stream(42, 7).next_u64(), c.next_u64());
    }

    #[test]
    fn sizes_are_at_and_over_the_limit() {
        assert_eq!(ping_of_len(65536).len(), 65536);
        let mut rng = Rng::new(1);
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let case = next_case(&mut rng, 1000);
            kinds.insert(case.kind);
            match (&case.wire, case.kind) {
                (Wire::Text(t), "at-max-size") => assert_eq!(t.len(), 1000),
                (Wire::Text(t), "over-max-size") => assert!(t.len() > 1000),
                (Wire::RawText(b), _) => assert!(std::str::from_utf8(b).is_err()),
                _ => {}
            }
        }
        // Every kind comes up in a short run.
        assert_eq!(kinds.len(), 22, "{kinds:?}");
    }

    #[test]
    fn text_answers_follow_json_shape() {
        assert_eq!(text_expect("{\"event\":"), Expect::Error);
        assert_eq!(text_expect("[]"), Expect::Error);
        assert_eq!(text_expect("{}"), Expect::Open);
    }
}
