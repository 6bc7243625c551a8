//! `replay`: tcpreplay and tcprewrite in one tool.
//!
//! Glue only (STYLE.md rule 4): [`cli`] turns flags into validated plain values, [`pipeline`]
//! is the one read → edit → pace → send loop over traits, and the I/O pieces plug into it: the
//! real clock, the AF_PACKET sender in [`sys`] (the crate's only unsafe code, system calls
//! only: the send policy is [`tx`], the scheduling facts [`sched`]), pcap files. [`launch`]
//! opens everything before the switch to `--user`.

pub mod cli;
pub mod clock;
pub mod edit;
pub mod input;
pub mod launch;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod sched;
pub mod sys;
pub mod tx;
