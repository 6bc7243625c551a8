//! The `replay` binary: flags → validated values → source, editor, pacer and sink built in one
//! place → the one loop of [`replay::pipeline::run`] → the summary.

use anyhow::{bail, Context, Result};
use clap::Parser;
use replay::cli::{Args, Config, Target};
use replay::clock::{SystemClock, Timer, DEFAULT_SPIN};
use replay::edit::{build_editor, output_linktype};
use replay::input::{preload, FileInput, PreloadInput};
use replay::pipeline::{run, Input, Limits, NoReport, Output, RunResult};
use replay::report::{print_summary, Reporter};
use replay::sys;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::capture::{
    CaptureError, CaptureErrorKind, CaptureFormat, CaptureReader, LinkType, PcapWriter, TsPrecision,
};
use tcpclone::pace::{Pacer, Timing};
use tcpclone::stats::ReplayStats;

fn main() -> ExitCode {
    // scripts/gen-docs.sh: man page and completions from these flags.
    tcpclone::docgen::generate_if_asked(<Args as clap::CommandFactory>::command);
    let args = match Args::try_parse() {
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
    let cfg = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replay: {e}");
            return ExitCode::from(2);
        }
    };
    match replay_main(cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("replay: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What the input files say about themselves before any packet is read.
struct Probe {
    linktype: LinkType,
    precision: TsPrecision,
    snaplen: u32,
}

/// Link types replay can send or rewrite: those the packet layouts parse.
const SUPPORTED_LINKTYPES: [LinkType; 6] = tcpclone::wire::LINK_TYPES;

fn probe(cfg: &Config) -> Result<Probe> {
    let mut first = None;
    for path in &cfg.files {
        let r = CaptureReader::open(path)?;
        let lt = r.linktype();
        if !SUPPORTED_LINKTYPES.contains(&lt) {
            let at = match r.format() {
                CaptureFormat::Pcap => "at byte 20 (file header)",
                _ => "in its first interface description block",
            };
            bail!("{}: unknown link type {} {at}; replay handles Ethernet, Linux cooked SLL/SLL2 and raw IP", path.display(), lt.0);
        }
        match &first {
            None => {
                first = Some(Probe {
                    linktype: lt,
                    precision: r.precision(),
                    snaplen: r.snaplen(),
                })
            }
            Some(p) if p.linktype != lt && !cfg.edits.dlt_enet() => {
                bail!(
                    "{}: link type {lt} differs from the first file's {}; replay them separately",
                    path.display(),
                    p.linktype
                )
            }
            Some(_) => {}
        }
    }
    first.context("no input file")
}

fn replay_main(cfg: Config) -> Result<ExitCode> {
    // Edits are compiled first: a bad edit flag is reported before any file is opened.
    let default_mtu = match &cfg.target {
        Target::Interface(name) => {
            let iface =
                sys::interface(name).map_err(|e| anyhow::anyhow!("-i/--intf1 {name}: {e}"))?;
            iface.mtu
        }
        Target::File(_) => 1500,
    };
    let first_editor = match build_editor(&cfg.edits, default_mtu) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("replay: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let probe = probe(&cfg)?;
    let out_linktype = match output_linktype(&cfg.edits, default_mtu, probe.linktype) {
        Ok(lt) => lt,
        Err(e) => {
            eprintln!("replay: {}: {e:#}", cfg.files[0].display());
            return Ok(ExitCode::from(2));
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the SIGINT handler")?;
    }
    let preloaded = if cfg.preload {
        Some(preload(&cfg.files)?)
    } else {
        None
    };
    let make_input = || -> Box<dyn Input + Send> {
        match &preloaded {
            Some(p) => Box::new(PreloadInput::new(Arc::clone(p))),
            None => Box::new(FileInput::new(cfg.files.clone())),
        }
    };

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
    let result: Result<RunResult>;
    match &cfg.target {
        Target::File(path) => {
            let snaplen = if probe.snaplen == 0 {
                tcpclone::capture::DEFAULT_SNAPLEN
            } else {
                probe.snaplen
            };
            let mut sink = PcapWriter::create(path, out_linktype, probe.precision, snaplen)?;
            let mut input = make_input();
            let mut editor = first_editor;
            let mut clock = SystemClock::new(DEFAULT_SPIN).with_timer(cfg.timer);
            result = run(
                &mut *input,
                &mut *editor,
                &mut Pacer::new(Timing::TopSpeed),
                &mut sink,
                &mut clock,
                &mut reporter,
                &cfg.limits,
                &stop,
                &mut stats,
            );
        }
        Target::Interface(name) => {
            let iface =
                sys::interface(name).map_err(|e| anyhow::anyhow!("-i/--intf1 {name}: {e}"))?;
            if iface.hw_type == sys::ARPHRD_ETHER && out_linktype != LinkType::ETHERNET {
                bail!(
                    "{}: a {} capture cannot be sent on Ethernet interface {name}; add --dlt enet to convert it",
                    cfg.files[0].display(),
                    probe.linktype
                );
            }
            if !cfg.timing.is_top_speed() {
                // The paced sender sleeps between packets: make its wake-ups precise and prompt.
                sys::tighten_timer_slack();
                sys::request_short_slice(Duration::from_micros(100));
                if let Some(p) = cfg.rt_priority {
                    if let Err(e) = sys::set_fifo(p) {
                        eprintln!("replay: --rt-priority {p}: {e}; pacing without it");
                    } else if let (Some((runtime, period)), true) =
                        (sys::rt_throttling(), spins_every_gap(&cfg))
                    {
                        // Measured: at 10,000 pps one gap of ~40 ms each second, then a burst,
                        // so 3 % of the gaps late and a p99 of one interval (25-58 us without).
                        eprintln!(
                            "replay: warning: --rt-priority {p}: at this rate the sender spins \
                             through every gap, and the kernel's RT throttling \
                             (kernel.sched_rt_runtime_us {runtime} of {period}) will stop it for \
                             {} ms each {} ms; it pays only where the sender sleeps (below \
                             10,000 pps with -T hybrid, or -T nano)",
                            (period - runtime) / 1000,
                            period / 1000
                        );
                    }
                }
            }
            let origin = Instant::now();
            if cfg.threads == 1 {
                let mut sink =
                    sys::PacketSender::open(&iface, true, cfg.no_tx_ring).map_err(|e| {
                        anyhow::anyhow!("-i/--intf1 {name}: cannot open an AF_PACKET socket: {e}")
                    })?;
                let mut input = make_input();
                let mut editor = first_editor;
                let mut clock =
                    SystemClock::with_origin(origin, DEFAULT_SPIN).with_timer(cfg.timer);
                result = run(
                    &mut *input,
                    &mut *editor,
                    &mut Pacer::new(cfg.timing).with_catch_up(cfg.catch_up),
                    &mut sink,
                    &mut clock,
                    &mut reporter,
                    &cfg.limits,
                    &stop,
                    &mut stats,
                );
            } else {
                drop(first_editor);
                result = run_threads(&cfg, &iface, origin, &make_input, &stop, &mut stats);
            }
        }
    }
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
        eprintln!("{note}");
    }
    if let Some(e) = error {
        let hint = match e.downcast_ref::<CaptureError>() {
            Some(CaptureError { kind: CaptureErrorKind::LinkTypeMismatch { .. }, .. }) => {
                " (a pcap holds one link type: the first one's; add --dlt enet to convert Linux cooked frames)"
            }
            _ => "",
        };
        eprintln!("replay: {e:#}{hint}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--threads N` at top speed: sender thread `i` sends input packets `i, i+N, i+2N, …` through
/// its own socket and TX ring; counters are added up at the end.
fn run_threads(
    cfg: &Config,
    iface: &sys::Interface,
    origin: Instant,
    make_input: &(dyn Fn() -> Box<dyn Input + Send> + Sync),
    stop: &AtomicBool,
    total: &mut ReplayStats,
) -> Result<RunResult> {
    let n = cfg.threads as u64;
    let results: Vec<Result<(RunResult, ReplayStats)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let mut input = make_input();
                s.spawn(move || -> Result<(RunResult, ReplayStats)> {
                    let mut editor = build_editor(&cfg.edits, iface.mtu)?;
                    let mut sink = sys::PacketSender::open(iface, true, cfg.no_tx_ring)?;
                    let mut clock =
                        SystemClock::with_origin(origin, DEFAULT_SPIN).with_timer(cfg.timer);
                    let limits = Limits {
                        shard: (i, n),
                        ..cfg.limits
                    };
                    let mut stats = ReplayStats::default();
                    let r = run(
                        &mut *input,
                        &mut *editor,
                        &mut Pacer::new(Timing::TopSpeed),
                        &mut sink,
                        &mut clock,
                        &mut NoReport,
                        &limits,
                        stop,
                        &mut stats,
                    )?;
                    sink.finish()?;
                    Ok((r, stats))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sender thread panicked")))
            })
            .collect()
    });
    let mut last: Option<RunResult> = None;
    let mut first_err = None;
    for r in results {
        match r {
            Ok((res, st)) => {
                total.merge(&st);
                if last.is_none_or(|l| res.end_ns > l.end_ns) {
                    last = Some(res);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => last.context("no sender thread ran"),
    }
}

/// Whether the paced sender will spin through whole gaps rather than sleep in them: always with
/// `-T gtod`; with the default timer at a fixed rate whose gap is within the starting spin
/// window (10,000 pps and up). Capture timing and `--mbps` vary, so they are not judged.
fn spins_every_gap(cfg: &Config) -> bool {
    match (cfg.timer, cfg.timing) {
        (Timer::Gtod, _) => true,
        (Timer::Hybrid, Timing::Pps(pps)) => 1e9 / pps <= DEFAULT_SPIN.as_nanos() as f64,
        _ => false,
    }
}

/// A note for a paced run whose sleeping sender left more than 1 % of its packets late: the
/// machine is slow to give a sleeping thread its CPU back, and `-T gtod` does not sleep.
fn late_note(cfg: &Config, stats: &ReplayStats) -> Option<String> {
    let sent = stats.packets_sent;
    // A sender that spins every gap (-T gtod, or hybrid at 10,000 pps and up) has no sleep
    // to blame, and -T gtod would change nothing.
    let slow = !cfg.timing.is_top_speed()
        && !spins_every_gap(cfg)
        && sent >= 100
        && stats.late * 100 > sent;
    slow.then(|| {
        format!(
            "replay: note: {} of {sent} packets ({:.1} %) left half a gap or more late: this \
             machine is slow to run the sender again after a sleep (a busy host, or a VM); \
             -T gtod spins instead of sleeping, as tcpreplay does (a whole core)",
            stats.late,
            stats.late as f64 * 100.0 / sent as f64
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Args::try_parse_from(std::iter::once("replay").chain(args.iter().copied()))
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn late_note_only_for_a_sleeping_sender_over_one_percent_late() {
        let mut stats = ReplayStats::default();
        for _ in 0..1000 {
            stats.sent(60);
        }
        stats.late = 10;
        let paced = config(&["-i", "e", "--pps", "1000", "a"]);
        assert!(late_note(&paced, &stats).is_none(), "1 % is not over 1 %");
        stats.late = 11;
        let note = late_note(&paced, &stats).unwrap();
        assert!(
            note.contains("11 of 1000 packets (1.1 %)") && note.contains("-T gtod"),
            "{note}"
        );
        assert!(late_note(
            &config(&["-i", "e", "--pps", "1000", "-T", "nano", "a"]),
            &stats
        )
        .is_some());
        assert!(late_note(
            &config(&["-i", "e", "--pps", "1000", "-T", "gtod", "a"]),
            &stats
        )
        .is_none());
        assert!(late_note(&config(&["-i", "e", "-t", "a"]), &stats).is_none());
        // Hybrid at 10,000 pps spins every gap: no sleep to blame.
        assert!(late_note(&config(&["-i", "e", "--pps", "10000", "a"]), &stats).is_none());
    }
}
