//! `tokio_util::codec` adapter over the sans-IO protocol codec, for plain (unsecured) streams:
//! `Framed::new(stream, FrameCodec::new())` gives a `Stream` of [`Message`]s and a `Sink` for
//! them. The library stays free of tokio; this thin layer lives in the binary crate.

use bytes::BytesMut;
use tcpclone::proto::{encode, FrameDecoder, Message, ProtoError};

/// Errors of the framed stream: I/O or a malformed frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was malformed (or could not be encoded).
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
}

/// Frames [`Message`]s with the protocol's length-prefixed format.
#[derive(Debug, Default)]
pub struct FrameCodec {
    decoder: FrameDecoder,
}

impl FrameCodec {
    /// A codec accepting frames up to the protocol maximum.
    pub fn new() -> Self {
        FrameCodec {
            decoder: FrameDecoder::new(),
        }
    }

    /// A codec accepting frames up to `max` bytes.
    pub fn with_max_frame_len(max: usize) -> Self {
        FrameCodec {
            decoder: FrameDecoder::with_max_frame_len(max),
        }
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        Ok(self.decoder.decode(src)?)
    }
}

impl tokio_util::codec::Encoder<&Message> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(encode(item, dst)?)
    }
}

impl tokio_util::codec::Encoder<Message> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(encode(&item, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder as _, Encoder as _};

    #[test]
    fn roundtrip_through_the_adapter() {
        let mut c = FrameCodec::new();
        let mut b = BytesMut::new();
        c.encode(Message::Ping, &mut b).unwrap();
        c.encode(&Message::Pong, &mut b).unwrap();
        assert_eq!(c.decode(&mut b).unwrap(), Some(Message::Ping));
        assert_eq!(c.decode(&mut b).unwrap(), Some(Message::Pong));
        assert_eq!(c.decode(&mut b).unwrap(), None);
        let mut bad = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(c.decode(&mut bad), Err(CodecError::Proto(_))));
    }
}
