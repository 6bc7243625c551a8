//! Progress while replaying: a live bar on a terminal (never when stderr is not a tty) and the
//! tcpreplay-shaped summary every `--stats N` seconds.

use crate::pipeline::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use tcpclone::stats::ReplayStats;

/// The reporter of the main thread.
pub struct Reporter {
    bar: Option<ProgressBar>,
    stats_every_ns: Option<u64>,
    next_stats_ns: u64,
    next_bar_ns: u64,
    metrics: Option<crate::metrics::Published>,
}

impl Reporter {
    /// A reporter printing the summary every `stats_every_ns` (if set), with a progress bar when
    /// `bar` is asked and stderr is a terminal.
    pub fn new(stats_every_ns: Option<u64>, bar: bool) -> Self {
        let bar = (bar && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} packets {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        });
        Reporter {
            bar,
            stats_every_ns,
            next_stats_ns: stats_every_ns.unwrap_or(u64::MAX),
            next_bar_ns: 0,
            metrics: None,
        }
    }

    /// Also publishes the counters for `--metrics` (every 100 ms).
    pub fn with_metrics(mut self, m: Option<crate::metrics::Published>) -> Self {
        self.metrics = m;
        self
    }

    /// Removes the bar before the final summary is printed.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn tick(&mut self, stats: &ReplayStats, now_ns: u64) {
        if now_ns >= self.next_bar_ns {
            if let Some(b) = &self.bar {
                b.set_position(stats.packets_sent);
                let secs = (now_ns as f64 / 1e9).max(1e-9);
                b.set_message(format!("{:.0} pps", stats.packets_sent as f64 / secs));
            }
            if let Some(m) = &self.metrics {
                *m.lock().unwrap_or_else(|p| p.into_inner()) = *stats;
            }
            self.next_bar_ns = now_ns + 100_000_000;
        }
        if now_ns >= self.next_stats_ns {
            if let Some(b) = &self.bar {
                b.suspend(|| print_summary(&stats.summary(now_ns)));
            } else {
                print_summary(&stats.summary(now_ns));
            }
            self.next_stats_ns = now_ns + self.stats_every_ns.unwrap_or(u64::MAX);
        }
    }
}

/// Prints to stdout, ignoring a closed pipe (`replay ... | head` must not panic).
pub fn print_summary(text: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
