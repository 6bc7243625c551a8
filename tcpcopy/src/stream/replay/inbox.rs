//! The queue between the reader thread and one session task: what the reader hands over, in
//! order, each data item holding its share of the `--queue-mb` budget until the task is done
//! with it. Never blocks the reader; the task awaits the next item.

use crate::stream::reassembly::Side;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// What the reader hands to a session task.
pub(super) enum Item {
    Data {
        side: Side,
        ts: u64,
        bytes: Bytes,
        len: usize,
        new_message: bool,
        server_seen: bool,
        /// Its share of the queue budget, given back when the task is done with it.
        permit: Option<OwnedSemaphorePermit>,
    },
    Fin {
        side: Side,
        ts: u64,
    },
    Close,
}

/// A session's queue of items: a deque that grows with what is queued (a tokio channel would
/// allocate a block of 32 items per session up front; 10,000 sessions make that count).
pub(super) struct Inbox {
    q: Mutex<VecDeque<Item>>,
    notify: Notify,
    closed: AtomicBool,
}

/// The reader's end of an [`Inbox`]; dropping it closes the inbox.
pub(super) struct InboxTx(Arc<Inbox>);

impl InboxTx {
    pub(super) fn send(&self, item: Item) {
        self.0
            .q
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(item);
        self.0.notify.notify_one();
    }
}

impl Drop for InboxTx {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.notify.notify_one();
    }
}

impl Inbox {
    pub(super) fn new() -> (InboxTx, Arc<Inbox>) {
        let inbox = Arc::new(Inbox {
            q: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        (InboxTx(inbox.clone()), inbox)
    }

    fn pop(&self) -> Option<Item> {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }

    /// Next item; `None` once the sender is gone and the queue is empty.
    pub(super) async fn recv(&self) -> Option<Item> {
        loop {
            if let Some(i) = self.pop() {
                return Some(i);
            }
            if self.closed.load(Ordering::SeqCst) {
                return self.pop();
            }
            // notify_one leaves a permit when nobody waits: no wake-up is lost.
            self.notify.notified().await;
        }
    }
}
