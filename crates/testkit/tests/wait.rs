//! The eventually helper.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tether_testkit::eventually;

#[tokio::test]
async fn returns_the_first_value() {
    let calls = AtomicUsize::new(0);
    let got = eventually("third call", Duration::from_secs(5), || async {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(got, 3);
}

#[tokio::test]
#[should_panic(expected = "the impossible")]
async fn panics_naming_what_on_timeout() {
    eventually("the impossible", Duration::from_millis(50), || async {
        None::<()>
    })
    .await;
}
