//! The one replay loop: read → edit → pace → send, over traits so tests can drive it with fake
//! inputs, sinks and a virtual clock.
//!
//! Nothing here allocates per packet: the edit step writes into one reused [`Frames`] buffer, the
//! packet handed to the sink borrows it, counters have fixed reason slots. The loop never reads
//! the system clock itself; the [`Clock`] it is given does.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use tcpclone::capture::{FailReason, LinkType, Packet, PacketSink, SendOutcome};
use tcpclone::pace::Pacer;
use tcpclone::stats::ReplayStats;

/// The input files of a run, each readable from its start again (for `--loop`).
pub trait Input {
    /// How many files one pass goes through.
    fn files(&self) -> usize;
    /// Positions the input at the start of file `index` (0-based).
    fn open(&mut self, index: usize) -> Result<()>;
    /// Next packet of the open file; `Ok(None)` at its end. Errors name the file and byte offset.
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>>;
}

/// What the edit step did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Send the input bytes as they are (no edit asked, or none applied).
    Unchanged,
    /// The packet did not parse: the input bytes go out unchanged, and this is counted.
    Unparsed(&'static str),
    /// Changed: send the frame(s) in the [`Frames`] buffer.
    Rewritten,
    /// Changed and cut short (e.g. `--mtu-trunc`): send the frame(s) in the buffer.
    Truncated(&'static str),
    /// Not to be sent at all (counted as failed with this reason).
    Dropped(&'static str),
}

/// One or more output frames built by the edit step, in one reused buffer.
#[derive(Debug, Default)]
pub struct Frames {
    /// The frames' bytes, back to back.
    pub buf: Vec<u8>,
    /// End offset in `buf` of each frame (one entry per frame; empty = one frame, all of `buf`).
    pub ends: Vec<usize>,
}

impl Frames {
    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
    /// Calls `f` on each frame in order.
    fn each(&self, mut f: impl FnMut(&[u8]) -> Result<bool>) -> Result<bool> {
        if self.ends.is_empty() {
            return f(&self.buf);
        }
        let mut start = 0;
        for &end in &self.ends {
            if !f(&self.buf[start..end])? {
                return Ok(false);
            }
            start = end;
        }
        Ok(true)
    }
}

/// The edit step (tcprewrite's edits), applied the same way whether sending or writing.
pub trait Editor {
    /// Link type of the frames this editor emits for input of `input` link type.
    fn output_linktype(&self, input: LinkType) -> LinkType {
        input
    }
    /// Edits `packet`; for [`Edit::Rewritten`] and [`Edit::Truncated`] the frames to send are in
    /// `out` (cleared by the caller).
    fn edit(&mut self, packet: &Packet<'_>, out: &mut Frames) -> Edit;
}

/// The editor that changes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEdit;

impl Editor for NoEdit {
    fn edit(&mut self, _packet: &Packet<'_>, _out: &mut Frames) -> Edit {
        Edit::Unchanged
    }
}

/// A time source for the loop: nanoseconds since the start of the run, and a way to wait.
pub trait Clock {
    /// Nanoseconds since the run started.
    fn now(&mut self) -> u64;
    /// Returns once `now() >= due`, or early when `stop` is set.
    fn wait_until(&mut self, due: u64, stop: &AtomicBool);
}

/// A sink that may also report sends it had to retry (ring full, ENOBUFS).
pub trait Output: PacketSink {
    /// Retries since the last call, by reason, added into `stats` (then forgotten here).
    fn drain_retries(&mut self, _stats: &mut ReplayStats) {}
    /// Pushes out everything and waits until it has left (end of run); defaults to `flush`.
    fn finish(&mut self) -> Result<(), Self::Error> {
        self.flush()
    }
}

/// Receives the counters now and then (progress bar, `--stats N`).
pub trait Report {
    /// Called every so often with the counters so far and the clock.
    fn tick(&mut self, stats: &ReplayStats, now_ns: u64);
}

/// A report that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReport;

impl Report for NoReport {
    fn tick(&mut self, _stats: &ReplayStats, _now_ns: u64) {}
}

/// When the loop stops by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Passes over the inputs (`--loop`); 0 = forever.
    pub loops: u64,
    /// Input packets to process at most (`--limit`).
    pub limit: Option<u64>,
    /// Nanoseconds to run at most (`--duration`).
    pub duration_ns: Option<u64>,
    /// Send only input packets whose index ≡ `shard.0` (mod `shard.1`) (`--threads`).
    pub shard: (u64, u64),
}

impl Limits {
    /// One pass, no limit, no shard.
    pub fn once() -> Self {
        Limits {
            loops: 1,
            limit: None,
            duration_ns: None,
            shard: (0, 1),
        }
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every pass over every input was done.
    Done,
    /// `--limit` packets were processed.
    Limit,
    /// `--duration` was reached.
    Duration,
    /// The stop flag was raised (SIGINT).
    Interrupted,
}

/// What ended the run, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    /// Why the loop ended.
    pub end: End,
    /// Clock reading at the first packet sent (None when nothing was sent).
    pub first_ns: Option<u64>,
    /// Clock reading when the loop ended (after the final flush).
    pub end_ns: u64,
}

/// Maps a sink refusal to the reason printed in the summary.
pub fn fail_reason(r: FailReason) -> &'static str {
    match r {
        FailReason::TooLarge => "larger than the interface MTU",
        FailReason::KernelRefused => "refused by the kernel",
    }
}

/// Runs the replay: every packet of every pass is read, edited, paced and sent, with counts in
/// `stats`. On an input error, everything before it has been sent and the sink flushed, and the
/// error is returned (the counters stay valid for the summary).
#[allow(clippy::too_many_arguments)]
pub fn run<I, E, S, C, R>(
    input: &mut I,
    editor: &mut E,
    pacer: &mut Pacer,
    sink: &mut S,
    clock: &mut C,
    report: &mut R,
    limits: &Limits,
    stop: &AtomicBool,
    stats: &mut ReplayStats,
) -> Result<RunResult>
where
    I: Input + ?Sized,
    E: Editor + ?Sized,
    S: Output + ?Sized,
    C: Clock + ?Sized,
    R: Report + ?Sized,
{
    let mut frames = Frames::default();
    let paced = !pacer.timing().is_top_speed();
    let (shard_index, shard_count) = (limits.shard.0, limits.shard.1.max(1));
    let mut processed: u64 = 0; // input packets read in this run
    let mut first_ns = None;
    let mut pass: u64 = 0;
    let end = 'run: loop {
        if limits.loops != 0 && pass >= limits.loops {
            break End::Done;
        }
        pass += 1;
        let before_pass = processed;
        for file in 0..input.files() {
            input.open(file)?;
            pacer.new_segment();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break 'run End::Interrupted;
                }
                if limits.limit.is_some_and(|l| processed >= l) {
                    break 'run End::Limit;
                }
                let packet = match input.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        sink.finish()
                            .context("flushing output after an input error")?;
                        sink.drain_retries(stats);
                        return Err(e);
                    }
                };
                let index = processed;
                processed += 1;
                if index % shard_count != shard_index {
                    continue;
                }
                frames.clear();
                let edit = editor.edit(&packet, &mut frames);
                let use_frames = match edit {
                    Edit::Unchanged => false,
                    Edit::Unparsed(why) => {
                        stats.unparsed.incr(why);
                        false
                    }
                    Edit::Rewritten => {
                        stats.rewritten += 1;
                        true
                    }
                    Edit::Truncated(why) => {
                        stats.rewritten += 1;
                        stats.truncated.incr(why);
                        true
                    }
                    Edit::Dropped(why) => {
                        stats.failed.incr(why);
                        continue;
                    }
                };
                let linktype = if use_frames {
                    editor.output_linktype(packet.linktype)
                } else {
                    packet.linktype
                };
                let ts = packet.ts;
                let orig_len = packet.orig_len;
                let mut send_one = |data: &[u8]| -> Result<bool> {
                    if let Some(due) = pacer.schedule(ts, data.len()) {
                        if limits.duration_ns.is_some_and(|d| due >= d) {
                            return Ok(false);
                        }
                        clock.wait_until(due, stop);
                        if stop.load(Ordering::Relaxed) {
                            return Ok(false);
                        }
                    }
                    // A rewritten frame has no snapped part: its wire length is its length.
                    let orig_len = if use_frames {
                        data.len() as u32
                    } else {
                        orig_len
                    };
                    let out = Packet {
                        ts,
                        orig_len,
                        linktype,
                        data,
                    };
                    match sink.send(&out).context("sending")? {
                        SendOutcome::Sent => {
                            if first_ns.is_none() {
                                first_ns = Some(clock.now());
                            }
                            stats.sent(data.len());
                        }
                        SendOutcome::Failed(r) => stats.failed.incr(fail_reason(r)),
                    }
                    if paced {
                        sink.flush().context("sending")?;
                    }
                    Ok(true)
                };
                let go_on = if use_frames {
                    frames.each(&mut send_one)?
                } else {
                    send_one(packet.data)?
                };
                if !go_on {
                    break 'run if stop.load(Ordering::Relaxed) {
                        End::Interrupted
                    } else {
                        End::Duration
                    };
                }
                // Clock checks: every packet when paced (cheap next to the wait), every 256 at top speed.
                if paced || processed & 255 == 0 {
                    let now = clock.now();
                    if limits.duration_ns.is_some_and(|d| now >= d) {
                        break 'run End::Duration;
                    }
                    sink.drain_retries(stats);
                    report.tick(stats, now);
                }
            }
        }
        if processed == before_pass {
            // An empty input would make `--loop 0` spin forever.
            break End::Done;
        }
    };
    sink.finish().context("flushing output")?;
    sink.drain_retries(stats);
    let end_ns = clock.now();
    Ok(RunResult {
        end,
        first_ns,
        end_ns,
    })
}
