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
pub use session::{Origin, SessionStatus, TlsError, TlsInfo, TlsSession};
