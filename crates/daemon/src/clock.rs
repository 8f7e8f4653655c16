//! The one wall-clock read the daemons share: Unix epoch milliseconds, for
//! times that leave the process or outlive it (sticky last-use stamps,
//! `last_change_unix_ms`, the status pages). Durations and deadlines use
//! tokio's `Instant` instead, which tests can pause.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_system_clock_in_milliseconds() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis();
        let now = u128::from(now_ms());
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }
}
