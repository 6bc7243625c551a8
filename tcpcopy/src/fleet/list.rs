//! `--list`: what a stream holds (sessions, time span, payload bytes, capturing hosts), read
//! through an ephemeral consumer that acknowledges nothing. Payload bytes are never logged.

use super::from::fetch;
use super::nats::{self, BrokerSecrets};
use super::plan::{self, BrokerUrl};
use super::wire::{self, FleetRecord};
use async_nats::jetstream::{self, consumer};
use std::collections::BTreeSet;
use std::time::Duration;

/// `--list`: what the stream holds.
pub fn list(url: &BrokerUrl, secrets: &BrokerSecrets) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = nats::connect(url, secrets, "list").await?;
        let js = jetstream::new(client);
        let mut st = nats::open_stream(&js, url).await?;
        let info = st
            .info()
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", url.stream))?
            .clone();
        let c = st
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{}.p.>", url.stream),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", url.stream))?;
        let mut sessions = BTreeSet::new();
        let mut closed = 0u64;
        let mut hosts = BTreeSet::new();
        let (mut first, mut last) = (u64::MAX, 0u64);
        let (mut messages, mut foreign, mut payload) = (0u64, 0u64, 0u64);
        loop {
            let batch = fetch(&c).await?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                messages += 1;
                let Ok(p) = wire::decode(&m.payload) else {
                    foreign += 1;
                    continue;
                };
                sessions.insert(p.session);
                for r in &p.records {
                    match r {
                        FleetRecord::Open { ts, host, .. } => {
                            first = first.min(*ts);
                            last = last.max(*ts);
                            hosts.insert(host.clone());
                        }
                        FleetRecord::Data { bytes, ts, .. } => {
                            payload += bytes.len() as u64;
                            last = last.max(*ts);
                        }
                        FleetRecord::Close { ts, .. } => {
                            closed += 1;
                            last = last.max(*ts);
                        }
                        FleetRecord::Fin { .. } => {}
                    }
                }
            }
        }
        let span = if first <= last {
            format!(
                "{} .. {} ({:.1} s)",
                plan::format_time(first),
                plan::format_time(last),
                (last - first) as f64 / 1e9
            )
        } else {
            "empty".into()
        };
        Ok(format!(
            "stream {} at {}: {} messages ({} bytes stored, {} replicas)\n\
             sessions: {} ({} whole), payload {} bytes\n\
             capture time: {}\n\
             hosts: {}\n\
             foreign messages: {}\n",
            url.stream,
            url.server,
            messages,
            info.state.bytes,
            info.config.num_replicas,
            sessions.len(),
            closed,
            payload,
            span,
            hosts.into_iter().collect::<Vec<_>>().join(", "),
            foreign,
        ))
    })
}
