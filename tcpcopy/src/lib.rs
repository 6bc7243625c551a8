//! tcpcopy's engines: the sans-IO session engine (raw mode), the live glue around it, and stream
//! mode (replay over ordinary sockets) with its report.

pub mod cli;
pub mod config;
pub(crate) mod conversation;
pub mod engine;
pub mod fleet;
pub mod live;
pub mod mapping;
pub mod report;
pub mod stream;
