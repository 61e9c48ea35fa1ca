//! Messages between nodes over one Redis pub/sub channel: a published frame
//! (encoded once, sent once per publish) or a command.
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
    /// Close every socket of a user.
    Terminate {
        /// Sending node.
        node: &'a str,
        /// App id.
        app_id: &'a str,
        /// The user.
        user_id: &'a str,
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
            } => format!("P{SEP}{node}{SEP}{app_id}{SEP}{channel}{SEP}{except}{SEP}{frame}"),
            BusMessage::Terminate {
                node,
                app_id,
                user_id,
            } => format!("T{SEP}{node}{SEP}{app_id}{SEP}{user_id}"),
        }
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
            "T" => {
                let mut parts = rest.splitn(3, SEP);
                Some(BusMessage::Terminate {
                    node: parts.next()?,
                    app_id: parts.next()?,
                    user_id: parts.next()?,
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
    }
}
