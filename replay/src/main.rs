//! The `replay` binary: flags → validated values → everything opened in one place
//! ([`replay::launch`]) → the switch to `--user` → the one loop of [`replay::pipeline::run`]
//! → the summary.

use anyhow::{bail, Result};
use clap::Parser;
use replay::cli::{Config, ReplayArgs, Target};
use replay::clock::{SystemClock, DEFAULT_SPIN};
use replay::edit::{build_editor, output_linktype};
use replay::launch::{late_note, open_all, probe, run_threads, spins_every_gap, Sink};
use replay::pipeline::{run, RunResult};
use replay::report::{print_summary, Reporter};
use replay::sys;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::capture::{CaptureError, CaptureErrorKind, LinkType};
use tcpclone::pace::{Pacer, Timing};
use tcpclone::stats::ReplayStats;

fn main() -> ExitCode {
    // scripts/gen-docs.sh: man page and completions from these flags.
    tcpclone::docgen::generate_if_asked(<ReplayArgs as clap::CommandFactory>::command);
    let args = match ReplayArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line naming the flag, as every other error.
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("replay: {}", line.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let json_logs = args.log_format == "json";
    init_logging(json_logs);
    let log = Log { json: json_logs };
    let cfg = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            log.error(&e.to_string());
            return ExitCode::from(2);
        }
    };
    match replay_main(cfg, log) {
        Ok(code) => code,
        Err(e) => {
            log.error(&format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// `--log-format json`: warnings and errors as JSON lines through tracing; info (the privilege
/// switch) is shown with `RUST_LOG=info`. Text keeps the one-line `replay: ...` messages.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.with_ansi(false).init();
    }
}

/// Where a message for the operator goes: `replay: ...` on stderr, or a JSON log line.
#[derive(Clone, Copy)]
struct Log {
    json: bool,
}

impl Log {
    fn error(self, msg: &str) {
        if self.json {
            tracing::error!("{msg}");
        } else {
            eprintln!("replay: {msg}");
        }
    }
    fn warn(self, msg: &str) {
        if self.json {
            tracing::warn!("{msg}");
        } else {
            eprintln!("replay: {msg}");
        }
    }
}

fn replay_main(cfg: Config, log: Log) -> Result<ExitCode> {
    // Edits are compiled first: a bad edit flag is reported before any file is opened.
    let iface = match &cfg.target {
        Target::Interface(name) => {
            Some(sys::interface(name).map_err(|e| anyhow::anyhow!("-i/--intf1 {name}: {e}"))?)
        }
        Target::File(_) => None,
    };
    let default_mtu = iface.as_ref().map_or(1500, |i| i.mtu);
    let first_editor = match build_editor(&cfg.edits, default_mtu) {
        Ok(e) => e,
        Err(e) => {
            log.error(&format!("{e:#}"));
            return Ok(ExitCode::from(2));
        }
    };
    let probe = probe(&cfg)?;
    let out_linktype = match output_linktype(&cfg.edits, default_mtu, probe.linktype) {
        Ok(lt) => lt,
        Err(e) => {
            log.error(&format!("{}: {e:#}", cfg.files[0].display()));
            return Ok(ExitCode::from(2));
        }
    };
    if let (Target::Interface(name), Some(i)) = (&cfg.target, &iface) {
        if i.hw_type == sys::ARPHRD_ETHER && out_linktype != LinkType::ETHERNET {
            bail!(
                "{}: a {} capture cannot be sent on Ethernet interface {name}; add --dlt enet to convert it",
                cfg.files[0].display(),
                probe.linktype
            );
        }
        if !cfg.timing.is_top_speed() {
            tune_paced_sender(&cfg, log);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| anyhow::anyhow!("installing the SIGINT handler: {e}"))?;
    }
    // Least privilege: every input, the output and the send sockets are open now; the user
    // gets CAP_NET_RAW only when sending on an interface, nothing when writing a file. Before
    // any thread starts (capabilities are per thread; the metrics server is one).
    let opened = open_all(&cfg, &probe, out_linktype, iface)?;
    let net_raw = matches!(cfg.target, Target::Interface(_));
    if let Err(e) = tcpclone::sys::drop_privileges(&cfg.user, net_raw) {
        log.error(&format!("--user: dropping privileges: {e}"));
        return Ok(ExitCode::from(2));
    }

    let started = Instant::now();
    let mut stats = ReplayStats::default();
    let published = cfg
        .metrics
        .map(|_| Arc::new(std::sync::Mutex::new(ReplayStats::default())));
    let _metrics = match (cfg.metrics, &published) {
        (Some(addr), Some(p)) => Some(replay::metrics::serve(addr, p.clone())?),
        _ => None,
    };
    let mut reporter = Reporter::new(cfg.stats_every.map(|d| d.as_nanos() as u64), !cfg.json)
        .with_metrics(published.clone());
    let mut inputs = opened.inputs;
    let result: Result<RunResult> = match opened.sink {
        Sink::File(mut sink) => {
            let mut input = inputs.remove(0);
            let mut editor = first_editor;
            let mut clock = SystemClock::new(DEFAULT_SPIN).with_timer(cfg.timer);
            run(
                &mut *input,
                &mut *editor,
                &mut Pacer::new(Timing::TopSpeed),
                &mut sink,
                &mut clock,
                &mut reporter,
                &cfg.limits,
                &stop,
                &mut stats,
            )
        }
        Sink::Interface(iface, mut senders) => {
            let origin = Instant::now();
            if senders.len() == 1 {
                let (mut input, mut sink) = (inputs.remove(0), senders.remove(0));
                let mut editor = first_editor;
                let mut clock =
                    SystemClock::with_origin(origin, DEFAULT_SPIN).with_timer(cfg.timer);
                run(
                    &mut *input,
                    &mut *editor,
                    &mut Pacer::new(cfg.timing).with_catch_up(cfg.catch_up),
                    &mut sink,
                    &mut clock,
                    &mut reporter,
                    &cfg.limits,
                    &stop,
                    &mut stats,
                )
            } else {
                drop(first_editor);
                let lanes = inputs.into_iter().zip(senders).collect();
                run_threads(&cfg, &iface, lanes, origin, &stop, &mut stats)
            }
        }
    };
    reporter.finish();
    if let Some(p) = &published {
        *p.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }
    let (end_ns, error) = match result {
        // As tcpreplay: from the first packet sent to the end of the last.
        Ok(r) => (r.end_ns - r.first_ns.unwrap_or(0).min(r.end_ns), None),
        Err(e) => (started.elapsed().as_nanos() as u64, Some(e)),
    };
    if cfg.json {
        print_summary(&serde_json::to_string(&stats.summary(end_ns))?);
    } else {
        print_summary(&stats.summary(end_ns));
    }
    if let Some(note) = late_note(&cfg, &stats) {
        log.warn(&note);
    }
    if let Some(e) = error {
        let hint = match e.downcast_ref::<CaptureError>() {
            Some(CaptureError { kind: CaptureErrorKind::LinkTypeMismatch { .. }, .. }) => {
                " (a pcap holds one link type: the first one's; add --dlt enet to convert Linux cooked frames)"
            }
            _ => "",
        };
        log.error(&format!("{e:#}{hint}"));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The paced sender sleeps between packets: make its wake-ups precise and prompt (on this
/// thread, which sends; before the privilege switch, as SCHED_FIFO needs CAP_SYS_NICE).
fn tune_paced_sender(cfg: &Config, log: Log) {
    sys::tighten_timer_slack();
    sys::request_short_slice(Duration::from_micros(100));
    let Some(p) = cfg.rt_priority else {
        return;
    };
    if let Err(e) = sys::set_fifo(p) {
        log.warn(&format!("--rt-priority {p}: {e}; pacing without it"));
    } else if let (Some((runtime, period)), true) =
        (replay::sched::rt_throttling(), spins_every_gap(cfg))
    {
        // What this costs at high rates is measured in docs/benchmarks.md (--rt-priority).
        log.warn(&format!(
            "warning: --rt-priority {p}: at this rate the sender spins through every gap, and \
             the kernel's RT throttling (kernel.sched_rt_runtime_us {runtime} of {period}) will \
             stop it for {} ms each {} ms; it pays only where the sender sleeps (below 10,000 \
             pps with -T hybrid, or -T nano)",
            (period - runtime) / 1000,
            period / 1000
        ));
    }
}
