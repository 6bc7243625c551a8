//! The `intercept` binary: capture the target's responses, report their headers to tcpcopy.

use anyhow::{bail, Context};
use clap::Parser;
use intercept::capture::{Backend, DeviceCapture};
use intercept::server::{serve, ServerConfig, Stats};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tcpclone::proto::secure::{read_secret_file, Psk};
use tcpclone::sys::LogFile;

/// Captures the test server's responses and sends their IP + TCP headers to the tcpcopy
/// instance that registered each session.
#[derive(Parser, Debug)]
#[command(name = "intercept", version = tcpclone::build::LONG_VERSION)]
struct InterceptArgs {
    /// Capture device(s), comma-separated (e.g. `eth1` or `any`).
    #[arg(
        short = 'i',
        long = "interface",
        value_delimiter = ',',
        default_value = "any"
    )]
    interface: Vec<String>,
    /// BPF filter selecting the target's responses (e.g. `tcp and src port 6379`). Required.
    #[arg(short = 'F', long = "filter")]
    filter: String,
    /// TCP port tcpcopy connects to.
    #[arg(short = 'p', long = "port", default_value_t = tcpclone::proto::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on (default: all addresses, which needs --secret-file or --allow).
    #[arg(short = 'b', long = "bind")]
    bind: Option<IpAddr>,
    /// Log to this file instead of stderr.
    #[arg(short = 'l', long = "log")]
    log: Option<PathBuf>,
    /// Write the process id to this file.
    #[arg(short = 'P', long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// After opening capture, socket, log and pid files, switch to this user keeping only
    /// CAP_NET_RAW (when started as root; otherwise only the capabilities are trimmed).
    #[arg(long = "user", default_value = "nobody")]
    user: String,
    /// Print the counters every N seconds.
    #[arg(long = "stats", value_name = "N")]
    stats: Option<u64>,
    /// File holding the shared secret (64 hex digits, mode 600): authenticates and encrypts
    /// the channel to tcpcopy.
    #[arg(long = "secret-file")]
    secret_file: Option<PathBuf>,
    /// Run without --secret-file: anyone who can reach the port can register sessions and
    /// read response headers (a warning is logged every minute while tcpcopy is connected).
    #[arg(long = "insecure", conflicts_with = "secret_file")]
    insecure: bool,
    /// Most sessions one tcpcopy connection may register; more are refused and counted.
    #[arg(long = "max-sessions-per-peer", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions_per_peer: u64,
    /// Seconds a departed tcpcopy keeps its sessions against other tcpcopy instances (the
    /// same instance reconnecting takes them back at once).
    #[arg(long = "owner-grace", value_name = "SECS", default_value_t = 10)]
    owner_grace: u64,
    /// Peer networks allowed to connect, comma-separated CIDRs (default: all).
    #[arg(long = "allow", value_delimiter = ',')]
    allow: Vec<String>,
    /// Most connections still in their opening (a new one evicts the oldest).
    #[arg(long = "max-pending", default_value_t = 128)]
    max_pending: usize,
    /// Most tcpcopy connections.
    #[arg(long = "max-peers", default_value_t = 1024)]
    max_peers: usize,
    /// Capture back end: `ring` (a TPACKET_V2 ring read in place, each response handed over as
    /// it is written, one hand-off per wake-up), `blocks` (the ring in TPACKET_V3 blocks: fewer
    /// wake-ups for intercept and tcpcopy, but a response may wait 1 ms, which holds a clone of
    /// a keep-alive client to about 1,000 requests/s per connection) or `pcap` (libpcap in
    /// immediate mode, one hand-off per packet).
    #[arg(long = "capture", value_enum, default_value_t = CaptureArg::Ring)]
    capture: CaptureArg,
    /// Rings per device (`--capture ring`), and runtime threads to read them: the device's
    /// traffic is spread over that many rings by flow.
    #[arg(long = "workers", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off unless given; binds that
    /// address only).
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Report the first N bytes of each response's payload (at most 256) to a tcpcopy that
    /// asks for them (its `--report`/`--fail-if`: HTTP status, Redis error per endpoint);
    /// 0 (the default): headers only. The capture keeps N more bytes per packet.
    #[arg(long = "response-prefix", value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    response_prefix: u16,
    /// Log lines as `text` or `json` (one JSON object per line, for log shippers).
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// `--capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CaptureArg {
    Ring,
    Blocks,
    Pcap,
}

fn parse_allow(list: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!("--allow: {s:?} is not a CIDR (e.g. 198.18.0.0/15) or address")
                })
        })
        .collect()
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<Psk> {
    read_secret_file(path).context("--secret-file")
}

/// Refuses to serve an open, unauthenticated channel to the whole network by mistake.
fn check_exposure(args: &InterceptArgs) -> anyhow::Result<()> {
    if args.secret_file.is_none() && !args.insecure {
        bail!(
            "--secret-file is required: give both tcpcopy and intercept the same secret \
             (openssl rand -hex 32 > secret; chmod 600 secret), or --insecure to run unauthenticated"
        );
    }
    let wildcard = args.bind.is_none_or(|a| a.is_unspecified());
    if wildcard && args.secret_file.is_none() && args.allow.is_empty() {
        bail!(
            "--insecure on every address: give -b ADDR (the address tcpcopy connects to) or \
             --allow CIDR, or use --secret-file"
        );
    }
    Ok(())
}

fn instance_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut x = t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Sets up logging to stderr or to `-l FILE`, as text or one JSON object per line; returns
/// the file, for SIGHUP to reopen.
fn init_logging(log: Option<&PathBuf>, json: bool) -> anyhow::Result<Option<LogFile>> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, file) = match log {
        Some(p) => {
            let f = LogFile::open(p).with_context(|| format!("-l {}", p.display()))?;
            let w = f.clone();
            (BoxMakeWriter::new(move || w.clone()), Some(f))
        }
        None => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(file.is_none() && !json)
        .with_writer(writer);
    if json {
        b.json().init();
    } else {
        b.init();
    }
    Ok(file)
}

fn bind(addr: Option<IpAddr>, port: u16) -> anyhow::Result<std::net::TcpListener> {
    let candidates: Vec<SocketAddr> = match addr {
        Some(a) => vec![SocketAddr::new(a, port)],
        // All addresses: dual-stack [::] when IPv6 is available, else 0.0.0.0.
        None => vec![
            SocketAddr::new(IpAddr::from([0u16; 8]), port),
            SocketAddr::new(IpAddr::from([0u8; 4]), port),
        ],
    };
    let mut last = None;
    for a in candidates {
        match std::net::TcpListener::bind(a) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(l);
            }
            Err(e) => last = Some((a, e)),
        }
    }
    let (a, e) = last.expect("at least one candidate");
    bail!("cannot listen on {a}: {e}")
}

fn main() {
    // scripts/gen-docs.sh: man page and completions from these flags.
    tcpclone::docgen::generate_if_asked(<InterceptArgs as clap::CommandFactory>::command);
    let args = InterceptArgs::parse();
    if let Err(e) = run(args) {
        eprintln!("intercept: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: InterceptArgs) -> anyhow::Result<()> {
    if args.filter.trim().is_empty() {
        bail!("-F/--filter must select the target's responses, e.g. 'tcp and src port 6379'");
    }
    let backend = match args.capture {
        CaptureArg::Ring => Backend::Ring,
        CaptureArg::Blocks => Backend::Blocks,
        CaptureArg::Pcap => Backend::Pcap,
    };
    let workers = usize::from(args.workers);
    if backend == Backend::Pcap && workers > 1 {
        bail!("--workers {workers} needs --capture ring or blocks (libpcap captures with one thread per device)");
    }
    let allow = parse_allow(&args.allow)?;
    check_exposure(&args)?;
    // Read once, as root, before the drop: the file need not be readable by --user.
    let psk = args.secret_file.as_deref().map(read_secret).transpose()?;
    let logfile = init_logging(args.log.as_ref(), args.log_format == "json")?;
    match intercept::sys::raise_nofile_limit() {
        Ok((old, new)) if new > old => {
            tracing::debug!("open-file limit raised from {old} to {new}")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let mut captures = Vec::new();
    for dev in &args.interface {
        captures.extend(intercept::capture::open(
            dev,
            &args.filter,
            backend,
            workers,
            usize::from(args.response_prefix),
        )?);
    }
    let listener = bind(args.bind, args.port)?;
    let local = listener.local_addr()?;
    if let Some(p) = &args.pid_file {
        let f = tcpclone::sys::write_pid_file(p).with_context(|| format!("-P {}", p.display()))?;
        // Handed to --user so that it can remove it at exit.
        tcpclone::sys::give_to_user(&f, p, &args.user)?;
    }
    // Everything privileged is open: become --user, keeping only CAP_NET_RAW (to reopen a
    // capture whose interface went down). Before any thread starts: capset is per thread.
    if let Some(f) = &logfile {
        f.give_to_user(&args.user)?;
    }
    tcpclone::sys::drop_privileges(&args.user, true).context("dropping privileges")?;
    let insecure_warning = format!(
        "--insecure: the channel on {local} is unauthenticated and unencrypted; \
         anyone who can reach it can register sessions and read response headers"
    );
    if psk.is_none() {
        eprintln!("intercept: warning: {insecure_warning}");
    }
    let cfg = ServerConfig {
        psk,
        allow,
        max_pending: args.max_pending,
        max_peers: args.max_peers,
        instance: instance_id(),
        response_prefix: args.response_prefix,
        router: intercept::router::RouterConfig {
            max_sessions_per_peer: usize::try_from(args.max_sessions_per_peer)
                .unwrap_or(usize::MAX),
            owner_grace: Duration::from_secs(args.owner_grace),
            ..Default::default()
        },
        ..ServerConfig::default()
    };
    let insecure = cfg.psk.is_none();
    tracing::info!(
        "listening on {local}, capturing on {} with filter {:?} ({}){}",
        args.interface.join(","),
        args.filter,
        match backend {
            Backend::Ring => format!("ring, {workers} per device"),
            Backend::Blocks => format!("ring in 1 ms blocks, {workers} per device"),
            Backend::Pcap => "libpcap".to_string(),
        },
        if cfg.psk.is_some() {
            ", secret required"
        } else {
            ""
        }
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    // One runtime thread per ring (one by default): the rings' tasks, the router and the
    // connections' writers then run on one thread, a single wake-up per batch of answers;
    // a second thread for one ring only moved the writers away from the router, for no gain.
    let ring_count = captures
        .iter()
        .filter(|c| matches!(c, DeviceCapture::Ring(_)))
        .count();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ring_count.clamp(1, 64))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (tx, rx) = tokio::sync::mpsc::channel(intercept::capture::queue_len(backend));
    let mut running = Vec::new();
    for c in captures {
        running.push(c.start(rt.handle(), tx.clone(), stats.clone(), stop.clone())?);
    }
    // --metrics: the queue's depth through a weak handle, so that the router still sees the
    // queue close when the captures end.
    let _metrics = match args.metrics {
        Some(addr) => {
            let weak = tx.downgrade();
            let depth: intercept::metrics::QueueDepth = Box::new(move || {
                weak.upgrade()
                    .map(|t| (t.max_capacity() - t.capacity()) as u64)
            });
            let m = intercept::metrics::serve(addr, stats.clone(), depth)?;
            tracing::info!("serving /metrics on {}", m.local_addr());
            Some(m)
        }
        None => None,
    };
    drop(tx);

    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (sd_tx, sd_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(listener, cfg, rx, stats.clone(), sd_rx));
        if insecure {
            // Once a minute while someone is connected, so the log shows it for as long as
            // it matters (and not 10,000 times a minute).
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(Duration::from_secs(60));
                loop {
                    iv.tick().await;
                    if stats.peers_now.load(Relaxed) > 0 {
                        tracing::warn!("{insecure_warning}");
                    }
                }
            });
        }
        if let Some(n) = args.stats.filter(|&n| n > 0) {
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(Duration::from_secs(n));
                iv.tick().await;
                loop {
                    iv.tick().await;
                    tracing::info!("stats: {}", stats.line());
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break }
                _ = hup.recv() => match &logfile {
                    Some(f) => match f.reopen() {
                        Ok(()) => tracing::info!("SIGHUP: log file {} reopened", f.path().display()),
                        Err(e) => tracing::warn!("SIGHUP: cannot reopen {}: {e}; still writing to the old file", f.path().display()),
                    },
                    None => tracing::info!("SIGHUP: no log file to reopen"),
                },
            }
        }
        let _ = sd_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
        // The captures read their last kernel drops for the summary as they end.
        stop.store(true, Relaxed);
        for r in running {
            r.finish(Duration::from_millis(300)).await;
        }
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    let line = stats.line();
    tracing::info!("summary: {line}");
    if args.log.is_some() {
        eprintln!("intercept: summary: {line}");
    }
    if let Some(p) = &args.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
