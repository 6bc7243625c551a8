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

use super::handshake::{self, ClientHello, ServerHello, TLS12, TLS13};
use super::keylog::{KeyLog, Secrets};
use super::record::{self, HandshakeBuffer, RecordBuffer, RecordError};
use super::schedule::{key_block12, next_traffic_secret, traffic_key_iv};
use super::suite::{suite, suite_name, AeadAlg, RecordKey, Suite};

/// Which side sent bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Client,
    /// Server to client.
    Server,
}

impl Direction {
    fn idx(self) -> usize {
        match self {
            Direction::Client => 0,
            Direction::Server => 1,
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
        /// Direction.
        dir: Direction,
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
        /// Direction.
        dir: Direction,
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
pub type Output = Vec<(Direction, Vec<u8>)>;

fn push_out(out: &mut Output, dir: Direction, data: &[u8]) {
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
        dir: Direction,
        data: &[u8],
        keys: &KeyLog,
        out: &mut Output,
    ) -> Result<(), TlsError> {
        if !self.started && !data.is_empty() {
            self.started = true;
            // TLS servers never speak first; a client that does not open with a handshake
            // record is not speaking TLS.
            if dir == Direction::Server || data[0] != record::HANDSHAKE {
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
        for dir in [Direction::Client, Direction::Server] {
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
            for dir in [Direction::Server, Direction::Client] {
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
        dir: Direction,
        keys: &KeyLog,
        out: &mut Output,
    ) -> Result<bool, TlsError> {
        let mut progress = false;
        loop {
            let side = &mut self.sides[dir.idx()];
            // Client records after its hello wait for the ServerHello (0-RTT data needs the
            // suite that the server picks; TLS 1.2 needs the server random).
            if dir == Direction::Client && self.client_hello.is_some() && self.suite.is_none() {
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
        dir: Direction,
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
        dir: Direction,
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

    fn key13(&self, secret: &[u8]) -> Option<RecordKey> {
        let s = self.suite?;
        let (key, iv) = traffic_key_iv(s.hash, secret, s.aead.key_len())?;
        RecordKey::new(s.aead, true, &key, &iv)
    }

    fn set13(&mut self, dir: Direction, secret: Vec<u8>, phase: Phase) -> Result<(), TlsError> {
        let name = self.suite.map_or("the suite", |s| s.name);
        if secret.len() != self.suite.map_or(0, |s| s.hash.output_len()) {
            return Err(TlsError::BadSecret(name));
        }
        let key = self.key13(&secret).ok_or(TlsError::BadSecret(name))?;
        let side = &mut self.sides[dir.idx()];
        side.key = Some(key);
        side.secret = secret;
        side.phase = phase;
        Ok(())
    }

    fn on_handshake(
        &mut self,
        dir: Direction,
        typ: u8,
        body: &[u8],
        keys: &KeyLog,
    ) -> Result<(), TlsError> {
        let tls13 = self.info.version == Some(TLS13);
        match (dir, typ) {
            (Direction::Client, handshake::CLIENT_HELLO) if self.sides[0].key.is_none() => {
                let ch =
                    handshake::parse_client_hello(body).ok_or(TlsError::BadHello("ClientHello"))?;
                self.info.sni = ch.sni.clone();
                self.info.alpn_offered = ch.alpn.clone();
                self.client_hello = Some(ch);
            }
            (Direction::Server, handshake::SERVER_HELLO) if self.sides[1].key.is_none() => {
                let sh =
                    handshake::parse_server_hello(body).ok_or(TlsError::BadHello("ServerHello"))?;
                if sh.retry {
                    // HelloRetryRequest: the client sends a second ClientHello (same random);
                    // the next ServerHello is the real one.
                    self.info.retry = true;
                    return Ok(());
                }
                if sh.version != TLS12 && sh.version != TLS13 {
                    return Err(TlsError::UnsupportedVersion(sh.version));
                }
                let ch = self
                    .client_hello
                    .as_ref()
                    .ok_or(TlsError::BadHello("ServerHello before ClientHello"))?;
                let s = suite(sh.cipher_suite)
                    .filter(|s| s.tls13 == (sh.version == TLS13))
                    .ok_or_else(|| TlsError::UnsupportedSuite(suite_name(sh.cipher_suite)))?;
                self.info.version = Some(sh.version);
                self.info.suite = Some(s.id);
                self.info.resumed = sh.psk
                    || (sh.version == TLS12
                        && !sh.session_id.is_empty()
                        && sh.session_id == ch.session_id);
                if sh.alpn.is_some() {
                    self.info.alpn = sh.alpn.clone();
                }
                self.server_hello = Some(sh);
                self.suite = Some(s);
                if !self.install_keys(keys)? {
                    self.status = SessionStatus::AwaitingKeys;
                } else {
                    self.status = SessionStatus::Decrypting;
                }
            }
            (Direction::Server, handshake::ENCRYPTED_EXTENSIONS) if tls13 => {
                if let Some((alpn, _early)) = handshake::parse_encrypted_extensions(body) {
                    self.info.alpn = alpn;
                }
            }
            (_, handshake::FINISHED)
                if tls13 && self.sides[dir.idx()].phase == Phase::Handshake =>
            {
                let s = self.secrets.as_ref();
                let secret = match dir {
                    Direction::Client => s.and_then(|s| s.client_traffic.clone()),
                    Direction::Server => s.and_then(|s| s.server_traffic.clone()),
                };
                let secret = secret.ok_or_else(|| self.no_keys())?;
                self.set13(dir, secret, Phase::Application)?;
            }
            (Direction::Client, handshake::END_OF_EARLY_DATA) if tls13 => {
                let secret = self
                    .secrets
                    .as_ref()
                    .and_then(|s| s.client_handshake.clone());
                let secret = secret.ok_or_else(|| self.no_keys())?;
                self.set13(dir, secret, Phase::Handshake)?;
            }
            (_, handshake::KEY_UPDATE)
                if tls13 && self.sides[dir.idx()].phase == Phase::Application =>
            {
                let s = self.suite.map(|s| s.hash);
                let next = s.and_then(|h| next_traffic_secret(h, &self.sides[dir.idx()].secret));
                let next = next.ok_or(TlsError::BadSecret("KeyUpdate"))?;
                self.set13(dir, next, Phase::Application)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn no_keys(&self) -> TlsError {
        TlsError::NoKeys(self.client_random().map(|r| hex(&r)).unwrap_or_default())
    }

    /// Installs the keys of the negotiated suite; `Ok(false)` when the log lacks them.
    fn install_keys(&mut self, keys: &KeyLog) -> Result<bool, TlsError> {
        let (Some(ch), Some(sh), Some(s)) = (&self.client_hello, &self.server_hello, self.suite)
        else {
            return Ok(false);
        };
        let Some(secrets) = keys.get(&ch.random) else {
            return Ok(false);
        };
        if s.tls13 {
            let (Some(c), Some(sv), Some(_), Some(_)) = (
                secrets.client_handshake.clone(),
                secrets.server_handshake.clone(),
                secrets.client_traffic.as_ref(),
                secrets.server_traffic.as_ref(),
            ) else {
                return Ok(false);
            };
            let early = secrets.client_early.clone().filter(|_| ch.early_data);
            self.secrets = Some(secrets.clone());
            self.set13(Direction::Server, sv, Phase::Handshake)?;
            match early {
                Some(e) => self.set13(Direction::Client, e, Phase::Early)?,
                None => self.set13(Direction::Client, c, Phase::Handshake)?,
            }
            return Ok(true);
        }
        let Some(master) = secrets.master.as_ref() else {
            return Ok(false);
        };
        // RFC 5246 §6.3 with AEAD suites: no MAC keys; GCM has a 4-byte implicit IV (RFC 5288),
        // ChaCha20-Poly1305 a 12-byte one (RFC 7905).
        let kl = s.aead.key_len();
        let il = if s.aead == AeadAlg::ChaCha20Poly1305 {
            12
        } else {
            4
        };
        let kb = key_block12(s.hash, master, &ch.random, &sh.random, 2 * (kl + il));
        let (ck, rest) = kb.split_at(kl);
        let (sk, rest) = rest.split_at(kl);
        let (civ, siv) = rest.split_at(il);
        let bad = || TlsError::BadSecret(s.name);
        self.sides[0].next_key = Some(RecordKey::new(s.aead, false, ck, civ).ok_or_else(bad)?);
        self.sides[1].next_key = Some(RecordKey::new(s.aead, false, sk, siv).ok_or_else(bad)?);
        self.secrets = Some(secrets.clone());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::handshake::tests::{RFC8448_CH, RFC8448_SH};
    use hex_literal::hex;

    fn hs_record(typ: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len() + 4;
        let mut r = vec![
            22,
            3,
            1,
            (len >> 8) as u8,
            len as u8,
            typ,
            0,
            (body.len() >> 8) as u8,
            body.len() as u8,
        ];
        r.extend_from_slice(body);
        r
    }

    fn rfc8448_keys(random: &[u8; 32]) -> KeyLog {
        let r = hex(random);
        let text = format!(
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET {r} b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21\n\
             SERVER_HANDSHAKE_TRAFFIC_SECRET {r} b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38\n\
             CLIENT_TRAFFIC_SECRET_0 {r} 9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5\n\
             SERVER_TRAFFIC_SECRET_0 {r} a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643\n"
        );
        KeyLog::parse(&text, "k").unwrap().0
    }

    const CLIENT_FINISHED: [u8; 58] = hex!(
        "17 03 03 00 35 75 ec 4d c2 38 cc e6 0b 29 80 44 a7 1e 21 9c 56 cc 77 b0 51 7f e9 b9
         3c 7a 4b fc 44 d8 7f 38 f8 03 38 ac 98 fc 46 de b3 84 bd 1c ae ac ab 68 67 d7 26 c4
         05 46"
    );
    const CLIENT_APP: [u8; 72] = hex!(
        "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa
         66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2
         97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4"
    );

    /// RFC 8448 §3, client side: hello, Finished under the handshake key, then 50 bytes of
    /// application data under the application key, fed byte by byte.
    #[test]
    fn rfc8448_client_flight() {
        let random: [u8; 32] = RFC8448_CH[2..34].try_into().unwrap();
        let keys = rfc8448_keys(&random);
        let mut s = TlsSession::new();
        let mut out = Output::new();
        s.handle(
            Direction::Client,
            &hs_record(1, &RFC8448_CH),
            &keys,
            &mut out,
        )
        .unwrap();
        // The client's next records wait for the ServerHello.
        s.handle(Direction::Client, &CLIENT_FINISHED[..10], &keys, &mut out)
            .unwrap();
        assert_eq!(s.status(), &SessionStatus::Hello);
        s.handle(
            Direction::Server,
            &hs_record(2, &RFC8448_SH),
            &keys,
            &mut out,
        )
        .unwrap();
        assert_eq!(s.status(), &SessionStatus::Decrypting);
        for b in CLIENT_FINISHED[10..].iter().chain(&CLIENT_APP) {
            s.handle(Direction::Client, &[*b], &keys, &mut out).unwrap();
        }
        assert_eq!(
            out,
            vec![(Direction::Client, (0u8..50).collect::<Vec<_>>())]
        );
        assert_eq!(s.info().sni.as_deref(), Some("server"));
        assert_eq!(
            s.info().suite_name().as_deref(),
            Some("TLS_AES_128_GCM_SHA256")
        );
        assert_eq!(s.info().version_name(), "TLS 1.3");
        assert_eq!(s.counters().records, 1);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn no_keys_waits_then_retries() {
        let random: [u8; 32] = RFC8448_CH[2..34].try_into().unwrap();
        let empty = KeyLog::new();
        let mut s = TlsSession::new();
        let mut out = Output::new();
        s.handle(
            Direction::Client,
            &hs_record(1, &RFC8448_CH),
            &empty,
            &mut out,
        )
        .unwrap();
        s.handle(
            Direction::Server,
            &hs_record(2, &RFC8448_SH),
            &empty,
            &mut out,
        )
        .unwrap();
        assert_eq!(s.status(), &SessionStatus::AwaitingKeys);
        s.handle(
            Direction::Client,
            &[&CLIENT_FINISHED[..], &CLIENT_APP].concat(),
            &empty,
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
        assert!(s.held_bytes() >= 130);
        s.retry(&rfc8448_keys(&random), &mut out).unwrap();
        assert_eq!(
            out,
            vec![(Direction::Client, (0u8..50).collect::<Vec<_>>())]
        );
    }

    #[test]
    fn wrong_key_counts_auth_failures_and_cut_record_reported() {
        let random: [u8; 32] = RFC8448_CH[2..34].try_into().unwrap();
        let r = hex(&random);
        let wrong = "11".repeat(32);
        let text = format!(
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET {r} {wrong}\nSERVER_HANDSHAKE_TRAFFIC_SECRET {r} {wrong}\n\
             CLIENT_TRAFFIC_SECRET_0 {r} {wrong}\nSERVER_TRAFFIC_SECRET_0 {r} {wrong}\n"
        );
        let keys = KeyLog::parse(&text, "k").unwrap().0;
        let mut s = TlsSession::new();
        let mut out = Output::new();
        s.handle(
            Direction::Client,
            &hs_record(1, &RFC8448_CH),
            &keys,
            &mut out,
        )
        .unwrap();
        s.handle(
            Direction::Server,
            &hs_record(2, &RFC8448_SH),
            &keys,
            &mut out,
        )
        .unwrap();
        s.handle(
            Direction::Client,
            &[&CLIENT_FINISHED[..], &CLIENT_APP[..40]].concat(),
            &keys,
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
        assert_eq!(s.counters().auth_failures, 1);
        assert_eq!(
            s.finish(),
            Some(TlsError::Truncated {
                dir: Direction::Client,
                bytes: 40
            })
        );
    }

    #[test]
    fn client_only_capture_is_bounded() {
        let mut s = TlsSession::new();
        let mut out = Output::new();
        let keys = KeyLog::new();
        s.handle(
            Direction::Client,
            &hs_record(1, &RFC8448_CH),
            &keys,
            &mut out,
        )
        .unwrap();
        let rec = [&[23u8, 3, 3, 0x40, 0][..], &[0u8; 0x4000]].concat();
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = s.handle(Direction::Client, &rec, &keys, &mut out) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(TlsError::NoServerHello(_))), "{err:?}");
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn plaintext_passes_through_and_bad_suite_is_named() {
        let mut s = TlsSession::new();
        let mut out = Output::new();
        let keys = KeyLog::new();
        s.handle(
            Direction::Client,
            b"GET / HTTP/1.1\r\n\r\n",
            &keys,
            &mut out,
        )
        .unwrap();
        s.handle(
            Direction::Server,
            b"HTTP/1.1 200 OK\r\n\r\n",
            &keys,
            &mut out,
        )
        .unwrap();
        assert_eq!(s.status(), &SessionStatus::Plaintext);
        assert_eq!(out.len(), 2);

        let mut s = TlsSession::new();
        let mut sh = RFC8448_SH;
        // TLS_AES_128_CCM_SHA256.
        sh[35] = 0x13;
        sh[36] = 0x04;
        s.handle(
            Direction::Client,
            &hs_record(1, &RFC8448_CH),
            &keys,
            &mut out,
        )
        .unwrap();
        let e = s
            .handle(Direction::Server, &hs_record(2, &sh), &keys, &mut out)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported cipher suite TLS_AES_128_CCM_SHA256"
        );
        assert!(matches!(s.status(), SessionStatus::Failed(_)));
        // Nothing more comes out, and nothing panics.
        s.handle(Direction::Client, &CLIENT_APP, &keys, &mut out)
            .unwrap();
    }
}
