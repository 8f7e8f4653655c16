//! Fuzz check: the wire-to-core conversions of `tether_proto`. Arbitrary
//! bytes decoded as protobuf messages, then converted with `TryFrom`.
//! Nothing panics; a failed conversion names its field; a successful one
//! round-trips (core -> wire -> core gives the same value, through the
//! encoded bytes too). Watch updates are also applied in order to a
//! `PoolView`, as the proxy's feed does (its `debug_assert!`s are on in
//! fuzz builds).
//!
//! Input: byte 0 picks the message (mod 4): a stream of length-delimited
//! `WatchResponse`s, one `TargetHealth`, one `ListResponse` or one
//! `GetResponse`; the rest is the encoding.
//!
//! Shared by `fuzz/fuzz_targets/proto.rs` and
//! `crates/proto/tests/fuzz_corpus.rs`.

use prost::Message;
use tether_core::{Applied, HealthUpdate, PoolView, TargetStatus};
use tether_proto::ConvertError;
use tether_proto::pb;

pub fn run(data: &[u8]) {
    let Some((&which, mut rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let mut view = PoolView::new();
            while !rest.is_empty() {
                let Ok(m) = pb::WatchResponse::decode_length_delimited(&mut rest) else {
                    return;
                };
                if let Some(u) = converted(HealthUpdate::try_from(m)) {
                    let round = HealthUpdate::try_from(pb::WatchResponse::from(&u));
                    assert_eq!(round.as_ref(), Ok(&u), "wire round trip");
                    let bytes = pb::WatchResponse::from(&u).encode_to_vec();
                    let decoded = pb::WatchResponse::decode(bytes.as_slice()).expect("decode");
                    assert_eq!(
                        HealthUpdate::try_from(decoded),
                        Ok(u.clone()),
                        "bytes round trip"
                    );
                    let version = u.version;
                    if let Ok(Applied::Changed) = view.apply(u) {
                        assert_eq!(view.version(), Some(version));
                    }
                }
            }
        }
        1 => {
            if let Ok(m) = pb::TargetHealth::decode(rest) {
                target(m);
            }
        }
        2 => {
            if let Ok(m) = pb::ListResponse::decode(rest) {
                m.targets.into_iter().for_each(target);
            }
        }
        _ => {
            if let Ok(m) = pb::GetResponse::decode(rest) {
                m.target.into_iter().for_each(target);
            }
        }
    }
}

fn target(m: pb::TargetHealth) {
    if let Some(s) = converted(TargetStatus::try_from(m)) {
        let round = TargetStatus::try_from(pb::TargetHealth::from(&s));
        assert_eq!(round.as_ref(), Ok(&s), "wire round trip");
        if let Some(host) = &s.host {
            // A Host the proxy sends as is: no header or authority breakers.
            assert!(
                !host
                    .bytes()
                    .any(|b| b.is_ascii_control() || b == b'@' || b == b'/')
            );
        }
    }
}

fn converted<T>(r: Result<T, ConvertError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "unnamed: {e}");
            None
        }
    }
}
