//! Packet framing: a 3-byte length, a sequence id, and 16 MiB continuation packets; under the
//! compressed protocol (CLIENT_COMPRESS, after the connection phase) the packets travel inside
//! zlib frames of their own (a 7-byte header: compressed length, frame sequence id, length
//! before compression, 0 when the frame is stored as is).
//!
//! [`PacketStream`] reassembles logical packets, enforces `max_allowed_packet` on the reassembled
//! size and keeps the sequence id. Replies are encoded straight into its write buffer
//! ([`PacketStream::begin`] / [`PacketStream::finish`]) so a row is copied once, and go out on
//! [`PacketStream::flush`].

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::constants::MAX_PAYLOAD;

/// Flush the write buffer once it holds this much, so big results stream.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Frames shorter than this go out stored, not compressed (what the servers do).
const MIN_COMPRESS: usize = 50;

#[derive(Debug, Error)]
pub enum PacketError {
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet of {size} bytes exceeds max_allowed_packet ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("packets out of order: expected sequence {expected}, got {got}")]
    OutOfOrder { expected: u8, got: u8 },
    #[error("bad compressed frame: {0}")]
    BadCompression(&'static str),
}

/// The compressed protocol's layer: frames read ahead, the frame sequence id, a buffer for the
/// frames written, and the zlib states (kept: a deflate state is some 256 KiB to set up).
struct Compression {
    raw: BytesMut,
    seq: u8,
    out: Vec<u8>,
    deflate: flate2::Compress,
    inflate: flate2::Decompress,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            raw: BytesMut::new(),
            seq: 0,
            out: Vec::new(),
            deflate: flate2::Compress::new(flate2::Compression::fast(), true),
            inflate: flate2::Decompress::new(true),
        }
    }
}

impl Compression {
    /// Moves the first whole frame of `raw` into `into` (inflated); false when none is whole yet.
    fn take_frame(&mut self, into: &mut BytesMut) -> Result<bool, PacketError> {
        if self.raw.len() < 7 {
            return Ok(false);
        }
        let clen = u24(&self.raw[0..3]);
        let ulen = u24(&self.raw[4..7]);
        if self.raw.len() < 7 + clen {
            self.raw.reserve(7 + clen - self.raw.len());
            return Ok(false);
        }
        self.seq = self.raw[3].wrapping_add(1);
        self.raw.advance(7);
        let payload = self.raw.split_to(clen);
        if ulen == 0 {
            into.extend_from_slice(&payload);
            return Ok(true);
        }
        // At most `ulen` (< 16 MiB) bytes come out, whatever the frame holds.
        let start = into.len();
        into.resize(start + ulen, 0);
        self.inflate.reset(true);
        let done = self
            .inflate
            .decompress(
                &payload,
                &mut into[start..],
                flate2::FlushDecompress::Finish,
            )
            .map_err(|_| PacketError::BadCompression("not a zlib stream"))?;
        if done != flate2::Status::StreamEnd || self.inflate.total_out() != ulen as u64 {
            into.truncate(start);
            return Err(PacketError::BadCompression(
                "length differs from its header",
            ));
        }
        Ok(true)
    }

    /// `bytes` as frames, into `self.out`.
    fn frame(&mut self, bytes: &[u8]) {
        self.out.clear();
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            let at = self.out.len();
            self.out.extend_from_slice(&[0; 7]);
            let mut ulen = 0;
            if chunk.len() >= MIN_COMPRESS {
                self.deflate.reset();
                self.out.reserve(chunk.len() + 64);
                let ok = self
                    .deflate
                    .compress_vec(chunk, &mut self.out, flate2::FlushCompress::Finish)
                    .is_ok_and(|s| s == flate2::Status::StreamEnd);
                if ok && self.out.len() - at - 7 < chunk.len() {
                    ulen = chunk.len();
                } else {
                    self.out.truncate(at + 7);
                }
            }
            if ulen == 0 {
                self.out.extend_from_slice(chunk);
            }
            let clen = (self.out.len() - at - 7) as u32;
            let c = clen.to_le_bytes();
            let u = (ulen as u32).to_le_bytes();
            self.out[at..at + 7].copy_from_slice(&[c[0], c[1], c[2], self.seq, u[0], u[1], u[2]]);
            self.seq = self.seq.wrapping_add(1);
        }
    }
}

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
}

/// A framed MySQL connection over any byte stream.
pub struct PacketStream<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    seq: u8,
    max_packet: usize,
    packets_out: u64,
    /// Bytes queued (headers included) since the stream was made.
    bytes_out: u64,
    /// Times queued bytes were handed to the transport (a reply queued since a [`ReplyMark`]
    /// can be taken back only while this has not moved).
    sends: u64,
    compression: Option<Box<Compression>>,
}

/// Where a reply starts in a stream's output, to take back what of it is still queued
/// ([`PacketStream::rewind`]).
#[derive(Debug, Clone, Copy)]
pub struct ReplyMark {
    queued: usize,
    seq: u8,
    packets_out: u64,
    bytes_out: u64,
    sends: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    pub fn new(io: S, max_packet: usize) -> Self {
        Self {
            io,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            seq: 0,
            max_packet,
            packets_out: 0,
            bytes_out: 0,
            sends: 0,
            compression: None,
        }
    }

    /// Gives the stream back (for a TLS upgrade). Bytes already read ahead are returned too.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.rbuf)
    }

    pub fn from_parts(io: S, rbuf: BytesMut, seq: u8, max_packet: usize) -> Self {
        Self {
            io,
            rbuf,
            wbuf: Vec::with_capacity(4096),
            seq,
            max_packet,
            packets_out: 0,
            bytes_out: 0,
            sends: 0,
            compression: None,
        }
    }

    /// From now on packets travel in compressed frames (the client asked for CLIENT_COMPRESS;
    /// call after the connection phase's final OK went out).
    pub fn enable_compression(&mut self) {
        let mut c = Box::<Compression>::default();
        // Bytes already read ahead are the client's first frames.
        c.raw = std::mem::take(&mut self.rbuf);
        self.compression = Some(c);
    }

    pub fn is_compressed(&self) -> bool {
        self.compression.is_some()
    }

    pub fn io(&self) -> &S {
        &self.io
    }

    pub fn seq(&self) -> u8 {
        self.seq
    }

    /// A new command starts: sequence ids restart at 0.
    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }

    pub fn set_max_packet(&mut self, max: usize) {
        self.max_packet = max;
    }

    async fn fill(&mut self, n: usize) -> Result<(), PacketError> {
        while self.rbuf.len() < n {
            if let Some(c) = &mut self.compression {
                // A frame is taken only once it is whole: reading stays cancel-safe.
                if c.take_frame(&mut self.rbuf)? {
                    continue;
                }
                if self.io.read_buf(&mut c.raw).await? == 0 {
                    return Err(PacketError::Closed);
                }
                continue;
            }
            self.rbuf.reserve(n - self.rbuf.len());
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Err(PacketError::Closed);
            }
        }
        Ok(())
    }

    /// True when a whole or partial packet is already read ahead.
    pub fn has_buffered(&self) -> bool {
        !self.rbuf.is_empty() || self.compression.as_ref().is_some_and(|c| !c.raw.is_empty())
    }

    /// Writes what is queued (framed, under compression).
    async fn send_queued(&mut self) -> Result<(), PacketError> {
        match &mut self.compression {
            None => self.io.write_all(&self.wbuf).await?,
            Some(c) => {
                c.frame(&self.wbuf);
                self.io.write_all(&c.out).await?;
                if c.out.capacity() > 4 * FLUSH_THRESHOLD {
                    c.out = Vec::new();
                }
            }
        }
        self.wbuf.clear();
        self.sends += 1;
        Ok(())
    }

    /// Waits until the peer has sent something (cancel-safe: nothing is consumed).
    pub async fn wait_for_data(&mut self) -> Result<(), PacketError> {
        self.fill(1).await
    }

    /// Reads one logical packet (continuations joined). `Closed` when the peer hung up cleanly
    /// between packets.
    pub async fn read_packet(&mut self) -> Result<Bytes, PacketError> {
        let mut joined: Option<BytesMut> = None;
        loop {
            self.fill(4).await?;
            let len = usize::from(self.rbuf[0])
                | usize::from(self.rbuf[1]) << 8
                | usize::from(self.rbuf[2]) << 16;
            let seq = self.rbuf[3];
            // Under compression the frames carry the order; clients number the packets inside
            // them in their own ways (libmariadb's continuations), which servers accept.
            if seq != self.seq && self.compression.is_none() {
                return Err(PacketError::OutOfOrder {
                    expected: self.seq,
                    got: seq,
                });
            }
            let so_far = joined.as_ref().map_or(0, BytesMut::len);
            if so_far + len > self.max_packet {
                return Err(PacketError::TooLarge {
                    size: so_far + len,
                    max: self.max_packet,
                });
            }
            self.fill(4 + len).await?;
            self.seq = seq.wrapping_add(1);
            self.rbuf.advance(4);
            let part = self.rbuf.split_to(len);
            if len < MAX_PAYLOAD && joined.is_none() {
                return Ok(part.freeze());
            }
            let acc = joined.get_or_insert_with(BytesMut::new);
            acc.extend_from_slice(&part);
            if len < MAX_PAYLOAD {
                return Ok(joined.take().unwrap_or_default().freeze());
            }
        }
    }

    /// Starts a packet in the write buffer; append its payload to the returned buffer, then call
    /// [`PacketStream::finish`] with the returned mark.
    pub fn begin(&mut self) -> (usize, &mut Vec<u8>) {
        let mark = self.wbuf.len();
        self.wbuf.extend_from_slice(&[0, 0, 0, 0]);
        (mark, &mut self.wbuf)
    }

    /// Completes the packet started at `mark`: writes its header, splitting it when it is over
    /// 16 MiB.
    pub fn finish(&mut self, mark: usize) {
        let len = self.wbuf.len() - mark - 4;
        if len < MAX_PAYLOAD {
            self.put_header(mark, len);
            return;
        }
        let payload = self.wbuf.split_off(mark + 4);
        self.wbuf.truncate(mark);
        let mut chunks = payload.chunks(MAX_PAYLOAD);
        let mut last_len = 0;
        for chunk in chunks.by_ref() {
            let at = self.wbuf.len();
            self.wbuf.extend_from_slice(&[0, 0, 0, 0]);
            self.put_header(at, chunk.len());
            self.wbuf.extend_from_slice(chunk);
            last_len = chunk.len();
        }
        if last_len == MAX_PAYLOAD {
            let at = self.wbuf.len();
            self.wbuf.extend_from_slice(&[0, 0, 0, 0]);
            self.put_header(at, 0);
        }
    }

    fn put_header(&mut self, at: usize, len: usize) {
        let l = (len as u32).to_le_bytes();
        self.wbuf[at..at + 4].copy_from_slice(&[l[0], l[1], l[2], self.seq]);
        self.seq = self.seq.wrapping_add(1);
        self.packets_out += 1;
        self.bytes_out += len as u64 + 4;
    }

    /// Bytes queued or sent since the stream was made, headers included (before compression).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Packets queued or sent since the stream was made (to tell whether a reply has started).
    pub fn packets_out(&self) -> u64 {
        self.packets_out
    }

    /// Marks where the next reply starts.
    pub fn mark(&self) -> ReplyMark {
        ReplyMark {
            queued: self.wbuf.len(),
            seq: self.seq,
            packets_out: self.packets_out,
            bytes_out: self.bytes_out,
            sends: self.sends,
        }
    }

    /// Takes back every packet queued since `mark`, if none of it has left: the reply starts
    /// over (a read retried on another backend after its first one was lost mid-result).
    /// `false` when part of it was already sent.
    pub fn rewind(&mut self, mark: ReplyMark) -> bool {
        if self.sends != mark.sends || self.wbuf.len() < mark.queued {
            return false;
        }
        self.wbuf.truncate(mark.queued);
        self.seq = mark.seq;
        self.packets_out = mark.packets_out;
        self.bytes_out = mark.bytes_out;
        true
    }

    /// Queues a whole packet.
    pub fn write_packet(&mut self, payload: &[u8]) {
        let (mark, buf) = self.begin();
        buf.extend_from_slice(payload);
        self.finish(mark);
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), PacketError> {
        if !self.wbuf.is_empty() {
            self.send_queued().await?;
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Sends what is queued once it is large enough: keeps memory bounded while streaming.
    pub async fn flush_if_full(&mut self) -> Result<(), PacketError> {
        if self.wbuf.len() >= FLUSH_THRESHOLD {
            self.send_queued().await?;
            if self.wbuf.capacity() > 4 * FLUSH_THRESHOLD {
                self.wbuf.shrink_to(FLUSH_THRESHOLD);
            }
        }
        Ok(())
    }

    /// Drops what is queued but not sent (after an error mid-result, before an ERR packet).
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Sends FIN, then reads and discards what the peer still sends, up to `limit` bytes or a
    /// second, so a close after an error is not a reset that loses the error.
    pub async fn drain_after_close(&mut self, limit: usize) {
        let _ = self.io.shutdown().await;
        let mut seen = 0;
        let mut buf = vec![0u8; 16 * 1024];
        let drain = async {
            while seen < limit {
                match self.io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    }

    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(payload: Vec<u8>) -> Bytes {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a, 64 << 20);
        let mut r = PacketStream::new(b, 64 << 20);
        let writer = tokio::spawn(async move {
            w.write_packet(&payload);
            w.flush().await.expect("flush");
            w
        });
        let got = r.read_packet().await.expect("read");
        writer.await.expect("join");
        got
    }

    #[tokio::test]
    async fn small_and_continued_packets_roundtrip() {
        for size in [
            0,
            1,
            1000,
            MAX_PAYLOAD - 1,
            MAX_PAYLOAD,
            MAX_PAYLOAD + 5,
            2 * MAX_PAYLOAD,
        ] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            assert_eq!(
                roundtrip(payload.clone()).await.as_ref(),
                payload.as_slice(),
                "size {size}"
            );
        }
    }

    #[tokio::test]
    async fn a_reply_still_queued_can_be_taken_back_and_one_partly_sent_cannot() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut server = PacketStream::new(a, 1 << 20);
        let mut client = PacketStream::new(b, 1 << 20);
        let mark = server.mark();
        server.write_packet(b"column");
        server.write_packet(b"row");
        assert!(server.rewind(mark), "nothing left yet");
        assert_eq!(server.packets_out(), 0);
        // The reply starts over with the first sequence number.
        server.write_packet(b"retried");
        server.flush().await.expect("flush");
        assert_eq!(
            client.read_packet().await.expect("read").as_ref(),
            b"retried"
        );
        let mark = server.mark();
        server.write_packet(b"sent");
        server.flush().await.expect("flush");
        server.write_packet(b"queued");
        assert!(!server.rewind(mark), "part of the reply left");
    }

    #[tokio::test]
    async fn oversized_and_out_of_order_are_errors() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = PacketStream::new(a, 1 << 20);
        let mut r = PacketStream::new(b, 100);
        w.write_packet(&[7u8; 101]);
        w.flush().await.expect("flush");
        assert!(matches!(
            r.read_packet().await,
            Err(PacketError::TooLarge { size: 101, .. })
        ));

        let (a, b) = tokio::io::duplex(1 << 16);
        let mut raw = a;
        raw.write_all(&[1, 0, 0, 5, 0]).await.expect("write");
        let mut r = PacketStream::new(b, 100);
        assert!(matches!(
            r.read_packet().await,
            Err(PacketError::OutOfOrder {
                expected: 0,
                got: 5
            })
        ));
        drop(raw);
    }

    /// A pair of streams with the compressed protocol on.
    fn compressed_pair() -> (
        PacketStream<tokio::io::DuplexStream>,
        PacketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a, 64 << 20);
        let mut r = PacketStream::new(b, 64 << 20);
        w.enable_compression();
        r.enable_compression();
        (w, r)
    }

    #[tokio::test]
    async fn compressed_frames_round_trip_at_every_boundary() {
        for size in [
            0,
            MIN_COMPRESS - 1,
            MIN_COMPRESS,
            MAX_PAYLOAD - 5,
            MAX_PAYLOAD - 4,
            MAX_PAYLOAD,
            MAX_PAYLOAD + 1,
            2 * MAX_PAYLOAD + 7,
        ] {
            let (mut w, mut r) = compressed_pair();
            // Half compressible, half not: both kinds of frame.
            let payload: Vec<u8> = (0..size)
                .map(|i| {
                    if i < size / 2 {
                        b'a'
                    } else {
                        (i * 7919 % 251) as u8
                    }
                })
                .collect();
            let expected = payload.clone();
            let writer = tokio::spawn(async move {
                w.write_packet(&payload);
                w.write_packet(b"next");
                w.flush().await.expect("flush");
                w
            });
            let got = r.read_packet().await.expect("read");
            assert_eq!(got.len(), expected.len(), "size {size}");
            assert!(got[..] == expected[..], "size {size}");
            assert_eq!(&r.read_packet().await.expect("second")[..], b"next");
            writer.await.expect("join");
        }
    }

    #[tokio::test]
    async fn a_broken_compressed_frame_is_an_error_not_a_panic() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut r = PacketStream::new(a, 64 << 20);
        r.enable_compression();
        // Says 100 bytes inflate to 1,000: they are not zlib at all.
        let mut frame = vec![100, 0, 0, 0, 0xe8, 0x03, 0];
        frame.extend(std::iter::repeat_n(0x55, 100));
        b.write_all(&frame).await.expect("write");
        assert!(matches!(
            r.read_packet().await,
            Err(PacketError::BadCompression(_))
        ));
        // A real zlib stream whose length differs from the header's.
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut r = PacketStream::new(a, 64 << 20);
        r.enable_compression();
        let mut c = Compression::default();
        c.frame(&[b'z'; 200]);
        let mut lying = c.out.clone();
        lying[4] = 100; // claims 100 bytes before compression, inflates to 200
        b.write_all(&lying).await.expect("write");
        assert!(matches!(
            r.read_packet().await,
            Err(PacketError::BadCompression(_))
        ));
    }
}
