//! The libpcap back end (`--capture pcap`): one thread per device in immediate mode, sending
//! the IP + TCP header of every captured packet to the router as a batch of one.

use super::{reopen_with_backoff, DEVICE_BUFFER};
use crate::batch::HeaderBatch;
use crate::linklayer::{ip_tcp_response, snaplen};
use crate::server::Stats;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tcpclone::capture::LinkType;
use tokio::sync::mpsc;

/// An opened libpcap capture on one device.
pub struct PcapCapture {
    /// Device name.
    pub device: String,
    filter: String,
    cap: pcap::Capture<pcap::Active>,
    breaker: Arc<Mutex<pcap::BreakLoop>>,
    /// Payload bytes kept after each header (`--response-prefix`).
    prefix: usize,
}

/// Opens `device` in immediate mode with a snap length covering link + IP + TCP headers, and
/// applies the BPF `filter`; `prefix`: payload bytes kept after each header.
pub fn open(device: &str, filter: &str, prefix: usize) -> anyhow::Result<PcapCapture> {
    let cap = pcap::Capture::from_device(device)
        .with_context(|| format!("capture device {device}"))?
        .immediate_mode(true)
        .snaplen(snaplen(prefix))
        .timeout(100)
        .buffer_size(DEVICE_BUFFER as i32)
        .open()
        .with_context(|| format!("cannot capture on {device} (root or CAP_NET_RAW needed)"))?;
    let mut cap = cap;
    cap.filter(filter, true)
        .with_context(|| format!("bad filter -F {filter:?}"))?;
    if !crate::linklayer::supported(LinkType::from_dlt(cap.get_datalink().0)) {
        anyhow::bail!(
            "device {device}: unsupported link type {}",
            cap.get_datalink().0
        );
    }
    let breaker = Arc::new(Mutex::new(cap.breakloop_handle()));
    Ok(PcapCapture {
        device: device.to_string(),
        filter: filter.to_string(),
        cap,
        breaker,
        prefix,
    })
}

impl PcapCapture {
    /// A handle that wakes [`run`](Self::run) from another thread (libpcap's immediate mode
    /// may block without a timeout); set the stop flag, then call `breakloop()` on it.
    /// The handle follows reopens of the capture.
    pub fn breaker(&mut self) -> Arc<Mutex<pcap::BreakLoop>> {
        self.breaker.clone()
    }

    /// Captures until `stop` is set or the router's queue closes; blocks when the router is
    /// behind (the kernel then drops, and those drops are counted from pcap stats).
    pub fn run(mut self, tx: mpsc::Sender<HeaderBatch>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
        let lt = LinkType::from_dlt(self.cap.get_datalink().0);
        let last_drops = std::cell::Cell::new(0u64);
        let mut last_stats = Instant::now();
        let update_drops = |cap: &mut pcap::Capture<pcap::Active>| {
            if let Ok(s) = cap.stats() {
                let d = u64::from(s.dropped) + u64::from(s.if_dropped);
                stats
                    .kernel_drops
                    .fetch_add(d.saturating_sub(last_drops.get()), Relaxed);
                last_drops.set(d);
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
                    let Some(h) = ip_tcp_response(lt, p.data, self.prefix) else {
                        stats.not_tcp.fetch_add(1, Relaxed);
                        continue;
                    };
                    if tx.blocking_send(HeaderBatch::one(h)).is_err() {
                        break;
                    }
                }
                Err(pcap::Error::TimeoutExpired) => continue,
                Err(_) if stop.load(Relaxed) => break,
                Err(e) => {
                    // E.g. the device went down (ENETDOWN) or was deleted and re-created: the
                    // handle may be dead for good, so reopen it, with backoff, until it works
                    // or we stop.
                    stats.capture_errors.fetch_add(1, Relaxed);
                    tracing::error!("capture on {}: {e}; reopening", self.device);
                    update_drops(&mut self.cap);
                    let Some(c) = reopen_with_backoff(&self.device, &stop, || {
                        open(&self.device, &self.filter, self.prefix)
                    }) else {
                        return;
                    };
                    self.cap = c.cap;
                    last_drops.set(0);
                    if let Ok(mut b) = self.breaker.lock() {
                        *b = self.cap.breakloop_handle();
                    }
                    stats.capture_reopens.fetch_add(1, Relaxed);
                    tracing::info!("capture on {} reopened", self.device);
                }
            }
        }
        update_drops(&mut self.cap);
    }
}
