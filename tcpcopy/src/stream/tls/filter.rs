//! The decryption stage between reassembly and replay (pure: events in, plaintext events out)
//! and the live key log's follower.

use crate::report::TlsCounts;
use crate::stream::reassembly::{SessionId, Side, StreamEvent};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tcpclone::tls::session::Output;
use tcpclone::tls::{KeyLog, Origin, SessionStatus, TlsError, TlsSession};

/// What the capture's handshake said about a decrypted session (the target TLS defaults).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The client's SNI.
    pub sni: Option<String>,
    /// The client's offered ALPN protocols.
    pub alpn: Vec<Vec<u8>>,
}

struct Pending {
    open: StreamEvent,
    tls: TlsSession,
    /// Set once the Open event went out (keys found, or not TLS).
    opened: bool,
    /// A client chunk that began a new request produced no plaintext (handshake records):
    /// the next client plaintext begins it.
    carry_new: bool,
    /// Capture time when the session began to wait for its secrets.
    waiting_since: Option<u64>,
    /// Live: Fin and Close events of a session waiting for its secrets.
    held: Vec<StreamEvent>,
}

/// The decryption stage between reassembly and replay. Pure.
pub struct TlsFilter {
    keys: KeyLog,
    /// Live: sessions wait for their secrets (the key log grows); offline: no secrets, no wait.
    live: bool,
    key_wait_ns: u64,
    max_held: usize,
    sessions: HashMap<SessionId, Pending>,
    captured: HashMap<SessionId, Captured>,
    /// Counters for the report.
    pub counts: TlsCounts,
    messages: usize,
}

/// Error lines printed per run before only counting.
const MAX_MESSAGES: usize = 20;

fn side_of(d: Origin) -> Side {
    match d {
        Origin::Client => Side::Client,
        Origin::Server => Side::Server,
    }
}

impl TlsFilter {
    /// A filter decrypting with `keys` (offline: what is not in it is counted at once).
    pub fn new(keys: KeyLog) -> Self {
        Self::with_wait(keys, false, 0, 0)
    }

    /// Live: sessions wait for their secrets up to `key_wait_ns` of capture time, holding at
    /// most `max_held` bytes in all (the longest-waiting session goes first).
    pub fn with_wait(keys: KeyLog, live: bool, key_wait_ns: u64, max_held: usize) -> Self {
        TlsFilter {
            keys,
            live,
            key_wait_ns,
            max_held,
            sessions: HashMap::new(),
            captured: HashMap::new(),
            counts: TlsCounts::default(),
            messages: 0,
        }
    }

    /// The key log, to add the lines that live mode reads as the file grows.
    pub fn keys_mut(&mut self) -> &mut KeyLog {
        &mut self.keys
    }

    /// The captured SNI/ALPN of a session whose Open event was just emitted.
    pub fn take_captured(&mut self, id: SessionId) -> Option<Captured> {
        self.captured.remove(&id)
    }

    fn say(&mut self, open: &StreamEvent, what: &str) {
        self.messages += 1;
        if self.messages <= MAX_MESSAGES {
            if let StreamEvent::Open { key, .. } = open {
                crate::stream::log_warn(&format!("TLS session {} -> {}: {what}", key.src, key.dst));
            }
        } else if self.messages == MAX_MESSAGES + 1 {
            crate::stream::log_warn("more TLS session errors are only counted (see the report)");
        }
    }

    fn count_failure(&mut self, e: &TlsError) {
        let c = &mut self.counts;
        match e {
            TlsError::NoKeys(_) => c.without_keys += 1,
            TlsError::UnsupportedSuite(name) => {
                *c.unsupported.entry(name.clone()).or_default() += 1
            }
            TlsError::UnsupportedVersion(v) => {
                *c.unsupported
                    .entry(format!("version {v:#06x}"))
                    .or_default() += 1
            }
            TlsError::Truncated { .. } => c.cut_records += 1,
            _ => c.failed += 1,
        }
    }

    /// Handles one reassembly event; appends what replay should see to `out`.
    pub fn handle(&mut self, ev: StreamEvent, out: &mut Vec<StreamEvent>) {
        match ev {
            StreamEvent::Open { id, .. } => {
                self.sessions.insert(
                    id,
                    Pending {
                        open: ev,
                        tls: TlsSession::new(),
                        opened: false,
                        carry_new: false,
                        waiting_since: None,
                        held: Vec::new(),
                    },
                );
            }
            StreamEvent::Data {
                id,
                side,
                ts,
                bytes,
                new_message,
                server_seen,
            } => {
                let Some(p) = self.sessions.get_mut(&id) else {
                    return;
                };
                let dir = match side {
                    Side::Client => Origin::Client,
                    Side::Server => Origin::Server,
                };
                let mut plain = Output::new();
                let r = p.tls.handle(dir, &bytes, &self.keys, &mut plain);
                if side == Side::Client && new_message {
                    p.carry_new = true;
                }
                if let Err(e) = r {
                    self.fail_session(id, ts, &e, out);
                    return;
                }
                self.emit(id, ts, server_seen, plain, out);
                // Offline the key log is whole: a session without secrets is over now (its
                // bytes are not held to its end).
                let waiting = self
                    .sessions
                    .get(&id)
                    .is_some_and(|p| *p.tls.status() == SessionStatus::AwaitingKeys);
                if !self.live && waiting {
                    self.close(id, None, out);
                }
            }
            StreamEvent::Fin { id, .. } | StreamEvent::Close { id, .. } => {
                let Some(p) = self.sessions.get_mut(&id) else {
                    return;
                };
                if p.opened {
                    if matches!(ev, StreamEvent::Close { .. }) {
                        self.close(id, Some(ev), out);
                    } else {
                        out.push(ev);
                    }
                    return;
                }
                // Live: a session waiting for its secrets keeps its end for when they come.
                if self.live && *p.tls.status() == SessionStatus::AwaitingKeys {
                    p.held.push(ev);
                    return;
                }
                if matches!(ev, StreamEvent::Close { .. }) {
                    self.close(id, None, out);
                }
            }
        }
    }

    /// Emits a session's Open (the first time it has keys or is known not to be TLS) and its
    /// plaintext.
    fn emit(
        &mut self,
        id: SessionId,
        ts: u64,
        server_seen: bool,
        plain: Output,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(p) = self.sessions.get_mut(&id) else {
            return;
        };
        let status = p.tls.status().clone();
        if status == SessionStatus::AwaitingKeys && p.waiting_since.is_none() {
            p.waiting_since = Some(ts);
        }
        if !p.opened && matches!(status, SessionStatus::Decrypting | SessionStatus::Plaintext) {
            p.opened = true;
            if status == SessionStatus::Decrypting {
                self.counts.decrypted += 1;
                let info = p.tls.info();
                let name = format!(
                    "{} {}",
                    info.version_name(),
                    info.suite_name().unwrap_or_default()
                );
                *self.counts.suites.entry(name).or_default() += 1;
                if let Some(a) = &info.alpn {
                    *self
                        .counts
                        .alpn
                        .entry(String::from_utf8_lossy(a).into_owned())
                        .or_default() += 1;
                }
                self.counts.resumed += u64::from(info.resumed);
                let sni = info.sni.clone().unwrap_or_else(|| "(none)".into());
                let n = self.counts.sni.len();
                let key = if n < crate::report::MAX_SNI || self.counts.sni.contains_key(&sni) {
                    sni
                } else {
                    "(other)".into()
                };
                *self.counts.sni.entry(key).or_default() += 1;
                self.captured.insert(
                    id,
                    Captured {
                        sni: info.sni.clone(),
                        alpn: info.alpn_offered.clone(),
                    },
                );
            } else {
                self.counts.plaintext += 1;
            }
            out.push(p.open.clone());
        }
        for (d, data) in plain {
            let side = side_of(d);
            let new_message = side == Side::Client && std::mem::take(&mut p.carry_new);
            out.push(StreamEvent::Data {
                id,
                side,
                ts,
                bytes: Bytes::from(data),
                new_message,
                server_seen,
            });
        }
    }

    /// A session that cannot be decrypted: counted, named, and closed if it was replaying.
    fn fail_session(&mut self, id: SessionId, ts: u64, e: &TlsError, out: &mut Vec<StreamEvent>) {
        let Some(p) = self.sessions.remove(&id) else {
            return;
        };
        self.count_failure(e);
        self.say(&p.open, &e.to_string());
        if p.opened {
            out.push(StreamEvent::Close {
                id,
                ts,
                reason: crate::stream::reassembly::EndReason::Hole,
                partial: true,
            });
        }
    }

    /// The session is over: counters, and its Close when it was replaying.
    fn close(&mut self, id: SessionId, ev: Option<StreamEvent>, out: &mut Vec<StreamEvent>) {
        let Some(mut p) = self.sessions.remove(&id) else {
            return;
        };
        let status = p.tls.status().clone();
        let c = p.tls.counters();
        self.counts.auth_failures += c.auth_failures;
        self.counts.early_rejected += c.early_rejected;
        if let Some(e) = p.tls.finish() {
            self.count_failure(&e);
            self.say(&p.open, &e.to_string());
        }
        match status {
            SessionStatus::AwaitingKeys => {
                self.counts.without_keys += 1;
                let random = p
                    .tls
                    .client_random()
                    .map(|r| r.iter().map(|b| format!("{b:02x}")).collect::<String>());
                let msg = format!(
                    "no secrets in the key log for client random {}",
                    random.unwrap_or_default()
                );
                self.say(&p.open, &msg);
            }
            SessionStatus::Hello => self.counts.incomplete += 1,
            _ => {}
        }
        if let (true, Some(ev)) = (p.opened, ev) {
            out.push(ev);
        }
    }

    /// Live: retries the sessions waiting for secrets (after new key log lines), gives up on
    /// those that waited past the bound or when the held bytes exceed it, and (with `all`, at
    /// the end of a run) on every one still waiting. `ts` is the capture time now.
    pub fn poll(&mut self, ts: u64, all: bool, out: &mut Vec<StreamEvent>) {
        let mut waiting: Vec<(u64, SessionId)> = self
            .sessions
            .iter()
            .filter(|(_, p)| !p.opened && *p.tls.status() == SessionStatus::AwaitingKeys)
            .map(|(id, p)| (p.waiting_since.unwrap_or(ts), *id))
            .collect();
        waiting.sort_unstable();
        let mut still = Vec::new();
        for (since, id) in waiting {
            let Some(p) = self.sessions.get_mut(&id) else {
                continue;
            };
            let mut plain = Output::new();
            if let Err(e) = p.tls.retry(&self.keys, &mut plain) {
                self.fail_session(id, ts, &e, out);
                continue;
            }
            if *p.tls.status() == SessionStatus::AwaitingKeys {
                if all || ts.saturating_sub(since) > self.key_wait_ns {
                    self.close(id, None, out);
                } else {
                    still.push((id, p.tls.held_bytes()));
                }
                continue;
            }
            let held = std::mem::take(&mut p.held);
            self.emit(id, ts, true, plain, out);
            for ev in held {
                match ev {
                    StreamEvent::Close { .. } => self.close(id, Some(ev), out),
                    _ => out.push(ev),
                }
            }
        }
        // The memory bound: the longest-waiting sessions give up first.
        let mut total: usize = still.iter().map(|(_, n)| n).sum();
        for (id, n) in still {
            if total <= self.max_held {
                break;
            }
            total -= n;
            self.close(id, None, out);
        }
    }

    /// Sessions waiting for their secrets.
    pub fn waiting(&self) -> usize {
        self.sessions
            .values()
            .filter(|p| !p.opened && *p.tls.status() == SessionStatus::AwaitingKeys)
            .count()
    }
}

/// Live: reads the lines appended to the key log since the last call.
pub struct KeyLogFollower {
    /// The descriptor opened before a privilege drop; without it the path is opened each time.
    file: Option<std::fs::File>,
    path: PathBuf,
    name: String,
    offset: u64,
    partial: Vec<u8>,
    line: usize,
}

impl KeyLogFollower {
    /// Follows `path` from `offset` (the bytes [`load_keylog_at`] read) on, at line `line`.
    pub fn new(path: &Path, offset: u64, line: usize) -> Self {
        Self::with_file(path, None, offset, line)
    }

    /// [`KeyLogFollower::new`] reading through `file` (a duplicate of the preloaded descriptor).
    pub fn with_file(path: &Path, file: Option<std::fs::File>, offset: u64, line: usize) -> Self {
        KeyLogFollower {
            file,
            path: path.to_path_buf(),
            name: path.display().to_string(),
            offset,
            partial: Vec::new(),
            line,
        }
    }

    /// Adds the whole lines appended since the last call to `keys`; returns how many were read.
    /// A file that shrank (rotated, truncated) is read again from its start.
    pub fn read_new(&mut self, keys: &mut KeyLog) -> usize {
        use std::os::unix::fs::FileExt as _;
        let opened;
        let f = match &self.file {
            Some(f) => f,
            None => match std::fs::File::open(&self.path) {
                Ok(f) => {
                    opened = f;
                    &opened
                }
                Err(_) => return 0,
            },
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0;
            self.line = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return 0;
        }
        let mut buf = vec![0u8; usize::try_from(len - self.offset).unwrap_or(0)];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], self.offset + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let mut n = 0;
        for l in String::from_utf8_lossy(&whole).lines() {
            self.line += 1;
            n += 1;
            if let Err(e) = keys.add_line(l, &self.name, self.line) {
                crate::stream::log_warn(&format!("--tls-keylog {e} (line skipped)"));
            }
        }
        n
    }
}
