//! Accepting etcdctl 3.4's `:authority: http://host:port` on the client port.
//!
//! etcdctl 3.4 dials per-endpoint commands (`endpoint status`, `endpoint health`, ...)
//! with the gRPC target `passthrough:///http://127.0.0.1:2379`, so grpc-go sends the
//! whole URL as the HTTP/2 `:authority` pseudo-header. etcd's grpc-go server ignores
//! it; h2 (under hyper and tonic) rejects it as a malformed authority and resets the
//! stream (hyperium/h2#525). This module owns the byte-level shim that makes such
//! requests acceptable without forking h2: [`AuthorityFix`] wraps each accepted client
//! connection and, on the client-to-server direction only, rewrites an `:authority`
//! value that starts with `http://` or `https://` *in place and with the same length*,
//! turning `://` into `B--` (`http://127.0.0.1:2379` becomes `httpB--127.0.0.1:2379`,
//! a valid host:port; tonic routes by `:path` and never looks at the authority).
//!
//! Keeping the length identical means no frame length changes and the HPACK dynamic
//! table sizes on both sides stay equal; only the table *contents* on our side differ,
//! and later indexed references then resolve to the rewritten (acceptable) value.
//! Huffman-coded values are rewritten bit-wise: the HPACK code (RFC 7541 Appendix B)
//! is a prefix code, and the codes of `:` `/` `/` take 19 bits, exactly like those of
//! `B` `-` `-`.
//!
//! The shim parses only what it must: the connection preface, frame headers, and the
//! header block of HEADERS frames (held back until the whole frame has arrived).
//! Everything else streams through untouched, and anything unexpected (no preface,
//! a malformed block, an oversized frame) is passed through unchanged: the shim never
//! fails a connection itself. CONTINUATION frames are not inspected.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// The client connection preface every HTTP/2 connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// HEADERS frames larger than this are passed through without being inspected.
const MAX_HEADERS_PAYLOAD: usize = 1 << 20;
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// `:authority` as a Huffman-coded HPACK string (for literal header names).
const HUFFMAN_AUTHORITY: [u8; 8] = [0xb8, 0x3b, 0x53, 0x39, 0xec, 0x32, 0x7d, 0x7f];

/// HPACK Huffman codes (RFC 7541 Appendix B) as (bits, bit count).
/// `http` = h 100111, t 01001, t 01001, p 101011.
#[allow(clippy::unusual_byte_groupings)] // one digit group per character
const HUFF_HTTP: (u64, u32) = (0b100111_01001_01001_101011, 22);
/// `https` = `http` followed by s 01000.
const HUFF_HTTPS: (u64, u32) = (HUFF_HTTP.0 << 5 | 0b01000, 27);
/// `://` = `:` 1011100, `/` 011000, `/` 011000.
#[allow(clippy::unusual_byte_groupings)] // one digit group per character
const HUFF_SEPARATOR: u64 = 0b1011100_011000_011000;
/// `B--` = `B` 1011101, `-` 010110, `-` 010110: as long as `://`.
#[allow(clippy::unusual_byte_groupings)] // one digit group per character
const HUFF_REPLACEMENT: u64 = 0b1011101_010110_010110;
const HUFF_SEPARATOR_BITS: u32 = 19;

/// Accepts client connections, each wrapped in an [`AuthorityFix`] with `TCP_NODELAY` set.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<AuthorityFix<TcpStream>>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
            }
            AuthorityFix::new(stream)
        })
    })
}

/// Where the reader is in the client's byte stream.
enum State {
    /// Inside the connection preface, `matched` bytes of it seen so far.
    Preface { matched: usize },
    /// Collecting a 9-byte frame header.
    FrameHeader {
        head: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Streaming the payload of a frame that is not inspected.
    Payload { remaining: usize },
    /// Holding back a HEADERS frame until its whole payload has arrived.
    Headers {
        head: [u8; FRAME_HEADER_LEN],
        payload: Vec<u8>,
        want: usize,
    },
    /// Not HTTP/2 as expected (or after end of input): everything passes through.
    Raw,
}

impl State {
    fn frame_header() -> State {
        State::FrameHeader {
            head: [0; FRAME_HEADER_LEN],
            have: 0,
        }
    }
}

/// A connection whose incoming HTTP/2 `:authority` URLs are made acceptable to h2.
///
/// Reads are parsed and possibly rewritten (see the module documentation); writes pass
/// straight through to the wrapped stream.
pub struct AuthorityFix<T> {
    inner: T,
    state: State,
    /// Bytes read from `inner` and not yet processed: `raw[raw_pos..raw_len]`.
    raw: Box<[u8]>,
    raw_pos: usize,
    raw_len: usize,
    /// Processed bytes waiting to be handed to the reader: `emit[emit_pos..]`.
    emit: Vec<u8>,
    emit_pos: usize,
}

impl<T> AuthorityFix<T> {
    pub fn new(inner: T) -> Self {
        AuthorityFix {
            inner,
            state: State::Preface { matched: 0 },
            raw: vec![0; READ_CHUNK].into_boxed_slice(),
            raw_pos: 0,
            raw_len: 0,
            emit: Vec::new(),
            emit_pos: 0,
        }
    }

    /// Moves as many buffered bytes as possible through the parser into `buf`. Returns
    /// once `buf` is full or every buffered input byte has been consumed.
    fn process(&mut self, buf: &mut ReadBuf<'_>) {
        loop {
            if self.emit_pos < self.emit.len() {
                let n = buf.remaining().min(self.emit.len() - self.emit_pos);
                if n == 0 {
                    return;
                }
                buf.put_slice(&self.emit[self.emit_pos..self.emit_pos + n]);
                self.emit_pos += n;
                if self.emit_pos == self.emit.len() {
                    self.emit.clear();
                    self.emit_pos = 0;
                }
                continue;
            }
            let input = &self.raw[self.raw_pos..self.raw_len];
            if input.is_empty() {
                return;
            }
            match &mut self.state {
                State::Preface { matched } => {
                    let n = input
                        .len()
                        .min(PREFACE.len() - *matched)
                        .min(buf.remaining());
                    if n == 0 {
                        return;
                    }
                    let expected = input[..n] == PREFACE[*matched..*matched + n];
                    buf.put_slice(&input[..n]);
                    self.raw_pos += n;
                    *matched += n;
                    if !expected {
                        self.state = State::Raw;
                    } else if *matched == PREFACE.len() {
                        self.state = State::frame_header();
                    }
                }
                State::FrameHeader { head, have } => {
                    let n = input.len().min(FRAME_HEADER_LEN - *have);
                    head[*have..*have + n].copy_from_slice(&input[..n]);
                    self.raw_pos += n;
                    *have += n;
                    if *have == FRAME_HEADER_LEN {
                        let head = *head;
                        let len = usize::from(head[0]) << 16
                            | usize::from(head[1]) << 8
                            | usize::from(head[2]);
                        if head[3] == FRAME_HEADERS && len > 0 && len <= MAX_HEADERS_PAYLOAD {
                            self.state = State::Headers {
                                head,
                                payload: Vec::with_capacity(len),
                                want: len,
                            };
                        } else {
                            self.emit.extend_from_slice(&head);
                            self.state = if len == 0 {
                                State::frame_header()
                            } else {
                                State::Payload { remaining: len }
                            };
                        }
                    }
                }
                State::Payload { remaining } => {
                    let n = input.len().min(*remaining).min(buf.remaining());
                    if n == 0 {
                        return;
                    }
                    buf.put_slice(&input[..n]);
                    self.raw_pos += n;
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = State::frame_header();
                    }
                }
                State::Headers {
                    head,
                    payload,
                    want,
                } => {
                    let n = input.len().min(*want - payload.len());
                    payload.extend_from_slice(&input[..n]);
                    self.raw_pos += n;
                    if payload.len() == *want {
                        fix_headers_payload(head[4], payload);
                        self.emit.extend_from_slice(head);
                        self.emit.extend_from_slice(payload);
                        self.state = State::frame_header();
                    }
                }
                State::Raw => {
                    let n = input.len().min(buf.remaining());
                    if n == 0 {
                        return;
                    }
                    buf.put_slice(&input[..n]);
                    self.raw_pos += n;
                }
            }
        }
    }

    /// At end of input: queues the bytes of a half-received frame, unchanged.
    fn release_held(&mut self) -> bool {
        let held = match std::mem::replace(&mut self.state, State::Raw) {
            State::FrameHeader { head, have } => head[..have].to_vec(),
            State::Headers { head, payload, .. } => {
                let mut held = head.to_vec();
                held.extend_from_slice(&payload);
                held
            }
            _ => Vec::new(),
        };
        self.emit.extend_from_slice(&held);
        !held.is_empty()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let before = buf.filled().len();
            this.process(buf);
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // `process` stops with room left in `buf` only once all input is consumed.
            debug_assert_eq!(this.raw_pos, this.raw_len);
            let mut chunk = ReadBuf::new(&mut this.raw);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            let n = chunk.filled().len();
            this.raw_pos = 0;
            this.raw_len = n;
            if n == 0 && !this.release_held() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for AuthorityFix<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Rewrites the `:authority` URLs in the payload of a HEADERS frame with `flags`;
/// returns how many it rewrote. A payload it cannot make sense of is left unchanged.
fn fix_headers_payload(flags: u8, payload: &mut [u8]) -> usize {
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let Some(&pad) = payload.first() else {
            return 0;
        };
        start = 1;
        match end.checked_sub(usize::from(pad)) {
            Some(e) if e >= start => end = e,
            _ => return 0,
        }
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
        if start > end {
            return 0;
        }
    }
    fix_header_block(&mut payload[start..end], flags & FLAG_END_HEADERS != 0)
}

/// Rewrites the `:authority` URLs in an HPACK header block fragment. `complete` says
/// whether the fragment ends the block (a field cut off at its end is then an error).
fn fix_header_block(block: &mut [u8], complete: bool) -> usize {
    let mut values = Vec::new();
    match authority_values(block, &mut values) {
        Ok(()) => {}
        Err(Stop::Truncated) if !complete => {}
        Err(_) => return 0,
    }
    values
        .into_iter()
        .filter(|v| rewrite_value(&mut block[v.start..v.start + v.len], v.huffman))
        .count()
}

/// Why walking a header block stopped early.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The fragment ended inside a field.
    Truncated,
    /// Something HPACK does not allow.
    Malformed,
}

/// Where a string literal lies within a header block.
#[derive(Debug, PartialEq, Eq)]
struct StringAt {
    start: usize,
    len: usize,
    huffman: bool,
}

/// Decodes an HPACK integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1) at `*pos`.
fn read_int(block: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, Stop> {
    let first = *block.get(*pos).ok_or(Stop::Truncated)?;
    *pos += 1;
    let max = (1u64 << prefix_bits) - 1;
    let mut value = u64::from(first) & max;
    if value < max {
        return usize::try_from(value).map_err(|_| Stop::Malformed);
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(*pos).ok_or(Stop::Truncated)?;
        *pos += 1;
        if shift > 28 {
            return Err(Stop::Malformed);
        }
        value += u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| Stop::Malformed);
        }
    }
}

/// Skips an HPACK string literal (RFC 7541 §5.2) at `*pos`, returning where it lies.
fn read_string(block: &[u8], pos: &mut usize) -> Result<StringAt, Stop> {
    let huffman = block.get(*pos).ok_or(Stop::Truncated)? & 0x80 != 0;
    let len = read_int(block, pos, 7)?;
    let start = *pos;
    let end = start.checked_add(len).ok_or(Stop::Malformed)?;
    if end > block.len() {
        return Err(Stop::Truncated);
    }
    *pos = end;
    Ok(StringAt {
        start,
        len,
        huffman,
    })
}

/// Walks a header block fragment, collecting where the `:authority` values lie.
fn authority_values(block: &[u8], values: &mut Vec<StringAt>) -> Result<(), Stop> {
    let mut pos = 0;
    while pos < block.len() {
        let first = block[pos];
        if first & 0x80 != 0 {
            // Indexed header field.
            if read_int(block, &mut pos, 7)? == 0 {
                return Err(Stop::Malformed);
            }
            continue;
        }
        if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            read_int(block, &mut pos, 5)?;
            continue;
        }
        // Literal with incremental indexing (01), without indexing (0000) or never
        // indexed (0001).
        let prefix_bits = if first & 0x40 != 0 { 6 } else { 4 };
        let authority = match read_int(block, &mut pos, prefix_bits)? {
            0 => {
                let name = read_string(block, &mut pos)?;
                let name_bytes = &block[name.start..name.start + name.len];
                if name.huffman {
                    name_bytes == HUFFMAN_AUTHORITY
                } else {
                    name_bytes == b":authority"
                }
            }
            // Static table entry 1 is `:authority`.
            index => index == 1,
        };
        let value = read_string(block, &mut pos)?;
        if authority {
            values.push(value);
        }
    }
    Ok(())
}

/// Rewrites `scheme://` at the start of an `:authority` value to `schemeB--`, in place.
fn rewrite_value(value: &mut [u8], huffman: bool) -> bool {
    if !huffman {
        for scheme in [&b"http"[..], b"https"] {
            let end = scheme.len() + 3;
            if value.len() >= end
                && &value[..scheme.len()] == scheme
                && &value[scheme.len()..end] == b"://"
            {
                value[scheme.len()..end].copy_from_slice(b"B--");
                return true;
            }
        }
        return false;
    }
    for (bits, count) in [HUFF_HTTP, HUFF_HTTPS] {
        if read_bits(value, 0, count) == Some(bits)
            && read_bits(value, count, HUFF_SEPARATOR_BITS) == Some(HUFF_SEPARATOR)
        {
            write_bits(value, count, HUFF_SEPARATOR_BITS, HUFF_REPLACEMENT);
            return true;
        }
    }
    false
}

/// Reads `count` (at most 64) bits starting `offset` bits into `bytes`, most
/// significant bit first.
fn read_bits(bytes: &[u8], offset: u32, count: u32) -> Option<u64> {
    let end = usize::try_from(offset + count).ok()?;
    if end > bytes.len() * 8 {
        return None;
    }
    let mut value = 0;
    for i in offset..offset + count {
        let bit = (bytes[(i / 8) as usize] >> (7 - i % 8)) & 1;
        value = value << 1 | u64::from(bit);
    }
    Some(value)
}

/// Overwrites `count` bits starting `offset` bits into `bytes` with the low `count`
/// bits of `value`, most significant first. The range must lie within `bytes`.
fn write_bits(bytes: &mut [u8], offset: u32, count: u32, value: u64) {
    for i in 0..count {
        let bit = (value >> (count - 1 - i)) & 1;
        let at = offset + i;
        let mask = 1u8 << (7 - at % 8);
        let byte = &mut bytes[(at / 8) as usize];
        if bit == 1 {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Huffman encodings computed from the RFC 7541 Appendix B table (as shipped in h2).
    const H_HTTP_URL: &str = "9d29aee30c044eae05c0b86e09975f"; // http://127.0.0.1:2379
    const H_HTTP_FIXED: &str = "9d29aeeacb044eae05c0b86e09975f"; // httpB--127.0.0.1:2379
    const H_HTTPS_URL: &str = "9d29ad1718602275702e05c3704cbaff"; // https://127.0.0.1:2379
    const H_HTTPS_FIXED: &str = "9d29ad1756582275702e05c3704cbaff"; // httpsB--127.0.0.1:2379

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An HPACK string literal: 7-bit-prefix length (short strings only) and bytes.
    fn string(huffman: bool, bytes: &[u8]) -> Vec<u8> {
        assert!(bytes.len() < 127);
        let mut out = vec![bytes.len() as u8 | if huffman { 0x80 } else { 0 }];
        out.extend_from_slice(bytes);
        out
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A grpc-go-like request header block with `authority` (already HPACK-encoded
    /// as a string literal) as its fourth field, indexed by static name 1.
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.push(0x44); // :path, incremental indexing
        block.extend(string(false, b"/etcdserverpb.Maintenance/Status"));
        block.push(0x41); // :authority, incremental indexing
        block.extend_from_slice(authority);
        block.push(0x40); // literal name, incremental indexing
        block.extend(string(false, b"content-type"));
        block.extend(string(false, b"application/grpc"));
        block.push(0x00); // literal name, without indexing
        block.extend(string(false, b"te"));
        block.extend(string(false, b"trailers"));
        block
    }

    #[test]
    fn prefixed_integers() {
        // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with an 8-bit prefix.
        let mut pos = 0;
        assert_eq!(read_int(&[0xea], &mut pos, 5), Ok(10));
        assert_eq!(pos, 1);
        let mut pos = 0;
        assert_eq!(read_int(&[0xff, 0x9a, 0x0a, 0x99], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(read_int(&[0x2a], &mut pos, 8), Ok(42));
        // Exactly the prefix maximum needs a continuation byte of zero.
        let mut pos = 0;
        assert_eq!(read_int(&[0x7f, 0x00], &mut pos, 7), Ok(127));
        let mut pos = 0;
        assert_eq!(read_int(&[0x7f, 0x80], &mut pos, 7), Err(Stop::Truncated));
        let mut pos = 0;
        assert_eq!(read_int(&[], &mut pos, 4), Err(Stop::Truncated));
        let mut pos = 0;
        let huge = [0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_int(&huge, &mut pos, 4), Err(Stop::Malformed));
    }

    #[test]
    fn string_literals() {
        let mut block = string(true, &[1, 2, 3]);
        block.extend(string(false, b"abcd"));
        let mut pos = 0;
        let first = read_string(&block, &mut pos).unwrap();
        assert_eq!(
            first,
            StringAt {
                start: 1,
                len: 3,
                huffman: true
            }
        );
        let second = read_string(&block, &mut pos).unwrap();
        assert_eq!(
            second,
            StringAt {
                start: 5,
                len: 4,
                huffman: false
            }
        );
        assert_eq!(pos, block.len());
        let mut pos = 0;
        assert_eq!(read_string(&[0x05, b'a'], &mut pos), Err(Stop::Truncated));
        // A long (multi-byte length) string.
        let mut long = vec![0x7f, 0x81, 0x01];
        long.extend(std::iter::repeat_n(b'x', 127 + 129));
        let mut pos = 0;
        assert_eq!(read_string(&long, &mut pos).unwrap().len, 256);
        assert_eq!(pos, long.len());
    }

    #[test]
    fn huffman_bit_constants_match_the_encodings() {
        let url = hex(H_HTTP_URL);
        assert_eq!(read_bits(&url, 0, 22), Some(HUFF_HTTP.0));
        assert_eq!(read_bits(&url, 22, 19), Some(HUFF_SEPARATOR));
        assert_eq!(
            read_bits(&hex(H_HTTP_FIXED), 22, 19),
            Some(HUFF_REPLACEMENT)
        );
        assert_eq!(read_bits(&hex(H_HTTPS_URL), 0, 27), Some(HUFF_HTTPS.0));
        assert_eq!(
            read_bits(&hex(H_HTTPS_FIXED), 27, 19),
            Some(HUFF_REPLACEMENT)
        );
    }

    #[test]
    fn plain_rewrites() {
        let mut v = b"http://127.0.0.1:2379".to_vec();
        assert!(rewrite_value(&mut v, false));
        assert_eq!(v, b"httpB--127.0.0.1:2379");
        let mut v = b"https://etcd.example:2379".to_vec();
        assert!(rewrite_value(&mut v, false));
        assert_eq!(v, b"httpsB--etcd.example:2379");
        for ok in [&b"127.0.0.1:2379"[..], b"http:/", b"httpx://a", b""] {
            let mut v = ok.to_vec();
            assert!(!rewrite_value(&mut v, false));
            assert_eq!(v, ok);
        }
    }

    #[test]
    fn huffman_rewrites() {
        let mut v = hex(H_HTTP_URL);
        assert!(rewrite_value(&mut v, true));
        assert_eq!(v, hex(H_HTTP_FIXED));
        let mut v = hex(H_HTTPS_URL);
        assert!(rewrite_value(&mut v, true));
        assert_eq!(v, hex(H_HTTPS_FIXED));
        // Already fixed, a plain host:port, `http:/x` or `httpx://a` stays as it is.
        for ok in [
            H_HTTP_FIXED,
            H_HTTPS_FIXED,
            "089d5c0b8170dc132ebf",
            "9d29aee31e7f",
            "9d29afcdc6181f",
        ] {
            let mut v = hex(ok);
            assert!(!rewrite_value(&mut v, true));
            assert_eq!(v, hex(ok));
        }
        // Too short to hold `http://`.
        let mut v = hex(&H_HTTP_URL[..8]);
        assert!(!rewrite_value(&mut v, true));
    }

    #[test]
    fn header_blocks() {
        let block = request_block(&string(true, &hex(H_HTTP_URL)));
        let mut fixed = block.clone();
        assert_eq!(fix_header_block(&mut fixed, true), 1);
        assert_eq!(fixed, request_block(&string(true, &hex(H_HTTP_FIXED))));

        let mut plain = request_block(&string(false, b"http://127.0.0.1:2379"));
        assert_eq!(fix_header_block(&mut plain, true), 1);
        assert_eq!(
            plain,
            request_block(&string(false, b"httpB--127.0.0.1:2379"))
        );

        // A literal `:authority` name, plain or Huffman-coded, never indexed.
        for name in [
            string(false, b":authority"),
            string(true, &HUFFMAN_AUTHORITY),
        ] {
            let mut block = vec![0x82, 0x10];
            block.extend(name.clone());
            block.extend(string(false, b"https://h:1"));
            assert_eq!(fix_header_block(&mut block, true), 1);
            let mut want = vec![0x82, 0x10];
            want.extend(name);
            want.extend(string(false, b"httpsB--h:1"));
            assert_eq!(block, want);
        }

        // A size update first, then `:authority` without indexing.
        let mut block = vec![0x3f, 0xe1, 0x1f, 0x01];
        block.extend(string(false, b"http://x:2"));
        assert_eq!(fix_header_block(&mut block, true), 1);
        assert_eq!(&block[5..], b"httpB--x:2");

        // A value that is not a URL, and other headers holding URLs, are left alone.
        let mut block = vec![0x41];
        block.extend(string(false, b"127.0.0.1:2379"));
        block.push(0x40);
        block.extend(string(false, b"referer"));
        block.extend(string(false, b"http://x:1"));
        let before = block.clone();
        assert_eq!(fix_header_block(&mut block, true), 0);
        assert_eq!(block, before);

        // Malformed (indexed field 0) anywhere: nothing is touched.
        let mut block = request_block(&string(false, b"http://127.0.0.1:2379"));
        block.push(0x80);
        let before = block.clone();
        assert_eq!(fix_header_block(&mut block, true), 0);
        assert_eq!(block, before);

        // Cut off after the authority: rewritten if more follows in CONTINUATION,
        // left alone if the block claims to be complete.
        let mut block = request_block(&string(false, b"http://127.0.0.1:2379"));
        block.truncate(block.len() - 3);
        let before = block.clone();
        assert_eq!(fix_header_block(&mut block.clone(), true), 0);
        assert_eq!(fix_header_block(&mut block, false), 1);
        assert_ne!(block, before);
    }

    #[test]
    fn padded_priority_frame_payload() {
        let block = request_block(&string(true, &hex(H_HTTPS_URL)));
        let mut payload = vec![4]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 3, 15]); // exclusive dependency, weight
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0; 4]);
        let mut want = payload.clone();
        want[6..6 + block.len()]
            .copy_from_slice(&request_block(&string(true, &hex(H_HTTPS_FIXED))));
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS;
        assert_eq!(fix_headers_payload(flags, &mut payload), 1);
        assert_eq!(payload, want);
        // Padding longer than the payload: untouched.
        let mut bad = vec![200, 0x41];
        bad.extend(string(false, b"http://x:1"));
        let before = bad.clone();
        assert_eq!(
            fix_headers_payload(FLAG_PADDED | FLAG_END_HEADERS, &mut bad),
            0
        );
        assert_eq!(bad, before);
    }

    /// Returns its data 1 to 3 bytes at a time.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.step += 1;
            let n = (this.step % 3 + 1)
                .min(this.data.len() - this.pos)
                .min(buf.remaining());
            buf.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Reads everything through the wrapper, `read_size` bytes at a time at most.
    async fn read_through<R: AsyncRead + Unpin>(reader: R, read_size: usize) -> Vec<u8> {
        let mut fix = AuthorityFix::new(reader);
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = fix.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// A connection: preface, SETTINGS, a big DATA frame, two requests' HEADERS (one
    /// padded with priority), a WINDOW_UPDATE, an empty DATA frame; and what it
    /// should look like after the shim.
    fn connection() -> (Vec<u8>, Vec<u8>) {
        let mut input = PREFACE.to_vec();
        let mut want = PREFACE.to_vec();
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        // DATA whose payload looks like a HEADERS frame with a URL authority.
        let mut fake = frame(FRAME_HEADERS, 0x4, 1, &[0x41]);
        fake.extend(string(false, b"http://127.0.0.1:2379"));
        fake.extend(std::iter::repeat_n(0xab, 40_000));
        let data = frame(0x0, 0, 1, &fake);
        let headers = |auth: &[u8]| frame(FRAME_HEADERS, 0x4, 3, &request_block(auth));
        let padded = |auth: &[u8]| {
            let mut p = vec![2, 0, 0, 0, 1, 7];
            p.extend(request_block(auth));
            p.extend_from_slice(&[0, 0]);
            frame(FRAME_HEADERS, 0x4 | 0x8 | 0x20, 5, &p)
        };
        let window = frame(0x8, 0, 0, &[0, 1, 0, 0]);
        let empty = frame(0x0, 1, 3, &[]);
        for f in [&settings, &data] {
            input.extend_from_slice(f);
            want.extend_from_slice(f);
        }
        input.extend(headers(&string(true, &hex(H_HTTP_URL))));
        want.extend(headers(&string(true, &hex(H_HTTP_FIXED))));
        input.extend(padded(&string(false, b"https://127.0.0.1:2379")));
        want.extend(padded(&string(false, b"httpsB--127.0.0.1:2379")));
        for f in [&window, &empty, &settings] {
            input.extend_from_slice(f);
            want.extend_from_slice(f);
        }
        (input, want)
    }

    #[tokio::test]
    async fn trickled_connection_is_fixed() {
        let (input, want) = connection();
        for read_size in [1, 7, 9, 64, 100_000] {
            let trickle = Trickle {
                data: input.clone(),
                pos: 0,
                step: 0,
            };
            assert_eq!(read_through(trickle, read_size).await, want, "{read_size}");
        }
        // And all at once.
        assert_eq!(read_through(&input[..], 100_000).await, want);
    }

    #[tokio::test]
    async fn non_headers_frames_pass_through() {
        let mut input = PREFACE.to_vec();
        let mut block = vec![0x41];
        block.extend(string(false, b"http://127.0.0.1:2379"));
        // PUSH_PROMISE-like, DATA, CONTINUATION, all carrying the same bytes.
        for kind in [0x5, 0x0, 0x9] {
            input.extend(frame(kind, 0x4, 1, &block));
        }
        assert_eq!(read_through(&input[..], 5).await, input);
    }

    #[tokio::test]
    async fn other_protocols_and_cut_off_frames_pass_through() {
        let http1 = b"GET / HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        assert_eq!(read_through(&http1[..], 4).await, http1);

        // A HEADERS frame whose payload never fully arrives.
        let mut cut = PREFACE.to_vec();
        let mut block = vec![0x41];
        block.extend(string(false, b"http://127.0.0.1:2379"));
        cut.extend(frame(FRAME_HEADERS, 0x4, 1, &block));
        cut.truncate(cut.len() - 2);
        assert_eq!(read_through(&cut[..], 3).await, cut);
        // Half a frame header.
        let half = [&PREFACE[..], &[0, 0]].concat();
        assert_eq!(read_through(&half[..], 3).await, half);
    }
}
