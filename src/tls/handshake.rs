//! ClientHello, ServerHello and EncryptedExtensions: the fields the decryptor and the report
//! need (RFC 8446 §4.1.2, §4.1.3, §4.3.1; RFC 5246 §7.4.1). Pure parsers over message bodies;
//! malformed input is `None`, never a panic.

/// Handshake type client_hello (RFC 8446 §4).
pub const CLIENT_HELLO: u8 = 1;
/// Handshake type server_hello.
pub const SERVER_HELLO: u8 = 2;
/// Handshake type new_session_ticket.
pub const NEW_SESSION_TICKET: u8 = 4;
/// Handshake type end_of_early_data.
pub const END_OF_EARLY_DATA: u8 = 5;
/// Handshake type encrypted_extensions.
pub const ENCRYPTED_EXTENSIONS: u8 = 8;
/// Handshake type finished.
pub const FINISHED: u8 = 20;
/// Handshake type key_update.
pub const KEY_UPDATE: u8 = 24;

/// Extension server_name (RFC 6066 §3).
pub const EXT_SERVER_NAME: u16 = 0;
/// Extension application_layer_protocol_negotiation (RFC 7301).
pub const EXT_ALPN: u16 = 16;
/// Extension pre_shared_key (RFC 8446 §4.2.11).
pub const EXT_PRE_SHARED_KEY: u16 = 41;
/// Extension early_data (RFC 8446 §4.2.10).
pub const EXT_EARLY_DATA: u16 = 42;
/// Extension supported_versions (RFC 8446 §4.2.1).
pub const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// TLS 1.2's version number.
pub const TLS12: u16 = 0x0303;
/// TLS 1.3's version number.
pub const TLS13: u16 = 0x0304;

/// ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446 §4.1.3).
pub const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// A cursor over a message body.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Extensions as (type, data), in order.
fn extensions(mut c: Cur<'_>) -> Option<Vec<(u16, &[u8])>> {
    // TLS 1.2 hellos may have no extensions block at all.
    if c.0.is_empty() {
        return Some(Vec::new());
    }
    let mut block = Cur(c.vec16()?);
    let mut out = Vec::new();
    while !block.0.is_empty() {
        let t = block.u16()?;
        out.push((t, block.vec16()?));
    }
    Some(out)
}

/// The fields of a ClientHello that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// ClientHello.random: the key of the key log.
    pub random: [u8; 32],
    /// legacy_session_id (TLS 1.2 resumption by session id).
    pub session_id: Vec<u8>,
    /// Offered cipher suites.
    pub cipher_suites: Vec<u16>,
    /// server_name's host name.
    pub sni: Option<String>,
    /// Offered ALPN protocols.
    pub alpn: Vec<Vec<u8>>,
    /// supported_versions list (empty: TLS 1.2 or earlier only).
    pub versions: Vec<u16>,
    /// A pre_shared_key extension is present (TLS 1.3 resumption).
    pub psk: bool,
    /// An early_data extension is present (0-RTT).
    pub early_data: bool,
}

/// Parses a ClientHello body.
pub fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut c = Cur(body);
    c.u16()?;
    let random: [u8; 32] = c.take(32)?.try_into().ok()?;
    let session_id = c.vec8()?.to_vec();
    let suites = c.vec16()?;
    let cipher_suites = suites
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    c.vec8()?;
    let mut ch = ClientHello {
        random,
        session_id,
        cipher_suites,
        ..Default::default()
    };
    for (t, data) in extensions(c)? {
        match t {
            EXT_SERVER_NAME => {
                let mut list = Cur(Cur(data).vec16()?);
                while !list.0.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        ch.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            EXT_ALPN => ch.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => {
                ch.versions = Cur(data)
                    .vec8()?
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
            }
            EXT_PRE_SHARED_KEY => ch.psk = true,
            EXT_EARLY_DATA => ch.early_data = true,
            _ => {}
        }
    }
    Some(ch)
}

fn parse_alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut list = Cur(Cur(data).vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        out.push(list.vec8()?.to_vec());
    }
    Some(out)
}

/// The fields of a ServerHello (or HelloRetryRequest) that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerHello {
    /// ServerHello.random (the TLS 1.2 key block's seed).
    pub random: [u8; 32],
    /// legacy_session_id_echo.
    pub session_id: Vec<u8>,
    /// The chosen cipher suite.
    pub cipher_suite: u16,
    /// The negotiated version: supported_versions' selection, else legacy_version.
    pub version: u16,
    /// The random is [`HRR_RANDOM`]: a HelloRetryRequest, a second ClientHello follows.
    pub retry: bool,
    /// TLS 1.2 ALPN selection (TLS 1.3 sends it in EncryptedExtensions).
    pub alpn: Option<Vec<u8>>,
    /// The server accepted a PSK (TLS 1.3 resumption).
    pub psk: bool,
}

/// Parses a ServerHello body.
pub fn parse_server_hello(body: &[u8]) -> Option<ServerHello> {
    let mut c = Cur(body);
    let legacy = c.u16()?;
    let random: [u8; 32] = c.take(32)?.try_into().ok()?;
    let session_id = c.vec8()?.to_vec();
    let cipher_suite = c.u16()?;
    c.u8()?;
    let mut sh = ServerHello {
        random,
        session_id,
        cipher_suite,
        version: legacy,
        retry: random == HRR_RANDOM,
        ..Default::default()
    };
    for (t, data) in extensions(c)? {
        match t {
            EXT_SUPPORTED_VERSIONS => sh.version = Cur(data).u16()?,
            EXT_ALPN => sh.alpn = parse_alpn(data)?.into_iter().next(),
            EXT_PRE_SHARED_KEY => sh.psk = true,
            _ => {}
        }
    }
    Some(sh)
}

/// EncryptedExtensions' ALPN selection and whether early data was accepted.
pub fn parse_encrypted_extensions(body: &[u8]) -> Option<(Option<Vec<u8>>, bool)> {
    let mut alpn = None;
    let mut early = false;
    for (t, data) in extensions(Cur(body))? {
        match t {
            EXT_ALPN => alpn = parse_alpn(data)?.into_iter().next(),
            EXT_EARLY_DATA => early = true,
            _ => {}
        }
    }
    Some((alpn, early))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hex_literal::hex;

    /// RFC 8448 §3: the simple 1-RTT handshake's ClientHello body (after the 4-byte header).
    pub(crate) const RFC8448_CH: [u8; 192] = hex!(
        "03 03 cb 34 ec b1 e7 81 63 ba 1c 38 c6 da cb 19 6a 6d ff a2 1a 8d 99 12 ec 18 a2 ef 62 83
         02 4d ec e7 00 00 06 13 01 13 03 13 02 01 00 00 91 00 00 00 0b 00 09 00 00 06 73 65 72 76
         65 72 ff 01 00 01 00 00 0a 00 14 00 12 00 1d 00 17 00 18 00 19 01 00 01 01 01 02 01 03 01
         04 00 23 00 00 00 33 00 26 00 24 00 1d 00 20 99 38 1d e5 60 e4 bd 43 d2 3d 8e 43 5a 7d ba
         fe b3 c0 6e 51 c1 3c ae 4d 54 13 69 1e 52 9a af 2c 00 2b 00 03 02 03 04 00 0d 00 20 00 1e
         04 03 05 03 06 03 02 03 08 04 08 05 08 06 04 01 05 01 06 01 02 01 04 02 05 02 06 02 02 02
         00 2d 00 02 01 01 00 1c 00 02 40 01"
    );

    /// RFC 8448 §3: its ServerHello body.
    pub(crate) const RFC8448_SH: [u8; 86] = hex!(
        "03 03 a6 af 06 a4 12 18 60 dc 5e 6e 60 24 9c d3 4c 95 93 0c 8a c5 cb 14 34 da c1 55 77 2e
         d3 e2 69 28 00 13 01 00 00 2e 00 33 00 24 00 1d 00 20 c9 82 88 76 11 20 95 fe 66 76 2b db
         f7 c6 72 e1 56 d6 cc 25 3b 83 3d f1 dd 69 b1 b0 4e 75 1f 0f 00 2b 00 02 03 04"
    );

    #[test]
    fn rfc8448_client_hello() {
        let ch = parse_client_hello(&RFC8448_CH).unwrap();
        assert_eq!(ch.random[..4], hex!("cb34ecb1"));
        assert_eq!(ch.cipher_suites, vec![0x1301, 0x1303, 0x1302]);
        assert_eq!(ch.sni.as_deref(), Some("server"));
        assert_eq!(ch.versions, vec![TLS13]);
        assert!(!ch.psk && !ch.early_data && ch.alpn.is_empty());
    }

    #[test]
    fn rfc8448_server_hello() {
        let sh = parse_server_hello(&RFC8448_SH).unwrap();
        assert_eq!(sh.cipher_suite, 0x1301);
        assert_eq!(sh.version, TLS13);
        assert!(!sh.retry);
        let mut hrr = RFC8448_SH;
        hrr[2..34].copy_from_slice(&HRR_RANDOM);
        assert!(parse_server_hello(&hrr).unwrap().retry);
    }

    #[test]
    fn truncated_is_none_at_every_length() {
        for n in 0..RFC8448_CH.len() {
            // Cutting inside the extensions block must not panic; it may still parse when the
            // cut falls at the end of the block-less TLS 1.2 form.
            let _ = parse_client_hello(&RFC8448_CH[..n]);
        }
        for n in 0..RFC8448_SH.len() {
            let _ = parse_server_hello(&RFC8448_SH[..n]);
        }
        assert!(parse_client_hello(&RFC8448_CH[..100]).is_none());
    }
}
