//! Stream mode: reassemble captured client streams and replay them over kernel TCP sockets
//! (tokio), one connection per original session, then report how the test server did.
//!
//! Layers: [`reassembly`] (pure: segments in, stream events out), [`decode`] (pure: frames to
//! segments), [`proxy`] (pure: PROXY protocol headers), [`source`] (capture files and live
//! capture, blocking, on its own thread), [`tls`] (decryption with a key log, TLS to the target)
//! and [`replay`] (the tokio glue: scheduling, sockets,
//! measuring). The report lives in [`crate::report`].

pub mod decode;
pub mod guard;
pub mod proxy;
pub mod reassembly;
pub mod replay;
pub mod source;
pub mod tls;
pub mod verdict;

use crate::mapping::TargetMapping;
use crate::report::Report;
use std::path::PathBuf;

pub use proxy::ProxyVersion;

/// `--log-format json` in stream mode: operator messages become JSON log lines.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends stream mode's messages as JSON log lines through tracing (`true`) or as
/// `tcpcopy: ...` lines on stderr (the default). Set once, before the run.
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// An error for the operator (one line).
pub fn log_error(msg: &str) {
    if json_logs() {
        tracing::error!("{msg}");
    } else {
        eprintln!("tcpcopy: {msg}");
    }
}

/// A warning for the operator.
pub fn log_warn(msg: &str) {
    if json_logs() {
        tracing::warn!("{msg}");
    } else {
        eprintln!("tcpcopy: {msg}");
    }
}

/// Progress for the operator (what is being captured, what the kernel dropped).
pub fn log_info(msg: &str) {
    if json_logs() {
        tracing::info!("{msg}");
    } else {
        eprintln!("tcpcopy: {msg}");
    }
}

/// Where stream mode reads its packets from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// A capture file (pcap or pcapng), `--offline FILE`.
    Offline(PathBuf),
    /// Live capture, `-i DEV[,DEV]` (empty: `any`) with an extra `-F` filter.
    Live {
        /// Interfaces to capture on.
        interfaces: Vec<String>,
        /// Extra BPF filter, ANDed with the one built from `-x`.
        filter: Option<String>,
    },
}

/// The values stream mode shares with raw mode (parsed by `main.rs`).
#[derive(Debug, Clone)]
pub struct StreamCommon {
    /// `-x` mappings: which service is copied, and where to.
    pub mappings: Vec<TargetMapping>,
    /// `-r`: percentage of sessions replayed (sampled by a hash of the client address and port).
    pub percentage: u32,
    /// `-n`: concurrent copies of every session.
    pub copies: u32,
    /// `-a`: speed-up factor of the original timing.
    pub speedup: f64,
    /// `-W`: don't wait for a response before sending the next request.
    pub no_wait: bool,
    /// Capture file or interfaces.
    pub source: StreamSource,
    /// `--force`: also accept a `--tls-keylog` file that others can read.
    pub force: bool,
}

/// The flags only stream mode has.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamOptions {
    /// Replay as fast as the target answers, ignoring the original timing.
    #[arg(long)]
    pub topspeed: bool,
    /// Cap on the rate of session starts.
    #[arg(long, value_name = "N")]
    pub max_sessions_per_sec: Option<f64>,
    /// Replay the capture file N times in a row.
    #[arg(long = "loop", value_name = "N", default_value_t = 1)]
    pub loops: u32,
    /// Send a PROXY protocol header (v1 or v2) first on every connection.
    #[arg(long, value_enum, value_name = "v1|v2")]
    pub proxy_protocol: Option<ProxyVersion>,
    /// Live: also capture the service's responses (production latency and --diff).
    #[arg(long)]
    pub with_responses: bool,
    /// Compare every test response with production's response to the same request.
    #[arg(long)]
    pub diff: bool,
    /// Mask what matches REGEX in both responses before comparing (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub diff_ignore: Vec<String>,
    /// Write the report to FILE.json and/or FILE.html (repeatable). Raw mode too: there it is
    /// built from the requests the engine sent and the answers intercept reported.
    #[arg(long, value_name = "FILE")]
    pub report: Vec<PathBuf>,
    /// Bound on queued replay data in MB (offline: the reader waits; live: sessions are dropped).
    #[arg(long, value_name = "MB", default_value_t = 32)]
    pub queue_mb: usize,
    /// Seconds to wait for a response before counting it timed out.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub response_timeout: f64,
    /// Seconds to wait for a connection to the target.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Seconds without packets after which a captured session is considered over.
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub stream_idle_timeout: u64,
    /// Live: stop capturing after S seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// TLS: decryption with a key log, replay over TLS.
    #[command(flatten)]
    pub tls: tls::TlsOptions,
    /// `--metrics` (the flag is tcpcopy's, shared with raw mode): serve the run's figures there.
    #[arg(skip)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Offline: the capture file, opened before the privilege drop (`None`: opened by path).
    #[arg(skip)]
    pub offline_capture: Option<OpenedCapture>,
    /// Per-endpoint report, protocol-aware diff, verdicts.
    #[command(flatten)]
    pub verdict: verdict::VerdictOptions,
    /// Fleet mode: record into / replay from NATS JetStream (tcpcopy/src/fleet).
    #[command(flatten, next_help_heading = "Fleet mode (--stream --record / --from)")]
    pub fleet: crate::fleet::FleetOptions,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            topspeed: false,
            max_sessions_per_sec: None,
            loops: 1,
            proxy_protocol: None,
            with_responses: false,
            diff: false,
            diff_ignore: Vec::new(),
            report: Vec::new(),
            queue_mb: 32,
            response_timeout: 5.0,
            connect_timeout: 5.0,
            stream_idle_timeout: 120,
            duration: None,
            tls: tls::TlsOptions::default(),
            metrics: None,
            offline_capture: None,
            verdict: verdict::VerdictOptions::default(),
            fleet: crate::fleet::FleetOptions::default(),
        }
    }
}

/// A capture file opened once, before the switch to `--user`, so that a file only root can
/// read still replays; every pass (`--loop`) reads it again from the start.
#[derive(Debug, Clone)]
pub struct OpenedCapture {
    path: PathBuf,
    file: std::sync::Arc<std::fs::File>,
}

impl OpenedCapture {
    /// Opens `path` and checks that it is a capture (its header reads).
    pub fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        let c = OpenedCapture {
            path: path.to_path_buf(),
            file: std::sync::Arc::new(
                std::fs::File::open(path)
                    .map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", path.display()))?,
            ),
        };
        c.reader()?;
        Ok(c)
    }

    /// A reader from the start of the file.
    pub fn reader(
        &self,
    ) -> anyhow::Result<tcpclone::capture::CaptureReader<std::io::BufReader<std::fs::File>>> {
        use std::io::{Seek, SeekFrom};
        // A second handle on the one open file: passes run one after the other, never at once.
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        Ok(tcpclone::capture::CaptureReader::from_reader(
            std::io::BufReader::with_capacity(1 << 18, f),
            self.path.display().to_string(),
        )?)
    }
}

/// What a stream-mode run did.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// The full report (also printed and written to the `--report` files).
    pub report: Report,
    /// A `--fail-if` rule held (or could not be evaluated): the run exits 1.
    pub verdict_failed: bool,
}

/// Runs stream mode to the end: replays, evaluates the `--fail-if` rules, prints the table and
/// the failed rules (standard error), writes the `--report` and `--junit` files.
pub fn run(common: &StreamCommon, opts: &StreamOptions) -> anyhow::Result<StreamSummary> {
    let rules = opts.verdict.rules()?;
    let (mut report, input_error) = replay::run(common, opts)?;
    // A recording replays nothing: its summary was printed instead of the table.
    let verdict_failed = crate::report::conclude(
        &mut report,
        &rules,
        opts.fleet.record.is_none(),
        &opts.report,
        opts.verdict.junit.as_deref(),
    )?;
    if let Some(e) = input_error {
        return Err(e);
    }
    Ok(StreamSummary {
        report,
        verdict_failed,
    })
}
