//! The broker side: connecting to NATS (credentials, TLS), the stream, its consumers and the
//! replay's start time. Async glue around async-nats; no decisions about sessions here.

use super::plan::BrokerUrl;
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use std::path::Path;
use std::time::Duration;

/// `--nats-creds` and `--nats-tls-ca`, read (they may be readable by root alone).
#[derive(Clone, Default)]
pub struct BrokerSecrets {
    creds: Option<String>,
    /// Where the credentials came from (named when the broker refuses them).
    creds_path: Option<std::path::PathBuf>,
    ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for BrokerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials themselves.
        f.debug_struct("BrokerSecrets")
            .field("creds", &self.creds.is_some())
            .field("ca", &self.ca.is_some())
            .finish()
    }
}

impl BrokerSecrets {
    /// Reads the files named.
    pub fn read(creds: Option<&Path>, ca: Option<&Path>) -> anyhow::Result<Self> {
        let creds_path = creds;
        let creds = creds
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("--nats-creds {}: cannot read", p.display()))
            })
            .transpose()?;
        let ca = ca
            .map(|p| {
                std::fs::read(p)
                    .with_context(|| format!("--nats-tls-ca {}: cannot read", p.display()))
            })
            .transpose()?;
        Ok(BrokerSecrets {
            creds,
            creds_path: creds_path.map(Path::to_path_buf),
            ca,
        })
    }
}

/// Connects to the broker of `url`; the error names the address. Warns once when the
/// connection has neither credentials nor TLS (the stream holds production payloads).
pub async fn connect(
    url: &BrokerUrl,
    secrets: &BrokerSecrets,
    role: &str,
) -> anyhow::Result<async_nats::Client> {
    let mut o = async_nats::ConnectOptions::new()
        .name(format!("tcpcopy {role}"))
        .connection_timeout(Duration::from_secs(5));
    if let Some(c) = &secrets.creds {
        let path = secrets
            .creds_path
            .as_deref()
            .map(|p| format!(" {}", p.display()))
            .unwrap_or_default();
        o = o.credentials(c).map_err(|e| {
            anyhow::anyhow!(
                "--nats-creds{path}: not a NATS credentials file (a user JWT and nkey seed): {e}"
            )
        })?;
    }
    if let Some(pem) = &secrets.ca {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.context("--nats-tls-ca: not a PEM certificate")?;
            roots
                .add(cert)
                .context("--nats-tls-ca: unusable certificate")?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "--nats-tls-ca: no certificate in the file"
        );
        let cfg = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .context("TLS to NATS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        o = o.tls_client_config(cfg).require_tls(true);
    } else if url.tls {
        o = o.require_tls(true);
    }
    if secrets.creds.is_none() && secrets.ca.is_none() && !url.tls {
        eprintln!(
            "tcpcopy: warning: NATS at {} without --nats-creds or --nats-tls-ca: the recorded \
             production payloads cross the network in clear and anyone reaching the broker reads them",
            url.server
        );
    }
    o.connect(url.server.as_str()).await.map_err(|e| {
        use async_nats::ConnectErrorKind as Kind;
        match (e.kind(), &secrets.creds_path) {
            // The broker answered and refused who we are: the credentials, not the network.
            (Kind::AuthorizationViolation | Kind::Authentication, Some(p)) => anyhow::anyhow!(
                "--nats-creds {}: NATS at {} refused these credentials ({})",
                p.display(),
                url.server,
                e.kind()
            ),
            _ => anyhow::anyhow!("cannot reach NATS at {}: {e}", url.server),
        }
    })
}

/// rustls's ring provider, as async-nats is built with (deprecated in rustls for lacking
/// post-quantum key exchange; aws-lc-rs's C build is heavy, see stream::tls).
#[allow(deprecated)]
fn ring_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The stream's settings for `--record` when it does not exist yet.
#[derive(Debug, Clone)]
pub struct NewStream {
    /// Partition subjects.
    pub partitions: u32,
    /// Replicas.
    pub replicas: usize,
    /// Age limit.
    pub max_age: Option<Duration>,
    /// Size limit.
    pub max_bytes: Option<i64>,
}

/// The stream's configuration for a new recording.
pub fn stream_config(url: &BrokerUrl, n: &NewStream) -> stream::Config {
    stream::Config {
        name: url.stream.clone(),
        subjects: vec![
            format!("{}.p.*", url.stream),
            format!("{}.ctl.>", url.stream),
        ],
        num_replicas: n.replicas,
        max_age: n.max_age.unwrap_or_default(),
        max_bytes: n.max_bytes.unwrap_or(-1),
        storage: stream::StorageType::File,
        // Re-sends after a lost acknowledgement are dropped by message id within this window.
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        // Read back by the workers (fleet::from): which partitions exist.
        description: Some(format!(
            "tcpclone recording (format v{}), partitions={}",
            super::wire::VERSION,
            n.partitions
        )),
        ..Default::default()
    }
}

/// Opens the stream, creating it when absent (else it is used as it is).
pub async fn ensure_stream(
    js: &jetstream::Context,
    url: &BrokerUrl,
    n: &NewStream,
) -> anyhow::Result<stream::Stream> {
    match js.get_stream(&url.stream).await {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(_)
            ) =>
        {
            js.create_stream(stream_config(url, n)).await.map_err(|e| {
                anyhow::anyhow!("creating stream {} at {}: {e}", url.stream, url.server)
            })
        }
        Err(e) => Err(anyhow::anyhow!(
            "stream {} at {}: {e}",
            url.stream,
            url.server
        )),
    }
}

/// Opens an existing stream (`--from`); the error says when it is missing.
pub async fn open_stream(
    js: &jetstream::Context,
    url: &BrokerUrl,
) -> anyhow::Result<stream::Stream> {
    js.get_stream(&url.stream)
        .await
        .map_err(|e| anyhow::anyhow!("stream {} at {}: {e}", url.stream, url.server))
}

/// The durable consumer of partition `p` for replay `replay` (a 2.9 server filters one subject
/// per consumer, so each partition has its own; its worker is the one with p mod N = K).
pub async fn partition_consumer(
    s: &stream::Stream,
    url: &BrokerUrl,
    replay: &str,
    p: u32,
    ack_wait: Duration,
) -> anyhow::Result<consumer::PullConsumer> {
    let name = format!("{replay}-p{p}");
    s.get_or_create_consumer(
        &name,
        consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: url.subject(p),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait,
            max_deliver: -1,
            max_ack_pending: 20_000,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("consumer {name} on stream {}: {e}", url.stream))
}

/// The replay's common start (ns since the epoch, wall clock): the first worker publishes its
/// proposal on `STREAM.ctl.start.<replay>` (only if that subject is still empty: the broker
/// refuses the others' proposals), every worker then reads what is there.
pub async fn agree_start(
    js: &jetstream::Context,
    s: &stream::Stream,
    url: &BrokerUrl,
    replay: &str,
    proposal: u64,
) -> anyhow::Result<u64> {
    let subject = url.start_subject(replay);
    let body = proposal.to_string();
    let published = js
        .send_publish(
            subject.clone(),
            jetstream::message::PublishMessage::build()
                .payload(body.into())
                .expected_last_subject_sequence(0),
        )
        .await;
    // A refusal means another worker was first: read its value.
    if let Ok(ack) = published {
        let _ = ack.await;
    }
    let m = s
        .get_last_raw_message_by_subject(&subject)
        .await
        .map_err(|e| anyhow::anyhow!("reading {subject}: {e}"))?;
    let text = std::str::from_utf8(&m.payload).unwrap_or("");
    text.trim()
        .parse::<u64>()
        .map_err(|_| anyhow::anyhow!("{subject}: not a start time (foreign message)"))
}
