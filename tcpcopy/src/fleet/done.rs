//! What ties a session a worker replays to the broker: the token its replay tasks hold (dropped
//! by the last, it acknowledges the session's messages) and the session's sent mark.
//!
//! The mark (`STREAM.ctl.sent.<replay>.<session>`) is stored, and its storing acknowledged,
//! before the session's first byte goes to the target. A worker that gets a session delivered
//! again (its first worker died before acknowledging it) thus tells a session replayed before
//! (the mark is there: a repeat, its requests counted as such) from one only fetched (no mark:
//! replayed for the first time). So, with no session unmarked, the repeats bound what reached
//! the target twice from above. Not exactly, as the mark does not tell how far a replay got:
//! - a worker killed once a session's mark has left for the broker and before the session's
//!   first write leaves a mark for a session it never sent (the broker stores a mark that was on
//!   its way even after its sender died): that session counts as a repeat though only its
//!   successor sends it. The window is a broker round trip (a replicated stream's commit) and a
//!   task wake-up per session, milliseconds under load: a kill catches the few sessions
//!   starting then;
//! - a session cut after some of its requests counts all of them.

use super::from::WorkerCounters;
use async_nats::jetstream::{self, message::Acker};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Stream mode's side of a worker: replays one whole session. `done` must be kept until every
/// copy of the session has been replayed, then dropped (that acknowledges it).
pub trait Dispatch {
    /// Replays the events of one session on the schedule given by capture time `t0` ↔ `base`.
    fn dispatch_session(
        &mut self,
        events: Vec<crate::stream::reassembly::StreamEvent>,
        t0: u64,
        base: Instant,
        done: DoneToken,
    );
}

/// Held by a session's replay tasks; dropped by the last, it acknowledges the session.
#[derive(Clone)]
pub struct DoneToken(Arc<Done>);

pub(super) struct Done {
    pub(super) handles: Vec<Acker>,
    pub(super) acks: mpsc::UnboundedSender<Vec<Acker>>,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) session: u64,
    pub(super) finished: mpsc::UnboundedSender<u64>,
    /// A worker replayed this session before (its sent mark was there).
    pub(super) repeat: bool,
    pub(super) mark: SentMark,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.acks.send(std::mem::take(&mut self.handles));
        let _ = self.finished.send(self.session);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long storing a sent mark may take before the replay goes on without it.
const MARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Stores a session's sent mark once, for all its copies.
pub(super) struct SentMark {
    pub(super) js: jetstream::Context,
    pub(super) subject: String,
    pub(super) stored: tokio::sync::OnceCell<()>,
    pub(super) counters: Arc<WorkerCounters>,
}

impl SentMark {
    async fn store(&self) {
        self.stored
            .get_or_init(|| async {
                // The message id makes a second worker's mark of the same session a duplicate
                // the broker drops (within the stream's duplicate window).
                let publish = jetstream::message::PublishMessage::build()
                    .payload(bytes::Bytes::from_static(b"sent"))
                    .message_id(self.subject.clone());
                let stored = async {
                    self.js
                        .send_publish(self.subject.clone(), publish)
                        .await
                        .ok()?
                        .await
                        .ok()
                };
                if tokio::time::timeout(MARK_TIMEOUT, stored)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    // The replay goes on (the target matters more than the count); should it be
                    // delivered again, it will not count as a repeat.
                    self.counters.unmarked.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await;
    }
}

impl DoneToken {
    pub(super) fn new(done: Done) -> Self {
        DoneToken(Arc::new(done))
    }

    /// Whether a worker replayed this session before: its requests are repeats.
    pub fn repeat(&self) -> bool {
        self.0.repeat
    }

    /// Stores the session's sent mark (once for all copies; later calls return at once). Called
    /// before the session's first byte is written to the target.
    pub async fn before_first_write(&self) {
        self.0.mark.store().await;
    }
}
