//! The session core of stream mode: one replayed session copy as a sans-IO state machine.
//!
//! Its caller feeds it the reassembled conversation ([`SessionCore::handle_input`]), what the
//! target sent ([`SessionCore::handle_read`], [`SessionCore::handle_eof`]) and how writes went
//! ([`SessionCore::handle_written`]), always with the time; [`SessionCore::poll`] says what to do
//! next: take the next input, write bytes, shut the write side, or wait until an instant
//! (reading meanwhile). It never touches a socket, a clock or a task; `task.rs` drives it.
//!
//! When a request may go is the conversation core's rule ([`crate::conversation`]): a
//! [`RequestPacer`] holds the boundary before each request that production answered and opens
//! it by the shared [`GateRules`], with stream mode's options (`idle_gap` zero: the answer
//! began; the timeout counts from the gate). After the gate, the request waits for its place in
//! the original schedule and its think time ([`Schedule`]), which are stream mode's own pacing.

use super::measure::{Req, SampleContext};
use crate::conversation::{GateRules, RequestPacer};
use crate::report::exchange::BurstDecoder;
use crate::report::RequestSample;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tcpclone::decode::Protocol;
use tcpclone::seq::SeqNumber;

/// After the last request of a session that did not end with a FIN: quiet time that ends the response.
pub(super) const QUIET: Duration = Duration::from_millis(100);

/// The original schedule of a session copy: capture time `t0` maps to `base`, scaled by
/// `speedup`; untimed (top speed, live) nothing waits for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    /// Requests keep the capture's timing.
    pub timed: bool,
    /// `-a`: how much faster than captured.
    pub speedup: f64,
    /// The instant capture time `t0` maps to.
    pub base: Instant,
    /// Capture time of the loop's first packet.
    pub t0: u64,
}

impl Schedule {
    /// The place of capture time `ts` in the replay, when timed.
    pub fn at(&self, ts: u64) -> Option<Instant> {
        self.timed
            .then(|| self.base + self.scaled(ts.saturating_sub(self.t0)))
    }

    /// `ns` of capture time at the replay's speed.
    fn scaled(&self, ns: u64) -> Duration {
        Duration::from_secs_f64(ns as f64 / 1e9 / self.speedup)
    }
}

/// What the reassembled conversation says next, for this session.
#[derive(Debug, Clone)]
pub(super) enum SessionInput {
    /// Client bytes captured at `ts`; `new_message`: they begin a request; `server_seen`: the
    /// capture has server packets of this session.
    Client {
        ts: u64,
        bytes: Bytes,
        new_message: bool,
        server_seen: bool,
    },
    /// Production's answer bytes captured at `ts` (`bytes`: those kept, maybe none; `len`: how
    /// many there were).
    Server { ts: u64, bytes: Bytes, len: usize },
    /// The client's FIN, captured at `ts`.
    ClientFin { ts: u64 },
    /// The session is over in the capture (or its inbox closed).
    End,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Hand over the next [`SessionInput`].
    NeedInput,
    /// Write all of these bytes (reading meanwhile), then call [`SessionCore::handle_written`].
    Write(Bytes),
    /// Shut the write side down (the client's FIN).
    Shutdown,
    /// Read what comes until `until`, then poll again; `interruptible`: a stop ends the wait
    /// at once ([`SessionCore::handle_stop`]).
    Wait { until: Instant, interruptible: bool },
    /// The session is over: its samples are all out.
    Done,
}

/// A step of the conversation that waits at the gate.
#[derive(Debug)]
enum Step {
    /// A new request's first bytes.
    Request { ts: u64, bytes: Bytes },
    /// The client's FIN.
    Fin { ts: u64 },
    /// The end of the session.
    End,
}

impl Step {
    fn ts(&self) -> u64 {
        match self {
            Step::Request { ts, .. } | Step::Fin { ts } => *ts,
            Step::End => 0,
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for input.
    Ready,
    /// At the release gate, for the previous request's answer.
    Answer(Step),
    /// Waiting for the step's place in the schedule (`None`: no wait).
    Schedule {
        step: Step,
        at: Option<Instant>,
    },
    /// Client bytes to write next.
    Write {
        bytes: Bytes,
        ts: u64,
    },
    /// Bytes handed to the driver, their write not reported yet.
    Written {
        bytes: Bytes,
        ts: u64,
    },
    /// The client closed: the last answer gets until `deadline`.
    Closing {
        deadline: Instant,
    },
    /// No FIN: the last answer ends after [`QUIET`] (or at `deadline`); `wait`: the quiet
    /// period being waited for and the answer bytes before it.
    Quiet {
        deadline: Instant,
        wait: Option<(Instant, u64)>,
    },
    Done,
}

/// One replayed session copy.
#[derive(Debug)]
pub(super) struct SessionCore {
    cx: SampleContext,
    schedule: Schedule,
    rules: GateRules,
    pacer: RequestPacer,
    reqs: VecDeque<Req>,
    next_index: u32,
    /// Production spoke before the first request.
    prod_banner: bool,
    /// When the target spoke before the first request.
    test_banner_at: Option<Instant>,
    /// The capture has server packets of this session.
    server_seen: bool,
    /// Client bytes taken so far (the gate's sequence space).
    client_off: SeqNumber,
    client_fin: bool,
    eof: bool,
    reset: bool,
    /// A write failed: nothing more is sent, no answer is waited for.
    broken: bool,
    /// A stop was asked for: schedule waits end.
    stopping: bool,
    /// How late past waits ended, taken off later schedule waits.
    timer_debt: Duration,
    phase: Phase,
    samples: Vec<RequestSample>,
    /// The connection's requests and both sides' responses decoded as they pass (a protocol
    /// other than plain TCP): one decoder for the whole conversation, so that a request or a
    /// response that a burst boundary cuts (a client that writes while the server answers) is
    /// still one message, and responses pair with requests in stream order.
    conv: Option<BurstDecoder>,
}

impl SessionCore {
    /// A session connected at `now`.
    pub fn new(now: Instant, cx: SampleContext, schedule: Schedule, rules: GateRules) -> Self {
        let cx_protocol = cx.protocol;
        SessionCore {
            cx,
            schedule,
            rules,
            pacer: RequestPacer::new(now),
            reqs: VecDeque::new(),
            next_index: 0,
            prod_banner: false,
            test_banner_at: None,
            server_seen: false,
            client_off: SeqNumber(0),
            client_fin: false,
            eof: false,
            reset: false,
            broken: false,
            stopping: false,
            timer_debt: Duration::ZERO,
            phase: Phase::Ready,
            samples: Vec::new(),
            conv: (cx_protocol != Protocol::Tcp).then(|| BurstDecoder::new(cx_protocol)),
        }
    }

    /// Nothing may be sent any more (the PROXY header could not be written).
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// The run is stopping (SIGINT/SIGTERM): schedule waits end at once.
    pub fn handle_stop(&mut self) {
        self.stopping = true;
    }

    /// The target closed its side (`reset`: the connection failed).
    pub fn handle_eof(&mut self, reset: bool) {
        self.eof = true;
        self.reset |= reset;
    }

    /// The connection is over: no more reads.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// The target sent `data`, read at `at`: it answers the latest request whose last byte
    /// went before it (or is the target's greeting).
    pub fn handle_read(&mut self, at: Instant, data: &[u8]) {
        let keep = self.cx.keeps_responses();
        if let Some(conv) = &mut self.conv {
            let t = at.saturating_duration_since(self.cx.start).as_nanos();
            conv.feed_test(
                data,
                u64::try_from(t).unwrap_or(u64::MAX),
                self.cx.fields.as_deref(),
            );
        }
        let last = self.reqs.len().checked_sub(1);
        match self.reqs.iter().rposition(|r| r.last_write <= at) {
            Some(i) => {
                self.reqs[i].answered(at, data, keep);
                if Some(i) == last {
                    let _ = self.pacer.on_answer(data.len() as u64, at);
                }
            }
            None => {
                self.test_banner_at.get_or_insert(at);
                if last.is_none() {
                    let _ = self.pacer.on_answer(data.len() as u64, at);
                }
            }
        }
    }

    /// The next input, after [`Action::NeedInput`].
    pub fn handle_input(&mut self, now: Instant, input: SessionInput) {
        debug_assert!(matches!(self.phase, Phase::Ready), "{:?}", self.phase);
        match input {
            SessionInput::Client {
                ts,
                bytes,
                new_message,
                server_seen,
            } => {
                self.server_seen |= server_seen;
                if new_message || self.reqs.is_empty() {
                    self.enter_gate(now, Step::Request { ts, bytes });
                } else {
                    self.phase = Phase::Write { bytes, ts };
                }
            }
            SessionInput::Server { ts, bytes, len } => {
                self.server_seen = true;
                match self.reqs.back_mut() {
                    Some(r) => {
                        if let Some(conv) = &mut self.conv {
                            conv.feed_production(&bytes, ts, self.cx.fields.as_deref());
                        }
                        r.production_answered(ts, &bytes, len, self.cx.keeps_responses());
                    }
                    None => self.prod_banner = true,
                }
            }
            SessionInput::ClientFin { ts } => self.enter_gate(now, Step::Fin { ts }),
            SessionInput::End if self.client_fin => {
                self.refine_expects();
                self.close(now);
            }
            SessionInput::End => self.enter_gate(now, Step::End),
        }
    }

    /// The bytes of the last [`Action::Write`] went (`ok`) or the connection failed; `at`: when
    /// the write began (an answer can be read before it returns).
    pub fn handle_written(&mut self, at: Instant, ok: bool) {
        if let Phase::Written { bytes, ts } = std::mem::replace(&mut self.phase, Phase::Ready) {
            self.wrote(&bytes, ok, at, ts);
        }
    }

    /// The samples of the requests finished since the last call.
    pub fn take_samples(&mut self) -> Vec<RequestSample> {
        std::mem::take(&mut self.samples)
    }

    /// What to do next at `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Ready => {
                    self.phase = Phase::Ready;
                    return Action::NeedInput;
                }
                Phase::Answer(step) => {
                    let timeouts = self
                        .pacer
                        .release(now, self.client_off, &self.rules, self.eof, 0)
                        .timeouts;
                    if !self.pacer.is_idle() {
                        let until = self
                            .pacer
                            .deadline(self.client_off, &self.rules, 0)
                            .unwrap_or(now);
                        self.phase = Phase::Answer(step);
                        return Action::Wait {
                            until,
                            interruptible: false,
                        };
                    }
                    // Closed is not a timeout: the outcome says so.
                    if timeouts > 0 && !self.eof {
                        if let Some(r) = self.reqs.back_mut() {
                            r.timed_out = true;
                        }
                    }
                    self.phase = self.schedule(now, step);
                }
                Phase::Schedule { step, at } => {
                    if let Some(at) = at {
                        if now < at && !self.eof && !self.stopping {
                            self.phase = Phase::Schedule { step, at: Some(at) };
                            return Action::Wait {
                                until: at,
                                interruptible: true,
                            };
                        }
                        self.timer_debt += now.saturating_duration_since(at);
                    }
                    match step {
                        Step::Request { ts, bytes } => self.start_request(now, ts, bytes),
                        Step::Fin { .. } => {
                            self.client_fin = true;
                            self.phase = Phase::Ready;
                            return Action::Shutdown;
                        }
                        Step::End => self.close(now),
                    }
                }
                Phase::Write { bytes, ts } => {
                    self.client_off = self.client_off + bytes.len() as u32;
                    if self.broken || self.reset {
                        self.wrote(&bytes, false, now, ts);
                        self.phase = Phase::Ready;
                    } else {
                        self.phase = Phase::Written {
                            bytes: bytes.clone(),
                            ts,
                        };
                        return Action::Write(bytes);
                    }
                }
                Phase::Written { bytes, ts } => {
                    // Polled without the write's report: it did not happen.
                    self.wrote(&bytes, false, now, ts);
                    self.phase = Phase::Ready;
                }
                Phase::Closing { deadline } => {
                    if self.eof || now >= deadline {
                        return self.finish();
                    }
                    self.phase = Phase::Closing { deadline };
                    return Action::Wait {
                        until: deadline,
                        interruptible: false,
                    };
                }
                Phase::Quiet { deadline, wait } => {
                    let bytes_in = self.reqs.back().map_or(0, |r| r.bytes_in);
                    if let Some((until, before)) = wait {
                        if now < until && !self.eof {
                            self.phase = Phase::Quiet { deadline, wait };
                            return Action::Wait {
                                until,
                                interruptible: false,
                            };
                        }
                        if bytes_in == before {
                            return self.finish();
                        }
                    }
                    let last = self
                        .reqs
                        .back()
                        .and_then(|r| r.last_resp)
                        .or(self.test_banner_at);
                    let until = last.map_or(now, |l| l + QUIET).min(deadline);
                    if until <= now || self.eof {
                        return self.finish();
                    }
                    self.phase = Phase::Quiet {
                        deadline,
                        wait: Some((until, bytes_in)),
                    };
                    return Action::Wait {
                        until,
                        interruptible: false,
                    };
                }
                Phase::Done => return Action::Done,
            }
        }
    }

    /// Without production's answer in a capture that has server packets, the last request
    /// expects none.
    fn refine_expects(&mut self) {
        if let Some(r) = self.reqs.back_mut() {
            if self.server_seen && r.prod_resp_first_ts.is_none() {
                r.expects = false;
            }
        }
    }

    /// `step` reaches the release gate at `now`: it waits there when an answer is due
    /// (production answered the previous request, or greeted the client), else goes on to
    /// the schedule.
    fn enter_gate(&mut self, now: Instant, step: Step) {
        // Production's answer (or its absence) to the previous request is known now.
        self.refine_expects();
        let (expects, expected) = match self.reqs.back() {
            Some(r) => (r.expects, r.prod_bytes),
            None => (self.prod_banner && !self.rules.no_wait, 0),
        };
        if expects && !self.broken {
            let expected = u32::try_from(expected).unwrap_or(u32::MAX).max(1);
            self.pacer.note_boundary(self.client_off, expected);
            self.pacer.wait_from(now);
            self.phase = Phase::Answer(step);
        } else {
            self.phase = self.schedule(now, step);
        }
    }

    /// When `step` goes after the gate: its place in the schedule, and the original think time
    /// counted from the start of the previous answer. Timer overshoot (tokio's timer ticks in
    /// milliseconds) is paid back so that it does not pile up over a session's think times.
    fn schedule(&mut self, now: Instant, step: Step) -> Phase {
        let ts = step.ts();
        let mut send_at = self.schedule.at(ts);
        if self.schedule.timed {
            let think = self
                .reqs
                .back()
                .and_then(|r| r.prod_resp_first_ts.zip(r.first_resp));
            if let Some((pf, tf)) = think {
                let t = tf + self.schedule.scaled(ts.saturating_sub(pf));
                send_at = Some(send_at.map_or(t, |s| s.max(t)));
            }
        }
        let mut at = None;
        if let Some(due) = send_at {
            if due > now {
                let pay = self.timer_debt.min(due - now);
                self.timer_debt -= pay;
                at = Some(due - pay).filter(|&a| a > now);
            }
        }
        Phase::Schedule { step, at }
    }

    /// A new request captured at `ts` starts at `now` with `bytes`.
    fn start_request(&mut self, now: Instant, ts: u64, bytes: Bytes) {
        self.flush(1);
        let slip = self
            .schedule
            .at(ts)
            .map(|due| now.saturating_duration_since(due));
        let index = self.next_index;
        self.next_index += 1;
        // `expects` is refined when the next request comes: production answered, or no server
        // packets are in the capture at all.
        self.reqs
            .push_back(Req::new(index, now, ts, slip, !self.rules.no_wait));
        self.pacer.reset_answer();
        self.phase = Phase::Write { bytes, ts };
    }

    /// Client bytes captured at `ts` were written at `at` (or not: `ok` false).
    fn wrote(&mut self, bytes: &[u8], ok: bool, at: Instant, ts: u64) {
        if !ok {
            self.broken = true;
        }
        if let Some(r) = self.reqs.back_mut() {
            r.wrote(bytes, ok, at, ts);
            if let Some(conv) = &mut self.conv {
                conv.set_burst(r.index);
                conv.feed_request(bytes, self.cx.fields.as_deref());
            }
        }
    }

    /// The end of the conversation at `now`: wait for the last answer, then for its end.
    fn close(&mut self, now: Instant) {
        let deadline = now + self.rules.response_timeout;
        self.phase = if self.client_fin {
            Phase::Closing { deadline }
        } else {
            Phase::Quiet {
                deadline,
                wait: None,
            }
        };
    }

    fn finish(&mut self) -> Action {
        // Every stream is whole now: a response that runs until close ends here.
        if let Some(conv) = &mut self.conv {
            conv.end(self.cx.fields.as_deref());
        }
        self.flush(0);
        self.phase = Phase::Done;
        Action::Done
    }

    /// Finishes every request but the last `keep`.
    fn flush(&mut self, keep: usize) {
        while self.reqs.len() > keep {
            if let Some(r) = self.reqs.pop_front() {
                r.finish(
                    &self.cx,
                    self.eof,
                    self.reset,
                    self.conv.as_mut(),
                    &mut self.samples,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The session core alone: instants and bytes in, actions and samples out; no socket, no
    //! runtime, no clock but the instants the tests make up.
    use super::*;
    use crate::report::Outcome;
    use tcpclone::decode::Protocol;

    const TIMEOUT: Duration = Duration::from_millis(500);
    const MS: Duration = Duration::from_millis(1);

    fn core(t0: Instant, timed: bool, no_wait: bool) -> SessionCore {
        core_of(t0, timed, no_wait, Protocol::Tcp)
    }

    fn core_of(t0: Instant, timed: bool, no_wait: bool, protocol: Protocol) -> SessionCore {
        let cx = SampleContext {
            session: 7,
            start: t0,
            t0: 0,
            orig_base: Duration::ZERO,
            protocol,
            diff: false,
            fields: None,
            baseline: false,
        };
        let schedule = Schedule {
            timed,
            speedup: 1.0,
            base: t0,
            t0: 0,
        };
        let rules = GateRules {
            no_wait,
            idle_gap: Duration::ZERO,
            response_timeout: TIMEOUT,
            max_lag: None,
            lag_min_bytes: 0,
        };
        SessionCore::new(t0, cx, schedule, rules)
    }

    /// Client bytes captured at `ts_ms` of capture time.
    fn client(ts_ms: u64, b: &[u8], new_message: bool) -> SessionInput {
        SessionInput::Client {
            ts: ts_ms * 1_000_000,
            bytes: Bytes::copy_from_slice(b),
            new_message,
            server_seen: true,
        }
    }

    fn server(ts_ms: u64, b: &[u8]) -> SessionInput {
        SessionInput::Server {
            ts: ts_ms * 1_000_000,
            bytes: Bytes::copy_from_slice(b),
            len: b.len(),
        }
    }

    fn write(b: &[u8]) -> Action {
        Action::Write(Bytes::copy_from_slice(b))
    }

    fn wait(until: Instant) -> Action {
        Action::Wait {
            until,
            interruptible: false,
        }
    }

    /// Feeds `input` at `now` (the core must be asking for input) and writes what it asks for
    /// at once, successfully; returns what it asks next.
    fn feed(c: &mut SessionCore, now: Instant, input: SessionInput) -> Action {
        assert_eq!(c.poll(now), Action::NeedInput);
        c.handle_input(now, input);
        c.poll(now)
    }

    #[test]
    fn the_next_request_waits_until_the_target_began_to_answer() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        assert_eq!(feed(&mut c, t0, client(1, b"a1\n", true)), write(b"a1\n"));
        c.handle_written(t0, true);
        assert_eq!(feed(&mut c, t0, server(2, b"R:a1\n")), Action::NeedInput);
        c.handle_input(t0, client(20, b"a2\n", true));
        assert_eq!(c.poll(t0 + MS), wait(t0 + TIMEOUT), "held at the gate");
        c.handle_read(t0 + 3 * MS, b"R:");
        assert_eq!(c.poll(t0 + 3 * MS), write(b"a2\n"), "the answer began");
        c.handle_written(t0 + 3 * MS, true);
        assert_eq!(feed(&mut c, t0 + 4 * MS, SessionInput::End), Action::Done);
        // The first request was answered in 3 ms.
        let s = c.take_samples();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].outcome, Some(Outcome::Answered));
        assert_eq!(s[0].latency, Some(3 * MS));
        assert_eq!((s[0].bytes_out, s[0].bytes_in), (3, 2));
        assert_eq!(s[0].request_preview, b"a1\n");
        assert!(s[0].production.is_some());
    }

    #[test]
    fn a_pipeline_of_any_size_counts_every_command_timed_by_its_own_read() {
        // `redis-cli --pipe`-like: 20,000 SETs (about 700 KiB) in one burst, answered in two
        // reads on each side; every command is counted and timed by the read that brought its
        // reply's first byte.
        let n = 20_000;
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = format!("key:{i:06}");
            req.extend(format!("*3\r\n$3\r\nSET\r\n$10\r\n{k}\r\n$3\r\nxyz\r\n").bytes());
            resp.extend_from_slice(b"+OK\r\n");
        }
        let split = 5 * 12_345 + 2; // inside the reply of command 12,345
        let t0 = Instant::now();
        let mut c = core_of(t0, false, false, Protocol::Redis);
        assert_eq!(feed(&mut c, t0, client(1, &req, true)), write(&req));
        c.handle_written(t0, true);
        assert_eq!(
            feed(&mut c, t0, server(2, &resp[..split])),
            Action::NeedInput
        );
        assert_eq!(
            feed(&mut c, t0, server(3, &resp[split..])),
            Action::NeedInput
        );
        c.handle_read(t0 + 2 * MS, &resp[..split]);
        c.handle_read(t0 + 5 * MS, &resp[split..]);
        assert!(matches!(
            feed(&mut c, t0 + 6 * MS, SessionInput::End),
            Action::Wait { .. }
        ));
        assert_eq!(c.poll(t0 + 6 * MS + 2 * TIMEOUT), Action::Done);
        let s = c.take_samples();
        assert_eq!(s.len(), n);
        for (i, x) in s.iter().enumerate() {
            let ex = x.exchange.as_ref().unwrap();
            assert_eq!(ex.endpoint.as_deref(), Some("SET"), "command {i}");
            assert_eq!(ex.test.as_ref().map(|t| t.class.as_str()), Some("simple"));
            assert!(!ex.response_opaque);
            let (test, prod) = if i <= 12_345 { (2, 1) } else { (5, 2) };
            assert_eq!(x.latency, Some(test * MS), "command {i}");
            assert_eq!(x.production.unwrap().latency, prod * MS, "command {i}");
            assert_eq!(x.outcome, Some(Outcome::Answered));
        }
        assert_eq!(s[0].bytes_out, req.len() as u64);
    }

    #[test]
    fn a_command_split_around_a_server_reply_is_one_command() {
        // A client that writes while the server answers (`redis-cli --pipe`): the capture
        // starts a new burst after production's reply, inside `SET b 2`; the target's reply to
        // `SET a` is itself cut by the next burst.
        let (set_a, set_b, get_a) = (
            &b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n"[..],
            &b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n"[..],
            &b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"[..],
        );
        let burst1 = [set_a, &set_b[..9]].concat();
        let burst2 = [&set_b[9..], get_a].concat();
        let t0 = Instant::now();
        let mut c = core_of(t0, false, false, Protocol::Redis);
        assert_eq!(feed(&mut c, t0, client(1, &burst1, true)), write(&burst1));
        c.handle_written(t0, true);
        assert_eq!(feed(&mut c, t0, server(2, b"+OK\r\n")), Action::NeedInput);
        c.handle_input(t0, client(3, &burst2, true));
        c.handle_read(t0 + MS, b"+O");
        assert_eq!(c.poll(t0 + MS), write(&burst2));
        c.handle_written(t0 + 2 * MS, true);
        assert_eq!(
            feed(&mut c, t0 + 2 * MS, server(4, b"+OK\r\n$1\r\n1\r\n")),
            Action::NeedInput
        );
        c.handle_read(t0 + 4 * MS, b"K\r\n+OK\r\n$1\r\n1\r\n");
        let _ = feed(&mut c, t0 + 5 * MS, SessionInput::End);
        assert_eq!(c.poll(t0 + 5 * MS + 2 * TIMEOUT), Action::Done);
        let s = c.take_samples();
        let got: Vec<_> = s
            .iter()
            .map(|x| {
                let ex = x.exchange.as_ref().unwrap();
                (
                    ex.endpoint.as_deref().unwrap(),
                    ex.key.as_deref().unwrap(),
                    ex.test.as_ref().map(|t| t.class.as_str()),
                    ex.production.as_ref().map(|t| t.class.as_str()),
                    x.latency,
                    ex.response_opaque,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("SET", "a", Some("simple"), Some("simple"), Some(MS), false),
                // Counted in the burst its last byte went in, timed from that burst's write.
                (
                    "SET",
                    "b",
                    Some("simple"),
                    Some("simple"),
                    Some(2 * MS),
                    false
                ),
                ("GET", "a", Some("bulk"), Some("bulk"), Some(2 * MS), false),
            ]
        );
    }

    #[test]
    fn no_answer_releases_the_gate_at_the_timeout_and_counts_it() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        feed(&mut c, t0, client(1, b"a1\n", true));
        c.handle_written(t0, true);
        feed(&mut c, t0, server(2, b"R:a1\n"));
        c.handle_input(t0 + MS, client(20, b"a2\n", true));
        assert_eq!(c.poll(t0 + MS), wait(t0 + MS + TIMEOUT));
        assert_eq!(c.poll(t0 + MS + TIMEOUT), write(b"a2\n"));
        c.handle_written(t0 + MS + TIMEOUT, true);
        assert_eq!(
            feed(&mut c, t0 + MS + TIMEOUT, SessionInput::End),
            Action::Done
        );
        let s = c.take_samples();
        assert_eq!(s[0].outcome, Some(Outcome::TimedOut));
    }

    #[test]
    fn production_silence_does_not_hold_the_next_request() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        feed(&mut c, t0, client(1, b"a1\n", true));
        c.handle_written(t0, true);
        // The capture has server packets, none answering a1: a2 goes at once.
        assert_eq!(feed(&mut c, t0, client(2, b"a2\n", true)), write(b"a2\n"));
        c.handle_written(t0, true);
        // Nothing came from the target: the end does not wait for a quiet period.
        assert_eq!(feed(&mut c, t0, SessionInput::End), Action::Done);
        let s = c.take_samples();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].outcome, Some(Outcome::Unanswered));
        assert_eq!(s[1].outcome, Some(Outcome::Unanswered));
    }

    #[test]
    fn a_server_greeting_is_waited_for_and_is_not_latency() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        assert_eq!(feed(&mut c, t0, server(1, b"HI\n")), Action::NeedInput);
        c.handle_input(t0, client(2, b"a1\n", true));
        assert_eq!(c.poll(t0), wait(t0 + TIMEOUT), "production greeted first");
        c.handle_read(t0 + 150 * MS, b"HI\n");
        assert_eq!(c.poll(t0 + 150 * MS), write(b"a1\n"));
        c.handle_written(t0 + 150 * MS, true);
        c.handle_read(t0 + 151 * MS, b"R:a1\n");
        c.handle_eof(false);
        assert_eq!(feed(&mut c, t0 + 152 * MS, SessionInput::End), Action::Done);
        let s = c.take_samples();
        assert_eq!(s[0].outcome, Some(Outcome::Answered));
        assert_eq!(
            s[0].latency,
            Some(MS),
            "counted from the request, not the greeting"
        );
    }

    #[test]
    fn a_closed_target_opens_the_gate_without_a_timeout() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        feed(&mut c, t0, client(1, b"a1\n", true));
        c.handle_written(t0, true);
        feed(&mut c, t0, server(2, b"R:a1\n"));
        c.handle_input(t0, client(3, b"a2\n", true));
        assert_eq!(c.poll(t0), wait(t0 + TIMEOUT));
        c.handle_eof(false);
        assert_eq!(
            c.poll(t0 + MS),
            write(b"a2\n"),
            "closed: nothing to wait for"
        );
        c.handle_written(t0 + MS, false);
        // A failed write breaks the session: later bytes are not written.
        assert_eq!(
            feed(&mut c, t0 + MS, client(3, b"more", false)),
            Action::NeedInput
        );
        assert_eq!(feed(&mut c, t0 + MS, SessionInput::End), Action::Done);
        let s = c.take_samples();
        assert_eq!(s[0].outcome, Some(Outcome::Closed));
        assert_eq!(s[1].bytes_out, 0);
        assert_eq!(s[1].request_preview, b"a2\nmore");
    }

    #[test]
    fn timed_requests_wait_for_their_place_and_their_think_time() {
        let t0 = Instant::now();
        let mut c = core(t0, true, false);
        assert_eq!(
            feed(&mut c, t0, client(10, b"a1\n", true)),
            Action::Wait {
                until: t0 + 10 * MS,
                interruptible: true
            }
        );
        // Woken 2 ms late: the request goes, and the debt is paid back on the next wait.
        assert_eq!(c.poll(t0 + 12 * MS), write(b"a1\n"));
        c.handle_written(t0 + 12 * MS, true);
        feed(&mut c, t0 + 12 * MS, server(11, b"R:a1\n"));
        c.handle_read(t0 + 40 * MS, b"R:a1\n");
        // Production thought 9 ms after its answer began (11 → 20): from the target's answer
        // at 40 ms that is 49 ms, less the 2 ms of debt.
        assert_eq!(
            feed(&mut c, t0 + 41 * MS, client(20, b"a2\n", true)),
            Action::Wait {
                until: t0 + 47 * MS,
                interruptible: true
            }
        );
        // A stop ends the schedule's waits at once.
        c.handle_stop();
        assert_eq!(c.poll(t0 + 42 * MS), write(b"a2\n"));
        c.handle_written(t0 + 42 * MS, true);
        assert_eq!(feed(&mut c, t0 + 42 * MS, SessionInput::End), Action::Done);
        let s = c.take_samples();
        assert_eq!(s[0].slip, Some(2 * MS));
        assert_eq!(s[0].latency, Some(28 * MS));
    }

    #[test]
    fn no_wait_never_holds_a_request() {
        let t0 = Instant::now();
        let mut c = core(t0, false, true);
        feed(&mut c, t0, server(0, b"HI\n"));
        assert_eq!(feed(&mut c, t0, client(1, b"a1\n", true)), write(b"a1\n"));
        c.handle_written(t0, true);
        feed(&mut c, t0, server(2, b"R:a1\n"));
        assert_eq!(feed(&mut c, t0, client(3, b"a2\n", true)), write(b"a2\n"));
    }

    #[test]
    fn the_client_fin_goes_after_the_gate_and_the_end_waits_for_the_last_answer() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        feed(&mut c, t0, client(1, b"a1\n", true));
        c.handle_written(t0, true);
        feed(&mut c, t0, server(2, b"R:a1\n"));
        c.handle_input(t0, SessionInput::ClientFin { ts: 3_000_000 });
        assert_eq!(c.poll(t0), wait(t0 + TIMEOUT));
        c.handle_read(t0 + 5 * MS, b"R:a1\n");
        assert_eq!(c.poll(t0 + 5 * MS), Action::Shutdown);
        assert_eq!(
            feed(&mut c, t0 + 6 * MS, SessionInput::End),
            wait(t0 + 6 * MS + TIMEOUT)
        );
        c.handle_eof(false);
        assert_eq!(c.poll(t0 + 7 * MS), Action::Done);
        assert_eq!(c.take_samples()[0].outcome, Some(Outcome::Answered));
    }

    #[test]
    fn without_a_fin_the_answer_ends_after_a_quiet_period() {
        let t0 = Instant::now();
        let mut c = core(t0, false, false);
        feed(&mut c, t0, client(1, b"a1\n", true));
        c.handle_written(t0, true);
        c.handle_read(t0 + MS, b"R:");
        assert_eq!(
            feed(&mut c, t0 + MS, SessionInput::End),
            wait(t0 + MS + QUIET)
        );
        c.handle_read(t0 + 50 * MS, b"a1\n");
        // More came during the quiet period: another one from the last byte.
        assert_eq!(c.poll(t0 + MS + QUIET), wait(t0 + 50 * MS + QUIET));
        assert_eq!(c.poll(t0 + 50 * MS + QUIET), Action::Done);
        let s = c.take_samples();
        assert_eq!(s[0].bytes_in, 5);
        assert_eq!(s[0].ttlb, Some(50 * MS));
    }
}
