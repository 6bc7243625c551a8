//! The `tcpcopy` binary of the tcpclone suite.

mod engine;

fn main() {
    let _ = engine::Engine::new(engine::EngineConfig::default());
    eprintln!("tcpcopy: not implemented yet");
    std::process::exit(2);
}
