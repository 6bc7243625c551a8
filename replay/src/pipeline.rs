//! The one replay loop: read → edit → pace → send, over traits so tests can drive it with fake
//! inputs, sinks and a virtual clock.
//!
//! Nothing here allocates per packet: the edit step writes into one reused [`EditedFrames`]
//! buffer, the packet handed to the sink borrows it, counters have fixed reason slots. The loop
//! never reads the system clock itself; the [`Clock`] it is given does.

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
    /// Changed: send the frame(s) in the [`EditedFrames`] buffer.
    Rewritten,
    /// Changed and cut short (e.g. `--mtu-trunc`): send the frame(s) in the buffer.
    Truncated(&'static str),
    /// Not to be sent at all (counted as failed with this reason).
    Dropped(&'static str),
}

/// One or more output frames built by the edit step, in one reused buffer.
#[derive(Debug, Default)]
pub struct EditedFrames {
    /// The frames' bytes, back to back.
    pub buf: Vec<u8>,
    /// End offset in `buf` of each frame (one entry per frame; empty = one frame, all of `buf`).
    pub ends: Vec<usize>,
    /// Wire length of a single output frame when it differs from its captured length (snapped
    /// records); `None` = the frame's length.
    pub orig_len: Option<u32>,
}

impl EditedFrames {
    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.orig_len = None;
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
    fn edit(&mut self, packet: &Packet<'_>, out: &mut EditedFrames) -> Edit;
}

/// The editor that changes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEdit;

impl Editor for NoEdit {
    fn edit(&mut self, _packet: &Packet<'_>, _out: &mut EditedFrames) -> Edit {
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
pub trait Progress {
    /// Called every so often with the counters so far and the clock.
    fn tick(&mut self, stats: &ReplayStats, now_ns: u64);
}

/// A report that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn tick(&mut self, _stats: &ReplayStats, _now_ns: u64) {}
}

/// When the loop stops by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopLimits {
    /// Passes over the inputs (`--loop`); 0 = forever.
    pub loops: u64,
    /// Input packets to process at most (`--limit`).
    pub limit: Option<u64>,
    /// Nanoseconds to run at most (`--duration`).
    pub duration_ns: Option<u64>,
    /// Send only input packets whose index ≡ `shard.0` (mod `shard.1`) (`--threads`).
    pub shard: (u64, u64),
}

impl StopLimits {
    /// One pass, no limit, no shard.
    pub fn once() -> Self {
        StopLimits {
            loops: 1,
            limit: None,
            duration_ns: None,
            shard: (0, 1),
        }
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
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
    pub end: RunEnd,
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
    limits: &StopLimits,
    stop: &AtomicBool,
    stats: &mut ReplayStats,
) -> Result<RunResult>
where
    I: Input + ?Sized,
    E: Editor + ?Sized,
    S: Output + ?Sized,
    C: Clock + ?Sized,
    R: Progress + ?Sized,
{
    let mut frames = EditedFrames::default();
    let paced = !pacer.timing().is_top_speed();
    let (shard_index, shard_count) = (limits.shard.0, limits.shard.1.max(1));
    let mut processed: u64 = 0; // input packets read in this run
    let mut first_ns = None;
    let mut origin: Option<u64> = None;
    let mut catch_up = pacer.catch_up();
    let mut pass: u64 = 0;
    let end = 'run: loop {
        if limits.loops != 0 && pass >= limits.loops {
            break RunEnd::Done;
        }
        pass += 1;
        let before_pass = processed;
        for file in 0..input.files() {
            input.open(file)?;
            pacer.new_segment();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break 'run RunEnd::Interrupted;
                }
                if limits.limit.is_some_and(|l| processed >= l) {
                    break 'run RunEnd::Limit;
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
                let frames_orig_len = if frames.ends.len() > 1 {
                    None
                } else {
                    frames.orig_len
                };
                let mut send_one = |data: &[u8]| -> Result<bool> {
                    let mut on_time = false;
                    if let Some(due) = pacer.schedule(ts, data.len()) {
                        if limits.duration_ns.is_some_and(|d| due >= d) {
                            return Ok(false);
                        }
                        // Due times count from the first packet, so start-up work (opening the
                        // socket, reading the first record) does not make it late.
                        let base = *origin.get_or_insert_with(|| clock.now());
                        let at = base.saturating_add(due);
                        // Behind schedule, gaps shrink by a bounded share until caught up
                        // (see `CatchUp`), so one stall does not also make a back-to-back gap.
                        let release = catch_up.release(at);
                        let mut now = clock.now();
                        if now < release {
                            // Nothing else is due before this packet: hand over what is queued
                            // (when far behind schedule, packets stay batched until caught up).
                            sink.flush()?;
                            clock.wait_until(release, stop);
                            if stop.load(Ordering::Relaxed) {
                                return Ok(false);
                            }
                            on_time = true;
                            now = clock.now();
                        }
                        // Behind schedule (a stall not yet repaid), a packet due before the end
                        // may come up after it: --duration is wall time, as in tcpreplay.
                        if limits
                            .duration_ns
                            .is_some_and(|d| now.saturating_sub(base) >= d)
                        {
                            return Ok(false);
                        }
                        // Late from a wait that woke up late, or from getting here late.
                        if catch_up.is_late(at, now) {
                            stats.late += 1;
                        }
                        catch_up.sent(at, now);
                    }
                    let orig_len = if use_frames {
                        frames_orig_len
                            .unwrap_or(data.len() as u32)
                            .max(data.len() as u32)
                    } else {
                        orig_len
                    };
                    let out = Packet {
                        ts,
                        orig_len,
                        linktype,
                        data,
                    };
                    match sink.send(&out)? {
                        SendOutcome::Sent => {
                            if on_time {
                                // Waited for: it leaves now, not when the next one is queued.
                                sink.flush()?;
                            }
                            if first_ns.is_none() {
                                first_ns = Some(clock.now());
                            }
                            stats.sent(data.len());
                        }
                        SendOutcome::Failed(r) => stats.failed.incr(fail_reason(r)),
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
                        RunEnd::Interrupted
                    } else {
                        RunEnd::Duration
                    };
                }
                // Clock checks: every packet when paced (cheap next to the wait), every 256 at top speed.
                if paced || processed & 255 == 0 {
                    let now = clock.now();
                    // (Paced runs stop on due times above, counted from the first packet.)
                    if !paced && limits.duration_ns.is_some_and(|d| now >= d) {
                        break 'run RunEnd::Duration;
                    }
                    sink.drain_retries(stats);
                    report.tick(stats, now);
                }
            }
        }
        if processed == before_pass {
            // An empty input would make `--loop 0` spin forever.
            break RunEnd::Done;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tcpclone::capture::Timestamp;
    use tcpclone::pace::Timing;

    /// Files of frames in memory; `fail_after` makes file 0 fail after that many packets.
    struct Mem {
        files: Vec<Vec<Vec<u8>>>,
        file: usize,
        next: usize,
        fail_after: Option<usize>,
    }

    impl Mem {
        fn new(files: Vec<Vec<Vec<u8>>>) -> Self {
            Mem {
                files,
                file: 0,
                next: 0,
                fail_after: None,
            }
        }
    }

    impl Input for Mem {
        fn files(&self) -> usize {
            self.files.len()
        }
        fn open(&mut self, index: usize) -> Result<()> {
            self.file = index;
            self.next = 0;
            Ok(())
        }
        fn next_packet(&mut self) -> Result<Option<Packet<'_>>> {
            if self.file == 0 && self.fail_after == Some(self.next) {
                anyhow::bail!("in.pcap: record cut short at byte 1234");
            }
            let i = self.next;
            self.next += 1;
            Ok(self.files[self.file].get(i).map(|f| Packet {
                ts: Timestamp(1_000_000 * i as u64),
                orig_len: f.len() as u32,
                linktype: LinkType::ETHERNET,
                data: f,
            }))
        }
    }

    /// Keeps what it was sent; refuses frames over `max` bytes.
    struct Keep {
        sent: Vec<(u64, Vec<u8>)>,
        max: usize,
        clock: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl PacketSink for Keep {
        type Error = std::io::Error;
        fn send(&mut self, p: &Packet<'_>) -> std::io::Result<SendOutcome> {
            if p.data.len() > self.max {
                return Ok(SendOutcome::Failed(FailReason::TooLarge));
            }
            self.sent.push((self.clock.get(), p.data.to_vec()));
            Ok(SendOutcome::Sent)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Output for Keep {}

    struct Virtual(std::rc::Rc<std::cell::Cell<u64>>);
    impl Clock for Virtual {
        fn now(&mut self) -> u64 {
            self.0.get()
        }
        fn wait_until(&mut self, due: u64, _stop: &AtomicBool) {
            self.0.set(self.0.get().max(due));
        }
    }

    /// Rewrites frames starting with 1, refuses to parse frames starting with 0xff.
    struct Marks;
    impl Editor for Marks {
        fn edit(&mut self, p: &Packet<'_>, out: &mut EditedFrames) -> Edit {
            match p.data[0] {
                0xff => Edit::Unparsed("not IP"),
                1 => {
                    out.buf.extend_from_slice(p.data);
                    out.buf[1] = 0xaa;
                    Edit::Rewritten
                }
                2 => {
                    // Split in two frames (as --tso-split does).
                    out.buf.extend_from_slice(p.data);
                    out.buf.extend_from_slice(p.data);
                    out.ends.extend([p.data.len(), 2 * p.data.len()]);
                    Edit::Rewritten
                }
                _ => Edit::Unchanged,
            }
        }
    }

    fn go(
        input: &mut Mem,
        timing: Timing,
        limits: StopLimits,
        max: usize,
    ) -> (Result<RunResult>, Keep, ReplayStats) {
        let t = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut sink = Keep {
            sent: Vec::new(),
            max,
            clock: t.clone(),
        };
        let mut stats = ReplayStats::default();
        let stop = AtomicBool::new(false);
        let r = run(
            input,
            &mut Marks,
            &mut Pacer::new(timing),
            &mut sink,
            &mut Virtual(t),
            &mut NoProgress,
            &limits,
            &stop,
            &mut stats,
        );
        (r, sink, stats)
    }

    fn frame(tag: u8, i: u8, len: usize) -> Vec<u8> {
        let mut f = vec![i; len];
        f[0] = tag;
        f
    }

    #[test]
    fn sends_everything_in_order_and_counts_edits() {
        let files = vec![
            vec![
                frame(0, 1, 60),
                frame(1, 2, 60),
                frame(0xff, 3, 60),
                frame(2, 4, 70),
            ],
            vec![frame(0, 5, 64)],
        ];
        let mut input = Mem::new(files.clone());
        let (r, sink, stats) = go(&mut input, Timing::TopSpeed, StopLimits::once(), 1500);
        assert_eq!(r.unwrap().end, RunEnd::Done);
        let sent: Vec<Vec<u8>> = sink.sent.into_iter().map(|(_, f)| f).collect();
        let mut rewritten = files[0][1].clone();
        rewritten[1] = 0xaa;
        assert_eq!(
            sent,
            vec![
                files[0][0].clone(),
                rewritten,
                files[0][2].clone(),
                files[0][3].clone(),
                files[0][3].clone(),
                files[1][0].clone()
            ]
        );
        assert_eq!(stats.packets_sent, 6);
        assert_eq!(stats.bytes_sent, 60 * 3 + 70 * 2 + 64);
        assert_eq!(stats.rewritten, 2);
        assert_eq!(stats.unparsed.get("not IP"), 1);
    }

    #[test]
    fn oversize_frames_fail_with_their_reason() {
        let mut input = Mem::new(vec![vec![
            frame(0, 1, 60),
            frame(0, 2, 9000),
            frame(0, 3, 60),
        ]]);
        let (r, sink, stats) = go(&mut input, Timing::TopSpeed, StopLimits::once(), 1514);
        r.unwrap();
        assert_eq!(sink.sent.len(), 2);
        assert_eq!(stats.failed.get("larger than the interface MTU"), 1);
    }

    #[test]
    fn loops_limit_and_duration() {
        let file: Vec<Vec<u8>> = (0..10).map(|i| frame(0, i, 60)).collect();
        let mut input = Mem::new(vec![file.clone()]);
        let (r, sink, _) = go(
            &mut input,
            Timing::TopSpeed,
            StopLimits {
                loops: 3,
                ..StopLimits::once()
            },
            1500,
        );
        assert_eq!(r.unwrap().end, RunEnd::Done);
        assert_eq!(sink.sent.len(), 30);
        assert_eq!(sink.sent[10].1, file[0]);

        let mut input = Mem::new(vec![file.clone()]);
        let (r, sink, _) = go(
            &mut input,
            Timing::TopSpeed,
            StopLimits {
                loops: 0,
                limit: Some(25),
                ..StopLimits::once()
            },
            1500,
        );
        assert_eq!(r.unwrap().end, RunEnd::Limit);
        assert_eq!(sink.sent.len(), 25);

        // 1,000 pps for 1.5 s, forever: packets due at 0..1499 ms go, the next is not waited for.
        let mut input = Mem::new(vec![file]);
        let limits = StopLimits {
            loops: 0,
            duration_ns: Some(1_500_000_000),
            ..StopLimits::once()
        };
        let (r, sink, _) = go(&mut input, Timing::pps(1000.0).unwrap(), limits, 1500);
        assert_eq!(r.unwrap().end, RunEnd::Duration);
        assert_eq!(sink.sent.len(), 1500);
        assert_eq!(sink.sent.last().unwrap().0, 1_499_000_000);
    }

    #[test]
    fn capture_timing_restarts_per_loop_and_sends_on_time() {
        let file: Vec<Vec<u8>> = (0..3).map(|i| frame(0, i, 60)).collect();
        let mut input = Mem::new(vec![file]);
        let (r, sink, _) = go(
            &mut input,
            Timing::multiplier(2.0).unwrap(),
            StopLimits {
                loops: 2,
                ..StopLimits::once()
            },
            1500,
        );
        r.unwrap();
        let times: Vec<u64> = sink.sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            vec![0, 500_000, 1_000_000, 1_000_000, 1_500_000, 2_000_000]
        );
    }

    #[test]
    fn input_error_keeps_what_came_before() {
        let mut input = Mem::new(vec![(0..10).map(|i| frame(0, i, 60)).collect()]);
        input.fail_after = Some(4);
        let (r, sink, stats) = go(&mut input, Timing::TopSpeed, StopLimits::once(), 1500);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("byte 1234"), "{e}");
        assert_eq!(sink.sent.len(), 4);
        assert_eq!(stats.packets_sent, 4);
    }

    #[test]
    fn empty_input_with_loop_forever_ends() {
        let mut input = Mem::new(vec![vec![]]);
        let (r, sink, _) = go(
            &mut input,
            Timing::TopSpeed,
            StopLimits {
                loops: 0,
                ..StopLimits::once()
            },
            1500,
        );
        assert_eq!(r.unwrap().end, RunEnd::Done);
        assert!(sink.sent.is_empty());
    }

    #[test]
    fn shards_split_the_input_between_threads() {
        let file: Vec<Vec<u8>> = (0..10).map(|i| frame(0, i, 60)).collect();
        let mut all = Vec::new();
        for i in 0..3 {
            let mut input = Mem::new(vec![file.clone()]);
            let (r, sink, _) = go(
                &mut input,
                Timing::TopSpeed,
                StopLimits {
                    shard: (i, 3),
                    ..StopLimits::once()
                },
                1500,
            );
            r.unwrap();
            all.extend(sink.sent.into_iter().map(|(_, f)| f[1]));
        }
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<u8>>());
    }

    /// A clock whose first wait for a due time at or after `stall_at` ends `stall_ns` late (the
    /// sender's CPU was taken away).
    struct Stalling {
        t: std::rc::Rc<std::cell::Cell<u64>>,
        stall_at: u64,
        stall_ns: u64,
    }
    impl Clock for Stalling {
        fn now(&mut self) -> u64 {
            self.t.get()
        }
        fn wait_until(&mut self, due: u64, _stop: &AtomicBool) {
            let mut at = self.t.get().max(due);
            if due >= self.stall_at && self.stall_ns > 0 {
                at += std::mem::take(&mut self.stall_ns);
            }
            self.t.set(at);
        }
    }

    /// Runs 16 packets paced by `pacer` against a clock that stalls 2.2 ms at 5 ms: the send
    /// times in 0.1 ms, the counters and how the run ended.
    fn stalled_run(pacer: Pacer, limits: StopLimits) -> (Vec<u64>, ReplayStats, RunEnd) {
        let file: Vec<Vec<u8>> = (0..16).map(|i| frame(0, i, 60)).collect();
        let t = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut sink = Keep {
            sent: Vec::new(),
            max: 1500,
            clock: t.clone(),
        };
        let mut clock = Stalling {
            t,
            stall_at: 5_000_000,
            stall_ns: 2_200_000,
        };
        let mut stats = ReplayStats::default();
        let end = run(
            &mut Mem::new(vec![file]),
            &mut NoEdit,
            &mut pacer.clone(),
            &mut sink,
            &mut clock,
            &mut NoProgress,
            &limits,
            &AtomicBool::new(false),
            &mut stats,
        )
        .unwrap()
        .end;
        let times = sink.sent.iter().map(|(t, _)| t / 100_000).collect();
        (times, stats, end)
    }

    /// A 2.2 ms stall at 1,000 pps: with the default catch-up the next gaps are a little short
    /// until back on schedule; with `--catch-up 1` the sender catches up back to back, as
    /// tcpreplay does. Either way the schedule itself does not move, and the one late packet
    /// is counted.
    #[test]
    fn a_late_packet_is_caught_up_at_a_bounded_share() {
        let times = |pacer: Pacer| {
            let (times, stats, _) = stalled_run(pacer, StopLimits::once());
            // The stalled packet is the one late packet, whatever the catch-up.
            assert_eq!(stats.late, 1);
            times
        };
        let pps = Pacer::new(Timing::pps(1000.0).unwrap());
        // In 0.1 ms: packet 5 leaves at 7.2 ms. Repaying all a share of 0.5 allows, every 0.5 ms
        // until packet 10 is on time; back to back (share 1), packets 6 and 7 at once.
        assert_eq!(
            times(
                pps.clone()
                    .with_catch_up(tcpclone::pace::CatchUp::new(0.5, 10_000_000).with_spread(1))
            ),
            vec![0, 10, 20, 30, 40, 72, 77, 82, 87, 92, 100, 110, 120, 130, 140, 150]
        );
        assert_eq!(
            times(
                pps.clone()
                    .with_catch_up(tcpclone::pace::CatchUp::new(1.0, 10_000_000))
            ),
            vec![0, 10, 20, 30, 40, 72, 72, 72, 80, 90, 100, 110, 120, 130, 140, 150]
        );
        // The default repays 1/32 of the 2.2 ms a gap: gaps of ~0.93 ms, off by under 70 µs.
        assert_eq!(
            times(pps),
            vec![0, 10, 20, 30, 40, 72, 81, 90, 100, 109, 118, 128, 137, 147, 156, 166]
        );
    }

    /// `--duration` is wall time: a sender still repaying a stall stops at the end even though
    /// packets due before it are left (10 ms at 1,000 pps with a 2.2 ms stall at 5 ms: the
    /// packets due at 0-7 ms leave by 9.9 ms; the one due at 8 ms would leave after 10 ms).
    #[test]
    fn duration_stops_on_wall_time_while_behind() {
        let limits = StopLimits {
            duration_ns: Some(10_000_000),
            ..StopLimits::once()
        };
        let (times, _, end) = stalled_run(Pacer::new(Timing::pps(1000.0).unwrap()), limits);
        assert_eq!(end, RunEnd::Duration);
        assert_eq!(times, vec![0, 10, 20, 30, 40, 72, 81, 90]);
    }

    /// A sink and an input writing into one event log.
    type Log = std::rc::Rc<std::cell::RefCell<Vec<String>>>;
    struct LogInput(Mem, Log);
    impl Input for LogInput {
        fn files(&self) -> usize {
            self.0.files()
        }
        fn open(&mut self, index: usize) -> Result<()> {
            self.0.open(index)
        }
        fn next_packet(&mut self) -> Result<Option<Packet<'_>>> {
            self.1.borrow_mut().push("read".into());
            self.0.next_packet()
        }
    }
    struct LogSink(Log);
    impl PacketSink for LogSink {
        type Error = std::io::Error;
        fn send(&mut self, p: &Packet<'_>) -> std::io::Result<SendOutcome> {
            self.0.borrow_mut().push(format!("send {}", p.data[1]));
            Ok(SendOutcome::Sent)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.borrow_mut().push("flush".into());
            Ok(())
        }
    }
    impl Output for LogSink {}

    /// A paced packet that was waited for is handed to the kernel right after it is queued,
    /// before the next packet is even read (reading may block on the file).
    #[test]
    fn on_time_packets_are_flushed_at_once() {
        let log: Log = Default::default();
        let file: Vec<Vec<u8>> = (0..3).map(|i| frame(0, i, 60)).collect();
        let mut input = LogInput(Mem::new(vec![file]), log.clone());
        let mut sink = LogSink(log.clone());
        let stop = AtomicBool::new(false);
        run(
            &mut input,
            &mut NoEdit,
            &mut Pacer::new(Timing::pps(1000.0).unwrap()),
            &mut sink,
            &mut Virtual(Default::default()),
            &mut NoProgress,
            &StopLimits::once(),
            &stop,
            &mut ReplayStats::default(),
        )
        .unwrap();
        let log = log.borrow();
        for i in 1..3 {
            let at = log.iter().position(|e| *e == format!("send {i}")).unwrap();
            assert_eq!(log[at + 1], "flush", "{log:?}");
        }
    }
}
