//! A batch of captured IP + TCP headers: what a capture hands the router in one message.
//!
//! A ring capture sends the headers of every frame it found ready at once (one channel send and
//! one router wake-up per capture wake-up, not per packet); the libpcap fallback sends batches
//! of one.
//! The headers sit back to back in one buffer, each behind its length, so a batch costs one
//! allocation however many headers it holds.
//!
//! Pure code: it never parses a header, it only stores and returns the bytes it was given.

/// Bytes of the length in front of each header.
const LEN_BYTES: usize = 2;

/// IP + TCP headers, in capture order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBatch {
    buf: Vec<u8>,
    count: usize,
}

impl HeaderBatch {
    /// An empty batch with room for `bytes` bytes of headers.
    pub fn with_capacity(bytes: usize) -> Self {
        HeaderBatch {
            buf: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// A batch holding `header` alone.
    pub fn one(header: &[u8]) -> Self {
        let mut b = HeaderBatch::with_capacity(LEN_BYTES + header.len());
        b.push(header);
        b
    }

    /// Appends `header`; false (and nothing stored) when it is longer than 65,535 bytes,
    /// which no IP + TCP header is.
    pub fn push(&mut self, header: &[u8]) -> bool {
        let Ok(len) = u16::try_from(header.len()) else {
            return false;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(header);
        self.count += 1;
        true
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch holds no header.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The headers in the order they were pushed.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.buf }
    }
}

/// Iterator over the headers of a [`HeaderBatch`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The buffer is only written by `push`, so every step fits; `get` keeps it panic-free
        // anyway.
        let len = usize::from(u16::from_ne_bytes(
            self.rest.get(..LEN_BYTES)?.try_into().ok()?,
        ));
        let h = self.rest.get(LEN_BYTES..LEN_BYTES + len)?;
        self.rest = &self.rest[LEN_BYTES + len..];
        Some(h)
    }
}

impl<'a> IntoIterator for &'a HeaderBatch {
    type Item = &'a [u8];
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_come_back_in_order() {
        let mut b = HeaderBatch::with_capacity(0);
        assert!(b.is_empty());
        assert_eq!(b.iter().next(), None);
        assert!(b.push(b"first header"));
        assert!(b.push(b""));
        assert!(b.push(&[7u8; 300]));
        assert_eq!(b.len(), 3);
        let v: Vec<&[u8]> = b.iter().collect();
        assert_eq!(v, vec![&b"first header"[..], &b""[..], &[7u8; 300][..]]);
        assert_eq!(
            HeaderBatch::one(b"x").iter().collect::<Vec<_>>(),
            vec![b"x"]
        );
    }

    #[test]
    fn oversized_header_is_refused_and_not_stored() {
        let mut b = HeaderBatch::one(b"ok");
        assert!(!b.push(&vec![0u8; 70_000]));
        assert!(b.push(&vec![1u8; 65_535]));
        assert_eq!(b.len(), 2);
        let lens: Vec<usize> = b.iter().map(<[u8]>::len).collect();
        assert_eq!(lens, vec![2, 65_535]);
    }
}
