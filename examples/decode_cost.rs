//! Decodes N synthetic request/response pairs of one protocol (requests and responses each
//! fed as one stream in 1,448-byte pieces, as segments arrive), for counting instructions per
//! pair with callgrind (stable on a shared machine, unlike time):
//!
//! `valgrind --tool=callgrind target/release/examples/decode_cost http 10000`
//!
//! Run it at two N and divide the difference: that removes the start-up cost. Figures:
//! `docs/benchmarks.md`.
use tcpclone::decode::{Direction, Limits, Protocol};

fn main() {
    let mut args = std::env::args().skip(1);
    let protocol = args
        .next()
        .and_then(|p| Protocol::from_name(&p))
        .unwrap_or(Protocol::Http);
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    for i in 0..n {
        match protocol {
            Protocol::Redis => {
                let k = format!("key:{i}");
                req.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).bytes());
                resp.extend_from_slice(b"$10\r\n0123456789\r\n");
            }
            _ => {
                req.extend(
                    format!("GET /users/{i}?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")
                        .bytes(),
                );
                resp.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"id\":1,\"ok\":true}",
                );
            }
        }
    }
    let mut count = 0u64;
    for (dir, bytes) in [(Direction::Request, &req), (Direction::Response, &resp)] {
        let mut d = protocol.decoder(dir, Limits::default());
        for piece in bytes.chunks(1448) {
            d.feed(piece);
            while let Ok(Some(m)) = d.poll_message() {
                count += m.wire_len;
            }
        }
    }
    println!("{protocol}: {n} pairs, {count} bytes decoded");
}
