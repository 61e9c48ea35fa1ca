//! Refuses an oversized client frame at its header.
//!
//! actix-http's WebSocket decoder checks `max_frame_bytes` only once the
//! whole frame has arrived, and the bytes wait in a buffer until then: a
//! client declaring a 1 GiB frame could make the server hold 1 GiB per
//! connection before the 1009 close. The WebSocket context
//! ([`super::context`]) passes every read through [`FrameSizes`] before
//! buffering it: it reads just the frame headers (RFC 6455 §5.2: 2 bytes,
//! then a 16- or 64-bit extended length, then the 4-byte mask key) and
//! reports the first header that declares a payload over the limit, so at
//! most one frame of `max_frame_bytes` is ever buffered. The transport then
//! answers as for any frame too large: `pusher:error` and close 1009.

/// Longest frame header: 2 + 8 (64-bit length) + 4 (mask key).
const MAX_HEADER: usize = 14;

/// Where the reader is in the client's frame sequence.
#[derive(Debug)]
enum State {
    /// Reading a header; `len` bytes of it so far.
    Header { buf: [u8; MAX_HEADER], len: usize },
    /// Skipping a payload; `remaining` bytes to go.
    Payload { remaining: u64 },
}

/// Follows the frame headers of a client's byte stream (pure).
#[derive(Debug)]
pub struct FrameSizes {
    max: u64,
    state: State,
}

/// A header declared a payload over the limit; it starts at byte `at` of
/// the chunk being read (0 when it began in an earlier chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize {
    pub at: usize,
    pub declared: u64,
}

fn header_len(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        n => u64::from(n),
    }
}

const EMPTY: State = State::Header {
    buf: [0; MAX_HEADER],
    len: 0,
};

impl FrameSizes {
    /// A reader for frames of at most `max` payload bytes (the decoder's
    /// `frame_size`: a frame of exactly `max` bytes is accepted).
    pub fn new(max: usize) -> Self {
        FrameSizes {
            max: max as u64,
            state: EMPTY,
        }
    }

    /// Reads the next bytes the client sent.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Oversize> {
        let mut pos = 0;
        // Where the header being read began in this chunk.
        let mut header_at = 0;
        while pos < chunk.len() {
            match &mut self.state {
                State::Payload { remaining } => {
                    let skip = (*remaining).min((chunk.len() - pos) as u64);
                    *remaining -= skip;
                    pos += skip as usize;
                    if *remaining == 0 {
                        self.state = EMPTY;
                        header_at = pos;
                    }
                }
                State::Header { buf, len } => {
                    let need = if *len < 2 { 2 } else { header_len(buf[1]) };
                    let take = (need - *len).min(chunk.len() - pos);
                    buf[*len..*len + take].copy_from_slice(&chunk[pos..pos + take]);
                    *len += take;
                    pos += take;
                    if *len < 2 || *len < header_len(buf[1]) {
                        continue;
                    }
                    let declared = payload_len(&buf[..*len]);
                    if declared > self.max {
                        return Err(Oversize {
                            at: header_at,
                            declared,
                        });
                    }
                    self.state = if declared == 0 {
                        header_at = pos;
                        EMPTY
                    } else {
                        State::Payload {
                            remaining: declared,
                        }
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for a payload of `len` bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(len as u64);
        f.extend(vec![b'x'; len]);
        f
    }

    #[test]
    fn frames_up_to_the_limit_pass_in_any_chunking() {
        let mut stream = Vec::new();
        for len in [0, 5, 125, 126, 1000, 65535, 65536] {
            stream.extend(frame(len));
        }
        for chunk in [1, 3, 7, 100, 4096, stream.len()] {
            let mut sizes = FrameSizes::new(65536);
            for part in stream.chunks(chunk) {
                assert_eq!(sizes.feed(part), Ok(()), "chunks of {chunk}");
            }
            assert!(matches!(sizes.state, State::Header { len: 0, .. }));
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload() {
        let mut sizes = FrameSizes::new(65536);
        let mut stream = frame(10);
        let at = stream.len();
        stream.extend(header(1 << 30));
        assert_eq!(
            sizes.feed(&stream),
            Err(Oversize {
                at,
                declared: 1 << 30
            })
        );
        // One byte over, the 16-bit length form.
        let mut sizes = FrameSizes::new(1000);
        assert_eq!(
            sizes.feed(&header(1001)),
            Err(Oversize {
                at: 0,
                declared: 1001
            })
        );
        // A header split over chunks is refused once complete.
        let mut sizes = FrameSizes::new(1000);
        let h = header(5000);
        assert_eq!(sizes.feed(&h[..3]), Ok(()));
        assert_eq!(
            sizes.feed(&h[3..]),
            Err(Oversize {
                at: 0,
                declared: 5000
            })
        );
    }
}
