//! Protocol decoders: one direction of a TCP conversation in, application messages out.
//!
//! What the benchmark report and the protocol-aware diff stand on: a request gets an endpoint key
//! (HTTP `GET /users/{id}`, Redis `SET`), a response a status class (HTTP `404` / `4xx`, Redis
//! `error` with its prefix `WRONGTYPE`), and both give access to their body or value.
//!
//! Sans-IO (STYLE.md rule 1): a decoder is fed bytes as they arrive, split anywhere, and polled for
//! messages; it never reads a socket or a clock. Messages borrow from the decoder's reusable
//! buffers, so the hot path does not allocate per message once the buffers have grown. What a
//! decoder cannot parse is an error value ([`DecodeError`]) that makes the stream *opaque*: the
//! caller counts it and carries on; nothing here panics on bad input.
//!
//! Adding a protocol is one file: see `docs/decoders.md`.

use std::fmt;

pub mod http;
pub mod redis;

/// Bounds that keep a hostile or broken stream from taking unbounded memory or stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes fed but not yet decoded (a header block, a Redis reply being assembled).
    pub max_buffered: usize,
    /// Most body bytes kept per message; the rest is counted in [`DecodedMessage::body_len`] and dropped.
    pub max_body: usize,
    /// Deepest nesting of aggregate values (Redis arrays, maps...).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffered: 1 << 20,
            max_body: 1 << 20,
            max_depth: 32,
        }
    }
}

/// Which side of the conversation a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: requests / commands.
    Request,
    /// Server to client: responses / replies.
    Response,
}

/// The application protocols a decoder exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1 ([`http`]).
    Http,
    /// Redis RESP2 and RESP3 ([`redis`]).
    Redis,
    /// Plain TCP: bytes pass through as [`Summary::Data`], no message boundaries.
    Tcp,
}

impl Protocol {
    /// Every protocol, in the order `--protocol` lists them.
    pub const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Redis, Protocol::Tcp];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Redis => "redis",
            Protocol::Tcp => "tcp",
        }
    }

    /// The protocol called `name` (`http`, `redis`, `tcp`; case-insensitive).
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The protocol usually served on server port `port`; plain TCP when the port says nothing.
    pub fn from_port(port: u16) -> Protocol {
        match port {
            // 443 is left out: TLS is opaque to a plain-text decoder.
            80 | 591 | 3000 | 5000 | 8000 | 8008 | 8080 | 8081 | 8888 | 9090 => Protocol::Http,
            6379 | 6380 | 26379 => Protocol::Redis,
            _ => Protocol::Tcp,
        }
    }

    /// A fresh decoder for one direction of one conversation.
    pub fn decoder(self, dir: Direction, limits: Limits) -> Box<dyn Decoder + Send> {
        match self {
            Protocol::Http => Box::new(http::HttpDecoder::new(dir, limits)),
            Protocol::Redis => Box::new(redis::RedisDecoder::new(dir, limits)),
            Protocol::Tcp => Box::new(TcpDecoder::new(dir)),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental decoder of one direction of one TCP conversation.
///
/// Feed bytes in stream order with [`feed`](Decoder::feed), then call
/// [`poll_message`](Decoder::poll_message) until it returns `Ok(None)`; repeat. Call
/// [`finish`](Decoder::finish) when the stream ends (FIN), which completes a message that ends at
/// close. After an error the stream is opaque: the decoder ignores what it is fed and polls `None`.
pub trait Decoder {
    /// The protocol this decoder reads.
    fn protocol(&self) -> Protocol;

    /// Which side of the conversation it reads.
    fn direction(&self) -> Direction;

    /// Takes the next bytes of the stream. They are only buffered: poll before feeding much more.
    fn feed(&mut self, data: &[u8]);

    /// The stream ended: a message that runs until close is complete, one cut short is an error.
    fn finish(&mut self);

    /// The next complete message, `Ok(None)` when more bytes are needed (or the stream is opaque).
    fn poll_message(&mut self) -> Result<Option<DecodedMessage<'_>>, DecodeError>;

    /// Tells a response decoder about a request of the same conversation, in order (HTTP needs
    /// the method: a response to `HEAD` has no body). Request decoders ignore it.
    fn note_request(&mut self, _request: &DecodedMessage<'_>) {}

    /// The message the bytes fed so far stop inside, as far as it arrived: its head (HTTP
    /// start line and headers, a Redis reply's type line) and its body so far (`body_len` and
    /// `wire_len` count what arrived). For a caller that holds only the first bytes of a long
    /// stream: the class of a response is known before its body ends. `None` when not even the
    /// head has arrived, between messages, or once the stream is opaque. Call it after
    /// [`poll_message`](Decoder::poll_message) returned `Ok(None)`.
    fn poll_partial(&mut self) -> Option<DecodedMessage<'_>> {
        None
    }

    /// True once an error made this stream undecodable.
    fn is_opaque(&self) -> bool;
}

/// Why a stream became opaque. Carries the byte offset in the stream where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not this protocol.
    #[error("{protocol}: malformed {what} at stream offset {offset}")]
    Malformed {
        /// The decoder's protocol.
        protocol: Protocol,
        /// What could not be parsed.
        what: &'static str,
        /// Offset of the message that failed, from the start of the stream.
        offset: u64,
    },
    /// A header block, line or value needs more than [`Limits::max_buffered`] bytes.
    #[error("{protocol}: more than {limit} bytes buffered at stream offset {offset}")]
    TooLarge {
        /// The decoder's protocol.
        protocol: Protocol,
        /// The limit passed.
        limit: usize,
        /// Offset of the message being assembled.
        offset: u64,
    },
    /// Aggregates nested deeper than [`Limits::max_depth`].
    #[error("{protocol}: nested deeper than {limit} at stream offset {offset}")]
    TooDeep {
        /// The decoder's protocol.
        protocol: Protocol,
        /// The limit passed.
        limit: usize,
        /// Offset of the message.
        offset: u64,
    },
    /// The stream ended inside a message.
    #[error("{protocol}: stream ended inside a message at stream offset {offset}")]
    Truncated {
        /// The decoder's protocol.
        protocol: Protocol,
        /// Offset of the unfinished message.
        offset: u64,
    },
}

/// One decoded message, borrowed from its decoder until the next call on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedMessage<'a> {
    /// What the report groups and counts it by.
    pub summary: Summary<'a>,
    /// Offset of its first byte in the stream.
    pub offset: u64,
    /// Bytes it took on the wire (head, framing and body).
    pub wire_len: u64,
    /// Its body (HTTP, de-chunked) or value (Redis: the whole encoded RESP value), at most
    /// [`Limits::max_body`] bytes of it.
    pub body: &'a [u8],
    /// Full length of the body, of which `body` holds the first bytes.
    pub body_len: u64,
    /// Protocol-specific parts, for the protocol-aware diff.
    pub detail: Detail<'a>,
}

impl DecodedMessage<'_> {
    /// True when `body` holds only the first [`Limits::max_body`] bytes of the body.
    pub fn body_truncated(&self) -> bool {
        (self.body.len() as u64) < self.body_len
    }
}

/// The report's view of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary<'a> {
    /// A request or command; `endpoint` is the key the report groups by (`GET /users/{id}`,
    /// `HGETALL`).
    Request {
        /// Endpoint key.
        endpoint: &'a str,
    },
    /// A response or reply.
    Response(ResponseClass<'a>),
    /// Bytes of a stream without message boundaries (plain TCP).
    Data,
}

/// How a response ended, coarse enough to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass<'a> {
    /// An HTTP status code.
    Http {
        /// The status code (RFC 9110 section 15).
        status: u16,
    },
    /// A Redis reply's type, and the error prefix of error replies.
    Redis {
        /// Type of the reply (of the value after an attribute).
        kind: redis::ReplyKind,
        /// First word of an error reply (`ERR`, `WRONGTYPE`); `None` for other replies.
        error_prefix: Option<&'a str>,
    },
}

impl<'a> ResponseClass<'a> {
    /// True for what the report counts as an error: HTTP 4xx/5xx, Redis error replies.
    pub fn is_error(&self) -> bool {
        match *self {
            ResponseClass::Http { status } => status >= 400,
            ResponseClass::Redis { kind, .. } => {
                matches!(kind, redis::ReplyKind::Error | redis::ReplyKind::BlobError)
            }
        }
    }

    /// A short label for grouping: `2xx`/`4xx`/`5xx`... for HTTP, the error prefix or the
    /// reply type for Redis.
    pub fn class(&self) -> &'a str {
        match *self {
            ResponseClass::Http { status } => http::status_class(status),
            ResponseClass::Redis { kind, error_prefix } => match error_prefix {
                Some(p) => p,
                None => kind.name(),
            },
        }
    }
}

/// Protocol-specific parts of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail<'a> {
    /// An HTTP request or response head.
    Http(http::HttpHead<'a>),
    /// A Redis command's arguments (replies keep their value in [`DecodedMessage::body`]).
    Redis(redis::RedisDetail<'a>),
    /// Nothing beyond the bytes.
    None,
}

/// The plain-TCP passthrough: every fed chunk comes back as one [`Summary::Data`] message.
#[derive(Debug)]
pub struct TcpDecoder {
    dir: Direction,
    buf: Vec<u8>,
    pending: bool,
    offset: u64,
}

impl TcpDecoder {
    /// A passthrough decoder for one direction.
    pub fn new(dir: Direction) -> TcpDecoder {
        TcpDecoder {
            dir,
            buf: Vec::new(),
            pending: false,
            offset: 0,
        }
    }
}

impl Decoder for TcpDecoder {
    fn protocol(&self) -> Protocol {
        Protocol::Tcp
    }

    fn direction(&self) -> Direction {
        self.dir
    }

    fn feed(&mut self, data: &[u8]) {
        if !self.pending {
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        self.buf.extend_from_slice(data);
        self.pending = !self.buf.is_empty();
    }

    fn finish(&mut self) {}

    fn poll_message(&mut self) -> Result<Option<DecodedMessage<'_>>, DecodeError> {
        if !self.pending {
            return Ok(None);
        }
        self.pending = false;
        Ok(Some(DecodedMessage {
            summary: Summary::Data,
            offset: self.offset,
            wire_len: self.buf.len() as u64,
            body: &self.buf,
            body_len: self.buf.len() as u64,
            detail: Detail::None,
        }))
    }

    fn is_opaque(&self) -> bool {
        false
    }
}

/// An owned copy of the parts of a [`DecodedMessage`] tests and the fuzz targets compare.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    pub summary: String,
    pub offset: u64,
    pub wire_len: u64,
    pub body: Vec<u8>,
    pub body_len: u64,
}

impl From<&DecodedMessage<'_>> for OwnedMessage {
    fn from(m: &DecodedMessage<'_>) -> Self {
        let summary = match m.summary {
            Summary::Request { endpoint } => format!("req {endpoint}"),
            Summary::Response(c) => format!("resp {c:?} {}", c.class()),
            Summary::Data => "data".to_string(),
        };
        OwnedMessage {
            summary,
            offset: m.offset,
            wire_len: m.wire_len,
            body: m.body.to_vec(),
            body_len: m.body_len,
        }
    }
}

/// Decodes one stream fed in the given pieces, then finished; every message in order and the
/// error that made the stream opaque, if any. For tests and fuzzing.
#[doc(hidden)]
pub fn decode_pieces<'p>(
    dec: &mut dyn Decoder,
    pieces: impl IntoIterator<Item = &'p [u8]>,
) -> (Vec<OwnedMessage>, Option<DecodeError>) {
    let mut out = Vec::new();
    let drain = |dec: &mut dyn Decoder, out: &mut Vec<OwnedMessage>| loop {
        match dec.poll_message() {
            Ok(Some(m)) => out.push(OwnedMessage::from(&m)),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    };
    for p in pieces {
        dec.feed(p);
        if let Some(e) = drain(dec, &mut out) {
            return (out, Some(e));
        }
    }
    dec.finish();
    let err = drain(dec, &mut out);
    (out, err)
}
