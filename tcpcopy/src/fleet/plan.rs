//! Pure parts of fleet mode: the flag values (broker URLs, `--worker K/N`, times, sizes), the
//! checks of their combinations. No sockets, no clocks. (A session's assembly from its parts:
//! [`super::assemble`].)

pub use super::assemble::{well_formed, Assembled, Assembler};
use super::FleetOptions;
use std::time::Duration;
use thiserror::Error;

/// A bad fleet flag: which, and why (printed as one line by the binary).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{flag}: {why}")]
pub struct FleetFlagError {
    /// The flag.
    pub flag: &'static str,
    /// What is wrong.
    pub why: String,
}

fn bad(flag: &'static str, why: impl Into<String>) -> FleetFlagError {
    FleetFlagError {
        flag,
        why: why.into(),
    }
}

/// `nats://HOST:PORT/STREAM` (or `tls://`), split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `HOST:PORT`, as the client is given it.
    pub server: String,
    /// Whether the URL asked for TLS (`tls://`).
    pub tls: bool,
    /// The stream's name.
    pub stream: String,
}

impl BrokerUrl {
    /// Parses a `--record`/`--from` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("nats://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("tls://") {
            (true, r)
        } else {
            return Err(format!("`{s}`: expected nats://HOST:PORT/STREAM"));
        };
        let (server, stream) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: no /STREAM after the server"))?;
        if server.is_empty() || !server.contains(':') {
            return Err(format!("`{s}`: the server must be HOST:PORT"));
        }
        let ok = !stream.is_empty()
            && stream.len() <= 64
            && stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(format!(
                "`{s}`: the stream name must be 1-64 letters, digits, '_' or '-'"
            ));
        }
        Ok(BrokerUrl {
            server: server.to_string(),
            tls,
            stream: stream.to_string(),
        })
    }

    /// The subject of partition `p`.
    pub fn subject(&self, p: u32) -> String {
        format!("{}.p.{p}", self.stream)
    }

    /// The subject of the sent mark of `session` in replay `replay` ([`super::done`]).
    pub fn sent_subject(&self, replay: &str, session: u64) -> String {
        format!("{}.ctl.sent.{replay}.{session}", self.stream)
    }

    /// The subject holding a replay's start time.
    pub fn start_subject(&self, replay: &str) -> String {
        format!("{}.ctl.start.{replay}", self.stream)
    }
}

/// `--worker K/N`: this worker takes the partitions p with p mod N = K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSpec {
    /// This worker's index, 0..N.
    pub k: u32,
    /// How many workers.
    pub n: u32,
}

impl WorkerSpec {
    /// Parses `K/N` (0 <= K < N).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected K/N, e.g. 0/2"))?;
        let k: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: K is not a number"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: N is not a number"))?;
        if n == 0 || k >= n {
            return Err(format!(
                "`{s}`: K must be 0..N-1 (worker 0/{n} is the first)"
            ));
        }
        Ok(WorkerSpec { k, n })
    }

    /// This worker's partitions out of `partitions`.
    pub fn partitions(&self, partitions: u32) -> Vec<u32> {
        (0..partitions).filter(|p| p % self.n == self.k).collect()
    }
}

/// Parses a time: Unix seconds (`1733380000.5`) or RFC 3339 (`2026-12-05T07:00:00Z`), to ns
/// since the epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if (0.0..1e10).contains(&secs) {
            return Ok((secs * 1e9) as u64);
        }
        return Err(format!("`{s}`: not a time"));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{s}`: not Unix seconds or RFC 3339 ({e})"))?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("`{s}`: before 1970"))
}

/// Formats ns since the epoch as RFC 3339 (UTC).
pub fn format_time(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ns}ns"))
}

/// Parses an age like `90s`, `30m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let (num, unit) = split_unit(s);
    let mult = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    let v: f64 = num.parse().map_err(|_| format!("`{s}`: not a number"))?;
    if !(v.is_finite() && v > 0.0 && v * mult < 1e12) {
        return Err(format!("`{s}`: must be positive"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// Parses a size like `500M`, `10G`, `4096` (bytes; K, M, G, T are powers of 1024).
pub fn parse_size(s: &str) -> Result<i64, String> {
    let (num, unit) = split_unit(s);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        _ => return Err(format!("`{s}`: the unit must be K, M, G or T")),
    };
    let v: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a whole number"))?;
    v.checked_shl(shift)
        .filter(|b| *b > 0 && *b >> shift == v)
        .and_then(|b| i64::try_from(b).ok())
        .ok_or_else(|| format!("`{s}`: out of range"))
}

fn split_unit(s: &str) -> (&str, &str) {
    let i = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..i], &s[i..])
}

/// What fleet mode does, its flags checked.
#[derive(Debug, Clone)]
pub enum Checked {
    /// `--record`.
    Record {
        /// Where.
        url: BrokerUrl,
        /// Partitions of a new stream.
        partitions: u32,
        /// Replicas of a new stream.
        replicas: usize,
        /// Age limit of a new stream.
        max_age: Option<Duration>,
        /// Size limit of a new stream.
        max_bytes: Option<i64>,
    },
    /// `--from` (`--list` or a worker).
    From {
        /// Where.
        url: BrokerUrl,
        /// `--list`.
        list: bool,
        /// `--worker` (default 0/1).
        worker: WorkerSpec,
        /// `--start-at` (ns since the epoch).
        start_at: Option<u64>,
        /// `--from-time` (ns since the epoch).
        from_time: Option<u64>,
        /// `--to-time` (ns since the epoch).
        to_time: Option<u64>,
        /// `--replay-name`.
        replay_name: String,
        /// `--ack-wait`.
        ack_wait: Duration,
    },
}

/// Checks the fleet flags (see [`FleetOptions::validate`]).
pub fn check(o: &FleetOptions, offline: bool) -> Result<Checked, FleetFlagError> {
    let from_only = [
        (o.worker.is_some(), "--worker"),
        (o.list, "--list"),
        (o.start_at.is_some(), "--start-at"),
        (o.from_time.is_some(), "--from-time"),
        (o.to_time.is_some(), "--to-time"),
    ];
    let record_only = [
        (o.partitions != 64, "--partitions"),
        (o.replicas != 1, "--replicas"),
        (o.max_age.is_some(), "--max-age"),
        (o.max_bytes.is_some(), "--max-bytes"),
    ];
    if let Some(r) = &o.record {
        if let Some((_, f)) = from_only.iter().find(|(g, _)| *g) {
            return Err(bad(f, "only with --from"));
        }
        let url = BrokerUrl::parse(r).map_err(|e| bad("--record", e))?;
        if !(1..=4096).contains(&o.partitions) {
            return Err(bad("--partitions", "must be 1..=4096"));
        }
        if !(1..=5).contains(&o.replicas) {
            return Err(bad("--replicas", "must be 1..=5 (JetStream's limit)"));
        }
        let max_age = o
            .max_age
            .as_deref()
            .map(parse_age)
            .transpose()
            .map_err(|e| bad("--max-age", e))?;
        let max_bytes = o
            .max_bytes
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| bad("--max-bytes", e))?;
        return Ok(Checked::Record {
            url,
            partitions: o.partitions,
            replicas: o.replicas,
            max_age,
            max_bytes,
        });
    }
    let Some(f) = &o.from else {
        if let Some((_, f)) = from_only.iter().find(|(g, _)| *g) {
            return Err(bad(f, "only with --from"));
        }
        if let Some((_, f)) = record_only.iter().find(|(g, _)| *g) {
            return Err(bad(f, "only with --record"));
        }
        return Err(bad("--record/--from", "neither is given"));
    };
    if let Some((_, flag)) = record_only.iter().find(|(g, _)| *g) {
        return Err(bad(flag, "only with --record (the stream exists already)"));
    }
    if offline {
        return Err(bad(
            "--from",
            "replays the stream, not a capture: drop --offline",
        ));
    }
    let url = BrokerUrl::parse(f).map_err(|e| bad("--from", e))?;
    let worker = o
        .worker
        .as_deref()
        .map(WorkerSpec::parse)
        .transpose()
        .map_err(|e| bad("--worker", e))?
        .unwrap_or(WorkerSpec { k: 0, n: 1 });
    let time = |flag: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| bad(flag, e))
    };
    let start_at = time("--start-at", &o.start_at)?;
    let from_time = time("--from-time", &o.from_time)?;
    let to_time = time("--to-time", &o.to_time)?;
    if let (Some(a), Some(b)) = (from_time, to_time) {
        if a >= b {
            return Err(bad("--to-time", "must be after --from-time"));
        }
    }
    if !(o.ack_wait.is_finite() && o.ack_wait >= 1.0 && o.ack_wait <= 86400.0) {
        return Err(bad("--ack-wait", "must be 1..=86400 seconds"));
    }
    let name_ok = !o.replay_name.is_empty()
        && o.replay_name.len() <= 32
        && o.replay_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(bad(
            "--replay-name",
            "must be 1-32 letters, digits, '_' or '-'",
        ));
    }
    Ok(Checked::From {
        url,
        list: o.list,
        worker,
        start_at,
        from_time,
        to_time,
        replay_name: o.replay_name.clone(),
        ack_wait: Duration::from_secs_f64(o.ack_wait),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = BrokerUrl::parse("nats://198.18.0.1:4222/prod").unwrap();
        assert_eq!(u.server, "198.18.0.1:4222");
        assert_eq!(u.stream, "prod");
        assert!(!u.tls);
        assert_eq!(u.subject(3), "prod.p.3");
        assert_eq!(u.sent_subject("replay", 42), "prod.ctl.sent.replay.42");
        assert!(BrokerUrl::parse("tls://[2001:db8::1]:4222/s").unwrap().tls);
        for bad in [
            "198.18.0.1:4222/s",
            "nats://198.18.0.1:4222",
            "nats://198.18.0.1:4222/",
            "nats://198.18.0.1:4222/a.b",
            "nats://host/s",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workers() {
        assert_eq!(WorkerSpec::parse("1/2").unwrap(), WorkerSpec { k: 1, n: 2 });
        assert_eq!(
            WorkerSpec::parse("1/3").unwrap().partitions(8),
            vec![1, 4, 7]
        );
        for bad in ["3/2", "2/2", "0/0", "a/2", "1", "-1/2"] {
            assert!(WorkerSpec::parse(bad).is_err(), "{bad}");
        }
        // Every partition has exactly one worker.
        let n = 3;
        let mut all: Vec<u32> = (0..n)
            .flat_map(|k| WorkerSpec { k, n }.partitions(64))
            .collect();
        all.sort();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
    }

    #[test]
    fn times_sizes_ages() {
        assert_eq!(parse_time("1.5").unwrap(), 1_500_000_000);
        assert_eq!(
            parse_time("2026-12-05T07:00:00Z").unwrap(),
            1_796_454_000_000_000_000
        );
        assert_eq!(
            format_time(1_796_454_000_000_000_000),
            "2026-12-05T07:00:00Z"
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("3w").is_err());
    }

    fn opts() -> FleetOptions {
        FleetOptions {
            partitions: 64,
            replicas: 1,
            replay_name: "replay".into(),
            ack_wait: 60.0,
            ..Default::default()
        }
    }

    #[test]
    fn flag_combinations_name_the_flag() {
        let o = FleetOptions {
            from: Some("nats://198.18.0.1:4222/s".into()),
            worker: Some("3/2".into()),
            ..opts()
        };
        assert_eq!(check(&o, false).unwrap_err().flag, "--worker");
        let o = FleetOptions {
            record: Some("nats://198.18.0.1:4222/s".into()),
            worker: Some("0/2".into()),
            ..opts()
        };
        assert_eq!(check(&o, false).unwrap_err().flag, "--worker");
        let o = FleetOptions {
            from: Some("nats://198.18.0.1:4222/s".into()),
            replicas: 3,
            ..opts()
        };
        assert_eq!(check(&o, false).unwrap_err().flag, "--replicas");
        let o = FleetOptions {
            from: Some("nats://198.18.0.1:4222/s".into()),
            ..opts()
        };
        assert_eq!(check(&o, true).unwrap_err().flag, "--from");
        assert!(matches!(
            check(&o, false).unwrap(),
            Checked::From {
                worker: WorkerSpec { k: 0, n: 1 },
                ..
            }
        ));
        let o = FleetOptions {
            record: Some("nats://198.18.0.1:4222/s".into()),
            partitions: 0,
            ..opts()
        };
        assert_eq!(check(&o, true).unwrap_err().flag, "--partitions");
    }
}
