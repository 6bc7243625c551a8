//! The target side of `--target-tls`: rustls settings per ALPN list, the connection type the
//! session task reads and writes through, and the handshake ([`connect`]).

use super::{Captured, TlsOptions};
use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
