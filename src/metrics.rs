//! Prometheus metrics for the tools (feature `metrics`): a scrape-time collector over the
//! counters the tools already keep, and a small HTTP server that answers `GET /metrics`.
//!
//! The tools do not count twice: each registers one [`Snapshot`] closure that reads its
//! atomics and published engine figures when Prometheus scrapes, so a scrape costs the data
//! path nothing. The text is the Prometheus exposition format (0.0.4), encoded by the
//! `prometheus-client` crate; HTTP is `tiny_http`'s. The server binds the one address it is
//! given and serves nothing but `/metrics`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// Errors of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listening socket could not be opened.
    #[error("--metrics {addr}: cannot listen: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why (from the HTTP server).
        reason: String,
    },
    /// The serving thread could not be started.
    #[error("--metrics: cannot start the server thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Labels of one sample, e.g. `[("worker", "0")]`.
pub type Labels = Vec<(&'static str, String)>;

/// A classic histogram's state at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSample {
    /// Sum of the observed values.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound, observations in this bucket alone)`, ascending, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSample {
    /// Builds one from observations already put in buckets by their upper bounds:
    /// `counts[i]` observations were at most `bounds[i]` (and above `bounds[i-1]`); `overflow`
    /// were above the last bound.
    pub fn from_buckets(sum: f64, bounds: &[f64], counts: &[u64], overflow: u64) -> Self {
        let mut buckets: Vec<(f64, u64)> =
            bounds.iter().copied().zip(counts.iter().copied()).collect();
        buckets.push((f64::INFINITY, overflow));
        let count = buckets.iter().map(|b| b.1).sum();
        HistogramSample {
            sum,
            count,
            buckets,
        }
    }
}

/// The values of one metric family at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// A monotonic counter, one value per label set (`_total` is added to the name).
    Counter(Vec<(Labels, u64)>),
    /// A value that goes up and down, one per label set.
    Gauge(Vec<(Labels, i64)>),
    /// A histogram, one per label set.
    Histogram(Vec<(Labels, HistogramSample)>),
    /// A monotonic counter of seconds, fractional (CPU time), one per label set (`_total` is
    /// added to the name).
    Seconds(Vec<(Labels, f64)>),
}

/// One metric family: its name (without `_total`), its HELP text and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Full name, e.g. `tcpclone_tcpcopy_captured_frames` (a counter gets `_total`).
    pub name: &'static str,
    /// HELP text: which stage of the pipeline this counts.
    pub help: &'static str,
    /// The samples.
    pub values: Values,
}

/// What a scrape returns: the families, built by the tool from its own counters.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Families in the order they are shown.
    pub families: Vec<Family>,
}

impl Snapshot {
    /// Adds an unlabelled counter.
    pub fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.families.push(Family {
            name,
            help,
            values: Values::Counter(vec![(Vec::new(), v)]),
        });
    }

    /// Adds an unlabelled gauge.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, v: i64) {
        self.families.push(Family {
            name,
            help,
            values: Values::Gauge(vec![(Vec::new(), v)]),
        });
    }

    /// Adds a counter with one value per worker (label `worker="i"`).
    pub fn counter_per_worker(&mut self, name: &'static str, help: &'static str, v: &[u64]) {
        self.families.push(Family {
            name,
            help,
            values: Values::Counter(v.iter().enumerate().map(|(i, &x)| (worker(i), x)).collect()),
        });
    }

    /// Adds an unlabelled counter of seconds.
    pub fn seconds(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.families.push(Family {
            name,
            help,
            values: Values::Seconds(vec![(Vec::new(), v)]),
        });
    }

    /// Adds a counter of seconds with one value per worker (label `worker="i"`).
    pub fn seconds_per_worker(&mut self, name: &'static str, help: &'static str, v: &[f64]) {
        self.families.push(Family {
            name,
            help,
            values: Values::Seconds(v.iter().enumerate().map(|(i, &x)| (worker(i), x)).collect()),
        });
    }

    /// Adds the process's CPU time as `process_cpu_seconds_total`, the name Prometheus's own
    /// clients give it, so that dashboards built for them read it as they are.
    fn process_cpu(&mut self) {
        self.seconds(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds (all threads)",
            crate::sys::process_cpu_time().as_secs_f64(),
        );
    }

    /// Adds a gauge with one value per worker (label `worker="i"`).
    pub fn gauge_per_worker(&mut self, name: &'static str, help: &'static str, v: &[i64]) {
        self.families.push(Family {
            name,
            help,
            values: Values::Gauge(v.iter().enumerate().map(|(i, &x)| (worker(i), x)).collect()),
        });
    }

    /// Adds a histogram with one value per worker (label `worker="i"`).
    pub fn histogram_per_worker(
        &mut self,
        name: &'static str,
        help: &'static str,
        v: Vec<HistogramSample>,
    ) {
        self.families.push(Family {
            name,
            help,
            values: Values::Histogram(
                v.into_iter()
                    .enumerate()
                    .map(|(i, h)| (worker(i), h))
                    .collect(),
            ),
        });
    }

    /// Adds an unlabelled histogram.
    pub fn histogram(&mut self, name: &'static str, help: &'static str, h: HistogramSample) {
        self.families.push(Family {
            name,
            help,
            values: Values::Histogram(vec![(Vec::new(), h)]),
        });
    }
}

fn worker(i: usize) -> Labels {
    vec![("worker", i.to_string())]
}

/// Reads the tool's counters at each scrape.
type SnapshotFn = dyn Fn() -> Snapshot + Send + Sync;

/// A [`Collector`] calling a tool's snapshot function at every scrape.
struct FnCollector(Box<SnapshotFn>);

impl std::fmt::Debug for FnCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCollector")
    }
}

impl Collector for FnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in (self.0)().families {
            match &fam.values {
                Values::Counter(v) => {
                    let mut m =
                        encoder.encode_descriptor(fam.name, fam.help, None, MetricType::Counter)?;
                    for (labels, x) in v {
                        ConstCounter::new(*x).encode(m.encode_family(labels)?)?;
                    }
                }
                Values::Seconds(v) => {
                    let mut m =
                        encoder.encode_descriptor(fam.name, fam.help, None, MetricType::Counter)?;
                    for (labels, x) in v {
                        ConstCounter::new(*x).encode(m.encode_family(labels)?)?;
                    }
                }
                Values::Gauge(v) => {
                    let mut m =
                        encoder.encode_descriptor(fam.name, fam.help, None, MetricType::Gauge)?;
                    for (labels, x) in v {
                        ConstGauge::new(*x).encode(m.encode_family(labels)?)?;
                    }
                }
                Values::Histogram(v) => {
                    let mut m = encoder.encode_descriptor(
                        fam.name,
                        fam.help,
                        None,
                        MetricType::Histogram,
                    )?;
                    for (labels, h) in v {
                        m.encode_family(labels)?
                            .encode_histogram::<Labels>(h.sum, h.count, &h.buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A registry holding one tool's snapshot function, plus the process's CPU time
/// (`process_cpu_seconds_total`: what the tool costs its host) and a `tcpclone_build_info`
/// gauge.
pub fn registry(
    version: &'static str,
    commit: &'static str,
    snapshot: impl Fn() -> Snapshot + Send + Sync + 'static,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(FnCollector(Box::new(move || {
        let mut s = snapshot();
        s.process_cpu();
        s.families.push(Family {
            name: "tcpclone_build_info",
            help: "Always 1: the version and git commit of the running binary",
            values: Values::Gauge(vec![(
                vec![
                    ("version", version.to_string()),
                    ("commit", commit.to_string()),
                ],
                1,
            )]),
        });
        s
    }))));
    r
}

/// The registry's text, as `GET /metrics` answers it.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a family's shape.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        out = format!("# encoding error: {e}\n");
    }
    out
}

/// The HTTP server answering `GET /metrics`; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsServer {
    /// Listens on `addr` (that address only) and serves `registry` on a thread of its own.
    pub fn start(addr: SocketAddr, registry: Registry) -> Result<Self, MetricsError> {
        let server = tiny_http::Server::http(addr).map_err(|e| MetricsError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&s, &registry))?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on (the port chosen by the kernel for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = match (req.method(), path) {
            (tiny_http::Method::Get, "/metrics") => {
                let ct = tiny_http::Header::from_bytes(
                    &b"Content-Type"[..],
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE.as_bytes(),
                )
                .expect("a valid header");
                tiny_http::Response::from_string(render(registry)).with_header(ct)
            }
            (tiny_http::Method::Get, _) => {
                tiny_http::Response::from_string("only /metrics is served\n").with_status_code(404)
            }
            _ => tiny_http::Response::from_string("only GET\n").with_status_code(405),
        };
        // A client that went away is its own problem.
        let _ = req.respond(resp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        registry("1.2.3", "abc", || {
            let mut s = Snapshot::default();
            s.counter("tcpclone_test_sent_packets", "Packets sent (send stage)", 7);
            s.gauge_per_worker("tcpclone_test_sessions", "Live sessions (engine)", &[2, 3]);
            s.seconds_per_worker("tcpclone_test_worker_cpu_seconds", "CPU", &[0.25, 1.5]);
            s.histogram(
                "tcpclone_test_latency_seconds",
                "Latency",
                HistogramSample::from_buckets(0.3, &[0.001, 0.01], &[1, 2], 1),
            );
            s
        })
    }

    #[test]
    fn text_names_counters_total_and_labels_workers() {
        let t = render(&sample());
        assert!(
            t.contains("# TYPE tcpclone_test_sent_packets_total counter\n"),
            "{t}"
        );
        assert!(t.contains("tcpclone_test_sent_packets_total 7\n"), "{t}");
        assert!(
            t.contains("tcpclone_test_sessions{worker=\"1\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("tcpclone_test_latency_seconds_bucket{le=\"0.01\"} 3\n"),
            "{t}"
        );
        assert!(
            t.contains("tcpclone_test_latency_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{t}"
        );
        assert!(t.contains("tcpclone_test_latency_seconds_count 4\n"), "{t}");
        assert!(
            t.contains("# TYPE tcpclone_test_worker_cpu_seconds_total counter\n")
                && t.contains("tcpclone_test_worker_cpu_seconds_total{worker=\"0\"} 0.25\n")
                && t.contains("tcpclone_test_worker_cpu_seconds_total{worker=\"1\"} 1.5\n"),
            "{t}"
        );
        // The test process has run: its CPU time is a positive number of seconds.
        let cpu = t
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(cpu.is_some_and(|c| c > 0.0), "{t}");
        assert!(
            t.contains("tcpclone_build_info{version=\"1.2.3\",commit=\"abc\"} 1\n"),
            "{t}"
        );
    }

    #[test]
    fn server_answers_metrics_and_404_elsewhere() {
        use std::io::{Read, Write};
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), sample()).unwrap();
        let get = |path: &str| {
            let mut c = std::net::TcpStream::connect(srv.local_addr()).unwrap();
            write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        let ok = get("/metrics");
        assert!(
            ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"),
            "{ok}"
        );
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.contains("tcpclone_test_sent_packets_total 7"), "{ok}");
        let nf = get("/");
        assert!(nf.contains(" 404 "), "{nf}");
        drop(srv);
    }

    #[test]
    fn bind_error_names_the_address() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        let e = MetricsServer::start(addr, sample())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&addr.to_string()), "{e}");
    }
}
