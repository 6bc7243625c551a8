//! The key schedule of a [`TlsSession`] driven by the handshake: ClientHello and ServerHello
//! (version and suite), EncryptedExtensions, Finished, EndOfEarlyData and KeyUpdate install
//! each direction's next keys (TLS 1.3); TLS 1.2 takes its key block from the master secret.
//!
//! Owns the choice of keys only; it must never decrypt records nor put key material in an
//! error.

use super::{hex, Origin, Phase, SessionStatus, TlsError, TlsSession};
use crate::tls::handshake::{self, TLS12, TLS13};
use crate::tls::keylog::KeyLog;
use crate::tls::schedule::{key_block12, next_traffic_secret, traffic_key_iv};
use crate::tls::suite::{suite, suite_name, AeadAlg, RecordKey};

impl TlsSession {
    pub(super) fn key13(&self, secret: &[u8]) -> Option<RecordKey> {
        let s = self.suite?;
        let (key, iv) = traffic_key_iv(s.hash, secret, s.aead.key_len())?;
        RecordKey::new(s.aead, true, &key, &iv)
    }

    pub(super) fn set13(
        &mut self,
        dir: Origin,
        secret: Vec<u8>,
        phase: Phase,
    ) -> Result<(), TlsError> {
        let name = self.suite.map_or("the suite", |s| s.name);
        if secret.len() != self.suite.map_or(0, |s| s.hash.output_len()) {
            return Err(TlsError::BadSecret(name));
        }
        let key = self.key13(&secret).ok_or(TlsError::BadSecret(name))?;
        let side = &mut self.sides[dir.idx()];
        side.key = Some(key);
        side.secret = secret;
        side.phase = phase;
        Ok(())
    }

    pub(super) fn on_handshake(
        &mut self,
        dir: Origin,
        typ: u8,
        body: &[u8],
        keys: &KeyLog,
    ) -> Result<(), TlsError> {
        let tls13 = self.info.version == Some(TLS13);
        match (dir, typ) {
            (Origin::Client, handshake::CLIENT_HELLO) if self.sides[0].key.is_none() => {
                let ch =
                    handshake::parse_client_hello(body).ok_or(TlsError::BadHello("ClientHello"))?;
                self.info.sni = ch.sni.clone();
                self.info.alpn_offered = ch.alpn.clone();
                self.client_hello = Some(ch);
            }
            (Origin::Server, handshake::SERVER_HELLO) if self.sides[1].key.is_none() => {
                let sh =
                    handshake::parse_server_hello(body).ok_or(TlsError::BadHello("ServerHello"))?;
                if sh.retry {
                    // HelloRetryRequest: the client sends a second ClientHello (same random);
                    // the next ServerHello is the real one.
                    self.info.retry = true;
                    return Ok(());
                }
                if sh.version != TLS12 && sh.version != TLS13 {
                    return Err(TlsError::UnsupportedVersion(sh.version));
                }
                let ch = self
                    .client_hello
                    .as_ref()
                    .ok_or(TlsError::BadHello("ServerHello before ClientHello"))?;
                let s = suite(sh.cipher_suite)
                    .filter(|s| s.tls13 == (sh.version == TLS13))
                    .ok_or_else(|| TlsError::UnsupportedSuite(suite_name(sh.cipher_suite)))?;
                self.info.version = Some(sh.version);
                self.info.suite = Some(s.id);
                self.info.resumed = sh.psk
                    || (sh.version == TLS12
                        && !sh.session_id.is_empty()
                        && sh.session_id == ch.session_id);
                if sh.alpn.is_some() {
                    self.info.alpn = sh.alpn.clone();
                }
                self.server_hello = Some(sh);
                self.suite = Some(s);
                if !self.install_keys(keys)? {
                    self.status = SessionStatus::AwaitingKeys;
                } else {
                    self.status = SessionStatus::Decrypting;
                }
            }
            (Origin::Server, handshake::ENCRYPTED_EXTENSIONS) if tls13 => {
                if let Some((alpn, _early)) = handshake::parse_encrypted_extensions(body) {
                    self.info.alpn = alpn;
                }
            }
            (_, handshake::FINISHED)
                if tls13 && self.sides[dir.idx()].phase == Phase::Handshake =>
            {
                let s = self.secrets.as_ref();
                let secret = match dir {
                    Origin::Client => s.and_then(|s| s.client_traffic.clone()),
                    Origin::Server => s.and_then(|s| s.server_traffic.clone()),
                };
                let secret = secret.ok_or_else(|| self.no_keys())?;
                self.set13(dir, secret, Phase::Application)?;
            }
            (Origin::Client, handshake::END_OF_EARLY_DATA) if tls13 => {
                let secret = self
                    .secrets
                    .as_ref()
                    .and_then(|s| s.client_handshake.clone());
                let secret = secret.ok_or_else(|| self.no_keys())?;
                self.set13(dir, secret, Phase::Handshake)?;
            }
            (_, handshake::KEY_UPDATE)
                if tls13 && self.sides[dir.idx()].phase == Phase::Application =>
            {
                let s = self.suite.map(|s| s.hash);
                let next = s.and_then(|h| next_traffic_secret(h, &self.sides[dir.idx()].secret));
                let next = next.ok_or(TlsError::BadSecret("KeyUpdate"))?;
                self.set13(dir, next, Phase::Application)?;
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn no_keys(&self) -> TlsError {
        TlsError::NoKeys(self.client_random().map(|r| hex(&r)).unwrap_or_default())
    }

    /// Installs the keys of the negotiated suite; `Ok(false)` when the log lacks them.
    pub(super) fn install_keys(&mut self, keys: &KeyLog) -> Result<bool, TlsError> {
        let (Some(ch), Some(sh), Some(s)) = (&self.client_hello, &self.server_hello, self.suite)
        else {
            return Ok(false);
        };
        let Some(secrets) = keys.get(&ch.random) else {
            return Ok(false);
        };
        if s.tls13 {
            let (Some(c), Some(sv), Some(_), Some(_)) = (
                secrets.client_handshake.clone(),
                secrets.server_handshake.clone(),
                secrets.client_traffic.as_ref(),
                secrets.server_traffic.as_ref(),
            ) else {
                return Ok(false);
            };
            let early = secrets.client_early.clone().filter(|_| ch.early_data);
            self.secrets = Some(secrets.clone());
            self.set13(Origin::Server, sv, Phase::Handshake)?;
            match early {
                Some(e) => self.set13(Origin::Client, e, Phase::Early)?,
                None => self.set13(Origin::Client, c, Phase::Handshake)?,
            }
            return Ok(true);
        }
        let Some(master) = secrets.master.as_ref() else {
            return Ok(false);
        };
        // RFC 5246 §6.3 with AEAD suites: no MAC keys; GCM has a 4-byte implicit IV (RFC 5288),
        // ChaCha20-Poly1305 a 12-byte one (RFC 7905).
        let kl = s.aead.key_len();
        let il = if s.aead == AeadAlg::ChaCha20Poly1305 {
            12
        } else {
            4
        };
        let kb = key_block12(s.hash, master, &ch.random, &sh.random, 2 * (kl + il));
        let (ck, rest) = kb.split_at(kl);
        let (sk, rest) = rest.split_at(kl);
        let (civ, siv) = rest.split_at(il);
        let bad = || TlsError::BadSecret(s.name);
        self.sides[0].next_key = Some(RecordKey::new(s.aead, false, ck, civ).ok_or_else(bad)?);
        self.sides[1].next_key = Some(RecordKey::new(s.aead, false, sk, siv).ok_or_else(bad)?);
        self.secrets = Some(secrets.clone());
        Ok(true)
    }
}
