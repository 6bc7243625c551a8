//! rustls encrypts in-process, its key log is captured, and `tcpclone::tls` decrypts the wire
//! bytes to the same plaintext: every supported suite, TLS 1.2 and 1.3, random message sizes,
//! KeyUpdates, random cuts of the wire bytes, resumption, 0-RTT data.

use proptest::prelude::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use tcpclone::tls::session::Output;
use tcpclone::tls::{KeyLog, Origin, SessionStatus, TlsSession};

/// Collects rustls's key log lines in the NSS format.
#[derive(Debug, Default)]
struct Lines(Mutex<String>);

impl rustls::KeyLog for Lines {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let h = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut s = self.0.lock().unwrap();
        s.push_str(&format!("{label} {} {}\n", h(client_random), h(secret)));
    }
    fn will_log(&self, _: &str) -> bool {
        true
    }
}

/// Accepts any server certificate (the test's self-signed one).
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        ring().signature_verification_algorithms.supported_schemes()
    }
}

const SUITES: [&str; 6] = [
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
];

struct Pair {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    keys: Arc<Lines>,
}

/// rustls's ring provider (deprecated for lacking post-quantum key exchange, which does not
/// matter to record decryption; ring avoids aws-lc-rs's C build).
#[allow(deprecated)]
fn ring() -> CryptoProvider {
    provider::default_provider()
}

fn pair(suite_name: &str) -> Pair {
    pair_kx(suite_name, false)
}

/// With `retry`, the server accepts only P-256 while the client's first key share is X25519:
/// a HelloRetryRequest in every TLS 1.3 handshake.
fn pair_kx(suite_name: &str, retry: bool) -> Pair {
    let suite = provider::ALL_CIPHER_SUITES
        .iter()
        .find(|s| format!("{:?}", s.suite()) == suite_name)
        .copied()
        .unwrap_or_else(|| panic!("rustls has no {suite_name}"));
    let tls13 = suite_name.starts_with("TLS13");
    let prov = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..ring()
    });
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let cert = rcgen::generate_simple_self_signed(vec!["tls.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server_prov = if retry {
        Arc::new(CryptoProvider {
            kx_groups: vec![provider::kx_group::SECP256R1],
            ..(*prov).clone()
        })
    } else {
        prov.clone()
    };
    let mut server = ServerConfig::builder_with_provider(server_prov)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    server.max_early_data_size = 16 * 1024;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let keys = Arc::new(Lines::default());
    let mut client = ClientConfig::builder_with_provider(prov)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    client.key_log = keys.clone();
    client.enable_early_data = true;
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Pair {
        client: Arc::new(client),
        server: Arc::new(server),
        keys,
    }
}

/// Moves every pending TLS byte between the two ends, recording it as the wire would, and
/// reads what each end received (rustls refuses more once its plaintext buffer is full).
fn flush(
    c: &mut ClientConnection,
    s: &mut ServerConnection,
    wire: &mut Vec<(Origin, Vec<u8>)>,
    got: &mut [Vec<u8>; 2],
) {
    loop {
        let mut moved = false;
        while c.wants_write() {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            moved |= !buf.is_empty();
            let mut rest = &buf[..];
            while !rest.is_empty() {
                s.read_tls(&mut rest).unwrap();
                s.process_new_packets().unwrap();
                if let Some(mut e) = s.early_data() {
                    drain(&mut e, &mut got[0]);
                }
                drain(&mut s.reader(), &mut got[0]);
            }
            wire.push((Origin::Client, buf));
        }
        while s.wants_write() {
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            moved |= !buf.is_empty();
            let mut rest = &buf[..];
            while !rest.is_empty() {
                c.read_tls(&mut rest).unwrap();
                c.process_new_packets().unwrap();
                drain(&mut c.reader(), &mut got[1]);
            }
            wire.push((Origin::Server, buf));
        }
        if !moved {
            return;
        }
    }
}

fn drain(r: &mut impl Read, into: &mut Vec<u8>) {
    let mut buf = [0u8; 65536];
    while let Ok(n @ 1..) = r.read(&mut buf) {
        into.extend_from_slice(&buf[..n]);
    }
}

/// One operation of a conversation.
#[derive(Debug, Clone)]
enum Op {
    Client(usize),
    Server(usize),
    KeyUpdate(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..40_000).prop_map(Op::Client),
        4 => (0usize..40_000).prop_map(Op::Server),
        1 => any::<bool>().prop_map(Op::KeyUpdate),
    ]
}

struct Run {
    wire: Vec<(Origin, Vec<u8>)>,
    sent: [Vec<u8>; 2],
}

/// Runs one connection of `p` through `ops` (with `early` bytes of 0-RTT data when offered).
fn converse(p: &Pair, ops: &[Op], early: usize, seed: u8) -> Run {
    let mut c = ClientConnection::new(p.client.clone(), "tls.test".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(p.server.clone()).unwrap();
    let mut wire = Vec::new();
    let mut sent = [Vec::new(), Vec::new()];
    let fill = |n: usize, k: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ k)
            .collect::<Vec<u8>>()
    };
    let mut early_sent = Vec::new();
    if early > 0 {
        if let Some(mut e) = c.early_data() {
            let data = fill(early, seed ^ 0x55);
            let n = e.write(&data).unwrap();
            early_sent = data[..n].to_vec();
        }
    }
    let mut got = [Vec::new(), Vec::new()];
    flush(&mut c, &mut s, &mut wire, &mut got);
    assert!(!c.is_handshaking() && !s.is_handshaking());
    if c.is_early_data_accepted() {
        sent[0].extend_from_slice(&early_sent);
    }
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Client(n) => {
                let d = fill(*n, seed.wrapping_add(i as u8));
                c.writer().write_all(&d).unwrap();
                sent[0].extend_from_slice(&d);
            }
            Op::Server(n) => {
                let d = fill(*n, seed.wrapping_add(i as u8) ^ 0xff);
                s.writer().write_all(&d).unwrap();
                sent[1].extend_from_slice(&d);
            }
            // TLS 1.2 has no KeyUpdate: rustls refuses, which is fine.
            Op::KeyUpdate(true) => {
                let _ = c.refresh_traffic_keys();
            }
            Op::KeyUpdate(false) => {
                let _ = s.refresh_traffic_keys();
            }
        }
        flush(&mut c, &mut s, &mut wire, &mut got);
    }
    c.send_close_notify();
    flush(&mut c, &mut s, &mut wire, &mut got);
    // rustls itself agrees on what was sent (the test's own bookkeeping is right).
    assert_eq!(got[0], sent[0], "server read");
    assert_eq!(got[1], sent[1], "client read");
    Run { wire, sent }
}

/// Feeds the wire to a decryptor, each chunk cut at `cuts`, and returns the plaintext per side.
fn decrypt(run: &Run, keys: &KeyLog, cut: usize) -> ([Vec<u8>; 2], TlsSession) {
    let mut t = TlsSession::new();
    let mut out = Output::new();
    for (dir, bytes) in &run.wire {
        for piece in bytes.chunks(cut.max(1)) {
            t.handle(*dir, piece, keys, &mut out).unwrap();
        }
    }
    assert_eq!(t.finish(), None);
    let mut got = [Vec::new(), Vec::new()];
    for (dir, d) in out {
        got[if dir == Origin::Client { 0 } else { 1 }].extend_from_slice(&d);
    }
    (got, t)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn rustls_sessions_decrypt_to_their_plaintext(
        suite in 0usize..SUITES.len(),
        ops in proptest::collection::vec(op(), 0..8),
        cut in prop_oneof![Just(usize::MAX), 1usize..2000],
        early in 0usize..3000,
        seed in any::<u8>(),
    ) {
        let p = pair(SUITES[suite]);
        // A full handshake, then a resumed one (ticket / session id, and 0-RTT in TLS 1.3).
        let first = converse(&p, &ops, 0, seed);
        let second = converse(&p, &ops, early, seed ^ 1);
        let (keys, bad) = KeyLog::parse(&p.keys.0.lock().unwrap(), "rustls").unwrap();
        prop_assert!(bad.is_empty(), "{:?}", bad);
        for (i, run) in [first, second].iter().enumerate() {
            let (got, t) = decrypt(run, &keys, cut);
            prop_assert_eq!(t.status(), &SessionStatus::Decrypting);
            prop_assert_eq!(t.counters().auth_failures, 0);
            prop_assert_eq!(&got[0], &run.sent[0], "{} connection {} client", SUITES[suite], i);
            prop_assert_eq!(&got[1], &run.sent[1], "{} connection {} server", SUITES[suite], i);
            prop_assert_eq!(t.info().sni.as_deref(), Some("tls.test"));
            prop_assert_eq!(t.info().alpn.as_deref(), Some(&b"http/1.1"[..]));
            if i == 1 {
                prop_assert!(t.info().resumed, "{} not resumed", SUITES[suite]);
            }
        }
    }
}

/// A key log without this session's secrets: no plaintext, the session awaits keys.
#[test]
fn without_keys_nothing_comes_out() {
    let p = pair(SUITES[0]);
    let run = converse(&p, &[Op::Client(100), Op::Server(100)], 0, 3);
    let (got, t) = decrypt(&run, &KeyLog::new(), usize::MAX);
    assert!(got[0].is_empty() && got[1].is_empty());
    assert_eq!(t.status(), &SessionStatus::AwaitingKeys);
}

/// Writes real sessions of every suite as seeds of the `tls_session` fuzz target, in its chunk
/// format, when `TLS_FUZZ_SEEDS` names a directory (run by hand: `TLS_FUZZ_SEEDS=fuzz/corpus/tls_session`).
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("TLS_FUZZ_SEEDS") else {
        return;
    };
    for (i, name) in SUITES.iter().enumerate() {
        let p = pair(name);
        for (j, early) in [0usize, 500].into_iter().enumerate() {
            let run = converse(
                &p,
                &[Op::Client(300), Op::KeyUpdate(true), Op::Server(700)],
                early,
                9,
            );
            let mut seed = vec![if j == 0 { 255 } else { 7 }];
            for (d, bytes) in &run.wire {
                for c in bytes.chunks(0x7fff) {
                    let h = (c.len() >> 8) as u8 | if *d == Origin::Server { 0x80 } else { 0 };
                    seed.extend_from_slice(&[h, c.len() as u8]);
                    seed.extend_from_slice(c);
                }
            }
            std::fs::write(
                std::path::Path::new(&dir).join(format!("rustls-{i}-{j}")),
                seed,
            )
            .unwrap();
        }
    }
}

/// HelloRetryRequest: the second ServerHello is the real one; every suite of TLS 1.3.
#[test]
fn hello_retry_request_sessions_decrypt() {
    for name in &SUITES[..3] {
        let p = pair_kx(name, true);
        let run = converse(
            &p,
            &[
                Op::Client(5000),
                Op::Server(7000),
                Op::KeyUpdate(false),
                Op::Server(10),
            ],
            0,
            5,
        );
        let (keys, _) = KeyLog::parse(&p.keys.0.lock().unwrap(), "rustls").unwrap();
        let (got, t) = decrypt(&run, &keys, 7);
        assert!(t.info().retry, "{name}: no HelloRetryRequest happened");
        assert_eq!(got, run.sent, "{name}");
    }
}
