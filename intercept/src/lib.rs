//! intercept: captures the target's responses and reports their IP + TCP headers to the
//! tcpcopy instance that owns each session.
//!
//! Library + binary so tests can run the server with a fake response source (no pcap, no
//! root): [`server::serve`] takes the responses, in [`batch::HeaderBatch`]es, from an `mpsc`
//! channel that the captures ([`capture`]) or a test feed.

pub mod batch;
pub mod capture;
pub mod codec;
pub mod linklayer;
pub mod metrics;
pub mod router;
pub mod server;
pub mod sys;
