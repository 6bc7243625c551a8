//! The client addresses that the engines of several workers hand out, in one table.
//!
//! With `--workers N` each worker's engine clones the sessions the kernel's fanout gave it, but
//! `-c` and `-n` pick client addresses (towards the target) from ranges every worker draws
//! from: two engines must never give the target the same client address and port, or their
//! clones would collide on one 4-tuple. (Responses need no table: each worker registers its
//! sessions on its own intercept connections, and intercept answers on the registering one.)
//!
//! Pure shared state (a mutex, no I/O); taken once per session created or removed, never per
//! segment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

type Table = HashMap<(SocketAddr, SocketAddr), u16>;

/// One worker's handle on the shared table.
#[derive(Debug, Clone)]
pub struct SharedClients {
    table: Arc<Mutex<Table>>,
    worker: u16,
}

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A worker that panicked holding the lock left a consistent map (every update is one
    // insert or remove): keep using it.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedClients {
    /// Handles for `workers` engines over one table.
    pub fn group(workers: usize) -> Vec<SharedClients> {
        let table = Arc::new(Mutex::new(Table::new()));
        (0..workers)
            .map(|w| SharedClients {
                table: table.clone(),
                worker: u16::try_from(w).unwrap_or(u16::MAX),
            })
            .collect()
    }

    /// Takes `client` towards `target` for this worker; false when any worker holds it.
    pub fn claim(&self, client: SocketAddr, target: SocketAddr) -> bool {
        let mut t = lock(&self.table);
        match t.entry((client, target)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.worker);
                true
            }
        }
    }

    /// Gives `client` towards `target` back (only if this worker holds it).
    pub fn release(&self, client: SocketAddr, target: SocketAddr) {
        let mut t = lock(&self.table);
        if t.get(&(client, target)) == Some(&self.worker) {
            t.remove(&(client, target));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_per_four_tuple() {
        let w = SharedClients::group(2);
        let c: SocketAddr = "198.18.10.2:40000".parse().unwrap();
        let t: SocketAddr = "198.18.1.2:6380".parse().unwrap();
        assert!(w[0].claim(c, t));
        assert!(!w[1].claim(c, t), "another worker cannot take it");
        assert!(!w[0].claim(c, t), "nor the same one twice");
        w[1].release(c, t);
        assert!(!w[1].claim(c, t), "only the owner releases");
        w[0].release(c, t);
        assert!(w[1].claim(c, t));
        assert!(!w[0].claim(c, t));
    }
}
