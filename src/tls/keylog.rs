//! The NSS key log format (SSLKEYLOGFILE): one `LABEL <client_random hex> <secret hex>` per line,
//! `#` comments and blank lines ignored. Written by NSS, OpenSSL 3.5+, BoringSSL, rustls, Go's
//! `KeyLogWriter`, curl, Python's `keylog_filename`, Node, HAProxy, Envoy.
//!
//! Errors carry the file and line, never the secret.

use std::collections::HashMap;

/// A TLS client random (ClientHello.random), the key of every key log line.
pub type ClientRandom = [u8; 32];

/// The secrets logged for one handshake (one client random).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// TLS 1.2 (and earlier) master secret, `CLIENT_RANDOM` (48 bytes).
    pub master: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_EARLY_TRAFFIC_SECRET` (0-RTT data).
    pub client_early: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_HANDSHAKE_TRAFFIC_SECRET`.
    pub client_handshake: Option<Vec<u8>>,
    /// TLS 1.3 `SERVER_HANDSHAKE_TRAFFIC_SECRET`.
    pub server_handshake: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_TRAFFIC_SECRET_0`.
    pub client_traffic: Option<Vec<u8>>,
    /// TLS 1.3 `SERVER_TRAFFIC_SECRET_0`.
    pub server_traffic: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    // Which secrets are present, never their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let has = |o: &Option<Vec<u8>>| o.is_some();
        f.debug_struct("Secrets")
            .field("master", &has(&self.master))
            .field("client_early", &has(&self.client_early))
            .field("client_handshake", &has(&self.client_handshake))
            .field("server_handshake", &has(&self.server_handshake))
            .field("client_traffic", &has(&self.client_traffic))
            .field("server_traffic", &has(&self.server_traffic))
            .finish()
    }
}

/// A key log line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLogError {
    /// Not `LABEL RANDOM SECRET`.
    #[error("{file}:{line}: not a key log line (want `LABEL <client random> <secret>`)")]
    Malformed {
        /// File name as given.
        file: String,
        /// 1-based line number.
        line: usize,
    },
    /// The client random is not 64 hex digits.
    #[error("{file}:{line}: the client random is not 32 bytes of hex")]
    BadRandom {
        /// File name as given.
        file: String,
        /// 1-based line number.
        line: usize,
    },
    /// The secret is not hex, or has a length no suite uses.
    #[error(
        "{file}:{line}: {label}: the secret is not hex of a valid length (got {len} characters)"
    )]
    BadSecret {
        /// File name as given.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The line's label.
        label: String,
        /// Length of the secret field in characters.
        len: usize,
    },
    /// A label this reader does not know (kept apart: new labels appear over time).
    #[error("{file}:{line}: unknown label {label}")]
    UnknownLabel {
        /// File name as given.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The label (labels are not secret).
        label: String,
    },
    /// Nothing in the file looked like a key log.
    #[error("{file}: not a key log (no line of the form `LABEL <client random> <secret>`)")]
    NotAKeyLog {
        /// File name as given.
        file: String,
    },
}

/// Secrets by client random, from one or more key log texts.
#[derive(Debug, Clone, Default)]
pub struct KeyLog {
    by_random: HashMap<ClientRandom, Secrets>,
    lines: usize,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((d(p[0])? * 16 + d(p[1])?) as u8))
        .collect()
}

impl KeyLog {
    /// An empty key log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a whole key log text. Bad lines are returned beside the good ones (each skipped);
    /// a text with bad lines and no good one at all is [`KeyLogError::NotAKeyLog`].
    pub fn parse(text: &str, file: &str) -> Result<(KeyLog, Vec<KeyLogError>), KeyLogError> {
        let mut log = KeyLog::new();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Err(e) = log.add_line(line, file, i + 1) {
                bad.push(e);
            }
        }
        if log.lines == 0 && !bad.is_empty() {
            return Err(KeyLogError::NotAKeyLog {
                file: file.to_string(),
            });
        }
        Ok((log, bad))
    }

    /// Adds one line (`line_no` is 1-based, for errors). Comments and blank lines are `Ok`.
    pub fn add_line(&mut self, line: &str, file: &str, line_no: usize) -> Result<(), KeyLogError> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(label), Some(random), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyLogError::Malformed {
                file: file.to_string(),
                line: line_no,
            });
        };
        let random: ClientRandom =
            unhex(random)
                .and_then(|r| r.try_into().ok())
                .ok_or_else(|| KeyLogError::BadRandom {
                    file: file.to_string(),
                    line: line_no,
                })?;
        let bad_secret = || KeyLogError::BadSecret {
            file: file.to_string(),
            line: line_no,
            label: label.chars().take(64).collect(),
            len: secret.len(),
        };
        let value = unhex(secret).ok_or_else(bad_secret)?;
        // RFC 5246 §8.1: the master secret is 48 bytes; TLS 1.3 secrets are a hash long
        // (SHA-256 or SHA-384 for the suites of RFC 8446 §B.4).
        let ok_len = match label {
            "CLIENT_RANDOM" => value.len() == 48,
            _ => value.len() == 32 || value.len() == 48,
        };
        let entry = self.by_random.entry(random).or_default();
        let slot = match label {
            "CLIENT_RANDOM" => &mut entry.master,
            "CLIENT_EARLY_TRAFFIC_SECRET" => &mut entry.client_early,
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET" => &mut entry.client_handshake,
            "SERVER_HANDSHAKE_TRAFFIC_SECRET" => &mut entry.server_handshake,
            "CLIENT_TRAFFIC_SECRET_0" => &mut entry.client_traffic,
            "SERVER_TRAFFIC_SECRET_0" => &mut entry.server_traffic,
            // Logged by some libraries, not needed to decrypt.
            "EXPORTER_SECRET" | "EARLY_EXPORTER_SECRET" => {
                self.lines += 1;
                return Ok(());
            }
            _ => {
                if *entry == Secrets::default() {
                    self.by_random.remove(&random);
                }
                return Err(KeyLogError::UnknownLabel {
                    file: file.to_string(),
                    line: line_no,
                    label: label.chars().take(64).collect(),
                });
            }
        };
        if !ok_len {
            if *entry == Secrets::default() {
                self.by_random.remove(&random);
            }
            return Err(bad_secret());
        }
        *slot = Some(value);
        self.lines += 1;
        Ok(())
    }

    /// The secrets logged for `random`, if any.
    pub fn get(&self, random: &ClientRandom) -> Option<&Secrets> {
        self.by_random.get(random)
    }

    /// Number of handshakes (client randoms) with at least one secret.
    pub fn len(&self) -> usize {
        self.by_random.len()
    }

    /// Whether no secret was read.
    pub fn is_empty(&self) -> bool {
        self.by_random.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn parses_every_label() {
        let text = format!(
            "# comment\n\nCLIENT_RANDOM {R} {m}\nCLIENT_HANDSHAKE_TRAFFIC_SECRET {R} {s}\n\
             SERVER_HANDSHAKE_TRAFFIC_SECRET {R} {s}\nCLIENT_TRAFFIC_SECRET_0 {R} {s}\n\
             SERVER_TRAFFIC_SECRET_0 {R} {s}\nCLIENT_EARLY_TRAFFIC_SECRET {R} {s}\n\
             EXPORTER_SECRET {R} {s}\n",
            m = "ab".repeat(48),
            s = "cd".repeat(32)
        );
        let (log, bad) = KeyLog::parse(&text, "k").unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        let s = log.get(&[1; 32]).unwrap();
        assert_eq!(s.master.as_deref(), Some(&[0xab; 48][..]));
        assert!(s.client_handshake.is_some() && s.server_traffic.is_some());
        assert!(s.client_early.is_some());
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn bad_lines_named_and_skipped_without_the_secret() {
        let secret = "ab".repeat(47);
        let text = format!(
            "CLIENT_RANDOM {R} {secret}\nCLIENT_RANDOM 0102 {m}\nhello\nFOO {R} {m}\n\
             CLIENT_RANDOM {R} {m}\nCLIENT_TRAFFIC_SECRET_0 {R} zz\n",
            m = "ab".repeat(48)
        );
        let (log, bad) = KeyLog::parse(&text, "keys.log").unwrap();
        assert_eq!(log.len(), 1);
        let msgs: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 5, "{msgs:?}");
        assert!(msgs[0].starts_with("keys.log:1: CLIENT_RANDOM: the secret"));
        assert!(msgs[1].starts_with("keys.log:2: the client random"));
        assert!(msgs[2].starts_with("keys.log:3: not a key log line"));
        assert_eq!(msgs[3], "keys.log:4: unknown label FOO");
        assert!(msgs[4].starts_with("keys.log:6:"));
        for m in &msgs {
            assert!(!m.contains("abab"), "a secret leaked: {m}");
        }
        assert!(!format!("{:?}", log.get(&[1; 32])).contains("171"));
    }

    #[test]
    fn not_a_key_log() {
        let e = KeyLog::parse("GET / HTTP/1.1\r\nHost: x\r\n", "f").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f: not a key log (no line of the form `LABEL <client random> <secret>`)"
        );
        // An empty file is an empty key log (a live one may grow).
        assert!(KeyLog::parse("", "f").unwrap().0.is_empty());
    }
}
