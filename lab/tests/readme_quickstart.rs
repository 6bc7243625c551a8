//! The README's quick starts, run as written (issue 13): every code block whose info string is
//! `sh runnable` runs with bash (`set -euo pipefail`) from the repository root with
//! `target/release` first on `PATH`, bounded to 60 s; each must exit 0 and print something.
//! Blocks need no root and no network beyond loopback; redis-server, redis-cli, curl and
//! tcpdump come from scripts/setup.sh.

use std::process::Command;
use std::time::Duration;
use tcpclone_lab::*;

/// The `sh runnable` blocks of a markdown text, in order.
fn runnable_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```sh runnable") => cur = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.push(cur.take().unwrap()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn finds_blocks_marked_runnable_only() {
    let md = "```sh\nno\n```\n```sh runnable\necho a\necho b\n```\ntext\n```sh runnable\nc\n```\n";
    assert_eq!(runnable_blocks(md), vec!["echo a\necho b\n", "c\n"]);
}

#[test]
fn readme_quick_starts_run_as_written() {
    require_programs!(
        "readme_quickstart",
        "redis-server",
        "redis-cli",
        "curl",
        "tcpdump",
        "timeout"
    );
    let root = workspace_root();
    let md = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = runnable_blocks(&md);
    assert!(
        blocks.len() >= 3,
        "the README lost its runnable quick starts"
    );
    let release = root.join("target/release");
    for tool in ["tcpcopy", "intercept", "replay"] {
        assert!(
            release.join(tool).exists(),
            "build first: cargo build --release"
        );
    }
    let path = format!(
        "{}:{}",
        release.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (i, block) in blocks.iter().enumerate() {
        let script = format!("set -euo pipefail\n{block}");
        let t0 = std::time::Instant::now();
        let out = Command::new("timeout")
            .args(["60", "bash", "-c", &script])
            .current_dir(&root)
            .env("PATH", &path)
            .output()
            .unwrap();
        let took = t0.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stdout.trim().is_empty(),
            "README quick start {} failed ({:?}, {took:?}):\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            i + 1,
            out.status
        );
        assert!(took < Duration::from_secs(60));
        println!("quick start {} ok in {took:?}", i + 1);
    }
}
