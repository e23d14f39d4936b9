//! What travels over QUIC between participants and nodes.
//!
//! **Media datagrams**: a 16-byte header and an opaque payload. The node
//! reads the header to route and never looks at the payload, so end-to-end
//! encrypted media (S8) is forwarded byte for byte.
//!
//! ```text
//!  0        1        2        3        4               8              12             16
//!  +--------+--------+--------+--------+---------------+--------------+--------------+---------
//!  |ver|type| flags  |frag idx|frag cnt| track id (BE) | seq (BE)     | timestamp(BE)| payload…
//!  +--------+--------+--------+--------+---------------+--------------+--------------+---------
//! ```
//!
//! A frame larger than one datagram is split by the sender into `frag cnt`
//! datagrams with the same timestamp.
//!
//! **Control messages**: one bidirectional stream per participant carrying
//! `ClientMessage`/`ServerMessage` protobufs, each prefixed by its length as a
//! big-endian u32, at most [`MAX_CONTROL_LEN`] bytes.

use bytes::{BufMut, BytesMut};

pub const HEADER_LEN: usize = 16;
/// Protocol version, in the high nibble of the first byte.
pub const VERSION: u8 = 1;
/// Packet type, low nibble: media.
pub const TYPE_MEDIA: u8 = 0;
/// Largest control message accepted.
pub const MAX_CONTROL_LEN: usize = 64 * 1024;

pub mod flags {
    /// The datagram belongs to a frame that decodes on its own.
    pub const KEYFRAME: u8 = 0b0000_0001;
    /// Simulcast/SVC layer in bits 1–2.
    pub const LAYER_MASK: u8 = 0b0000_0110;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaHeader {
    pub flags: u8,
    pub frag_index: u8,
    pub frag_count: u8,
    pub track: u32,
    pub seq: u32,
    pub timestamp: u32,
}

/// Why a datagram was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than the header")]
    Truncated,
    #[error("unknown version or packet type")]
    UnknownType,
    #[error("fragment index beyond fragment count")]
    BadFragment,
}

impl MediaHeader {
    pub fn is_keyframe(&self) -> bool {
        self.flags & flags::KEYFRAME != 0
    }

    pub fn write(&self, out: &mut BytesMut) {
        out.put_u8(VERSION << 4 | TYPE_MEDIA);
        out.put_u8(self.flags);
        out.put_u8(self.frag_index);
        out.put_u8(self.frag_count);
        out.put_u32(self.track);
        out.put_u32(self.seq);
        out.put_u32(self.timestamp);
    }

    /// Parses and checks the header; the payload is whatever follows.
    pub fn parse(d: &[u8]) -> Result<MediaHeader, WireError> {
        let Some(h) = d.get(..HEADER_LEN) else {
            return Err(WireError::Truncated);
        };
        if h[0] != (VERSION << 4 | TYPE_MEDIA) {
            return Err(WireError::UnknownType);
        }
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let header = MediaHeader {
            flags: h[1],
            frag_index: h[2],
            frag_count: h[3],
            track: u32_at(4),
            seq: u32_at(8),
            timestamp: u32_at(12),
        };
        if header.frag_count == 0 || header.frag_index >= header.frag_count {
            return Err(WireError::BadFragment);
        }
        Ok(header)
    }
}

/// Errors reading a control stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("control message of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("control message does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Length-prefixes an encoded message.
pub fn frame(msg: &impl prost::Message) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("Vec grows as needed");
    out
}

/// Reads one length-prefixed frame's bytes. `Ok(None)` at a clean end.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trips() {
        let h = MediaHeader {
            flags: flags::KEYFRAME,
            frag_index: 2,
            frag_count: 5,
            track: 0xdead_beef,
            seq: 7,
            timestamp: 90_000,
        };
        let mut b = BytesMut::new();
        h.write(&mut b);
        b.extend_from_slice(b"payload");
        assert_eq!(MediaHeader::parse(&b), Ok(h));
        assert_eq!(MediaHeader::parse(&b[..15]), Err(WireError::Truncated));
        let mut bad = b.clone();
        bad[0] = 0x20;
        assert_eq!(MediaHeader::parse(&bad), Err(WireError::UnknownType));
        let mut bad = b.clone();
        bad[2] = 5;
        assert_eq!(MediaHeader::parse(&bad), Err(WireError::BadFragment));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MediaHeader::parse(&d);
        }
    }
}
