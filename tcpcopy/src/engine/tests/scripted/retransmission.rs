//! Scripted engine tests: retransmission.

use super::*;

#[test]
fn rto_retransmits_from_the_first_unacked_byte() {
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: b"abc",
            ..TEMPLATE
        }
    );
    expect!(
        h,
        [Want {
            payload: b"abc",
            ..WANT
        }]
    );
    // The handshake measured an RTT of ~0 on the virtual clock: the RTO is min_rto (200 ms).
    h.advance(ms(199));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            payload: b"abc",
            ..WANT
        }]
    );
    // Backed off: 400 ms next.
    h.advance(ms(399));
    expect!(h, []);
    h.advance(ms(1));
    expect!(
        h,
        [Want {
            payload: b"abc",
            ..WANT
        }]
    );
    let st = h.e.stats();
    assert_eq!((st.rto_expirations, st.segments_retransmitted), (2, 2));
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 4,
            ..RESP
        }
    );
    h.advance(Duration::from_secs(5));
    expect!(h, []);
}

#[test]
fn three_duplicate_acks_trigger_fast_retransmit() {
    static DATA: [u8; 4000] = [3; 4000];
    let mut h = session_established();
    send!(
        h,
        Seg {
            payload: &DATA,
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert!(out.len() >= 3);
    let first = out[0].payload.len() as u32;
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + first,
            ..RESP
        }
    );
    h.sent();
    for _ in 0..2 {
        respond!(
            h,
            Seg {
                ack: CLIENT_ISN + 1 + first,
                ..RESP
            }
        );
        expect!(h, []);
    }
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 1 + first,
            ..RESP
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seq, CLIENT_ISN + 1 + first);
    assert_eq!(h.e.stats().fast_retransmits, 1);
}

#[test]
fn rtt_sample_shortens_the_rto() {
    let mut h = session_established();
    for i in 0..5u32 {
        send!(
            h,
            Seg {
                seq: CLIENT_ISN + 1 + i,
                ack: PROD_ISN + 1 + i,
                payload: b"x",
                ..TEMPLATE
            }
        );
        h.sent();
        h.now += ms(2);
        respond!(
            h,
            Seg {
                ack: CLIENT_ISN + 2 + i,
                len: 1,
                seq: TARGET_ISN + 1 + i,
                ..RESP
            }
        );
        h.sent();
    }
    send!(
        h,
        Seg {
            seq: CLIENT_ISN + 6,
            ack: PROD_ISN + 6,
            payload: b"y",
            ..TEMPLATE
        }
    );
    h.sent();
    // 2 ms samples: SRTT + 4·RTTVAR is far below the floor, which is the RTO.
    h.advance(ms(199));
    assert!(h.sent().is_empty());
    h.advance(ms(1));
    let out = h.sent();
    assert_eq!(out.len(), 1, "RTO = min_rto after 2 ms samples: {out:?}");
}

#[test]
fn zero_window_is_probed() {
    let mut h = session_established();
    respond!(h, Seg { win: 0, ..RESP });
    send!(
        h,
        Seg {
            payload: b"data",
            ..TEMPLATE
        }
    );
    expect!(h, []);
    // The window update is lost: the persist timer probes with one byte.
    respond!(h, Seg { win: 0, ..RESP });
    h.advance(ms(200));
    expect!(
        h,
        [Want {
            payload: b"d",
            ..WANT
        }]
    );
    respond!(
        h,
        Seg {
            ack: CLIENT_ISN + 2,
            win: 100,
            ..RESP
        }
    );
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 2,
            payload: b"ata",
            ..WANT
        }]
    );
}
