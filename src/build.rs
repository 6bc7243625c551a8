//! What this build is: the version and the git commit (see `build.rs`), for `--version`.

/// The workspace version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit built (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("TCPCLONE_COMMIT");

/// `--version`'s text after the tool's name: `0.1.0 (commit 0123456789ab)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TCPCLONE_COMMIT"),
    ")"
);
