//! Checks the lab harness itself: two namespaces joined by a veth can ping, and everything is
//! removed afterwards.
use tcpclone_lab::*;

#[test]
fn two_namespaces_ping_and_clean_up() {
    require_root!("lab_smoke::two_namespaces_ping_and_clean_up");
    require_programs!("lab_smoke", "ping", "ip");
    let names;
    {
        let mut lab = Lab::new();
        let a = lab.netns("smka");
        let b = lab.netns("smkb");
        lab.veth(&a, "198.18.200.1/24", &b, "198.18.200.2/24");
        lab.exec_ok(&a, "ping -c1 -W2 198.18.200.2");
        names = vec![a, b];
    }
    let list = String::from_utf8(sh("ip netns list").stdout).unwrap();
    for n in names {
        assert!(!list.contains(&n), "namespace {n} left behind");
    }
}
