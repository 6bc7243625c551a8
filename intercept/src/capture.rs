//! Live capture of the target's responses with libpcap: one thread per device, each sending
//! the IP + TCP header of every captured packet to the router.

use crate::linklayer::{ip_tcp_header, SNAPLEN};
use crate::server::Stats;
use anyhow::Context;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::capture::LinkType;
use tokio::sync::mpsc;

/// An opened capture on one device.
pub struct DeviceCapture {
    /// Device name.
    pub device: String,
    cap: pcap::Capture<pcap::Active>,
}

/// Opens `device` in immediate mode with a snap length covering link + IP + TCP headers, and
/// applies the BPF `filter`.
pub fn open(device: &str, filter: &str) -> anyhow::Result<DeviceCapture> {
    let cap = pcap::Capture::from_device(device)
        .with_context(|| format!("capture device {device}"))?
        .immediate_mode(true)
        .snaplen(SNAPLEN)
        .timeout(100)
        .buffer_size(8 << 20)
        .open()
        .with_context(|| format!("cannot capture on {device} (root or CAP_NET_RAW needed)"))?;
    let mut cap = cap;
    cap.filter(filter, true)
        .with_context(|| format!("bad filter -F {filter:?}"))?;
    let lt = LinkType(cap.get_datalink().0 as u32);
    if crate::linklayer::ip_payload(lt, &[0u8; 64])
        == Err(crate::linklayer::LinkError::Unsupported(lt.0))
    {
        anyhow::bail!(
            "device {device}: unsupported link type {}",
            cap.get_datalink().0
        );
    }
    Ok(DeviceCapture {
        device: device.to_string(),
        cap,
    })
}

impl DeviceCapture {
    /// A handle that wakes [`run`](Self::run) from another thread (libpcap's immediate mode
    /// may block without a timeout); set the stop flag, then call `breakloop()` on it.
    pub fn breaker(&mut self) -> pcap::BreakLoop {
        self.cap.breakloop_handle()
    }

    /// Captures until `stop` is set or the router's queue closes; blocks when the router is
    /// behind (the kernel then drops, and those drops are counted from pcap stats).
    pub fn run(mut self, tx: mpsc::Sender<Bytes>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
        let lt = LinkType(self.cap.get_datalink().0 as u32);
        let mut last_drops = 0u64;
        let mut last_stats = Instant::now();
        let mut update_drops = |cap: &mut pcap::Capture<pcap::Active>| {
            if let Ok(s) = cap.stats() {
                let d = u64::from(s.dropped) + u64::from(s.if_dropped);
                stats
                    .kernel_drops
                    .fetch_add(d.saturating_sub(last_drops), Relaxed);
                last_drops = d;
            }
        };
        while !stop.load(Relaxed) {
            if last_stats.elapsed() >= Duration::from_secs(1) {
                update_drops(&mut self.cap);
                last_stats = Instant::now();
            }
            match self.cap.next_packet() {
                Ok(p) => {
                    stats.captured.fetch_add(1, Relaxed);
                    let Some(h) = ip_tcp_header(lt, p.data) else {
                        stats.not_tcp.fetch_add(1, Relaxed);
                        continue;
                    };
                    if tx.blocking_send(Bytes::copy_from_slice(h)).is_err() {
                        break;
                    }
                }
                Err(pcap::Error::TimeoutExpired) => continue,
                Err(_) if stop.load(Relaxed) => break,
                Err(e) => {
                    // E.g. the device went down: keep trying until it is back or we stop.
                    tracing::error!("capture on {}: {e}; retrying in 1 s", self.device);
                    for _ in 0..10 {
                        if stop.load(Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        update_drops(&mut self.cap);
    }
}
