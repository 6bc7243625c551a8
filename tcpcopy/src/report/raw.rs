//! Raw mode's samples for the per-endpoint report: what the engine knows of one answered
//! request (its first bytes, the first bytes of the target's answer as intercept reported them
//! with `--response-prefix`, and the times) turned into a [`RequestSample`] with a decoded
//! [`Exchange`], so that raw mode's per-endpoint table, `--fail-if` and `--junit` are stream
//! mode's code.
//!
//! Pure: bytes and durations in, a sample out. Runs in the worker only when a report is asked
//! for (the engine emits nothing to decode otherwise).

use super::exchange::{analyze, Exchange};
use super::{Outcome, ProductionSample, RequestSample};
use crate::engine::Unanswered;
use std::time::Duration;
use tcpclone::decode::Protocol;

/// One answered request as raw mode measured it.
#[derive(Debug, Clone, Copy)]
pub struct RawAnswer<'a> {
    /// Session number (stable within a run).
    pub session: u64,
    /// When the request's last byte went, since the start of the run.
    pub sent_at: Duration,
    /// Request sent → the first answer segment reported by intercept arriving at tcpcopy.
    pub latency: Duration,
    /// The request's first bytes.
    pub request: &'a [u8],
    /// The answer's first bytes (empty: intercept reports headers only).
    pub answer_prefix: &'a [u8],
    /// Production's answer to the same request, when the capture holds it.
    pub production: Option<RawProduction<'a>>,
}

/// Production's answer to a request, from the capture.
#[derive(Debug, Clone, Copy)]
pub struct RawProduction<'a> {
    /// When the request's last byte was captured, since the start of the run.
    pub at: Duration,
    /// Request's last byte → production's first answer byte, capture times.
    pub latency: Duration,
    /// Its first bytes.
    pub prefix: &'a [u8],
}

/// A request whose session ended before the target answered it, and why.
#[derive(Debug, Clone, Copy)]
pub struct RawUnanswered<'a> {
    /// Session number (stable within a run).
    pub session: u64,
    /// When the request went, since the start of the run.
    pub sent_at: Duration,
    /// The request's first bytes.
    pub request: &'a [u8],
    /// How the session ended.
    pub why: Unanswered,
}

/// The start of an answer cut to its first line, made into a head the response decoder reads
/// whole: an HTTP status line then the end of an (empty) header block, a RESP type line. The
/// class of an answer is in that line; what follows it in a prefix of a few dozen bytes is a
/// header block cut anywhere, which the decoder would rightly refuse to read as complete. A
/// first line longer than the prefix is ended where the prefix ends (a reason phrase or error
/// message cut short still has its status code or error prefix).
fn first_line_head(protocol: Protocol, prefix: &[u8]) -> Option<Vec<u8>> {
    if prefix.is_empty() {
        return None;
    }
    let end = prefix
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(prefix.len());
    let mut head = prefix[..end].to_vec();
    head.extend_from_slice(b"\r\n");
    if protocol == Protocol::Http {
        head.extend_from_slice(b"\r\n");
    }
    Some(head)
}

/// Decodes one request (as `protocol`) and the classes of its answers from their prefixes
/// (the target's; production's when captured).
pub fn raw_exchange(
    protocol: Protocol,
    request: &[u8],
    answer_prefix: &[u8],
    production_prefix: Option<&[u8]>,
) -> Exchange {
    let head = first_line_head(protocol, answer_prefix);
    let prod = production_prefix.and_then(|p| first_line_head(protocol, p));
    let mut ex = analyze(
        protocol,
        request,
        true,
        prod.as_deref().map(|h| (h, true)),
        head.as_deref().map(|h| (h, true)),
        None,
    );
    // A prefix without a whole first line tells no class: counted opaque, like a response
    // stream mode could not decode.
    if !answer_prefix.is_empty() && ex.test.is_none() && ex.endpoint.is_some() {
        ex.response_opaque = true;
    }
    ex
}

/// The report's sample for one answered request; `protocol`: `--protocol`, else chosen by the
/// target's port.
pub fn raw_sample(protocol: Protocol, a: &RawAnswer<'_>) -> RequestSample {
    RequestSample {
        session: a.session,
        sent_at: a.sent_at,
        latency: Some(a.latency),
        outcome: Some(Outcome::Answered),
        request_preview: a.request[..a.request.len().min(96)].to_vec(),
        exchange: (protocol != Protocol::Tcp).then(|| {
            raw_exchange(
                protocol,
                a.request,
                a.answer_prefix,
                a.production.map(|p| p.prefix),
            )
        }),
        production: a.production.map(|p| ProductionSample {
            latency: p.latency,
            ttlb: p.latency,
            bytes_in: 0,
            at: p.at,
        }),
        ..Default::default()
    }
}

/// The report's sample for a request the target never answered: its endpoint, and as its
/// error class stream mode's name for how the session ended (`reset`, `timed_out`,
/// `closed`); a session the capture ended first is no error of the target's (counted
/// unanswered).
pub fn raw_unanswered_sample(protocol: Protocol, u: &RawUnanswered<'_>) -> RequestSample {
    RequestSample {
        session: u.session,
        sent_at: u.sent_at,
        outcome: Some(match u.why {
            Unanswered::Reset => Outcome::Reset,
            Unanswered::TimedOut => Outcome::TimedOut,
            Unanswered::Closed => Outcome::Closed,
            Unanswered::Cut => Outcome::Unanswered,
        }),
        request_preview: u.request[..u.request.len().min(96)].to_vec(),
        exchange: (protocol != Protocol::Tcp).then(|| raw_exchange(protocol, u.request, b"", None)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_from_a_prefix_cut_inside_the_headers() {
        let ex = raw_exchange(
            Protocol::Http,
            b"GET /users/42 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HTTP/1.1 500 Internal Server Error\r\nServer: nginx\r\nDate: Sat, 05 De",
            Some(b"HTTP/1.1 200 OK\r\nServer: ngi"),
        );
        assert_eq!(ex.production.as_ref().map(|p| p.error), Some(false));
        assert_eq!(ex.endpoint.as_deref(), Some("GET /users/{id}"));
        let t = ex.test.unwrap();
        assert_eq!(t.class, "500");
        assert!(t.error);
        assert!(!ex.response_opaque);
        let ok = raw_exchange(
            Protocol::Http,
            b"GET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nCont",
            None,
        );
        assert_eq!(ok.test.as_ref().map(|t| t.error), Some(false));
    }

    #[test]
    fn redis_error_prefix_and_plain_replies() {
        // Not a reply at all: no class, counted opaque.
        let ex = raw_exchange(
            Protocol::Redis,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"HTTP/1.1 200 OK\r\n",
            None,
        );
        assert!(ex.test.is_none());
        assert!(ex.response_opaque);
        // The error line runs past the prefix: its prefix word is still there.
        let ex = raw_exchange(
            Protocol::Redis,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"-WRONGTYPE Operation against a k",
            None,
        );
        assert_eq!(ex.endpoint.as_deref(), Some("GET"));
        let t = ex.test.unwrap();
        assert!(t.error);
        assert_eq!(t.class, "WRONGTYPE");
        let ok = raw_exchange(
            Protocol::Redis,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"$5\r\nhel",
            None,
        );
        assert_eq!(ok.test.map(|t| t.error), Some(false));
    }

    #[test]
    fn without_a_prefix_the_endpoint_still_counts() {
        let s = raw_sample(
            Protocol::Http,
            &RawAnswer {
                session: 1,
                sent_at: Duration::from_millis(5),
                latency: Duration::from_millis(2),
                request: b"POST /orders HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
                answer_prefix: b"",
                production: None,
            },
        );
        let ex = s.exchange.unwrap();
        assert_eq!(ex.endpoint.as_deref(), Some("POST /orders"));
        assert!(ex.test.is_none());
        assert!(!ex.response_opaque);
        assert!(raw_sample(
            Protocol::Tcp,
            &RawAnswer {
                session: 1,
                sent_at: Duration::ZERO,
                latency: Duration::ZERO,
                request: b"x",
                answer_prefix: b"y",
                production: None,
            }
        )
        .exchange
        .is_none());
    }

    #[test]
    fn production_side_of_a_sample_is_the_captures_timing() {
        let s = raw_sample(
            Protocol::Http,
            &RawAnswer {
                session: 7,
                sent_at: Duration::from_millis(900),
                latency: Duration::from_millis(3),
                request: b"GET /users/1 HTTP/1.1\r\n\r\n",
                answer_prefix: b"HTTP/1.1 200 OK\r\n",
                production: Some(RawProduction {
                    at: Duration::from_millis(500),
                    latency: Duration::from_millis(40),
                    prefix: b"HTTP/1.1 404 Not Found\r\n",
                }),
            },
        );
        // Production's latency and time are the capture's, apart from the test's.
        let p = s.production.unwrap();
        assert_eq!(
            (p.latency, p.at),
            (Duration::from_millis(40), Duration::from_millis(500))
        );
        assert_eq!(s.latency, Some(Duration::from_millis(3)));
        let ex = s.exchange.unwrap();
        assert_eq!(ex.production.map(|p| p.class).as_deref(), Some("404"));
        assert_eq!(ex.test.map(|t| t.error), Some(false));
    }

    #[test]
    fn unanswered_requests_have_their_endpoint_and_an_error_class() {
        use crate::report::verdict::{evaluate, Rule};
        use crate::report::Collector;
        let mut c = Collector::new("raw", None).unwrap();
        let orders = b"GET /orders HTTP/1.1\r\nHost: x\r\n\r\n";
        c.record(raw_sample(
            Protocol::Http,
            &RawAnswer {
                session: 1,
                sent_at: Duration::from_millis(1),
                latency: Duration::from_millis(2),
                request: orders,
                answer_prefix: b"HTTP/1.1 200 OK\r\n",
                production: None,
            },
        ));
        for (session, why) in [
            (2, Unanswered::TimedOut),
            (3, Unanswered::Reset),
            (4, Unanswered::Closed),
            (5, Unanswered::Cut),
        ] {
            c.record(raw_unanswered_sample(
                Protocol::Http,
                &RawUnanswered {
                    session,
                    sent_at: Duration::from_millis(5),
                    request: orders,
                    why,
                },
            ));
        }
        let users = RawUnanswered {
            session: 6,
            sent_at: Duration::from_millis(6),
            request: b"GET /users/9 HTTP/1.1\r\n\r\n",
            why: Unanswered::Cut,
        };
        c.record(raw_unanswered_sample(Protocol::Http, &users));
        let r = c.finish(Duration::from_secs(1));
        let ep = |n: &str| r.endpoints.iter().find(|e| e.endpoint == n).unwrap();
        let o = &ep("GET /orders").test;
        assert_eq!((o.requests, o.errors), (5, 3));
        for class in ["timed_out", "reset", "closed"] {
            assert_eq!(o.errors_by_class.get(class), Some(&1), "{class}");
        }
        // Cut short by the capture: counted under its endpoint, no error of the target's.
        let u = &ep("GET /users/{id}").test;
        assert_eq!((u.requests, u.errors), (1, 0));
        let rules = [
            Rule::parse("endpoint=GET /orders: errors > 0").unwrap(),
            Rule::parse("endpoint=GET /users/*: errors > 0").unwrap(),
        ];
        let v = evaluate(&rules, &r);
        assert_eq!(
            v.iter().map(|v| v.failed).collect::<Vec<_>>(),
            [true, false],
            "{v:?}"
        );
        // Nothing to decode in plain TCP: no endpoint, the class still counts.
        let tcp = raw_unanswered_sample(Protocol::Tcp, &users);
        assert!(tcp.exchange.is_none());
        assert_eq!(tcp.outcome, Some(Outcome::Unanswered));
    }
}
