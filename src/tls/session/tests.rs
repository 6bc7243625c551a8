//! Tests of the TLS session: the RFC 8448 flights, missing and wrong keys, bounds, plaintext.

use super::*;
use crate::tls::handshake::tests::{RFC8448_CH, RFC8448_SH};
use hex_literal::hex;

fn hs_record(typ: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len() + 4;
    let mut r = vec![
        22,
        3,
        1,
        (len >> 8) as u8,
        len as u8,
        typ,
        0,
        (body.len() >> 8) as u8,
        body.len() as u8,
    ];
    r.extend_from_slice(body);
    r
}

fn rfc8448_keys(random: &[u8; 32]) -> KeyLog {
    let r = hex(random);
    let text = format!(
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET {r} b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21\n\
         SERVER_HANDSHAKE_TRAFFIC_SECRET {r} b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38\n\
         CLIENT_TRAFFIC_SECRET_0 {r} 9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5\n\
         SERVER_TRAFFIC_SECRET_0 {r} a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643\n"
    );
    KeyLog::parse(&text, "k").unwrap().0
}

const CLIENT_FINISHED: [u8; 58] = hex!(
    "17 03 03 00 35 75 ec 4d c2 38 cc e6 0b 29 80 44 a7 1e 21 9c 56 cc 77 b0 51 7f e9 b9
     3c 7a 4b fc 44 d8 7f 38 f8 03 38 ac 98 fc 46 de b3 84 bd 1c ae ac ab 68 67 d7 26 c4
     05 46"
);
const CLIENT_APP: [u8; 72] = hex!(
    "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa
     66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2
     97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4"
);

/// RFC 8448 §3, client side: hello, Finished under the handshake key, then 50 bytes of
/// application data under the application key, fed byte by byte.
#[test]
fn rfc8448_client_flight() {
    let random: [u8; 32] = RFC8448_CH[2..34].try_into().unwrap();
    let keys = rfc8448_keys(&random);
    let mut s = TlsSession::new();
    let mut out = Output::new();
    s.handle(Origin::Client, &hs_record(1, &RFC8448_CH), &keys, &mut out)
        .unwrap();
    // The client's next records wait for the ServerHello.
    s.handle(Origin::Client, &CLIENT_FINISHED[..10], &keys, &mut out)
        .unwrap();
    assert_eq!(s.status(), &SessionStatus::Hello);
    s.handle(Origin::Server, &hs_record(2, &RFC8448_SH), &keys, &mut out)
        .unwrap();
    assert_eq!(s.status(), &SessionStatus::Decrypting);
    for b in CLIENT_FINISHED[10..].iter().chain(&CLIENT_APP) {
        s.handle(Origin::Client, &[*b], &keys, &mut out).unwrap();
    }
    assert_eq!(out, vec![(Origin::Client, (0u8..50).collect::<Vec<_>>())]);
    assert_eq!(s.info().sni.as_deref(), Some("server"));
    assert_eq!(
        s.info().suite_name().as_deref(),
        Some("TLS_AES_128_GCM_SHA256")
    );
    assert_eq!(s.info().version_name(), "TLS 1.3");
    assert_eq!(s.counters().records, 1);
    assert_eq!(s.finish(), None);
}

#[test]
fn no_keys_waits_then_retries() {
    let random: [u8; 32] = RFC8448_CH[2..34].try_into().unwrap();
    let empty = KeyLog::new();
    let mut s = TlsSession::new();
    let mut out = Output::new();
    s.handle(Origin::Client, &hs_record(1, &RFC8448_CH), &empty, &mut out)
        .unwrap();
    s.handle(Origin::Server, &hs_record(2, &RFC8448_SH), &empty, &mut out)
        .unwrap();
    assert_eq!(s.status(), &SessionStatus::AwaitingKeys);
    s.handle(
        Origin::Client,
        &[&CLIENT_FINISHED[..], &CLIENT_APP].concat(),
        &empty,
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    assert!(s.held_bytes() >= 130);
    s.retry(&rfc8448_keys(&random), &mut out).unwrap();
    assert_eq!(out, vec![(Origin::Client, (0u8..50).collect::<Vec<_>>())]);
}

#[test]
fn wrong_key_counts_auth_failures_and_cut_record_reported() {
    let random: [u8; 32] = RFC8448_CH[2..34].try_into().unwrap();
    let r = hex(&random);
    let wrong = "11".repeat(32);
    let text = format!(
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET {r} {wrong}\nSERVER_HANDSHAKE_TRAFFIC_SECRET {r} {wrong}\n\
         CLIENT_TRAFFIC_SECRET_0 {r} {wrong}\nSERVER_TRAFFIC_SECRET_0 {r} {wrong}\n"
    );
    let keys = KeyLog::parse(&text, "k").unwrap().0;
    let mut s = TlsSession::new();
    let mut out = Output::new();
    s.handle(Origin::Client, &hs_record(1, &RFC8448_CH), &keys, &mut out)
        .unwrap();
    s.handle(Origin::Server, &hs_record(2, &RFC8448_SH), &keys, &mut out)
        .unwrap();
    s.handle(
        Origin::Client,
        &[&CLIENT_FINISHED[..], &CLIENT_APP[..40]].concat(),
        &keys,
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    assert_eq!(s.counters().auth_failures, 1);
    assert_eq!(
        s.finish(),
        Some(TlsError::Truncated {
            dir: Origin::Client,
            bytes: 40
        })
    );
}

#[test]
fn client_only_capture_is_bounded() {
    let mut s = TlsSession::new();
    let mut out = Output::new();
    let keys = KeyLog::new();
    s.handle(Origin::Client, &hs_record(1, &RFC8448_CH), &keys, &mut out)
        .unwrap();
    let rec = [&[23u8, 3, 3, 0x40, 0][..], &[0u8; 0x4000]].concat();
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = s.handle(Origin::Client, &rec, &keys, &mut out) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(TlsError::NoServerHello(_))), "{err:?}");
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn plaintext_passes_through_and_bad_suite_is_named() {
    let mut s = TlsSession::new();
    let mut out = Output::new();
    let keys = KeyLog::new();
    s.handle(Origin::Client, b"GET / HTTP/1.1\r\n\r\n", &keys, &mut out)
        .unwrap();
    s.handle(Origin::Server, b"HTTP/1.1 200 OK\r\n\r\n", &keys, &mut out)
        .unwrap();
    assert_eq!(s.status(), &SessionStatus::Plaintext);
    assert_eq!(out.len(), 2);

    let mut s = TlsSession::new();
    let mut sh = RFC8448_SH;
    // TLS_AES_128_CCM_SHA256.
    sh[35] = 0x13;
    sh[36] = 0x04;
    s.handle(Origin::Client, &hs_record(1, &RFC8448_CH), &keys, &mut out)
        .unwrap();
    let e = s
        .handle(Origin::Server, &hs_record(2, &sh), &keys, &mut out)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported cipher suite TLS_AES_128_CCM_SHA256"
    );
    assert!(matches!(s.status(), SessionStatus::Failed(_)));
    // Nothing more comes out, and nothing panics.
    s.handle(Origin::Client, &CLIENT_APP, &keys, &mut out)
        .unwrap();
}
