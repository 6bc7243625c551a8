//! Scripted engine tests, one file per section (state or concern); they share the harness,
//! the `TEMPLATE`/`RESP` segments and the `send!`/`respond!`/`expect!` helpers of `tests/mod.rs`.

use super::*;

mod acks;
mod copies;
mod fin_rst;
mod gaps;
mod handshake;
mod ipv6;
mod memory;
mod memory_after_end;
mod mid_flight;
mod pacing;
mod port_reuse;
mod report;
mod retransmission;
mod shedding;
mod window;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
