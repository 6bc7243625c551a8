//! Fleet mode: record reassembled sessions into a NATS JetStream stream (`--record`), replay
//! them from a fleet of workers (`--from ... --worker K/N`), and list what a stream holds
//! (`--list`).
//!
//! Layers: [`wire`] (pure: the versioned message format), [`plan`] (pure: flag values, worker
//! partitions), [`assemble`] (pure: a session from its parts), [`nats`] (connecting, the
//! stream and its consumers), [`record`] (the recorder hooked into stream mode's reader),
//! [`from`] (the worker loop that feeds stream mode's replayer), [`done`] (a replayed
//! session's acknowledgement and sent mark) and [`list`] (`--list`). Payload bytes are never
//! logged.

pub mod assemble;
pub mod done;
pub mod from;
pub mod list;
pub mod nats;
pub mod plan;
pub mod record;
pub mod wire;

use std::path::PathBuf;

pub use plan::{BrokerUrl, WorkerSpec};

/// The flags of fleet mode (part of stream mode's flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FleetOptions {
    /// Record the captured sessions into JetStream stream STREAM instead of replaying them
    /// (live or --offline): nats://HOST:PORT/STREAM.
    #[arg(long, value_name = "nats://HOST:PORT/STREAM", conflicts_with = "from")]
    pub record: Option<String>,
    /// Replay the sessions recorded in a JetStream stream: nats://HOST:PORT/STREAM.
    #[arg(long, value_name = "nats://HOST:PORT/STREAM")]
    pub from: Option<String>,
    /// With --from: this worker's share, K of N (partitions p with p mod N = K).
    #[arg(long, value_name = "K/N")]
    pub worker: Option<String>,
    /// With --from: print what the stream holds (sessions, time span, bytes, hosts) and exit.
    #[arg(long)]
    pub list: bool,
    /// With --record: subjects STREAM.p.0 .. STREAM.p.(P-1) of a new stream.
    #[arg(long, value_name = "P", default_value_t = 64)]
    pub partitions: u32,
    /// With --record: replicas of a new stream (a JetStream cluster).
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub replicas: usize,
    /// With --record: a new stream's message age limit (e.g. 7d, 12h, 90s; default none).
    #[arg(long, value_name = "AGE")]
    pub max_age: Option<String>,
    /// With --record: a new stream's size limit (e.g. 10G, 500M; default none).
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<String>,
    /// With --from: when the workers start replaying (RFC 3339 or Unix seconds; default: when
    /// the first worker starts, published on the stream for the others).
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// With --from: replay only sessions opened at or after TIME (RFC 3339 or Unix seconds).
    #[arg(long, value_name = "TIME")]
    pub from_time: Option<String>,
    /// With --from: replay only sessions opened before TIME (RFC 3339 or Unix seconds).
    #[arg(long, value_name = "TIME")]
    pub to_time: Option<String>,
    /// With --from: names the replay (its durable consumers and its start time); a new name
    /// replays the stream again from its start.
    #[arg(long, value_name = "NAME", default_value = "replay")]
    pub replay_name: String,
    /// With --from: seconds before an unacknowledged session goes to another worker.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub ack_wait: f64,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server with; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// The files above, read before privileges are dropped.
    #[arg(skip)]
    pub preloaded: Option<nats::BrokerSecrets>,
}

impl FleetOptions {
    /// Whether any fleet flag asks for fleet mode.
    pub fn active(&self) -> bool {
        self.record.is_some() || self.from.is_some()
    }

    /// Checks the flags' combinations and values; the error names the flag.
    pub fn validate(&self, offline: bool) -> Result<plan::Checked, plan::FleetFlagError> {
        plan::check(self, offline)
    }

    /// Reads --nats-creds and --nats-tls-ca now (before the drop to --user).
    pub fn preload(&mut self) -> anyhow::Result<()> {
        self.preloaded = Some(nats::BrokerSecrets::read(
            self.nats_creds.as_deref(),
            self.nats_tls_ca.as_deref(),
        )?);
        Ok(())
    }
}

/// What fleet mode plugs into stream mode's replayer for one run.
pub struct Hooks {
    /// `--record`: the recorder the reader hands its sessions to.
    pub recorder: Option<record::Recorder>,
    /// `--from`: the worker that replaces the capture.
    pub worker: Option<(from::WorkerSettings, nats::BrokerSecrets)>,
}

impl Hooks {
    /// Checks the fleet flags and connects (`--record`: to create the stream; the error names
    /// the broker's address).
    pub fn new(
        opts: &crate::stream::StreamOptions,
        common: &crate::stream::StreamCommon,
        live: bool,
        handle: &tokio::runtime::Handle,
    ) -> anyhow::Result<Hooks> {
        let f = &opts.fleet;
        if !f.active() {
            return Ok(Hooks {
                recorder: None,
                worker: None,
            });
        }
        let offline = matches!(common.source, crate::stream::StreamSource::Offline(_));
        let checked = f.validate(offline).map_err(|e| anyhow::anyhow!("{e}"))?;
        let secrets = match &f.preloaded {
            Some(s) => s.clone(),
            None => nats::BrokerSecrets::read(f.nats_creds.as_deref(), f.nats_tls_ca.as_deref())?,
        };
        match checked {
            plan::Checked::Record {
                url,
                partitions,
                replicas,
                max_age,
                max_bytes,
            } => {
                let s = record::RecordSettings {
                    url,
                    stream: nats::NewStream {
                        partitions,
                        replicas,
                        max_age,
                        max_bytes,
                    },
                    with_responses: opts.with_responses,
                    live,
                    queue_bytes: opts.queue_mb.max(1) << 20,
                };
                Ok(Hooks {
                    recorder: Some(record::Recorder::start(s, &secrets, handle)?),
                    worker: None,
                })
            }
            plan::Checked::From {
                url,
                list,
                worker,
                start_at,
                from_time,
                to_time,
                replay_name,
                ack_wait,
            } => {
                anyhow::ensure!(
                    !list,
                    "--list: run on its own (tcpcopy --stream --from URL --list)"
                );
                Ok(Hooks {
                    recorder: None,
                    worker: Some((
                        from::WorkerSettings {
                            url,
                            worker,
                            start_at,
                            from_time,
                            to_time,
                            replay_name,
                            ack_wait,
                            timed: !opts.topspeed,
                            mappings: common.mappings.clone(),
                            force: common.force,
                        },
                        secrets,
                    )),
                })
            }
        }
    }
}

/// `--from`: runs the worker in place of the capture, then prints its line.
pub fn run_worker<D: from::Dispatch>(
    d: &mut D,
    w: &(from::WorkerSettings, nats::BrokerSecrets),
    _opts: &crate::stream::StreamOptions,
    handle: &tokio::runtime::Handle,
    stop: &std::sync::atomic::AtomicBool,
    counters: std::sync::Arc<from::WorkerCounters>,
) -> anyhow::Result<()> {
    let counters = from::run(d, &w.0, &w.1, handle, stop, counters)?;
    println!("{}", counters.summary(&w.0.url, w.0.worker));
    Ok(())
}

/// What a run replays, for its report ([`crate::report::Report::source`]; `report merge`
/// refuses to merge reports of different sources): a worker names its stream and replay (not
/// the broker's address, which differs between the nodes of a cluster), a file its name.
pub fn report_source(
    worker: Option<&(from::WorkerSettings, nats::BrokerSecrets)>,
    source: &crate::stream::StreamSource,
) -> String {
    use crate::stream::StreamSource;
    match (worker, source) {
        (Some((w, _)), _) => format!("jetstream {} (replay {})", w.url.stream, w.replay_name),
        (None, StreamSource::Offline(p)) => format!(
            "offline {}",
            p.file_name().unwrap_or(p.as_os_str()).to_string_lossy()
        ),
        (None, StreamSource::Live { interfaces, .. }) if interfaces.is_empty() => {
            "live any".to_string()
        }
        (None, StreamSource::Live { interfaces, .. }) => format!("live {}", interfaces.join(",")),
    }
}

/// `--record`: delivers what is queued, then prints what was recorded.
pub fn finish_recorder(rec: record::Recorder, opts: &crate::stream::StreamOptions) {
    let url = opts
        .fleet
        .record
        .as_deref()
        .and_then(|u| BrokerUrl::parse(u).ok());
    let counters = rec.finish();
    if let Some(url) = url {
        println!("{}", record::Recorder::summary(&url, &counters));
    }
}

/// `tcpcopy --stream --from URL --list`: prints what the stream holds.
pub fn list(opts: &FleetOptions) -> anyhow::Result<()> {
    let url = match opts.validate(false).map_err(|e| anyhow::anyhow!("{e}"))? {
        plan::Checked::From { url, .. } => url,
        plan::Checked::Record { .. } => anyhow::bail!("--list: with --from, not --record"),
    };
    let secrets = match &opts.preloaded {
        Some(s) => s.clone(),
        None => nats::BrokerSecrets::read(opts.nats_creds.as_deref(), opts.nats_tls_ca.as_deref())?,
    };
    print!("{}", list::list(&url, &secrets)?);
    Ok(())
}
