//! Records the git commit the library (and so every tool) was built from, for `--version` and
//! `tcpclone_build_info`. Without git or outside a checkout (a source tarball, a package
//! build) the commit is `unknown`: the build never fails for it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = std::env::var("TCPCLONE_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TCPCLONE_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=TCPCLONE_COMMIT");
    // A new commit moves HEAD's reflog; a checkout rewrites HEAD.
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
