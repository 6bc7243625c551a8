//! Test driver for stream mode with the command line `tcpcopy --stream` has (until main.rs wires
//! it): `stream --stream -x MAP (--offline FILE | -i DEV) [-a F] [-n N] [-r P] [-W] [-F EXPR] ...`.

use clap::Parser;
use tcpcopy::stream::{StreamCommon, StreamOptions, StreamSource};

#[derive(Parser)]
#[command(name = "stream", about = "tcpcopy --stream test driver")]
struct Args {
    /// Accepted for command-line compatibility with `tcpcopy --stream`.
    #[arg(long)]
    stream: bool,
    /// Target mappings.
    #[arg(short = 'x', long = "copy")]
    mappings: String,
    /// Capture file.
    #[arg(long)]
    offline: Option<std::path::PathBuf>,
    /// Interfaces.
    #[arg(short = 'i', long = "interface", value_delimiter = ',')]
    interfaces: Vec<String>,
    /// Extra filter.
    #[arg(short = 'F', long)]
    filter: Option<String>,
    /// Speed-up.
    #[arg(short = 'a', long, default_value_t = 1.0)]
    speedup: f64,
    /// Copies.
    #[arg(short = 'n', long, default_value_t = 1)]
    copies: u32,
    /// Percentage.
    #[arg(short = 'r', long, default_value_t = 100)]
    percentage: u32,
    /// Don't wait for responses.
    #[arg(short = 'W', long)]
    no_wait: bool,
    #[command(flatten)]
    opts: StreamOptions,
}

fn main() {
    let a = Args::parse();
    let mappings = match tcpcopy::mapping::parse_mappings(&a.mappings) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("stream: {e}");
            std::process::exit(2);
        }
    };
    let source = match a.offline {
        Some(p) => StreamSource::Offline(p),
        None => StreamSource::Live {
            interfaces: a.interfaces,
            filter: a.filter,
        },
    };
    let common = StreamCommon {
        mappings,
        percentage: a.percentage,
        copies: a.copies,
        speedup: a.speedup,
        no_wait: a.no_wait,
        source,
    };
    if let Err(e) = tcpcopy::stream::run(&common, &a.opts) {
        eprintln!("stream: {e:#}");
        std::process::exit(1);
    }
}
