//! Tests of the TLS stage and the target settings.

use super::filter::*;
use super::*;
use crate::stream::reassembly::{SessionId, Side, StreamEvent};
use bytes::Bytes;
use tcpclone::flow::FlowKey;

fn open(id: SessionId) -> StreamEvent {
    StreamEvent::Open {
        id,
        key: FlowKey {
            src: "198.18.0.1:40000".parse().unwrap(),
            dst: "198.18.1.1:443".parse().unwrap(),
        },
        ts: 1,
        syn_seen: true,
    }
}

fn data(id: SessionId, side: Side, b: &[u8], new_message: bool) -> StreamEvent {
    StreamEvent::Data {
        id,
        side,
        ts: 2,
        bytes: Bytes::copy_from_slice(b),
        new_message,
        server_seen: true,
    }
}

#[test]
fn plaintext_sessions_pass_and_tls_without_keys_never_opens() {
    let mut f = TlsFilter::new(KeyLog::new());
    let mut out = Vec::new();
    f.handle(open(1), &mut out);
    assert!(out.is_empty(), "Open is held until the session is known");
    f.handle(
        data(1, Side::Client, b"GET / HTTP/1.1\r\n\r\n", true),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0], StreamEvent::Open { id: 1, .. }));
    assert_eq!(f.counts.plaintext, 1);

    // A TLS ClientHello record (cut: the hello is incomplete) then a close.
    out.clear();
    f.handle(open(2), &mut out);
    f.handle(
        data(2, Side::Client, &[22, 3, 1, 0, 10, 1, 0], true),
        &mut out,
    );
    f.handle(
        StreamEvent::Close {
            id: 2,
            ts: 3,
            reason: crate::stream::reassembly::EndReason::Fin,
            partial: false,
        },
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!((f.counts.incomplete, f.counts.cut_records), (1, 1));
}

/// A TLS 1.3 ClientHello and ServerHello (records), enough to wait for secrets.
fn hellos(random: u8) -> (Vec<u8>, Vec<u8>) {
    let rec = |typ: u8, body: Vec<u8>| {
        let mut m = vec![typ, 0, 0, body.len() as u8];
        m.extend(body);
        let mut r = vec![22, 3, 1, 0, m.len() as u8];
        r.extend(m);
        r
    };
    let mut ch = vec![3, 3];
    ch.extend([random; 32]);
    ch.extend([0, 0, 2, 0x13, 0x01, 1, 0, 0, 7, 0, 43, 0, 3, 2, 3, 4]);
    let mut sh = vec![3, 3];
    sh.extend([9; 32]);
    sh.extend([0, 0x13, 0x01, 0, 0, 6, 0, 43, 0, 2, 3, 4]);
    (rec(1, ch), rec(2, sh))
}

#[test]
fn live_sessions_wait_for_secrets_within_time_and_memory() {
    let mut f = TlsFilter::with_wait(KeyLog::new(), true, 1_000, 100);
    let mut out = Vec::new();
    for id in [1, 2] {
        let (ch, sh) = hellos(id as u8);
        f.handle(open(id), &mut out);
        f.handle(data(id, Side::Client, &ch, true), &mut out);
        f.handle(data(id, Side::Server, &sh, false), &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(f.waiting(), 2);
    // Session 2's end is held while it waits.
    f.handle(
        StreamEvent::Close {
            id: 2,
            ts: 3,
            reason: crate::stream::reassembly::EndReason::Fin,
            partial: false,
        },
        &mut out,
    );
    assert_eq!((f.waiting(), f.counts.without_keys), (2, 0));
    // Within the time bound: session 1 is over the memory bound only with its records.
    f.handle(data(1, Side::Client, &[23, 3, 3, 0, 200], false), &mut out);
    f.handle(data(1, Side::Client, &[0; 200], false), &mut out);
    f.poll(500, false, &mut out);
    assert_eq!((f.waiting(), f.counts.without_keys), (1, 1));
    // Past the time bound.
    f.poll(5_000, false, &mut out);
    assert_eq!((f.waiting(), f.counts.without_keys), (0, 2));
    assert!(out.is_empty(), "never opened: {out:?}");
}

#[test]
fn follower_reads_whole_appended_lines() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keys");
    std::fs::write(&p, "").unwrap();
    let mut fl = KeyLogFollower::new(&p, 0, 0);
    let mut keys = KeyLog::new();
    let line = format!("CLIENT_RANDOM {} {}\n", "01".repeat(32), "ab".repeat(48));
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(&line.as_bytes()[..40]).unwrap();
    assert_eq!(fl.read_new(&mut keys), 0);
    f.write_all(&line.as_bytes()[40..]).unwrap();
    f.write_all(b"garbage\n").unwrap();
    assert_eq!(fl.read_new(&mut keys), 2);
    assert_eq!(keys.len(), 1);
    // Truncated (rotated): read again from the start.
    std::fs::write(&p, &line[..]).unwrap();
    assert_eq!(fl.read_new(&mut keys), 1);
}

#[test]
fn keylog_mode_and_bad_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keys");
    let line = format!("CLIENT_RANDOM {} {}\n", "01".repeat(32), "ab".repeat(48));
    std::fs::write(&p, &line).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_keylog(&p, false).unwrap_err().to_string();
    assert!(e.contains("mode 0644 lets others read"), "{e}");
    assert!(!e.contains("abab"));
    assert_eq!(load_keylog(&p, true).unwrap().len(), 1);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(load_keylog(&p, false).unwrap().len(), 1);
    std::fs::write(&p, "<html>not keys</html>\n").unwrap();
    let e = load_keylog(&p, false).unwrap_err().to_string();
    assert!(e.contains("not a key log"), "{e}");
    assert!(load_keylog(&dir.path().join("missing"), false).is_err());
}

#[test]
fn target_tls_flag_checks() {
    let o = TlsOptions {
        target_tls: true,
        ..Default::default()
    };
    assert!(TargetTls::new(&o)
        .err()
        .unwrap()
        .to_string()
        .contains("--target-ca"));
    let o = TlsOptions {
        target_tls: true,
        target_insecure: true,
        target_alpn: Some("h2,http/1.1".into()),
        ..Default::default()
    };
    let t = TargetTls::new(&o).unwrap();
    let (cfg, name) = t.for_session(
        Some(&Captured {
            sni: Some("shop.example".into()),
            alpn: vec![b"x".to_vec()],
        }),
        "198.18.1.1:443".parse().unwrap(),
    );
    assert_eq!(
        cfg.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(name.to_str(), "shop.example");
    let (_, name) = t.for_session(None, "198.18.1.1:443".parse().unwrap());
    assert_eq!(name.to_str(), "198.18.1.1");
}
