//! The engine's configuration: plain values that `live` builds from the validated flags
//! (`config::raw::Settings`). Nothing here is read at run time from anywhere else.

use super::shared;
use crate::mapping::TargetMapping;
use std::net::IpAddr;
use std::time::Duration;

/// `--max-lag`'s default. Long enough that a target answering within a few milliseconds of
/// production keeps the conversation's order of request and answer; short enough that the
/// client bytes a lagging session holds stay a small part of the capture ring even under
/// uploads at gigabytes a second (the ring fills while a clone falls behind, and a ring 7/8
/// full sheds connections).
pub const DEFAULT_MAX_LAG: Duration = Duration::from_millis(20);

/// Configuration of the engine, built by the CLI layer from validated flags.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `-x`: which services are copied and where to.
    pub mappings: Vec<TargetMapping>,
    /// `-c`: client addresses to use towards the target (empty: keep the client's own).
    pub client_ips: Vec<IpAddr>,
    /// `-n`: copies of each session (at least 1).
    pub copies: u16,
    /// `-f`: client port shift between copies and collision retries (0 means 1).
    pub port_shift: u16,
    /// `-r`: percentage of sessions cloned (1–100), sampled by a hash of client address and port.
    pub percentage: u8,
    /// `-M`: MTU of the path to the target (IP packet size limit).
    pub mtu: u16,
    /// `-D`: MSS limit towards the target.
    pub mss: Option<u16>,
    /// `-W`: don't hold a request until the previous one was answered.
    pub no_wait: bool,
    /// `-t`: a session with no captured segment and no response for this long ends.
    pub session_timeout: Duration,
    /// `-k`: a session whose target makes no progress (handshake or data unacknowledged) for this
    /// long ends.
    pub keepalive_timeout: Duration,
    /// `-m` in bytes: over it new sessions are refused and buffering stops (0: unlimited).
    pub max_memory: usize,
    /// Largest number of client bytes one session may buffer (a clone paced by a slower target
    /// falls behind production); beyond it the clone is reset and re-established at the next
    /// request.
    pub max_session_buffer: usize,
    /// A request is released once the target went quiet this long after answering.
    pub idle_gap: Duration,
    /// A request is released after this long even when the target did not answer the previous one.
    pub response_timeout: Duration,
    /// `--max-lag`: a request with data is released at most this long after it was captured,
    /// answered or not (`None`: it waits for the answer or the response timeout).
    pub max_lag: Option<Duration>,
    /// Client bytes a session holds unsent below which `max_lag` does not apply (see
    /// `conversation::PIPELINE_MIN_BYTES`; scripted tests lower it to use short requests).
    pub lag_min_bytes: u64,
    /// A hole in the captured client stream that persists this long is a missed segment.
    pub gap_timeout: Duration,
    /// A hole followed by a request boundary (proof of a missed segment) waits only this long
    /// for a reordered segment.
    pub reorder_window: Duration,
    /// Lower bound of the retransmission timeout; 200 ms, Linux's `TCP_RTO_MIN`. A Linux
    /// target delays its ACK of a last segment (a request its application answers slowly, a
    /// FIN) by 40 ms and more, and a lower floor resends those for nothing.
    pub min_rto: Duration,
    /// Retransmission timeout before any RTT was measured towards a target (RFC 6298: 1 s).
    /// Later sessions start from the RTT their target's earlier sessions measured.
    pub initial_rto: Duration,
    /// Upper bound of the retransmission timeout.
    pub max_rto: Duration,
    /// SYN retransmissions before the session is given up.
    pub max_syn_retries: u8,
    /// Consecutive data retransmission timeouts before the session is given up.
    pub max_retransmits: u8,
    /// How long a finished session lingers to re-acknowledge a retransmitted target FIN.
    pub linger: Duration,
    /// Emit [`EngineEvent::RequestTiming`] per answered request.
    pub request_timing_events: bool,
    /// Most payload bytes one [`Transmit`] may carry as a TCP super-segment for the sender (or
    /// the kernel behind it) to cut into MSS-sized pieces (segmentation offload); a value no
    /// larger than a session's MSS keeps one segment per transmit. Rounded down to whole MSS
    /// pieces and kept under 64 KiB of IP packet.
    pub gso_max: usize,
    /// With several workers: the table of client addresses all their engines draw from
    /// (`None`: this engine is alone and its own table suffices).
    pub shared_clients: Option<shared::SharedClients>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mappings: Vec::new(),
            client_ips: Vec::new(),
            copies: 1,
            port_shift: 0,
            percentage: 100,
            mtu: 1500,
            mss: None,
            no_wait: false,
            session_timeout: Duration::from_secs(600),
            keepalive_timeout: Duration::from_secs(60),
            max_memory: 0,
            max_session_buffer: 64 << 20,
            idle_gap: Duration::from_millis(3),
            response_timeout: Duration::from_millis(500),
            max_lag: Some(DEFAULT_MAX_LAG),
            lag_min_bytes: crate::conversation::PIPELINE_MIN_BYTES,
            gap_timeout: Duration::from_millis(500),
            reorder_window: Duration::from_millis(10),
            min_rto: Duration::from_millis(200),
            initial_rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(2),
            max_syn_retries: 6,
            max_retransmits: 12,
            linger: Duration::from_secs(2),
            request_timing_events: false,
            gso_max: 0,
            shared_clients: None,
        }
    }
}
