//! The TLS record layer (RFC 8446 §5.1, RFC 5246 §6.2) over one direction's reassembled byte
//! stream, and handshake messages (RFC 8446 §4) over the records' fragments.
//!
//! Never panics on input: a stream that is not TLS is an error with its offset; a record or a
//! message cut short (capture loss, the end of the capture) is what [`RecordBuffer::pending`]
//! reports at the end.

/// ContentType change_cipher_spec (RFC 8446 §5.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
/// ContentType alert.
pub const ALERT: u8 = 21;
/// ContentType handshake.
pub const HANDSHAKE: u8 = 22;
/// ContentType application_data.
pub const APPLICATION_DATA: u8 = 23;

/// Largest record fragment accepted: 2^14 plus TLS 1.2's expansion allowance (RFC 5246 §6.2.3).
pub const MAX_FRAGMENT: usize = (1 << 14) + 2048;
/// Largest handshake message kept (certificate chains are the big ones).
pub const MAX_HANDSHAKE: usize = 1 << 18;

/// A record that the stream cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The header is not a TLS record header (unknown content type or version).
    #[error("byte {offset}: not a TLS record (type {content_type}, version {version:#06x})")]
    NotTls {
        /// Offset of the header in the direction's stream.
        offset: u64,
        /// Content type byte seen.
        content_type: u8,
        /// Version seen.
        version: u16,
    },
    /// The length is beyond what TLS allows.
    #[error("byte {offset}: record of {len} bytes is longer than TLS allows")]
    TooLong {
        /// Offset of the header in the direction's stream.
        offset: u64,
        /// The length field.
        len: usize,
    },
    /// A handshake message longer than [`MAX_HANDSHAKE`].
    #[error("handshake message of {len} bytes is too long")]
    HandshakeTooLong {
        /// Its length field.
        len: usize,
    },
}

/// One record as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// ContentType.
    pub content_type: u8,
    /// legacy_record_version.
    pub version: u16,
    /// The 5-byte header (the AEAD's additional data in TLS 1.3).
    pub header: [u8; 5],
    /// The fragment (ciphertext once protected).
    pub fragment: &'a [u8],
}

/// Parses the record at the start of `buf`: `Ok(None)` when `buf` holds less than one record,
/// else the record and its length on the wire. `offset` only names the place in errors.
pub fn parse_record(buf: &[u8], offset: u64) -> Result<Option<(Record<'_>, usize)>, RecordError> {
    let Some(header) = buf.get(..5) else {
        // Check what is there already: a stream that is not TLS fails on its first byte.
        if let Some(&t) = buf.first() {
            if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&t) {
                return Err(RecordError::NotTls {
                    offset,
                    content_type: t,
                    version: 0,
                });
            }
        }
        return Ok(None);
    };
    let content_type = header[0];
    let version = u16::from_be_bytes([header[1], header[2]]);
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    // SSL 3.0 .. TLS 1.2 record versions (TLS 1.3 uses 0x0303, or 0x0301 in a first ClientHello).
    if !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&content_type)
        || !(0x0300..=0x0304).contains(&version)
    {
        return Err(RecordError::NotTls {
            offset,
            content_type,
            version,
        });
    }
    if len > MAX_FRAGMENT {
        return Err(RecordError::TooLong { offset, len });
    }
    let Some(fragment) = buf.get(5..5 + len) else {
        return Ok(None);
    };
    let header: [u8; 5] = [header[0], header[1], header[2], header[3], header[4]];
    Ok(Some((
        Record {
            content_type,
            version,
            header,
            fragment,
        },
        5 + len,
    )))
}

/// A record's 5-byte header and its owned fragment.
pub type OwnedRecord = ([u8; 5], Vec<u8>);

/// Bytes of one direction not yet cut into records.
#[derive(Debug, Default, Clone)]
pub struct RecordBuffer {
    buf: Vec<u8>,
    start: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
}

impl RecordBuffer {
    /// Appends in-order bytes of the direction.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole record: its header and an owned fragment.
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>, RecordError> {
        match parse_record(&self.buf[self.start..], self.offset)? {
            None => Ok(None),
            Some((rec, n)) => {
                let out = (rec.header, rec.fragment.to_vec());
                self.start += n;
                self.offset += n as u64;
                Ok(Some(out))
            }
        }
    }

    /// Bytes held that do not make a whole record (a record cut when the stream ends).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Handshake messages reassembled from handshake record fragments (a message may span records,
/// a record may hold several messages).
#[derive(Debug, Default, Clone)]
pub struct HandshakeBuffer {
    buf: Vec<u8>,
}

impl HandshakeBuffer {
    /// Appends a handshake record's (decrypted) fragment.
    pub fn push(&mut self, fragment: &[u8]) {
        self.buf.extend_from_slice(fragment);
    }

    /// The next whole message: its type and body.
    pub fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, RecordError> {
        let Some(h) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        if len > MAX_HANDSHAKE {
            return Err(RecordError::HandshakeTooLong { len });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let typ = h[0];
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some((typ, body)))
    }

    /// Bytes of a message not yet whole.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_across_pushes() {
        let mut rb = RecordBuffer::default();
        rb.push(&[22, 3, 1, 0, 3, 1]);
        assert_eq!(rb.next_record().unwrap(), None);
        rb.push(&[2, 3, 23, 3, 3, 0, 1]);
        let (h, f) = rb.next_record().unwrap().unwrap();
        assert_eq!((h, f), ([22, 3, 1, 0, 3], vec![1, 2, 3]));
        assert_eq!(rb.next_record().unwrap(), None);
        assert_eq!(rb.pending(), 5);
        rb.push(&[9]);
        assert_eq!(rb.next_record().unwrap().unwrap().1, vec![9]);
        assert_eq!(rb.pending(), 0);
    }

    #[test]
    fn not_tls_and_too_long() {
        let mut rb = RecordBuffer::default();
        rb.push(b"GET / HTTP/1.1\r\n");
        assert!(matches!(
            rb.next_record(),
            Err(RecordError::NotTls { offset: 0, .. })
        ));
        assert!(matches!(
            parse_record(b"G", 0),
            Err(RecordError::NotTls { .. })
        ));
        assert!(matches!(
            parse_record(&[23, 3, 3, 0xff, 0xff], 7),
            Err(RecordError::TooLong {
                offset: 7,
                len: 65535
            })
        ));
        assert_eq!(parse_record(&[23, 3, 3], 0), Ok(None));
    }

    #[test]
    fn handshake_messages_span_records() {
        let mut hb = HandshakeBuffer::default();
        hb.push(&[1, 0, 0, 3, 7]);
        assert_eq!(hb.next_message().unwrap(), None);
        hb.push(&[8, 9, 20, 0, 0, 0]);
        assert_eq!(hb.next_message().unwrap(), Some((1, vec![7, 8, 9])));
        assert_eq!(hb.next_message().unwrap(), Some((20, vec![])));
        assert_eq!(hb.pending(), 0);
        hb.push(&[11, 0xff, 0xff, 0xff]);
        assert!(hb.next_message().is_err());
    }
}
