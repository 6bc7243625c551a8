//! TLS in stream mode: `--tls-keylog` turns captured TLS sessions into their plaintext
//! conversation (through the library's sans-IO [`tcpclone::tls`] decryptor), and `--target-tls`
//! replays over TLS (rustls) to the target.
//!
//! [`TlsFilter`] is pure: reassembly events in, plaintext events out, counters beside. A session
//! is opened for replay only once its keys are found (its Open event is held until then), so a
//! session without keys never connects to the target. [`connect`] is the tokio glue for the
//! target side.

use super::reassembly::{SessionId, Side, StreamEvent};
use crate::report::TlsCounts;
use anyhow::Context as _;
use bytes::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tcpclone::tls::session::Output;
use tcpclone::tls::{Direction, KeyLog, SessionStatus, TlsError, TlsSession};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The TLS flags of stream mode.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsOptions {
    /// Decrypt captured TLS sessions with this NSS key log (SSLKEYLOGFILE) and replay their
    /// plaintext; sessions whose secrets are not in it are counted and skipped.
    #[arg(long, value_name = "FILE")]
    pub tls_keylog: Option<PathBuf>,
    /// Replay over TLS to the target (rustls), for decrypted and for plaintext captures.
    #[arg(long)]
    pub target_tls: bool,
    /// Server name sent to the target (default: the captured SNI, else the target address).
    #[arg(long, value_name = "NAME")]
    pub target_sni: Option<String>,
    /// PEM file of the CA(s) that the target's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub target_ca: Option<PathBuf>,
    /// Do not verify the target's certificate (test targets with self-signed certificates).
    #[arg(long)]
    pub target_insecure: bool,
    /// Client certificate chain (PEM) for mutual TLS with the target.
    #[arg(long, value_name = "FILE")]
    pub target_cert: Option<PathBuf>,
    /// Private key (PEM) of --target-cert.
    #[arg(long, value_name = "FILE")]
    pub target_key: Option<PathBuf>,
    /// ALPN protocols offered to the target, comma-separated (default: the captured ones).
    #[arg(long, value_name = "PROTO[,PROTO]")]
    pub target_alpn: Option<String>,
    /// Live: seconds a session's records wait for its secrets to appear in the key log.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub tls_key_wait: f64,
    /// The files behind these flags, opened and read before a privilege drop (live mode drops
    /// to --user before it captures; root-only files stay usable through these).
    #[arg(skip)]
    pub preloaded: Option<Arc<Preloaded>>,
}

/// What [`TlsOptions::preload`] read while the process could still read every file.
#[derive(Debug)]
pub struct Preloaded {
    /// The key log, kept open: live mode follows it through this descriptor.
    keylog: Option<std::fs::File>,
    /// `--target-ca`, `--target-cert` and `--target-key` contents.
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            tls_keylog: None,
            target_tls: false,
            target_sni: None,
            target_ca: None,
            target_insecure: false,
            target_cert: None,
            target_key: None,
            target_alpn: None,
            tls_key_wait: 5.0,
            preloaded: None,
        }
    }
}

impl TlsOptions {
    /// Opens the key log and reads the CA, certificate and key files now, before the privilege
    /// drop; later steps use what was read here.
    pub fn preload(&mut self) -> anyhow::Result<()> {
        let read = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("{flag} {}", p.display())))
                .transpose()
        };
        let keylog = self
            .tls_keylog
            .as_ref()
            .map(|p| {
                std::fs::File::open(p).with_context(|| format!("--tls-keylog {}", p.display()))
            })
            .transpose()?;
        self.preloaded = Some(Arc::new(Preloaded {
            keylog,
            ca: read("--target-ca", &self.target_ca)?,
            cert: read("--target-cert", &self.target_cert)?,
            key: read("--target-key", &self.target_key)?,
        }));
        Ok(())
    }

    /// The key log opened by [`TlsOptions::preload`], if it ran.
    pub fn keylog_file(&self) -> Option<&std::fs::File> {
        self.preloaded.as_ref().and_then(|p| p.keylog.as_ref())
    }

    /// Whether any TLS flag was given (for "only with --stream").
    pub fn any(&self) -> bool {
        self.tls_keylog.is_some()
            || self.target_tls
            || self.target_sni.is_some()
            || self.target_ca.is_some()
            || self.target_insecure
            || self.target_cert.is_some()
            || self.target_key.is_some()
            || self.target_alpn.is_some()
            || self.tls_key_wait != 5.0
    }
}

/// Reads the key log at `path`. Refuses a file that group or others may read unless `force`
/// (it holds every session's secrets); bad lines are reported (file:line) and skipped.
pub fn load_keylog(path: &Path, force: bool) -> anyhow::Result<KeyLog> {
    load_keylog_at(path, force).map(|(k, _, _)| k)
}

/// [`load_keylog`], also returning the bytes and lines read up to the last whole line (where
/// live mode's [`KeyLogFollower`] goes on).
pub fn load_keylog_at(path: &Path, force: bool) -> anyhow::Result<(KeyLog, u64, usize)> {
    load_keylog_from(path, None, force)
}

/// [`load_keylog_at`] through `file` when given (opened before a privilege drop): its mode is
/// checked on the descriptor and its bytes read through it.
pub fn load_keylog_from(
    path: &Path,
    file: Option<&std::fs::File>,
    force: bool,
) -> anyhow::Result<(KeyLog, u64, usize)> {
    use std::os::unix::fs::MetadataExt as _;
    let name = path.display().to_string();
    let meta = match file {
        Some(f) => f.metadata(),
        None => std::fs::metadata(path),
    }
    .with_context(|| format!("--tls-keylog {name}"))?;
    if !force && tcpclone::proto::secure::check_secret_mode(meta.mode()).is_err() {
        anyhow::bail!(
            "--tls-keylog {name}: mode {:04o} lets others read the session secrets; chmod 600 it, or pass --force",
            meta.mode() & 0o7777
        );
    }
    let mut bytes = match file {
        Some(f) => read_all_at(f, meta.len()),
        None => std::fs::read(path),
    }
    .with_context(|| format!("--tls-keylog {name}"))?;
    // A line being written is left to the follower.
    bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1));
    let text = String::from_utf8_lossy(&bytes);
    let (log, bad) =
        KeyLog::parse(&text, &name).map_err(|e| anyhow::anyhow!("--tls-keylog {e}"))?;
    for e in bad.iter().take(10) {
        super::log_warn(&format!("--tls-keylog {e} (line skipped)"));
    }
    if bad.len() > 10 {
        super::log_warn(&format!(
            "--tls-keylog {name}: {} more bad lines skipped",
            bad.len() - 10
        ));
    }
    Ok((log, bytes.len() as u64, text.lines().count()))
}

/// The first `len` bytes of `f` (positioned reads: the descriptor's offset is not used).
fn read_all_at(f: &std::fs::File, len: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    let mut at = 0;
    while at < buf.len() {
        match f.read_at(&mut buf[at..], at as u64)? {
            0 => break,
            n => at += n,
        }
    }
    buf.truncate(at);
    Ok(buf)
}

/// What the capture's handshake said about a decrypted session (the target TLS defaults).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The client's SNI.
    pub sni: Option<String>,
    /// The client's offered ALPN protocols.
    pub alpn: Vec<Vec<u8>>,
}

struct Pending {
    open: StreamEvent,
    tls: TlsSession,
    /// Set once the Open event went out (keys found, or not TLS).
    opened: bool,
    /// A client chunk that began a new request produced no plaintext (handshake records):
    /// the next client plaintext begins it.
    carry_new: bool,
    /// Capture time when the session began to wait for its secrets.
    waiting_since: Option<u64>,
    /// Live: Fin and Close events of a session waiting for its secrets.
    held: Vec<StreamEvent>,
}

/// The decryption stage between reassembly and replay. Pure.
pub struct TlsFilter {
    keys: KeyLog,
    /// Live: sessions wait for their secrets (the key log grows); offline: no secrets, no wait.
    live: bool,
    key_wait_ns: u64,
    max_held: usize,
    sessions: HashMap<SessionId, Pending>,
    captured: HashMap<SessionId, Captured>,
    /// Counters for the report.
    pub counts: TlsCounts,
    messages: usize,
}

/// Error lines printed per run before only counting.
const MAX_MESSAGES: usize = 20;

fn side_of(d: Direction) -> Side {
    match d {
        Direction::Client => Side::Client,
        Direction::Server => Side::Server,
    }
}

impl TlsFilter {
    /// A filter decrypting with `keys` (offline: what is not in it is counted at once).
    pub fn new(keys: KeyLog) -> Self {
        Self::with_wait(keys, false, 0, 0)
    }

    /// Live: sessions wait for their secrets up to `key_wait_ns` of capture time, holding at
    /// most `max_held` bytes in all (the longest-waiting session goes first).
    pub fn with_wait(keys: KeyLog, live: bool, key_wait_ns: u64, max_held: usize) -> Self {
        TlsFilter {
            keys,
            live,
            key_wait_ns,
            max_held,
            sessions: HashMap::new(),
            captured: HashMap::new(),
            counts: TlsCounts::default(),
            messages: 0,
        }
    }

    /// The key log, to add the lines that live mode reads as the file grows.
    pub fn keys_mut(&mut self) -> &mut KeyLog {
        &mut self.keys
    }

    /// The captured SNI/ALPN of a session whose Open event was just emitted.
    pub fn take_captured(&mut self, id: SessionId) -> Option<Captured> {
        self.captured.remove(&id)
    }

    fn say(&mut self, open: &StreamEvent, what: &str) {
        self.messages += 1;
        if self.messages <= MAX_MESSAGES {
            if let StreamEvent::Open { key, .. } = open {
                super::log_warn(&format!("TLS session {} -> {}: {what}", key.src, key.dst));
            }
        } else if self.messages == MAX_MESSAGES + 1 {
            super::log_warn("more TLS session errors are only counted (see the report)");
        }
    }

    fn count_failure(&mut self, e: &TlsError) {
        let c = &mut self.counts;
        match e {
            TlsError::NoKeys(_) => c.without_keys += 1,
            TlsError::UnsupportedSuite(name) => {
                *c.unsupported.entry(name.clone()).or_default() += 1
            }
            TlsError::UnsupportedVersion(v) => {
                *c.unsupported
                    .entry(format!("version {v:#06x}"))
                    .or_default() += 1
            }
            TlsError::Truncated { .. } => c.cut_records += 1,
            _ => c.failed += 1,
        }
    }

    /// Handles one reassembly event; appends what replay should see to `out`.
    pub fn handle(&mut self, ev: StreamEvent, out: &mut Vec<StreamEvent>) {
        match ev {
            StreamEvent::Open { id, .. } => {
                self.sessions.insert(
                    id,
                    Pending {
                        open: ev,
                        tls: TlsSession::new(),
                        opened: false,
                        carry_new: false,
                        waiting_since: None,
                        held: Vec::new(),
                    },
                );
            }
            StreamEvent::Data {
                id,
                side,
                ts,
                bytes,
                new_message,
                server_seen,
            } => {
                let Some(p) = self.sessions.get_mut(&id) else {
                    return;
                };
                let dir = match side {
                    Side::Client => Direction::Client,
                    Side::Server => Direction::Server,
                };
                let mut plain = Output::new();
                let r = p.tls.handle(dir, &bytes, &self.keys, &mut plain);
                if side == Side::Client && new_message {
                    p.carry_new = true;
                }
                if let Err(e) = r {
                    self.fail_session(id, ts, &e, out);
                    return;
                }
                self.emit(id, ts, server_seen, plain, out);
                // Offline the key log is whole: a session without secrets is over now (its
                // bytes are not held to its end).
                let waiting = self
                    .sessions
                    .get(&id)
                    .is_some_and(|p| *p.tls.status() == SessionStatus::AwaitingKeys);
                if !self.live && waiting {
                    self.close(id, None, out);
                }
            }
            StreamEvent::Fin { id, .. } | StreamEvent::Close { id, .. } => {
                let Some(p) = self.sessions.get_mut(&id) else {
                    return;
                };
                if p.opened {
                    if matches!(ev, StreamEvent::Close { .. }) {
                        self.close(id, Some(ev), out);
                    } else {
                        out.push(ev);
                    }
                    return;
                }
                // Live: a session waiting for its secrets keeps its end for when they come.
                if self.live && *p.tls.status() == SessionStatus::AwaitingKeys {
                    p.held.push(ev);
                    return;
                }
                if matches!(ev, StreamEvent::Close { .. }) {
                    self.close(id, None, out);
                }
            }
        }
    }

    /// Emits a session's Open (the first time it has keys or is known not to be TLS) and its
    /// plaintext.
    fn emit(
        &mut self,
        id: SessionId,
        ts: u64,
        server_seen: bool,
        plain: Output,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(p) = self.sessions.get_mut(&id) else {
            return;
        };
        let status = p.tls.status().clone();
        if status == SessionStatus::AwaitingKeys && p.waiting_since.is_none() {
            p.waiting_since = Some(ts);
        }
        if !p.opened && matches!(status, SessionStatus::Decrypting | SessionStatus::Plaintext) {
            p.opened = true;
            if status == SessionStatus::Decrypting {
                self.counts.decrypted += 1;
                let info = p.tls.info();
                let name = format!(
                    "{} {}",
                    info.version_name(),
                    info.suite_name().unwrap_or_default()
                );
                *self.counts.suites.entry(name).or_default() += 1;
                if let Some(a) = &info.alpn {
                    *self
                        .counts
                        .alpn
                        .entry(String::from_utf8_lossy(a).into_owned())
                        .or_default() += 1;
                }
                self.counts.resumed += u64::from(info.resumed);
                let sni = info.sni.clone().unwrap_or_else(|| "(none)".into());
                let n = self.counts.sni.len();
                let key = if n < crate::report::MAX_SNI || self.counts.sni.contains_key(&sni) {
                    sni
                } else {
                    "(other)".into()
                };
                *self.counts.sni.entry(key).or_default() += 1;
                self.captured.insert(
                    id,
                    Captured {
                        sni: info.sni.clone(),
                        alpn: info.alpn_offered.clone(),
                    },
                );
            } else {
                self.counts.plaintext += 1;
            }
            out.push(p.open.clone());
        }
        for (d, data) in plain {
            let side = side_of(d);
            let new_message = side == Side::Client && std::mem::take(&mut p.carry_new);
            out.push(StreamEvent::Data {
                id,
                side,
                ts,
                bytes: Bytes::from(data),
                new_message,
                server_seen,
            });
        }
    }

    /// A session that cannot be decrypted: counted, named, and closed if it was replaying.
    fn fail_session(&mut self, id: SessionId, ts: u64, e: &TlsError, out: &mut Vec<StreamEvent>) {
        let Some(p) = self.sessions.remove(&id) else {
            return;
        };
        self.count_failure(e);
        self.say(&p.open, &e.to_string());
        if p.opened {
            out.push(StreamEvent::Close {
                id,
                ts,
                reason: super::reassembly::EndReason::Hole,
                partial: true,
            });
        }
    }

    /// The session is over: counters, and its Close when it was replaying.
    fn close(&mut self, id: SessionId, ev: Option<StreamEvent>, out: &mut Vec<StreamEvent>) {
        let Some(mut p) = self.sessions.remove(&id) else {
            return;
        };
        let status = p.tls.status().clone();
        let c = p.tls.counters();
        self.counts.auth_failures += c.auth_failures;
        self.counts.early_rejected += c.early_rejected;
        if let Some(e) = p.tls.finish() {
            self.count_failure(&e);
            self.say(&p.open, &e.to_string());
        }
        match status {
            SessionStatus::AwaitingKeys => {
                self.counts.without_keys += 1;
                let random = p
                    .tls
                    .client_random()
                    .map(|r| r.iter().map(|b| format!("{b:02x}")).collect::<String>());
                let msg = format!(
                    "no secrets in the key log for client random {}",
                    random.unwrap_or_default()
                );
                self.say(&p.open, &msg);
            }
            SessionStatus::Hello => self.counts.incomplete += 1,
            _ => {}
        }
        if let (true, Some(ev)) = (p.opened, ev) {
            out.push(ev);
        }
    }

    /// Live: retries the sessions waiting for secrets (after new key log lines), gives up on
    /// those that waited past the bound or when the held bytes exceed it, and (with `all`, at
    /// the end of a run) on every one still waiting. `ts` is the capture time now.
    pub fn poll(&mut self, ts: u64, all: bool, out: &mut Vec<StreamEvent>) {
        let mut waiting: Vec<(u64, SessionId)> = self
            .sessions
            .iter()
            .filter(|(_, p)| !p.opened && *p.tls.status() == SessionStatus::AwaitingKeys)
            .map(|(id, p)| (p.waiting_since.unwrap_or(ts), *id))
            .collect();
        waiting.sort_unstable();
        let mut still = Vec::new();
        for (since, id) in waiting {
            let Some(p) = self.sessions.get_mut(&id) else {
                continue;
            };
            let mut plain = Output::new();
            if let Err(e) = p.tls.retry(&self.keys, &mut plain) {
                self.fail_session(id, ts, &e, out);
                continue;
            }
            if *p.tls.status() == SessionStatus::AwaitingKeys {
                if all || ts.saturating_sub(since) > self.key_wait_ns {
                    self.close(id, None, out);
                } else {
                    still.push((id, p.tls.held_bytes()));
                }
                continue;
            }
            let held = std::mem::take(&mut p.held);
            self.emit(id, ts, true, plain, out);
            for ev in held {
                match ev {
                    StreamEvent::Close { .. } => self.close(id, Some(ev), out),
                    _ => out.push(ev),
                }
            }
        }
        // The memory bound: the longest-waiting sessions give up first.
        let mut total: usize = still.iter().map(|(_, n)| n).sum();
        for (id, n) in still {
            if total <= self.max_held {
                break;
            }
            total -= n;
            self.close(id, None, out);
        }
    }

    /// Sessions waiting for their secrets.
    pub fn waiting(&self) -> usize {
        self.sessions
            .values()
            .filter(|p| !p.opened && *p.tls.status() == SessionStatus::AwaitingKeys)
            .count()
    }
}

/// Live: reads the lines appended to the key log since the last call.
pub struct KeyLogFollower {
    /// The descriptor opened before a privilege drop; without it the path is opened each time.
    file: Option<std::fs::File>,
    path: PathBuf,
    name: String,
    offset: u64,
    partial: Vec<u8>,
    line: usize,
}

impl KeyLogFollower {
    /// Follows `path` from `offset` (the bytes [`load_keylog_at`] read) on, at line `line`.
    pub fn new(path: &Path, offset: u64, line: usize) -> Self {
        Self::with_file(path, None, offset, line)
    }

    /// [`KeyLogFollower::new`] reading through `file` (a duplicate of the preloaded descriptor).
    pub fn with_file(path: &Path, file: Option<std::fs::File>, offset: u64, line: usize) -> Self {
        KeyLogFollower {
            file,
            path: path.to_path_buf(),
            name: path.display().to_string(),
            offset,
            partial: Vec::new(),
            line,
        }
    }

    /// Adds the whole lines appended since the last call to `keys`; returns how many were read.
    /// A file that shrank (rotated, truncated) is read again from its start.
    pub fn read_new(&mut self, keys: &mut KeyLog) -> usize {
        use std::os::unix::fs::FileExt as _;
        let opened;
        let f = match &self.file {
            Some(f) => f,
            None => match std::fs::File::open(&self.path) {
                Ok(f) => {
                    opened = f;
                    &opened
                }
                Err(_) => return 0,
            },
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0;
            self.line = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return 0;
        }
        let mut buf = vec![0u8; usize::try_from(len - self.offset).unwrap_or(0)];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], self.offset + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let mut n = 0;
        for l in String::from_utf8_lossy(&whole).lines() {
            self.line += 1;
            n += 1;
            if let Err(e) = keys.add_line(l, &self.name, self.line) {
                super::log_warn(&format!("--tls-keylog {e} (line skipped)"));
            }
        }
        n
    }
}

/// Accepts any certificate (`--target-insecure`), and any handshake signature: a signature made
/// with a key whose certificate is not checked proves nothing, and verifying it (RSA) cost 6 %
/// of a 1,000-request replay's instructions (callgrind, docs/benchmarks.md).
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls's ring provider, cheapest algorithms first. Deprecated in rustls for lacking
/// post-quantum key exchange; ring is used because aws-lc-rs's C build is heavy, and a
/// replay's key exchange protects nothing.
///
/// ring's own order offers P-384 first: its key share and ECDH cost about 10 million
/// instructions per handshake, 60 % of a 1,000-request TLS replay over 10 connections
/// (callgrind, docs/benchmarks.md); X25519 costs a few percent of that. AES-128-GCM before
/// AES-256-GCM (10 rounds, not 14; SHA-256 key schedule). The target still picks: a server
/// that prefers its own order gets what it asks for.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
    let mut p = default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// The `--target-tls` client settings, with one rustls config per ALPN list.
pub struct TargetTls {
    base: ClientConfig,
    alpn: Option<Vec<Vec<u8>>>,
    sni: Option<String>,
    configs: Mutex<HashMap<Vec<Vec<u8>>, Arc<ClientConfig>>>,
}

impl TargetTls {
    /// Builds the client settings from the flags (reads the CA, certificate and key files).
    pub fn new(o: &TlsOptions) -> anyhow::Result<TargetTls> {
        let prov = provider();
        let builder = ClientConfig::builder_with_provider(prov.clone())
            .with_safe_default_protocol_versions()
            .context("--target-tls")?;
        let builder = match (&o.target_ca, o.target_insecure) {
            (Some(_), true) => anyhow::bail!("--target-ca and --target-insecure exclude each other"),
            (None, false) => anyhow::bail!(
                "--target-tls needs --target-ca FILE (the CA of the target's certificate) or --target-insecure"
            ),
            (Some(ca), false) => {
                let mut roots = RootCertStore::empty();
                let certs: Vec<_> = match o.preloaded.as_ref().and_then(|p| p.ca.as_deref()) {
                    Some(bytes) => CertificateDer::pem_slice_iter(bytes).collect(),
                    None => CertificateDer::pem_file_iter(ca)
                        .with_context(|| format!("--target-ca {}", ca.display()))?
                        .collect(),
                };
                for c in certs {
                    let c = c.with_context(|| format!("--target-ca {}", ca.display()))?;
                    roots
                        .add(c)
                        .with_context(|| format!("--target-ca {}", ca.display()))?;
                }
                anyhow::ensure!(!roots.is_empty(), "--target-ca {}: no certificate in it", ca.display());
                builder.with_root_certificates(roots)
            }
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(prov))),
        };
        let base = match (&o.target_cert, &o.target_key) {
            (Some(cert), Some(key)) => {
                let pre = o.preloaded.as_deref();
                let chain = match pre.and_then(|p| p.cert.as_deref()) {
                    Some(bytes) => {
                        CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>()
                    }
                    None => CertificateDer::pem_file_iter(cert)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>()),
                }
                .with_context(|| format!("--target-cert {}", cert.display()))?;
                let key = match pre.and_then(|p| p.key.as_deref()) {
                    Some(bytes) => PrivateKeyDer::from_pem_slice(bytes),
                    None => PrivateKeyDer::from_pem_file(key),
                }
                .with_context(|| format!("--target-key {}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("--target-cert/--target-key")?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => anyhow::bail!("--target-cert and --target-key go together"),
        };
        let alpn = o.target_alpn.as_ref().map(|a| {
            a.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.as_bytes().to_vec())
                .collect()
        });
        Ok(TargetTls {
            base,
            alpn,
            sni: o.target_sni.clone(),
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The config and server name for a session (captured SNI/ALPN as defaults).
    pub fn for_session(
        &self,
        captured: Option<&Captured>,
        target: SocketAddr,
    ) -> (Arc<ClientConfig>, ServerName<'static>) {
        let alpn = self
            .alpn
            .clone()
            .or_else(|| captured.map(|c| c.alpn.clone()))
            .unwrap_or_default();
        let cfg = {
            let mut m = self.configs.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(alpn.clone())
                .or_insert_with(|| {
                    let mut c = self.base.clone();
                    c.alpn_protocols = alpn;
                    Arc::new(c)
                })
                .clone()
        };
        let name = self
            .sni
            .clone()
            .or_else(|| captured.and_then(|c| c.sni.clone()))
            .and_then(|n| ServerName::try_from(n).ok())
            .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()));
        (cfg, name)
    }
}

/// The connection a replayed session uses: the target's TCP socket, or (with --target-tls) the
/// same socket with a rustls client over it. The replay loop measures with readiness
/// (`try_read`/`try_write`), which [`TlsConn`] offers on top of the socket's own.
pub enum Conn {
    /// Plain TCP to the target.
    Tcp(TcpStream),
    /// TLS to the target.
    Tls(Box<TlsConn>),
}

impl Conn {
    /// Non-blocking read.
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.try_read(buf),
            Conn::Tls(s) => s.try_read(buf),
        }
    }
    /// Non-blocking write.
    pub fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.try_write(buf),
            Conn::Tls(s) => s.try_write(buf),
        }
    }
    /// Waits until readable.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.readable().await,
            Conn::Tls(s) => s.readable().await,
        }
    }
    /// Waits until writable.
    pub async fn writable(&self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.writable().await,
            Conn::Tls(s) => s.writable().await,
        }
    }
    /// Half-closes the sending side (TLS: close_notify, then FIN).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
        }
    }
}

/// A rustls client driven straight over the target's socket with non-blocking calls.
///
/// Before, a task pumped rustls between the socket and one end of a local socket pair, so
/// every request and response crossed the kernel three times and woke two tasks (see
/// docs/benchmarks.md for what that cost). Here `try_write` encrypts into rustls and writes
/// the records to the socket at once; ciphertext the socket did not take is written by the
/// next call of any method (every wait of the replay loop goes through `readable` or
/// `writable`, and both flush first), so nothing stays behind unsent.
pub struct TlsConn {
    tcp: TcpStream,
    /// Locked only inside non-async calls (never across an await); the replay loop's
    /// `&self` methods need it, and it is never contended (one task per session).
    tls: Mutex<rustls::ClientConnection>,
}

/// `io::Read`/`io::Write` over a tokio socket's non-blocking calls, for rustls's
/// `read_tls`/`write_tls`.
struct TrySocket<'a>(&'a TcpStream);

impl std::io::Read for TrySocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl std::io::Write for TrySocket<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

impl TlsConn {
    fn lock(&self) -> std::sync::MutexGuard<'_, rustls::ClientConnection> {
        self.tls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the pending records to the socket as far as it takes them; true when none is
    /// left.
    fn flush(c: &mut rustls::ClientConnection, tcp: &TcpStream) -> std::io::Result<bool> {
        while c.wants_write() {
            match c.write_tls(&mut TrySocket(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Non-blocking read of plaintext: `WouldBlock` until a whole record arrived.
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut c = self.lock();
        loop {
            let st = c.process_new_packets().map_err(tls_error)?;
            // Alerts, KeyUpdate answers: written as they come (a full socket defers them).
            let _ = Self::flush(&mut c, &self.tcp);
            if st.plaintext_bytes_to_read() > 0 {
                return std::io::Read::read(&mut c.reader(), buf);
            }
            if st.peer_has_closed() {
                return Ok(0);
            }
            if c.read_tls(&mut TrySocket(&self.tcp))? == 0 {
                // The socket ended without close_notify: an end all the same for replay.
                return Ok(0);
            }
        }
    }

    /// Non-blocking write: takes plaintext only when the socket took the previous records
    /// (the target's backpressure reaches the replay loop).
    pub fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        let mut c = self.lock();
        if !Self::flush(&mut c, &self.tcp)? {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = std::io::Write::write(&mut c.writer(), buf)?;
        // Records the socket does not take now go out with the next call, where its error
        // (if any) shows too.
        let _ = Self::flush(&mut c, &self.tcp);
        Ok(n)
    }

    /// Waits until `try_read` has something to say (plaintext, an end or an error), writing
    /// pending records meanwhile.
    pub async fn readable(&self) -> std::io::Result<()> {
        loop {
            let flushed = {
                let mut c = self.lock();
                match c.process_new_packets() {
                    // try_read reports it.
                    Err(_) => return Ok(()),
                    Ok(st) if st.plaintext_bytes_to_read() > 0 || st.peer_has_closed() => {
                        return Ok(())
                    }
                    Ok(_) => {}
                }
                Self::flush(&mut c, &self.tcp)?
            };
            if flushed {
                return self.tcp.readable().await;
            }
            tokio::select! {
                r = self.tcp.readable() => return r,
                r = self.tcp.writable() => r?,
            }
        }
    }

    /// Waits until `try_write` can take plaintext (the pending records are written).
    pub async fn writable(&self) -> std::io::Result<()> {
        loop {
            let flushed = {
                let mut c = self.lock();
                Self::flush(&mut c, &self.tcp)?
            };
            if flushed {
                return Ok(());
            }
            self.tcp.writable().await?;
        }
    }

    /// Sends close_notify and what is pending (within 5 s: a target that reads nothing does
    /// not hold the session), then FIN.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.lock().send_close_notify();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.writable()).await;
        self.tcp.shutdown().await
    }
}

/// Makes the TLS handshake with the target over `tcp`; the error is rustls's reason (or the
/// timeout).
pub async fn connect(
    tcp: TcpStream,
    cfg: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: std::time::Duration,
) -> Result<Conn, String> {
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            // rustls's errors come wrapped in io::Error; show the inner reason.
            let reason = e
                .get_ref()
                .map_or_else(|| e.to_string(), |inner| inner.to_string());
            return Err(reason);
        }
        Err(_) => return Err("handshake timed out".into()),
    };
    let (tcp, tls) = tls.into_inner();
    Ok(Conn::Tls(Box::new(TlsConn {
        tcp,
        tls: Mutex::new(tls),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpclone::flow::FlowKey;

    fn open(id: SessionId) -> StreamEvent {
        StreamEvent::Open {
            id,
            key: FlowKey {
                src: "198.18.0.1:40000".parse().unwrap(),
                dst: "198.18.1.1:443".parse().unwrap(),
            },
            ts: 1,
            syn_seen: true,
        }
    }

    fn data(id: SessionId, side: Side, b: &[u8], new_message: bool) -> StreamEvent {
        StreamEvent::Data {
            id,
            side,
            ts: 2,
            bytes: Bytes::copy_from_slice(b),
            new_message,
            server_seen: true,
        }
    }

    #[test]
    fn plaintext_sessions_pass_and_tls_without_keys_never_opens() {
        let mut f = TlsFilter::new(KeyLog::new());
        let mut out = Vec::new();
        f.handle(open(1), &mut out);
        assert!(out.is_empty(), "Open is held until the session is known");
        f.handle(
            data(1, Side::Client, b"GET / HTTP/1.1\r\n\r\n", true),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], StreamEvent::Open { id: 1, .. }));
        assert_eq!(f.counts.plaintext, 1);

        // A TLS ClientHello record (cut: the hello is incomplete) then a close.
        out.clear();
        f.handle(open(2), &mut out);
        f.handle(
            data(2, Side::Client, &[22, 3, 1, 0, 10, 1, 0], true),
            &mut out,
        );
        f.handle(
            StreamEvent::Close {
                id: 2,
                ts: 3,
                reason: super::super::reassembly::EndReason::Fin,
                partial: false,
            },
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!((f.counts.incomplete, f.counts.cut_records), (1, 1));
    }

    /// A TLS 1.3 ClientHello and ServerHello (records), enough to wait for secrets.
    fn hellos(random: u8) -> (Vec<u8>, Vec<u8>) {
        let rec = |typ: u8, body: Vec<u8>| {
            let mut m = vec![typ, 0, 0, body.len() as u8];
            m.extend(body);
            let mut r = vec![22, 3, 1, 0, m.len() as u8];
            r.extend(m);
            r
        };
        let mut ch = vec![3, 3];
        ch.extend([random; 32]);
        ch.extend([0, 0, 2, 0x13, 0x01, 1, 0, 0, 7, 0, 43, 0, 3, 2, 3, 4]);
        let mut sh = vec![3, 3];
        sh.extend([9; 32]);
        sh.extend([0, 0x13, 0x01, 0, 0, 6, 0, 43, 0, 2, 3, 4]);
        (rec(1, ch), rec(2, sh))
    }

    #[test]
    fn live_sessions_wait_for_secrets_within_time_and_memory() {
        let mut f = TlsFilter::with_wait(KeyLog::new(), true, 1_000, 100);
        let mut out = Vec::new();
        for id in [1, 2] {
            let (ch, sh) = hellos(id as u8);
            f.handle(open(id), &mut out);
            f.handle(data(id, Side::Client, &ch, true), &mut out);
            f.handle(data(id, Side::Server, &sh, false), &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(f.waiting(), 2);
        // Session 2's end is held while it waits.
        f.handle(
            StreamEvent::Close {
                id: 2,
                ts: 3,
                reason: super::super::reassembly::EndReason::Fin,
                partial: false,
            },
            &mut out,
        );
        assert_eq!((f.waiting(), f.counts.without_keys), (2, 0));
        // Within the time bound: session 1 is over the memory bound only with its records.
        f.handle(data(1, Side::Client, &[23, 3, 3, 0, 200], false), &mut out);
        f.handle(data(1, Side::Client, &[0; 200], false), &mut out);
        f.poll(500, false, &mut out);
        assert_eq!((f.waiting(), f.counts.without_keys), (1, 1));
        // Past the time bound.
        f.poll(5_000, false, &mut out);
        assert_eq!((f.waiting(), f.counts.without_keys), (0, 2));
        assert!(out.is_empty(), "never opened: {out:?}");
    }

    #[test]
    fn follower_reads_whole_appended_lines() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "").unwrap();
        let mut fl = KeyLogFollower::new(&p, 0, 0);
        let mut keys = KeyLog::new();
        let line = format!("CLIENT_RANDOM {} {}\n", "01".repeat(32), "ab".repeat(48));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&line.as_bytes()[..40]).unwrap();
        assert_eq!(fl.read_new(&mut keys), 0);
        f.write_all(&line.as_bytes()[40..]).unwrap();
        f.write_all(b"garbage\n").unwrap();
        assert_eq!(fl.read_new(&mut keys), 2);
        assert_eq!(keys.len(), 1);
        // Truncated (rotated): read again from the start.
        std::fs::write(&p, &line[..]).unwrap();
        assert_eq!(fl.read_new(&mut keys), 1);
    }

    #[test]
    fn keylog_mode_and_bad_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        let line = format!("CLIENT_RANDOM {} {}\n", "01".repeat(32), "ab".repeat(48));
        std::fs::write(&p, &line).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_keylog(&p, false).unwrap_err().to_string();
        assert!(e.contains("mode 0644 lets others read"), "{e}");
        assert!(!e.contains("abab"));
        assert_eq!(load_keylog(&p, true).unwrap().len(), 1);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_keylog(&p, false).unwrap().len(), 1);
        std::fs::write(&p, "<html>not keys</html>\n").unwrap();
        let e = load_keylog(&p, false).unwrap_err().to_string();
        assert!(e.contains("not a key log"), "{e}");
        assert!(load_keylog(&dir.path().join("missing"), false).is_err());
    }

    #[test]
    fn target_tls_flag_checks() {
        let o = TlsOptions {
            target_tls: true,
            ..Default::default()
        };
        assert!(TargetTls::new(&o)
            .err()
            .unwrap()
            .to_string()
            .contains("--target-ca"));
        let o = TlsOptions {
            target_tls: true,
            target_insecure: true,
            target_alpn: Some("h2,http/1.1".into()),
            ..Default::default()
        };
        let t = TargetTls::new(&o).unwrap();
        let (cfg, name) = t.for_session(
            Some(&Captured {
                sni: Some("shop.example".into()),
                alpn: vec![b"x".to_vec()],
            }),
            "198.18.1.1:443".parse().unwrap(),
        );
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(name.to_str(), "shop.example");
        let (_, name) = t.for_session(None, "198.18.1.1:443".parse().unwrap());
        assert_eq!(name.to_str(), "198.18.1.1");
    }
}
