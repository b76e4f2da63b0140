//! Frames over an async byte stream: the one reader and the one writer of
//! every control stream (edge sessions, relay links, the SDK).
//!
//! Generic over tokio's [`AsyncRead`] / [`AsyncWrite`] traits, so this crate
//! stays free of I/O: quinn's `RecvStream` / `SendStream` implement them, and
//! so does an in-memory pipe in tests. The codec itself is
//! [`FrameBuffer`] / [`encode`](super::encode); this only moves bytes.

use std::io;

use bytes::BytesMut;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{FrameBuffer, FrameError};

/// The first read offers this much room; a read that fills all the room
/// offered doubles it, up to [`MAX_READ`]. An idle session holds a small
/// buffer, a busy relay link reads in large chunks.
const MIN_READ: usize = 1024;
const MAX_READ: usize = 64 * 1024;

/// A writer sends its batch once it holds more than this: frames ready at
/// the same time go out in one write, and a long queue is not copied whole
/// into one buffer.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Why a framed stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The transport failed (for QUIC: the stream was reset or stopped, the
    /// connection was lost). The error wraps the transport's own.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer broke the framing rules (including a stream that ended in the
    /// middle of a frame): the stream is unusable, close the connection.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    frames: FrameBuffer,
    read_size: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            frames: FrameBuffer::new(),
            read_size: MIN_READ,
        }
    }

    /// The next frame; `Ok(None)` when the stream ended between two frames.
    ///
    /// Cancel-safe: bytes read before the future is dropped stay buffered for
    /// the next call, so it can be one branch of a `tokio::select!`.
    pub async fn next_frame<M: Message + Default>(&mut self) -> Result<Option<M>, StreamError> {
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(Some(frame));
            }
            // Room for the rest of a frame whose length is known, at least
            // `read_size`: the body is never read in pieces smaller than what
            // is missing of it.
            let offered = self.frames.missing().max(self.read_size);
            self.frames.buf.reserve(offered);
            let spare = self.frames.buf.capacity() - self.frames.buf.len();
            let n = self.inner.read_buf(&mut self.frames.buf).await?;
            if n == 0 {
                self.frames.finish()?;
                return Ok(None);
            }
            if n == spare {
                self.read_size = (self.read_size * 2).min(MAX_READ);
            }
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes frames to a byte stream, in batches: queue whatever is ready, then
/// [`flush`](Self::flush) once.
pub struct FrameWriter<W> {
    inner: W,
    batch: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            batch: BytesMut::new(),
        }
    }

    /// Add one frame holding `msg` to the batch; its size on the wire. An
    /// empty or oversized message is refused and leaves the batch as it was.
    pub fn queue<M: Message>(&mut self, msg: &M) -> Result<usize, FrameError> {
        let before = self.batch.len();
        super::encode(msg, &mut self.batch)?;
        Ok(self.batch.len() - before)
    }

    /// Add bytes that already hold whole frames (made by
    /// [`encode`](super::encode)).
    pub fn queue_encoded(&mut self, frames: &[u8]) {
        self.batch.extend_from_slice(frames);
    }

    /// Whether the batch should be written before more is queued (it holds
    /// more than [`BATCH_BYTES`]).
    pub fn batch_full(&self) -> bool {
        self.batch.len() > BATCH_BYTES
    }

    /// Write the batch (nothing when it is empty).
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.batch.is_empty() {
            self.inner.write_all(&self.batch).await?;
            self.batch.clear();
        }
        Ok(())
    }

    /// Queue one frame and write the batch.
    pub async fn send<M: Message>(&mut self, msg: &M) -> Result<(), StreamError> {
        self.queue(msg)?;
        Ok(self.flush().await?)
    }

    /// Write the batch and end the stream (for QUIC: FIN).
    pub async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.inner.shutdown().await
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::framing::encode_to_bytes;
    use crate::limits::MAX_FRAME_LEN;
    use crate::pb::{client_frame, ClientFrame, Keepalive};

    fn keepalive(nonce: u64) -> ClientFrame {
        ClientFrame {
            kind: Some(client_frame::Kind::Keepalive(Keepalive { nonce })),
        }
    }

    /// A frame of about `len` bytes (a message with a payload of that size).
    fn big(len: usize) -> ClientFrame {
        ClientFrame {
            kind: Some(client_frame::Kind::Message(crate::pb::ChatMessage {
                payload: vec![7; len],
                ..Default::default()
            })),
        }
    }

    /// Whether `next_frame` is still waiting after a moment (the future is
    /// dropped then: the reader must lose nothing).
    async fn waits(reader: &mut FrameReader<DuplexStream>) -> bool {
        tokio::time::timeout(
            Duration::from_millis(20),
            reader.next_frame::<ClientFrame>(),
        )
        .await
        .is_err()
    }

    #[tokio::test]
    async fn frames_split_across_reads_and_cancelled_reads_lose_nothing() {
        let (mut tx, rx) = duplex(1 << 16);
        let mut reader = FrameReader::new(rx);
        let wire = encode_to_bytes(&keepalive(300)).unwrap();
        // The length prefix alone, then half the body: nothing yet.
        tx.write_all(&wire[..1]).await.unwrap();
        assert!(waits(&mut reader).await);
        tx.write_all(&wire[1..3]).await.unwrap();
        assert!(waits(&mut reader).await);
        // The rest, and the start of the next frame in the same write.
        let next = encode_to_bytes(&keepalive(301)).unwrap();
        let mut rest = wire[3..].to_vec();
        rest.extend_from_slice(&next[..2]);
        tx.write_all(&rest).await.unwrap();
        assert_eq!(reader.next_frame().await.unwrap(), Some(keepalive(300)));
        assert!(waits(&mut reader).await);
        tx.write_all(&next[2..]).await.unwrap();
        drop(tx);
        assert_eq!(reader.next_frame().await.unwrap(), Some(keepalive(301)));
        assert_eq!(reader.next_frame::<ClientFrame>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn byte_at_a_time_reads_reassemble_every_frame() {
        // A pipe of one byte: every read returns a single byte.
        let (tx, rx) = duplex(1);
        let sizes = [0, 10, 1_000, 20_000, 3];
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(tx);
            for (n, len) in sizes.iter().enumerate() {
                let f = if *len == 0 {
                    keepalive(n as u64)
                } else {
                    big(*len)
                };
                w.queue(&f).unwrap();
            }
            w.finish().await.unwrap();
        });
        let mut reader = FrameReader::new(rx);
        for (n, len) in sizes.iter().enumerate() {
            let want = if *len == 0 {
                keepalive(n as u64)
            } else {
                big(*len)
            };
            assert_eq!(reader.next_frame().await.unwrap(), Some(want));
        }
        assert_eq!(reader.next_frame::<ClientFrame>().await.unwrap(), None);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn frames_up_to_the_limit_pass_through_a_small_pipe() {
        let (tx, rx) = duplex(4096);
        let largest = big(MAX_FRAME_LEN - 16);
        let len = largest.encoded_len();
        assert!(len <= MAX_FRAME_LEN && len > MAX_FRAME_LEN - 32, "{len}");
        let sent = largest.clone();
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(tx);
            w.send(&sent).await.unwrap();
            w.send(&keepalive(1)).await.unwrap();
        });
        let mut reader = FrameReader::new(rx);
        assert_eq!(reader.next_frame().await.unwrap(), Some(largest));
        assert_eq!(reader.next_frame().await.unwrap(), Some(keepalive(1)));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_their_body() {
        let (mut tx, rx) = duplex(64);
        let mut reader = FrameReader::new(rx);
        let mut prefix = BytesMut::new();
        prost::encoding::encode_varint((MAX_FRAME_LEN + 1) as u64, &mut prefix);
        // Only the prefix is sent: the reader must not wait for the body.
        tx.write_all(&prefix).await.unwrap();
        let err = reader.next_frame::<ClientFrame>().await.unwrap_err();
        assert!(
            matches!(err, StreamError::Frame(FrameError::TooLarge(n)) if n == MAX_FRAME_LEN as u64 + 1),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "frame length {} exceeds the limit of {MAX_FRAME_LEN} bytes",
                MAX_FRAME_LEN + 1
            )
        );
    }

    #[tokio::test]
    async fn a_stream_ending_mid_frame_is_truncated_not_a_clean_end() {
        let (mut tx, rx) = duplex(64);
        let mut reader = FrameReader::new(rx);
        let wire = encode_to_bytes(&keepalive(9)).unwrap();
        tx.write_all(&wire).await.unwrap();
        tx.write_all(&wire[..wire.len() - 1]).await.unwrap();
        drop(tx);
        assert_eq!(reader.next_frame().await.unwrap(), Some(keepalive(9)));
        let err = reader.next_frame::<ClientFrame>().await.unwrap_err();
        assert!(
            matches!(err, StreamError::Frame(FrameError::Truncated)),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "stream ended in the middle of a frame");
    }

    #[tokio::test]
    async fn garbage_is_a_frame_error() {
        let (mut tx, rx) = duplex(64);
        let mut reader = FrameReader::new(rx);
        tx.write_all(&[3, 0xff, 0xff, 0xff]).await.unwrap();
        let err = reader.next_frame::<ClientFrame>().await.unwrap_err();
        assert!(
            matches!(err, StreamError::Frame(FrameError::Malformed(_))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_writer_refuses_bad_frames_and_keeps_the_batch() {
        let (tx, rx) = duplex(1 << 20);
        let mut w = FrameWriter::new(tx);
        let first = w.queue(&keepalive(1)).unwrap();
        assert_eq!(first, encode_to_bytes(&keepalive(1)).unwrap().len());
        assert_eq!(w.queue(&ClientFrame::default()), Err(FrameError::Empty));
        assert!(matches!(
            w.queue(&big(MAX_FRAME_LEN)),
            Err(FrameError::TooLarge(_))
        ));
        w.queue_encoded(&encode_to_bytes(&keepalive(2)).unwrap());
        assert!(!w.batch_full());
        w.finish().await.unwrap();
        let mut reader = FrameReader::new(rx);
        assert_eq!(reader.next_frame().await.unwrap(), Some(keepalive(1)));
        assert_eq!(reader.next_frame().await.unwrap(), Some(keepalive(2)));
        assert_eq!(reader.next_frame::<ClientFrame>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_batch_is_full_past_batch_bytes() {
        let (tx, _rx) = duplex(64);
        let mut w = FrameWriter::new(tx);
        while !w.batch_full() {
            w.queue(&big(1_000)).unwrap();
        }
        assert!(w.batch.len() > BATCH_BYTES && w.batch.len() < BATCH_BYTES + 1_100);
    }

    #[tokio::test]
    async fn writing_to_a_closed_stream_is_an_io_error() {
        let (tx, rx) = duplex(64);
        drop(rx);
        let mut w = FrameWriter::new(tx);
        let err = w.send(&keepalive(1)).await.unwrap_err();
        assert!(matches!(err, StreamError::Io(_)), "{err:?}");
    }
}
