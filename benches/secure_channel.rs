//! Records per second through the tcpcopy–intercept secure channel (Noise, AES-256-GCM), sealed
//! by one end and opened by the other, at the sizes the channel carries: a registration
//! (~45 bytes) and a batch of response headers (~400 bytes). Run:
//! `cargo bench --bench secure_channel`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tcpclone::proto::secure::{Psk, SecureChannel, PSK_LEN};

fn pair() -> (SecureChannel, SecureChannel) {
    let psk = Psk::from_bytes([7u8; PSK_LEN]);
    let (mut to_resp, mut to_init, mut plain) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    let mut init = SecureChannel::initiator(&psk, &mut to_resp).expect("initiator");
    let mut resp = SecureChannel::responder(&psk).expect("responder");
    resp.read(&mut to_resp, &mut plain, &mut to_init)
        .expect("handshake");
    init.read(&mut to_init, &mut plain, &mut BytesMut::new())
        .expect("handshake");
    (init, resp)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("secure_channel");
    for size in [45usize, 400] {
        let (mut init, mut resp) = pair();
        let msg = vec![0x5au8; size];
        let (mut rec, mut plain, mut out) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("seal_open_{size}B"), |b| {
            b.iter(|| {
                init.write(black_box(&msg), &mut rec).expect("seal");
                resp.read(&mut rec, &mut plain, &mut out).expect("open");
                plain.clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
