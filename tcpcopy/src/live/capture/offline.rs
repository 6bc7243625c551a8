//! `--offline`: a capture file (pcap or pcapng, the library's reader) replayed into the worker
//! with its own timing divided by `-a` (the library's pacing), through the same filter as a live
//! capture, as copied batches.

use super::copied::{ship, CopiedBatch, CopiedBatchPool};
use super::{dlt, strip_link, supported_dlt, wall_ns};
use crate::live::counters::Counters;
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::Sender;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::capture::LinkType;
use tcpclone::sys::ring::Wake;
use tracing::info;

/// The libpcap DLT to compile a filter for frames of `linktype` (LINKTYPE_RAW is DLT_RAW, 12 on
/// Linux; the other link types read here have the same number in both).
fn dlt_of(linktype: LinkType) -> i32 {
    if linktype == LinkType::RAW {
        dlt::RAW_LINUX
    } else {
        i32::try_from(linktype.0).unwrap_or(-1)
    }
}

/// Replays a capture file (pcap or pcapng, read by the library's reader) into the engine with
/// its own timing divided by `speedup` (the library's pacing schedule); packets go through the
/// same BPF filter as a live capture. Returns when the file ends or on `stop`.
#[allow(clippy::too_many_arguments)]
pub fn run_offline(
    path: &Path,
    filter: &str,
    speedup: f64,
    tx: Sender<CopiedBatch>,
    wake: Arc<Wake>,
    pool: CopiedBatchPool,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    use tcpclone::capture::{CaptureReader, PacketSource};
    use tcpclone::pace::{Pacer, Timing};
    let mut reader = CaptureReader::open(path)
        .with_context(|| format!("--offline: cannot read `{}`", path.display()))?;
    let mut pacer = Pacer::new(Timing::multiplier(speedup).context("-a/--speedup")?);
    // One compiled filter per link type (a pcapng file may have interfaces of several).
    let mut programs: std::collections::HashMap<u32, pcap::BpfProgram> = Default::default();
    let mut batch = pool.take();
    let origin = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let p = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
                return Err(anyhow!("--offline: {e}"));
            }
        };
        let dlt = dlt_of(p.linktype);
        if !supported_dlt(dlt) {
            let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
            return Err(anyhow!(
                "--offline: `{}` has link type {}, which tcpcopy cannot read",
                path.display(),
                p.linktype
            ));
        }
        let prog = match programs.entry(p.linktype.0) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let dead = pcap::Capture::dead(pcap::Linktype(dlt))
                    .map_err(|e| anyhow!("cannot set up the BPF compiler: {e}"))?;
                v.insert(
                    dead.compile(filter, true)
                        .with_context(|| format!("-F/--filter: bad filter `{filter}`"))?,
                )
            }
        };
        if !prog.filter(p.data) {
            continue;
        }
        counters.add(&counters.captured_frames, 1);
        if (p.orig_len as usize) > p.data.len() {
            counters.add(&counters.truncated, 1);
            continue;
        }
        let due_ns = pacer.schedule(p.ts, p.data.len()).unwrap_or(0);
        let Some(ip) = strip_link(dlt, p.data) else {
            counters.add(&counters.not_ip, 1);
            continue;
        };
        let due = origin + Duration::from_nanos(due_ns);
        if due > Instant::now() {
            // Hand over what is due before sleeping until this packet's time.
            if !ship(&tx, &wake, &pool, &mut batch, 0, &stop) {
                return Ok(());
            }
            sleep_until(due, &stop);
        }
        counters.add(&counters.captured_bytes, ip.len() as u64);
        // Live time, so the engine's latency figures stay meaningful; the file's own stamp
        // for the report's production times (production's latency as it was captured).
        batch.push_stamped(wall_ns(), p.ts.0, ip);
        if batch.due() && !ship(&tx, &wake, &pool, &mut batch, 0, &stop) {
            return Ok(());
        }
    }
    let _ = ship(&tx, &wake, &pool, &mut batch, 0, &stop);
    info!(file = %path.display(), "end of capture file");
    Ok(())
}

fn sleep_until(due: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= due || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `run_offline` on `path` with `filter` and returns the packets handed over and the
    /// result.
    fn offline(path: &Path, filter: &str) -> (Vec<Vec<u8>>, Result<()>, Arc<Counters>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = CopiedBatchPool::new(4);
        let counters = Arc::new(Counters::default());
        let r = run_offline(
            path,
            filter,
            1000.0,
            tx,
            Arc::new(Wake::new().unwrap()),
            pool,
            counters.clone(),
            Arc::new(AtomicBool::new(false)),
        );
        let pkts = rx
            .try_iter()
            .flat_map(|b: CopiedBatch| b.iter().map(|(_, p)| p.to_vec()).collect::<Vec<_>>())
            .collect();
        (pkts, r, counters)
    }

    #[test]
    fn offline_reads_the_file_through_the_filter_in_order() {
        let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/redis.pcap");
        let (pkts, r, c) = offline(&pcap, "tcp and dst port 6379");
        r.unwrap();
        // tshark -r pcaps/redis.pcap -Y tcp.dstport==6379 | wc -l
        assert_eq!(pkts.len(), 438);
        assert_eq!(Counters::get(&c.captured_frames), 438);
        assert!(pkts
            .iter()
            .all(|p| p[0] >> 4 == 4 && p[22..24] == 6379u16.to_be_bytes()));
    }

    #[test]
    fn offline_cut_file_keeps_what_was_read_and_names_the_offset() {
        let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/redis.pcap");
        let data = std::fs::read(&pcap).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.pcap");
        std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
        let (pkts, r, _) = offline(&cut, "tcp");
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("--offline") && e.contains("cut short at byte"),
            "{e}"
        );
        assert!(!pkts.is_empty(), "packets before the cut were handed over");
        let junk = dir.path().join("junk.pcap");
        std::fs::write(&junk, b"not a capture at all").unwrap();
        let (_, r, _) = offline(&junk, "tcp");
        assert!(format!("{:#}", r.unwrap_err()).contains("--offline"));
    }
}
