//! Watch messages encoded once per version and shared by every stream.
//!
//! The hub hands every subscriber the same `Arc` snapshot and the same
//! `Arc` for each change; here each of them is turned into a gRPC frame
//! once, by whichever stream needs it first, and the others send that same
//! `Bytes`. With 50 streams of a 10,000-member pool this is one ~1 MB frame
//! per snapshot instead of 50 protobuf trees and 50 encodings.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use tether_core::HealthUpdate;
use tether_proto::FrameTooLarge;

/// Encoded changes kept for streams that send them later. A stream that
/// is further behind encodes its own copy: the same bytes, only more work.
const RECENT_CHANGES: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// The last snapshot encoded. Held weakly: once no stream and not the
    /// hub hold the snapshot, nobody will ask for its frame again (a later
    /// subscriber gets a new snapshot), and the `Weak` keeps its address
    /// from being reused by another.
    snapshot: Mutex<Option<(Weak<HealthUpdate>, Bytes)>>,
    changes: Mutex<Recent>,
}

/// Change frames by version (one change per version), oldest first.
#[derive(Debug, Default)]
struct Recent {
    by_version: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
}

impl Frames {
    /// The frame of a snapshot the hub handed out.
    pub(crate) fn snapshot(&self, snapshot: &Arc<HealthUpdate>) -> Result<Bytes, FrameTooLarge> {
        // Held while encoding: streams that open together wait for the one
        // encoding rather than each making its own.
        let mut slot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((held, frame)) = &*slot
            && std::ptr::eq(held.as_ptr(), Arc::as_ptr(snapshot))
        {
            return Ok(frame.clone());
        }
        let frame = tether_proto::watch_frame(snapshot)?;
        *slot = Some((Arc::downgrade(snapshot), frame.clone()));
        Ok(frame)
    }

    /// The frame of a change from the hub's broadcast.
    pub(crate) fn change(&self, change: &HealthUpdate) -> Result<Bytes, FrameTooLarge> {
        let mut recent = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(frame) = recent.by_version.get(&change.version) {
            return Ok(frame.clone());
        }
        let frame = tether_proto::watch_frame(change)?;
        recent.by_version.insert(change.version, frame.clone());
        recent.order.push_back(change.version);
        while recent.order.len() > RECENT_CHANGES {
            if let Some(old) = recent.order.pop_front() {
                recent.by_version.remove(&old);
            }
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use tether_core::{ProbeKind, TargetStatus, UpdateKind};

    use super::*;

    fn snapshot(version: u64) -> Arc<HealthUpdate> {
        let t = TargetStatus::unknown("a", "http://127.0.0.1:1", ProbeKind::Tcp);
        Arc::new(HealthUpdate::snapshot(version, vec![t]))
    }

    fn change(version: u64) -> HealthUpdate {
        HealthUpdate {
            version,
            kind: UpdateKind::Removed(format!("m{version}")),
        }
    }

    #[test]
    fn one_snapshot_is_encoded_once() {
        let frames = Frames::default();
        let s = snapshot(3);
        let one = frames.snapshot(&s).expect("frame");
        let two = frames.snapshot(&s).expect("frame");
        // The same allocation, not an equal copy.
        assert_eq!(one.as_ptr(), two.as_ptr());
        // Another snapshot at the same version (rebuilt later) is encoded
        // afresh: its records may differ.
        let again = snapshot(3);
        let three = frames.snapshot(&again).expect("frame");
        assert_ne!(one.as_ptr(), three.as_ptr());
        assert_eq!(three, tether_proto::watch_frame(&again).expect("frame"));
    }

    #[test]
    fn changes_are_shared_by_version_and_old_ones_let_go() {
        let frames = Frames::default();
        let first = frames.change(&change(1)).expect("frame");
        assert_eq!(
            frames.change(&change(1)).expect("frame").as_ptr(),
            first.as_ptr()
        );
        for v in 2..=(RECENT_CHANGES as u64 + 1) {
            frames.change(&change(v)).expect("frame");
        }
        let recent = frames.changes.lock().expect("lock");
        assert_eq!(recent.order.len(), RECENT_CHANGES);
        assert!(!recent.by_version.contains_key(&1));
        assert_eq!(recent.by_version.len(), RECENT_CHANGES);
    }
}
