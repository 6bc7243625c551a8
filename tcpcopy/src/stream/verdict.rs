//! The flags of stream mode's verdicts: `--protocol`, the protocol-aware `--diff` fields,
//! `--baseline-target`, `--fail-if` and `--junit` (the work is done in [`crate::report`]).

use crate::report::exchange::FieldConfig;
use crate::report::verdict::{Rule, RuleError};
use std::net::SocketAddr;
use std::path::PathBuf;
use tcpclone::decode::Protocol;

/// Verdict flags of stream mode.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VerdictOptions {
    /// Decode sessions as this protocol for the per-endpoint report and the diff (default: by
    /// the captured server port: 80, 8080... http, 6379 redis, others tcp).
    #[arg(long, value_name = "http|redis|tcp")]
    pub protocol: Option<String>,
    /// --diff of HTTP: also compare this response header (repeatable; default content-type).
    #[arg(long, value_name = "NAME")]
    pub diff_header: Vec<String>,
    /// --diff: never compare this field (repeatable): `$.timestamp`, `$.items[0].id`,
    /// `header:etag`, `status`, `body`, Redis `$[1]`; a field hides the fields below it.
    #[arg(long, value_name = "PATH")]
    pub diff_ignore_path: Vec<String>,
    /// --diff: also replay every session to ADDR, a second copy of production's build; fields
    /// that differ between its responses and production's are learned as noise per endpoint.
    #[arg(long, value_name = "ADDR")]
    pub baseline_target: Option<SocketAddr>,
    /// Fail the run (exit 1) when EXPR holds, e.g. 'p99 > 1.2 * production.p99',
    /// 'errors > 0.1%', 'diff > 0', 'endpoint=*: p99 > 2 * production.p99' (repeatable; see
    /// docs/report.md).
    #[arg(long, value_name = "EXPR")]
    pub fail_if: Vec<String>,
    /// Write the verdicts and endpoints as JUnit XML to FILE (one test case each).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

impl VerdictOptions {
    /// True when any verdict flag was given (they are stream mode's only).
    pub fn any(&self) -> bool {
        self.protocol.is_some()
            || !self.diff_header.is_empty()
            || !self.diff_ignore_path.is_empty()
            || self.baseline_target.is_some()
            || !self.fail_if.is_empty()
            || self.junit.is_some()
    }

    /// `--protocol`, checked.
    pub fn protocol(&self) -> anyhow::Result<Option<Protocol>> {
        match &self.protocol {
            None => Ok(None),
            Some(name) => Protocol::from_name(name).map(Some).ok_or_else(|| {
                anyhow::anyhow!("--protocol {name}: unknown (known: http, redis, tcp)")
            }),
        }
    }

    /// The `--fail-if` rules, parsed.
    pub fn rules(&self) -> Result<Vec<Rule>, RuleError> {
        self.fail_if.iter().map(|r| Rule::parse(r)).collect()
    }

    /// What the protocol-aware diff compares.
    pub fn field_config(&self) -> FieldConfig {
        let headers = if self.diff_header.is_empty() {
            vec!["content-type".to_string()]
        } else {
            self.diff_header
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        FieldConfig {
            headers,
            ignore_paths: self
                .diff_ignore_path
                .iter()
                .map(|p| match p.split_once(':') {
                    // Header names are compared lower-case.
                    Some(("header", name)) => format!("header:{}", name.to_ascii_lowercase()),
                    _ => p.clone(),
                })
                .collect(),
        }
    }
}
