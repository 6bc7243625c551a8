//! `replay`: tcpreplay and tcprewrite in one tool.
//!
//! Glue only (STYLE.md rule 4): [`cli`] turns flags into validated plain values, [`pipeline`]
//! is the one read → edit → pace → send loop over traits, and the I/O pieces plug into it: the
//! real clock, the AF_PACKET sender in [`sys`] (the crate's only unsafe code), pcap files.

pub mod cli;
pub mod clock;
pub mod edit;
pub mod input;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod sys;
