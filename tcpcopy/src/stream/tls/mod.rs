//! TLS in stream mode: `--tls-keylog` turns captured TLS sessions into their plaintext
//! conversation (through the library's sans-IO [`tcpclone::tls`] decryptor), and `--target-tls`
//! replays over TLS (rustls) to the target.
//!
//! [`TlsFilter`] is pure: reassembly events in, plaintext events out, counters beside. A session
//! is opened for replay only once its keys are found (its Open event is held until then), so a
//! session without keys never connects to the target. [`connect`] is the tokio glue for the
//! target side.
//!
//! Files: this one holds the flags and the key log's loading; `filter.rs` the decryption stage
//! ([`TlsFilter`]) and the live key log's follower; `target.rs` the target side (`--target-tls`:
//! rustls settings, the connection type [`Conn`], [`connect`]).

mod filter;
mod target;

pub use filter::{Captured, KeyLogFollower, TlsFilter};
pub use target::{connect, Conn, TargetTls, TlsConn};

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tcpclone::tls::KeyLog;

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
        crate::stream::log_warn(&format!("--tls-keylog {e} (line skipped)"));
    }
    if bad.len() > 10 {
        crate::stream::log_warn(&format!(
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

#[cfg(test)]
mod tests;
