//! Messages between nodes over one Redis pub/sub channel: a published frame
//! (encoded once, sent once per publish) or a command.

use super::keys::SEP;

/// What a node tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// Deliver `frame` to subscribers of `channel` except `except`.
    Publish {
        /// Sending node (it delivered locally already).
        node: String,
        /// App id.
        app_id: String,
        /// Channel.
        channel: String,
        /// Socket excluded from delivery ('' for none).
        except: String,
        /// The encoded frame.
        frame: String,
    },
    /// Close every socket of a user.
    Terminate {
        /// Sending node.
        node: String,
        /// App id.
        app_id: String,
        /// The user.
        user_id: String,
    },
}

impl BusMessage {
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
            } => format!("P{SEP}{node}{SEP}{app_id}{SEP}{channel}{SEP}{except}{SEP}{frame}"),
            BusMessage::Terminate {
                node,
                app_id,
                user_id,
            } => format!("T{SEP}{node}{SEP}{app_id}{SEP}{user_id}"),
        }
    }

    /// Parses the wire form; `None` for anything else.
    pub fn decode(text: &str) -> Option<BusMessage> {
        let (kind, rest) = text.split_once(SEP)?;
        match kind {
            "P" => {
                let mut parts = rest.splitn(5, SEP);
                Some(BusMessage::Publish {
                    node: parts.next()?.to_owned(),
                    app_id: parts.next()?.to_owned(),
                    channel: parts.next()?.to_owned(),
                    except: parts.next()?.to_owned(),
                    frame: parts.next()?.to_owned(),
                })
            }
            "T" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::Terminate {
                    node: parts.next()?.to_owned(),
                    app_id: parts.next()?.to_owned(),
                    user_id: parts.next()?.to_owned(),
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
            node: "n1".into(),
            app_id: "a".into(),
            channel: "presence-x".into(),
            except: "1.2".into(),
            frame: r#"{"event":"e","data":"a\u001fb"}"#.into(),
        };
        assert_eq!(BusMessage::decode(&publish.encode()), Some(publish));
        let terminate = BusMessage::Terminate {
            node: "n1".into(),
            app_id: "a".into(),
            user_id: "u1".into(),
        };
        assert_eq!(BusMessage::decode(&terminate.encode()), Some(terminate));
        assert_eq!(BusMessage::decode("garbage"), None);
    }
}
