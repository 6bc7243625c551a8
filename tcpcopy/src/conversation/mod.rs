//! The conversation core: the client's byte stream as captured, where each request starts, and
//! when it may go to the target. Sans-IO: sequence numbers, bytes and the caller's `now` in,
//! decisions out; this module never touches a socket, a clock, a file or a mode's state.
//!
//! This is the one place for three rules that every replay mode needs, used by raw mode's engine
//! (`engine::session`) and by stream mode (its reassembly, `stream::reassembly`, and its session
//! core, `stream::replay::session`), so that the two modes cannot drift apart: their differences
//! are named options ([`BoundaryRules`], [`GateRules`]) and named calls, not copies.
//!
//! - **Out-of-order holding** ([`ReorderQueue`], `order.rs`): the next sequence number expected,
//!   the new part of each segment (a retransmission's old bytes trimmed), the segments captured
//!   beyond a hole held in a B-tree by offset (holding, finding and taking the next cost O(log n)
//!   however many are held) and counted in memory as what they allocate ([`held_cost`]), given
//!   back in sequence order once the hole fills. Raw mode's [`ClientStream`] keeps the in-order
//!   bytes until the target acknowledges them; stream mode's reassembly delivers them at once.
//!   What a hole means is the mode's: raw mode resets the clone, stream mode ends the session.
//! - **The request boundary** ([`RequestBoundaries::on_client_data`], `boundary.rs`): client
//!   data starts a new request when the client's acknowledgment moved since its previous data.
//!   Production answered something in between (the ack moved over production's answer), so what
//!   follows waits for the target's answer. The handshake counts as "request 0" (a server
//!   greeting moves the first data's ack). How far the ack moved is what the next request
//!   expects to hear back. Stream mode's options ([`BoundaryRules::STREAM`]): the first data
//!   starts a request, and so does data after production's answer bytes were captured (a
//!   capture can hold the answer without the client's ack of it).
//! - **The release gate** ([`RequestPacer::release`], `pacing.rs`): a request held at a
//!   boundary is released once all of the send side reached the boundary and one of these holds:
//!   pacing is off ([`GateRules::no_wait`]); the target closed; the target answered at least as
//!   many bytes as production did; the target answered something and then was quiet for
//!   [`GateRules::idle_gap`]; or nothing new was sent for [`GateRules::response_timeout`]
//!   (counted as a pacing timeout when the target answered nothing). Raw mode adds one: a
//!   request with data captured [`GateRules::max_lag`] ago goes unanswered-behind (pipelined);
//!   the answer it did not wait for is then owed before the next request's own counts. Stream mode's session core
//!   holds each request production answered ([`RequestPacer::note_boundary`], with production's
//!   answer as the reassembly saw it); its options: `idle_gap` zero (the next request goes once
//!   the answer began; its think time from the capture holds the rest), the response timeout
//!   counted from when the request reached the gate ([`RequestPacer::wait_from`]), and the
//!   answer count starting over with each request ([`RequestPacer::reset_answer`]).

mod boundary;
mod chunks;
mod order;
mod pacing;
mod stream;

pub(crate) use boundary::{BoundaryRules, RequestBoundaries};
pub(crate) use chunks::{SparePool, CHUNK};
pub(crate) use order::{held_cost, Held, ReorderQueue};
pub(crate) use pacing::{GateRules, RequestPacer, PIPELINE_MIN_BYTES};
pub(crate) use stream::ClientStream;
