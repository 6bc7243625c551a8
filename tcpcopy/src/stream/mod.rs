//! Stream mode: reassemble captured client streams and replay them over kernel TCP sockets
//! (tokio), one connection per original session, then report how the test server did.
//!
//! Layers: [`reassembly`] (pure: segments in, stream events out), [`decode`] (pure: frames to
//! segments), [`proxy`] (pure: PROXY protocol headers), [`source`] (capture files and live
//! capture, blocking, on its own thread), [`tls`] (decryption with a key log, TLS to the target)
//! and [`replay`] (the tokio glue: scheduling, sockets,
//! measuring). The report lives in [`crate::report`].

pub mod decode;
pub mod proxy;
pub mod reassembly;
pub mod replay;
pub mod source;
pub mod tls;

use crate::mapping::TargetMapping;
use crate::report::Report;
use std::path::PathBuf;

pub use proxy::ProxyVersion;

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
            fleet: crate::fleet::FleetOptions::default(),
        }
    }
}

/// What a stream-mode run did.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// The full report (also printed and written to the `--report` files).
    pub report: Report,
}

/// Runs stream mode to the end: replays, prints the table, writes the `--report` files.
pub fn run(common: &StreamCommon, opts: &StreamOptions) -> anyhow::Result<StreamSummary> {
    let (report, input_error) = replay::run(common, opts)?;
    // A recording replays nothing: its summary was printed instead of the table.
    if opts.fleet.record.is_none() {
        print!("{}", crate::report::render_table(&report));
    }
    crate::report::write_files(&report, &opts.report)?;
    if let Some(e) = input_error {
        return Err(e);
    }
    Ok(StreamSummary { report })
}
