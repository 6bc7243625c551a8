//! The `tcpcopy` binary of the tcpclone suite: flags → validated settings → raw mode (or,
//! with `--stream`, stream mode). Bad flags print one line naming the flag and exit 2.

use clap::Parser;
use std::process::ExitCode;
use tcpcopy::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("tcpcopy: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if cli.stream {
        // Stream mode (crate::stream) is wired here by the lead: `tcpcopy::stream::run(...)`.
        eprintln!("tcpcopy: --stream: stream mode is not built into this binary yet");
        return ExitCode::from(2);
    }
    let settings = match cli.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tcpcopy: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(settings.log.as_deref()) {
        eprintln!("tcpcopy: -l/--log: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = tcpcopy::live::safety_check(&settings) {
        eprintln!("tcpcopy: {e}");
        return ExitCode::from(2);
    }
    let pid_file = settings.pid_file.clone();
    if let Some(p) = &pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            eprintln!("tcpcopy: -P/--pid-file: cannot write {}: {e}", p.display());
            return ExitCode::from(2);
        }
    }
    let log_to_file = settings.log.is_some();
    let result = tcpcopy::live::run(settings);
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    match result {
        Ok(summary) => {
            if log_to_file {
                tracing::info!("{summary}");
            }
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tcpcopy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to the -l file (appending) or to standard error; `RUST_LOG` overrides the level.
fn init_logging(file: Option<&std::path::Path>) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display()))
                })?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}
