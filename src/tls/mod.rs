//! TLS session decryption from an NSS key log (SSLKEYLOGFILE), for replaying captured TLS
//! traffic as its plaintext conversation.
//!
//! Pure (STYLE.md rule 1): reassembled bytes of each direction and the key log's text come in,
//! application plaintext comes out. Nothing here reads a file, a socket or a clock. The record
//! layer, the handshake parser and the key schedules are ours; the primitives (AES-GCM,
//! ChaCha20-Poly1305, HKDF, HMAC, SHA-2) come from RustCrypto.
//!
//! Layers: [`keylog`] (the key log format), [`record`] (TLS records over a byte stream),
//! [`handshake`] (ClientHello/ServerHello fields), [`schedule`] (TLS 1.3 HKDF-Expand-Label and
//! the TLS 1.2 PRF), [`suite`] (cipher suites and record protection) and [`session`] (the
//! per-connection state machine that ties them together).
//!
//! This module never logs and never formats a secret: errors name the file and line or the
//! session's client random, not key material.

pub mod handshake;
pub mod keylog;
pub mod record;
pub mod schedule;
pub mod session;
pub mod suite;

pub use keylog::{KeyLog, KeyLogError, Secrets};
pub use session::{Direction, SessionStatus, TlsError, TlsInfo, TlsSession};

/// Fuzzing entry point (the `tls_session` fuzz target and its corpus test): `data` is a cut
/// size byte, then chunks of `[direction bit | length high 7 bits] [length low] bytes`, fed to a
/// [`TlsSession`], retried with made-up secrets for whatever client random it read; the key log
/// parser and the record parser also get `data`. Must never panic.
#[doc(hidden)]
pub fn fuzz_session(data: &[u8]) {
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
            Direction::Client
        } else {
            Direction::Server
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
