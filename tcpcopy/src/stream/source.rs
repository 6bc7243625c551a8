//! Live capture for stream mode: libpcap on one or more interfaces, one thread per interface,
//! behind [`PacketSource`] like `tcpclone::capture::CaptureReader` for files. Blocking: it runs
//! on the reader thread, never on the tokio runtime.

use crate::mapping::TargetMapping;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::capture::{LinkType, Packet, PacketSource, Timestamp};

/// A capture that failed to open or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// libpcap reported an error.
    #[error("{what}: {source}")]
    Pcap {
        /// What was being done (file or interface).
        what: String,
        /// libpcap's error.
        source: pcap::Error,
    },
}

/// One frame captured live, handed from a capture thread to the reader.
struct OwnedFrame {
    ts: Timestamp,
    linktype: LinkType,
    data: Vec<u8>,
}

/// Live capture on one or more interfaces until `stop` is set or the deadline passes.
pub struct LiveSource {
    rx: crossbeam_channel::Receiver<OwnedFrame>,
    current: Option<OwnedFrame>,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Frames the kernel dropped, summed over interfaces (updated when capture ends).
    pub kernel_drops: Arc<std::sync::atomic::AtomicU64>,
    /// When nothing was captured for a while, hand over an empty packet stamped with the wall
    /// clock: the capture's clock moves on while the service is idle. What waits on capture
    /// time (a TLS session waiting for its secrets from a key log) must not wait for the next
    /// client to arrive.
    pub idle_ticks: bool,
}

/// The BPF filter for `mappings`: client→service segments (and the service's answers with
/// `with_responses`), never the replayed connections to the targets, ANDed with `extra`.
pub fn build_filter(
    mappings: &[TargetMapping],
    with_responses: bool,
    extra: Option<&str>,
) -> String {
    let mut parts = Vec::new();
    for m in mappings {
        let host = m
            .online_ip
            .map(|ip| format!(" and host {ip}"))
            .unwrap_or_default();
        if with_responses {
            parts.push(format!("(tcp port {}{host})", m.online_port));
        } else {
            let dhost = m
                .online_ip
                .map(|ip| format!(" and dst host {ip}"))
                .unwrap_or_default();
            parts.push(format!("(tcp dst port {}{dhost})", m.online_port));
        }
    }
    let mut f = format!("({})", parts.join(" or "));
    for m in mappings {
        f.push_str(&format!(
            " and not (host {} and tcp port {})",
            m.target.ip(),
            m.target.port()
        ));
    }
    if let Some(x) = extra.filter(|x| !x.trim().is_empty()) {
        f = format!("{f} and ({x})");
    }
    f
}

impl LiveSource {
    /// Starts capturing on `interfaces` (empty: `any`) with `filter`; `buffer_mb` sizes each ring.
    pub fn open(
        interfaces: &[String],
        filter: &str,
        buffer_mb: usize,
        stop: Arc<AtomicBool>,
        duration: Option<Duration>,
    ) -> Result<Self, SourceError> {
        let devs: Vec<String> = if interfaces.is_empty() {
            vec!["any".to_string()]
        } else {
            interfaces.to_vec()
        };
        let (tx, rx) = crossbeam_channel::bounded::<OwnedFrame>(65_536);
        let kernel_drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut threads = Vec::new();
        for dev in devs {
            let what = format!("-i {dev}");
            let err = |source| SourceError::Pcap {
                what: what.clone(),
                source,
            };
            let mut cap = pcap::Capture::from_device(dev.as_str())
                .map_err(err)?
                // Not immediate mode: with it libpcap ignores the timeout and a quiet interface
                // would block the thread past a stop. A 10 ms block timeout bounds the delay.
                .snaplen(262_144)
                .buffer_size((buffer_mb.max(4) << 20) as i32)
                .timeout(10)
                .precision(pcap::Precision::Nano)
                .open()
                .map_err(err)?;
            cap.filter(filter, true)
                .map_err(|source| SourceError::Pcap {
                    what: format!("filter `{filter}`"),
                    source,
                })?;
            // A DLT number is not always the LINKTYPE of the same name (DLT_RAW is 12 on Linux,
            // LINKTYPE_RAW 101): a tun device's frames were parsed as an unknown link type.
            let linktype = LinkType::from_dlt(cap.get_datalink().0);
            let (tx, stop, drops) = (tx.clone(), stop.clone(), kernel_drops.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match cap.next_packet() {
                        Ok(p) => {
                            let ts = Timestamp::from_parts(
                                p.header.ts.tv_sec.max(0) as u64,
                                p.header.ts.tv_usec.max(0) as u32,
                            );
                            if tx
                                .send(OwnedFrame {
                                    ts,
                                    linktype,
                                    data: p.data.to_vec(),
                                })
                                .is_err()
                            {
                                break;
                            }
                        }
                        Err(pcap::Error::TimeoutExpired) => continue,
                        Err(e) => {
                            tracing::warn!("capture on {dev} ended: {e}");
                            break;
                        }
                    }
                }
                if let Ok(s) = cap.stats() {
                    drops.fetch_add(
                        u64::from(s.dropped) + u64::from(s.if_dropped),
                        Ordering::Relaxed,
                    );
                }
            }));
        }
        Ok(LiveSource {
            rx,
            current: None,
            stop,
            deadline: duration.map(|d| Instant::now() + d),
            threads,
            kernel_drops,
            idle_ticks: false,
        })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl PacketSource for LiveSource {
    type Error = SourceError;
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, SourceError> {
        loop {
            if self.stopping() {
                self.stop.store(true, Ordering::Relaxed);
                // The capture threads see the stop within one block timeout; don't hang on one
                // that does not.
                let until = Instant::now() + Duration::from_secs(1);
                while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.threads.clear();
                // Hand over what was captured before the stop.
                match self.rx.try_recv() {
                    Ok(f) => self.current = Some(f),
                    Err(_) => return Ok(None),
                }
            } else {
                match self.rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(f) => self.current = Some(f),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if self.idle_ticks => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos() as u64);
                        self.current = Some(OwnedFrame {
                            ts: Timestamp(now),
                            linktype: LinkType::RAW,
                            data: Vec::new(),
                        });
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(None),
                }
            }
            let f = self.current.as_ref().expect("just set");
            return Ok(Some(Packet {
                ts: f.ts,
                orig_len: f.data.len() as u32,
                linktype: f.linktype,
                data: &f.data,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::parse_mappings;

    #[test]
    fn filter_excludes_targets() {
        let m = parse_mappings("6379-198.18.2.2:6379,198.18.0.1:80-198.18.2.2:8080").unwrap();
        assert_eq!(
            build_filter(&m, false, Some("vlan 0")),
            "((tcp dst port 6379) or (tcp dst port 80 and dst host 198.18.0.1)) and not (host 198.18.2.2 and tcp port 6379) and not (host 198.18.2.2 and tcp port 8080) and (vlan 0)"
        );
        assert!(build_filter(&m, true, None)
            .starts_with("((tcp port 6379) or (tcp port 80 and host 198.18.0.1))"));
    }
}
