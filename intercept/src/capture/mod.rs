//! Live capture of the target's responses, each capture handing the router batches of IP + TCP
//! headers: a ring as a task beside the router, libpcap on a thread of its own.
//!
//! Two back ends: by default the library's capture ring in its frame-by-frame `TPACKET_V2`
//! form ([`ring`]), read in place, one batch per wake-up, optionally several rings per device
//! in a fanout group; or libpcap
//! in immediate mode ([`libpcap`], `--capture pcap`), one batch per packet, as intercept always
//! did. Both reopen a capture whose device went down or away, with the same backoff, and count
//! it in the same [`Stats`] counters.
//!
//! Never sends anything, and never decides where a response goes (that is the router's job).

pub mod libpcap;
pub mod ring;

use crate::batch::HeaderBatch;
use crate::server::Stats;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Which capture back end to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The library's capture ring (`TPACKET_V2` frames), read in place.
    Ring,
    /// The same ring in `TPACKET_V3` blocks handed over full or 1 ms after their first frame:
    /// fewer wake-ups for intercept and tcpcopy, but each response may wait that millisecond.
    Blocks,
    /// libpcap in immediate mode.
    Pcap,
}

/// Kernel buffer per device (the ring, or libpcap's buffer), shared by the device's rings: in
/// 512-byte frame slots (1,024 with a response prefix over 176 bytes), some 131,000 headers,
/// which a target answering 100,000 segments a second fills in 1.3 s of intercept off the CPU. A
/// target that saturates its host's cores can keep intercept waiting far longer than the
/// 128 ms that 8 MB gave, and every lost SYN-ACK or acknowledgement stalls a clone until
/// tcpcopy retransmits.
pub const DEVICE_BUFFER: usize = 64 << 20;

/// The router's queue: in batches (what a capture wake-up found) or, with libpcap, in headers.
pub fn queue_len(backend: Backend) -> usize {
    match backend {
        // A frame ring's batch holds at most 1,024 headers (a block ring's may pass that by one
        // block): 1,024 batches bound the queue to about a million headers. A busy ring fills
        // its batches; a quiet one sends small ones, and then the ring itself buffers.
        Backend::Ring | Backend::Blocks => 1024,
        Backend::Pcap => 65_536,
    }
}

/// One opened capture, ready to start.
pub enum DeviceCapture {
    /// One ring of a device (one of `--workers`).
    Ring(ring::RingCapture),
    /// A libpcap handle on a device.
    Pcap(libpcap::PcapCapture),
}

/// Opens the captures of `device`: `workers` rings in one fanout group, or one libpcap handle
/// (`workers` must then be 1). `prefix`: payload bytes kept after each response's header
/// (`--response-prefix`; 0: headers only).
pub fn open(
    device: &str,
    filter: &str,
    backend: Backend,
    workers: usize,
    prefix: usize,
) -> anyhow::Result<Vec<DeviceCapture>> {
    Ok(match backend {
        Backend::Ring | Backend::Blocks => {
            ring::open(device, filter, workers, prefix, backend == Backend::Blocks)?
                .into_iter()
                .map(DeviceCapture::Ring)
                .collect()
        }
        Backend::Pcap => {
            anyhow::ensure!(
                workers == 1,
                "--workers {workers} needs --capture ring or blocks"
            );
            vec![DeviceCapture::Pcap(libpcap::open(device, filter, prefix)?)]
        }
    })
}

/// A capture started by [`DeviceCapture::start`].
pub enum Running {
    /// A ring's task on the runtime.
    Task(tokio::task::JoinHandle<()>),
    /// libpcap's thread, and the handle that wakes it from a blocking read.
    Thread(std::thread::JoinHandle<()>, Arc<Mutex<pcap::BreakLoop>>),
}

impl DeviceCapture {
    /// Starts the capture until `stop` is set or the router's queue closes: a ring as a task
    /// on `rt` (the runtime of the router, so that a batch costs one thread's wake-up), libpcap
    /// on a thread of its own (its reads block).
    pub fn start(
        self,
        rt: &tokio::runtime::Handle,
        tx: mpsc::Sender<HeaderBatch>,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Running> {
        Ok(match self {
            DeviceCapture::Ring(r) => Running::Task(rt.spawn(r.run(tx, stats, stop))),
            DeviceCapture::Pcap(mut p) => {
                let breaker = p.breaker();
                let thread = std::thread::Builder::new()
                    .name(format!("capture-{}", p.device))
                    .spawn(move || p.run(tx, stats, stop))?;
                Running::Thread(thread, breaker)
            }
        })
    }
}

impl Running {
    /// Waits for the capture to end once `stop` is set (a ring looks at it at least every
    /// 100 ms; libpcap is woken from its read), at most `within` for a ring.
    pub async fn finish(self, within: Duration) {
        match self {
            Running::Task(t) => {
                let _ = tokio::time::timeout(within, t).await;
            }
            Running::Thread(t, breaker) => {
                if let Ok(b) = breaker.lock() {
                    b.breakloop();
                }
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
    }
}

/// Waits between attempts to reopen a dead capture: 100 ms, doubling up to 2 s.
#[derive(Debug, Clone)]
pub struct ReopenBackoff {
    next: Duration,
}

impl Default for ReopenBackoff {
    fn default() -> Self {
        ReopenBackoff {
            next: Duration::from_millis(100),
        }
    }
}

impl ReopenBackoff {
    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Duration::from_secs(2));
        d
    }
}

/// Calls `open` until it succeeds, waiting as [`ReopenBackoff`] says before each attempt; `None`
/// when `stop` is set first. Failures are logged at debug level only (the caller logged the
/// error that started this, and a device down for minutes must not flood the log).
pub fn reopen_with_backoff<T>(
    device: &str,
    stop: &AtomicBool,
    mut open: impl FnMut() -> anyhow::Result<T>,
) -> Option<T> {
    let mut backoff = ReopenBackoff::default();
    loop {
        let until = Instant::now() + backoff.next_delay();
        while Instant::now() < until && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Relaxed) {
            return None;
        }
        match open() {
            Ok(t) => return Some(t),
            Err(e) => tracing::debug!("reopening capture on {device}: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        let mut b = ReopenBackoff::default();
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn reopen_retries_until_open_works_or_stop() {
        let stop = AtomicBool::new(false);
        let mut tries = 0;
        let got = reopen_with_backoff("test0", &stop, || {
            tries += 1;
            if tries < 2 {
                anyhow::bail!("device down")
            }
            Ok(tries)
        });
        assert_eq!(got, Some(2));
        stop.store(true, Relaxed);
        let got: Option<()> = reopen_with_backoff("test0", &stop, || unreachable!());
        assert_eq!(got, None);
    }

    #[test]
    fn pcap_takes_one_worker() {
        let e = open("lo", "tcp", Backend::Pcap, 2, 0).err().unwrap();
        assert!(e.to_string().contains("--capture ring"), "{e}");
    }
}
