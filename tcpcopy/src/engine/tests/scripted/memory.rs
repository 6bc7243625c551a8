//! Scripted engine tests: memory.

use super::*;

#[test]
fn memory_budget_refuses_new_sessions() {
    let budget = super::super::super::SESSION_OVERHEAD * 3 + 100;
    let mut h = H::new(EngineConfig {
        max_memory: budget,
        ..config()
    });
    for p in 0..5u16 {
        send!(
            h,
            Seg {
                src: SocketAddr::new(CLIENT.ip(), 1000 + p),
                ..CLIENT_SYN
            }
        );
    }
    let st = h.e.stats();
    assert_eq!((st.sessions_cloned, st.refused_memory), (3, 2));
    assert!(h.e.memory_used() <= budget);
}

#[test]
fn per_session_buffer_is_capped() {
    static DATA: [u8; 1000] = [9; 1000];
    let mut h = session_syn_sent(EngineConfig {
        max_session_buffer: 2500,
        ..config()
    });
    for i in 0..5u32 {
        send!(
            h,
            Seg {
                seq: CLIENT_ISN + 1 + i * 1000,
                payload: &DATA,
                ..TEMPLATE
            }
        );
    }
    let st = h.e.stats();
    assert_eq!(st.buffer_overflows, 1);
    assert!(h.e.memory_used() <= super::super::super::SESSION_OVERHEAD + 2500);
}
