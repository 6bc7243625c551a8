//! The `replay` binary of the tcpclone suite.

fn main() {
    eprintln!("replay: not implemented yet");
    std::process::exit(2);
}
