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
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};

/// The TLS flags of stream mode.
#[derive(Debug, Clone, Default, clap::Args)]
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
}

impl TlsOptions {
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
    }
}

/// Reads the key log at `path`. Refuses a file that group or others may read unless `force`
/// (it holds every session's secrets); bad lines are reported (file:line) and skipped.
pub fn load_keylog(path: &Path, force: bool) -> anyhow::Result<KeyLog> {
    use std::os::unix::fs::MetadataExt as _;
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("--tls-keylog {name}"))?;
    if !force && tcpclone::proto::secure::check_secret_mode(meta.mode()).is_err() {
        anyhow::bail!(
            "--tls-keylog {name}: mode {:04o} lets others read the session secrets; chmod 600 it, or pass --force",
            meta.mode() & 0o7777
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("--tls-keylog {name}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let (log, bad) =
        KeyLog::parse(&text, &name).map_err(|e| anyhow::anyhow!("--tls-keylog {e}"))?;
    for e in bad.iter().take(10) {
        eprintln!("tcpcopy: --tls-keylog {e} (line skipped)");
    }
    if bad.len() > 10 {
        eprintln!(
            "tcpcopy: --tls-keylog {name}: {} more bad lines skipped",
            bad.len() - 10
        );
    }
    Ok(log)
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
}

/// The decryption stage between reassembly and replay. Pure.
pub struct TlsFilter {
    keys: KeyLog,
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
    /// A filter decrypting with `keys`.
    pub fn new(keys: KeyLog) -> Self {
        TlsFilter {
            keys,
            sessions: HashMap::new(),
            captured: HashMap::new(),
            counts: TlsCounts::default(),
            messages: 0,
        }
    }

    /// The captured SNI/ALPN of a session whose Open event was just emitted.
    pub fn take_captured(&mut self, id: SessionId) -> Option<Captured> {
        self.captured.remove(&id)
    }

    fn say(&mut self, open: &StreamEvent, what: &str) {
        self.messages += 1;
        if self.messages <= MAX_MESSAGES {
            if let StreamEvent::Open { key, .. } = open {
                eprintln!("tcpcopy: TLS session {} -> {}: {what}", key.src, key.dst);
            }
        } else if self.messages == MAX_MESSAGES + 1 {
            eprintln!("tcpcopy: more TLS session errors are only counted (see the report)");
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
                let status = p.tls.status().clone();
                if let Err(e) = r {
                    let open = p.open.clone();
                    let opened = p.opened;
                    self.count_failure(&e);
                    self.say(&open, &e.to_string());
                    self.sessions.remove(&id);
                    if opened {
                        out.push(StreamEvent::Close {
                            id,
                            ts,
                            reason: super::reassembly::EndReason::Hole,
                            partial: true,
                        });
                    }
                    return;
                }
                if !p.opened
                    && matches!(status, SessionStatus::Decrypting | SessionStatus::Plaintext)
                {
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
            StreamEvent::Fin { id, .. } => {
                if self.sessions.get(&id).is_some_and(|p| p.opened) {
                    out.push(ev);
                }
            }
            StreamEvent::Close { id, .. } => {
                let Some(mut p) = self.sessions.remove(&id) else {
                    return;
                };
                let status = p.tls.status().clone();
                let early = p.tls.counters().early_rejected;
                self.counts.auth_failures += p.tls.counters().auth_failures;
                self.counts.early_rejected += early;
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
                if p.opened {
                    out.push(ev);
                }
            }
        }
    }
}

/// Accepts any certificate (`--target-insecure`).
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
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls's ring provider. Deprecated in rustls for lacking post-quantum key exchange; ring is
/// used because aws-lc-rs's C build is heavy, and a replay's key exchange protects nothing.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
                let certs = CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("--target-ca {}", ca.display()))?;
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
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("--target-cert {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
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

/// The connection a replayed session uses: the target's TCP socket, or (with --target-tls) one
/// end of a local socket pair whose other end a task pumps through rustls. The replay loop
/// measures with readiness (`try_read`/`try_write`), which a TLS stream does not offer.
pub enum Conn {
    /// Plain TCP to the target.
    Tcp(TcpStream),
    /// The local end of the TLS pump.
    Tls(UnixStream),
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
            Conn::Tls(s) => s.ready(Interest::READABLE).await.map(|_| ()),
        }
    }
    /// Waits until writable.
    pub async fn writable(&self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.writable().await,
            Conn::Tls(s) => s.ready(Interest::WRITABLE).await.map(|_| ()),
        }
    }
    /// Half-closes the sending side (TLS: close_notify and FIN, sent by the pump).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
        }
    }
}

/// Makes the TLS handshake with the target over `tcp` and starts the pump; the error is
/// rustls's reason (or the timeout).
pub async fn connect(
    tcp: TcpStream,
    cfg: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: std::time::Duration,
) -> Result<Conn, String> {
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let mut tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
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
    let (local, mut pumped) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut pumped).await;
        let _ = tls.shutdown().await;
    });
    Ok(Conn::Tls(local))
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
