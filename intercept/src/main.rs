//! The `intercept` binary of the tcpclone suite.

fn main() {
    eprintln!("intercept: not implemented yet");
    std::process::exit(2);
}
