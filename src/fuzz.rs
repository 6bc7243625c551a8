//! The fuzzing entry points, one per target in `fuzz/fuzz_targets/` (named after it), kept out
//! of the modules they exercise; the targets and the corpus replays in `tests/fuzz_corpora.rs`
//! call them. Each must never panic on any input except on a real bug, which its asserts name.
#![doc(hidden)]

use std::path::Path;

/// Feeds every file of `fuzz/corpus/<target>` and `fuzz/artifacts/<target>` under `fuzz_root`
/// (the seeds and any committed crash reproducers) to `run`; returns how many there were.
pub fn replay_corpus(fuzz_root: &Path, target: &str, mut run: impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz_root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for p in files {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            run(&data);
            n += 1;
        }
    }
    n
}

/// Reads every packet of a capture held in `data` and checks what must always hold; never
/// panics on any input. The fuzz target and the corpus regression test call it.
pub fn pcap_reader(data: &[u8]) {
    use crate::capture::*;
    let mut reader = match CaptureReader::from_reader(data, "fuzz") {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
            return;
        }
    };
    let linktype = reader.linktype();
    let mut out = match PcapWriter::new(Vec::new(), "out", linktype, TsPrecision::Nano, 0) {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut written = Vec::new();
    let mut count = 0usize;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                count += 1;
                assert!(p.data.len() <= MAX_CAPLEN as usize);
                // Round trip what a nanosecond pcap can hold (32-bit seconds).
                if p.linktype == linktype && p.ts.secs() <= u64::from(u32::MAX) {
                    written.push((p.ts, p.orig_len, p.data.len()));
                    if out.write_packet(p.ts, p.orig_len, p.data).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
                assert!(
                    reader.next_packet().ok().flatten().is_none(),
                    "reader not fused"
                );
                break;
            }
        }
    }
    // A preload of the same bytes holds the same packets, even when the file ends in an error.
    if let Ok(mut again) = CaptureReader::from_reader(data, "fuzz") {
        let (pre, _) = PreloadedCapture::load_partial(&mut again);
        assert_eq!(pre.len(), count);
    }
    let bytes = match out.finish() {
        Ok(b) => b,
        Err(_) => return,
    };
    let mut back = CaptureReader::from_reader(&bytes[..], "back").expect("own pcap reads back");
    for (ts, orig_len, caplen) in written {
        let p = back
            .next_packet()
            .expect("own pcap reads back")
            .expect("same packet count");
        assert_eq!((p.ts, p.orig_len, p.data.len()), (ts, orig_len, caplen));
    }
    assert!(back.next_packet().expect("own pcap reads back").is_none());
}

/// Fuzz entry: walks an arbitrary block (must never panic).
pub fn tpacket_block(data: &[u8]) {
    use crate::capture::tpacket::*;
    if let Ok(b) = BlockView::new_checked(data) {
        for f in b.frames().flatten() {
            let _ = (f.truncated(), f.data.len());
        }
    }
}

/// Fuzz entry: parses `data` under every link type and walks every view and accessor; must never
/// panic. Used by `fuzz/fuzz_targets/packet_views.rs` and the corpus replay test.
pub fn packet_views(data: &[u8]) {
    use crate::wire::*;
    let (sel, frame) = match data.split_first() {
        Some((s, f)) => (*s, f),
        None => return,
    };
    let lt = LINK_TYPES[usize::from(sel) % LINK_TYPES.len()];
    let Ok(layout) = parse_layout(lt, frame) else {
        return;
    };
    let _ = layout.l3(frame);
    if let Some(ip) = layout.ip {
        let l3 = &frame[layout.l3_offset..];
        match ip.version {
            IpVersion::V4 => {
                if let Ok(p) = Ipv4Packet::new_checked(l3) {
                    let _ = (p.src_addr(), p.dst_addr(), p.ttl(), p.verify_checksum());
                    let _ = p.payload();
                }
            }
            IpVersion::V6 => {
                if let Ok(p) = Ipv6Packet::new_checked(l3) {
                    let _ = (p.src_addr(), p.dst_addr(), p.hop_limit(), p.payload());
                }
            }
        }
        if let Some(l4) = layout.l4(frame) {
            match ip.protocol {
                IpProtocol::TCP => {
                    if let Ok(t) = TcpPacket::new_checked(l4) {
                        let _ = (t.seq(), t.ack(), t.flags(), t.mss(), t.window_scale());
                        let _ = (t.timestamps(), t.payload());
                        for o in t.options() {
                            let _ = o;
                        }
                    }
                }
                IpProtocol::UDP => {
                    if let Ok(u) = UdpPacket::new_checked(l4) {
                        let _ = (u.src_port(), u.len(), u.payload());
                    }
                }
                _ => {
                    if let Ok(i) = IcmpPacket::new_checked(l4) {
                        let _ = (i.msg_type(), i.code(), i.checksum());
                    }
                }
            }
        }
        let _ = layout.verify_checksums(frame);
    }
}

/// Fuzz entry: rewrites `data` (first byte picks the link type, second the edit set) with every
/// checksum mode; must never panic, and Full-mode output must parse again. Used by
/// `fuzz/fuzz_targets/rewriter.rs` and the corpus replay test.
pub fn rewriter(data: &[u8]) {
    use crate::rewrite::*;
    use crate::wire::{parse_layout, LINK_TYPES};
    let [sel, edits, frame @ ..] = data else {
        return;
    };
    let lt = LINK_TYPES[usize::from(*sel) % LINK_TYPES.len()];
    let mut o = RewriteOptions {
        portmap: vec!["80:8080,1000-2000:3000".into()],
        ttl: Some(["7", "+3", "-3"][usize::from(edits % 3)].into()),
        tos: (edits & 4 != 0).then_some(0x10),
        tclass: (edits & 4 != 0).then_some(0x20),
        mtu: Some(u32::from(edits & 0x3f) * 24 + 60),
        mtu_trunc: edits & 8 != 0,
        enet_dmac: Some("02:00:00:00:00:02".into()),
        ..Default::default()
    };
    if edits & 16 != 0 {
        o.pnat = vec!["198.18.0.0/15:198.19.0.0/16,[2001:db8::/32]:[2001:db8:1::/48]".into()];
    } else {
        o.srcipmap = vec!["0.0.0.0/0:198.18.0.0/16".into()];
        o.dstipmap = vec!["[::/0]:[2001:db8::/33]".into()];
    }
    if edits & 32 != 0 {
        o.enet_vlan = Some("add".into());
        o.enet_vlan_tag = Some(100);
    } else if edits & 64 != 0 {
        o.enet_vlan = Some("del".into());
    }
    if edits & 128 != 0 {
        o.dlt = Some("enet".into());
    }
    let mut out = Vec::new();
    for mode in [
        ChecksumMode::Full,
        ChecksumMode::Incremental,
        ChecksumMode::Keep,
    ] {
        o.checksums = mode;
        let Ok(rw) = Rewriter::compile(&o) else {
            return;
        };
        let r = rw.apply(lt, frame, frame.len() as u32, &mut out);
        if matches!(
            r.outcome,
            RewriteOutcome::Changed | RewriteOutcome::Unchanged | RewriteOutcome::Truncated
        ) {
            assert!(
                parse_layout(r.linktype, &out).is_ok(),
                "rewritten frame must parse"
            );
        }
        let mut copy = frame.to_vec();
        let _ = rw.apply_in_place(lt, &mut copy);
        let mut segs = 0usize;
        let mut scratch = Vec::new();
        let _ = tso_split(lt, frame, 576, &mut scratch, |_| segs += 1);
    }
}

/// Fuzzing entry point: decodes `data` as a stream fed in uneven pieces, and re-encodes every
/// message decoded to check that it round-trips. Panics only on a real bug.
pub fn proto_decoder(data: &[u8]) {
    use crate::proto::*;
    use bytes::BytesMut;
    // Prefixed responses are decoded under a prefix length agreed with `Options`: the last
    // byte picks it (0..=255), so both refused and accepted prefixes are exercised.
    let max_prefix = data.last().map_or(0, |&b| usize::from(b));
    let decoder = || {
        let mut d = FrameDecoder::new();
        d.set_max_prefix(max_prefix);
        d
    };
    let mut whole = decoder();
    let mut buf = BytesMut::from(data);
    let mut msgs = Vec::new();
    while let Ok(Some(m)) = whole.decode(&mut buf) {
        msgs.push(m);
    }
    // Same bytes, fed in pieces whose sizes come from the data itself.
    let mut split = decoder();
    let mut sbuf = BytesMut::new();
    let mut again = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    'feed: while pos < data.len() {
        let step = 1 + usize::from(data[i % data.len()]) % 97;
        i += 1;
        let end = (pos + step).min(data.len());
        sbuf.extend_from_slice(&data[pos..end]);
        pos = end;
        loop {
            match split.decode(&mut sbuf) {
                Ok(Some(m)) => again.push(m),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(msgs, again, "split decoding differs from whole decoding");
    for m in &msgs {
        let mut out = BytesMut::new();
        encode(m, &mut out).expect("a decoded message encodes");
        if let Message::PrefixedResponses { entries } = m {
            assert!(entries.iter().all(|e| e.prefix.len() <= max_prefix));
        }
        let back = decoder()
            .decode(&mut out)
            .expect("re-decodes")
            .expect("whole frame");
        assert_eq!(&back, m);
        assert!(out.is_empty());
    }
}

/// Fuzzing entry point for [`SecureChannel::read`] and the handshake. Panics only on a real
/// bug. The first byte picks the scenario, the rest is the attacker's bytes:
/// - `0`: a responder (intercept's end) fed arbitrary bytes in uneven pieces: it never yields
///   plaintext, since the bytes cannot complete a handshake without the key;
/// - `1`: an initiator (tcpcopy's end) after its first message, fed arbitrary bytes: the same;
/// - otherwise: an established pair; the initiator encrypts a message made of the data, the
///   attacker flips the bytes the data names in the ciphertext, the responder reads it: what it
///   yields is always a prefix of the message (tampering is detected, never decrypted).
pub fn secure_channel(data: &[u8]) {
    use crate::proto::secure::*;
    use bytes::BytesMut;
    let psk = Psk::from_bytes(std::array::from_fn(|i| i as u8 + 1));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Feeds `bytes` to `ch` in pieces whose sizes come from the bytes themselves; returns the
    // plaintext produced and whether an error was seen (after which the channel stays failed).
    let feed = |ch: &mut SecureChannel, bytes: &[u8]| -> (BytesMut, bool) {
        let (mut input, mut plain, mut out) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
        let mut failed = false;
        let (mut pos, mut i) = (0, 0);
        while pos < bytes.len() {
            let step = 1 + usize::from(bytes[i % bytes.len()]) % 61;
            i += 1;
            let end = (pos + step).min(bytes.len());
            input.extend_from_slice(&bytes[pos..end]);
            pos = end;
            if ch.read(&mut input, &mut plain, &mut out).is_err() {
                failed = true;
                assert!(ch.read(&mut input, &mut plain, &mut out).is_err());
                assert!(
                    ch.write(b"x", &mut out).is_err(),
                    "a failed channel sends nothing"
                );
                break;
            }
            assert!(
                input.len() < 2 + MAX_RECORD,
                "input beyond one record is consumed"
            );
        }
        (plain, failed)
    };
    match mode {
        0 | 1 => {
            let mut ch = if mode == 0 {
                SecureChannel::responder(&psk).expect("responder")
            } else {
                SecureChannel::initiator(&psk, &mut BytesMut::new()).expect("initiator")
            };
            let (plain, _) = feed(&mut ch, rest);
            assert!(plain.is_empty(), "plaintext from forged bytes");
        }
        _ => {
            let mut hello = BytesMut::new();
            let mut a = SecureChannel::initiator(&psk, &mut hello).expect("initiator");
            let mut b = SecureChannel::responder(&psk).expect("responder");
            let (mut plain, mut reply) = (BytesMut::new(), BytesMut::new());
            b.read(&mut hello, &mut plain, &mut reply)
                .expect("handshake 1");
            a.read(&mut reply, &mut plain, &mut BytesMut::new())
                .expect("handshake 2");
            assert!(a.is_established() && b.is_established() && plain.is_empty());
            // The message: the data repeated up to a size from its first byte (several records
            // when large); the flips: pairs (position, xor mask) from the data.
            let n = rest.len().max(1) * (1 + usize::from(rest.first().copied().unwrap_or(0)));
            let msg: Vec<u8> = rest.iter().copied().cycle().take(n.min(200_000)).collect();
            let mut wire = BytesMut::new();
            a.write(&msg, &mut wire).expect("encrypts");
            let mut tampered = false;
            for pair in rest.chunks_exact(3) {
                let at = usize::from(u16::from_be_bytes([pair[0], pair[1]])) % wire.len().max(1);
                if pair[2] != 0 && !wire.is_empty() {
                    wire[at] ^= pair[2];
                    tampered = true;
                }
            }
            let (got, failed) = feed(&mut b, &wire);
            assert!(
                msg.starts_with(&got),
                "tampered ciphertext decrypted to other bytes"
            );
            if !tampered {
                assert!(
                    !failed && got[..] == msg[..],
                    "untouched records round-trip"
                );
            }
        }
    }
}

/// Fuzzing entry point (the `tls_session` fuzz target and its corpus test): `data` is a cut
/// size byte, then chunks of `[direction bit | length high 7 bits] [length low] bytes`, fed to a
/// [`TlsSession`], retried with made-up secrets for whatever client random it read; the key log
/// parser and the record parser also get `data`. Must never panic.
pub fn tls_session(data: &[u8]) {
    use crate::tls::*;
    let _ = KeyLog::parse(&String::from_utf8_lossy(data), "fuzz");
    let mut off = 0u64;
    let mut rest = data;
    while let Ok(Some((_, n))) = record::parse_record(rest, off) {
        rest = &rest[n..];
        off += n as u64;
    }
    for n in 0..data.len().min(64) {
        let _ = handshake::parse_client_hello(&data[n..]);
        let _ = handshake::parse_server_hello(&data[n..]);
        let _ = handshake::parse_encrypted_extensions(&data[n..]);
    }
    let Some((&cut, mut rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut s = TlsSession::new();
    let mut out = session::Output::new();
    let empty = KeyLog::new();
    while let [h, l, tail @ ..] = rest {
        let dir = if h & 0x80 == 0 {
            Origin::Client
        } else {
            Origin::Server
        };
        let len = (usize::from(h & 0x7f) << 8 | usize::from(*l)).min(tail.len());
        for piece in tail[..len].chunks(cut) {
            let _ = s.handle(dir, piece, &empty, &mut out);
        }
        rest = &tail[len..];
    }
    if let Some(r) = s.client_random() {
        let r: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let s32 = "42".repeat(32);
        let mut text = format!("CLIENT_RANDOM {r} {}\n", "42".repeat(48));
        for l in [
            "CLIENT_EARLY_TRAFFIC_SECRET",
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0",
        ] {
            text.push_str(&format!("{l} {r} {s32}\n"));
        }
        if let Ok((keys, _)) = KeyLog::parse(&text, "fuzz") {
            let _ = s.retry(&keys, &mut out);
        }
    }
    let _ = s.finish();
    let _ = (s.info(), s.counters(), s.held_bytes());
}

/// Fuzzing entry point: decodes `data` as `protocol` in `dir`, whole and in uneven pieces whose
/// sizes come from the data; both must give the same messages. Panics only on a real bug.
pub fn decode(protocol: crate::decode::Protocol, dir: crate::decode::Direction, data: &[u8]) {
    use crate::decode::*;
    let limits = Limits {
        max_buffered: 64 << 10,
        max_body: 4 << 10,
        max_depth: 16,
    };
    let mut whole = protocol.decoder(dir, limits);
    let (a, ea) = decode_pieces(whole.as_mut(), [data]);
    let mut pieces = Vec::new();
    let (mut pos, mut i) = (0, 0);
    while pos < data.len() {
        let step = 1 + usize::from(data[i % data.len()]) % 23;
        i += 1;
        let end = (pos + step).min(data.len());
        pieces.push(&data[pos..end]);
        pos = end;
    }
    let mut split = protocol.decoder(dir, limits);
    let (b, eb) = decode_pieces(split.as_mut(), pieces);
    // Every whole reply the decoder accepted is one value the diff's tree parser accepts.
    if protocol == Protocol::Redis && dir == Direction::Response {
        for m in a.iter().filter(|m| m.body.len() as u64 == m.body_len) {
            if let Err(e) = redis::Value::parse(&m.body, limits.max_depth) {
                panic!("decoded reply does not parse as a value: {e}");
            }
        }
    }
    let (a, b) = (join_data(a, limits.max_body), join_data(b, limits.max_body));
    assert_eq!(a, b, "whole and split decoding differ");
    // A head cut by the buffer limit before its bad byte arrived is TooLarge one way and
    // Malformed the other; any other error must be the same.
    let limit = |e: &Option<DecodeError>| matches!(e, Some(DecodeError::TooLarge { .. }));
    if limit(&ea) || limit(&eb) {
        assert_eq!(ea.is_some(), eb.is_some(), "whole {ea:?} split {eb:?}");
    } else {
        assert_eq!(ea, eb, "whole and split decoding fail differently");
    }
}

/// The `decode_http` target: the first byte picks requests or responses, the rest is the stream.
pub fn decode_http(data: &[u8]) {
    decode_by_first_byte(crate::decode::Protocol::Http, data);
}

/// The `decode_redis` target: the first byte picks commands or replies, the rest is the stream.
pub fn decode_redis(data: &[u8]) {
    decode_by_first_byte(crate::decode::Protocol::Redis, data);
}

fn decode_by_first_byte(protocol: crate::decode::Protocol, data: &[u8]) {
    use crate::decode::Direction;
    let Some((&d, rest)) = data.split_first() else {
        return;
    };
    let dir = if d & 1 == 0 {
        Direction::Request
    } else {
        Direction::Response
    };
    decode(protocol, dir, rest);
}

/// Joins runs of [`crate::decode::Summary::Data`] messages: passthrough data comes back in the pieces fed.
/// Bodies are kept to `max_body` bytes, as one message would keep them.
fn join_data(
    msgs: Vec<crate::decode::OwnedMessage>,
    max_body: usize,
) -> Vec<crate::decode::OwnedMessage> {
    use crate::decode::OwnedMessage;
    let mut out: Vec<OwnedMessage> = Vec::with_capacity(msgs.len());
    for m in msgs {
        match out.last_mut() {
            Some(last) if last.summary == "data" && m.summary == "data" => {
                last.wire_len += m.wire_len;
                last.body_len += m.body_len;
                let room = max_body.saturating_sub(last.body.len());
                last.body
                    .extend_from_slice(&m.body[..room.min(m.body.len())]);
            }
            _ => out.push(m),
        }
    }
    out
}
