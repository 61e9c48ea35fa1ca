//! Messages between nodes over one Redis pub/sub channel: a published frame
//! (encoded once, sent once per publish), a command, or an invalidation (a
//! change to the store other nodes cache, [`crate::hub::invalidation`]).
//!
//! A message borrows its fields: encoding writes them straight into the
//! wire form, and decoding points into the received text, so neither side
//! copies a frame more than the once it must.
//!
//! Several messages may travel in one Redis message, a batch ([`BusBatch`],
//! [`batch_members`]): `B SEP` then each member as its length in bytes
//! (decimal), SEP, and the member's own wire form. Length-prefixed because a
//! member holds SEPs between its fields; its frame (JSON) never holds a raw
//! one but may hold anything else. A receiver handles the members in order,
//! exactly as if each had come alone.

use super::keys::SEP;

/// What a node tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage<'a> {
    /// Deliver `frame` to subscribers of `channel` except `except`.
    Publish {
        /// Sending node (it delivered locally already).
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// Channel.
        channel: &'a str,
        /// Socket excluded from delivery ('' for none).
        except: &'a str,
        /// The encoded frame.
        frame: &'a str,
    },
    /// An event on a channel with history, published by the history script
    /// (which adds `serial` and the frame to [`BusMessage::history_head`]):
    /// every node, the sender included, mirrors it and delivers it when `live`.
    History {
        /// Sending node.
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// Channel.
        channel: &'a str,
        /// Socket excluded from delivery ('' for none).
        except: &'a str,
        /// Whether the sending node's subscribers get it (false: a write
        /// retried after an outage, already delivered there; other nodes
        /// deliver it, late, since the bus could not reach them then).
        live: bool,
        /// The serial Redis gave it.
        serial: u64,
        /// The encoded frame, with its `"serial"`.
        frame: &'a str,
    },
    /// A node's marker: once it comes back to the node, every message Redis
    /// published before it has been handled (the recovery barrier).
    Marker {
        /// Sending node.
        node: &'a str,
        /// The node's token for the waiting recovery.
        token: u64,
    },
    /// Close every socket of a user.
    Terminate {
        /// Sending node.
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// The user.
        user_id: &'a str,
    },
    /// A watched user's deployment-wide sign-in changed (decided once by
    /// the sender, see `signins`): each node tells its own watchers.
    Watchlist {
        /// Sending node (it told its own watchers already).
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// `online` (first signed-in socket anywhere) or `offline` (last).
        online: bool,
        /// The user (last on the wire: it may hold any character).
        user_id: &'a str,
    },
    /// A peer member joined or left a presence channel deployment-wide:
    /// each node tells its own peer members of the channel.
    Peer {
        /// Sending node (it told its own peer members already).
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// `pusher:peer_added` (true) or `pusher:peer_removed`.
        added: bool,
        /// The presence channel.
        channel: &'a str,
        /// The peer member (last on the wire: it may hold any character).
        user_id: &'a str,
    },
    /// A node's usage report (see `crate::usage`): its open connections and
    /// admissions, counted by the others against their limits.
    Usage {
        /// Sending node.
        node: &'a str,
        /// The report's wire form (`crate::usage::report::Report`).
        report: &'a str,
    },
    /// An HTTP session's `xhr_send` relayed to the node holding the session
    /// (see [`super::xhr_relay`]); only node `to` acts, and answers with an
    /// [`BusMessage::XhrReply`].
    XhrSend {
        /// The node holding the session.
        to: &'a str,
        /// The relaying node, waiting for the reply.
        from: &'a str,
        /// The relaying node's id for this request.
        request: u64,
        /// The session id (`{key}/{server}/{session}`).
        session: &'a str,
        /// The client's frames: the JSON array of strings it sent.
        frames: &'a str,
    },
    /// A receive request (`xhr_streaming` stream or `xhr` poll) relayed to
    /// the node holding the session: answered with an
    /// [`BusMessage::XhrReply`], then, once attached, the lines of the
    /// response ([`BusMessage::XhrLine`]) and its end ([`BusMessage::XhrEnd`]).
    XhrAttach {
        /// The node holding the session.
        to: &'a str,
        /// The relaying node, which writes the lines to its HTTP response.
        from: &'a str,
        /// The relaying node's id for this request.
        request: u64,
        /// The session id.
        session: &'a str,
        /// Whether the request is a stream (`true`) or a poll.
        streaming: bool,
    },
    /// The owner's answer to a relayed request.
    XhrReply {
        /// The relaying node.
        to: &'a str,
        /// The request answered.
        request: u64,
        /// The answer, in [`super::xhr_relay`]'s words.
        answer: &'a str,
    },
    /// Lines the owner wrote to a relayed receive request, in order.
    XhrLine {
        /// The relaying node.
        to: &'a str,
        /// The request.
        request: u64,
        /// The text written (whole lines, as the response carries them).
        line: &'a str,
    },
    /// The owner ended a relayed receive request (a poll answered, a newer
    /// request attached, the session closed).
    XhrEnd {
        /// The relaying node.
        to: &'a str,
        /// The request.
        request: u64,
    },
    /// The relaying node's client is gone (it dropped its request) or reads
    /// too slowly (`slow`): the owner detaches it as it would a local one.
    XhrGone {
        /// The node holding the session.
        to: &'a str,
        /// The relaying node.
        from: &'a str,
        /// The request.
        request: u64,
        /// The relaying node's response filled up: a slow client.
        slow: bool,
    },
    /// A user's follow of a channel changed in the store: reload it
    /// ([`crate::hub::invalidation`]).
    Follow {
        /// Sending node.
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// The channel followed or no longer.
        channel: &'a str,
        /// The follower (last: a user id may hold anything).
        user_id: &'a str,
    },
    /// A channel's notification registrations changed in the store: reload them.
    Registrations {
        /// Sending node.
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// The registrations' channel.
        channel: &'a str,
    },
    /// A pushi session token was logged out: refuse it until `expiry`.
    Logout {
        /// Sending node.
        node: &'a str,
        /// The token's expiry (Unix seconds).
        expiry: u64,
        /// The token's nonce.
        nonce: &'a str,
    },
    /// A console on `node` watches `app_id` (a lease, renewed while its
    /// stream is open), or no longer (`watching` false: its last stream of
    /// the app closed). See [`super::console`].
    ConsoleWatch {
        /// The watching node.
        node: &'a str,
        /// Whether the lease starts or is renewed (`true`) or ends.
        watching: bool,
        /// App id (last: any character).
        app_id: &'a str,
    },
    /// An event of `app_id` for the consoles watching it on other nodes.
    ConsoleLog {
        /// The node it happened on.
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// The [`crate::console::tap::ConsoleEvent`] as JSON.
        json: &'a str,
    },
}

impl<'a> BusMessage<'a> {
    /// The wire form: fields joined by SEP; the frame (JSON, which escapes
    /// control characters) comes last so it may hold anything.
    pub fn encode(&self) -> String {
        match self {
            BusMessage::Publish {
                node,
                app_id,
                channel,
                except,
                frame,
            } => format!(
                "{}{frame}",
                Self::publish_head(node, app_id, channel, except)
            ),
            BusMessage::Terminate {
                node,
                app_id,
                user_id,
            } => format!("T{SEP}{node}{SEP}{app_id}{SEP}{user_id}"),
            BusMessage::History {
                node,
                app_id,
                channel,
                except,
                live,
                serial,
                frame,
            } => format!(
                "{}{serial}{SEP}{frame}",
                Self::history_head(node, app_id, channel, except, *live)
            ),
            BusMessage::Marker { node, token } => format!("M{SEP}{node}{SEP}{token}"),
            BusMessage::Watchlist {
                node,
                app_id,
                online,
                user_id,
            } => {
                let online = u8::from(*online);
                format!("W{SEP}{node}{SEP}{app_id}{SEP}{online}{SEP}{user_id}")
            }
            BusMessage::Peer {
                node,
                app_id,
                added,
                channel,
                user_id,
            } => {
                let added = u8::from(*added);
                format!("Q{SEP}{node}{SEP}{app_id}{SEP}{added}{SEP}{channel}{SEP}{user_id}")
            }
            BusMessage::Usage { node, report } => format!("U{SEP}{node}{SEP}{report}"),
            BusMessage::XhrSend {
                to,
                from,
                request,
                session,
                frames,
            } => format!("XS{SEP}{to}{SEP}{from}{SEP}{request}{SEP}{session}{SEP}{frames}"),
            BusMessage::XhrAttach {
                to,
                from,
                request,
                session,
                streaming,
            } => {
                let streaming = u8::from(*streaming);
                format!("XA{SEP}{to}{SEP}{from}{SEP}{request}{SEP}{streaming}{SEP}{session}")
            }
            BusMessage::XhrReply {
                to,
                request,
                answer,
            } => format!("XR{SEP}{to}{SEP}{request}{SEP}{answer}"),
            BusMessage::XhrLine { to, request, line } => {
                format!("XL{SEP}{to}{SEP}{request}{SEP}{line}")
            }
            BusMessage::XhrEnd { to, request } => format!("XE{SEP}{to}{SEP}{request}"),
            BusMessage::XhrGone {
                to,
                from,
                request,
                slow,
            } => {
                let slow = u8::from(*slow);
                format!("XG{SEP}{to}{SEP}{from}{SEP}{request}{SEP}{slow}")
            }
            BusMessage::Follow {
                node,
                app_id,
                channel,
                user_id,
            } => format!("F{SEP}{node}{SEP}{app_id}{SEP}{channel}{SEP}{user_id}"),
            BusMessage::Registrations {
                node,
                app_id,
                channel,
            } => format!("R{SEP}{node}{SEP}{app_id}{SEP}{channel}"),
            BusMessage::Logout {
                node,
                expiry,
                nonce,
            } => format!("L{SEP}{node}{SEP}{expiry}{SEP}{nonce}"),
            BusMessage::ConsoleWatch {
                node,
                watching,
                app_id,
            } => {
                let watching = u8::from(*watching);
                format!("CW{SEP}{node}{SEP}{watching}{SEP}{app_id}")
            }
            BusMessage::ConsoleLog { node, app_id, json } => {
                format!("CL{SEP}{node}{SEP}{app_id}{SEP}{json}")
            }
        }
    }

    /// The start of a [`BusMessage::Publish`] up to its frame: `head + frame`
    /// is the message (the subscription count script appends the frame).
    /// A `node` no node has ('') makes every node deliver it.
    pub fn publish_head(node: &str, app_id: &str, channel: &str, except: &str) -> String {
        format!("P{SEP}{node}{SEP}{app_id}{SEP}{channel}{SEP}{except}{SEP}")
    }

    /// The start of a [`BusMessage::History`] up to its serial: the history
    /// script appends `serial SEP frame`.
    pub fn history_head(
        node: &str,
        app_id: &str,
        channel: &str,
        except: &str,
        live: bool,
    ) -> String {
        let live = u8::from(live);
        format!("H{SEP}{node}{SEP}{app_id}{SEP}{channel}{SEP}{except}{SEP}{live}{SEP}")
    }

    /// Parses the wire form; `None` for anything else.
    pub fn decode(text: &'a str) -> Option<BusMessage<'a>> {
        let (kind, rest) = text.split_once(SEP)?;
        match kind {
            "P" => {
                let mut parts = rest.splitn(5, SEP);
                Some(BusMessage::Publish {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    channel: parts.next()?,
                    except: parts.next()?,
                    frame: parts.next()?,
                })
            }
            "H" => {
                let mut parts = rest.splitn(7, SEP);
                Some(BusMessage::History {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    channel: parts.next()?,
                    except: parts.next()?,
                    live: parts.next()? == "1",
                    serial: parts.next()?.parse().ok()?,
                    frame: parts.next()?,
                })
            }
            "M" => {
                let (node, token) = rest.split_once(SEP)?;
                Some(BusMessage::Marker {
                    node,
                    token: token.parse().ok()?,
                })
            }
            "T" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::Terminate {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    user_id: parts.next()?,
                })
            }
            "W" => {
                let mut parts = rest.splitn(4, SEP);
                Some(BusMessage::Watchlist {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    online: flag(parts.next()?)?,
                    user_id: parts.next()?,
                })
            }
            "Q" => {
                let mut parts = rest.splitn(5, SEP);
                Some(BusMessage::Peer {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    added: flag(parts.next()?)?,
                    channel: parts.next()?,
                    user_id: parts.next()?,
                })
            }
            "F" => {
                let mut parts = rest.splitn(4, SEP);
                Some(BusMessage::Follow {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    channel: parts.next()?,
                    user_id: parts.next()?,
                })
            }
            "U" => {
                let (node, report) = rest.split_once(SEP)?;
                Some(BusMessage::Usage { node, report })
            }
            "XS" => {
                let mut parts = rest.splitn(5, SEP);
                Some(BusMessage::XhrSend {
                    to: parts.next()?,
                    from: parts.next()?,
                    request: parts.next()?.parse().ok()?,
                    session: parts.next()?,
                    frames: parts.next()?,
                })
            }
            "XA" => {
                let mut parts = rest.splitn(5, SEP);
                Some(BusMessage::XhrAttach {
                    to: parts.next()?,
                    from: parts.next()?,
                    request: parts.next()?.parse().ok()?,
                    streaming: parts.next()? == "1",
                    session: parts.next()?,
                })
            }
            "XR" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::XhrReply {
                    to: parts.next()?,
                    request: parts.next()?.parse().ok()?,
                    answer: parts.next()?,
                })
            }
            "XL" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::XhrLine {
                    to: parts.next()?,
                    request: parts.next()?.parse().ok()?,
                    line: parts.next()?,
                })
            }
            "XE" => {
                let (to, request) = rest.split_once(SEP)?;
                Some(BusMessage::XhrEnd {
                    to,
                    request: request.parse().ok()?,
                })
            }
            "XG" => {
                let mut parts = rest.splitn(4, SEP);
                Some(BusMessage::XhrGone {
                    to: parts.next()?,
                    from: parts.next()?,
                    request: parts.next()?.parse().ok()?,
                    slow: parts.next()? == "1",
                })
            }
            "R" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::Registrations {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    channel: parts.next()?,
                })
            }
            "L" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::Logout {
                    node: parts.next()?,
                    expiry: parts.next()?.parse().ok()?,
                    nonce: parts.next()?,
                })
            }
            "CW" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::ConsoleWatch {
                    node: parts.next()?,
                    watching: flag(parts.next()?)?,
                    app_id: parts.next()?,
                })
            }
            "CL" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::ConsoleLog {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    json: parts.next()?,
                })
            }
            _ => None,
        }
    }
}

/// A `0`/`1` field.
fn flag(text: &str) -> Option<bool> {
    match text {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// Most bytes of a batch's wire form (a lone message may be larger; it
/// travels alone).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Most messages in one batch.
pub const MAX_BATCH_MESSAGES: usize = 128;

/// The kind that starts a batch (`B SEP`).
const BATCH_KIND: &str = "B\u{1f}";

/// Builds one Redis message out of several encoded bus messages, bounded by
/// [`MAX_BATCH_BYTES`] and [`MAX_BATCH_MESSAGES`].
#[derive(Debug, Default)]
pub struct BusBatch {
    /// The first message, as is, while it is the only one.
    first: Option<String>,
    /// The batch's wire form once it has two or more members.
    wire: String,
    count: usize,
}

impl BusBatch {
    /// An empty batch.
    pub fn new() -> BusBatch {
        BusBatch::default()
    }

    /// Adds an encoded message; gives it back when the batch is full (by
    /// count, or by bytes once it holds one). A batch always takes its first
    /// message, whatever its size.
    pub fn push(&mut self, message: String) -> Result<(), String> {
        if self.count == 0 {
            self.first = Some(message);
            self.count = 1;
            return Ok(());
        }
        let grown = if self.count == 1 {
            let first = self.first.as_ref().map_or(0, |first| member_len(first));
            BATCH_KIND.len() + first + member_len(&message)
        } else {
            self.wire.len() + member_len(&message)
        };
        if self.count >= MAX_BATCH_MESSAGES || grown > MAX_BATCH_BYTES {
            return Err(message);
        }
        if let Some(first) = self.first.take() {
            self.wire.reserve(grown);
            self.wire.push_str(BATCH_KIND);
            push_member(&mut self.wire, &first);
        }
        push_member(&mut self.wire, &message);
        self.count += 1;
        Ok(())
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The Redis message to publish: a lone message as is (what nodes that
    /// predate batches read too), a batch's wire form otherwise; `None` when
    /// empty. Leaves the batch empty.
    pub fn take(&mut self) -> Option<String> {
        self.count = 0;
        match self.first.take() {
            Some(first) => Some(first),
            None if self.wire.is_empty() => None,
            None => Some(std::mem::take(&mut self.wire)),
        }
    }
}

/// Bytes a member takes in a batch: its length's digits, SEP, itself.
fn member_len(message: &str) -> usize {
    let mut digits = 1;
    let mut len = message.len();
    while len >= 10 {
        len /= 10;
        digits += 1;
    }
    digits + 1 + message.len()
}

fn push_member(wire: &mut String, message: &str) {
    use std::fmt::Write;
    let _ = write!(wire, "{}{SEP}{message}", message.len());
}

/// The messages a Redis message carries, in order: the message itself unless
/// it is a batch, the batch's members otherwise. `None` for a malformed
/// batch (a bad or overlong length, a length that splits a character, an
/// empty batch, a batch inside a batch), which is dropped whole.
pub fn batch_members(text: &str) -> Option<Vec<&str>> {
    let Some(mut rest) = text.strip_prefix(BATCH_KIND) else {
        return Some(vec![text]);
    };
    let mut members = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(SEP)?;
        if len.is_empty() || len.len() > 10 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: usize = len.parse().ok()?;
        let member = tail.get(..len)?;
        if member.starts_with(BATCH_KIND) {
            return None;
        }
        members.push(member);
        rest = &tail[len..];
    }
    (!members.is_empty()).then_some(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(frame: &str) -> String {
        BusMessage::Publish {
            node: "n1",
            app_id: "a",
            channel: "c",
            except: "",
            frame,
        }
        .encode()
    }

    #[test]
    fn a_lone_message_is_sent_as_is() {
        let mut batch = BusBatch::new();
        assert_eq!(batch.take(), None);
        let message = publish("{}");
        assert_eq!(batch.push(message.clone()), Ok(()));
        assert_eq!(batch.take(), Some(message.clone()));
        assert!(batch.is_empty());
        assert_eq!(batch_members(&message), Some(vec![message.as_str()]));
    }

    #[test]
    fn batches_round_trip_in_order() {
        // Frames with every character JSON lets through raw: SEPs' neighbours,
        // digits (lengths look alike), multi-byte characters, "B".
        let frames = [
            r#"{"event":"e","data":"a\u001fb"}"#,
            r#"{"data":"12\u001f3 B é 💬"}"#,
            "{}",
        ];
        let sent: Vec<String> = frames.iter().map(|frame| publish(frame)).collect();
        let mut batch = BusBatch::new();
        for message in &sent {
            assert_eq!(batch.push(message.clone()), Ok(()));
        }
        let marker = BusMessage::Marker {
            node: "n1",
            token: 9,
        }
        .encode();
        assert_eq!(batch.push(marker.clone()), Ok(()));
        assert_eq!(batch.len(), 4);
        let wire = batch.take().unwrap_or_default();
        assert!(wire.starts_with(BATCH_KIND));
        assert!(batch.is_empty() && batch.take().is_none());
        let members = batch_members(&wire).unwrap_or_default();
        assert_eq!(members.len(), 4);
        for (member, message) in members.iter().zip(sent.iter().chain([&marker])) {
            assert_eq!(member, message);
            assert!(BusMessage::decode(member).is_some());
        }
    }

    #[test]
    fn batches_are_bounded_in_count_and_bytes() {
        let mut batch = BusBatch::new();
        for _ in 0..MAX_BATCH_MESSAGES {
            assert_eq!(batch.push(publish("{}")), Ok(()));
        }
        assert_eq!(batch.push(publish("{}")), Err(publish("{}")));
        let wire = batch.take().unwrap_or_default();
        assert_eq!(
            batch_members(&wire).map(|m| m.len()),
            Some(MAX_BATCH_MESSAGES)
        );

        let big = publish(&format!(r#"{{"data":"{}"}}"#, "x".repeat(MAX_BATCH_BYTES)));
        // Alone, any size goes; with it, nothing else fits.
        assert_eq!(batch.push(big.clone()), Ok(()));
        assert_eq!(batch.push(publish("{}")), Err(publish("{}")));
        assert_eq!(batch.take(), Some(big));
        let half = publish(&format!(
            r#"{{"data":"{}"}}"#,
            "x".repeat(MAX_BATCH_BYTES / 2)
        ));
        assert_eq!(batch.push(half.clone()), Ok(()));
        assert_eq!(batch.push(half.clone()), Err(half));
        let mut filled = BusBatch::new();
        let small = publish(&"y".repeat(1000));
        while filled.push(small.clone()).is_ok() {}
        let wire = filled.take().unwrap_or_default();
        assert!(wire.len() <= MAX_BATCH_BYTES, "{}", wire.len());
        assert!(wire.len() + small.len() > MAX_BATCH_BYTES - 16);
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        let member = publish("{}");
        let good = format!("B\u{1f}{}\u{1f}{member}", member.len());
        assert_eq!(batch_members(&good), Some(vec![member.as_str()]));
        for bad in [
            "B\u{1f}".to_owned(),                                 // empty
            format!("B\u{1f}{}\u{1f}{member}", member.len() + 1), // overlong
            format!("B\u{1f}{}\u{1f}{member}x", member.len()),    // trailing junk
            format!("B\u{1f}+{}\u{1f}{member}", member.len()),    // sign
            format!("B\u{1f}{}", member.len()),                   // no SEP
            format!("B\u{1f}x\u{1f}{member}"),                    // not a number
            "B\u{1f}99999999999999999999\u{1f}x".to_owned(),      // huge
            "B\u{1f}1\u{1f}é".to_owned(),                         // splits a character
            format!("B\u{1f}{}\u{1f}{good}", good.len()),         // nested
        ] {
            assert_eq!(batch_members(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_round_trip() {
        let publish = BusMessage::Publish {
            node: "n1",
            app_id: "a",
            channel: "presence-x",
            except: "1.2",
            frame: r#"{"event":"e","data":"a\u001fb"}"#,
        };
        let wire = publish.encode();
        assert_eq!(BusMessage::decode(&wire), Some(publish));
        let terminate = BusMessage::Terminate {
            node: "n1",
            app_id: "a",
            user_id: "u1",
        };
        let wire = terminate.encode();
        assert_eq!(BusMessage::decode(&wire), Some(terminate));
        assert_eq!(BusMessage::decode("garbage"), None);
        let history = BusMessage::History {
            node: "n1",
            app_id: "a",
            channel: "c",
            except: "",
            live: true,
            serial: 42,
            frame: r#"{"event":"e","serial":42}"#,
        };
        let wire = history.encode();
        assert!(wire.starts_with(&BusMessage::history_head("n1", "a", "c", "", true)));
        assert_eq!(BusMessage::decode(&wire), Some(history));
        let marker = BusMessage::Marker {
            node: "n1",
            token: 7,
        };
        assert_eq!(BusMessage::decode(&marker.encode()), Some(marker));
        for online in [true, false] {
            // A user id may hold the separator: it comes last.
            let watchlist = BusMessage::Watchlist {
                node: "n1",
                app_id: "a",
                online,
                user_id: "u\u{1f}1",
            };
            assert_eq!(BusMessage::decode(&watchlist.encode()), Some(watchlist));
            let peer = BusMessage::Peer {
                node: "n1",
                app_id: "a",
                added: online,
                channel: "presence-room",
                user_id: "u\u{1f}2",
            };
            assert_eq!(BusMessage::decode(&peer.encode()), Some(peer));
        }
        assert_eq!(BusMessage::decode("W\u{1f}n1\u{1f}a\u{1f}x\u{1f}u"), None);
        let usage = BusMessage::Usage {
            node: "n1",
            report: r#"{"a":[["app",1,0,0,0]],"i":[],"d":0}"#,
        };
        assert_eq!(BusMessage::decode(&usage.encode()), Some(usage));
        assert_eq!(BusMessage::decode("U\u{1f}n1"), None, "no report");
    }

    #[test]
    fn xhr_relay_messages_round_trip() {
        let frames = r#"["{\"event\":\"pusher:ping\",\"data\":\"a\u001fb\"}"]"#;
        let messages = [
            BusMessage::XhrSend {
                to: "n1",
                from: "n2",
                request: 7,
                session: "app-key/12/abcd1234",
                frames,
            },
            BusMessage::XhrAttach {
                to: "n1",
                from: "n2",
                request: 8,
                session: "app-key/12/abcd1234",
                streaming: true,
            },
            BusMessage::XhrAttach {
                to: "n1",
                from: "n2",
                request: 9,
                session: "k/1/s",
                streaming: false,
            },
            BusMessage::XhrReply {
                to: "n2",
                request: 8,
                answer: "closed:c[4009,\"x\u{1f}y\"]\n",
            },
            BusMessage::XhrLine {
                to: "n2",
                request: 8,
                line: "o\na[\"{}\"]\n",
            },
            BusMessage::XhrEnd {
                to: "n2",
                request: 8,
            },
            BusMessage::XhrGone {
                to: "n1",
                from: "n2",
                request: 8,
                slow: true,
            },
            BusMessage::XhrGone {
                to: "n1",
                from: "n2",
                request: 9,
                slow: false,
            },
        ];
        for message in messages {
            let wire = message.encode();
            assert_eq!(BusMessage::decode(&wire), Some(message));
        }
        assert_eq!(
            BusMessage::decode("XR\u{1f}n2\u{1f}notanumber\u{1f}x"),
            None
        );
    }

    #[test]
    fn invalidations_round_trip() {
        let follow = BusMessage::Follow {
            node: "n1",
            app_id: "a",
            channel: "news",
            user_id: "odd\u{1f}user",
        };
        assert_eq!(BusMessage::decode(&follow.encode()), Some(follow));
        let registrations = BusMessage::Registrations {
            node: "n1",
            app_id: "a",
            channel: "personal-u",
        };
        assert_eq!(
            BusMessage::decode(&registrations.encode()),
            Some(registrations)
        );
        let logout = BusMessage::Logout {
            node: "n1",
            expiry: 1_700_000_000,
            nonce: "00ff",
        };
        assert_eq!(BusMessage::decode(&logout.encode()), Some(logout));
        assert_eq!(BusMessage::decode("L\u{1f}n1\u{1f}soon\u{1f}00ff"), None);
        assert_eq!(BusMessage::decode("F\u{1f}n1\u{1f}a\u{1f}news"), None);
    }

    #[test]
    fn console_messages_round_trip() {
        for watching in [true, false] {
            let watch = BusMessage::ConsoleWatch {
                node: "n1",
                watching,
                app_id: "app\u{1f}odd",
            };
            assert_eq!(BusMessage::decode(&watch.encode()), Some(watch));
        }
        let log = BusMessage::ConsoleLog {
            node: "n2",
            app_id: "a",
            json: r#"{"kind":"api_event","data":"a\u001fb","node":"n2"}"#,
        };
        assert_eq!(BusMessage::decode(&log.encode()), Some(log));
        assert_eq!(
            BusMessage::decode("CW\u{1f}n1\u{1f}x\u{1f}a"),
            None,
            "bad flag"
        );
        assert_eq!(BusMessage::decode("CL\u{1f}n1\u{1f}a"), None, "no json");
    }
}
