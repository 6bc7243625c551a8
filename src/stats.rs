//! Counters and summaries shared by the binaries.
