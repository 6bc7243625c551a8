//! Segmentation offload: with `gso_max` set, new data leaves as super-segments that, cut as the
//! kernel cuts them (`tcpclone::wire::gso::segment`, which `H::sent` applies and whose pieces
//! it checksums), are the segments the engine sends one by one without it.

use super::*;

/// `n` bytes of client data in captured segments of 1,000 bytes.
pub(crate) fn upload(h: &mut H, n: usize) {
    let data: &'static [u8] = Box::leak((0..n).map(|i| (i * 31 % 251) as u8).collect());
    for (k, chunk) in data.chunks(1000).enumerate() {
        send!(
            h,
            Seg {
                seq: CLIENT_ISN + 1 + (k * 1000) as u32,
                payload: chunk,
                ..TEMPLATE
            }
        );
    }
}

pub(crate) fn gso_config() -> EngineConfig {
    EngineConfig {
        gso_max: 64_000,
        ..config()
    }
}

/// (seq, ack, flags without PSH, payload) of what was sent.
fn shape(out: &[Out]) -> Vec<(u32, u32, u8, Vec<u8>)> {
    out.iter()
        .map(|o| (o.seq, o.ack, o.flags & !PSH, o.payload.clone()))
        .collect()
}

#[test]
fn bulk_data_leaves_as_one_super_segment_cut_into_the_same_segments() {
    let mut plain = session_established();
    upload(&mut plain, 20_000);
    let one_by_one = plain.sent();

    let mut h = session_established_with(gso_config());
    // Everything captured before the engine is polled: one wake-up's worth of data.
    upload(&mut h, 20_000);
    let pieces = h.sent();
    assert_eq!(
        h.supers, 1,
        "20,000 bytes within the window: one super-segment"
    );
    assert_eq!(shape(&pieces), shape(&one_by_one));
    assert!(pieces.iter().all(|o| o.payload.len() <= 1460));
    // PSH only on the last piece, as the kernel's segmentation leaves it.
    let psh: Vec<bool> = pieces.iter().map(|o| o.flags & PSH != 0).collect();
    assert_eq!(psh.iter().filter(|&&p| p).count(), 1);
    assert_eq!(psh.last(), Some(&true));
    // The counters count segments on the wire either way.
    assert_eq!(
        h.e.stats().segments_sent,
        plain.e.stats().segments_sent,
        "segments_sent counts pieces"
    );
    assert_eq!(h.e.stats().bytes_sent, 20_000);
}

#[test]
fn the_window_bounds_a_super_segment_and_acks_release_the_rest() {
    let mut h = session_established_with(gso_config());
    upload(&mut h, 100_000);
    let first = h.sent();
    let bytes: usize = first.iter().map(|o| o.payload.len()).sum();
    // The SYN-ACK's window (65,535, unscaled) bounds what is in flight.
    assert_eq!(bytes, 65_535);
    assert_eq!(first[0].seq, CLIENT_ISN + 1);
    assert!(
        h.supers >= 2,
        "64,000-byte cap: the window's rest is a second one"
    );
    // The target acknowledges everything: the rest goes out, still in order.
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + 65_535,
            win: 65535,
            ..RESP
        }
    );
    let rest = h.sent();
    let more: usize = rest.iter().map(|o| o.payload.len()).sum();
    assert_eq!(more, 100_000 - 65_535);
    assert_eq!(rest[0].seq, CLIENT_ISN + 1 + 65_535);
    for w in first.iter().chain(&rest).collect::<Vec<_>>().windows(2) {
        assert_eq!(w[1].seq, w[0].seq + w[0].payload.len() as u32, "contiguous");
    }
}

#[test]
fn retransmission_after_a_timeout_carries_the_same_bytes() {
    let mut h = session_established_with(gso_config());
    upload(&mut h, 5_000);
    let first = h.sent();
    assert_eq!(h.supers, 1);
    // Nothing acknowledged: after the retransmission timeout the data goes again.
    h.advance(Duration::from_secs(3));
    let again = h.sent();
    let first_bytes: Vec<u8> = first.iter().flat_map(|o| o.payload.clone()).collect();
    let again_bytes: Vec<u8> = again.iter().flat_map(|o| o.payload.clone()).collect();
    assert!(!again.is_empty());
    assert_eq!(again[0].seq, CLIENT_ISN + 1);
    assert!(first_bytes.starts_with(&again_bytes));
    assert!(h.e.stats().segments_retransmitted >= again.len() as u64);
}

#[test]
fn a_cap_below_the_mss_keeps_one_segment_per_transmit() {
    let mut h = session_established_with(EngineConfig {
        gso_max: 1000,
        ..config()
    });
    upload(&mut h, 5_000);
    let out = h.sent();
    assert_eq!(h.supers, 0);
    assert_eq!(out.len(), 4);
}

/// The live sender's way: super-segments' payloads left in the sessions and gathered after the
/// round's last transmit give, byte for byte, what copying them gives, through a window's worth
/// of acknowledgements and a retransmission.
#[test]
fn payloads_gathered_by_reference_are_the_bytes_copied_otherwise() {
    let run = |by_ref: bool| {
        let mut h = session_established_with(gso_config());
        h.by_ref = by_ref;
        upload(&mut h, 100_000);
        let mut out = h.sent();
        respond!(
            h,
            Seg {
                ack: CLIENT_ISN + 1 + 30_000,
                win: 65535,
                ..RESP
            }
        );
        out.extend(h.sent());
        h.advance(Duration::from_secs(3));
        out.extend(h.sent());
        (shape(&out), h.supers, h.gathered)
    };
    let (copied, supers, none) = run(false);
    let (gathered, supers_by_ref, n) = run(true);
    assert_eq!(none, 0);
    assert!(supers >= 3, "{supers}");
    assert_eq!(
        (supers_by_ref, n),
        (supers, supers),
        "every super-segment by reference"
    );
    assert_eq!(gathered, copied);
}

/// A reference whose bytes left the session (acknowledged, or the session gone) gives
/// nothing, never other bytes.
#[test]
fn a_payload_reference_whose_bytes_left_gives_nothing() {
    let mut h = session_established_with(gso_config());
    upload(&mut h, 20_000);
    let now = h.now;
    let mut buf = vec![0u8; 70_000];
    let tx =
        h.e.poll_transmit_by_ref(now, &mut buf)
            .expect("a super-segment");
    let r = tx.payload.expect("left by reference");
    assert!(tx.len < 100, "headers only: {}", tx.len);
    assert_eq!(r.len(), 20_000);
    assert!(h.e.payload(&r).is_some());
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + 20_000,
            ..RESP
        }
    );
    assert_eq!(h.e.payload(&r), None);
}
