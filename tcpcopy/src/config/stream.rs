//! Stream mode's validated configuration: the flags it shares with raw mode, checked into the
//! [`crate::stream::StreamCommon`] it consumes (its own flags are checked by `stream`). Plain
//! values: nothing is opened here.

use super::{bad, FlagError};
use crate::cli::Cli;

impl Cli {
    /// Checks the flags stream mode shares with raw mode (no intercept needed there).
    pub fn validate_stream(&self) -> Result<crate::stream::StreamCommon, FlagError> {
        let mappings = self.mappings()?;
        self.check_percentage()?;
        if self.copies == 0 {
            return Err(bad("-n/--copies", "must be at least 1"));
        }
        // Stream mode connects from this host's own addresses and needs no intercept.
        if self.intercept.is_some() {
            return Err(bad(
                "-s/--intercept",
                "raw mode only (stream mode needs no intercept)",
            ));
        }
        if self.response_prefix.is_some() {
            return Err(bad(
                "--response-prefix",
                "raw mode only (stream mode reads whole answers itself)",
            ));
        }
        if self.max_lag.is_some() {
            return Err(bad(
                "--max-lag",
                "raw mode only (stream mode's requests keep the capture's timing)",
            ));
        }
        if self.client_ip.is_some() {
            return Err(bad(
                "-c/--client-ip",
                "raw mode only (stream mode connects from this host's addresses; \
                 --proxy-protocol passes the original client on)",
            ));
        }
        if self.max_pps.is_some() || self.max_mbps.is_some() {
            let flag = if self.max_pps.is_some() {
                "--max-pps"
            } else {
                "--max-mbps"
            };
            return Err(bad(
                flag,
                "caps raw mode's packets; stream mode uses --max-sessions-per-sec",
            ));
        }
        let speedup = self.speedup()?;
        let source = match &self.offline {
            Some(path) => crate::stream::StreamSource::Offline(path.clone()),
            None => crate::stream::StreamSource::Live {
                interfaces: self
                    .interface
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty() && *d != "any")
                    .map(String::from)
                    .collect(),
                filter: self.filter.clone(),
            },
        };
        Ok(crate::stream::StreamCommon {
            mappings,
            percentage: self.percentage,
            copies: self.copies,
            speedup,
            no_wait: self.no_wait,
            source,
            force: self.force,
        })
    }
}
