//! Seals and opens N records of one size with the tcpcopy–intercept channel's Noise cipher
//! (`aesgcm`, the channel's own since protocol v2) or the one it used before (`chachapoly`),
//! for counting instructions per record with callgrind:
//!
//! `valgrind --tool=callgrind target/release/examples/channel_cost aesgcm 100 20000`
//!
//! Run it at two N and divide the difference: that removes the handshake and start-up.
//! Figures: `docs/benchmarks.md`.

fn transport(params: &str) -> (snow::TransportState, snow::TransportState) {
    let psk = [7u8; 32];
    let p: snow::params::NoiseParams = params.parse().expect("noise params");
    let mut i = snow::Builder::new(p.clone())
        .psk(0, &psk)
        .and_then(|b| b.prologue(b"cost"))
        .and_then(|b| b.build_initiator())
        .expect("initiator");
    let mut r = snow::Builder::new(p)
        .psk(0, &psk)
        .and_then(|b| b.prologue(b"cost"))
        .and_then(|b| b.build_responder())
        .expect("responder");
    let (mut msg, mut out) = ([0u8; 256], [0u8; 256]);
    let n = i.write_message(&[], &mut msg).expect("-> psk, e");
    r.read_message(&msg[..n], &mut out).expect("read 1");
    let n = r.write_message(&[], &mut msg).expect("<- e, ee");
    i.read_message(&msg[..n], &mut out).expect("read 2");
    (
        i.into_transport_mode().expect("initiator transport"),
        r.into_transport_mode().expect("responder transport"),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let params = match args.next().as_deref() {
        Some("chachapoly") => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
        _ => tcpclone::proto::secure::NOISE_PARAMS,
    };
    let size: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (mut a, mut b) = transport(params);
    let plain = vec![0x5au8; size];
    let (mut sealed, mut opened) = (vec![0u8; size + 16], vec![0u8; size + 16]);
    let mut total = 0usize;
    for _ in 0..n {
        let len = a.write_message(&plain, &mut sealed).expect("seal");
        total += b.read_message(&sealed[..len], &mut opened).expect("open");
    }
    println!("{params}: {n} records of {size} bytes, {total} bytes opened");
}
