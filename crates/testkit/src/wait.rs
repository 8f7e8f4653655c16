//! Waiting for a condition with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] asks again.
pub const POLL_EVERY: Duration = Duration::from_millis(10);

/// Polls `check` every 10 ms until it returns `Some(value)` or `deadline`
/// passes; panics with a message containing `what` on timeout.
///
/// The deadline is measured on tokio's clock, so a test that pauses time
/// sees it move with its virtual time.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
