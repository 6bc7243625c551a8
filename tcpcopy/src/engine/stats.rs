//! The engine's counters: plain values that the glue sums over workers, prints and exports.

use std::time::Duration;

/// Number of log2 buckets in [`EngineStats::latency_us_log2`].
pub const LATENCY_BUCKETS: usize = 24;

/// Counters of one engine (plain values; the glue sums and prints them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// IP packets handed to `handle_captured`.
    pub packets_captured: u64,
    /// Of those, not TCP, malformed, fragments, or not to a mapped service.
    pub packets_ignored: u64,
    /// TCP segments of mapped services.
    pub segments_in: u64,
    /// Client payload bytes captured.
    pub bytes_captured: u64,
    /// Of the client bytes kept for the target, those left in the capture ring where the
    /// kernel wrote them instead of being copied (some are copied later, when the kernel comes
    /// round to their block before the target has them).
    pub bytes_in_ring: u64,
    /// Sessions (clones, one per copy) created.
    pub sessions_cloned: u64,
    /// Sessions alive now.
    pub sessions_active: u64,
    /// Sessions ended by FIN in both directions.
    pub sessions_completed: u64,
    /// Sessions ended by the client's RST (carried through).
    pub sessions_client_reset: u64,
    /// Sessions refused: memory budget.
    pub refused_memory: u64,
    /// Sessions refused: no free client port/address for a copy.
    pub refused_ports: u64,
    /// Sessions refused: client address family cannot reach the target.
    pub refused_family: u64,
    /// Sessions left out by `-r`.
    pub sampled_out: u64,
    /// Live clones given up because the capture fell behind (the heaviest first), so that the
    /// others stay whole; not counted as aborted.
    pub shed_sessions: u64,
    /// New connections not cloned because the capture was falling behind.
    pub shed_new: u64,
    /// Captured segments of shed connections, ignored.
    pub shed_segments: u64,
    /// Shed connections cloned again once the capture caught up, from their next request
    /// (or a new connection on their client port).
    pub shed_resumed: u64,
    /// Ended: the target reset the connection.
    pub aborted_target_reset: u64,
    /// Ended: idle (`-t`) or stalled (`-k`) timeout.
    pub aborted_timeout: u64,
    /// Ended: the target never completed the handshake.
    pub aborted_handshake: u64,
    /// Ended: too many retransmission timeouts.
    pub aborted_retransmits: u64,
    /// Ended: replaced by a new connection on the same client port.
    pub aborted_replaced: u64,
    /// Ended: the client finished while the clone was waiting to re-establish after a gap.
    pub aborted_gap: u64,
    /// Clones whose target closed and whose client never did within `linger`: we sent the FIN.
    pub half_closed_timeouts: u64,
    /// New SYNs on a client port whose clone was still delivering: the old clone kept its
    /// 4-tuple and the new one got another port (no reset).
    pub reuse_detached: u64,
    /// Client addresses taken over from a clone lingering in TIME_WAIT for a new clone (no
    /// free address among `-n`'s candidates); the lingering one counts as completed.
    pub linger_taken_over: u64,
    /// SYN-ACKs with a new ISN (answering a retransmitted SYN) adopted before any data was acked.
    pub syn_ack_adopted: u64,
    /// Handshakes done again after a target RST before any data was acked.
    pub handshakes_redone: u64,
    /// Redone handshakes or adopted newer SYN-ACKs given up because the target acknowledged
    /// our data on the first connection after all (a SYN-cookie listener resets what follows a
    /// dropped first segment and accepts that segment's retransmission; our ACK of the first
    /// SYN-ACK established it before the newer one came): the first connection goes on, the
    /// request is not sent twice.
    pub redo_abandoned: u64,
    /// Handshakes completed with the target.
    pub handshakes: u64,
    /// Handshakes the target refused with RST.
    pub handshakes_refused: u64,
    /// Target RSTs on established clones.
    pub target_resets: u64,
    /// Segments written by `poll_transmit` (all kinds).
    pub segments_sent: u64,
    /// Of those, retransmissions (RTO, fast retransmit, SYN retries).
    pub segments_retransmitted: u64,
    /// Retransmission timeouts.
    pub rto_expirations: u64,
    /// Fast retransmits (three duplicate acks).
    pub fast_retransmits: u64,
    /// New client payload bytes sent to the target.
    pub bytes_sent: u64,
    /// Client payload bytes the target acknowledged.
    pub bytes_acked: u64,
    /// Gaps in the captured client stream (missed segments).
    pub gaps: u64,
    /// RSTs we sent to the target (gaps, aborts, stale connections).
    pub resets_sent: u64,
    /// Clones re-established after a gap.
    pub reestablished: u64,
    /// Buffers that hit the per-session or total limit.
    pub buffer_overflows: u64,
    /// Target reports handed to `handle_response`.
    pub responses: u64,
    /// Of those, for no known session (answered with RST when they carry an ACK).
    pub responses_unmatched: u64,
    /// Of those, segments of an earlier connection on the same 4-tuple (ignored).
    pub responses_stale: u64,
    /// Target payload bytes reported.
    pub response_bytes: u64,
    /// Requests sent and timed (every request but those sent pipelined, which are counted in
    /// `requests_pipelined`: their answer comes behind the one awaited).
    pub requests_sent: u64,
    /// Requests whose answer was reported.
    pub requests_answered: u64,
    /// Requests released by the response timeout rather than an answer.
    pub pacing_timeouts: u64,
    /// Requests sent before the target answered the previous one: they were `--max-lag`
    /// behind production.
    pub requests_pipelined: u64,
    /// With the report on: requests whose session ended before the target answered them
    /// (each an [`super::EngineEvent::RequestUnanswered`]).
    pub requests_unanswered: u64,
    /// Sum of request latencies in microseconds.
    pub latency_us_sum: u64,
    /// Request latency histogram: bucket i counts latencies in [2^i, 2^(i+1)) µs.
    pub latency_us_log2: [u64; LATENCY_BUCKETS],
    /// Bytes accounted against the memory budget now.
    pub memory_bytes: u64,
}

impl EngineStats {
    /// Adds another engine's counters (the workers' totals; gauges add up too: each worker's
    /// sessions and memory are its own).
    pub fn merge(&mut self, o: &EngineStats) {
        self.packets_captured += o.packets_captured;
        self.packets_ignored += o.packets_ignored;
        self.segments_in += o.segments_in;
        self.bytes_captured += o.bytes_captured;
        self.bytes_in_ring += o.bytes_in_ring;
        self.sessions_cloned += o.sessions_cloned;
        self.sessions_active += o.sessions_active;
        self.sessions_completed += o.sessions_completed;
        self.sessions_client_reset += o.sessions_client_reset;
        self.refused_memory += o.refused_memory;
        self.refused_ports += o.refused_ports;
        self.refused_family += o.refused_family;
        self.sampled_out += o.sampled_out;
        self.shed_sessions += o.shed_sessions;
        self.shed_new += o.shed_new;
        self.shed_segments += o.shed_segments;
        self.shed_resumed += o.shed_resumed;
        self.aborted_target_reset += o.aborted_target_reset;
        self.aborted_timeout += o.aborted_timeout;
        self.aborted_handshake += o.aborted_handshake;
        self.aborted_retransmits += o.aborted_retransmits;
        self.aborted_replaced += o.aborted_replaced;
        self.aborted_gap += o.aborted_gap;
        self.half_closed_timeouts += o.half_closed_timeouts;
        self.reuse_detached += o.reuse_detached;
        self.linger_taken_over += o.linger_taken_over;
        self.syn_ack_adopted += o.syn_ack_adopted;
        self.handshakes_redone += o.handshakes_redone;
        self.redo_abandoned += o.redo_abandoned;
        self.handshakes += o.handshakes;
        self.handshakes_refused += o.handshakes_refused;
        self.target_resets += o.target_resets;
        self.segments_sent += o.segments_sent;
        self.segments_retransmitted += o.segments_retransmitted;
        self.rto_expirations += o.rto_expirations;
        self.fast_retransmits += o.fast_retransmits;
        self.bytes_sent += o.bytes_sent;
        self.bytes_acked += o.bytes_acked;
        self.gaps += o.gaps;
        self.resets_sent += o.resets_sent;
        self.reestablished += o.reestablished;
        self.buffer_overflows += o.buffer_overflows;
        self.responses += o.responses;
        self.responses_unmatched += o.responses_unmatched;
        self.responses_stale += o.responses_stale;
        self.response_bytes += o.response_bytes;
        self.requests_sent += o.requests_sent;
        self.requests_answered += o.requests_answered;
        self.pacing_timeouts += o.pacing_timeouts;
        self.requests_pipelined += o.requests_pipelined;
        self.requests_unanswered += o.requests_unanswered;
        self.latency_us_sum += o.latency_us_sum;
        self.memory_bytes += o.memory_bytes;
        for (a, b) in self
            .latency_us_log2
            .iter_mut()
            .zip(o.latency_us_log2.iter())
        {
            *a += b;
        }
    }

    #[inline]
    pub(crate) fn record_latency(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.requests_answered += 1;
        self.latency_us_sum = self.latency_us_sum.saturating_add(us);
        let b = (63 - us.max(1).leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.latency_us_log2[b] += 1;
    }

    /// Sessions ended for any reason other than a normal close.
    pub fn aborted(&self) -> u64 {
        self.aborted_target_reset
            + self.aborted_timeout
            + self.aborted_handshake
            + self.aborted_retransmits
            + self.aborted_replaced
            + self.aborted_gap
    }
}

impl std::fmt::Display for EngineStats {
    /// One line for the final summary and `--stats`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sessions cloned={} active={} completed={} client_reset={} aborted={} (target_reset={} timeout={} \
             handshake={} retransmits={} replaced={} gap={}) reuse_detached={} linger_taken_over={} syn_ack_adopted={} handshakes_redone={} redo_abandoned={} handshakes={} handshakes_refused={} target_resets={} refused memory={} ports={} family={} sampled_out={} shed={} (new={} segments={} resumed={}); \
             segments in={} sent={} retransmitted={} (rto={} fast={}); gaps={} resets_sent={} reestablished={} \
             overflows={}; bytes captured={} sent={} acked={} in_ring={}; responses={} unmatched={} stale={}; \
             requests sent={} answered={} pacing_timeouts={} pipelined={} mean_latency_us={}; memory={}",
            self.sessions_cloned,
            self.sessions_active,
            self.sessions_completed,
            self.sessions_client_reset,
            self.aborted(),
            self.aborted_target_reset,
            self.aborted_timeout,
            self.aborted_handshake,
            self.aborted_retransmits,
            self.aborted_replaced,
            self.aborted_gap,
            self.reuse_detached,
            self.linger_taken_over,
            self.syn_ack_adopted,
            self.handshakes_redone,
            self.redo_abandoned,
            self.handshakes,
            self.handshakes_refused,
            self.target_resets,
            self.refused_memory,
            self.refused_ports,
            self.refused_family,
            self.sampled_out,
            self.shed_sessions,
            self.shed_new,
            self.shed_segments,
            self.shed_resumed,
            self.segments_in,
            self.segments_sent,
            self.segments_retransmitted,
            self.rto_expirations,
            self.fast_retransmits,
            self.gaps,
            self.resets_sent,
            self.reestablished,
            self.buffer_overflows,
            self.bytes_captured,
            self.bytes_sent,
            self.bytes_acked,
            self.bytes_in_ring,
            self.responses,
            self.responses_unmatched,
            self.responses_stale,
            self.requests_sent,
            self.requests_answered,
            self.pacing_timeouts,
            self.requests_pipelined,
            self.latency_us_sum.checked_div(self.requests_answered).unwrap_or(0),
            self.memory_bytes,
        )
    }
}
