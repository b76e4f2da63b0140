//! Frames on reliable QUIC streams (client control stream, relay control
//! stream).
//!
//! ```text
//! frame := length  message
//! length   protobuf base-128 varint, 1..=3 bytes, value 1..=MAX_FRAME_LEN
//! message  `length` bytes: one protobuf message (ClientFrame, ServerFrame or
//!          RelayFrame, by stream)
//! ```
//!
//! This is protobuf's "delimited" format (`writeDelimitedTo` in Java,
//! `encode_length_delimited` in prost), so most protobuf libraries read it
//! natively. A zero length is invalid (every frame has a `kind`). The
//! [`FrameBuffer`] checks the length before it waits for, or allocates, the
//! body: a peer announcing a 4 GiB frame is refused after three bytes.
//!
//! [`FrameBuffer`] and [`encode`] are the codec, free of I/O (the fuzz
//! targets feed them directly); [`FrameReader`] and [`FrameWriter`] run it
//! over any async byte stream, and every control stream uses them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::limits::MAX_FRAME_LEN;

mod stream;

pub use stream::{FrameReader, FrameWriter, StreamError, BATCH_BYTES};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} exceeds the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge(u64),
    #[error("frame length prefix is not a valid varint")]
    BadLength,
    #[error("empty frame")]
    Empty,
    #[error("frame body is not a valid protobuf message: {0}")]
    Malformed(String),
    #[error("frame has no known kind (unknown message type)")]
    UnknownKind,
    #[error("stream ended in the middle of a frame")]
    Truncated,
}

/// Append one frame holding `msg` to `out`.
pub fn encode<M: Message>(msg: &M, out: &mut BytesMut) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    // A message with no field set encodes to nothing, which the receiver
    // refuses (a frame always has a kind): fail here, at the sender.
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len as u64));
    }
    out.reserve(len + 3);
    prost::encoding::encode_varint(len as u64, out);
    msg.encode(out)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(())
}

/// Encode one frame into a fresh buffer.
pub fn encode_to_bytes<M: Message>(msg: &M) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    encode(msg, &mut out)?;
    Ok(out.freeze())
}

/// Reassembles frames from stream chunks. Feed it with [`FrameBuffer::extend`]
/// and take frames with [`FrameBuffer::next_frame`] until it returns `None`.
#[derive(Default)]
pub struct FrameBuffer {
    buf: BytesMut,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn extend(&mut self, chunk: &[u8]) {
        self.buf.put_slice(chunk);
    }

    /// Bytes held that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, decoded; `Ok(None)` when more bytes are needed.
    /// After an error the stream is unusable (framing is lost): close it.
    pub fn next_frame<M: Message + Default>(&mut self) -> Result<Option<M>, FrameError> {
        let Some((prefix, len)) = peek_length(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < prefix + len {
            return Ok(None);
        }
        self.buf.advance(prefix);
        let body = self.buf.split_to(len);
        M::decode(body.as_ref())
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }

    /// Bytes still missing from the frame being received: 0 when its length
    /// prefix is not complete yet (or not valid: `next_frame` says why).
    fn missing(&self) -> usize {
        match peek_length(&self.buf) {
            Ok(Some((prefix, len))) => (prefix + len).saturating_sub(self.buf.len()),
            _ => 0,
        }
    }

    /// Call when the stream has ended: leftover bytes mean a cut-off frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Read the varint length prefix without consuming it. `Ok(None)`: incomplete.
fn peek_length(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let mut value: u64 = 0;
    // MAX_FRAME_LEN < 2^21, so a valid prefix has at most 3 bytes; a longer
    // one is refused before its end arrives.
    for (i, &b) in buf.iter().enumerate().take(3) {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            let len = value as usize;
            if len == 0 {
                return Err(FrameError::Empty);
            }
            if len > MAX_FRAME_LEN {
                return Err(FrameError::TooLarge(value));
            }
            return Ok(Some((i + 1, len)));
        }
    }
    if buf.len() >= 3 {
        // Three continuation bytes: at least 2^21, over the limit.
        return Err(FrameError::TooLarge(value.max(1 << 21)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{client_frame, ClientFrame, Keepalive};
    use proptest::prelude::*;

    fn keepalive(nonce: u64) -> ClientFrame {
        ClientFrame {
            kind: Some(client_frame::Kind::Keepalive(Keepalive { nonce })),
        }
    }

    #[test]
    fn frames_split_across_chunks_reassemble() {
        let mut wire = BytesMut::new();
        for n in 0..5 {
            encode(&keepalive(n), &mut wire).unwrap();
        }
        let mut fb = FrameBuffer::new();
        let mut got = vec![];
        for b in wire.iter() {
            fb.extend(&[*b]);
            while let Some(f) = fb.next_frame::<ClientFrame>().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, (0..5).map(keepalive).collect::<Vec<_>>());
        fb.finish().unwrap();
    }

    #[test]
    fn oversized_length_is_refused_before_the_body() {
        let mut fb = FrameBuffer::new();
        let mut prefix = BytesMut::new();
        prost::encoding::encode_varint((MAX_FRAME_LEN + 1) as u64, &mut prefix);
        fb.extend(&prefix);
        assert!(matches!(
            fb.next_frame::<ClientFrame>(),
            Err(FrameError::TooLarge(_))
        ));
        let mut fb = FrameBuffer::new();
        fb.extend(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            fb.next_frame::<ClientFrame>(),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn empty_and_garbage_frames_are_errors() {
        let mut fb = FrameBuffer::new();
        fb.extend(&[0]);
        assert_eq!(fb.next_frame::<ClientFrame>(), Err(FrameError::Empty));
        let mut fb = FrameBuffer::new();
        fb.extend(&[3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            fb.next_frame::<ClientFrame>(),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn empty_messages_are_refused_at_the_sender() {
        assert_eq!(
            encode_to_bytes(&ClientFrame::default()),
            Err(FrameError::Empty)
        );
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut fb = FrameBuffer::new();
        let bytes = encode_to_bytes(&keepalive(1)).unwrap();
        fb.extend(&bytes[..bytes.len() - 1]);
        assert_eq!(fb.next_frame::<ClientFrame>(), Ok(None));
        assert_eq!(fb.finish(), Err(FrameError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(nonces in proptest::collection::vec(any::<u64>(), 1..20), split in 1usize..64) {
            let mut wire = BytesMut::new();
            for n in &nonces { encode(&keepalive(*n), &mut wire).unwrap(); }
            let mut fb = FrameBuffer::new();
            let mut got = vec![];
            for chunk in wire.chunks(split) {
                fb.extend(chunk);
                while let Some(f) = fb.next_frame::<ClientFrame>().unwrap() { got.push(f); }
            }
            prop_assert_eq!(got, nonces.iter().map(|n| keepalive(*n)).collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut fb = FrameBuffer::new();
            fb.extend(&data);
            for _ in 0..64 {
                match fb.next_frame::<ClientFrame>() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
