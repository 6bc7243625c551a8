//! The `tcpcopy` binary of the tcpclone suite.

fn main() {
    let _ = tcpcopy::engine::Engine::new(tcpcopy::engine::EngineConfig::default());
    eprintln!("tcpcopy: not implemented yet");
    std::process::exit(2);
}
