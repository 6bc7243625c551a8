//! The tokio task of one replayed session copy: glue around the session core. It waits for the
//! session's start, connects to the target (TCP, or TLS with `--target-tls`), then loops: reads
//! what the socket holds into the core, asks the core what to do ([`Action`]) and does it
//! (take the next inbox item, write, shut down, wait), and hands the finished samples to the
//! report's collector. Decides nothing itself: when a request goes is the core's.

use super::inbox::{Inbox, Item};
use super::measure::SampleContext;
use super::session::{Action, SessionCore, SessionInput};
use super::{ActiveGuard, Ctx, Plan};
use crate::report::{Outcome, RequestSample};
use crate::stream::proxy;
use crate::stream::reassembly::Side;
use crate::stream::tls::Conn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

thread_local! {
    /// The read buffer of this worker thread, shared by all its connections.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
}

/// Connects to the copy's target within the connect timeout; the outcome its requests get when
/// it cannot.
async fn connect(ctx: &Ctx, plan: &Plan) -> Result<Conn, Outcome> {
    let tcp = match tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(plan.target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(Outcome::Refused),
        Err(_) => return Err(Outcome::TimedOut),
    };
    let _ = tcp.set_nodelay(true);
    let Some((cfg, name)) = plan.tls.clone() else {
        return Ok(Conn::Tcp(tcp));
    };
    match crate::stream::tls::connect(tcp, cfg, name, ctx.connect_timeout).await {
        Ok(c) => Ok(c),
        Err(reason) => {
            *ctx.target_tls_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(reason)
                .or_default() += 1;
            Err(Outcome::Refused)
        }
    }
}

/// Hands finished samples to the report's collector; `repeat`: they are requests of a fleet
/// session a worker had replayed before (counted as repeats too).
fn record(ctx: &Ctx, samples: Vec<RequestSample>, repeat: bool) {
    if samples.is_empty() {
        return;
    }
    let mut c = ctx.collector.lock().unwrap_or_else(|e| e.into_inner());
    for s in samples {
        if repeat {
            c.count_repeat(&s);
        }
        c.record(s);
    }
}

/// The connection could not be made: every request the session would have sent counts, with
/// `outcome`.
async fn unsent(ctx: &Ctx, cx: &SampleContext, items: &Inbox, outcome: Outcome) {
    let mut n = 0u32;
    let mut samples = Vec::new();
    while let Some(item) = items.recv().await {
        match item {
            Item::Data {
                side: Side::Client,
                new_message,
                bytes,
                len,
                ..
            } if new_message || n == 0 => {
                cx.unsent(n, Instant::now(), outcome, &bytes, len, &mut samples);
                n += 1;
            }
            Item::Close => break,
            _ => {}
        }
    }
    // Nothing reached the target: not a repeat, whatever happened before.
    record(ctx, samples, false);
}

/// The target connection, as the core sees it: bytes read go into the core.
struct Io {
    stream: Conn,
}

impl Io {
    /// Reads what the socket holds, without waiting (into the worker thread's buffer: no
    /// buffer per connection).
    fn drain_ready(&mut self, core: &mut SessionCore) {
        while !core.is_eof() {
            let res = READ_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                let r = self.stream.try_read(&mut buf[..]);
                let at = Instant::now();
                match r {
                    Ok(0) => Ok(false),
                    Ok(n) => {
                        core.handle_read(at, &buf[..n]);
                        Ok(true)
                    }
                    Err(e) => Err(e),
                }
            });
            match res {
                Ok(true) => {}
                Ok(false) => core.handle_eof(false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => core.handle_eof(true),
            }
        }
    }

    /// Writes all of `bytes`, reading whatever arrives meanwhile (a server that answers while
    /// we write must never block us). False when the connection failed.
    async fn send(&mut self, bytes: &[u8], core: &mut SessionCore) -> bool {
        let mut off = 0;
        while off < bytes.len() {
            match self.stream.try_write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let eof = core.is_eof();
                    let readable = tokio::select! {
                        r = self.stream.writable() => if r.is_err() { return false } else { false },
                        r = self.stream.readable(), if !eof => r.is_ok(),
                    };
                    if readable {
                        self.drain_ready(core);
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// One session copy, from its start in the schedule to its last sample.
pub(super) async fn run(ctx: Arc<Ctx>, plan: Plan, items: Arc<Inbox>, _guard: ActiveGuard) {
    let schedule = plan.schedule(&ctx);
    if let Some(at) = schedule.at(plan.open_ts) {
        // Stopped before its start: the session is not replayed at all.
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = ctx.stopping.cancelled() => return,
        }
    }
    if let Some(iv) = ctx.session_interval {
        let slot = {
            let mut next = ctx.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + iv);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
    let cx = plan.sample_context(&ctx);
    let stream = match connect(&ctx, &plan).await {
        Ok(s) => s,
        Err(outcome) => {
            let failed = if plan.baseline {
                &ctx.baseline_connect_failed
            } else {
                &ctx.connect_failed
            };
            failed.fetch_add(1, Ordering::Relaxed);
            unsent(&ctx, &cx, &items, outcome).await;
            return;
        }
    };
    let mut core = SessionCore::new(Instant::now(), cx, schedule, plan.gate_rules(&ctx));
    let mut io = Io { stream };
    let repeat = plan.done.as_ref().is_some_and(|d| d.repeat());
    if let Some(v) = ctx.proxy {
        if let Some(d) = &plan.done {
            d.before_first_write().await;
        }
        let hdr = proxy::encode(v, plan.key.src, plan.key.dst);
        if !io.send(&hdr, &mut core).await {
            core.set_broken();
        }
    }
    let stopping = ctx.stopping.clone();
    // The queue budget of the bytes being written is given back once they went.
    let mut _permit = None;
    loop {
        io.drain_ready(&mut core);
        match core.poll(Instant::now()) {
            Action::NeedInput => {
                let input = match items.recv().await {
                    Some(Item::Data {
                        side: Side::Client,
                        ts,
                        bytes,
                        new_message,
                        server_seen,
                        permit,
                        ..
                    }) => {
                        _permit = permit;
                        SessionInput::Client {
                            ts,
                            bytes,
                            new_message,
                            server_seen,
                        }
                    }
                    Some(Item::Data {
                        side: Side::Server,
                        ts,
                        bytes,
                        len,
                        ..
                    }) => SessionInput::Server { ts, bytes, len },
                    Some(Item::Fin {
                        side: Side::Client,
                        ts,
                    }) => SessionInput::ClientFin { ts },
                    Some(Item::Fin { .. }) => continue,
                    Some(Item::Close) | None => SessionInput::End,
                };
                core.handle_input(Instant::now(), input);
            }
            Action::Write(bytes) => {
                // --from: the session's sent mark is stored before its first byte goes (at once
                // after the first time).
                if let Some(d) = &plan.done {
                    d.before_first_write().await;
                }
                // Taken before the write: an answer can be read before it returns.
                let at = Instant::now();
                let ok = io.send(&bytes, &mut core).await;
                core.handle_written(at, ok);
            }
            Action::Shutdown => {
                let _ = io.stream.shutdown().await;
            }
            Action::Wait {
                until,
                interruptible,
            } => {
                let eof = core.is_eof();
                tokio::select! {
                    r = io.stream.readable(), if !eof => {
                        if r.is_ok() {
                            io.drain_ready(&mut core);
                        } else {
                            core.handle_eof(true);
                        }
                    }
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = stopping.cancelled(), if interruptible => core.handle_stop(),
                }
            }
            Action::Done => break,
        }
        record(&ctx, core.take_samples(), repeat);
    }
    record(&ctx, core.take_samples(), repeat);
}
