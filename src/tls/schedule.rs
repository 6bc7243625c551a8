//! Key schedules: TLS 1.3's HKDF-Expand-Label (RFC 8446 §7.1, §7.2, §7.3) and TLS 1.2's PRF
//! (RFC 5246 §5, §6.3). Pure functions of the logged secrets.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384};

/// The hash of a cipher suite (its HKDF and PRF hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
}

impl HashAlg {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
        }
    }
}

/// HKDF-Expand-Label(secret, label, context, len) (RFC 8446 §7.1). `None` when `secret` is not a
/// valid PRK for the hash (shorter than its output) or `len` is too long for HKDF.
pub fn hkdf_expand_label(
    hash: HashAlg,
    secret: &[u8],
    label: &str,
    context: &[u8],
    len: usize,
) -> Option<Vec<u8>> {
    let full = [b"tls13 ", label.as_bytes()].concat();
    let mut info = Vec::with_capacity(4 + full.len() + context.len());
    info.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
    info.push(u8::try_from(full.len()).ok()?);
    info.extend_from_slice(&full);
    info.push(u8::try_from(context.len()).ok()?);
    info.extend_from_slice(context);
    let mut out = vec![0u8; len];
    match hash {
        HashAlg::Sha256 => Hkdf::<Sha256>::from_prk(secret)
            .ok()?
            .expand(&info, &mut out)
            .ok()?,
        HashAlg::Sha384 => Hkdf::<Sha384>::from_prk(secret)
            .ok()?
            .expand(&info, &mut out)
            .ok()?,
    }
    Some(out)
}

/// The write key and IV of a TLS 1.3 traffic secret (RFC 8446 §7.3).
pub fn traffic_key_iv(hash: HashAlg, secret: &[u8], key_len: usize) -> Option<(Vec<u8>, [u8; 12])> {
    let key = hkdf_expand_label(hash, secret, "key", &[], key_len)?;
    let iv = hkdf_expand_label(hash, secret, "iv", &[], 12)?;
    Some((key, iv.try_into().ok()?))
}

/// The next traffic secret after a KeyUpdate (RFC 8446 §7.2).
pub fn next_traffic_secret(hash: HashAlg, secret: &[u8]) -> Option<Vec<u8>> {
    hkdf_expand_label(hash, secret, "traffic upd", &[], hash.output_len())
}

fn p_hash<M: Mac + hmac::digest::KeyInit + Clone>(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    // RFC 5246 §5: A(i) = HMAC(secret, A(i-1)); output = HMAC(secret, A(i) + seed) ...
    let Ok(base) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this branch cannot be reached.
        return;
    };
    let mut a = {
        let mut m = base.clone();
        m.update(seed);
        m.finalize().into_bytes()
    };
    let mut off = 0;
    while off < out.len() {
        let mut m = base.clone();
        m.update(&a);
        m.update(seed);
        let block = m.finalize().into_bytes();
        let n = (out.len() - off).min(block.len());
        out[off..off + n].copy_from_slice(&block[..n]);
        off += n;
        let mut m = base.clone();
        m.update(&a);
        a = m.finalize().into_bytes();
    }
}

/// The TLS 1.2 PRF: P_<hash>(secret, label + seed) (RFC 5246 §5).
pub fn prf12(hash: HashAlg, secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let s = [label, seed].concat();
    let mut out = vec![0u8; len];
    match hash {
        HashAlg::Sha256 => p_hash::<Hmac<Sha256>>(secret, &s, &mut out),
        HashAlg::Sha384 => p_hash::<Hmac<Sha384>>(secret, &s, &mut out),
    }
    out
}

/// The TLS 1.2 key block: PRF(master, "key expansion", server_random + client_random)
/// (RFC 5246 §6.3).
pub fn key_block12(
    hash: HashAlg,
    master: &[u8],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    len: usize,
) -> Vec<u8> {
    let seed = [&server_random[..], &client_random[..]].concat();
    prf12(hash, master, b"key expansion", &seed, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // RFC 8448 §3 (simple 1-RTT handshake, TLS_AES_128_GCM_SHA256).
    const SERVER_HS: [u8; 32] =
        hex!("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38");
    const CLIENT_HS: [u8; 32] =
        hex!("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21");
    const HANDSHAKE_SECRET: [u8; 32] =
        hex!("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac");
    const HELLO_HASH: [u8; 32] =
        hex!("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8");

    #[test]
    fn rfc8448_derive_secret_and_traffic_keys() {
        assert_eq!(
            hkdf_expand_label(
                HashAlg::Sha256,
                &HANDSHAKE_SECRET,
                "s hs traffic",
                &HELLO_HASH,
                32
            )
            .unwrap(),
            SERVER_HS
        );
        assert_eq!(
            hkdf_expand_label(
                HashAlg::Sha256,
                &HANDSHAKE_SECRET,
                "c hs traffic",
                &HELLO_HASH,
                32
            )
            .unwrap(),
            CLIENT_HS
        );
        let (key, iv) = traffic_key_iv(HashAlg::Sha256, &SERVER_HS, 16).unwrap();
        assert_eq!(key, hex!("3fce516009c21727d0f2e4e86ee403bc"));
        assert_eq!(iv, hex!("5d313eb2671276ee13000b30"));
        let (key, iv) = traffic_key_iv(HashAlg::Sha256, &CLIENT_HS, 16).unwrap();
        assert_eq!(key, hex!("dbfaa693d1762c5b666af5d950258d01"));
        assert_eq!(iv, hex!("5bd3c71b836e0b76bb73265f"));
        // Server application traffic secret 0 → key and IV.
        let s_ap = hex!("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let (key, iv) = traffic_key_iv(HashAlg::Sha256, &s_ap, 16).unwrap();
        assert_eq!(key, hex!("9f02283b6c9c07efc26bb9f2ac92e356"));
        assert_eq!(iv, hex!("cf782b88dd83549aadf1e984"));
    }

    #[test]
    fn key_update_changes_the_secret_and_bad_prk_is_none() {
        let next = next_traffic_secret(HashAlg::Sha256, &SERVER_HS).unwrap();
        assert_eq!(next.len(), 32);
        assert_ne!(next, SERVER_HS);
        assert!(hkdf_expand_label(HashAlg::Sha384, &SERVER_HS, "key", &[], 32).is_none());
    }

    #[test]
    fn tls12_prf_sha256_vector() {
        // The widely used TLS 1.2 PRF-SHA256 test vector (from the IETF TLS WG mailing list,
        // also in Go's and BoringSSL's tests).
        let secret = hex!("9bbe436ba940f017b17652849a71db35");
        let seed = hex!("a0ba9f936cda311827a6f796ffd5198c");
        let out = prf12(HashAlg::Sha256, &secret, b"test label", &seed, 100);
        assert_eq!(
            out,
            hex!(
                "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66"
            )
        );
    }
}
