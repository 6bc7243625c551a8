//! Man pages and shell completions from a tool's clap definition (feature `docgen`).
//!
//! Generated on demand, not at every build: `scripts/gen-docs.sh` runs each tool with
//! `TCPCLONE_GENERATE_DOCS=DIR`, and [`generate_if_asked`] writes `DIR/man/TOOL.1` and
//! `DIR/completions/{TOOL.bash,_TOOL,TOOL.fish}` and exits. The tools' own parsers are the
//! single source, so the manuals cannot drift from `--help`.

use std::path::Path;

/// The environment variable naming the output directory.
pub const ENV: &str = "TCPCLONE_GENERATE_DOCS";

/// Errors while writing the files.
#[derive(Debug, thiserror::Error)]
#[error("{ENV}: cannot write {path}: {source}")]
pub struct DocgenError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

/// Writes the man page and the bash, zsh and fish completions of `cmd` under `dir`.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> Result<(), DocgenError> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| DocgenError { path, source }
    };
    let man_dir = dir.join("man");
    let comp_dir = dir.join("completions");
    for d in [&man_dir, &comp_dir] {
        std::fs::create_dir_all(d).map_err(err(d))?;
    }
    cmd.build();
    let mut page = Vec::new();
    let man_path = man_dir.join(format!("{name}.1"));
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(err(&man_path))?;
    std::fs::write(&man_path, page).map_err(err(&man_path))?;
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        let p = comp_dir.join(file);
        std::fs::write(&p, out).map_err(err(&p))?;
    }
    Ok(())
}

/// When `TCPCLONE_GENERATE_DOCS` names a directory, writes `cmd`'s manuals there and exits
/// (0, or 1 with one line on failure); otherwise returns at once.
pub fn generate_if_asked(cmd: impl FnOnce() -> clap::Command) {
    let Some(dir) = std::env::var_os(ENV).filter(|d| !d.is_empty()) else {
        return;
    };
    match generate(cmd(), Path::new(&dir)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_page_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("demo").about("A demo tool").arg(
            clap::Arg::new("metrics")
                .long("metrics")
                .help("Serve metrics"),
        );
        generate(cmd, dir.path()).unwrap();
        let man = std::fs::read_to_string(dir.path().join("man/demo.1")).unwrap();
        assert!(
            man.contains(".TH demo 1") && man.contains("metrics"),
            "{man}"
        );
        for f in ["demo.bash", "_demo", "demo.fish"] {
            let t = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(t.contains("metrics"), "{f}: {t}");
        }
    }
}
