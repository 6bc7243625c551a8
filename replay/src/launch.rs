//! What `main` runs, in the order it must run: look at the inputs ([`probe`]), open everything
//! that needs a path or a privilege ([`Opened`]), give the privileges up, then send (one
//! thread, or [`run_threads`]) and judge the run ([`late_note`]).
//!
//! The order is the point: every file and socket is open before the switch to `--user`, and
//! the switch happens before any sender thread starts (capabilities are per thread).

use crate::cli::{Config, Target};
use crate::clock::{SystemClock, Timer, DEFAULT_SPIN};
use crate::input::{preload, FileInput, PreloadInput};
use crate::pipeline::{run, Input, NoProgress, RunResult, StopLimits};
use crate::sys;
use anyhow::{bail, Context, Result};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tcpclone::capture::{CaptureFormat, CaptureReader, LinkType, PcapWriter, TsPrecision};
use tcpclone::pace::{Pacer, Timing};
use tcpclone::stats::ReplayStats;

/// What the input files say about themselves before any packet is read.
pub struct Probe {
    /// The first file's link type.
    pub linktype: LinkType,
    /// Its timestamp precision.
    pub precision: TsPrecision,
    /// Its snap length (0: not given).
    pub snaplen: u32,
}

/// Link types replay can send or rewrite: those the packet layouts parse.
const SUPPORTED_LINKTYPES: [LinkType; 6] = tcpclone::wire::LINK_TYPES;

/// Reads every input's header: all must open, have a link type replay handles, and agree on it
/// (unless `--dlt enet` converts them).
pub fn probe(cfg: &Config) -> Result<Probe> {
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

/// A sender thread's input: the files (opened now) or the preloaded packets.
pub type BoxedInput = Box<dyn Input + Send>;

/// Where the packets go, opened.
pub enum Sink {
    /// `-w FILE`, created.
    File(crate::input::FileOutput),
    /// `-i IFACE`: one AF_PACKET sender per thread, bound.
    Interface(sys::ReplayInterface, Vec<sys::ReplaySender>),
}

/// Everything the run reads or writes, open before the privileges go.
pub struct Opened {
    /// One input per sender thread (one when writing a file).
    pub inputs: Vec<BoxedInput>,
    /// The output.
    pub sink: Sink,
}

/// Opens the inputs (or preloads them, `-K`), the output file or the send sockets.
/// `out_linktype` is what the editor produces; `iface` is the interface already looked up.
pub fn open_all(
    cfg: &Config,
    probe: &Probe,
    out_linktype: LinkType,
    iface: Option<sys::ReplayInterface>,
) -> Result<Opened> {
    let preloaded = if cfg.preload {
        Some(preload(&cfg.files)?)
    } else {
        None
    };
    let threads = match (&cfg.target, cfg.threads) {
        (Target::Interface(_), n) => n.max(1),
        (Target::File(_), _) => 1,
    };
    let inputs = (0..threads)
        .map(|_| -> Result<BoxedInput> {
            Ok(match &preloaded {
                Some(p) => Box::new(PreloadInput::new(Arc::clone(p))),
                None => Box::new(FileInput::open_all(&cfg.files)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sink = match (&cfg.target, iface) {
        (Target::File(path), _) => {
            let snaplen = if probe.snaplen == 0 {
                tcpclone::capture::DEFAULT_SNAPLEN
            } else {
                probe.snaplen
            };
            Sink::File(PcapWriter::create(
                path,
                out_linktype,
                probe.precision,
                snaplen,
            )?)
        }
        (Target::Interface(name), Some(iface)) => {
            let senders = (0..threads)
                .map(|_| {
                    sys::ReplaySender::open(&iface, true, cfg.no_tx_ring).map_err(|e| {
                        anyhow::anyhow!("-i/--intf1 {name}: cannot open an AF_PACKET socket: {e}")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Sink::Interface(iface, senders)
        }
        (Target::Interface(name), None) => bail!("-i/--intf1 {name}: interface not looked up"),
    };
    Ok(Opened { inputs, sink })
}

/// `--threads N` at top speed: sender thread `i` sends input packets `i, i+N, i+2N, …` through
/// its own socket and TX ring; counters are added up at the end.
pub fn run_threads(
    cfg: &Config,
    iface: &sys::ReplayInterface,
    lanes: Vec<(BoxedInput, sys::ReplaySender)>,
    origin: Instant,
    stop: &AtomicBool,
    total: &mut ReplayStats,
) -> Result<RunResult> {
    let n = lanes.len() as u64;
    let results: Vec<Result<(RunResult, ReplayStats)>> = std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .into_iter()
            .enumerate()
            .map(|(i, (mut input, mut sink))| {
                s.spawn(move || -> Result<(RunResult, ReplayStats)> {
                    let mut editor = crate::edit::build_editor(&cfg.edits, iface.mtu)?;
                    let mut clock =
                        SystemClock::with_origin(origin, DEFAULT_SPIN).with_timer(cfg.timer);
                    let limits = StopLimits {
                        shard: (i as u64, n),
                        ..cfg.limits
                    };
                    let mut stats = ReplayStats::default();
                    let r = run(
                        &mut *input,
                        &mut *editor,
                        &mut Pacer::new(Timing::TopSpeed),
                        &mut sink,
                        &mut clock,
                        &mut NoProgress,
                        &limits,
                        stop,
                        &mut stats,
                    )?;
                    crate::pipeline::Output::finish(&mut sink)?;
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
pub fn spins_every_gap(cfg: &Config) -> bool {
    match (cfg.timer, cfg.timing) {
        (Timer::Gtod, _) => true,
        (Timer::Hybrid, Timing::Pps(pps)) => 1e9 / pps <= DEFAULT_SPIN.as_nanos() as f64,
        _ => false,
    }
}

/// A note for a paced run whose sleeping sender left more than 1 % of its packets late: the
/// machine is slow to give a sleeping thread its CPU back, and `-T gtod` does not sleep.
pub fn late_note(cfg: &Config, stats: &ReplayStats) -> Option<String> {
    let sent = stats.packets_sent;
    // A sender that spins every gap (-T gtod, or hybrid at 10,000 pps and up) has no sleep
    // to blame, and -T gtod would change nothing.
    let slow = !cfg.timing.is_top_speed()
        && !spins_every_gap(cfg)
        && sent >= 100
        && stats.late * 100 > sent;
    slow.then(|| {
        format!(
            "note: {} of {sent} packets ({:.1} %) left half a gap or more late: this \
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
    use crate::cli::ReplayArgs;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        ReplayArgs::try_parse_from(std::iter::once("replay").chain(args.iter().copied()))
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

    #[test]
    fn inputs_are_open_before_the_run_and_each_pass_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pcap");
        let mut w =
            PcapWriter::create(&path, LinkType::ETHERNET, TsPrecision::Micro, 65535).unwrap();
        for i in 0..3u8 {
            w.write_packet(
                tcpclone::capture::Timestamp(u64::from(i) * 1000),
                60,
                &[i; 60],
            )
            .unwrap();
        }
        drop(w);
        let mut input = FileInput::open_all(std::slice::from_ref(&path)).unwrap();
        // Gone from its path: what is read is what was opened.
        std::fs::remove_file(&path).unwrap();
        for _pass in 0..2 {
            input.open(0).unwrap();
            let mut firsts = Vec::new();
            while let Some(p) = input.next_packet().unwrap() {
                firsts.push(p.data[0]);
            }
            assert_eq!(firsts, [0, 1, 2]);
        }
        let missing = FileInput::open_all(&[dir.path().join("none.pcap")]);
        assert!(missing
            .err()
            .unwrap()
            .to_string()
            .contains("none.pcap: cannot open"));
    }
}
