//! tcpclone: the shared library of the tcpclone suite.
//!
//! Pure code only (STYLE.md rule 1): packet views and in-place rewriting, checksums, pcap/pcapng
//! reading and writing over `std::io` streams, flows, the tcpcopy–intercept protocol, the pacing
//! schedule and counters. Nothing here opens a socket or reads a clock by itself; time is passed in. The one
//! exception is [`sys`]: dropping privileges, reopenable log files and giving free heap back
//! to the kernel, for the binaries.

pub mod build;
pub mod capture;
pub mod decode;
#[cfg(feature = "docgen")]
pub mod docgen;
pub mod flow;
pub mod fuzz;
pub mod limit;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod pace;
pub mod proto;
pub mod rewrite;
pub mod seq;
pub mod shrink;
pub mod stats;
pub mod sys;
pub mod tls;
pub mod wire;
