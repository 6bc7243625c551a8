//! tcpcopy's command line: TCPCopy's letters plus long names, parsed into plain values and
//! validated here; the real objects (capture, raw sockets, engine, channel) are built from
//! [`Settings`] in one place (`live::run`). This module never opens a socket or a file.

use crate::mapping::{parse_mappings, TargetMapping};
use clap::Parser;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use tcpclone::proto::DEFAULT_PORT;

/// Largest number of client addresses a `-c` list may expand to.
const MAX_CLIENT_IPS: usize = 1 << 16;

/// The flags as typed (TCPCopy's letters, long names).
#[derive(Debug, Parser)]
#[command(
    name = "tcpcopy",
    version = tcpclone::build::LONG_VERSION,
    about = "Clone live TCP sessions from a production host to a test server",
    long_about = "Clone live TCP sessions from a production host to a test server.\n\n\
        tcpcopy captures client->service segments, rewrites the destination (and the client \
        address with -c) and sends them through a raw IP socket to the target; intercept, on the \
        host the target routes the client networks to, reports the target's responses back."
)]
// -a scales recorded timing: a capture file's (--offline) or a JetStream recording's (--from).
#[command(group = clap::ArgGroup::new("timed_input").args(["offline", "from"]).multiple(true))]
pub struct Cli {
    /// Mappings `[onlineIP:]port-targetIP:port[,...]` (IPv6 addresses in brackets).
    #[arg(short = 'x', long = "mapping", value_name = "MAPPINGS")]
    pub mapping: Option<String>,
    /// intercept addresses `ip[:port][,...]` (the port defaults to -p).
    #[arg(short = 's', long = "intercept", value_name = "ADDRS")]
    pub intercept: Option<String>,
    /// Capture devices `DEV[,DEV]` (default: all, the `any` device).
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "DEVS",
        default_value = "any"
    )]
    pub interface: String,
    /// pcap filter expression ANDed with the one built from -x.
    #[arg(short = 'F', long = "filter", value_name = "EXPR")]
    pub filter: Option<String>,
    /// Client address rewrite list (`198.18.100.x` means .1–.254; CIDRs and single addresses too).
    #[arg(short = 'c', long = "client-ip", value_name = "LIST")]
    pub client_ip: Option<String>,
    /// Copies of every session sent to the target.
    #[arg(short = 'n', long = "copies", value_name = "N", default_value_t = 1)]
    pub copies: u32,
    /// Port-shift factor for the copies' client ports.
    #[arg(
        short = 'f',
        long = "port-shift",
        value_name = "N",
        default_value_t = 0
    )]
    pub port_shift: u16,
    /// Percentage of sessions copied (by a hash of client address and port).
    #[arg(
        short = 'r',
        long = "percentage",
        value_name = "P",
        default_value_t = 100
    )]
    pub percentage: u32,
    /// Memory budget in MB (capture rings and backlog, response queue, session buffers); over
    /// it new sessions are refused and counted (never an exit).
    #[arg(
        short = 'm',
        long = "max-memory",
        value_name = "MB",
        default_value_t = 1024
    )]
    pub max_memory: u64,
    /// Session timeout in seconds (idle sessions end after it).
    #[arg(
        short = 't',
        long = "session-timeout",
        value_name = "S",
        default_value_t = 600
    )]
    pub session_timeout: u64,
    /// Keep-alive timeout in seconds (idle sessions with nothing outstanding end after it).
    #[arg(
        short = 'k',
        long = "keepalive-timeout",
        value_name = "S",
        default_value_t = 60
    )]
    pub keepalive_timeout: u64,
    /// MTU towards the target: segments are split to fit.
    #[arg(
        short = 'M',
        long = "mtu",
        value_name = "BYTES",
        default_value_t = 1500
    )]
    pub mtu: u32,
    /// MSS towards the target (default: from the MTU).
    #[arg(short = 'D', long = "mss", value_name = "BYTES")]
    pub mss: Option<u32>,
    /// Capture ring per device in MB, shared by the workers, allocated by the kernel at start;
    /// it counts against -m. The ring holds packets back to back in blocks (1 MB holds ~10,000
    /// small segments; the default holds a 200 MB upload burst that the clones, paced by the
    /// target's answers, send more slowly than production received it); with `--capture pcap`
    /// each packet takes a 64 KiB slot (16 per MB) and as much again of backlog counts.
    #[arg(short = 'B', long = "buffer", value_name = "MB", default_value_t = 256)]
    pub buffer: u64,
    /// A capture block goes to the worker at most MS ms after its first packet (or as soon as
    /// it is full). Kernels before 6.18 round it up to their timer tick (4 ms at HZ=250).
    /// With `--capture pcap`: libpcap's block mode instead of waking per packet.
    #[arg(long = "capture-block", value_name = "MS")]
    pub capture_block: Option<u32>,
    /// Capture engine: `ring` (default) reads the kernel's TPACKET_V3 ring in place on the
    /// workers' own threads; `pcap` is libpcap on a thread of its own (one worker only), for
    /// kernels or devices where the ring cannot be opened.
    #[arg(long = "capture", value_name = "ring|pcap", default_value = "ring")]
    pub capture: String,
    /// How clones leave: `packet` (default) sends Ethernet frames to the next hop's MAC (from
    /// the kernel's neighbour table) through a packet socket, bulk data as TCP segments of up
    /// to 64 KB that the kernel or the NIC cuts to the session's MSS; destinations it cannot
    /// serve (no neighbour entry yet, loopback, tun and other devices without Ethernet
    /// headers) take the raw IP socket by themselves. `raw`: always the raw IP socket, one
    /// segment per packet (it honours the host's routing policy and OUTPUT firewall rules,
    /// which the packet path bypasses). With --max-pps/--max-mbps every segment is sent alone.
    #[arg(long = "send", value_name = "packet|raw", default_value = "packet")]
    pub send: String,
    /// Worker threads, each with its share of the capture (PACKET_FANOUT by flow hash), its
    /// own sessions, timers and sender (default: 1 on hosts of up to 4 CPUs, else a quarter of
    /// them, at most 8). Split among workers: -B, -m, --max-pps, --max-mbps. Shared: the
    /// client addresses of -c and -n (never the same one twice), the intercept channel,
    /// --stats, --report and the summary, which add up every worker.
    #[arg(long = "workers", value_name = "N")]
    pub workers: Option<u32>,
    /// Nice value of libpcap's capture threads with `--capture pcap` (-20..=19; 0 leaves them
    /// alone). By default they run ahead of the rest of the host, so that its ring of 64 KiB
    /// slots is drained even when the host is busy. The workers of the default ring capture
    /// run at the ordinary priority: their ring holds far more.
    #[arg(
        long = "capture-nice",
        value_name = "N",
        default_value_t = -10,
        allow_hyphen_values = true
    )]
    pub capture_nice: i32,
    /// Cap on packets per second sent to the targets (packets are held, never dropped).
    #[arg(long = "max-pps", value_name = "N")]
    pub max_pps: Option<f64>,
    /// Cap on megabits per second sent to the targets (IP bytes; held, never dropped).
    #[arg(long = "max-mbps", value_name = "N")]
    pub max_mbps: Option<f64>,
    /// Don't hold a request until the previous response (pipelined protocols).
    #[arg(short = 'W', long = "no-wait")]
    pub no_wait: bool,
    /// Connections to each intercept.
    #[arg(
        short = 'C',
        long = "connections",
        value_name = "N",
        default_value_t = 2
    )]
    pub connections: u32,
    /// intercept's default port.
    #[arg(short = 'p', long = "intercept-port", value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub intercept_port: u16,
    /// Log file (default: standard error).
    #[arg(short = 'l', long = "log", value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// PID file, written at start and removed at exit.
    #[arg(short = 'P', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Print counters every N seconds.
    #[arg(long = "stats", value_name = "N")]
    pub stats: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off unless given; binds that
    /// address only).
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Log lines as `text` or `json` (one JSON object per line, for log shippers).
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Feed the engine from a capture file (pcap or pcapng) instead of an interface.
    #[arg(long = "offline", value_name = "FILE")]
    pub offline: Option<PathBuf>,
    /// Speed-up of --offline (or --from) timing (2 = twice as fast).
    #[arg(
        short = 'a',
        long = "speedup",
        value_name = "F",
        requires = "timed_input"
    )]
    pub speedup: Option<f64>,
    /// File holding the secret shared with intercept (64 hex digits, mode 600): authenticates
    /// and encrypts the channel.
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Run the channel to intercept without --secret-file: unauthenticated and in clear text
    /// (a warning is logged every minute while connected).
    #[arg(long = "insecure", conflicts_with = "secret_file")]
    pub insecure: bool,
    /// After opening capture, raw sockets, log and pid files, switch to this user keeping only
    /// CAP_NET_RAW (when started as root; otherwise only the capabilities are trimmed).
    #[arg(long = "user", value_name = "USER", default_value = "nobody")]
    pub user: String,
    /// Skip the production-safety checks on the target addresses.
    #[arg(long = "force")]
    pub force: bool,
    /// Stream mode: replay each captured session over an ordinary kernel TCP connection (no raw
    /// sockets, no intercept, no routes).
    #[arg(long = "stream")]
    pub stream: bool,
    /// Flags of stream mode only.
    #[command(flatten, next_help_heading = "Stream mode (--stream)")]
    pub stream_opts: crate::stream::StreamOptions,
}

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
    /// --capture-block: the ring's block timeout in ms (`None`: the default, 1 ms); with
    /// --capture pcap, libpcap's block mode (`None`: immediate mode).
    pub capture_block_ms: Option<u32>,
    /// --capture pcap: libpcap on its own thread instead of rings read by the workers.
    pub capture_pcap: bool,
    /// --send packet: the packet socket with segmentation offload where the next hop allows.
    pub send_packet: bool,
    /// --workers.
    pub workers: usize,
    /// --max-pps.
    pub max_pps: Option<f64>,
    /// --max-mbps.
    pub max_mbps: Option<f64>,
    /// -W.
    pub no_wait: bool,
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
}

/// A flag that failed validation: one line naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {why}")]
pub struct FlagError {
    /// The flag, as `-x/--mapping`.
    pub flag: &'static str,
    /// What is wrong.
    pub why: String,
}

fn bad(flag: &'static str, why: impl Into<String>) -> FlagError {
    FlagError {
        flag,
        why: why.into(),
    }
}

impl Cli {
    /// Checks the flags stream mode shares with raw mode (no intercept needed there).
    pub fn validate_stream(&self) -> Result<crate::stream::StreamCommon, FlagError> {
        let mapping = self
            .mapping
            .as_deref()
            .ok_or_else(|| bad("-x/--mapping", "required"))?;
        let mappings = parse_mappings(mapping).map_err(|e| {
            bad(
                "-x/--mapping",
                e.to_string().trim_start_matches("-x: ").to_string(),
            )
        })?;
        if !(1..=100).contains(&self.percentage) {
            return Err(bad(
                "-r/--percentage",
                format!("must be 1..=100, got {}", self.percentage),
            ));
        }
        if self.copies == 0 {
            return Err(bad("-n/--copies", "must be at least 1"));
        }
        // Stream mode connects from this host's own addresses and needs no intercept.
        if self.intercept.is_some() {
            return Err(bad(
                "-s/--intercept",
                "raw mode only (stream mode needs no intercept)",
            ));
        }
        if self.client_ip.is_some() {
            return Err(bad(
                "-c/--client-ip",
                "raw mode only (stream mode connects from this host's addresses; \
                 --proxy-protocol passes the original client on)",
            ));
        }
        if self.max_pps.is_some() || self.max_mbps.is_some() {
            let flag = if self.max_pps.is_some() {
                "--max-pps"
            } else {
                "--max-mbps"
            };
            return Err(bad(
                flag,
                "caps raw mode's packets; stream mode uses --max-sessions-per-sec",
            ));
        }
        let speedup = self.speedup.unwrap_or(1.0);
        if !(speedup.is_finite() && speedup > 0.0 && speedup <= 1e6) {
            return Err(bad(
                "-a/--speedup",
                format!("must be a positive number, got {speedup}"),
            ));
        }
        let source = match &self.offline {
            Some(path) => crate::stream::StreamSource::Offline(path.clone()),
            None => crate::stream::StreamSource::Live {
                interfaces: self
                    .interface
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty() && *d != "any")
                    .map(String::from)
                    .collect(),
                filter: self.filter.clone(),
            },
        };
        Ok(crate::stream::StreamCommon {
            mappings,
            percentage: self.percentage,
            copies: self.copies,
            speedup,
            no_wait: self.no_wait,
            source,
            force: self.force,
        })
    }

    /// Checks the raw-mode flags and turns them into plain settings.
    pub fn validate(&self) -> Result<Settings, FlagError> {
        let mapping = self
            .mapping
            .as_deref()
            .ok_or_else(|| bad("-x/--mapping", "required"))?;
        let mappings = parse_mappings(mapping).map_err(|e| {
            bad(
                "-x/--mapping",
                e.to_string().trim_start_matches("-x: ").to_string(),
            )
        })?;
        let intercepts = match self.intercept.as_deref() {
            Some(s) => {
                parse_intercepts(s, self.intercept_port).map_err(|w| bad("-s/--intercept", w))?
            }
            None => return Err(bad("-s/--intercept", "required (where intercept runs)")),
        };
        let source = match &self.offline {
            Some(path) => {
                let speedup = self.speedup.unwrap_or(1.0);
                if !(speedup.is_finite() && speedup > 0.0 && speedup <= 1e6) {
                    return Err(bad(
                        "-a/--speedup",
                        format!("must be a positive number, got {speedup}"),
                    ));
                }
                Source::Offline {
                    path: path.clone(),
                    speedup,
                }
            }
            None => {
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
                Source::Live { interfaces }
            }
        };
        let (client_ips, client_nets) = match self.client_ip.as_deref() {
            Some(s) => parse_client_ips(s).map_err(|w| bad("-c/--client-ip", w))?,
            None => (Vec::new(), Vec::new()),
        };
        if self.copies == 0 || self.copies > 1000 {
            return Err(bad(
                "-n/--copies",
                format!("must be 1..=1000, got {}", self.copies),
            ));
        }
        if !(1..=100).contains(&self.percentage) {
            return Err(bad(
                "-r/--percentage",
                format!("must be 1..=100, got {}", self.percentage),
            ));
        }
        if self.session_timeout == 0 || self.session_timeout > 86_400 {
            return Err(bad("-t/--session-timeout", "must be 1..=86400 seconds"));
        }
        if self.keepalive_timeout == 0 || self.keepalive_timeout > 86_400 {
            return Err(bad("-k/--keepalive-timeout", "must be 1..=86400 seconds"));
        }
        if !(576..=65_535).contains(&self.mtu) {
            return Err(bad(
                "-M/--mtu",
                format!("must be 576..=65535, got {}", self.mtu),
            ));
        }
        // Largest header overhead: IPv6 (40) + TCP with options (60).
        let mss = match self.mss {
            Some(m) if !(88..=65_495).contains(&m) => {
                return Err(bad("-D/--mss", format!("must be 88..=65495, got {m}")));
            }
            Some(m) if m + 40 > self.mtu => {
                return Err(bad(
                    "-D/--mss",
                    format!("{m} plus headers exceeds the MTU {}", self.mtu),
                ));
            }
            Some(m) => Some(m as u16),
            None => None,
        };
        if self.buffer == 0 || self.buffer > 4096 {
            return Err(bad("-B/--buffer", "must be 1..=4096 MB"));
        }
        if self.max_memory == 0 || self.max_memory > 1 << 20 {
            return Err(bad("-m/--max-memory", "must be 1..=1048576 MB"));
        }
        let send_packet = match self.send.as_str() {
            "packet" => true,
            "raw" => false,
            other => {
                return Err(bad(
                    "--send",
                    format!("`{other}`: must be `packet` or `raw`"),
                ))
            }
        };
        let capture_pcap = match self.capture.as_str() {
            "ring" => false,
            "pcap" => true,
            other => {
                return Err(bad(
                    "--capture",
                    format!("`{other}`: must be `ring` or `pcap`"),
                ))
            }
        };
        let workers = match self.workers {
            Some(0) | Some(65..) => return Err(bad("--workers", "must be 1..=64")),
            Some(n) => n as usize,
            None => default_workers(),
        };
        let workers = match &source {
            Source::Offline { .. } => 1,
            Source::Live { .. } if capture_pcap => {
                if self.workers.is_some_and(|n| n > 1) {
                    return Err(bad("--workers", "more than 1 needs --capture ring"));
                }
                1
            }
            Source::Live { .. } => workers,
        };
        // Per device: the kernel ring; libpcap's thread may hold as much again of backlog
        // while the engine is behind.
        let rings = match &source {
            Source::Live { interfaces } if capture_pcap => {
                2 * self.buffer * interfaces.len() as u64
            }
            Source::Live { interfaces } => self.buffer * interfaces.len() as u64,
            Source::Offline { .. } => 0,
        };
        // And the queues to and from intercept: response headers on their way to the engine,
        // registrations on their way to intercept.
        let responses = (crate::live::channel::RESPONSE_BACKLOG
            + crate::live::channel::COMMAND_BACKLOG)
            .div_ceil(1 << 20);
        if rings + responses >= self.max_memory {
            return Err(bad(
                "-B/--buffer",
                format!(
                    "capture rings (and with --capture pcap their backlog) ({rings} MB) and the \
                     intercept queues ({responses} MB) leave nothing of -m {} MB for sessions",
                    self.max_memory
                ),
            ));
        }
        if !(-20..=19).contains(&self.capture_nice) {
            return Err(bad("--capture-nice", "must be -20..=19"));
        }
        if self
            .capture_block
            .is_some_and(|ms| !(1..=1000).contains(&ms))
        {
            return Err(bad("--capture-block", "must be 1..=1000 ms"));
        }
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
        ];
        if let Some((_, flag)) = stream_only.iter().find(|(given, _)| *given) {
            return Err(bad(flag, "only with --stream"));
        }
        if let Err(e) = tcpclone::limit::RateCap::new(self.max_pps, self.max_mbps) {
            let flag = match e {
                tcpclone::limit::CapError::NotPositive {
                    what: "max pps", ..
                } => "--max-pps",
                _ => "--max-mbps",
            };
            return Err(bad(flag, "must be a positive number"));
        }
        if self.connections == 0 || self.connections > 64 {
            return Err(bad("-C/--connections", "must be 1..=64"));
        }
        if self.intercept_port == 0 {
            return Err(bad("-p/--intercept-port", "must not be 0"));
        }
        let stats = match self.stats {
            Some(0) => return Err(bad("--stats", "must be at least 1 second")),
            Some(n) => Some(Duration::from_secs(n)),
            None => None,
        };
        if let Some(f) = &self.filter {
            if f.trim().is_empty() {
                return Err(bad("-F/--filter", "empty expression"));
            }
        }
        // Last, so that a mistake in another flag is named first.
        if self.secret_file.is_none() && !self.insecure {
            return Err(bad(
                "--secret-file",
                "required: the same secret as intercept's (openssl rand -hex 32 > secret; chmod 600 secret), or --insecure to run the channel unauthenticated",
            ));
        }
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
            engine_memory: (self.max_memory - rings - responses) << 20,
            session_timeout: Duration::from_secs(self.session_timeout),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout),
            mtu: self.mtu as u16,
            mss,
            capture_buffer: (self.buffer << 20) as usize,
            capture_nice: self.capture_nice,
            capture_block_ms: self.capture_block,
            capture_pcap,
            send_packet,
            workers,
            max_pps: self.max_pps,
            max_mbps: self.max_mbps,
            no_wait: self.no_wait,
            connections: self.connections,
            log: self.log.clone(),
            pid_file: self.pid_file.clone(),
            stats,
            metrics: self.metrics,
            force: self.force,
            secret_file: self.secret_file.clone(),
            psk: None,
            report: self.stream_opts.report.clone(),
        })
    }
}

/// Parses `-s ip[:port][,...]` (IPv6 in brackets when a port is given; host names resolve).
pub fn parse_intercepts(list: &str, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Ok(sa) = entry.parse::<SocketAddr>() {
            out.push(sa);
            continue;
        }
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, default_port));
            continue;
        }
        let with_port = if entry.contains(':') {
            entry.to_string()
        } else {
            format!("{entry}:{default_port}")
        };
        let resolved = with_port
            .to_socket_addrs()
            .map_err(|e| format!("bad intercept address `{entry}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{entry}` resolves to no address"))?;
        if resolved.port() == 0 {
            return Err(format!("bad port in `{entry}`"));
        }
        out.push(resolved);
    }
    if out.is_empty() {
        return Err("no intercept address given".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Parses `-c`: `a.b.c.x` (hosts .1–.254), CIDRs (their hosts), single IPv4/IPv6 addresses.
pub fn parse_client_ips(list: &str) -> Result<(Vec<IpAddr>, Vec<IpNet>), String> {
    let mut ips = Vec::new();
    let mut nets = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Some(prefix) = entry
            .strip_suffix(".x")
            .or_else(|| entry.strip_suffix(".X"))
        {
            let base: Ipv4Addr = format!("{prefix}.0")
                .parse()
                .map_err(|_| format!("bad client address pattern `{entry}`"))?;
            let o = base.octets();
            for last in 1..=254u8 {
                ips.push(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], last)));
            }
            nets.push(IpNet::new(IpAddr::V4(base), 24).expect("valid /24"));
        } else if entry.contains('/') {
            let net: IpNet = entry
                .parse()
                .map_err(|_| format!("bad client network `{entry}`"))?;
            let hosts = net.hosts();
            for ip in hosts {
                ips.push(ip);
                if ips.len() > MAX_CLIENT_IPS {
                    return Err(format!(
                        "`{entry}` has more than {MAX_CLIENT_IPS} addresses"
                    ));
                }
            }
            nets.push(net);
        } else {
            let ip: IpAddr = entry
                .parse()
                .map_err(|_| format!("bad client address `{entry}`"))?;
            ips.push(ip);
            nets.push(IpNet::from(ip));
        }
        if ips.len() > MAX_CLIENT_IPS {
            return Err(format!("more than {MAX_CLIENT_IPS} client addresses"));
        }
    }
    if ips.is_empty() {
        return Err("no client address given".into());
    }
    let mut seen = std::collections::HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    Ok((ips, nets))
}

/// Production safety (issue 5): a target must not be a local address of this host, an online
/// address named in -x, or inside a -c range. Returns one line per refused target.
pub fn check_targets(settings: &Settings, local_addrs: &[IpAddr]) -> Vec<String> {
    check_mapping_targets(&settings.mappings, &settings.client_nets, local_addrs)
}

/// [`check_targets`] for any mode: the `-x` targets against this host's addresses, the
/// online addresses of `-x` and the `-c` networks. IPv4-mapped IPv6 addresses are compared as
/// the IPv4 address they are.
pub fn check_mapping_targets(
    mappings: &[TargetMapping],
    client_nets: &[IpNet],
    local_addrs: &[IpAddr],
) -> Vec<String> {
    let local: Vec<IpAddr> = local_addrs.iter().map(|a| a.to_canonical()).collect();
    let mut problems = Vec::new();
    for m in mappings {
        let t = m.target.ip().to_canonical();
        if t.is_unspecified() || t.is_multicast() {
            problems.push(format!("target {t} is not a unicast address"));
        }
        if t.is_loopback() || local.contains(&t) {
            problems.push(format!(
                "target {t} is an address of this (production) host"
            ));
        }
        if mappings
            .iter()
            .any(|o| o.online_ip.map(|a| a.to_canonical()) == Some(t))
        {
            problems.push(format!(
                "target {t} is an online (production) address named in -x"
            ));
        }
        if let Some(net) = client_nets.iter().find(|n| n.contains(&t)) {
            problems.push(format!("target {t} is inside the -c range {net}"));
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            s.engine_memory,
            (512 - 2 * 16 - 5) << 20,
            "-B 16 on two devices (the ring has no backlog) and the intercept queues (4 + 1 MB)"
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
