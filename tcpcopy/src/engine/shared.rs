//! The client addresses that the engines of several workers hand out, in one table.
//!
//! With `--workers N` each worker's engine clones the sessions the kernel's fanout gave it, but
//! `-c` and `-n` pick client addresses (towards the target) from ranges every worker draws
//! from: two engines must never give the target the same client address and port, or their
//! clones would collide on one 4-tuple. (Responses need no table: each worker registers its
//! sessions on its own intercept connections, and intercept answers on the registering one.)
//!
//! Pure shared state (locks, no I/O); one lock taken once per session created or removed, never
//! per segment.

use super::{AddrPair, FastHasher, FastMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Shards of the table, each behind its own lock: with one lock every worker creating or
/// ending a session took the same lock and pulled the same map's memory to its CPU, and
/// a worker's engine showed the claim among its costs beside a second worker.
const SHARDS: usize = 64;
const _: () = assert!(SHARDS.is_power_of_two());

type Table = FastMap<AddrPair, u16>;

/// One lock and its map, alone on their cache lines: two workers locking neighbouring shards
/// must not take the same line from each other.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(Mutex<Table>);

/// One worker's handle on the shared table.
#[derive(Debug, Clone)]
pub struct SharedClients {
    shards: Arc<[Shard]>,
    worker: u16,
}

impl SharedClients {
    /// Handles for `workers` engines over one table.
    pub fn group(workers: usize) -> Vec<SharedClients> {
        let shards: Arc<[Shard]> = (0..SHARDS).map(|_| Shard::default()).collect();
        (0..workers)
            .map(|w| SharedClients {
                shards: shards.clone(),
                worker: u16::try_from(w).unwrap_or(u16::MAX),
            })
            .collect()
    }

    fn lock(&self, key: &AddrPair) -> MutexGuard<'_, Table> {
        let mut h = FastHasher::default();
        key.hash(&mut h);
        // The shard from the top bits of a second multiply, not from bits the shard's map
        // uses for its bucket index and tags (then every key of a shard would share them).
        let i = (h.finish().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (u64::BITS - SHARDS.ilog2()))
            as usize;
        // A worker that panicked holding the lock left a consistent map (every update is one
        // insert or remove): keep using it.
        self.shards[i].0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `client` towards `target` for this worker; false when any worker holds it.
    pub fn claim(&self, client: SocketAddr, target: SocketAddr) -> bool {
        let key = AddrPair(client, target);
        let mut t = self.lock(&key);
        match t.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.worker);
                true
            }
        }
    }

    /// Gives `client` towards `target` back (only if this worker holds it).
    pub fn release(&self, client: SocketAddr, target: SocketAddr) {
        let key = AddrPair(client, target);
        let mut t = self.lock(&key);
        // Not `entry`: it would make room for a key it does not find.
        if t.get(&key) == Some(&self.worker) {
            t.remove(&key);
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

    #[test]
    fn the_clients_of_one_address_spread_over_the_shards() {
        // One client address, many ports (a production client behind NAT, or -c with one
        // address): the shard must come from the port too, or one lock takes them all.
        let w = SharedClients::group(2);
        let t: SocketAddr = "198.18.1.2:6380".parse().unwrap();
        for port in 1024..3072u16 {
            let c = SocketAddr::from(([198, 18, 10, 2], port));
            assert!(w[usize::from(port % 2)].claim(c, t));
        }
        let sizes: Vec<usize> = w[0]
            .shards
            .iter()
            .map(|s| s.0.lock().unwrap().len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 2048);
        assert!(
            sizes.iter().all(|&n| n > 0 && n < 2048 / SHARDS * 3),
            "uneven shards: {sizes:?}"
        );
    }
}
