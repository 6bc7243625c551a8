//! Scripted engine tests: window and segmentation.

use super::*;

#[test]
fn never_exceeds_the_target_window() {
    static DATA: [u8; 3000] = [7; 3000];
    let mut h = session_syn_sent(config());
    respond!(
        h,
        Seg {
            win: 1000,
            opts: TcpOpts {
                wscale: None,
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    h.sent();
    send!(
        h,
        Seg {
            payload: &DATA,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1000);
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1001,
            win: 1000,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1000);
    assert_eq!(out[0].seq, CLIENT_ISN + 1001);
}

#[test]
fn window_scale_applies_to_the_target_window() {
    static DATA: [u8; 3000] = [7; 3000];
    let mut h = session_established(); // target wscale 7
    respond!(h, Seg { win: 10, ..RESP }); // 10 << 7 = 1280 bytes
    send!(
        h,
        Seg {
            payload: &DATA,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 1280);
}

#[test]
fn super_segments_are_split_to_the_mss_with_full_checksums() {
    static BIG: [u8; 60_000] = [0x5a; 60_000];
    let mut h = session_syn_sent(config());
    respond!(
        h,
        Seg {
            opts: TcpOpts {
                mss: Some(1000),
                ..SYN_ACK.opts
            },
            ..SYN_ACK
        }
    );
    h.sent();
    // Captured with a bogus (offloaded) checksum: the engine must not care.
    let mut pkt = build(
        &Seg {
            payload: &BIG,
            ..TEMPLATE
        },
        true,
    );
    pkt[36] ^= 0xff;
    h.e.handle_captured(h.now, &pkt);
    let out = h.sent(); // `sent` verifies every checksum
    assert_eq!(out.len(), 60);
    assert!(out.iter().all(|o| o.payload.len() == 1000));
    assert_eq!(out[59].seq, CLIENT_ISN + 1 + 59_000);
}

#[test]
fn mtu_and_mss_flags_limit_segments() {
    static BIG: [u8; 5000] = [1; 5000];
    let mut h = session_established_with(EngineConfig {
        mtu: 1000,
        mss: Some(700),
        ..config()
    });
    send!(
        h,
        Seg {
            payload: &BIG,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert!(out.iter().all(|o| o.payload.len() <= 700));
    assert_eq!(out.iter().map(|o| o.payload.len()).sum::<usize>(), 5000);
}
