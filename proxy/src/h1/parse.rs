//! HTTP/1.1 heads and body framing for the fast path, strict by design: whatever could be read
//! two ways by two HTTP implementations (request smuggling) is rejected, never repaired.
//!
//! * A request head must use CRLF line ends (a bare LF anywhere is rejected), must not fold
//!   lines (obs-fold) or put whitespace before a colon (httparse rejects both in requests).
//! * `Content-Length` must be one header of plain digits; a second one is rejected even when
//!   equal. `Transfer-Encoding` must be one header whose whole value is `chunked`. Both together
//!   are rejected.
//! * Chunk sizes are 1-15 hex digits with no sign, prefix or whitespace; a chunk extension is
//!   skipped up to its CRLF (bounded, no control bytes); every chunk's data ends in CRLF;
//!   trailers are read (bounded) and dropped.
//!
//! Nothing here allocates: heads are parsed into a caller's uninitialised header array (see
//! [`headers`]; nothing is written to it before the parser fills it).

use std::mem::MaybeUninit;
use std::ops::Range;

/// Most request headers the fast path parses; more is answered 431 (the configured limit is
/// checked separately and is usually lower).
pub const MAX_HEADERS: usize = 128;
/// Bytes of chunk extensions and trailers accepted per chunk line / trailer section.
const MAX_CHUNK_LINE_EXTRA: usize = 4096;

/// Room for a head's headers, filled by the parser.
pub type Headers<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// An empty [`Headers`]: no memory is written (a zeroed array would cost a 4 KiB `memset` for
/// every head parsed).
pub fn headers<'b>() -> Headers<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (and no framing header).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Why a head was refused. Every variant means "answer 400 (502 for a response) and close".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed head: {0}")]
    Syntax(&'static str),
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("bare LF line ending")]
    BareLf,
    #[error("invalid Content-Length")]
    BadLength,
    #[error("more than one Content-Length")]
    DuplicateLength,
    #[error("Transfer-Encoding other than a single `chunked`")]
    BadTransferEncoding,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
}

/// A parsed request head; its headers live in the array passed to [`parse_request`].
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    pub target: &'b str,
    /// Bytes of the head including the final CRLF CRLF.
    pub len: usize,
    pub headers: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// The client asked to close after this exchange (`Connection: close`).
    pub close: bool,
    /// Something the fast path leaves to hyper: HTTP/1.0, `Upgrade`, an `Expect` other than
    /// one `100-continue`, CONNECT or a target that is not origin-form.
    pub unusual: bool,
    /// `Expect: 100-continue`: the client waits for an interim `100 Continue` before sending
    /// the body.
    pub expect_continue: bool,
}

/// A parsed response head; its headers live in the array passed to [`parse_response`].
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub len: usize,
    pub headers: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// The connection cannot be reused afterwards (`Connection: close`, HTTP/1.0, or the body
    /// is delimited by close).
    pub close: bool,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut Headers<'b>,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Reject a bare LF early instead of waiting for a head that never completes.
            check_crlf(buf)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Syntax(syntax_name(e))),
    };
    check_crlf(&buf[..len])?;
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let minor = req.version.unwrap_or(0);
    let mut close = minor == 0;
    let mut unusual = minor == 0 || method == "CONNECT" || !target.starts_with('/');
    let mut length = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut expect = 0u32;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // Only these five names matter here; their lengths differ, so most headers are passed
        // over after one comparison.
        if !matches!(name.len(), 6 | 7 | 10 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(HeadError::DuplicateLength);
            }
            length = Some(parse_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen || !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::BadTransferEncoding);
            }
            te_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    unusual = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect += 1;
            expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            unusual = true;
        }
    }
    // Any other expectation, or more than one, is hyper's to refuse (417).
    if expect > 1 || expect == 1 && !expect_continue {
        unusual = true;
        expect_continue = false;
    }
    let framing = match (length, chunked) {
        (Some(_), true) => return Err(HeadError::LengthAndChunked),
        (None, false) => Framing::Empty,
        // An explicit zero stays a length, so that it is forwarded as one.
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
    };
    Ok(Some(RequestHead {
        method,
        target,
        len,
        headers: req.headers,
        framing,
        close,
        unusual,
        expect_continue,
    }))
}

/// Parses a response head to a request made with `method`. Upstream heads are read a little
/// more leniently than requests (bare LF is accepted), but framing is just as strict.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut Headers<'b>,
    head_request: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, HeadError> {
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, headers)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Syntax(syntax_name(e))),
    };
    let status = resp.code.unwrap_or(0);
    let reason = resp.reason.unwrap_or("");
    let mut close = resp.version.unwrap_or(0) == 0;
    let mut length = None;
    let mut te = None;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(h.value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::DuplicateLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding decides; anything but chunked last is delimited by close.
            let last = h.value.rsplit(|&b| b == b',').next().map(trim);
            te = Some(last.is_some_and(|l| l.eq_ignore_ascii_case(b"chunked")));
        } else if name.eq_ignore_ascii_case(b"connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
        {
            close = true;
        }
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else {
        match (te, length) {
            (Some(_), Some(_)) => return Err(HeadError::LengthAndChunked),
            (Some(true), None) => Framing::Chunked,
            (Some(false), None) | (None, None) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    Ok(Some(ResponseHead {
        status,
        reason,
        len,
        headers: resp.headers,
        framing,
        close: close || framing == Framing::Close,
    }))
}

fn syntax_name(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// Every LF must follow a CR.
fn check_crlf(head: &[u8]) -> Result<(), HeadError> {
    // One pass over each byte and the one before it, without early exits, which the compiler
    // vectorises: a head has a line feed every few dozen bytes, so a search per line costs more.
    let bare = head
        .iter()
        .skip(1)
        .zip(head)
        .fold(head.first() == Some(&b'\n'), |bare, (&b, &prev)| {
            bare | ((b == b'\n') & (prev != b'\r'))
        });
    if bare {
        return Err(HeadError::BareLf);
    }
    Ok(())
}

/// `v` without leading and trailing spaces and tabs (optional whitespace around values).
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(start);
    &v[start..=end]
}

/// Plain decimal digits, at most 18 of them (no sign, no list, no whitespace inside).
fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadLength);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Why a chunked body was refused (answer 400 and close; the rest of the stream is unusable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("invalid chunk extension")]
    Extension,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid trailer section")]
    Trailer,
}

/// Incremental decoder for a chunked body.
#[derive(Clone, Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// Data bytes left in the current chunk, or the size being read.
    n: u64,
    digits: u8,
    /// Extension / trailer bytes seen on the current line or section.
    extra: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// One step of decoding: `consumed` bytes of input were used; `data` (a range of the input,
/// possibly empty) is body data; `done` once the final CRLF was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: Range<usize>,
    pub done: bool,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder::default()
    }

    /// True once the terminating chunk and trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` up to and including the next run of data (or the end). Call again
    /// with the rest of the input while `consumed < input.len()` and not `done`.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match hex(b) {
                    Some(d) => {
                        if self.digits == 15 {
                            return Err(ChunkError::Size);
                        }
                        self.digits += 1;
                        self.n = self.n << 4 | u64::from(d);
                    }
                    None if self.digits == 0 => return Err(ChunkError::Size),
                    None => match b {
                        b';' => {
                            self.extra = 0;
                            self.state = State::Ext;
                        }
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(ChunkError::Size),
                    },
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {
                        self.extra += 1;
                        if self.extra > MAX_CHUNK_LINE_EXTRA {
                            return Err(ChunkError::Extension);
                        }
                    }
                    _ => return Err(ChunkError::Extension),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Size);
                    }
                    self.digits = 0;
                    if self.n == 0 {
                        self.extra = 0;
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let take = (input.len() - i).min(usize::try_from(self.n).unwrap_or(usize::MAX));
                    self.n -= take as u64;
                    if self.n == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step {
                        consumed: i + take,
                        data: i..i + take,
                        done: false,
                    });
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    _ => {
                        self.state = State::TrailerLine;
                        continue;
                    }
                },
                State::TrailerLine => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {
                        self.extra += 1;
                        if self.extra > MAX_CHUNK_LINE_EXTRA {
                            return Err(ChunkError::Trailer);
                        }
                    }
                    _ => return Err(ChunkError::Trailer),
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Trailer);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Trailer);
                    }
                    self.state = State::Done;
                    return Ok(Step {
                        consumed: i + 1,
                        data: i + 1..i + 1,
                        done: true,
                    });
                }
                State::Done => {
                    return Ok(Step {
                        consumed: i,
                        data: i..i,
                        done: true,
                    })
                }
            }
            i += 1;
        }
        Ok(Step {
            consumed: i,
            data: i..i,
            done: self.state == State::Done,
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
