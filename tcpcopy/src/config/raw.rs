//! Raw mode's validated configuration: the flags checked one concern at a time (in the order
//! that names the first mistake on the command line) and turned into the [`Settings`] that
//! `live::run` consumes. Plain values: nothing is opened here.

use super::{
    bad, parse_client_ips, parse_intercepts, FlagError, CHANNEL_CONN_MEMORY, COMMAND_BACKLOG,
};
use crate::cli::Cli;
use crate::mapping::{parse_mappings, TargetMapping};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where the captured segments come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Live capture on these devices (`any` = all).
    Live {
        /// Device names.
        interfaces: Vec<String>,
    },
    /// A capture file replayed with its own timing divided by `speedup`.
    Offline {
        /// The file.
        path: PathBuf,
        /// Timing divisor (> 0).
        speedup: f64,
    },
}

/// Answer bytes asked of intercept per response when a report is built and
/// `--response-prefix` is not given: an HTTP status line (`HTTP/1.1 503 Service Temporarily
/// Unavailable` is 46 bytes) or a RESP error prefix.
pub const DEFAULT_RESPONSE_PREFIX: u16 = 64;

/// Workers when --workers is not given: the service being cloned needs the host's CPUs
/// more than tcpcopy does, so one on small hosts and a quarter of the CPUs (at most 8) on
/// larger ones.
pub fn default_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus <= 4 {
        1
    } else {
        (cpus / 4).clamp(1, 8)
    }
}

/// Validated settings: plain values, nothing opened yet.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The -x mappings.
    pub mappings: Vec<TargetMapping>,
    /// intercept addresses.
    pub intercepts: Vec<SocketAddr>,
    /// Where segments come from.
    pub source: Source,
    /// The user's -F expression.
    pub user_filter: Option<String>,
    /// Client address pool for -c (empty: keep the client's own address).
    pub client_ips: Vec<IpAddr>,
    /// The ranges -c named, for the safety check and messages.
    pub client_nets: Vec<IpNet>,
    /// -n.
    pub copies: u32,
    /// -f.
    pub port_shift: u16,
    /// -r, 1..=100.
    pub percentage: u8,
    /// -m in bytes (whole budget).
    pub max_memory: u64,
    /// -m minus the capture rings, their backlog and the response queue: what the engine's
    /// sessions may use.
    pub engine_memory: u64,
    /// -t.
    pub session_timeout: Duration,
    /// -k.
    pub keepalive_timeout: Duration,
    /// -M.
    pub mtu: u16,
    /// -D (`None`: derived from -M by the engine).
    pub mss: Option<u16>,
    /// -B in bytes, per device.
    pub capture_buffer: usize,
    /// --capture-nice.
    pub capture_nice: i32,
    /// --nice: the workers' nice value.
    pub worker_nice: i32,
    /// --capture-block: the ring's block timeout in ms (`None`: the default, 1 ms); with
    /// --capture pcap, libpcap's block mode (`None`: immediate mode).
    pub capture_block_ms: Option<u32>,
    /// --capture pcap: libpcap on its own thread instead of rings read by the workers.
    pub capture_pcap: bool,
    /// --send packet: the packet socket with segmentation offload where the next hop allows.
    pub send_packet: bool,
    /// Shed connections when a worker's ring falls behind (not --no-shed).
    pub shed: bool,
    /// --workers.
    pub workers: usize,
    /// --max-pps.
    pub max_pps: Option<f64>,
    /// --max-mbps.
    pub max_mbps: Option<f64>,
    /// -W.
    pub no_wait: bool,
    /// --max-lag (`None`: 0, off).
    pub max_lag: Option<Duration>,
    /// -C.
    pub connections: u32,
    /// -l.
    pub log: Option<PathBuf>,
    /// -P.
    pub pid_file: Option<PathBuf>,
    /// --stats.
    pub stats: Option<Duration>,
    /// --metrics.
    pub metrics: Option<SocketAddr>,
    /// --force.
    pub force: bool,
    /// --secret-file (`None` only with --insecure).
    pub secret_file: Option<PathBuf>,
    /// The secret, read from --secret-file before the privilege drop (the binary does it;
    /// when `None`, [`crate::live::run`] reads the file itself).
    pub psk: Option<tcpclone::proto::secure::Psk>,
    /// --report files (.json / .html): the same report as stream mode's, from the requests the
    /// engine sent and the answers intercept reported.
    pub report: Vec<PathBuf>,
    /// --fail-if rules (checked), judged on the report at the end of the run.
    pub fail_if: Vec<crate::report::verdict::Rule>,
    /// --junit: the verdicts and endpoints as JUnit XML.
    pub junit: Option<PathBuf>,
    /// --protocol: how the report decodes requests (`None`: by the target's port).
    pub protocol: Option<tcpclone::decode::Protocol>,
    /// --response-prefix: answer bytes asked of intercept per response (0 without a report).
    pub response_prefix: u16,
}

impl Settings {
    /// True when the run builds a report (`--report`, `--fail-if` or `--junit`): the engine then
    /// times every request and keeps its first bytes, and intercept is asked for response
    /// prefixes.
    pub fn wants_report(&self) -> bool {
        !self.report.is_empty() || !self.fail_if.is_empty() || self.junit.is_some()
    }
}

impl Cli {
    /// Checks the raw-mode flags and turns them into plain settings. The checks run in this
    /// order, so that the first mistake on the command line is the one named.
    pub fn validate(&self) -> Result<Settings, FlagError> {
        let mappings = self.mappings()?;
        let intercepts = self.intercepts()?;
        let source = self.raw_source()?;
        let (client_ips, client_nets) = self.client_ips()?;
        self.check_copies_and_percentage()?;
        self.check_timeouts()?;
        let mss = self.mtu_and_mss()?;
        self.check_buffer_and_memory()?;
        let send_packet = self.send_packet()?;
        let capture_pcap = self.capture_pcap()?;
        let workers = self.workers(&source, capture_pcap)?;
        let (rings, queues) =
            self.fixed_memory(&source, capture_pcap, workers, intercepts.len())?;
        self.check_capture_tuning()?;
        self.check_report_files()?;
        self.refuse_stream_only_flags()?;
        let (fail_if, protocol) = self.raw_verdicts()?;
        let response_prefix = self.response_prefix_asked()?;
        self.check_rate_caps()?;
        self.check_channel()?;
        let stats = self.stats_interval()?;
        self.check_filter()?;
        // Last, so that a mistake in another flag is named first.
        self.check_secret()?;
        Ok(Settings {
            mappings,
            intercepts,
            source,
            user_filter: self.filter.clone(),
            client_ips,
            client_nets,
            copies: self.copies,
            port_shift: self.port_shift,
            percentage: self.percentage as u8,
            max_memory: self.max_memory << 20,
            engine_memory: (self.max_memory - rings - queues) << 20,
            session_timeout: Duration::from_secs(self.session_timeout),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout),
            mtu: self.mtu as u16,
            mss,
            capture_buffer: (self.buffer << 20) as usize,
            capture_nice: self.capture_nice,
            worker_nice: self.nice,
            capture_block_ms: self.capture_block,
            capture_pcap,
            send_packet,
            shed: !self.no_shed,
            workers,
            max_pps: self.max_pps,
            max_mbps: self.max_mbps,
            no_wait: self.no_wait,
            max_lag: match self.max_lag {
                None => Some(crate::engine::DEFAULT_MAX_LAG),
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
            },
            connections: self.connections,
            log: self.log.clone(),
            pid_file: self.pid_file.clone(),
            stats,
            metrics: self.metrics,
            force: self.force,
            secret_file: self.secret_file.clone(),
            psk: None,
            report: self.stream_opts.report.clone(),
            fail_if,
            junit: self.stream_opts.verdict.junit.clone(),
            protocol,
            response_prefix,
        })
    }

    /// `--response-prefix`: what to ask intercept for; only with a report (nothing reads the
    /// bytes otherwise), [`DEFAULT_RESPONSE_PREFIX`] when not given.
    fn response_prefix_asked(&self) -> Result<u16, FlagError> {
        let so = &self.stream_opts;
        let report =
            !so.report.is_empty() || !so.verdict.fail_if.is_empty() || so.verdict.junit.is_some();
        match (self.response_prefix, report) {
            (Some(_), false) => Err(bad(
                "--response-prefix",
                "only with --report, --fail-if or --junit (the report reads it)",
            )),
            (n, true) => Ok(n.unwrap_or(DEFAULT_RESPONSE_PREFIX)),
            (None, false) => Ok(0),
        }
    }

    /// `--fail-if` and `--protocol`, which raw mode's report takes as stream mode's does.
    #[allow(clippy::type_complexity)]
    fn raw_verdicts(
        &self,
    ) -> Result<
        (
            Vec<crate::report::verdict::Rule>,
            Option<tcpclone::decode::Protocol>,
        ),
        FlagError,
    > {
        let v = &self.stream_opts.verdict;
        let rules = v.rules().map_err(|e| bad("--fail-if", e.to_string()))?;
        let protocol = v.protocol().map_err(|e| {
            bad(
                "--protocol",
                e.to_string().trim_start_matches("--protocol ").to_string(),
            )
        })?;
        Ok((rules, protocol))
    }

    /// `-x`, required in both modes.
    pub(super) fn mappings(&self) -> Result<Vec<TargetMapping>, FlagError> {
        let mapping = self
            .mapping
            .as_deref()
            .ok_or_else(|| bad("-x/--mapping", "required"))?;
        parse_mappings(mapping).map_err(|e| {
            bad(
                "-x/--mapping",
                e.to_string().trim_start_matches("-x: ").to_string(),
            )
        })
    }

    /// `-s`, required: where intercept runs.
    fn intercepts(&self) -> Result<Vec<SocketAddr>, FlagError> {
        match self.intercept.as_deref() {
            Some(s) => {
                parse_intercepts(s, self.intercept_port).map_err(|w| bad("-s/--intercept", w))
            }
            None => Err(bad("-s/--intercept", "required (where intercept runs)")),
        }
    }

    /// `-a` when given: a positive number.
    pub(super) fn speedup(&self) -> Result<f64, FlagError> {
        let speedup = self.speedup.unwrap_or(1.0);
        if !(speedup.is_finite() && speedup > 0.0 && speedup <= 1e6) {
            return Err(bad(
                "-a/--speedup",
                format!("must be a positive number, got {speedup}"),
            ));
        }
        Ok(speedup)
    }

    /// `--offline` with `-a`, or the `-i` devices (`any` alone).
    fn raw_source(&self) -> Result<Source, FlagError> {
        if let Some(path) = &self.offline {
            return Ok(Source::Offline {
                path: path.clone(),
                speedup: self.speedup()?,
            });
        }
        let interfaces: Vec<String> = self
            .interface
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if interfaces.is_empty() {
            return Err(bad("-i/--interface", "no device named"));
        }
        if interfaces.len() > 1 && interfaces.iter().any(|i| i == "any") {
            return Err(bad(
                "-i/--interface",
                "`any` already means all devices; name it alone",
            ));
        }
        Ok(Source::Live { interfaces })
    }

    /// `-c`: the client address pool and the ranges it names.
    fn client_ips(&self) -> Result<(Vec<IpAddr>, Vec<IpNet>), FlagError> {
        match self.client_ip.as_deref() {
            Some(s) => parse_client_ips(s).map_err(|w| bad("-c/--client-ip", w)),
            None => Ok((Vec::new(), Vec::new())),
        }
    }

    /// `-n` 1..=1000, `-r` 1..=100.
    fn check_copies_and_percentage(&self) -> Result<(), FlagError> {
        if self.copies == 0 || self.copies > 1000 {
            return Err(bad(
                "-n/--copies",
                format!("must be 1..=1000, got {}", self.copies),
            ));
        }
        self.check_percentage()
    }

    /// `-r` 1..=100.
    pub(super) fn check_percentage(&self) -> Result<(), FlagError> {
        if !(1..=100).contains(&self.percentage) {
            return Err(bad(
                "-r/--percentage",
                format!("must be 1..=100, got {}", self.percentage),
            ));
        }
        Ok(())
    }

    /// `-t` and `-k`: 1 second to a day.
    fn check_timeouts(&self) -> Result<(), FlagError> {
        if self.session_timeout == 0 || self.session_timeout > 86_400 {
            return Err(bad("-t/--session-timeout", "must be 1..=86400 seconds"));
        }
        if self.keepalive_timeout == 0 || self.keepalive_timeout > 86_400 {
            return Err(bad("-k/--keepalive-timeout", "must be 1..=86400 seconds"));
        }
        if self.max_lag.is_some_and(|ms| ms > 60_000) {
            return Err(bad("--max-lag", "must be 0..=60000 ms"));
        }
        Ok(())
    }

    /// `-M`, and `-D` within it.
    fn mtu_and_mss(&self) -> Result<Option<u16>, FlagError> {
        if !(576..=65_535).contains(&self.mtu) {
            return Err(bad(
                "-M/--mtu",
                format!("must be 576..=65535, got {}", self.mtu),
            ));
        }
        // Largest header overhead: IPv6 (40) + TCP with options (60).
        match self.mss {
            Some(m) if !(88..=65_495).contains(&m) => {
                Err(bad("-D/--mss", format!("must be 88..=65495, got {m}")))
            }
            Some(m) if m + 40 > self.mtu => Err(bad(
                "-D/--mss",
                format!("{m} plus headers exceeds the MTU {}", self.mtu),
            )),
            Some(m) => Ok(Some(m as u16)),
            None => Ok(None),
        }
    }

    /// `-B` and `-m` within their bounds.
    fn check_buffer_and_memory(&self) -> Result<(), FlagError> {
        if self.buffer == 0 || self.buffer > 4096 {
            return Err(bad("-B/--buffer", "must be 1..=4096 MB"));
        }
        if self.max_memory == 0 || self.max_memory > 1 << 20 {
            return Err(bad("-m/--max-memory", "must be 1..=1048576 MB"));
        }
        Ok(())
    }

    /// `--send packet|raw`: `true` for the packet socket.
    fn send_packet(&self) -> Result<bool, FlagError> {
        match self.send.as_str() {
            "packet" => Ok(true),
            "raw" => Ok(false),
            other => Err(bad(
                "--send",
                format!("`{other}`: must be `packet` or `raw`"),
            )),
        }
    }

    /// `--capture ring|pcap`: `true` for libpcap.
    fn capture_pcap(&self) -> Result<bool, FlagError> {
        match self.capture.as_str() {
            "ring" => Ok(false),
            "pcap" => Ok(true),
            other => Err(bad(
                "--capture",
                format!("`{other}`: must be `ring` or `pcap`"),
            )),
        }
    }

    /// `--workers` 1..=64; one for a file or libpcap (which more than one would not share).
    fn workers(&self, source: &Source, capture_pcap: bool) -> Result<usize, FlagError> {
        let workers = match self.workers {
            Some(0) | Some(65..) => return Err(bad("--workers", "must be 1..=64")),
            Some(n) => n as usize,
            None => default_workers(),
        };
        Ok(match source {
            Source::Offline { .. } => 1,
            Source::Live { .. } if capture_pcap => {
                if self.workers.is_some_and(|n| n > 1) {
                    return Err(bad("--workers", "more than 1 needs --capture ring"));
                }
                1
            }
            Source::Live { .. } => workers,
        })
    }

    /// What `-m` gives to other things than sessions, in MB: the capture rings and the intercept
    /// queues; refused when nothing is left for sessions.
    fn fixed_memory(
        &self,
        source: &Source,
        capture_pcap: bool,
        workers: usize,
        intercepts: usize,
    ) -> Result<(u64, u64), FlagError> {
        // Per device: the kernel ring; libpcap's thread may hold as much again of backlog
        // while the engine is behind.
        let rings = match source {
            Source::Live { interfaces } if capture_pcap => {
                2 * self.buffer * interfaces.len() as u64
            }
            Source::Live { interfaces } => self.buffer * interfaces.len() as u64,
            Source::Offline { .. } => 0,
        };
        // And the intercept connections: each worker's own (-C per intercept), each with its
        // buffers, and each worker's registrations on their way to intercept.
        let conns = (workers * intercepts) as u64 * u64::from(self.connections);
        let queues =
            (conns * CHANNEL_CONN_MEMORY + workers as u64 * COMMAND_BACKLOG).div_ceil(1 << 20);
        if rings + queues >= self.max_memory {
            return Err(bad(
                "-B/--buffer",
                format!(
                    "capture rings (and with --capture pcap their backlog) ({rings} MB) and the \
                     intercept connections' buffers ({queues} MB) leave nothing of -m {} MB for sessions",
                    self.max_memory
                ),
            ));
        }
        Ok((rings, queues))
    }

    /// `--capture-nice` and `--capture-block` within their bounds.
    fn check_capture_tuning(&self) -> Result<(), FlagError> {
        if !(-20..=19).contains(&self.capture_nice) {
            return Err(bad("--capture-nice", "must be -20..=19"));
        }
        if !(0..=19).contains(&self.nice) {
            return Err(bad("--nice", "must be 0..=19"));
        }
        if self
            .capture_block
            .is_some_and(|ms| !(1..=1000).contains(&ms))
        {
            return Err(bad("--capture-block", "must be 1..=1000 ms"));
        }
        Ok(())
    }

    /// `--report` files end in .json or .html.
    fn check_report_files(&self) -> Result<(), FlagError> {
        if let Some(p) = self
            .stream_opts
            .report
            .iter()
            .find(|p| !crate::report::known_extension(p))
        {
            return Err(bad(
                "--report",
                format!("{}: the file name must end in .json or .html", p.display()),
            ));
        }
        Ok(())
    }

    /// The replay-only flags of stream mode.
    fn refuse_stream_only_flags(&self) -> Result<(), FlagError> {
        let so = &self.stream_opts;
        let stream_only = [
            (so.topspeed, "--topspeed"),
            (so.max_sessions_per_sec.is_some(), "--max-sessions-per-sec"),
            (so.loops != 1, "--loop"),
            (so.proxy_protocol.is_some(), "--proxy-protocol"),
            (so.with_responses, "--with-responses"),
            (so.diff, "--diff"),
            (!so.diff_ignore.is_empty(), "--diff-ignore"),
            (so.duration.is_some(), "--duration"),
            (so.tls.any(), "--tls-keylog/--target-tls"),
            (so.fleet.active(), "--record/--from"),
            // --protocol, --fail-if and --junit work in raw mode too; the response comparison
            // does not (intercept reports a prefix of each answer, not the answer).
            (
                !so.verdict.diff_header.is_empty()
                    || !so.verdict.diff_ignore_path.is_empty()
                    || so.verdict.baseline_target.is_some(),
                "--diff-header/--diff-ignore-path/--baseline-target",
            ),
        ];
        if let Some((_, flag)) = stream_only.iter().find(|(given, _)| *given) {
            return Err(bad(flag, "only with --stream"));
        }
        Ok(())
    }

    /// `--max-pps` and `--max-mbps`: positive numbers.
    fn check_rate_caps(&self) -> Result<(), FlagError> {
        if let Err(e) = tcpclone::limit::RateCap::new(self.max_pps, self.max_mbps) {
            let flag = match e {
                tcpclone::limit::CapError::NotPositive {
                    what: "max pps", ..
                } => "--max-pps",
                _ => "--max-mbps",
            };
            return Err(bad(flag, "must be a positive number"));
        }
        Ok(())
    }

    /// `-C` 1..=64 and `-p` not 0.
    fn check_channel(&self) -> Result<(), FlagError> {
        if self.connections == 0 || self.connections > 64 {
            return Err(bad("-C/--connections", "must be 1..=64"));
        }
        if self.intercept_port == 0 {
            return Err(bad("-p/--intercept-port", "must not be 0"));
        }
        Ok(())
    }

    /// `--stats`: at least a second.
    fn stats_interval(&self) -> Result<Option<Duration>, FlagError> {
        match self.stats {
            Some(0) => Err(bad("--stats", "must be at least 1 second")),
            Some(n) => Ok(Some(Duration::from_secs(n))),
            None => Ok(None),
        }
    }

    /// `-F`: not empty.
    fn check_filter(&self) -> Result<(), FlagError> {
        if let Some(f) = &self.filter {
            if f.trim().is_empty() {
                return Err(bad("-F/--filter", "empty expression"));
            }
        }
        Ok(())
    }

    /// `--secret-file`, or `--insecure` said out loud.
    fn check_secret(&self) -> Result<(), FlagError> {
        if self.secret_file.is_none() && !self.insecure {
            return Err(bad(
                "--secret-file",
                "required: the same secret as intercept's (openssl rand -hex 32 > secret; chmod 600 secret), or --insecure to run the channel unauthenticated",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check_targets;
    use clap::Parser;

    /// Raw-mode command lines get --insecure unless they name a secret (tested apart).
    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        let insecure = args.contains(&"-s") && !args.contains(&"--secret-file");
        Cli::try_parse_from(
            std::iter::once("tcpcopy")
                .chain(args.iter().copied())
                .chain(insecure.then_some("--insecure")),
        )
    }

    #[test]
    fn a_secret_or_insecure_is_required() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("tcpcopy").chain(args.iter().copied()))
        };
        let base = ["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"];
        let err = parse(&base).unwrap().validate().unwrap_err();
        assert_eq!(err.flag, "--secret-file", "{err}");
        assert!(err.to_string().contains("--insecure"), "{err}");
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            parse(&a)
        };
        let s = with(&["--secret-file", "/etc/tcpclone/secret"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(s.secret_file.is_some() && s.psk.is_none());
        assert!(with(&["--insecure"]).unwrap().validate().is_ok());
        assert!(
            with(&["--insecure", "--secret-file", "s"]).is_err(),
            "the two contradict each other"
        );
        // Stream mode has no channel to intercept: no secret needed.
        assert!(
            parse(&["--stream", "-x", "80-198.18.1.2:80", "--offline", "f.pcap"])
                .unwrap()
                .validate_stream()
                .is_ok()
        );
    }

    #[test]
    fn full_command_line_validates() {
        let c = cli(&[
            "-x",
            "6379-198.18.1.2:6380",
            "-s",
            "198.18.1.3,[2001:db8::3]:4000",
            "-c",
            "198.18.100.x",
            "-n",
            "2",
            "-f",
            "3",
            "-r",
            "50",
            "-m",
            "512",
            "-B",
            "16",
            "-W",
            "-C",
            "4",
            "--stats",
            "5",
            "-i",
            "eth0,eth1",
            "-F",
            "not port 22",
            "-D",
            "1400",
            "--workers",
            "2",
        ])
        .unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.intercepts[0], "198.18.1.3:36524".parse().unwrap());
        assert_eq!(s.intercepts[1], "[2001:db8::3]:4000".parse().unwrap());
        assert_eq!(s.client_ips.len(), 254);
        assert_eq!(s.client_ips[0], "198.18.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            s.client_ips[253],
            "198.18.100.254".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            s.source,
            Source::Live {
                interfaces: vec!["eth0".into(), "eth1".into()]
            }
        );
        // 2 workers × 2 intercepts × 4 connections of 2 MiB + 64 KiB each, and 1 MiB of
        // registrations per worker: 35 MiB.
        assert_eq!(
            s.engine_memory,
            (512 - 2 * 16 - 35) << 20,
            "-B 16 on two devices (the ring has no backlog) and the intercept connections"
        );
        assert_eq!(
            (s.copies, s.port_shift, s.percentage, s.mss, s.connections),
            (2, 3, 50, Some(1400), 4)
        );
        assert!(s.no_wait);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let base = ["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"];
        let cases: &[(&[&str], &str)] = &[
            (&["-r", "0"], "-r/--percentage"),
            (&["-r", "101"], "-r/--percentage"),
            (&["-n", "0"], "-n/--copies"),
            (&["-c", "198.18.1000.x"], "-c/--client-ip"),
            (&["-M", "100"], "-M/--mtu"),
            (&["-D", "1480"], "-D/--mss"),
            (&["-B", "2000", "-m", "1024"], "-B/--buffer"),
            (&["-C", "0"], "-C/--connections"),
            (&["--stats", "0"], "--stats"),
            (&["--max-pps", "0"], "--max-pps"),
            (&["--max-mbps", "0"], "--max-mbps"),
            (&["--max-pps", "100", "--max-mbps", "nan"], "--max-mbps"),
            (&["--capture-nice", "-21"], "--capture-nice"),
            (&["--nice=-1"], "--nice"),
            (&["--nice", "20"], "--nice"),
            (&["--capture-block", "0"], "--capture-block"),
            (&["--capture-block", "1001"], "--capture-block"),
            (&["--report", "r.txt"], "--report"),
            (&["--diff"], "--diff"),
            (&["--topspeed"], "--topspeed"),
            (&["--loop", "2"], "--loop"),
            (&["--proxy-protocol", "v2"], "--proxy-protocol"),
            (&["--offline", "f.pcap", "-a", "0"], "-a/--speedup"),
        ];
        for (extra, flag) in cases {
            let mut args: Vec<&str> = base.to_vec();
            args.extend_from_slice(extra);
            let err = cli(&args).unwrap().validate().unwrap_err();
            assert_eq!(err.flag, *flag, "{extra:?}: {err}");
            assert!(!err.to_string().contains('\n'));
        }
        assert_eq!(
            cli(&["-s", "198.18.1.3"])
                .unwrap()
                .validate()
                .unwrap_err()
                .flag,
            "-x/--mapping"
        );
        assert_eq!(
            cli(&["-x", "80-198.18.1.2:80"])
                .unwrap()
                .validate()
                .unwrap_err()
                .flag,
            "-s/--intercept"
        );
        assert!(cli(&["-n", "abc"]).is_err());
    }

    #[test]
    fn max_lag_defaults_on_and_zero_turns_it_off() {
        let lag = |extra: &[&str]| {
            let mut args = vec!["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"];
            args.extend_from_slice(extra);
            cli(&args).unwrap().validate().map(|s| s.max_lag)
        };
        assert_eq!(lag(&[]).unwrap(), Some(crate::engine::DEFAULT_MAX_LAG));
        assert_eq!(lag(&["--max-lag", "0"]).unwrap(), None);
        assert_eq!(
            lag(&["--max-lag", "250"]).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(lag(&["--max-lag", "60001"]).unwrap_err().flag, "--max-lag");
        assert!(cli(&["--max-lag", "-1"]).is_err());
    }

    #[test]
    fn flags_of_the_other_mode_are_refused() {
        let stream = |extra: &[&str]| {
            let mut args = vec!["--stream", "-x", "80-198.18.1.2:80", "--offline", "f.pcap"];
            args.extend_from_slice(extra);
            cli(&args).unwrap().validate_stream().map(|_| ())
        };
        assert!(stream(&[]).is_ok());
        assert_eq!(
            stream(&["-s", "198.18.1.3"]).unwrap_err().flag,
            "-s/--intercept"
        );
        assert_eq!(
            stream(&["-c", "198.18.9.x"]).unwrap_err().flag,
            "-c/--client-ip"
        );
        assert_eq!(stream(&["--max-pps", "10"]).unwrap_err().flag, "--max-pps");
        assert_eq!(stream(&["--max-lag", "5"]).unwrap_err().flag, "--max-lag");
        // Raw mode takes --report (its own report) but not the replay-only flags.
        let raw = |extra: &[&str]| {
            let mut args = vec!["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"];
            args.extend_from_slice(extra);
            cli(&args).unwrap().validate()
        };
        assert_eq!(
            raw(&["--report", "r.json", "--report", "r.html"])
                .unwrap()
                .report
                .len(),
            2
        );
        assert_eq!(
            raw(&["--with-responses"]).unwrap_err().flag,
            "--with-responses"
        );
        // The comparison flags are stream mode's; the verdicts work in both.
        for flag in [
            &["--baseline-target", "198.18.1.4:80"][..],
            &["--diff-header", "etag"],
            &["--diff-ignore-path", "$.ts"],
        ] {
            assert!(
                raw(flag).unwrap_err().flag.contains("--baseline-target"),
                "{flag:?}"
            );
        }
        let s = raw(&[
            "--fail-if",
            "endpoint=GET /x: errors > 0",
            "--junit",
            "j.xml",
            "--protocol",
            "http",
        ])
        .unwrap();
        assert_eq!(s.fail_if.len(), 1);
        assert!(s.wants_report());
        assert_eq!(s.protocol, Some(tcpclone::decode::Protocol::Http));
        assert!(!raw(&[]).unwrap().wants_report());
        assert_eq!(raw(&["--fail-if", "p99 >"]).unwrap_err().flag, "--fail-if");
        assert_eq!(raw(&["--protocol", "smtp"]).unwrap_err().flag, "--protocol");
        assert!(stream(&["--fail-if", "p99 > 1", "--junit", "j.xml"]).is_ok());
    }

    #[test]
    fn response_prefix_is_asked_only_with_a_report() {
        let (base, report) = (&[][..], &["--fail-if", "errors > 0"][..]);
        let prefix = |extra: &[&str]| {
            let mut args = vec!["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"];
            args.extend_from_slice(extra);
            cli(&args).unwrap().validate().map(|s| s.response_prefix)
        };
        assert_eq!(prefix(base).unwrap(), 0, "no report: nothing asked");
        assert_eq!(prefix(report).unwrap(), DEFAULT_RESPONSE_PREFIX);
        assert_eq!(
            prefix(&[report, &["--response-prefix", "200"]].concat()).unwrap(),
            200
        );
        assert_eq!(
            prefix(&[report, &["--response-prefix", "0"]].concat()).unwrap(),
            0
        );
        assert!(cli(&["--response-prefix", "257"]).is_err(), "0-256");
        assert_eq!(
            prefix(&["--response-prefix", "32"]).unwrap_err().flag,
            "--response-prefix"
        );
        let stream = cli(&[
            "--stream",
            "-x",
            "80-198.18.1.2:80",
            "--offline",
            "f.pcap",
            "--response-prefix",
            "32",
        ])
        .unwrap()
        .validate_stream()
        .map(|_| ());
        assert_eq!(stream.unwrap_err().flag, "--response-prefix");
    }

    #[test]
    fn capture_mode_defaults_to_immediate() {
        let base = ["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"];
        let block = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            cli(&args).unwrap().validate().unwrap().capture_block_ms
        };
        assert_eq!(block(&[]), None);
        assert_eq!(block(&["--capture-block", "1"]), Some(1));
    }

    #[test]
    fn client_ip_forms() {
        let (ips, nets) = parse_client_ips("198.18.20.0/30,2001:db8::7").unwrap();
        assert_eq!(ips.len(), 3);
        assert_eq!(nets.len(), 2);
        assert!(parse_client_ips("").is_err());
        assert!(parse_client_ips("198.18.0.0/8").is_err());
    }

    #[test]
    fn safety_refuses_local_online_and_client_range() {
        let c = cli(&[
            "-x",
            "198.18.0.1:80-198.18.0.1:80,80-198.18.100.7:80,80-198.18.1.9:80",
            "-s",
            "198.18.1.3",
            "-c",
            "198.18.100.x",
        ])
        .unwrap();
        let s = c.validate().unwrap();
        let p = check_targets(&s, &["198.18.1.9".parse().unwrap()]);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|l| l.contains("online")));
        assert!(p.iter().any(|l| l.contains("-c range")));
        assert!(p.iter().any(|l| l.contains("this (production) host")));
        let ok = cli(&["-x", "80-198.18.1.2:80", "-s", "198.18.1.3"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(check_targets(&ok, &["198.18.1.1".parse().unwrap()]).is_empty());
        // IPv4-mapped IPv6, in the target or in the host's address list, is the IPv4 address.
        let mapped = cli(&["-x", "80-[::ffff:198.18.1.9]:80", "-s", "198.18.1.3"])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(mapped.mappings[0].target, "198.18.1.9:80".parse().unwrap());
        assert_eq!(
            check_targets(&mapped, &["198.18.1.9".parse().unwrap()]).len(),
            1
        );
        assert_eq!(
            check_targets(&ok, &["::ffff:198.18.1.2".parse().unwrap()]).len(),
            1
        );
    }
}
