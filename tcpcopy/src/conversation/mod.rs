//! The conversation core: the client's byte stream as captured, and when each request may go to
//! the target. Sans-IO: sequence numbers, bytes and the caller's `now` in, decisions out; this
//! module never touches a socket, a clock, a file or the engine's state.
//!
//! This is the one place for two rules that every replay mode needs:
//!
//! - **The request boundary** ([`RequestPacer::note_request`]): client data starts a new request
//!   when the client's acknowledgment moved since its previous data. Production answered
//!   something in between (the ack moved over production's answer), so what follows waits for the
//!   target's answer. The handshake counts as "request 0" (a server greeting moves the first
//!   data's ack). How far the ack moved is what the next request expects to hear back
//!   (`pacing::Boundary::expected`).
//! - **The release gate** ([`RequestPacer::gate_open`]): a request held at a boundary is released
//!   once all of the send side reached the boundary and one of these holds: pacing is off
//!   ([`GateRules::no_wait`]); the target closed; the target answered at least as many bytes as
//!   production did; the target answered something and then was quiet for
//!   [`GateRules::idle_gap`]; or nothing new was sent for [`GateRules::response_timeout`]
//!   (counted as a pacing timeout when the target answered nothing).
//!
//! [`ClientStream`] holds the in-order client bytes not yet acknowledged by the target, and the
//! segments captured beyond a hole (out of order) until the hole fills. Raw mode's engine
//! (`engine::session`) drives both; stream mode's session core (`stream::replay::session`)
//! holds each request production answered at a [`RequestPacer`] boundary
//! ([`RequestPacer::note_boundary`]) released by the same gate, so that the two modes cannot
//! drift apart: their differences belong in [`GateRules`] and in named calls, not in a copy.
//! Stream mode's options: `idle_gap` zero (the next request goes once the answer began; its
//! think time from the capture holds the rest), the response timeout counted from when the
//! request reached the gate ([`RequestPacer::wait_from`]), and the answer count starting over
//! with each request ([`RequestPacer::reset_answer`]).

mod pacing;
mod stream;

pub(crate) use pacing::{GateRules, RequestPacer};
pub(crate) use stream::{held_cost, ClientStream, Held};
