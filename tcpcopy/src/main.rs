//! The `tcpcopy` binary of the tcpclone suite: flags → validated settings → raw mode (or,
//! with `--stream`, stream mode). Bad flags print one line naming the flag and exit 2.

use clap::Parser;
use std::process::ExitCode;
use tcpcopy::cli::Cli;

fn main() -> ExitCode {
    // scripts/gen-docs.sh: man page and completions from these flags.
    tcpclone::docgen::generate_if_asked(<Cli as clap::CommandFactory>::command);
    // `tcpcopy report compare OLD.json NEW.json`: a command of its own (no replay, no flags of
    // the replay modes).
    if std::env::args_os().nth(1).is_some_and(|a| a == "report") {
        return report_command();
    }
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
        return stream_main(&cli);
    }
    let mut settings = match cli.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tcpcopy: {e}");
            return ExitCode::from(2);
        }
    };
    let logfile = match init_logging(settings.log.as_deref(), cli.log_format == "json", "info") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tcpcopy: -l/--log: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = tcpcopy::live::safety_check(&settings) {
        eprintln!("tcpcopy: {e}");
        return ExitCode::from(2);
    }
    // The secret is read once, now, as root: the file need not be readable by --user.
    if let Some(p) = &settings.secret_file {
        match tcpcopy::live::read_secret(p) {
            Ok(k) => settings.psk = Some(k),
            Err(e) => {
                eprintln!("tcpcopy: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    let pid_file = settings.pid_file.clone();
    if let Some(p) = &pid_file {
        // O_EXCL|O_NOFOLLOW, handed to --user through the descriptor (to remove it at exit).
        let written = tcpclone::sys::write_pid_file(p)
            .map_err(|e| e.to_string())
            .and_then(|f| tcpclone::sys::give_to_user(&f, p, &cli.user).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("tcpcopy: -P/--pid-file {}: {e}", p.display());
            return ExitCode::from(2);
        }
    }
    // Least privilege: become --user keeping only CAP_NET_RAW (enough to open the capture and
    // raw sockets that live::run opens next), before any thread starts (capset is per thread).
    // The log file is handed to the user first so that SIGHUP can reopen it.
    if let Some(f) = &logfile {
        if let Err(e) = f.give_to_user(&cli.user) {
            eprintln!("tcpcopy: --user: {e}");
            return ExitCode::from(2);
        }
    }
    // --report files are written at the end, as --user: create them now (a path that cannot be
    // written fails here, before anything runs) and hand them to that user.
    // Never through a symlink (O_NOFOLLOW), chowned through the descriptor.
    for p in settings.report.iter().chain(settings.junit.iter()) {
        let f = match tcpclone::sys::create_nofollow(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!(
                    "tcpcopy: --report/--junit {}: cannot create: {e}",
                    p.display()
                );
                return ExitCode::from(2);
            }
        };
        if let Err(e) = tcpclone::sys::give_to_user(&f, p, &cli.user) {
            eprintln!("tcpcopy: --user: {e}");
            return ExitCode::from(2);
        }
        // Written at the end through this descriptor: the user may not enter the directory.
        tcpcopy::report::keep_open(p, f);
    }
    // --capture-nice: lowering a nice value needs CAP_SYS_NICE, which is about to go. This
    // thread takes the capture threads' value now, they inherit it when live::run starts them,
    // and live::run puts this thread back to 0 right after.
    // Only libpcap's capture thread (--capture pcap) needs it: it copies out of a ring of
    // 64 KiB slots that overflows in a few ms. The workers that read the block ring run at
    // --nice (0 by default), never ahead of everything else: the ring holds far more, and such a
    // worker would starve the intercept channel that feeds it responses (and the service).
    if settings.capture_nice < 0
        && settings.capture_pcap
        && matches!(settings.source, tcpcopy::config::raw::Source::Live { .. })
    {
        if let Err(e) = tcpclone::sys::set_thread_nice(settings.capture_nice) {
            tracing::debug!("--capture-nice before dropping privileges: {e}");
        }
    }
    if let Err(e) = tcpclone::sys::drop_privileges(&cli.user, true) {
        eprintln!("tcpcopy: --user: dropping privileges: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = reopen_on_sighup(logfile) {
        eprintln!("tcpcopy: cannot install the SIGHUP handler: {e}");
        return ExitCode::from(2);
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
            // A broken --fail-if rule fails the run, as in stream mode.
            if summary.verdict_failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("tcpcopy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Stream mode: validated flags, then everything privileged or path-based opened and the
/// targets checked, then the drop to `--user`, then the replay (its threads start after).
fn stream_main(cli: &Cli) -> ExitCode {
    let json = cli.log_format == "json";
    tcpcopy::stream::set_json_logs(json);
    // Text: stream mode's own `tcpcopy: ...` lines, and tracing's warnings only (RUST_LOG=info
    // shows the privilege switch); JSON: everything from info up, for log shippers.
    if let Err(e) = init_logging(None, json, if json { "info" } else { "warn" }) {
        eprintln!("tcpcopy: {e}");
        return ExitCode::from(2);
    }
    let fail = |code: u8, msg: String| {
        tcpcopy::stream::log_error(&msg);
        ExitCode::from(code)
    };
    // Fleet mode: --list needs no -x; bad fleet flags exit 2 naming the flag.
    if cli.stream_opts.fleet.list {
        return match tcpcopy::fleet::list(&cli.stream_opts.fleet) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(2, format!("{e:#}")),
        };
    }
    if cli.stream_opts.fleet.active() {
        if let Err(e) = cli.stream_opts.fleet.validate(cli.offline.is_some()) {
            return fail(2, e.to_string());
        }
    }
    let common = match cli.validate_stream() {
        Ok(c) => c,
        Err(e) => return fail(2, e.to_string()),
    };
    let mut stream_opts = cli.stream_opts.clone();
    stream_opts.metrics = cli.metrics;
    // NATS credentials and CA: read before the drop to --user (they may be root's alone).
    if stream_opts.fleet.active() {
        if let Err(e) = stream_opts.fleet.preload() {
            return fail(2, format!("{e:#}"));
        }
    }
    // The key log and the target's certificate files may be root's alone: read them before
    // the drop.
    if let Err(e) = stream_opts.tls.preload() {
        return fail(2, format!("{e:#}"));
    }
    let secured = match &common.source {
        // --from captures nothing: it replays a recording from the broker.
        tcpcopy::stream::StreamSource::Live { .. } if stream_opts.fleet.from.is_some() => {
            secure_fleet_from(cli, &common)
        }
        tcpcopy::stream::StreamSource::Live { .. } => secure_live_stream(cli, &common),
        tcpcopy::stream::StreamSource::Offline(path) => {
            secure_offline_stream(cli, &common, &mut stream_opts, path)
        }
    };
    if let Err(code) = secured {
        return code;
    }
    if let Err(e) = stream_opts.verdict.rules() {
        return fail(2, e.to_string());
    }
    // 0: passed, 1: a --fail-if rule failed, 2: bad flags or the run itself failed.
    match tcpcopy::stream::run(&common, &stream_opts) {
        Ok(s) if s.verdict_failed => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(2, format!("{e:#}")),
    }
}

/// Offline stream mode: the capture file opened (so one only root can read still replays),
/// the targets checked as in every mode (a local, loopback or `-x`-online target is refused
/// unless --force) and against the capture (its own server is refused too), --report files
/// created and handed to --user, then the drop to --user keeping no capability at all.
fn secure_offline_stream(
    cli: &Cli,
    common: &tcpcopy::stream::StreamCommon,
    opts: &mut tcpcopy::stream::StreamOptions,
    path: &std::path::Path,
) -> Result<(), ExitCode> {
    use tcpcopy::stream::{guard, log_error, OpenedCapture};
    let capture = OpenedCapture::open(path).map_err(|e| {
        log_error(&format!("{e:#}"));
        ExitCode::from(2)
    })?;
    let servers = match capture.reader() {
        Ok(mut r) => guard::captured_servers(&mut r, &common.mappings, guard::SCAN_PACKETS),
        Err(e) => {
            log_error(&format!("{e:#}"));
            return Err(ExitCode::from(2));
        }
    };
    refuse_bad_targets(
        cli,
        common,
        guard::captured_server_problems(&common.mappings, &servers),
    )?;
    opts.offline_capture = Some(capture);
    create_reports_for_user(cli)?;
    if let Err(e) = tcpclone::sys::drop_privileges(&cli.user, false) {
        log_error(&format!("--user: dropping privileges: {e}"));
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// Fleet replay (`--from`) is an offline replay whose capture is on the broker: the targets
/// are checked here as in every mode (a local, loopback or `-x`-online target is refused
/// unless --force; each recorded session's server is checked as it arrives, in
/// `fleet::from`), then --report files are created and handed to --user, then the drop to
/// --user keeping no capability at all. The NATS credentials, CA and key log were read
/// just before; connecting to the broker needs no privilege, so the drop comes before it (and
/// before the runtime's threads start: capabilities are per thread).
fn secure_fleet_from(cli: &Cli, common: &tcpcopy::stream::StreamCommon) -> Result<(), ExitCode> {
    use tcpcopy::stream::log_error;
    refuse_bad_targets(cli, common, Vec::new())?;
    create_reports_for_user(cli)?;
    if let Err(e) = tcpclone::sys::drop_privileges(&cli.user, false) {
        log_error(&format!("--user: dropping privileges: {e}"));
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// Stream mode's target check, live, offline and `--from` alike: the production-safety rule
/// of every mode (`tcpcopy::live::target_problems`: local, loopback, `-x` online; it fails
/// closed) plus the mode's own `extra` problems. Refused in one line naming -x and the
/// addresses (exit 2), or with --force one warning per problem.
fn refuse_bad_targets(
    cli: &Cli,
    common: &tcpcopy::stream::StreamCommon,
    extra: Vec<String>,
) -> Result<(), ExitCode> {
    let mut problems = tcpcopy::live::target_problems(&common.mappings, &[]);
    problems.extend(extra);
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        return Ok(());
    }
    if !cli.force {
        tcpcopy::stream::log_error(&format!(
            "-x/--mapping: refused: {} (--force overrides)",
            problems.join("; ")
        ));
        return Err(ExitCode::from(2));
    }
    for p in problems {
        tcpcopy::stream::log_warn(&format!("warning: --force: {p}"));
    }
    Ok(())
}

/// --report files are written at the end, as --user: created now (never through a symlink)
/// and handed to that user through the descriptor.
fn create_reports_for_user(cli: &Cli) -> Result<(), ExitCode> {
    // The --junit file too: it is written at the end, as --user.
    for p in cli
        .stream_opts
        .report
        .iter()
        .chain(cli.stream_opts.verdict.junit.iter())
    {
        let given = tcpclone::sys::create_nofollow(p)
            .map_err(|e| format!("cannot create: {e}"))
            .and_then(|f| {
                tcpclone::sys::give_to_user(&f, p, &cli.user).map_err(|e| e.to_string())?;
                Ok(f)
            });
        match given {
            // Written at the end through this descriptor: the user may not enter the directory.
            Ok(f) => tcpcopy::report::keep_open(p, f),
            Err(e) => {
                tcpcopy::stream::log_error(&format!("--report/--junit {}: {e}", p.display()));
                return Err(ExitCode::from(2));
            }
        }
    }
    Ok(())
}

/// Live stream mode copies production traffic as raw mode does: the same target checks
/// (a local, loopback or `-x`-online target is refused unless --force), then --report files
/// created (never through a symlink) and handed to --user, then the drop to --user keeping
/// only CAP_NET_RAW (the capture opens after it). Before any thread starts.
fn secure_live_stream(cli: &Cli, common: &tcpcopy::stream::StreamCommon) -> Result<(), ExitCode> {
    refuse_bad_targets(cli, common, Vec::new())?;
    create_reports_for_user(cli)?;
    if let Err(e) = tcpclone::sys::drop_privileges(&cli.user, true) {
        tcpcopy::stream::log_error(&format!("--user: dropping privileges: {e}"));
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// Logs to the -l file (appending) or to standard error, as text or one JSON object per line
/// (--log-format json); `RUST_LOG` overrides the level. Returns the file, for SIGHUP to reopen.
fn init_logging(
    file: Option<&std::path::Path>,
    json: bool,
    default_level: &str,
) -> std::io::Result<Option<tcpclone::sys::LogFile>> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::EnvFilter;
    // The NATS client's connector logs each failed connection attempt as an error; tcpcopy
    // reports a broker it cannot use in its own one line (naming the flag or the address) and
    // counts what it retries, so that logger is off unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},async_nats::connector=off")));
    let (writer, f) = match file {
        Some(p) => {
            let f = tcpclone::sys::LogFile::open(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open {}: {e}", p.display()))
            })?;
            let w = f.clone();
            (BoxMakeWriter::new(move || w.clone()), Some(f))
        }
        None => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(f.is_none() && !json)
        .with_writer(writer);
    if json {
        b.json().init();
    } else {
        b.init();
    }
    Ok(f)
}

/// Reopens the -l file on every SIGHUP (after logrotate moved it), on a small thread; without
/// one, SIGHUP is only logged (it must not kill tcpcopy).
fn reopen_on_sighup(log: Option<tcpclone::sys::LogFile>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            // Not a capture thread: back to the ordinary priority (see --capture-nice).
            let _ = tcpclone::sys::set_thread_nice(0);
            for _ in signals.forever() {
                let Some(log) = &log else {
                    tracing::info!("SIGHUP: no log file to reopen");
                    continue;
                };
                match log.reopen() {
                    Ok(()) => tracing::info!("SIGHUP: log file {} reopened", log.path().display()),
                    Err(e) => tracing::warn!(
                        "SIGHUP: cannot reopen {}: {e}; still writing to the old file",
                        log.path().display()
                    ),
                }
            }
        })?;
    Ok(())
}

/// `tcpcopy report compare OLD.json NEW.json` (NEW's figures against OLD's) and `tcpcopy
/// report merge A.json B.json...` (one report from the workers'), with `[--fail-if EXPR]...
/// [--report FILE]... [--junit FILE]`: the same table and verdicts as a run.
#[derive(Debug, clap::Parser)]
#[command(name = "tcpcopy report", about = "Work with saved reports")]
struct ReportCli {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ReportCommand {
    /// Compare two saved JSON reports: NEW's target against OLD's (`production.*` in --fail-if
    /// rules reads OLD). Exit 0 passed, 1 a rule failed, 2 bad arguments or files.
    Compare {
        /// The reference run (e.g. the last release).
        old: std::path::PathBuf,
        /// The run under test.
        new: std::path::PathBuf,
        /// Fail (exit 1) when EXPR holds (repeatable; the grammar of --stream --fail-if).
        #[arg(long, value_name = "EXPR")]
        fail_if: Vec<String>,
        /// Write the comparison to FILE.json and/or FILE.html (repeatable).
        #[arg(long, value_name = "FILE")]
        report: Vec<std::path::PathBuf>,
        /// Write the verdicts and endpoints as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// Merge the JSON reports of several replay workers (`--from --worker K/N --report`) into
    /// one: latency histograms added exactly, counts summed. Exit 0 passed, 1 a rule failed,
    /// 2 bad arguments or files.
    Merge {
        /// The workers' JSON reports.
        #[arg(required = true, value_name = "REPORT.json")]
        reports: Vec<std::path::PathBuf>,
        /// Fail (exit 1) when EXPR holds on the merged figures (repeatable).
        #[arg(long, value_name = "EXPR")]
        fail_if: Vec<String>,
        /// Write the merged report to FILE.json and/or FILE.html (repeatable).
        #[arg(long, value_name = "FILE")]
        report: Vec<std::path::PathBuf>,
        /// Write the verdicts and endpoints as JUnit XML to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
}

fn report_command() -> ExitCode {
    use tcpcopy::report::{compare, merge, verdict};
    let args = std::env::args_os().skip(1);
    let cli = match <ReportCli as clap::Parser>::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("tcpcopy report: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let (name, fail_if, report, junit) = match &cli.command {
        ReportCommand::Compare {
            fail_if,
            report,
            junit,
            ..
        } => ("compare", fail_if, report, junit),
        ReportCommand::Merge {
            fail_if,
            report,
            junit,
            ..
        } => ("merge", fail_if, report, junit),
    };
    let run = || -> anyhow::Result<bool> {
        let rules = fail_if
            .iter()
            .map(|r| verdict::Rule::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = report.iter().find(|p| !tcpcopy::report::known_extension(p)) {
            anyhow::bail!(
                "--report {}: the file name must end in .json or .html",
                p.display()
            );
        }
        let read = |p: &std::path::Path| -> anyhow::Result<String> {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let mut r = match &cli.command {
            ReportCommand::Compare { old, new, .. } => {
                let load = |p: &std::path::Path| -> anyhow::Result<tcpcopy::report::Report> {
                    Ok(compare::load(&p.display().to_string(), &read(p)?)?)
                };
                compare::compare(&load(old)?, &load(new)?)
            }
            ReportCommand::Merge { reports, .. } => {
                let loaded = reports
                    .iter()
                    .map(|p| {
                        let path = p.display().to_string();
                        let r = merge::load(&path, &read(p)?)?;
                        Ok((path, r))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                merge::merge(&loaded)?
            }
        };
        let failed = tcpcopy::report::apply_verdicts(&mut r, &rules);
        print!("{}", tcpcopy::report::render_table(&r));
        eprint!("{}", verdict::failures_text(&r.verdicts));
        tcpcopy::report::write_files(&r, report)?;
        if let Some(path) = junit {
            std::fs::write(path, verdict::render_junit(&r))
                .map_err(|e| anyhow::anyhow!("--junit {}: {e}", path.display()))?;
        }
        Ok(failed)
    };
    match run() {
        Ok(true) => ExitCode::from(1),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpcopy report {name}: {e:#}");
            ExitCode::from(2)
        }
    }
}
