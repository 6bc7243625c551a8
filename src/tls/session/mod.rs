//! One TLS connection seen from the wire: both directions' reassembled bytes in, each
//! direction's application plaintext out, with the secrets of a [`KeyLog`].
//!
//! TLS 1.3 (RFC 8446): handshake traffic keys after the ServerHello, application keys after each
//! side's Finished, KeyUpdate, HelloRetryRequest (the second ServerHello is the real one),
//! resumption with a PSK (same secrets in the log), 0-RTT data under
//! `CLIENT_EARLY_TRAFFIC_SECRET` (early records the server rejected are skipped, as the server
//! skips them). TLS 1.2 (RFC 5246): the key block from the `CLIENT_RANDOM` master secret, keys
//! switched on each side's ChangeCipherSpec; an abbreviated (resumed) handshake works the same
//! way because the log has the resumed handshake's client random.
//!
//! A session whose first client bytes are not a TLS handshake record is [`SessionStatus::Plaintext`]:
//! its bytes pass through unchanged. Errors never carry key material.
//!
//! Layout: this file holds the session's state, its public API and the record pump (records
//! framed, decrypted and dispatched per direction); `keys.rs` reacts to handshake messages and
//! installs each direction's keys. Neither may put key material in an error or a log.

mod keys;

use crate::tls::handshake::{ClientHello, ServerHello, TLS12, TLS13};
use crate::tls::keylog::{KeyLog, Secrets};
use crate::tls::record::{self, HandshakeBuffer, RecordBuffer, RecordError};
use crate::tls::suite::{suite_name, RecordKey, Suite};

/// Which side sent the bytes of a record (its origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Client to server.
    Client,
    /// Server to client.
    Server,
}

impl Origin {
    fn idx(self) -> usize {
        match self {
            Origin::Client => 0,
            Origin::Server => 1,
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// Nothing decided yet (waiting for the hellos).
    Hello,
    /// The hellos are known but the key log has no secrets for this client random (yet): bytes
    /// are held. [`TlsSession::retry`] tries again (live mode: the log grows).
    AwaitingKeys,
    /// Keys installed: application data comes out.
    Decrypting,
    /// Not TLS: bytes pass through unchanged.
    Plaintext,
    /// The session cannot be decrypted; the error says why.
    Failed(TlsError),
}

/// Why a session cannot be decrypted (client randoms are public: they are on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The record layer broke (not TLS after all, or an impossible length).
    #[error("{dir:?} records: {source}")]
    Record {
        /// Origin.
        dir: Origin,
        /// The record error.
        source: RecordError,
    },
    /// A ClientHello or ServerHello that does not parse.
    #[error("malformed {0}")]
    BadHello(&'static str),
    /// A cipher suite this decryptor does not know.
    #[error("unsupported cipher suite {0}")]
    UnsupportedSuite(String),
    /// A version other than TLS 1.2 or 1.3.
    #[error("unsupported TLS version {0:#06x}")]
    UnsupportedVersion(u16),
    /// The key log has no (or not all the) secrets for this handshake.
    #[error("no secrets in the key log for client random {0}")]
    NoKeys(String),
    /// A logged secret that cannot be the suite's (wrong length for its hash).
    #[error("the logged secrets do not fit {0} (wrong length)")]
    BadSecret(&'static str),
    /// The client sent this much after its hello and no ServerHello came (a capture of the
    /// client direction only, or of a server that never answered).
    #[error("no ServerHello in the capture after {0} bytes from the client")]
    NoServerHello(usize),
    /// The capture ended inside a record (capture loss or a cut capture).
    #[error("{dir:?} stream ends inside a record ({bytes} bytes cut)")]
    Truncated {
        /// Origin.
        dir: Origin,
        /// Bytes of the cut record.
        bytes: usize,
    },
}

/// What the handshake said, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Negotiated version (0x0303, 0x0304).
    pub version: Option<u16>,
    /// Negotiated suite's IANA value.
    pub suite: Option<u16>,
    /// ClientHello's server name.
    pub sni: Option<String>,
    /// Offered ALPN protocols.
    pub alpn_offered: Vec<Vec<u8>>,
    /// The selected ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// A HelloRetryRequest was seen.
    pub retry: bool,
    /// Resumed (PSK in TLS 1.3; the session id echoed in TLS 1.2).
    pub resumed: bool,
    /// 0-RTT data was decrypted.
    pub early_data: bool,
}

impl TlsInfo {
    /// "TLS 1.3" / "TLS 1.2".
    pub fn version_name(&self) -> &'static str {
        match self.version {
            Some(TLS13) => "TLS 1.3",
            Some(TLS12) => "TLS 1.2",
            _ => "TLS ?",
        }
    }

    /// The suite's name.
    pub fn suite_name(&self) -> Option<String> {
        self.suite.map(suite_name)
    }
}

/// Key phase of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Plain,
    Early,
    Handshake,
    Application,
}

struct Side {
    records: RecordBuffer,
    hs: HandshakeBuffer,
    phase: Phase,
    key: Option<RecordKey>,
    /// TLS 1.3: the current traffic secret (KeyUpdate derives the next).
    secret: Vec<u8>,
    /// TLS 1.2: the key installed at ChangeCipherSpec.
    next_key: Option<RecordKey>,
    auth_failures: u64,
}

impl Side {
    fn new() -> Self {
        Side {
            records: RecordBuffer::default(),
            hs: HandshakeBuffer::default(),
            phase: Phase::Plain,
            key: None,
            secret: Vec::new(),
            next_key: None,
            auth_failures: 0,
        }
    }
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Records that failed authentication (a wrong key or damaged bytes); skipped.
    pub auth_failures: u64,
    /// 0-RTT records the server rejected (they fail under both early and handshake keys).
    pub early_rejected: u64,
    /// Application records decrypted.
    pub records: u64,
}

/// The decryptor of one TLS connection. Sans-IO: feed with [`TlsSession::handle`].
pub struct TlsSession {
    sides: [Side; 2],
    status: SessionStatus,
    info: TlsInfo,
    client_hello: Option<ClientHello>,
    server_hello: Option<ServerHello>,
    suite: Option<Suite>,
    secrets: Option<Secrets>,
    early_rejected: u64,
    records: u64,
    /// Whether any byte was seen yet (the first decides TLS or plaintext).
    started: bool,
}

impl Default for TlsSession {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes a session holds before its ServerHello is seen.
pub const MAX_HELLO_HOLD: usize = 1 << 20;

/// Plaintext out of a [`TlsSession`], in the order it was decrypted.
pub type Output = Vec<(Origin, Vec<u8>)>;

fn push_out(out: &mut Output, dir: Origin, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    match out.last_mut() {
        Some((d, v)) if *d == dir => v.extend_from_slice(data),
        _ => out.push((dir, data.to_vec())),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TlsSession {
    /// A session before its first byte.
    pub fn new() -> Self {
        TlsSession {
            sides: [Side::new(), Side::new()],
            status: SessionStatus::Hello,
            info: TlsInfo::default(),
            client_hello: None,
            server_hello: None,
            suite: None,
            secrets: None,
            early_rejected: 0,
            records: 0,
            started: false,
        }
    }

    /// Where the session stands.
    pub fn status(&self) -> &SessionStatus {
        &self.status
    }

    /// What the handshake said so far.
    pub fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// The client random, once the ClientHello was read.
    pub fn client_random(&self) -> Option<[u8; 32]> {
        self.client_hello.as_ref().map(|c| c.random)
    }

    /// Counters.
    pub fn counters(&self) -> SessionCounters {
        SessionCounters {
            auth_failures: self.sides[0].auth_failures + self.sides[1].auth_failures,
            early_rejected: self.early_rejected,
            records: self.records,
        }
    }

    /// Bytes held and not yet decrypted (both directions): what waits for keys.
    pub fn held_bytes(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.records.pending() + s.hs.pending())
            .sum()
    }

    /// Feeds in-order bytes of `dir`; appends decrypted application data to `out`. Returns the
    /// error that made the session fail, once, when it fails in this call.
    pub fn handle(
        &mut self,
        dir: Origin,
        data: &[u8],
        keys: &KeyLog,
        out: &mut Output,
    ) -> Result<(), TlsError> {
        if !self.started && !data.is_empty() {
            self.started = true;
            // TLS servers never speak first; a client that does not open with a handshake
            // record is not speaking TLS.
            if dir == Origin::Server || data[0] != record::HANDSHAKE {
                self.status = SessionStatus::Plaintext;
            }
        }
        match self.status {
            SessionStatus::Plaintext => {
                push_out(out, dir, data);
                return Ok(());
            }
            SessionStatus::Failed(_) => return Ok(()),
            _ => {}
        }
        self.sides[dir.idx()].records.push(data);
        self.pump(keys, out)?;
        // Client records wait for the ServerHello; not without bound.
        if self.status == SessionStatus::Hello && self.held_bytes() > MAX_HELLO_HOLD {
            let held = self.held_bytes();
            return self.fail(TlsError::NoServerHello(held));
        }
        Ok(())
    }

    /// Live mode: tries the key log again for a session in [`SessionStatus::AwaitingKeys`].
    pub fn retry(&mut self, keys: &KeyLog, out: &mut Output) -> Result<(), TlsError> {
        if self.status == SessionStatus::AwaitingKeys {
            self.pump(keys, out)
        } else {
            Ok(())
        }
    }

    /// The session's bytes ended (both sides closed, or the capture ended). A record cut short
    /// is an error (the session's last bytes are lost), the rest was decrypted already.
    pub fn finish(&mut self) -> Option<TlsError> {
        if !matches!(
            self.status,
            SessionStatus::Decrypting | SessionStatus::Hello
        ) {
            return None;
        }
        for dir in [Origin::Client, Origin::Server] {
            let bytes = self.sides[dir.idx()].records.pending();
            if bytes > 0 {
                return Some(TlsError::Truncated { dir, bytes });
            }
        }
        None
    }

    fn fail(&mut self, e: TlsError) -> Result<(), TlsError> {
        self.status = SessionStatus::Failed(e.clone());
        // Free what is held: nothing more comes out of this session.
        self.sides = [Side::new(), Side::new()];
        Err(e)
    }

    fn pump(&mut self, keys: &KeyLog, out: &mut Output) -> Result<(), TlsError> {
        if self.status == SessionStatus::AwaitingKeys {
            match self.install_keys(keys) {
                Ok(true) => self.status = SessionStatus::Decrypting,
                Ok(false) => return Ok(()),
                Err(e) => return self.fail(e),
            }
        }
        // The server side first: its ServerHello unblocks the client side's records.
        loop {
            let mut progress = false;
            for dir in [Origin::Server, Origin::Client] {
                match self.pump_side(dir, keys, out) {
                    Ok(p) => progress |= p,
                    Err(e) => return self.fail(e),
                }
                if self.status == SessionStatus::AwaitingKeys {
                    return Ok(());
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Processes `dir`'s whole records; returns whether any was processed.
    fn pump_side(
        &mut self,
        dir: Origin,
        keys: &KeyLog,
        out: &mut Output,
    ) -> Result<bool, TlsError> {
        let mut progress = false;
        loop {
            let side = &mut self.sides[dir.idx()];
            // Client records after its hello wait for the ServerHello (0-RTT data needs the
            // suite that the server picks; TLS 1.2 needs the server random).
            if dir == Origin::Client && self.client_hello.is_some() && self.suite.is_none() {
                return Ok(progress);
            }
            let Some((header, fragment)) = side
                .records
                .next_record()
                .map_err(|source| TlsError::Record { dir, source })?
            else {
                return Ok(progress);
            };
            progress = true;
            self.on_record(dir, header, fragment, keys, out)?;
            if self.status == SessionStatus::AwaitingKeys {
                return Ok(progress);
            }
        }
    }

    fn on_record(
        &mut self,
        dir: Origin,
        header: [u8; 5],
        fragment: Vec<u8>,
        keys: &KeyLog,
        out: &mut Output,
    ) -> Result<(), TlsError> {
        let tls12 = self.info.version == Some(TLS12);
        if header[0] == record::CHANGE_CIPHER_SPEC {
            // TLS 1.2: this side's records are protected from here on. TLS 1.3: middlebox
            // compatibility only (RFC 8446 §D.4), ignored.
            if tls12 {
                let side = &mut self.sides[dir.idx()];
                side.key = side.next_key.take();
                side.phase = Phase::Application;
            }
            return Ok(());
        }
        let side = &mut self.sides[dir.idx()];
        let (typ, body) = match side.key.as_mut() {
            None => (header[0], fragment),
            Some(k) => match k.open(&header, &fragment) {
                Ok(r) => r,
                Err(_) => {
                    // Rejected 0-RTT: the server skipped these records; so do we. The first
                    // record under the handshake key ends the early phase.
                    if side.phase == Phase::Early {
                        let hs = self
                            .secrets
                            .as_ref()
                            .and_then(|s| s.client_handshake.clone());
                        if let Some(mut k) = hs.and_then(|s| self.key13(&s)) {
                            if let Ok(r) = k.open(&header, &fragment) {
                                let side = &mut self.sides[dir.idx()];
                                side.key = Some(k);
                                side.phase = Phase::Handshake;
                                self.dispatch(dir, r.0, r.1, keys, out)?;
                                return Ok(());
                            }
                        }
                        self.early_rejected += 1;
                        return Ok(());
                    }
                    side.auth_failures += 1;
                    return Ok(());
                }
            },
        };
        self.dispatch(dir, typ, body, keys, out)
    }

    fn dispatch(
        &mut self,
        dir: Origin,
        typ: u8,
        body: Vec<u8>,
        keys: &KeyLog,
        out: &mut Output,
    ) -> Result<(), TlsError> {
        match typ {
            record::APPLICATION_DATA => {
                let side = &self.sides[dir.idx()];
                if side.key.is_some() {
                    if side.phase == Phase::Early {
                        self.info.early_data = true;
                    }
                    self.records += 1;
                    push_out(out, dir, &body);
                }
                Ok(())
            }
            record::HANDSHAKE => {
                self.sides[dir.idx()].hs.push(&body);
                loop {
                    let msg = self.sides[dir.idx()]
                        .hs
                        .next_message()
                        .map_err(|source| TlsError::Record { dir, source })?;
                    let Some((t, m)) = msg else { return Ok(()) };
                    self.on_handshake(dir, t, &m, keys)?;
                    if self.status == SessionStatus::AwaitingKeys {
                        return Ok(());
                    }
                }
            }
            // Alerts (close_notify and the like) and unknown inner types carry no data to replay.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
