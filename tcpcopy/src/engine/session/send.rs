//! Our send side towards the target: the sequence space, the window, RTT/RTO estimation and the
//! retransmission state (RFC 9293, RFC 6298, RFC 5681 fast retransmit).
//!
//! Pure bookkeeping: it never builds a packet and never reads the client stream; the session
//! decides what to send from it.

use crate::engine::EngineConfig;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tcpclone::seq::SeqNumber;

/// Round-trip time towards each target address, learnt from every session's samples, so that a
/// new session starts with what earlier ones measured (Linux keeps the same per destination in
/// tcp_metrics). Without it every short connection would start from the fixed initial RTO:
/// too long when a SYN is lost, too short when the target is busy (each SYN sent twice).
///
/// A short list searched in order: it holds at most one entry per `-x` target address (a
/// handful), and it is touched on every RTT sample, where hashing an `IpAddr` with SipHash cost
/// more than the rest of the sample.
#[derive(Debug, Default)]
pub(crate) struct PathRtts(Vec<(IpAddr, PathRtt)>);

/// Smoothed RTT and its variation (RFC 6298 §2) towards one target address, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathRtt {
    srtt: u64,
    rttvar: u64,
}

impl PathRtts {
    /// The RTO a new (or re-established) session towards `to` starts with: the path's when one
    /// was measured, else the configured initial RTO.
    pub fn initial_rto(&self, cfg: &EngineConfig, to: IpAddr) -> Duration {
        match self.0.iter().find(|(a, _)| *a == to) {
            Some((_, p)) => rto_of(cfg, p.srtt, p.rttvar),
            None => cfg.initial_rto,
        }
    }

    /// Folds one session's RTT sample (nanoseconds) into the path's estimate (RFC 6298 §2,
    /// gains 1/8, 1/4).
    pub fn learn(&mut self, to: IpAddr, r: u64) {
        match self.0.iter_mut().find(|(a, _)| *a == to) {
            Some((_, p)) => {
                p.rttvar = smooth(p.rttvar, 3, p.srtt.abs_diff(r), 4);
                p.srtt = smooth(p.srtt, 7, r, 8);
            }
            None => self.0.push((
                to,
                PathRtt {
                    srtt: r,
                    rttvar: r / 2,
                },
            )),
        }
    }
}

/// RTO = SRTT + max(G, 4·RTTVAR), clamped to the configured bounds (RFC 6298 §2.3).
///
/// RTT arithmetic is done on nanoseconds in a `u64` (584 years): the same exact integer
/// arithmetic as on `Duration` (whose division also rounds down to the nanosecond), without
/// splitting seconds and nanoseconds at every step.
fn rto_of(cfg: &EngineConfig, srtt: u64, rttvar: u64) -> Duration {
    let g = 1_000_000; // clock granularity G: 1 ms
    Duration::from_nanos(srtt.saturating_add(rttvar.saturating_mul(4).max(g)))
        .clamp(cfg.min_rto, cfg.max_rto)
}

/// `(old · keep + new) / div`: the RFC 6298 gains (7/8, 3/4), rounding down.
fn smooth(old: u64, keep: u64, new: u64, div: u64) -> u64 {
    old.saturating_mul(keep).saturating_add(new) / div
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Largest payload per segment given the MTU, MSS limits and option overhead.
pub(super) fn seg_limit(cfg: &EngineConfig, target_mss: Option<u16>, v6: bool, ts: bool) -> usize {
    let ip = if v6 { 40 } else { 20 };
    let opt = if ts { 12 } else { 0 };
    let by_mtu = usize::from(cfg.mtu).saturating_sub(ip + 20 + opt);
    let mut lim = by_mtu;
    if let Some(m) = cfg.mss {
        lim = lim.min(usize::from(m).saturating_sub(opt));
    }
    // RFC 9293 §3.7.1: without an MSS option assume 536 (IPv4) / 1220 (IPv6).
    let tm = target_mss.map_or(if v6 { 1220 } else { 536 }, usize::from);
    lim.min(tm.saturating_sub(opt)).max(64)
}

/// The send side of one clone (RFC 9293 §3.3.1 names).
#[derive(Debug)]
pub(super) struct SendSide {
    /// Our initial sequence number (the client's, or one before its first byte when faked).
    pub iss: SeqNumber,
    /// Oldest byte not acknowledged by the target.
    pub una: SeqNumber,
    /// Next byte to send (moved back by go-back-N).
    pub nxt: SeqNumber,
    /// Highest byte ever sent, plus one.
    pub max: SeqNumber,
    /// The target's receive window, scaled.
    pub wnd: u32,
    /// The target's window scale (RFC 7323 §2).
    pub shift: u8,
    /// Largest payload per segment.
    pub seg_max: usize,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Smoothed RTT in nanoseconds, once sampled.
    srtt: Option<u64>,
    /// RTT variation in nanoseconds.
    rttvar: u64,
    /// The byte whose acknowledgment ends the RTT sample under way, and when it was sent.
    pub rtt_probe: Option<(SeqNumber, Instant)>,
    /// When the retransmission (or persist) timer fires.
    pub rto_at: Option<Instant>,
    /// Consecutive timeouts without progress.
    pub retries: u8,
    /// Duplicate acknowledgments in a row.
    pub dupacks: u8,
    /// A fast retransmission of `una` is due.
    pub fast_rexmit: bool,
    /// A zero-window probe is due.
    pub probe: bool,
    /// When the target last acknowledged or answered something.
    pub last_progress: Instant,
}

impl SendSide {
    /// A send side whose SYN is at `iss`, not sent yet.
    pub fn new(iss: SeqNumber, rto: Duration, now: Instant) -> SendSide {
        SendSide {
            iss,
            una: iss,
            nxt: iss,
            max: iss,
            wnd: 0,
            shift: 0,
            seg_max: 536,
            rto,
            srtt: None,
            rttvar: 0,
            rtt_probe: None,
            rto_at: None,
            retries: 0,
            dupacks: 0,
            fast_rexmit: false,
            probe: false,
            last_progress: now,
        }
    }

    /// Starts the sequence space over at `iss` (re-establishment); the RTT estimate is kept.
    pub fn restart(&mut self, iss: SeqNumber, rto: Duration, now: Instant) {
        self.iss = iss;
        self.una = iss;
        self.nxt = iss;
        self.max = iss;
        self.wnd = 0;
        self.rto = rto;
        self.rtt_probe = None;
        self.retries = 0;
        self.dupacks = 0;
        self.last_progress = now;
    }

    /// Sequence numbers to reset the target's connection at: `una`, and `max` too when data is
    /// in flight (either may be the target's `rcv_nxt`).
    pub fn rst_seqs(&self, syn_sent: bool) -> [Option<SeqNumber>; 2] {
        if syn_sent {
            return [Some(self.iss + 1), None];
        }
        let second = (self.max != self.una).then_some(self.max);
        [Some(self.una), second]
    }

    /// Stops retransmitting (the session ends or its clone is reset).
    #[inline]
    pub fn stop(&mut self) {
        self.fast_rexmit = false;
        self.rto_at = None;
    }

    /// Folds an RTT sample in (RFC 6298 §2) and returns it in nanoseconds for the path.
    pub fn rtt_sample(&mut self, cfg: &EngineConfig, r: Duration) -> u64 {
        let r = nanos(r);
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                self.rttvar = smooth(self.rttvar, 3, s.abs_diff(r), 4);
                self.srtt = Some(smooth(s, 7, r, 8));
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = rto_of(cfg, s, self.rttvar);
        r
    }

    /// The target acknowledged up to `ack` (new data) at `now`. When this ack ends the RTT
    /// measurement under way (Karn: never after a retransmission) the sample is folded in
    /// before the timer is re-armed with the new RTO, and returned (nanoseconds) for the path.
    #[inline]
    pub fn on_ack(&mut self, cfg: &EngineConfig, ack: SeqNumber, now: Instant) -> Option<u64> {
        self.una = ack;
        if self.nxt < ack {
            self.nxt = ack;
        }
        let mut sample = None;
        if let Some((probe_end, at)) = self.rtt_probe {
            if ack >= probe_end {
                self.rtt_probe = None;
                if self.retries == 0 {
                    sample = Some(self.rtt_sample(cfg, now.saturating_duration_since(at)));
                }
            }
        }
        self.retries = 0;
        self.dupacks = 0;
        self.fast_rexmit = false;
        self.last_progress = now;
        self.rto_at = (self.una < self.max).then(|| now + self.rto);
        sample
    }

    /// One more duplicate ack; returns `true` when it is the third (fast retransmit, RFC 5681 §3.2).
    #[inline]
    pub fn on_dupack(&mut self) -> bool {
        self.dupacks = self.dupacks.saturating_add(1);
        if self.dupacks == 3 {
            self.fast_rexmit = true;
            self.rtt_probe = None;
            return true;
        }
        false
    }

    /// The retransmission timer fired: back off (RFC 6298 §5.5) and drop the RTT sample.
    pub fn back_off(&mut self, max_rto: Duration) {
        self.rto_at = None;
        self.retries = self.retries.saturating_add(1);
        self.rto = (self.rto * 2).min(max_rto);
        self.rtt_probe = None;
    }

    /// How far data may go: up to `avail` (captured and released) and the target's window; a
    /// zero window still lets one byte out as a probe.
    #[inline]
    pub fn limit(&self, avail: SeqNumber) -> SeqNumber {
        let wnd = if self.probe && self.una == self.max {
            self.wnd.max(1)
        } else {
            self.wnd
        };
        avail.min(self.una + wnd)
    }

    /// Most new payload bytes one transmit carries: one MSS, or whole MSS pieces up to
    /// `gso_max` when segmentation offload is on (and the IP packet stays under 64 KiB).
    #[inline]
    pub fn burst_max(&self, cfg: &EngineConfig) -> usize {
        let mss = self.seg_max.max(1);
        let lim = cfg.gso_max.min(65_535 - 60 - 60);
        if lim <= mss {
            return mss;
        }
        lim / mss * mss
    }

    /// Sent bytes `[seq, end)` at `now`: moves `nxt` and `max`, starts an RTT sample on new
    /// data and arms the retransmission timer. Returns `true` when the bytes were new.
    #[inline]
    pub fn on_sent(&mut self, seq: SeqNumber, end: SeqNumber, now: Instant) -> bool {
        if seq == self.nxt {
            self.nxt = end;
        }
        let new = end > self.max;
        if new {
            if self.rtt_probe.is_none() && seq >= self.max {
                self.rtt_probe = Some((end, now));
            }
            self.max = end;
        }
        self.rto_at.get_or_insert(now + self.rto);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EngineConfig {
        EngineConfig::default()
    }

    #[test]
    fn first_rtt_sample_sets_srtt_and_half_rttvar() {
        let c = cfg();
        let mut s = SendSide::new(SeqNumber(1), c.initial_rto, Instant::now());
        let r = s.rtt_sample(&c, Duration::from_millis(100));
        assert_eq!(r, 100_000_000);
        // RTO = 100 ms + 4 · 50 ms, then clamped.
        assert_eq!(
            s.rto,
            Duration::from_millis(300).clamp(c.min_rto, c.max_rto)
        );
        s.rtt_sample(&c, Duration::from_millis(100));
        // rttvar = 3/4 · 50 ms + 0, srtt unchanged.
        assert_eq!(
            s.rto,
            Duration::from_micros(250_000).clamp(c.min_rto, c.max_rto)
        );
    }

    #[test]
    fn path_rtts_start_new_sessions_with_what_was_learnt() {
        let c = cfg();
        let mut p = PathRtts::default();
        let to: IpAddr = "198.18.1.2".parse().unwrap();
        assert_eq!(p.initial_rto(&c, to), c.initial_rto);
        p.learn(to, 400_000_000);
        assert_eq!(
            p.initial_rto(&c, to),
            Duration::from_millis(1200).clamp(c.min_rto, c.max_rto)
        );
        assert_eq!(
            p.initial_rto(&c, "198.18.1.3".parse().unwrap()),
            c.initial_rto
        );
    }

    #[test]
    fn sending_and_acking_moves_the_sequence_space_and_samples_once() {
        let c = cfg();
        let t0 = Instant::now();
        let mut s = SendSide::new(SeqNumber(0), c.initial_rto, t0);
        s.una = SeqNumber(1);
        s.nxt = SeqNumber(1);
        s.max = SeqNumber(1);
        assert!(s.on_sent(SeqNumber(1), SeqNumber(11), t0));
        assert_eq!((s.nxt, s.max), (SeqNumber(11), SeqNumber(11)));
        assert_eq!(s.rto_at, Some(t0 + c.initial_rto));
        let t1 = t0 + Duration::from_millis(7);
        assert_eq!(s.on_ack(&c, SeqNumber(5), t1), None, "probe ends at 11");
        assert_eq!(s.rto_at, Some(t1 + c.initial_rto), "data still in flight");
        s.on_sent(SeqNumber(11), SeqNumber(21), t1);
        let t2 = t0 + Duration::from_millis(10);
        assert_eq!(s.on_ack(&c, SeqNumber(11), t2), Some(10_000_000));
        // The timer for what is still in flight runs on the RTO this sample gave.
        assert_ne!(s.rto, c.initial_rto);
        assert_eq!(s.rto_at, Some(t2 + s.rto));
        assert_eq!(s.on_ack(&c, SeqNumber(21), t2), None, "no probe under way");
        assert_eq!(s.rto_at, None);
        assert!(
            !s.on_sent(SeqNumber(1), SeqNumber(11), t1),
            "a retransmission"
        );
    }

    #[test]
    fn karn_no_sample_after_a_timeout() {
        let c = cfg();
        let t0 = Instant::now();
        let mut s = SendSide::new(SeqNumber(0), c.initial_rto, t0);
        s.on_sent(SeqNumber(0), SeqNumber(10), t0);
        s.back_off(c.max_rto);
        assert_eq!(s.retries, 1);
        assert_eq!(s.rto, (c.initial_rto * 2).min(c.max_rto));
        s.on_sent(SeqNumber(0), SeqNumber(10), t0);
        assert_eq!(s.on_ack(&c, SeqNumber(10), t0), None);
        assert_eq!(s.retries, 0);
    }

    #[test]
    fn third_dupack_asks_for_a_fast_retransmit() {
        let mut s = SendSide::new(SeqNumber(0), Duration::from_secs(1), Instant::now());
        assert!(!s.on_dupack());
        assert!(!s.on_dupack());
        assert!(s.on_dupack());
        assert!(s.fast_rexmit);
        assert!(!s.on_dupack(), "only the third");
    }

    #[test]
    fn window_limits_data_and_a_zero_window_lets_a_probe_out() {
        let mut s = SendSide::new(SeqNumber(0), Duration::from_secs(1), Instant::now());
        s.una = SeqNumber(1);
        s.max = SeqNumber(1);
        s.wnd = 4;
        assert_eq!(s.limit(SeqNumber(100)), SeqNumber(5));
        assert_eq!(s.limit(SeqNumber(3)), SeqNumber(3));
        s.wnd = 0;
        assert_eq!(s.limit(SeqNumber(100)), SeqNumber(1));
        s.probe = true;
        assert_eq!(s.limit(SeqNumber(100)), SeqNumber(2));
    }

    #[test]
    fn segment_limit_follows_mtu_mss_and_options() {
        let mut c = cfg();
        c.mtu = 1500;
        c.mss = None;
        assert_eq!(seg_limit(&c, Some(1460), false, false), 1460);
        assert_eq!(seg_limit(&c, Some(1460), false, true), 1448);
        assert_eq!(seg_limit(&c, None, false, false), 536);
        assert_eq!(seg_limit(&c, None, true, false), 1220);
        c.mss = Some(1000);
        assert_eq!(seg_limit(&c, Some(1460), true, false), 1000);
        assert_eq!(seg_limit(&c, Some(10), false, false), 64, "floor");
    }

    #[test]
    fn reset_sequence_numbers_cover_data_in_flight() {
        let mut s = SendSide::new(SeqNumber(9), Duration::from_secs(1), Instant::now());
        assert_eq!(s.rst_seqs(true), [Some(SeqNumber(10)), None]);
        s.una = SeqNumber(10);
        s.max = SeqNumber(20);
        assert_eq!(
            s.rst_seqs(false),
            [Some(SeqNumber(10)), Some(SeqNumber(20))]
        );
    }
}
