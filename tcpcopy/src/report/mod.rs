//! The benchmark report of both modes: per-request samples in, an end-of-run [`Report`] out
//! (latency and time-to-last-byte histograms for the test server and production, outcomes, rates,
//! throughput over time, response comparison), rendered as a table, versioned JSON or HTML.
//!
//! Pure but for [`write_files`]: samples carry durations measured by the caller; nothing here
//! reads a clock or a socket, and `render_*` return strings.

mod collector;
pub mod compare;
pub mod endpoints;
pub mod exchange;
pub mod hist;
pub mod html;
mod junit;
pub mod merge;
pub mod metrics;
pub mod raw;
mod table;
pub mod verdict;

pub use endpoints::{
    DecodeCounts, EndpointDiff, EndpointReport, EndpointSide, FieldDiffExample, Timeline,
};
pub use verdict::Verdict;

pub use collector::{
    escape, Collector, DiffIgnoreError, DiffInput, Outcome, ProductionSample, RequestSample,
    OPAQUE_ENDPOINT,
};
pub(crate) use hist::{curve, micros, percentiles};
pub use table::{render_table, render_tls};

use serde::{Deserialize, Serialize};

/// The JSON schema name written in every report.
pub const SCHEMA: &str = "tcpclone.report";
/// The JSON schema version; bumped on any incompatible change of field names or meaning.
/// Version 2 added the latency histograms that `report merge` adds up.
pub const SCHEMA_VERSION: u32 = 2;
/// How many differing responses the report keeps as examples.
pub const MAX_DIFF_EXAMPLES: usize = 10;
/// Most throughput buckets in a report.
pub const MAX_POINTS: usize = 300;

/// Bytes of a response kept for comparison (longer responses: this prefix plus the length).
pub const DIFF_CAP: usize = 64 * 1024;

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// One side's figures (the test server, or production).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideReport {
    /// Requests.
    pub requests: u64,
    /// Answered.
    pub answered: u64,
    /// Reset.
    pub reset: u64,
    /// Refused.
    pub refused: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Closed without an answer.
    pub closed: u64,
    /// Sent with no answer expected.
    pub unanswered: u64,
    /// reset + refused + timed_out + closed.
    pub errors: u64,
    /// Requests per second over the span of the requests.
    pub rps: f64,
    /// Request bytes.
    pub bytes_sent: u64,
    /// Response bytes.
    pub bytes_received: u64,
    /// First response byte − last request byte.
    pub latency_ms: Percentiles,
    /// Last response byte − last request byte.
    pub ttlb_ms: Percentiles,
}

/// Session counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Sessions found in the capture.
    pub seen: u64,
    /// Sessions replayed (copies included).
    pub replayed: u64,
    /// Skipped by `-r` sampling.
    pub sampled_out: u64,
    /// Sessions whose SYN was not in the capture.
    pub without_syn: u64,
    /// Sessions with missing bytes (replayed up to the hole).
    pub partial: u64,
    /// Dropped because the queue bound was reached (live).
    pub dropped: u64,
    /// Connections that could not be made.
    pub connect_failed: u64,
    /// Fleet replay (`--from`): sessions delivered again after an unacknowledged delivery and
    /// replayed again (at-least-once), included in `replayed`.
    #[serde(default)]
    pub repeats: u64,
    /// Connections to `--baseline-target` that could not be made (stream mode; not in
    /// `connect_failed`, which counts the test target's).
    #[serde(default)]
    pub baseline_connect_failed: u64,
}

/// TLS counters of stream mode (`--tls-keylog`, `--target-tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCounts {
    /// Captured TLS sessions decrypted (their plaintext replayed).
    pub decrypted: u64,
    /// Sessions that were not TLS (replayed as they were).
    pub plaintext: u64,
    /// TLS sessions whose secrets are not in the key log (not replayed).
    pub without_keys: u64,
    /// TLS sessions that ended before their handshake did.
    pub incomplete: u64,
    /// Records that failed authentication (a wrong key, damaged bytes); skipped.
    pub auth_failures: u64,
    /// 0-RTT records the server had rejected; skipped as it skipped them.
    pub early_rejected: u64,
    /// Sessions whose bytes end inside a record (capture loss, a cut capture).
    pub cut_records: u64,
    /// Sessions that failed for another reason (malformed handshake, bad secret).
    pub failed: u64,
    /// Resumed sessions among the decrypted ones.
    pub resumed: u64,
    /// Unsupported cipher suites (or versions) by name, with their session counts.
    pub unsupported: std::collections::BTreeMap<String, u64>,
    /// Decrypted sessions by version and suite.
    pub suites: std::collections::BTreeMap<String, u64>,
    /// Decrypted sessions by negotiated ALPN protocol.
    pub alpn: std::collections::BTreeMap<String, u64>,
    /// Decrypted sessions by the client's SNI (the first [`MAX_SNI`] names, then `(other)`).
    #[serde(default)]
    pub sni: std::collections::BTreeMap<String, u64>,
    /// TLS handshakes with the target that failed, by rustls's reason.
    pub target_handshake_failed: std::collections::BTreeMap<String, u64>,
}

/// Distinct SNI names kept in [`TlsCounts::sni`].
pub const MAX_SNI: usize = 50;

/// One differing response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffExample {
    /// Session number.
    pub session: u64,
    /// Request number within the session.
    pub index: u32,
    /// The request's first bytes (escaped).
    pub request: String,
    /// Production's response length.
    pub production_len: u64,
    /// The test server's response length.
    pub test_len: u64,
    /// First differing byte offset (after masking).
    pub first_difference: u64,
    /// Production's response around the difference (escaped).
    pub production_excerpt: String,
    /// The test server's response around the difference (escaped).
    pub test_excerpt: String,
}

/// `--diff` results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffReport {
    /// Responses compared.
    pub compared: u64,
    /// Equal after masking.
    pub matched: u64,
    /// matched / compared.
    pub match_rate: f64,
    /// The masking expressions.
    pub ignore: Vec<String>,
    /// The first differing responses.
    pub examples: Vec<DiffExample>,
    /// Protocol-aware comparison: the HTTP headers compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Protocol-aware comparison: the field paths never compared (`--diff-ignore-path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
    /// Protocol-aware comparison: the first differing responses, by field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDiffExample>,
    /// Field paths learned as noise per endpoint (`--baseline-target`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub noise: std::collections::BTreeMap<String, Vec<String>>,
    /// Baseline responses compared with production's to learn the noise.
    #[serde(default)]
    pub baseline_compared: u64,
}

/// A point of a latency percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile (0–100).
    pub percentile: f64,
    /// Latency (ms).
    pub ms: f64,
}

/// Completed requests per time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Bucket width in seconds (a multiple of 0.1 s, chosen for at most 300 buckets).
    pub bucket_s: f64,
    /// Test server: requests per second in each bucket since the start of the run.
    pub test: Vec<f64>,
    /// Production: requests per second in each bucket since the start of the capture.
    pub production: Vec<f64>,
}

/// The run's latency histograms in HdrHistogram's V2 serialized form, base64 ([`hist`]): what
/// `report merge` adds up (microseconds, 1 µs to 1 h, 3 significant digits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histograms {
    /// The target's latency (first response byte − last request byte).
    pub test_latency: String,
    /// The target's time to last byte.
    pub test_ttlb: String,
    /// Production's latency (empty histogram when unknown).
    pub production_latency: String,
    /// Production's time to last byte.
    pub production_ttlb: String,
    /// Lateness against the schedule.
    pub slip: String,
}

/// The end-of-run report (JSON schema `tcpclone.report`, version [`SCHEMA_VERSION`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// `stream` or `raw` (`compare` for `report compare`).
    pub mode: String,
    /// What was replayed (`offline FILE`, `live IFACE`, `jetstream STREAM (replay NAME)`):
    /// `report merge` refuses reports of different sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How many reports `report merge` added up into this one (absent: one run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<u32>,
    /// Wall time of the run (s).
    pub duration_s: f64,
    /// The test server.
    pub test: SideReport,
    /// Production, when its responses were in the capture.
    pub production: Option<SideReport>,
    /// Sessions.
    pub sessions: SessionCounts,
    /// Lateness against the schedule (ms).
    pub slip_ms: Percentiles,
    /// Response comparison, with `--diff`.
    pub diff: Option<DiffReport>,
    /// Latency percentile curves.
    pub latency_curve: Curves,
    /// Throughput over time.
    pub throughput: Throughput,
    /// TLS counters, when stream mode decrypted or replayed over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCounts>,
    /// Fleet replay (`--from`): the requests of sessions a worker had replayed before (sent to
    /// the target again: at-least-once), by endpoint or command ([`OPAQUE_ENDPOINT`] for
    /// requests no decoder named). The target ran production's requests plus these.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub repeated_requests: std::collections::BTreeMap<String, u64>,
    /// Per endpoint or command (decoded sessions), largest regressions first.
    #[serde(default)]
    pub endpoints: Vec<EndpointReport>,
    /// How many requests the decoders read, and how many were opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<DecodeCounts>,
    /// Latency p50/p99 per second (or wider buckets on long runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_over_time: Option<Timeline>,
    /// `--fail-if` rules evaluated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    /// The latency histograms (schema version 2; absent in version 1 reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Histograms>,
}

/// Latency percentile curves of both sides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// Test server.
    pub test: Vec<CurvePoint>,
    /// Production (empty when unknown).
    pub production: Vec<CurvePoint>,
}

/// Evaluates `rules` into `report.verdicts`; true when one failed.
pub fn apply_verdicts(report: &mut Report, rules: &[verdict::Rule]) -> bool {
    report.verdicts = verdict::evaluate(rules, report);
    report.verdicts.iter().any(|v| v.failed)
}

/// The end of a run in both modes: evaluates `rules` into the report, prints the table
/// (`table`) and the broken rules (standard error), writes the `--report` files and the
/// `--junit` file. Returns true when a rule broke (the run must exit 1).
pub fn conclude(
    report: &mut Report,
    rules: &[verdict::Rule],
    table: bool,
    files: &[std::path::PathBuf],
    junit: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    let failed = apply_verdicts(report, rules);
    if table {
        print!("{}", render_table(report));
    }
    eprint!("{}", verdict::failures_text(&report.verdicts));
    write_files(report, files)?;
    if let Some(path) = junit {
        write_output(path, verdict::render_junit(report).as_bytes())
            .map_err(|e| anyhow::anyhow!("--junit {}: {e}", path.display()))?;
    }
    Ok(failed)
}

/// Serializes a report as pretty JSON.
pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// Writes `report` to each path: `.json` as JSON, `.html`/`.htm` as the HTML page; any other
/// extension, or a failed write, is an error naming the path.
pub fn write_files(report: &Report, paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    for path in paths {
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => render_json(report),
            Some("html" | "htm") => html::render_html(report).map_err(|e| {
                anyhow::anyhow!(
                    "--report {}: drawing the charts failed: {e}",
                    path.display()
                )
            })?,
            _ => anyhow::bail!(
                "--report {}: the file name must end in .json or .html",
                path.display()
            ),
        };
        write_output(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Output files (`--report`, `--junit`) opened before the switch to `--user`, by path. A run
/// started as root creates them while it may still enter every directory, hands them to the
/// user, and writes them at the end through these descriptors: a directory only root can
/// enter still receives its reports. Process-wide, as the files are the process's.
static OPENED_OUTPUTS: std::sync::Mutex<Vec<(std::path::PathBuf, std::fs::File)>> =
    std::sync::Mutex::new(Vec::new());

/// Keeps `file`, opened for `path` before a privilege drop, for [`write_output`].
pub fn keep_open(path: &std::path::Path, file: std::fs::File) {
    let mut o = OPENED_OUTPUTS.lock().unwrap_or_else(|p| p.into_inner());
    o.push((path.to_path_buf(), file));
}

/// Writes `bytes` as the whole of `path`: through the descriptor [`keep_open`] holds for it
/// when there is one (truncated first), else by path.
pub fn write_output(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let kept = {
        let o = OPENED_OUTPUTS.lock().unwrap_or_else(|p| p.into_inner());
        o.iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| f.try_clone())
    };
    match kept {
        Some(f) => {
            let mut f = f?;
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(bytes)
        }
        None => std::fs::write(path, bytes),
    }
}

/// True when `path` names a report format (`.json`, `.html`, `.htm`).
pub fn known_extension(path: &std::path::Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "html" | "htm")
    )
}
