//! A simulated pair (STYLE.md rule 14): the engine plus a model TCP target on a virtual clock,
//! with seeded loss, duplication and reordering on both the engine→target path and intercept's
//! report path, and duplication/reordering in the capture. Every client byte must reach the
//! target in order, and every session must complete.

use super::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// Small deterministic PRNG (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug)]
enum Ev {
    Capture(Vec<u8>),
    ToTarget(Vec<u8>),
    ToEngine(Vec<u8>),
}

/// One production conversation: request sizes, production's and the target's answer sizes.
struct Script {
    client: SocketAddr,
    isn: u32,
    requests: Vec<(usize, u32, u32)>,
    stream: Vec<u8>,
    /// A data segment of this conversation was dropped from the capture.
    capture_lost: bool,
}

/// The model target's view of one connection.
#[derive(Default)]
struct TConn {
    rcv_nxt: u32,
    isn: u32,
    snd_nxt: u32,
    snd_una: u32,
    client_isn: u32,
    ts_ok: bool,
    received: Vec<u8>,
    ooo: BTreeMap<u32, Vec<u8>>,
    consumed: usize,
    answered: usize,
    /// Unacked segments: (seq, len, flags, last sent).
    unacked: Vec<(u32, u32, u8, Instant)>,
    fin_rcvd: bool,
    closed: bool,
    resets: u32,
}

struct Sim {
    h: H,
    rng: Rng,
    q: BinaryHeap<Reverse<(Instant, u64)>>,
    evs: HashMap<u64, Ev>,
    seq_no: u64,
    scripts: Vec<Script>,
    conns: HashMap<SocketAddr, TConn>,
    history: Vec<(SocketAddr, TConn)>,
    loss: u64,
    dup: u64,
    jitter_us: u64,
}

fn seqlt(a: u32, b: u32) -> bool {
    SeqNumber(a) < SeqNumber(b)
}

impl Sim {
    fn at(&mut self, t: Instant, ev: Ev) {
        self.seq_no += 1;
        self.q.push(Reverse((t, self.seq_no)));
        self.evs.insert(self.seq_no, ev);
    }

    /// Sends over a lossy path: loss, duplication and jitter (which reorders).
    fn lossy(&mut self, pkt: Vec<u8>, to_target: bool) {
        if self.rng.chance(self.loss) {
            return;
        }
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = Duration::from_micros(100 + self.rng.below(self.jitter_us));
            let t = self.h.now + d;
            let ev = if to_target {
                Ev::ToTarget(pkt.clone())
            } else {
                Ev::ToEngine(pkt.clone())
            };
            self.at(t, ev);
        }
    }

    fn report(&mut self, conn_key: SocketAddr, seq: u32, ack: u32, flags: u8, len: u32) {
        let c = &self.conns[&conn_key];
        let win = if flags & SYN != 0 { 65535 } else { 512 };
        let ts = c.ts_ok.then_some((1_000_000 + seq % 1000, 0));
        let opts = if flags & SYN != 0 {
            TcpOpts {
                mss: Some(1460),
                wscale: Some(7),
                sack_perm: false,
                ts: ts.map(|_| (1, 0)),
            }
        } else {
            TcpOpts { ts, ..NO_OPTS }
        };
        let s = Seg {
            src: TARGET,
            dst: conn_key,
            seq,
            ack,
            flags,
            win,
            opts,
            payload: b"",
            len,
        };
        let pkt = build(&s, false);
        self.lossy(pkt, false);
    }

    fn target_rx(&mut self, pkt: &[u8]) {
        let p = packet::parse(pkt, false).expect("engine output parses");
        assert!(packet::checksums_ok(pkt));
        assert_eq!(SocketAddr::new(p.dst, p.dst_port), TARGET);
        let key = SocketAddr::new(p.src, p.src_port);
        let now = self.h.now;
        if p.has(RST) {
            let mut challenge = None;
            if let Some(c) = self.conns.get_mut(&key) {
                if !c.closed && p.seq.value() == c.rcv_nxt {
                    c.closed = true;
                    c.resets += 1;
                } else if !c.closed && c.snd_una != c.isn {
                    // RFC 5961 §3.2: not exactly rcv_nxt → challenge ACK. Only once
                    // established: Linux's SYN-received request socket drops such a RST
                    // silently (a challenge ACK there would ack the client's SYN without a
                    // SYN, which the engine takes for a stale connection and resets).
                    challenge = Some((c.snd_nxt, c.rcv_nxt));
                }
            }
            if let Some((s, a)) = challenge {
                self.report(key, s, a, ACK, 0);
            }
            return;
        }
        if p.has(SYN) {
            if let Some(c) = self.conns.get(&key) {
                if !c.closed && c.client_isn != p.seq.value() {
                    // RFC 5961 §4: a SYN on a live connection gets a challenge ACK.
                    let (s, a) = (c.snd_nxt, c.rcv_nxt);
                    self.report(key, s, a, ACK, 0);
                    return;
                }
            }
            let fresh = self
                .conns
                .get(&key)
                .is_none_or(|c| c.closed && c.client_isn != p.seq.value());
            if fresh {
                if let Some(old) = self.conns.remove(&key) {
                    self.history.push((key, old));
                }
                let isn = self.rng.next() as u32;
                let c = TConn {
                    rcv_nxt: p.seq.value().wrapping_add(1),
                    isn,
                    snd_nxt: isn.wrapping_add(1),
                    snd_una: isn,
                    client_isn: p.seq.value(),
                    ts_ok: p.opts.ts.is_some(),
                    ..TConn::default()
                };
                self.conns.insert(key, c);
            }
            let c = &self.conns[&key];
            if c.client_isn == p.seq.value() && !c.closed {
                let (isn, rn) = (c.isn, c.rcv_nxt);
                self.report(key, isn, rn, SYN | ACK, 0);
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.closed {
            return;
        }
        if p.has(ACK) && seqlt(c.snd_una, p.ack.value()) && !seqlt(c.snd_nxt, p.ack.value()) {
            c.snd_una = p.ack.value();
            let una = c.snd_una;
            c.unacked
                .retain(|&(s, l, f, _)| seqlt(una, s.wrapping_add(l + u32::from(f & FIN != 0))));
            if c.fin_rcvd && c.unacked.is_empty() && c.snd_una == c.snd_nxt {
                c.closed = true;
            }
        }
        let data = p.payload;
        let seq = p.seq.value();
        let win_end = c.rcv_nxt.wrapping_add(65536);
        if !data.is_empty() && !seqlt(win_end, seq.wrapping_add(data.len() as u32)) {
            if seq == c.rcv_nxt {
                c.received.extend_from_slice(data);
                c.rcv_nxt = c.rcv_nxt.wrapping_add(data.len() as u32);
            } else if seqlt(c.rcv_nxt, seq) {
                c.ooo.insert(seq, data.to_vec());
            } else if seqlt(c.rcv_nxt, seq.wrapping_add(data.len() as u32)) {
                let skip = c.rcv_nxt.wrapping_sub(seq) as usize;
                c.received.extend_from_slice(&data[skip..]);
                c.rcv_nxt = seq.wrapping_add(data.len() as u32);
            }
            loop {
                let Some((&s, _)) = c.ooo.iter().find(|(s, d)| {
                    !seqlt(c.rcv_nxt, **s) && seqlt(c.rcv_nxt, s.wrapping_add(d.len() as u32))
                        || **s == c.rcv_nxt
                }) else {
                    c.ooo
                        .retain(|s, d| seqlt(c.rcv_nxt, s.wrapping_add(d.len() as u32)));
                    break;
                };
                let d = c.ooo.remove(&s).unwrap_or_default();
                let skip = c.rcv_nxt.wrapping_sub(s) as usize;
                if skip < d.len() {
                    c.received.extend_from_slice(&d[skip..]);
                    c.rcv_nxt = s.wrapping_add(d.len() as u32);
                }
            }
        }
        let mut send_fin = false;
        if p.has(FIN) && seq.wrapping_add(data.len() as u32) == c.rcv_nxt && !c.fin_rcvd {
            c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
            c.fin_rcvd = true;
            send_fin = true;
        }
        // The application: answer each complete request.
        let script = self
            .scripts
            .iter()
            .find(|s| s.client == key || s.client.port() == key.port());
        let mut answers = Vec::new();
        if let Some(sc) = script {
            while c.answered < sc.requests.len() {
                let (size, _, tsize) = sc.requests[c.answered];
                if c.received.len() < c.consumed + size {
                    break;
                }
                c.consumed += size;
                c.answered += 1;
                answers.push(tsize);
            }
        }
        let (rn, mut sn) = (c.rcv_nxt, c.snd_nxt);
        let mut out = Vec::new();
        for t in answers {
            let mut left = t;
            while left > 0 {
                let l = left.min(1448);
                out.push((sn, l, ACK | PSH));
                sn = sn.wrapping_add(l);
                left -= l;
            }
        }
        if send_fin {
            out.push((sn, 0, FIN | ACK));
            sn = sn.wrapping_add(1);
        }
        c.snd_nxt = sn;
        for &(s, l, f) in &out {
            c.unacked.push((s, l, f, now));
        }
        if out.is_empty() && (!data.is_empty() || p.has(FIN)) {
            out.push((sn, 0, ACK));
        }
        for (s, l, f) in out {
            self.report(key, s, rn, f, l);
        }
    }

    fn target_tick(&mut self) {
        let now = self.h.now;
        let mut resend = Vec::new();
        for (k, c) in self.conns.iter_mut() {
            if c.closed {
                continue;
            }
            for u in c.unacked.iter_mut() {
                if now >= u.3 + Duration::from_millis(50) {
                    u.3 = now;
                    resend.push((*k, u.0, c.rcv_nxt, u.2, u.1));
                }
            }
        }
        for (k, s, a, f, l) in resend {
            self.report(k, s, a, f, l);
        }
    }

    /// Everything the engine sends now; with `h.by_ref` as the live worker takes it (payloads
    /// gathered after the round's last transmit), super-segments cut as the kernel cuts them.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 70_000];
        let mut round = Vec::new();
        loop {
            let tx = if self.h.by_ref {
                self.h.e.poll_transmit_by_ref(self.h.now, &mut buf)
            } else {
                self.h.e.poll_transmit(self.h.now, &mut buf)
            };
            let Some(tx) = tx else { break };
            round.push((tx, buf[..tx.len].to_vec()));
        }
        let mut scratch = vec![0u8; 70_000];
        for (tx, mut pkt) in round {
            if let Some(r) = tx.payload {
                let (a, b) = self.h.e.payload(&r).expect("held until gathered");
                pkt.extend_from_slice(a);
                pkt.extend_from_slice(b);
                self.h.gathered += 1;
            }
            match tx.gso_size {
                Some(mss) => {
                    let mut pieces = Vec::new();
                    tcpclone::wire::gso::segment(&pkt, usize::from(mss), &mut scratch, |p| {
                        pieces.push(p.to_vec())
                    })
                    .expect("a super-segment segments");
                    for p in pieces {
                        self.lossy(p, true);
                    }
                }
                None => self.lossy(pkt, true),
            }
        }
        while self.h.e.poll_event().is_some() {}
    }
}

fn make_scripts(
    rng: &mut Rng,
    sessions: usize,
    t0: Instant,
    cap_loss: u64,
) -> (Vec<Script>, Vec<(Instant, Vec<u8>)>) {
    let mut scripts = Vec::new();
    let mut caps = Vec::new();
    for i in 0..sessions {
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), 40000 + i as u16);
        let isn = rng.next() as u32;
        let prod_isn = rng.next() as u32;
        let nreq = 1 + rng.below(6) as usize;
        let mut requests = Vec::new();
        let mut stream = Vec::new();
        for _ in 0..nreq {
            let big = rng.chance(20);
            let size = 1 + rng.below(if big { 70_000 } else { 3000 }) as usize;
            let prod = 1 + rng.below(3000) as u32;
            // The target's answer differs in size from production's now and then.
            let tgt = if rng.chance(30) {
                1 + rng.below(3000) as u32
            } else {
                prod
            };
            requests.push((size, prod, tgt));
            for _ in 0..size {
                stream.push(rng.next() as u8);
            }
        }
        let ts = rng.chance(50);
        let opts = |v: u32| TcpOpts {
            ts: ts.then_some((v, 0)),
            ..NO_OPTS
        };
        let mut t = t0 + Duration::from_micros(rng.below(20_000));
        let mut tsv = 100 + i as u32;
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let base = Seg {
            src: client,
            dst: SERVICE,
            ..TEMPLATE
        };
        segs.push(build(
            &Seg {
                seq: isn,
                ack: 0,
                flags: SYN,
                opts: TcpOpts {
                    ts: ts.then_some((tsv, 0)),
                    ..SYN_OPTS
                },
                ..base
            },
            true,
        ));
        segs.push(build(
            &Seg {
                seq: isn.wrapping_add(1),
                ack: prod_isn.wrapping_add(1),
                flags: ACK,
                opts: opts(tsv),
                ..base
            },
            true,
        ));
        let mut off = 0usize;
        let mut ack = prod_isn.wrapping_add(1);
        let leaked: &'static [u8] = Box::leak(stream.clone().into_boxed_slice());
        let mut per_request: Vec<Vec<Vec<u8>>> = Vec::new();
        for &(size, prod, _) in &requests {
            let mut this = Vec::new();
            let mut o = 0;
            while o < size {
                // GRO-sized super-segments now and then.
                let chunk = if rng.chance(20) { 65_000 } else { 1448 };
                let l = chunk.min(size - o);
                tsv += 1;
                let s = Seg {
                    seq: isn.wrapping_add(1 + (off + o) as u32),
                    ack,
                    flags: ACK | PSH,
                    opts: opts(tsv),
                    payload: &leaked[off + o..off + o + l],
                    ..base
                };
                this.push(build(&s, true));
                o += l;
            }
            off += size;
            ack = ack.wrapping_add(prod);
            per_request.push(this);
        }
        let mut capture_lost = false;
        let nreq = per_request.len();
        for (i, mut r) in per_request.into_iter().enumerate() {
            // Capture loss, where two more requests follow so the clone can re-establish.
            if i + 2 < nreq && !capture_lost && rng.chance(cap_loss) {
                let k = rng.below(r.len() as u64) as usize;
                r.remove(k);
                capture_lost = true;
            }
            // Capture reordering within a request, and duplicates.
            if r.len() > 1 && rng.chance(20) {
                let k = rng.below(r.len() as u64 - 1) as usize;
                r.swap(k, k + 1);
            }
            if !r.is_empty() && rng.chance(10) {
                let k = rng.below(r.len() as u64) as usize;
                let d = r[k].clone();
                r.push(d);
            }
            let _ = i;
            segs.extend(r);
            segs.push(Vec::new()); // marker: think time
        }
        tsv += 1;
        segs.push(build(
            &Seg {
                seq: isn.wrapping_add(1 + off as u32),
                ack,
                flags: FIN | ACK,
                opts: opts(tsv),
                ..base
            },
            true,
        ));
        for s in segs {
            if s.is_empty() {
                t += Duration::from_micros(500 + rng.below(3000));
                continue;
            }
            t += Duration::from_micros(5);
            caps.push((t, s));
        }
        scripts.push(Script {
            client,
            isn,
            requests,
            stream,
            capture_lost,
        });
    }
    (scripts, caps)
}

fn run(
    seed: u64,
    sessions: usize,
    loss: u64,
    dup: u64,
    jitter_us: u64,
    cap_loss: u64,
) -> super::super::EngineStats {
    run_with(seed, sessions, loss, dup, jitter_us, cap_loss, false).0
}

/// [`run`]; with `by_ref`, the engine sends super-segments and the simulation takes their
/// payloads by reference, as the live worker does. Also returns how many it gathered.
fn run_with(
    seed: u64,
    sessions: usize,
    loss: u64,
    dup: u64,
    jitter_us: u64,
    cap_loss: u64,
    by_ref: bool,
) -> (super::super::EngineStats, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let cfg = EngineConfig {
        max_retransmits: 30,
        gso_max: if by_ref { 64_000 } else { 0 },
        ..config()
    };
    let mut h = H::new(cfg);
    h.by_ref = by_ref;
    let t0 = h.t0;
    let (scripts, caps) = make_scripts(&mut rng, sessions, t0, cap_loss);
    let mut sim = Sim {
        h,
        rng,
        q: BinaryHeap::new(),
        evs: HashMap::new(),
        seq_no: 0,
        scripts,
        conns: HashMap::new(),
        history: Vec::new(),
        loss,
        dup,
        jitter_us,
    };
    for (t, c) in caps {
        sim.at(t, Ev::Capture(c));
    }
    let mut tick = t0;
    let end = t0 + Duration::from_secs(120);
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(
            steps < 5_000_000,
            "seed {seed}: simulation does not converge"
        );
        let next_q = sim.q.peek().map(|r| r.0 .0);
        let next_e = sim.h.e.poll_timeout();
        let next_tick = tick + Duration::from_millis(10);
        let active_target = sim
            .conns
            .values()
            .any(|c| !c.closed && !c.unacked.is_empty());
        let mut t = next_q.into_iter().chain(next_e).min();
        if active_target {
            t = Some(t.map_or(next_tick, |x| x.min(next_tick)));
        }
        let Some(t) = t else { break };
        if t > end || (sim.h.e.session_count() == 0 && next_q.is_none()) {
            break;
        }
        sim.h.now = sim.h.now.max(t);
        if next_q == Some(t) {
            let Reverse((_, id)) = sim.q.pop().unwrap_or(Reverse((t, 0)));
            match sim.evs.remove(&id) {
                Some(Ev::Capture(p)) => sim.h.e.handle_captured(sim.h.now, &p),
                Some(Ev::ToTarget(p)) => sim.target_rx(&p),
                Some(Ev::ToEngine(p)) => sim.h.e.handle_response(sim.h.now, &p),
                None => {}
            }
        }
        if next_tick <= sim.h.now {
            tick = sim.h.now;
            sim.target_tick();
        }
        sim.h.e.handle_timeout(sim.h.now);
        sim.drain();
        if steps % 64 == 0 {
            // The live worker's periodic compaction (spares and large buffers trimmed).
            sim.h.e.compact();
        }
        assert_eq!(
            sim.h.e.memory_used(),
            sim.h.e.memory_recount(),
            "seed {seed}: the memory count drifted from the sessions' buffers"
        );
    }
    let st = sim.h.e.stats();
    for sc in &sim.scripts {
        let c = sim
            .conns
            .get(&sc.client)
            .unwrap_or_else(|| panic!("seed {seed}: no connection for {}", sc.client));
        assert!(
            c.fin_rcvd,
            "seed {seed}: {} FIN never arrived; {st:?}",
            sc.client
        );
        if sc.capture_lost {
            // Re-established at a request boundary: the last connection carries whole
            // requests k.. to the end, in order.
            let mut off = 0;
            let mut ok = false;
            for &(size, _, _) in &sc.requests {
                off += size;
                ok |= off < sc.stream.len() && c.received[..] == sc.stream[off..];
            }
            assert!(
                ok,
                "seed {seed}: {} after the gap: {} bytes, not whole requests",
                sc.client,
                c.received.len()
            );
            continue;
        }
        assert_eq!(
            c.received.len(),
            sc.stream.len(),
            "seed {seed}: {} got {} of {} bytes; {st:?}",
            sc.client,
            c.received.len(),
            sc.stream.len()
        );
        assert!(
            c.received == sc.stream,
            "seed {seed}: {} bytes out of order",
            sc.client
        );
        assert_eq!(c.resets, 0, "seed {seed}: {} was reset", sc.client);
        assert!(
            !sim.history.iter().any(|(k, _)| *k == sc.client),
            "seed {seed}: {} reconnected",
            sc.client
        );
        let _ = sc.isn;
    }
    assert_eq!(
        st.sessions_completed, sessions as u64,
        "seed {seed}: {st:?}"
    );
    assert_eq!(sim.h.e.session_count(), 0, "seed {seed}");
    let lost = sim.scripts.iter().filter(|s| s.capture_lost).count() as u64;
    assert_eq!(st.gaps, lost, "seed {seed}: {st:?}");
    assert_eq!(st.reestablished, lost, "seed {seed}: {st:?}");
    assert_eq!(sim.h.e.memory_in_sessions(), 0, "seed {seed}");
    (st, sim.h.gathered)
}

#[test]
fn clean_paths_deliver_everything_without_retransmitting() {
    for seed in 0..5 {
        let st = run(seed, 8, 0, 0, 1, 0);
        assert_eq!(st.segments_retransmitted, 0, "{st:?}");
        assert!(st.requests_answered > 8, "{st:?}");
    }
}

#[test]
fn lossy_duplicating_reordering_paths_deliver_everything() {
    let seeds: u64 = std::env::var("ENGINE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        run(1000 + seed, 6, 5, 3, 300, 0);
    }
}

#[test]
fn heavy_loss_still_delivers() {
    let mut rexmit = 0;
    for seed in 0..5 {
        let st = run(5000 + seed, 4, 20, 5, 500, 0);
        rexmit += st.segments_retransmitted;
        if seed == 0 {
            eprintln!("{st:?}");
        }
    }
    assert!(rexmit > 0, "20 % loss must cause retransmissions");
}

#[test]
fn capture_gaps_reset_and_re_establish_without_stalling() {
    let mut gaps = 0;
    for seed in 0..30 {
        let st = run(9000 + seed, 6, 3, 2, 300, 60);
        gaps += st.gaps;
    }
    assert!(gaps >= 10, "the capture loss must produce gaps: {gaps}");
}

/// Super-segments whose payloads are gathered by reference after each round, as the live
/// worker sends them, through loss, duplication, reordering and capture gaps: every byte
/// arrives in order, and every reference still finds its bytes.
#[test]
fn payloads_by_reference_deliver_everything_on_lossy_paths() {
    let mut gathered = 0;
    for seed in 0..12 {
        let cap_loss = if seed % 3 == 2 { 60 } else { 0 };
        gathered += run_with(20_000 + seed, 6, 5, 3, 300, cap_loss, true).1;
    }
    assert!(gathered > 20, "super-segments must be sent: {gathered}");
}
