//! Messages between nodes over one Redis pub/sub channel: a published frame
//! (encoded once, sent once per publish), a command, or an invalidation (a
//! change to the store other nodes cache, [`crate::hub::invalidation`]).
//!
//! A message borrows its fields: encoding writes them straight into the
//! wire form, and decoding points into the received text, so neither side
//! copies a frame more than the once it must.

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
            "F" => {
                let mut parts = rest.splitn(4, SEP);
                Some(BusMessage::Follow {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    channel: parts.next()?,
                    user_id: parts.next()?,
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
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
