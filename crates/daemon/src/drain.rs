//! One shutdown signal for every server and task of a daemon.
//!
//! `run` makes a [`Trigger`] and hands a [`Drain`] clone to each server and
//! background task (client listener, admin, gRPC, health feed). On shutdown
//! the trigger fires once; each holder stops taking new work, finishes what
//! it has, and drops its `Drain`. [`Trigger::drained`] completes when every
//! clone is gone, so `run` returns only after all of them have wound down,
//! instead of aborting tasks and hoping nothing was half done.

use tokio::sync::watch;

/// Fires the drain and waits for its holders.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A holder's view: has the drain started?
#[derive(Clone, Debug)]
pub struct Drain {
    rx: watch::Receiver<bool>,
}

/// A new drain, not yet started.
pub fn channel() -> (Trigger, Drain) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Drain { rx })
}

impl Trigger {
    /// Starts the drain; every `signaled()` completes.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    /// Starts the drain and completes when every `Drain` clone is dropped.
    pub async fn drained(self) {
        self.start();
        self.tx.closed().await;
    }
}

impl Drain {
    /// Completes once the drain has started (at once if it already has).
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone, which also means: stop.
        let _ = rx.wait_for(|&draining| draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }

    /// Consumes this holder's handle once its work is done; the same as
    /// dropping it, spelled out where it matters.
    pub fn release(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drained_waits_for_every_holder() {
        let (trigger, drain) = channel();
        let holder = drain.clone();
        let task = tokio::spawn(async move {
            holder.signaled().await;
            holder.release();
        });
        assert!(!drain.is_draining());
        drop(drain);
        tokio::time::timeout(Duration::from_secs(5), trigger.drained())
            .await
            .expect("every holder released");
        task.await.expect("task");
    }

    #[tokio::test]
    async fn a_late_holder_sees_the_drain_at_once() {
        let (trigger, drain) = channel();
        trigger.start();
        tokio::time::timeout(Duration::from_secs(5), drain.signaled())
            .await
            .expect("already draining");
        assert!(drain.is_draining());
    }
}
