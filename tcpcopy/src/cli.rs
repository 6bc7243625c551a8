//! tcpcopy's command line: TCPCopy's letters plus long names, parsed into plain values. What
//! the values must be, per mode, is checked in [`crate::config`] (`Cli::validate` for raw mode,
//! `Cli::validate_stream` for stream mode), which produces the settings the modes consume; the
//! real objects (capture, raw sockets, engine, channel) are built from those in one place
//! (`live::run`). This module never opens a socket or a file and imports nothing of `live`.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use tcpclone::proto::DEFAULT_PORT;

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
    /// Never shed connections when the capture overflows. By default a worker that cannot
    /// keep up, its ring overflowing (the kernel drops frames) or 7/8 full and not draining
    /// while it reads, stops cloning new connections, and while half its ring or more waits
    /// and does not drain gives up its heaviest live clones (a RST to the target), as many as
    /// carried the traffic it could not keep up with; under a quarter it clones new
    /// connections again and lets the shed ones back one per 50 ms, each from its next
    /// request. The target then gets whole requests (counted as `shed`) instead of frames
    /// lost from every session. A burst the ring holds sheds nothing. The default ring
    /// capture only.
    #[arg(long = "no-shed")]
    pub no_shed: bool,
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
    /// Nice value of the workers that clone (0..=19). A positive value lets the service being
    /// cloned go first when the host's cores are all busy: the clones then lag behind it, held
    /// in the capture ring, and catch up when the host has time again (a worker whose ring is
    /// nearly full and not draining sheds connections, see --no-shed).
    #[arg(long = "nice", value_name = "N", default_value_t = 0)]
    pub nice: i32,
    /// Cap on packets per second sent to the targets (packets are held, never dropped).
    #[arg(long = "max-pps", value_name = "N")]
    pub max_pps: Option<f64>,
    /// Cap on megabits per second sent to the targets (IP bytes; held, never dropped).
    #[arg(long = "max-mbps", value_name = "N")]
    pub max_mbps: Option<f64>,
    /// Don't hold a request until the previous response (pipelined protocols).
    #[arg(short = 'W', long = "no-wait")]
    pub no_wait: bool,
    /// A request waits for the target's answer to the previous one at most until it is MS
    /// behind production (when its client sent it); then it goes behind the unanswered one, as
    /// a pipelining client's would, so that a target slower than production does not fall
    /// further behind with every request. A closing FIN always waits for the answer. 0: wait
    /// for the answer (or the response timeout) however far behind. Raw mode only.
    /// [default: 20]
    #[arg(long = "max-lag", value_name = "MS")]
    pub max_lag: Option<u64>,
    /// Connections to each intercept, per worker (each worker registers its sessions, and
    /// reads their responses, on its own). One carries what a worker can clone: a second
    /// splits intercept's batches of answers in two, and each half costs the worker a read.
    #[arg(
        short = 'C',
        long = "connections",
        value_name = "N",
        default_value_t = 1
    )]
    pub connections: u32,
    /// With a report (--report, --fail-if, --junit): the first N bytes (0-256, default 64) of
    /// each of the target's answers to ask intercept for, where the report reads the answer's
    /// class (an HTTP status line, a Redis error prefix). intercept grants at most its own
    /// --response-prefix; 0 counts endpoints without classes.
    #[arg(
        long = "response-prefix",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(0..=256)
    )]
    pub response_prefix: Option<u16>,
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
    /// Replay to targets the production-safety checks refuse (one warning each). Every mode
    /// refuses a local or loopback target, an -x online address and a -c address (also when
    /// this host's addresses cannot be read); offline stream mode and --from also refuse the
    /// server the traffic was captured from. A test server on this host needs --force.
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
