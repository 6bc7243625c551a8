//! Pure: gathering a recorded session's parts, as a worker receives them (interleaved with
//! other sessions', in any order, some twice), until the session is whole. No sockets, no
//! clocks.

use super::wire::{FleetRecord, Part};
use std::collections::HashMap;

/// A whole session, assembled from its parts.
#[derive(Debug)]
pub struct Assembled<H> {
    /// The session's id.
    pub session: u64,
    /// Its records, in order (OPEN first, CLOSE last).
    pub records: Vec<FleetRecord>,
    /// The handles of its messages (to acknowledge them), including duplicates.
    pub handles: Vec<H>,
    /// Some part had been delivered before (a redelivery: another worker may have replayed it).
    pub redelivered: bool,
}

struct Pending<H> {
    parts: HashMap<u32, Part>,
    last: Option<u32>,
    handles: Vec<H>,
    redelivered: bool,
}

/// Gathers sessions' parts (which may arrive interleaved with other sessions' and repeated)
/// until each session is whole. Pure: the handles `H` are whatever the caller acknowledges.
pub struct Assembler<H> {
    pending: HashMap<u64, Pending<H>>,
    /// Parts whose session was not whole when [`Assembler::take_incomplete`] was called.
    pub incomplete_parts: u64,
}

impl<H> Default for Assembler<H> {
    fn default() -> Self {
        Assembler {
            pending: HashMap::new(),
            incomplete_parts: 0,
        }
    }
}

impl<H> Assembler<H> {
    /// Adds a part; returns the session once all its parts are there.
    pub fn add(&mut self, part: Part, handle: H, redelivered: bool) -> Option<Assembled<H>> {
        let id = part.session;
        let p = self.pending.entry(id).or_insert_with(|| Pending {
            parts: HashMap::new(),
            last: None,
            handles: Vec::new(),
            redelivered: false,
        });
        p.handles.push(handle);
        p.redelivered |= redelivered;
        if part.last {
            p.last = Some(part.part);
        }
        p.parts.entry(part.part).or_insert(part);
        let last = p.last?;
        if (0..=last).any(|i| !p.parts.contains_key(&i)) {
            return None;
        }
        let mut p = self.pending.remove(&id)?;
        let mut records = Vec::new();
        for i in 0..=last {
            if let Some(part) = p.parts.remove(&i) {
                records.extend(part.records);
            }
        }
        Some(Assembled {
            session: id,
            records,
            handles: p.handles,
            redelivered: p.redelivered,
        })
    }

    /// Sessions still waiting for parts.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Message handles held by waiting sessions.
    pub fn held(&self) -> usize {
        self.pending.values().map(|p| p.handles.len()).sum()
    }

    /// Gives up on every waiting session (their parts will never all come): their handles.
    pub fn take_incomplete(&mut self) -> Vec<H> {
        let mut out = Vec::new();
        for (_, p) in self.pending.drain() {
            self.incomplete_parts += p.parts.len() as u64;
            out.extend(p.handles);
        }
        out
    }
}

/// Whether a recorded session is whole and well-formed: OPEN first, CLOSE last, nothing else
/// of those kinds in between.
pub fn well_formed(records: &[FleetRecord]) -> bool {
    let n = records.len();
    n >= 2
        && matches!(records[0], FleetRecord::Open { .. })
        && matches!(records[n - 1], FleetRecord::Close { .. })
        && records[1..n - 1]
            .iter()
            .all(|r| matches!(r, FleetRecord::Data { .. } | FleetRecord::Fin { .. }))
}

#[cfg(test)]
mod tests {
    use super::super::wire::{decode, CloseReason, Dir, SessionWriter};
    use super::*;
    use bytes::Bytes;

    fn session_msgs(id: u64, max: usize) -> Vec<Part> {
        let mut w = SessionWriter::new(id, max);
        w.push(&FleetRecord::Open {
            client: "198.18.0.1:1000".parse().unwrap(),
            server: "198.18.1.1:80".parse().unwrap(),
            ts: 1,
            syn_seen: true,
            host: "h".into(),
        });
        w.push(&FleetRecord::Data {
            dir: Dir::Client,
            ts: 2,
            new_message: true,
            server_seen: false,
            bytes: Bytes::from(vec![7u8; 3000]),
        });
        w.push(&FleetRecord::Close {
            ts: 3,
            reason: CloseReason::Fin,
            partial: false,
        });
        w.finish()
            .into_iter()
            .map(|m| decode(&Bytes::from(m)).unwrap())
            .collect()
    }

    #[test]
    fn assembly_waits_for_every_part_in_any_order_with_repeats() {
        let a = session_msgs(1, 1024);
        let b = session_msgs(2, 1024);
        assert!(a.len() >= 3);
        let mut asm = Assembler::default();
        // b's last part first, a's parts reversed and one repeated, interleaved.
        assert!(asm.add(b[b.len() - 1].clone(), "b-last", false).is_none());
        let mut done = Vec::new();
        for (i, p) in a.iter().enumerate().rev() {
            if let Some(s) = asm.add(p.clone(), "a", i == 1) {
                done.push(s);
            }
            if i == 1 {
                assert!(asm.add(p.clone(), "a-again", true).is_none());
            }
        }
        assert_eq!(done.len(), 1);
        let s = &done[0];
        assert_eq!(s.session, 1);
        assert!(s.redelivered);
        assert_eq!(s.handles.len(), a.len() + 1);
        assert!(well_formed(&s.records));
        assert_eq!(asm.waiting(), 1);
        assert_eq!(asm.held(), 1);
        assert_eq!(asm.take_incomplete(), vec!["b-last"]);
        assert_eq!(asm.waiting(), 0);
    }

    #[test]
    fn well_formed_sessions() {
        let recs: Vec<FleetRecord> = session_msgs(1, 1 << 20).remove(0).records;
        assert!(well_formed(&recs));
        assert!(!well_formed(&recs[1..]));
        assert!(!well_formed(&recs[..2]));
        assert!(!well_formed(&[]));
    }
}
