//! `WatchResponse` messages as gRPC frames, encoded once and written as they
//! are to any number of streams.
//!
//! Why not tonic's encoder: it encodes a message into each stream's own
//! buffer, so 50 Watch streams of a 10,000-member pool each made their own
//! protobuf tree and ~1 MB of bytes from one shared snapshot, and each
//! stream's buffer then kept that megabyte for as long as the stream lived.
//! A frame made here is a `Bytes`: every stream sends the same allocation.
//! The bytes are exactly what tonic would have sent (the 5-byte gRPC prefix,
//! uncompressed, then the prost encoding), so every client decodes them as
//! before.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tether_core::HealthUpdate;

use crate::pb;

/// The gRPC length prefix: a compression flag byte and a big-endian u32.
const PREFIX: usize = 5;

/// A message too large for one gRPC frame (over 4 GiB).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a watch message of {0} bytes does not fit in one gRPC frame")]
pub struct FrameTooLarge(pub usize);

/// `update` as one uncompressed gRPC frame of a `WatchResponse`.
pub fn watch_frame(update: &HealthUpdate) -> Result<Bytes, FrameTooLarge> {
    let message = pb::WatchResponse::from(update);
    let len = message.encoded_len();
    let prefix_len = u32::try_from(len).map_err(|_| FrameTooLarge(len))?;
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0); // not compressed
    buf.put_u32(prefix_len);
    // Cannot fail: the buffer was sized for the message.
    message.encode(&mut buf).map_err(|_| FrameTooLarge(len))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use tether_core::{CheckerState, ProbeKind, TargetStatus, UpdateKind};

    use super::*;

    #[test]
    fn a_frame_is_the_prefix_and_the_prost_encoding() {
        let status = TargetStatus::unknown("app-1", "http://127.0.0.1:5041", ProbeKind::Http);
        for kind in [
            UpdateKind::Snapshot {
                targets: vec![status.clone(), status.clone()],
                checker: CheckerState::ok(),
            },
            UpdateKind::Change(status),
            UpdateKind::Removed("app-1".into()),
            UpdateKind::Checker(CheckerState::impaired(1, "all silent")),
        ] {
            let update = HealthUpdate { version: 9, kind };
            let frame = watch_frame(&update).expect("frame");
            let body = pb::WatchResponse::from(&update).encode_to_vec();
            assert_eq!(frame[0], 0, "uncompressed");
            assert_eq!(frame[1..PREFIX], (body.len() as u32).to_be_bytes());
            assert_eq!(frame[PREFIX..], body[..]);
            let back = pb::WatchResponse::decode(&frame[PREFIX..]).expect("decode");
            assert_eq!(HealthUpdate::try_from(back), Ok(update));
        }
    }
}
