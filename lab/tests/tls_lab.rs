//! TLS in stream mode, in the lab: curl (SSLKEYLOGFILE) talks TLS 1.2 and 1.3 to a production
//! nginx, tcpdump captures it, and `tcpcopy --stream --tls-keylog --target-tls` replays the
//! decrypted requests over TLS to a target nginx. Every request must arrive, with the same
//! request bodies (nginx keeps each body in a file; their digests are compared), for every
//! suite of both versions, keep-alive and one connection per request; a key log with half of
//! the sessions replays that half and counts the rest. openssl s_client resumes TLS 1.2
//! sessions (session id and ticket) and TLS 1.3 ones (PSK, and 0-RTT early data); live, a
//! session whose secret never comes is given up after --tls-key-wait while the others replay.
//!
//! Build first, same profile: `cargo build --release --workspace --all-targets`.
use tcpclone_lab::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// (curl flags selecting the version and suite, the suite's IANA name as the report shows it).
const CASES: [(&str, &str); 9] = [
    (
        "--tlsv1.3 --tls-max 1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256",
        "TLS 1.3 TLS_AES_128_GCM_SHA256",
    ),
    (
        "--tlsv1.3 --tls-max 1.3 --tls13-ciphers TLS_AES_256_GCM_SHA384",
        "TLS 1.3 TLS_AES_256_GCM_SHA384",
    ),
    (
        "--tlsv1.3 --tls-max 1.3 --tls13-ciphers TLS_CHACHA20_POLY1305_SHA256",
        "TLS 1.3 TLS_CHACHA20_POLY1305_SHA256",
    ),
    (
        "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256",
        "TLS 1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-RSA-AES256-GCM-SHA384",
        "TLS 1.2 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-RSA-CHACHA20-POLY1305",
        "TLS 1.2 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS 1.2 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// A CA, an RSA and an ECDSA server certificate for `tls.test`, made with openssl.
fn make_certs(dir: &Path) {
    let d = dir.display();
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=tls-lab-ca -keyout ca.key -out ca.crt 2>/dev/null && \
         printf 'subjectAltName=DNS:tls.test\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
         openssl req -newkey rsa:2048 -nodes -subj /CN=tls.test -keyout rsa.key -out rsa.csr 2>/dev/null && \
         openssl x509 -req -in rsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out rsa.crt 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=tls.test -keyout ec.key -out ec.csr 2>/dev/null && \
         openssl x509 -req -in ec.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out ec.crt 2>/dev/null"
    ));
}

/// nginx with TLS 1.2 and 1.3 (RSA and ECDSA certificates) on `listen`: `/` answers, `/up`
/// reads the request body into a file that is kept (through a proxy to a second server, so
/// that nginx reads it at all). Returns (access log, body directory).
// The lab's own arguments (namespace, directories) plus the site's: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn start_tls_nginx(
    lab: &mut Lab,
    ns: &str,
    dir: &Path,
    certs: &Path,
    name: &str,
    listen: &str,
    upstream: u16,
    extra: &str,
) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let ds = d.to_str().unwrap();
    let c = certs.display();
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; user root; pid {ds}/nginx.pid;\n\
         error_log {ds}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           log_format t '$ssl_protocol $ssl_cipher $ssl_session_reused $ssl_early_data \"$request\" $status $request_length $ssl_client_verify';\n\
           access_log {ds}/access.log t;\n\
           client_body_temp_path {ds}/body; proxy_temp_path {ds}/proxy; fastcgi_temp_path {ds}/fcgi;\n\
           uwsgi_temp_path {ds}/uwsgi; scgi_temp_path {ds}/scgi;\n\
           client_max_body_size 4m; client_body_in_file_only on;\n\
           server {{ listen {listen} ssl; server_name tls.test;\n\
             ssl_certificate {c}/rsa.crt; ssl_certificate_key {c}/rsa.key;\n\
             ssl_certificate {c}/ec.crt; ssl_certificate_key {c}/ec.key;\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305;\n\
             keepalive_requests 1000; {extra}\n\
             location / {{ return 200 \"ok\\n\"; }}\n\
             location /up {{ proxy_pass http://127.0.0.1:{upstream}; }}\n\
           }}\n\
           server {{ listen 127.0.0.1:{upstream}; access_log off; location / {{ return 200 \"stored\\n\"; }} }}\n\
         }}\n"
    );
    let cf = d.join("nginx.conf");
    std::fs::write(&cf, conf).unwrap();
    lab.spawn(
        ns,
        &["nginx", "-c", cf.to_str().unwrap(), "-p", ds],
        Some(&d.join("stderr.log")),
    );
    let addr = listen.split_whitespace().next().unwrap();
    assert!(
        lab.wait_for(
            ns,
            &format!("ss -ltn | grep -q '{addr} '"),
            Duration::from_secs(10)
        ),
        "nginx {name} did not start: {}",
        std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
    );
    (d.join("access.log"), d.join("body"))
}

/// SHA-256 of every kept request body under `dir`, counted.
fn body_digests(lab: &Lab, ns: &str, dir: &Path) -> BTreeMap<String, u64> {
    let out = lab.exec(
        ns,
        &format!("find {} -type f -exec sha256sum {{}} +", dir.display()),
    );
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(h) = l.split_whitespace().next() {
            *m.entry(h.to_string()).or_default() += 1;
        }
    }
    m
}

/// Requests in an access log, by request line (method, path with its tag), counted.
fn requests(log: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in read_lines(log) {
        if let Some(req) = l.split('"').nth(1) {
            *m.entry(req.to_string()).or_default() += 1;
        }
    }
    m
}

/// Runs curl with every case against production at `prod_ip`: per case one keep-alive
/// connection (three small requests and a 256 KB upload) and two connections of one request.
/// Each curl writes its own key log, or all write `shared`. Returns (key log, request tags) per
/// curl run and the number of TLS sessions.
fn clients(
    lab: &Lab,
    client: &str,
    prod_ip: &str,
    dir: &Path,
    shared: Option<&Path>,
) -> (Vec<(PathBuf, Vec<String>)>, usize) {
    // 256 KB of varied bytes, the body of one request per keep-alive session.
    let body = dir.join("body.bin");
    let big: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&body, &big).unwrap();
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let mut sessions = 0usize;
    // Each curl run writes its own key log: the "half" key log below is built from them.
    let mut runs: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for (i, (flags, _)) in CASES.iter().enumerate() {
        let base =
            format!("curl -sS -k --http1.1 --resolve tls.test:443:{prod_ip} {flags} -o /dev/null");
        // Keep-alive: three small requests and a 256 KB upload on one connection.
        let k = shared.map_or_else(|| keys_dir.join(format!("ka{i}.log")), Path::to_path_buf);
        let tags: Vec<String> = (0..3).map(|n| format!("/?ka{i}-{n}")).collect();
        let urls: String = tags
            .iter()
            .map(|t| format!(" https://tls.test{t}"))
            .collect();
        lab.exec_ok(
            client,
            &format!(
                "SSLKEYLOGFILE={} {base} {urls} --next {base} --data-binary @{} -H 'Content-Type: application/octet-stream' https://tls.test/up?ka{i}",
                k.display(),
                body.display()
            ),
        );
        let mut all = tags.clone();
        all.push(format!("/up?ka{i}"));
        runs.push((k, all));
        sessions += 1;
        // One connection per request, twice.
        for n in 0..2 {
            let k = shared.map_or_else(
                || keys_dir.join(format!("pr{i}-{n}.log")),
                Path::to_path_buf,
            );
            let tag = format!("/?pr{i}-{n}");
            lab.exec_ok(
                client,
                &format!("SSLKEYLOGFILE={} {base} https://tls.test{tag}", k.display()),
            );
            runs.push((k, vec![tag]));
            sessions += 1;
        }
    }
    // Python's ssl (keylog_filename), its default TLS 1.3 suite, SNI tls.test: two requests
    // and an upload.
    let k = shared.map_or_else(|| keys_dir.join("py.log"), Path::to_path_buf);
    lab.exec_ok(
        client,
        &format!(
            "python3 -c \"import ssl, http.client\n\
             c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             c.keylog_filename = '{}'\n\
             import socket\n\
             h = http.client.HTTPConnection('{prod_ip}', 443)\n\
             h.sock = c.wrap_socket(socket.create_connection(('{prod_ip}', 443)), server_hostname='tls.test')\n\
             for n in range(2):\n    h.request('GET', '/?py-%d' % n); h.getresponse().read()\n\
             h.request('POST', '/up?py', body=bytes(range(256)) * 64); h.getresponse().read()\"",
            k.display()
        ),
    );
    runs.push((k, vec!["/?py-0".into(), "/?py-1".into(), "/up?py".into()]));
    sessions += 1;
    (runs, sessions)
}

#[test]
fn nginx_tls12_tls13_every_suite_decrypted_and_replayed_over_tls() {
    require_root!("tls_lab::nginx");
    require_programs!(
        "tls_lab::nginx",
        "nginx",
        "curl",
        "openssl",
        "tcpdump",
        "ss",
        "sha256sum"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir("tls_lab");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let client = lab.netns("tlcl");
    let prod = lab.netns("tlpr");
    let (_, prod_if) = lab.veth(&client, "198.18.52.1/24", &prod, "198.18.52.2/24");
    // Plain HTTP too, for --target-tls with a plaintext capture.
    let plain_log = start_nginx(
        &mut lab,
        &prod,
        tmp.path(),
        "plain",
        &["198.18.52.2:80"],
        "\"$request\" $status",
    );
    let (prod_log, prod_bodies) = start_tls_nginx(
        &mut lab,
        &prod,
        tmp.path(),
        &certs,
        "prod",
        "198.18.52.2:443",
        8081,
        "",
    );
    // Whole frames (-s 0): TLS records span segments, and a snapped segment is a hole.
    let cap = tmp.path().join("tls.pcap");
    let td = start_tcpdump_opts(
        &mut lab,
        &prod,
        &["-i", &prod_if, "-s", "0", "-B", "32768"],
        "tcp port 443 or tcp port 80",
        &cap,
    );

    let (runs, sessions) = clients(&lab, &client, "198.18.52.2", tmp.path(), None);
    for n in 0..3 {
        lab.exec_ok(
            &client,
            &format!("curl -sS -o /dev/null http://198.18.52.2/?plain-{n}"),
        );
    }
    stop_tcpdump(&mut lab, td, &cap);
    let prod_reqs = requests(&prod_log);
    let total: u64 = prod_reqs.values().sum();
    assert_eq!(
        total as usize,
        CASES.len() * 6 + 3,
        "production log: {prod_reqs:?}"
    );
    let prod_digests = body_digests(&lab, &prod, &prod_bodies);
    assert_eq!(
        prod_digests.values().sum::<u64>() as usize,
        CASES.len() + 1,
        "{prod_digests:?}"
    );

    // The whole key log, private as tcpcopy wants it.
    let keys = tmp.path().join("all.keys");
    let text: String = runs
        .iter()
        .map(|(k, _)| std::fs::read_to_string(k).unwrap())
        .collect();
    std::fs::write(&keys, &text).unwrap();
    sh(&format!("chmod 600 {}", keys.display()));

    let target = lab.netns("tltg");
    let tcpcopy = bin("tcpcopy");
    // --force: the target nginx listens on the loopback of the namespace the replay runs in,
    // a local target that tcpcopy refuses without it.
    let replay = |lab: &Lab, keys: &Path, listen: &str, extra: &str, report: &Path| -> String {
        let cmd = format!(
            "{} --stream --force --offline {} --tls-keylog {} --target-tls {extra} -x 443-{listen} --topspeed --report {}",
            tcpcopy.display(),
            cap.display(),
            keys.display(),
            report.display()
        );
        let out = lab.exec(&target, &cmd);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "`{cmd}` failed:\n{text}");
        text
    };

    // 1. Every session decrypted and replayed over TLS, the target's certificate verified
    //    against the test's CA for the captured SNI.
    let (t_log, t_bodies) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "target",
        "127.0.0.1:8443",
        8082,
        "",
    );
    let report = tmp.path().join("all.json");
    let out = replay(
        &lab,
        &keys,
        "127.0.0.1:8443",
        &format!(
            "--target-ca {} --diff --diff-ignore 'Date: [^\\r]*'",
            certs.join("ca.crt").display()
        ),
        &report,
    );
    eprintln!("{out}");
    settle(total, Duration::from_secs(10), || line_count(&t_log));
    assert_eq!(
        requests(&t_log),
        prod_reqs,
        "requests at the target differ from production's\n{out}"
    );
    assert_eq!(
        body_digests(&lab, &target, &t_bodies),
        prod_digests,
        "request bodies differ\n{out}"
    );
    let r = read_json(&report);
    let tls = &r["tls"];
    assert_eq!(tls["decrypted"], sessions as u64, "{tls}");
    assert_eq!(tls["without_keys"], 0, "{tls}");
    assert_eq!(tls["auth_failures"], 0, "{tls}");
    for (_, suite) in CASES {
        // Three curl sessions each; Python's session adds one to its default suite.
        let n = tls["suites"][suite].as_u64().unwrap_or(0);
        assert!(n == 3 || n == 4, "{suite}: {tls}");
    }
    let all: u64 = tls["suites"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(all, sessions as u64, "{tls}");
    assert_eq!(tls["sni"]["tls.test"], sessions as u64, "{tls}");
    // curl offers ALPN (nginx picks http/1.1); Python's client offers none.
    assert_eq!(tls["alpn"]["http/1.1"], sessions as u64 - 1, "{tls}");
    assert!(
        tls["target_handshake_failed"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{tls}"
    );
    // Production's responses come from the decrypted server records.
    assert_eq!(r["production"]["requests"], total, "{}", r["production"]);
    assert_eq!(r["test"]["answered"], total, "{}", r["test"]);
    // --diff: the target's responses equal production's decrypted ones (Date masked).
    assert_eq!(r["diff"]["compared"], total, "{}", r["diff"]);
    assert_eq!(r["diff"]["matched"], total, "{}", r["diff"]);

    // 1b. A target whose certificate does not chain to --target-ca: every handshake fails,
    //     counted with rustls's reason, nothing is sent.
    sh(&format!(
        "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=other-ca -keyout other.key -out other.crt 2>/dev/null",
        certs.display()
    ));
    let before = line_count(&t_log);
    let report = tmp.path().join("badca.json");
    let out = replay(
        &lab,
        &keys,
        "127.0.0.1:8443",
        &format!("--target-ca {}", certs.join("other.crt").display()),
        &report,
    );
    let r = read_json(&report);
    let failed = r["tls"]["target_handshake_failed"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (reason, n) = failed.iter().next().unwrap();
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    assert_eq!(n, sessions as u64);
    assert_eq!(r["sessions"]["connect_failed"], sessions as u64);
    assert!(
        out.contains("tls handshakes with the target failed"),
        "{out}"
    );
    assert_eq!(line_count(&t_log), before);

    // 1c. A plaintext capture (port 80) replayed over TLS to the target.
    let (p_log, _) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "plainto",
        "127.0.0.3:8443",
        8084,
        "",
    );
    // --force: a loopback target, as in `replay`.
    let out = lab.exec(
        &target,
        &format!(
            "{} --stream --force --offline {} --target-tls --target-insecure -x 80-127.0.0.3:8443 --topspeed",
            tcpcopy.display(),
            cap.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    settle(3, Duration::from_secs(10), || line_count(&p_log));
    assert_eq!(requests(&p_log), requests(&plain_log));
    assert_eq!(requests(&p_log).values().sum::<u64>(), 3);

    // 1d. Mutual TLS: a target that requires a client certificate from the test's CA.
    sh(&format!(
        "cd {} && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=tcpcopy \
           -keyout client.key -out client.csr 2>/dev/null && \
         printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > client.cnf && \
         openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
           -extfile client.cnf -out client.crt 2>/dev/null",
        certs.display()
    ));
    let (m_log, _) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "mtls",
        "127.0.0.4:8443",
        8085,
        &format!(
            "ssl_verify_client on; ssl_client_certificate {};",
            certs.join("ca.crt").display()
        ),
    );
    let out = replay(
        &lab,
        &keys,
        "127.0.0.4:8443",
        &format!(
            "--target-insecure --target-cert {} --target-key {}",
            certs.join("client.crt").display(),
            certs.join("client.key").display()
        ),
        &tmp.path().join("mtls.json"),
    );
    settle(total, Duration::from_secs(10), || line_count(&m_log));
    assert_eq!(requests(&m_log), prod_reqs, "mutual TLS\n{out}");
    assert!(
        read_lines(&m_log).iter().all(|l| l.ends_with(" SUCCESS")),
        "client certificate not verified: {:?}",
        read_lines(&m_log).first()
    );

    // 2. A key log with every other run's secrets: that half is replayed, the rest counted.
    let half = tmp.path().join("half.keys");
    let mut kept = BTreeMap::new();
    let mut text = String::new();
    for (n, (k, tags)) in runs.iter().enumerate() {
        if n % 2 == 0 {
            text.push_str(&std::fs::read_to_string(k).unwrap());
            for t in tags {
                let method = if t.starts_with("/up") { "POST" } else { "GET" };
                *kept.entry(format!("{method} {t} HTTP/1.1")).or_default() += 1u64;
            }
        }
    }
    std::fs::write(&half, &text).unwrap();
    sh(&format!("chmod 600 {}", half.display()));
    let (h_log, _) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "half",
        "127.0.0.2:8443",
        8083,
        "",
    );
    let report = tmp.path().join("half.json");
    let out = replay(&lab, &half, "127.0.0.2:8443", "--target-insecure", &report);
    settle(kept.values().sum(), Duration::from_secs(10), || {
        line_count(&h_log)
    });
    assert_eq!(requests(&h_log), kept, "{out}");
    let tls = read_json(&report)["tls"].clone();
    let with = runs.len().div_ceil(2) as u64;
    assert_eq!(tls["decrypted"], with, "{tls}");
    assert_eq!(tls["without_keys"], runs.len() as u64 - with, "{tls}");
    assert!(
        out.contains("no secrets in the key log for client random"),
        "{out}"
    );

    // 3. A key log that others can read is refused without --force. The target is an address
    // the target check lets through (not this namespace's, not the captured server), so that
    // the key log is what is refused.
    sh(&format!("chmod 644 {}", keys.display()));
    let out = lab.exec(
        &target,
        &format!(
            "{} --stream --offline {} --tls-keylog {} --target-tls --target-insecure -x 443-198.18.59.9:8443",
            tcpcopy.display(),
            cap.display(),
            keys.display()
        ),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lets others read the session secrets"),
        "{err}"
    );
}

/// Live: tcpcopy captures production while curl runs and writes the key log; every request
/// reaches the target over TLS, with the same bodies.
#[test]
fn live_key_log_written_while_clients_run() {
    require_root!("tls_lab::live");
    require_programs!(
        "tls_lab::live",
        "nginx",
        "curl",
        "openssl",
        "ss",
        "sha256sum"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir("tls_lab");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let client = lab.netns("tlcl");
    let prod = lab.netns("tlpr");
    let target = lab.netns("tltg");
    let (_, prod_if) = lab.veth(&client, "198.18.54.1/24", &prod, "198.18.54.2/24");
    lab.veth(&prod, "198.18.55.1/24", &target, "198.18.55.2/24");
    let (prod_log, prod_bodies) = start_tls_nginx(
        &mut lab,
        &prod,
        tmp.path(),
        &certs,
        "prod",
        "198.18.54.2:443",
        8081,
        "",
    );
    let (t_log, t_bodies) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "target",
        "198.18.55.2:8443",
        8082,
        "",
    );
    let keys = tmp.path().join("live.keys");
    std::fs::write(&keys, "").unwrap();
    sh(&format!("chmod 600 {}", keys.display()));
    let log = tmp.path().join("live.log");
    let report = tmp.path().join("live.json");
    let pid = lab.spawn_stream_live(
        &prod,
        &[
            "-x",
            "443-198.18.55.2:8443",
            "-i",
            &prod_if,
            "--tls-keylog",
            keys.to_str().unwrap(),
            "--target-tls",
            "--target-insecure",
            "--with-responses",
            "--duration",
            "60",
            "--report",
            report.to_str().unwrap(),
        ],
        &log,
    );
    let (_, sessions) = clients(&lab, &client, "198.18.54.2", tmp.path(), Some(&keys));
    let prod_reqs = requests(&prod_log);
    let total: u64 = prod_reqs.values().sum();
    settle(total, Duration::from_secs(10), || line_count(&t_log));
    let st = lab
        .stop(pid, "INT", Duration::from_secs(30))
        .expect("live stream mode did not stop on SIGINT");
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(st.success(), "exit {st:?}: {out}");
    eprintln!("{out}");
    assert_eq!(
        requests(&t_log),
        prod_reqs,
        "requests at the target differ from production's\n{out}"
    );
    assert_eq!(
        body_digests(&lab, &target, &t_bodies),
        body_digests(&lab, &prod, &prod_bodies),
        "{out}"
    );
    let tls = read_json(&report)["tls"].clone();
    assert_eq!(tls["decrypted"], sessions as u64, "{tls}");
    assert_eq!(tls["without_keys"], 0, "{tls}");
}

/// An HTTP/1.1 request that ends its connection, for openssl s_client's standard input.
fn close_request(tag: &str) -> String {
    format!("GET /?{tag} HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
}

/// openssl s_client resumes sessions: TLS 1.2 by session id (no ticket) and by ticket, TLS 1.3
/// by PSK, and TLS 1.3 with the request sent as 0-RTT early data. Production's nginx logs each
/// as resumed (and the 0-RTT one as early data); the offline replay decrypts every session
/// with openssl's key log and every request reaches the target.
#[test]
fn resumed_sessions_and_early_data_replayed() {
    require_root!("tls_lab::resumption");
    require_programs!("tls_lab::resumption", "nginx", "openssl", "tcpdump", "ss");
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir("tls_lab");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let client = lab.netns("tlcl");
    let prod = lab.netns("tlpr");
    let (_, prod_if) = lab.veth(&client, "198.18.56.1/24", &prod, "198.18.56.2/24");
    // A session cache for TLS 1.2 resumption by id; tickets are on by default.
    let resume = "ssl_session_cache shared:tlslab:1m; ssl_early_data on;";
    let (prod_log, _) = start_tls_nginx(
        &mut lab,
        &prod,
        tmp.path(),
        &certs,
        "prod",
        "198.18.56.2:443",
        8081,
        resume,
    );
    let cap = tmp.path().join("resume.pcap");
    let td = start_tcpdump_opts(
        &mut lab,
        &prod,
        &["-i", &prod_if, "-s", "0", "-B", "32768"],
        "tcp port 443",
        &cap,
    );
    let keys = tmp.path().join("resume.keys");
    let d = tmp.path().display();
    let s_client = |tag: &str, flags: &str| {
        std::fs::write(tmp.path().join(format!("{tag}.req")), close_request(tag)).unwrap();
        lab.exec_ok(
            &client,
            &format!(
                "timeout 10 openssl s_client -connect 198.18.56.2:443 -servername tls.test -quiet \
                   -keylogfile {} {flags} < {d}/{tag}.req > {d}/{tag}.out 2>&1",
                keys.display()
            ),
        );
    };
    // (tag, flags): a full handshake that saves its session, then one that resumes it.
    s_client(
        "id-full",
        &format!("-tls1_2 -no_ticket -sess_out {d}/id.sess"),
    );
    s_client(
        "id-resumed",
        &format!("-tls1_2 -no_ticket -sess_in {d}/id.sess"),
    );
    s_client("ticket-full", &format!("-tls1_2 -sess_out {d}/t12.sess"));
    s_client("ticket-resumed", &format!("-tls1_2 -sess_in {d}/t12.sess"));
    s_client("psk-full", &format!("-tls1_3 -sess_out {d}/t13.sess"));
    // The resumed session saves the ticket it was given: OpenSSL's anti-replay lets a server
    // take early data on a ticket once, so the 0-RTT connection uses a ticket of its own.
    s_client(
        "psk-resumed",
        &format!("-tls1_3 -sess_in {d}/t13.sess -sess_out {d}/early.sess"),
    );
    // 0-RTT: the request goes as early data, nothing on standard input.
    std::fs::write(tmp.path().join("early.req"), close_request("early")).unwrap();
    lab.exec_ok(
        &client,
        &format!(
            "timeout 10 openssl s_client -connect 198.18.56.2:443 -servername tls.test -quiet \
               -keylogfile {} -tls1_3 -sess_in {d}/early.sess -early_data {d}/early.req \
               < /dev/null > {d}/early.out 2>&1",
            keys.display()
        ),
    );
    stop_tcpdump(&mut lab, td, &cap);
    sh(&format!("chmod 600 {}", keys.display()));

    // Production really resumed (log field 3 "r") and took the 0-RTT request as early data
    // (field 4 "1"): otherwise this test would prove nothing.
    let prod_lines = read_lines(&prod_log);
    assert_eq!(prod_lines.len(), 7, "{prod_lines:?}");
    let field = |tag: &str, n: usize| -> String {
        prod_lines
            .iter()
            .find(|l| l.contains(&format!("/?{tag} ")))
            .and_then(|l| l.split_whitespace().nth(n))
            .unwrap_or_default()
            .to_string()
    };
    for tag in ["id-resumed", "ticket-resumed", "psk-resumed", "early"] {
        assert_eq!(field(tag, 2), "r", "{tag} not resumed: {prod_lines:?}");
    }
    for tag in ["id-full", "ticket-full", "psk-full"] {
        assert_eq!(field(tag, 2), ".", "{tag}: {prod_lines:?}");
    }
    // nginx may still refuse early data (OpenSSL's ticket-age window on a loaded machine):
    // the request then goes after the handshake, and the 0-RTT part of this test is skipped,
    // loudly, while the resumptions are still checked.
    let early_taken = field("early", 3) == "1";
    if early_taken {
        let keylog = std::fs::read_to_string(&keys).unwrap();
        assert!(keylog.contains("CLIENT_EARLY_TRAFFIC_SECRET"), "{keylog}");
    } else {
        eprintln!(
            "SKIPPED: tls_lab::resumption 0-RTT part: production nginx refused early data \
             this run ({prod_lines:?}); the resumed sessions are still checked"
        );
    }

    let target = lab.netns("tltg");
    let (t_log, _) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "target",
        "127.0.0.1:8443",
        8082,
        "",
    );
    let report = tmp.path().join("resume.json");
    // --force: the target nginx listens on this namespace's loopback, a local target.
    let cmd = format!(
        "{} --stream --force --offline {} --tls-keylog {} --target-tls --target-ca {} -x 443-127.0.0.1:8443 --topspeed --report {}",
        bin("tcpcopy").display(),
        cap.display(),
        keys.display(),
        certs.join("ca.crt").display(),
        report.display()
    );
    let out = lab.exec(&target, &cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "`{cmd}` failed:\n{text}");
    settle(7, Duration::from_secs(10), || line_count(&t_log));
    assert_eq!(
        requests(&t_log),
        requests(&prod_log),
        "requests at the target differ from production's\n{text}"
    );
    let tls = read_json(&report)["tls"].clone();
    assert_eq!(tls["decrypted"], 7, "{tls}\n{text}");
    assert_eq!(tls["resumed"], 4, "{tls}");
    assert_eq!(tls["without_keys"], 0, "{tls}");
    assert_eq!(tls["auth_failures"], 0, "{tls}");
    if early_taken {
        assert_eq!(tls["early_rejected"], 0, "{tls}");
    }
}

/// Live, `--tls-key-wait 1`: a session whose secrets are not in the key log is given up once
/// the capture has run a second past it (said before the run ends, counted as without keys),
/// and its secrets coming later change nothing; a session whose secrets are appended late
/// (before that) and sessions whose client writes the key log as it goes are replayed.
#[test]
fn live_key_wait_gives_up_on_a_session_without_secrets() {
    require_root!("tls_lab::key_wait");
    require_programs!("tls_lab::key_wait", "nginx", "curl", "openssl", "ss");
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir("tls_lab");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let client = lab.netns("tlcl");
    let prod = lab.netns("tlpr");
    let target = lab.netns("tltg");
    let (_, prod_if) = lab.veth(&client, "198.18.57.1/24", &prod, "198.18.57.2/24");
    lab.veth(&prod, "198.18.58.1/24", &target, "198.18.58.2/24");
    let (prod_log, _) = start_tls_nginx(
        &mut lab,
        &prod,
        tmp.path(),
        &certs,
        "prod",
        "198.18.57.2:443",
        8081,
        "",
    );
    let (t_log, _) = start_tls_nginx(
        &mut lab,
        &target,
        tmp.path(),
        &certs,
        "target",
        "198.18.58.2:8443",
        8082,
        "",
    );
    let keys = tmp.path().join("live.keys");
    std::fs::write(&keys, "").unwrap();
    sh(&format!("chmod 600 {}", keys.display()));
    let log = tmp.path().join("live.log");
    let report = tmp.path().join("live.json");
    let pid = lab.spawn_stream_live(
        &prod,
        &[
            "-x",
            "443-198.18.58.2:8443",
            "-i",
            &prod_if,
            "--tls-keylog",
            keys.to_str().unwrap(),
            "--tls-key-wait",
            "1",
            "--target-tls",
            "--target-insecure",
            "--duration",
            "60",
            "--report",
            report.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:19192",
        ],
        &log,
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let curl = |tag: &str, keylog: &Path| {
        lab.exec_ok(
            &client,
            &format!(
                "SSLKEYLOGFILE={} curl -sS -k --http1.1 --resolve tls.test:443:198.18.57.2 -o /dev/null https://tls.test/?{tag}",
                keylog.display()
            ),
        );
    };
    let append = |from: &Path| {
        sh(&format!("cat {} >> {}", from.display(), keys.display()));
    };
    // Its secrets go elsewhere: it waits.
    let nokeys = tmp.path().join("nokeys.log");
    curl("nokeys", &nokeys);
    // Its secrets come after its records, within the wait.
    let late = tmp.path().join("late.log");
    curl("late", &late);
    append(&late);
    // The capture's clock (packets) moves on past the wait: the next session's packets end
    // the first one's wait.
    std::thread::sleep(Duration::from_millis(2500));
    curl("keys", &keys);
    let given_up = "no secrets in the key log for client random";
    wait_for_log(
        &log,
        given_up,
        Duration::from_secs(10),
        Duration::from_millis(50),
        "the session without secrets was not given up during the run",
    );
    // Too late now: its secrets arrive, another session moves the clock, nothing replays it.
    append(&nokeys);
    std::thread::sleep(Duration::from_millis(200));
    curl("after", &keys);
    settle(3, Duration::from_secs(10), || line_count(&t_log));
    std::thread::sleep(Duration::from_millis(300));
    // --metrics says what the report will say.
    let scrape = lab.exec(
        &prod,
        "curl -sf --max-time 5 http://127.0.0.1:19192/metrics",
    );
    let metrics = String::from_utf8_lossy(&scrape.stdout).into_owned();
    let st = lab
        .stop(pid, "INT", Duration::from_secs(30))
        .expect("live stream mode did not stop on SIGINT");
    let out = read_log();
    assert!(st.success(), "exit {st:?}: {out}");
    for (name, want) in [
        ("tcpclone_tcpcopy_stream_tls_sessions_decrypted_total", 3),
        ("tcpclone_tcpcopy_stream_tls_sessions_without_keys_total", 1),
    ] {
        let got = metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        });
        assert_eq!(got, Some(want), "{name}:\n{metrics}");
    }
    assert_eq!(requests(&prod_log).values().sum::<u64>(), 4);
    let want: BTreeMap<String, u64> = ["late", "keys", "after"]
        .iter()
        .map(|t| (format!("GET /?{t} HTTP/1.1"), 1))
        .collect();
    assert_eq!(requests(&t_log), want, "{out}");
    assert_eq!(out.matches(given_up).count(), 1, "{out}");
    let tls = read_json(&report)["tls"].clone();
    assert_eq!(tls["decrypted"], 3, "{tls}");
    assert_eq!(tls["without_keys"], 1, "{tls}");
}
