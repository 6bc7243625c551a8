//! Cipher suites this decryptor knows (RFC 8446 §B.4; RFC 5289, RFC 7905 for TLS 1.2) and
//! record protection with their AEADs (RFC 8446 §5.2-5.3; RFC 5288 §3; RFC 7905 §2).

use super::schedule::HashAlg;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;

/// The AEAD of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadAlg {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    ChaCha20Poly1305,
}

impl AeadAlg {
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            AeadAlg::Aes128Gcm => 16,
            AeadAlg::Aes256Gcm | AeadAlg::ChaCha20Poly1305 => 32,
        }
    }
}

/// A supported cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// IANA value.
    pub id: u16,
    /// IANA name.
    pub name: &'static str,
    /// TLS 1.3 suite (else TLS 1.2).
    pub tls13: bool,
    /// HKDF / PRF hash.
    pub hash: HashAlg,
    /// The AEAD.
    pub aead: AeadAlg,
}

const fn s(id: u16, name: &'static str, tls13: bool, hash: HashAlg, aead: AeadAlg) -> Suite {
    Suite {
        id,
        name,
        tls13,
        hash,
        aead,
    }
}

/// Every suite decrypted here.
pub const SUITES: [Suite; 11] = [
    s(
        0x1301,
        "TLS_AES_128_GCM_SHA256",
        true,
        HashAlg::Sha256,
        AeadAlg::Aes128Gcm,
    ),
    s(
        0x1302,
        "TLS_AES_256_GCM_SHA384",
        true,
        HashAlg::Sha384,
        AeadAlg::Aes256Gcm,
    ),
    s(
        0x1303,
        "TLS_CHACHA20_POLY1305_SHA256",
        true,
        HashAlg::Sha256,
        AeadAlg::ChaCha20Poly1305,
    ),
    s(
        0xC02B,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        false,
        HashAlg::Sha256,
        AeadAlg::Aes128Gcm,
    ),
    s(
        0xC02C,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        false,
        HashAlg::Sha384,
        AeadAlg::Aes256Gcm,
    ),
    s(
        0xC02F,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        false,
        HashAlg::Sha256,
        AeadAlg::Aes128Gcm,
    ),
    s(
        0xC030,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        false,
        HashAlg::Sha384,
        AeadAlg::Aes256Gcm,
    ),
    s(
        0xCCA8,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        false,
        HashAlg::Sha256,
        AeadAlg::ChaCha20Poly1305,
    ),
    s(
        0xCCA9,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        false,
        HashAlg::Sha256,
        AeadAlg::ChaCha20Poly1305,
    ),
    s(
        0x009C,
        "TLS_RSA_WITH_AES_128_GCM_SHA256",
        false,
        HashAlg::Sha256,
        AeadAlg::Aes128Gcm,
    ),
    s(
        0x009D,
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        false,
        HashAlg::Sha384,
        AeadAlg::Aes256Gcm,
    ),
];

/// The suite with IANA value `id`, if supported.
pub fn suite(id: u16) -> Option<Suite> {
    SUITES.iter().copied().find(|s| s.id == id)
}

/// A name for any suite value: the IANA name when supported, else its hex value.
pub fn suite_name(id: u16) -> String {
    match suite(id) {
        Some(s) => s.name.to_string(),
        // A few common ones we do not decrypt, named so that the report says what they are.
        None => match id {
            0xC013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into(),
            0xC014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA".into(),
            0xC009 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA".into(),
            0xC00A => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA".into(),
            0x002F => "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
            0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA".into(),
            0x1304 => "TLS_AES_128_CCM_SHA256".into(),
            0x1305 => "TLS_AES_128_CCM_8_SHA256".into(),
            _ => format!("0x{id:04X}"),
        },
    }
}

enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// A record that failed authentication (a wrong key, or damaged bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record failed authentication")]
pub struct AuthFailed;

/// One direction's record protection: key, IV and sequence number.
pub struct RecordKey {
    cipher: Cipher,
    iv: [u8; 12],
    /// TLS 1.2 AES-GCM: 4-byte implicit salt + 8-byte explicit nonce in each record.
    explicit_nonce: bool,
    tls13: bool,
    seq: u64,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordKey").field("seq", &self.seq).finish()
    }
}

/// AEAD tag length of every suite here.
const TAG: usize = 16;

impl RecordKey {
    /// A TLS 1.3 key (`iv` 12 bytes) or a TLS 1.2 key (`iv` the 4-byte GCM salt or the
    /// 12-byte ChaCha20 IV). `None` for a key of the wrong length.
    pub fn new(aead: AeadAlg, tls13: bool, key: &[u8], iv: &[u8]) -> Option<RecordKey> {
        let cipher = match aead {
            AeadAlg::Aes128Gcm => Cipher::Aes128(Box::new(Aes128Gcm::new_from_slice(key).ok()?)),
            AeadAlg::Aes256Gcm => Cipher::Aes256(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            AeadAlg::ChaCha20Poly1305 => {
                Cipher::ChaCha(Box::new(ChaCha20Poly1305::new_from_slice(key).ok()?))
            }
        };
        let explicit_nonce = !tls13 && aead != AeadAlg::ChaCha20Poly1305;
        let mut full = [0u8; 12];
        match (explicit_nonce, iv.len()) {
            (true, 4) => full[..4].copy_from_slice(iv),
            (false, 12) => full.copy_from_slice(iv),
            _ => return None,
        }
        Some(RecordKey {
            cipher,
            iv: full,
            explicit_nonce,
            tls13,
            seq: 0,
        })
    }

    /// Records opened so far (the next record's sequence number).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn xor_nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    fn run(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut Vec<u8>,
        seal: bool,
    ) -> Result<(), AuthFailed> {
        let nonce = aes_gcm::Nonce::from_slice(nonce);
        let r = match (&self.cipher, seal) {
            (Cipher::Aes128(c), false) => c.decrypt_in_place(nonce, aad, buf),
            (Cipher::Aes256(c), false) => c.decrypt_in_place(nonce, aad, buf),
            (Cipher::ChaCha(c), false) => c.decrypt_in_place(nonce, aad, buf),
            (Cipher::Aes128(c), true) => c.encrypt_in_place(nonce, aad, buf),
            (Cipher::Aes256(c), true) => c.encrypt_in_place(nonce, aad, buf),
            (Cipher::ChaCha(c), true) => c.encrypt_in_place(nonce, aad, buf),
        };
        r.map_err(|_| AuthFailed)
    }

    /// Opens a protected record (`header` is its 5-byte header, `content_type` the outer type).
    /// TLS 1.3: returns the inner content type and content (padding removed). TLS 1.2: the
    /// outer type and the plaintext. The sequence number moves on success only, so a record
    /// that fails (a stray one) does not desynchronise the ones after it.
    pub fn open(&mut self, header: &[u8; 5], fragment: &[u8]) -> Result<(u8, Vec<u8>), AuthFailed> {
        if self.tls13 {
            let mut buf = fragment.to_vec();
            self.run(&self.xor_nonce(), header, &mut buf, false)?;
            self.seq = self.seq.wrapping_add(1);
            // RFC 8446 §5.2: content || type || zeros.
            let end = buf.iter().rposition(|&b| b != 0).ok_or(AuthFailed)?;
            let typ = buf[end];
            buf.truncate(end);
            return Ok((typ, buf));
        }
        let (nonce, body) = if self.explicit_nonce {
            let explicit = fragment.get(..8).ok_or(AuthFailed)?;
            let mut n = self.iv;
            n[4..].copy_from_slice(explicit);
            (n, &fragment[8..])
        } else {
            (self.xor_nonce(), fragment)
        };
        let plain_len = body.len().checked_sub(TAG).ok_or(AuthFailed)?;
        // RFC 5246 §6.2.3.3: seq_num + type + version + length of the plaintext.
        let mut aad = [0u8; 13];
        aad[..8].copy_from_slice(&self.seq.to_be_bytes());
        aad[8..11].copy_from_slice(&header[..3]);
        aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
        let mut buf = body.to_vec();
        self.run(&nonce, &aad, &mut buf, false)?;
        self.seq = self.seq.wrapping_add(1);
        Ok((header[0], buf))
    }

    /// Protects `content` as one record of `content_type`, the inverse of [`RecordKey::open`]
    /// (used by tests and the fuzz target's seeds). TLS 1.2 explicit nonces are the sequence number.
    pub fn seal(&mut self, content_type: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.tls13 {
            let mut buf = [content, &[content_type]].concat();
            let len = (buf.len() + TAG) as u16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            // Sealing into a Vec cannot fail.
            let _ = self.run(&self.xor_nonce(), &header, &mut buf, true);
            out.extend_from_slice(&header);
            out.extend_from_slice(&buf);
        } else {
            let explicit = if self.explicit_nonce { 8 } else { 0 };
            let len = (content.len() + TAG + explicit) as u16;
            let header = [content_type, 3, 3, (len >> 8) as u8, len as u8];
            let mut aad = [0u8; 13];
            aad[..8].copy_from_slice(&self.seq.to_be_bytes());
            aad[8..11].copy_from_slice(&header[..3]);
            aad[11..].copy_from_slice(&(content.len() as u16).to_be_bytes());
            let nonce = if self.explicit_nonce {
                let mut n = self.iv;
                n[4..].copy_from_slice(&self.seq.to_be_bytes());
                n
            } else {
                self.xor_nonce()
            };
            let mut buf = content.to_vec();
            let _ = self.run(&nonce, &aad, &mut buf, true);
            out.extend_from_slice(&header);
            if self.explicit_nonce {
                out.extend_from_slice(&self.seq.to_be_bytes());
            }
            out.extend_from_slice(&buf);
        }
        self.seq = self.seq.wrapping_add(1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::schedule::traffic_key_iv;
    use hex_literal::hex;

    #[test]
    fn rfc8448_client_finished_and_application_data() {
        // RFC 8448 §3: the client's Finished under its handshake keys...
        let c_hs = hex!("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21");
        let (key, iv) = traffic_key_iv(HashAlg::Sha256, &c_hs, 16).unwrap();
        let mut k = RecordKey::new(AeadAlg::Aes128Gcm, true, &key, &iv).unwrap();
        let rec = hex!(
            "17 03 03 00 35 75 ec 4d c2 38 cc e6 0b 29 80 44 a7 1e 21 9c 56 cc 77 b0 51 7f e9 b9
             3c 7a 4b fc 44 d8 7f 38 f8 03 38 ac 98 fc 46 de b3 84 bd 1c ae ac ab 68 67 d7 26 c4
             05 46"
        );
        let header: [u8; 5] = rec[..5].try_into().unwrap();
        let (typ, body) = k.open(&header, &rec[5..]).unwrap();
        assert_eq!(typ, 22);
        assert_eq!(
            body,
            hex!("14 00 00 20 a8 ec 43 6d 67 76 34 ae 52 5a c1 fc eb e1 1a 03 9e c1 76 94 fa c6 e9 85 27 b6 42 f2 ed d5 ce 61")
        );
        // ... and sealing it again gives the same bytes.
        let mut k2 = RecordKey::new(AeadAlg::Aes128Gcm, true, &key, &iv).unwrap();
        assert_eq!(k2.seal(22, &body), rec);
        // ... then 50 bytes of application data under its application keys.
        let c_ap = hex!("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5");
        let (key, iv) = traffic_key_iv(HashAlg::Sha256, &c_ap, 16).unwrap();
        let mut k = RecordKey::new(AeadAlg::Aes128Gcm, true, &key, &iv).unwrap();
        let rec = hex!(
            "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa
             66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2
             97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4"
        );
        let header: [u8; 5] = rec[..5].try_into().unwrap();
        let (typ, body) = k.open(&header, &rec[5..]).unwrap();
        assert_eq!(typ, 23);
        assert_eq!(body, (0u8..50).collect::<Vec<_>>());
        // A flipped bit fails authentication and does not advance the sequence number.
        let mut bad = rec;
        bad[20] ^= 1;
        let mut k = RecordKey::new(AeadAlg::Aes128Gcm, true, &key, &iv).unwrap();
        assert_eq!(k.open(&header, &bad[5..]), Err(AuthFailed));
        assert_eq!(k.seq(), 0);
        assert!(k.open(&header, &rec[5..]).is_ok());
    }

    #[test]
    fn tls12_seal_open_every_suite() {
        for s in SUITES.iter().filter(|s| !s.tls13) {
            let key = vec![7u8; s.aead.key_len()];
            let iv: &[u8] = if s.aead == AeadAlg::ChaCha20Poly1305 {
                &[9; 12]
            } else {
                &[9; 4]
            };
            let mut a = RecordKey::new(s.aead, false, &key, iv).unwrap();
            let mut b = RecordKey::new(s.aead, false, &key, iv).unwrap();
            for msg in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0u8; 3000][..], b""] {
                let rec = a.seal(23, msg);
                let header: [u8; 5] = rec[..5].try_into().unwrap();
                assert_eq!(
                    b.open(&header, &rec[5..]).unwrap(),
                    (23, msg.to_vec()),
                    "{}",
                    s.name
                );
            }
            assert!(b.open(&[23, 3, 3, 0, 3], &[1, 2, 3]).is_err());
        }
        assert!(RecordKey::new(AeadAlg::Aes128Gcm, false, &[0; 16], &[0; 12]).is_none());
        assert_eq!(suite_name(0xC013), "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA");
        assert_eq!(suite_name(0xABCD), "0xABCD");
    }
}
