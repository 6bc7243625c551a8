//! Scripted engine tests: memory held after sessions end.

use super::*;

/// Opens `n` sessions from client ports `first..first + n` (handshake done both ways).
fn open_sessions(h: &mut H, first: u16, n: u16) {
    for port in first..first + n {
        let client = SocketAddr::new(CLIENT.ip(), port);
        send!(
            h,
            Seg {
                src: client,
                ..CLIENT_SYN
            },
            Seg {
                src: client,
                flags: ACK,
                ..TEMPLATE
            }
        );
        respond!(
            h,
            Seg {
                dst: client,
                ..SYN_ACK
            }
        );
        h.sent();
    }
}

/// Resets the sessions of client ports `first..first + n` from the client side.
fn reset_sessions(h: &mut H, first: u16, n: u16) {
    for port in first..first + n {
        send!(
            h,
            Seg {
                src: SocketAddr::new(CLIENT.ip(), port),
                flags: RST,
                ..TEMPLATE
            }
        );
        h.sent();
    }
    h.events();
}

#[test]
fn ended_sessions_do_not_pile_up_in_the_timer_heap() {
    // 20 waves of 1,000 sessions that live past their first retransmission deadline (so each
    // sets its 10-minute idle deadline) and are then reset: every one leaves a stale deadline
    // 10 minutes out. The heap must stay near the live count, not grow with every session.
    let mut h = H::new(config());
    let mut peak = 0;
    for wave in 0..20u16 {
        let first = 2000 + wave * 1000;
        open_sessions(&mut h, first, 1000);
        h.advance(Duration::from_millis(1500));
        assert_eq!(h.e.session_count(), 1000, "wave {wave}");
        reset_sessions(&mut h, first, 1000);
        peak = peak.max(h.e.timers.len());
    }
    assert_eq!(h.e.session_count(), 0);
    assert_eq!(h.e.stats().sessions_client_reset, 20_000);
    assert!(
        peak <= 2 * 2 * 2000 + 1,
        "timer heap reached {peak} entries for at most 1,000 live sessions"
    );
}

#[test]
fn compact_gives_back_what_a_past_peak_left_and_the_engine_goes_on() {
    let mut h = H::new(config());
    open_sessions(&mut h, 2000, 5000);
    h.advance(Duration::from_millis(1500));
    reset_sessions(&mut h, 2000, 5000);
    assert_eq!(h.e.session_count(), 0);
    let before = (h.e.slots.capacity(), h.e.by_target.capacity());
    assert!(before.0 >= 5000 && before.1 >= 5000, "{before:?}");
    h.e.compact();
    assert_eq!(
        (h.e.slots.len(), h.e.free.len(), h.e.timers.len()),
        (0, 0, 0)
    );
    assert!(
        h.e.slots.capacity() < 100 && h.e.by_target.capacity() < 100,
        "slots {} / map {} after compact",
        h.e.slots.capacity(),
        h.e.by_target.capacity()
    );
    // A live session keeps its slot, its timer and its lookups through a compact.
    open_sessions(&mut h, 2000, 3);
    reset_sessions(&mut h, 2000, 2);
    h.e.compact();
    assert_eq!((h.e.session_count(), h.e.slots.len()), (1, 3));
    let client = SocketAddr::new(CLIENT.ip(), 2002);
    send!(
        h,
        Seg {
            src: client,
            payload: b"ping",
            ..TEMPLATE
        }
    );
    let out = h.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].src, out[0].payload.as_slice()),
        (client, &b"ping"[..])
    );
    respond!(
        h,
        Seg {
            dst: client,
            ack: CLIENT_ISN + 5,
            ..RESP
        }
    );
    // The session's deadlines still fire: idle past the session timeout, it ends.
    h.advance(Duration::from_secs(601));
    h.sent();
    assert_eq!(h.e.session_count(), 0);
}
