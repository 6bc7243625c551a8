//! The TPACKET_V3 ring of `tcpclone::sys::ring` against the real kernel, on loopback (needs
//! root or CAP_NET_RAW; skipped loudly otherwise):
//! - blocks handed back are filled again: a ring of 4 blocks carries 8 times its size without
//!   a kernel drop when it is read between bursts;
//! - a fanout group keeps every flow on one ring.
//!
//! Traffic: UDP datagrams from this process to itself on 127.0.0.1, bounded in count.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tcpclone::capture::tpacket::{frame_v2, BlockView};
use tcpclone::sys::ring::{interface_index, poll_many, Fanout, PacketRing, RingConfig, SockFilter};
use tcpclone_lab::require_root;

/// `filter` compiled for frames that start at the IP header (a SOCK_DGRAM ring).
fn compile(filter: &str) -> Vec<SockFilter> {
    let dead = pcap::Capture::dead(pcap::Linktype(12)).unwrap();
    let prog = dead.compile(filter, true).unwrap();
    prog.get_instructions()
        .iter()
        .map(|i| SockFilter::from_text(&i.to_string()).unwrap())
        .collect()
}

fn ring(filter: &[SockFilter], blocks: usize, fanout: Option<Fanout>) -> PacketRing {
    ring_with(filter, blocks, fanout, 1, None)
}

fn ring_with(
    filter: &[SockFilter],
    blocks: usize,
    fanout: Option<Fanout>,
    retire_ms: u32,
    frame_size: Option<usize>,
) -> PacketRing {
    PacketRing::open(&RingConfig {
        ifindex: interface_index("lo").unwrap(),
        block_size: 128 << 10,
        block_count: blocks,
        retire_ms,
        frame_size,
        filter,
        fanout,
        ignore_outgoing: true,
    })
    .unwrap()
}

/// Reads every block ready now; returns (UDP source port, payload length) per frame.
fn drain(r: &mut PacketRing) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        let view = BlockView::new_checked(b.bytes()).unwrap();
        for f in view.frames() {
            let f = f.unwrap();
            let ihl = usize::from(f.data[0] & 0x0f) * 4;
            let sport = u16::from_be_bytes([f.data[ihl], f.data[ihl + 1]]);
            out.push((sport, f.data.len() - ihl - 8));
        }
    }
    out
}

/// Drains until `want` frames arrived or 2 s passed.
fn drain_until(r: &mut PacketRing, got: &mut Vec<(u16, usize)>, want: usize) {
    let until = Instant::now() + Duration::from_secs(2);
    while got.len() < want && Instant::now() < until {
        got.extend(drain(r));
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn blocks_handed_back_are_filled_again() {
    require_root!("capture_ring::blocks_handed_back_are_filled_again");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let mut r = ring(&compile(&format!("udp and dst port {port}")), 4, None);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = [7u8; 1000];
    // 4 blocks of 128 KiB hold ~480 such frames; send 8 times the ring, a burst at a time.
    let (bursts, per_burst) = (40, 100);
    let mut got = Vec::new();
    for b in 0..bursts {
        for _ in 0..per_burst {
            tx.send_to(&payload, ("127.0.0.1", port)).unwrap();
        }
        drain_until(&mut r, &mut got, (b + 1) * per_burst);
        // Keep the receiving socket's own buffer empty (it is not what is tested).
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while rx.recv(&mut buf).is_ok() {}
    }
    assert_eq!(got.len(), bursts * per_burst, "every datagram read");
    assert!(got.iter().all(|&(_, len)| len == payload.len()));
    let st = r.stats().unwrap();
    assert_eq!(st.drops, 0, "no kernel drop: blocks went back in time");
    assert!(
        r.ignores_outgoing,
        "Linux 4.20+ takes PACKET_IGNORE_OUTGOING"
    );
}

/// A `TPACKET_V2` ring hands each frame over at once (its block timeout, here 5 s, plays no
/// part), and its slots are filled again once given back.
#[test]
fn a_frame_ring_hands_each_frame_over_at_once_and_reuses_its_slots() {
    require_root!("capture_ring::a_frame_ring_hands_each_frame_over_at_once_and_reuses_its_slots");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    // 2 blocks of 128 KiB in 2 KiB slots: 128 frames.
    let mut r = ring_with(
        &compile(&format!("udp and dst port {port}")),
        2,
        None,
        5_000,
        Some(2048),
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ready = Vec::new();
    let mut got = 0;
    rx.set_nonblocking(true).unwrap();
    // 300 frames, one at a time: more than twice the slots.
    for i in 0..300u32 {
        tx.send_to(&i.to_be_bytes(), ("127.0.0.1", port)).unwrap();
        let t = Instant::now();
        poll_many(&[r.fd()], 1_000, &mut ready).unwrap();
        assert!(
            ready[0] && t.elapsed() < Duration::from_millis(500),
            "frame {i} not handed over at once ({:?})",
            t.elapsed()
        );
        let slot = r.next_block().expect("a frame is ready");
        let f = frame_v2(slot.bytes()).unwrap();
        let ihl = usize::from(f.data[0] & 0x0f) * 4;
        assert_eq!(&f.data[ihl + 8..], &i.to_be_bytes(), "frames in order");
        got += 1;
        drop(slot);
        let mut buf = [0u8; 64];
        while rx.recv(&mut buf).is_ok() {}
    }
    assert_eq!(got, 300);
    assert_eq!(r.stats().unwrap().drops, 0);
    // Frame sizes the ring cannot hold: an error naming them, no panic.
    for bad in [0, 72, 100, 256 << 10] {
        let e = PacketRing::open(&RingConfig {
            ifindex: 0,
            block_size: 128 << 10,
            block_count: 2,
            retire_ms: 1,
            frame_size: Some(bad),
            filter: &[],
            fanout: None,
            ignore_outgoing: true,
        })
        .unwrap_err();
        assert!(e.to_string().contains(&format!("frame size {bad}")), "{e}");
    }
}

#[test]
fn fanout_keeps_each_flow_on_one_ring() {
    require_root!("capture_ring::fanout_keeps_each_flow_on_one_ring");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let prog = compile(&format!("udp and dst port {port}"));
    let mut a = ring(&prog, 8, Some(Fanout::New));
    let id = a.fanout_id().expect("the kernel picked a group id");
    let mut b = ring(&prog, 8, Some(Fanout::Join(id)));
    let senders: Vec<UdpSocket> = (0..16)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let per_flow = 20;
    for round in 0..per_flow {
        for s in &senders {
            s.send_to(&[round as u8; 64], ("127.0.0.1", port)).unwrap();
        }
    }
    let want = senders.len() * per_flow;
    let (mut ga, mut gb) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(2);
    while ga.len() + gb.len() < want && Instant::now() < until {
        ga.extend(drain(&mut a));
        gb.extend(drain(&mut b));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        ga.len() + gb.len(),
        want,
        "every datagram on exactly one ring"
    );
    let mut side: HashMap<u16, (usize, usize)> = HashMap::new();
    for &(p, _) in &ga {
        side.entry(p).or_default().0 += 1;
    }
    for &(p, _) in &gb {
        side.entry(p).or_default().1 += 1;
    }
    assert_eq!(side.len(), senders.len());
    for (p, (na, nb)) in &side {
        assert!(
            *na == 0 || *nb == 0,
            "flow from port {p} split over both rings ({na} and {nb})"
        );
    }
    // 16 flows hashed over 2 rings all on one side: 2 in 65,536.
    assert!(!ga.is_empty() && !gb.is_empty(), "both rings got flows");
}

/// A ring that overflowed flags the first block (or frame) it hands over after the drops, and
/// reading the drop counter clears the flag: what tells tcpcopy's worker that holes in the
/// streams from there on are lost segments. Both forms: blocks (retired after 10 ms) and frames.
#[test]
fn the_first_block_after_an_overflow_is_flagged_until_the_drops_are_read() {
    require_root!(
        "capture_ring::the_first_block_after_an_overflow_is_flagged_until_the_drops_are_read"
    );
    for frame_size in [None, Some(2048)] {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let mut r = ring_with(
            &compile(&format!("udp and dst port {port}")),
            2,
            None,
            10,
            frame_size,
        );
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let send = |n: usize| {
            for i in 0..n {
                tx.send_to(&(i as u32).to_be_bytes(), ("127.0.0.1", port))
                    .unwrap();
            }
        };
        // Read every slot the kernel handed over (waiting up to 2 s for the first); returns
        // (slots, slots flagged).
        let take = |r: &mut PacketRing| {
            let mut ready = Vec::new();
            poll_many(&[r.fd()], 2_000, &mut ready).unwrap();
            let (mut slots, mut flagged) = (0, 0);
            while let Some(b) = r.next_block() {
                slots += 1;
                flagged += usize::from(b.losing());
            }
            (slots, flagged)
        };
        // Far more than 2 blocks of 128 KiB hold, with nobody reading: the kernel drops.
        send(8_000);
        std::thread::sleep(Duration::from_millis(50));
        let (slots, flagged) = take(&mut r);
        assert!(slots > 0, "{frame_size:?}: nothing captured");
        assert_eq!(
            flagged, 0,
            "{frame_size:?}: slots filled before the drops are not flagged"
        );
        send(1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            take(&mut r),
            (1, 1),
            "{frame_size:?}: the first slot after the drops"
        );
        let drops = r.stats().unwrap().drops;
        assert!(drops > 0, "{frame_size:?}: the kernel counted no drop");
        send(1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            take(&mut r),
            (1, 0),
            "{frame_size:?}: flag cleared by reading the drops"
        );
        let mut buf = [0u8; 64];
        rx.set_nonblocking(true).unwrap();
        while rx.recv(&mut buf).is_ok() {}
    }
}

/// `waiting` counts the blocks handed over and not yet taken (what tcpcopy's worker sheds
/// connections on): none before traffic, as many as the kernel filled, fewer as they are taken.
#[test]
fn waiting_counts_the_blocks_not_taken_yet() {
    require_root!("capture_ring::waiting_counts_the_blocks_not_taken_yet");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let mut r = ring_with(
        &compile(&format!("udp and dst port {port}")),
        16,
        None,
        10,
        None,
    );
    assert_eq!((r.waiting(), r.slot_count()), (0, 16));
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // About 118 frames of 1,000 bytes fill a 128 KiB block: 5 full blocks and a sixth that
    // the 10 ms timeout retires.
    for _ in 0..(5 * 118 + 40) {
        tx.send_to(&[3u8; 1000], ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let waiting = r.waiting();
    assert!(
        (5..=7).contains(&waiting),
        "waiting {waiting}, want about 6"
    );
    drop(r.next_block().unwrap());
    drop(r.next_block().unwrap());
    assert_eq!(r.waiting(), waiting - 2);
    while r.next_block().is_some() {}
    assert_eq!(r.waiting(), 0);
    assert_eq!(r.stats().unwrap().drops, 0);
    let mut buf = [0u8; 1100];
    rx.set_nonblocking(true).unwrap();
    while rx.recv(&mut buf).is_ok() {}
}

/// Bytes held from a block keep it from the kernel: the reader moves on, the kernel stops at
/// the held block when it comes round to it (dropping, never overwriting it), the reader does
/// not take it for a new one, and the block is filled again once the bytes are dropped. Held
/// bytes outlive the ring.
#[test]
fn held_bytes_keep_their_block_until_dropped() {
    use tcpclone::sys::ring::HoldBytes;
    require_root!("capture_ring::held_bytes_keep_their_block_until_dropped");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let port = rx.local_addr().unwrap().port();
    let mut r = ring_with(
        &compile(&format!("udp and dst port {port}")),
        4,
        None,
        10,
        None,
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sink = [0u8; 1100];
    // One datagram per burst, so each burst is a block of its own whatever the moment the
    // kernel's retire timer (10 ms, periodic) fires: a burst of many datagrams could straddle
    // a tick and take two blocks, and the block count below is what is tested.
    let mut burst = |fill: u8| {
        tx.send_to(&[fill; 1000], ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        while rx.recv(&mut sink).is_ok() {}
    };
    // The first datagram's payload of the next block, held (waiting for the timer to retire it).
    let take_held = |r: &mut PacketRing| {
        let until = Instant::now() + Duration::from_secs(2);
        while !r.has_block() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let b = r.next_block().expect("a block");
        let view = BlockView::new_checked(b.bytes()).unwrap();
        let f = view.frames().next().unwrap().unwrap();
        b.hold(&f.data[28..]).unwrap()
    };
    burst(1);
    let held = take_held(&mut r);
    assert_eq!(r.oldest_held_age(), 1);
    assert_eq!(&held[..], &[1u8; 1000][..]);
    for fill in 2..5 {
        burst(fill);
        let mut got = Vec::new();
        drain_until(&mut r, &mut got, 1);
        assert_eq!(got, [(tx.local_addr().unwrap().port(), 1000)]);
    }
    assert_eq!(
        r.oldest_held_age(),
        4,
        "the held block is the whole ring ago"
    );
    assert_eq!(r.stats().unwrap().drops, 0);
    // The kernel is back at the held block: it drops, and the reader sees nothing new.
    burst(9);
    assert!(r.next_block().is_none(), "the held block is not a new one");
    assert_eq!(r.stats().unwrap().drops, 1);
    // How tcpcopy tells a stop at a held block (its `ring_hold_overruns`): the blocks since
    // the oldest held one and those waiting fill the ring.
    assert!(r.oldest_held_age() + r.waiting() >= r.slot_count());
    assert_eq!(
        &held[..],
        &[1u8; 1000][..],
        "the held bytes were not overwritten"
    );
    drop(held);
    assert_eq!(r.oldest_held_age(), 0);
    burst(10);
    let mut got = Vec::new();
    drain_until(&mut r, &mut got, 1);
    assert_eq!(got.len(), 1, "the block given back is filled again");
    burst(11);
    let held = take_held(&mut r);
    drop(r);
    assert_eq!(&held[..], &[11u8; 1000][..], "held bytes outlive the ring");
}
