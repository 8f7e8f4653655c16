//! SIGHUP reloads of a real `tether-proxy` process (embedded checker):
//! twenty reloads that add, remove and change members and settings under a
//! bounded load loop lose no request; a bad config is refused and the old
//! one keeps running.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get};

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);
/// Most requests the load loop sends, whatever happens.
const LOAD_CAP: usize = 20_000;

fn toml(members: &[&FakeBackend], retries: u32, interval_ms: u32) -> String {
    let mut t = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nretries = {retries}\n\
         [admin]\nlisten = \"\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"{interval_ms}ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [log]\nlevel = \"info\"\n"
    );
    for m in members {
        t.push_str(&format!(
            "\n[[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
            m.url(),
            m.name()
        ));
    }
    t
}

/// Who answers the next `n` requests; `None` if one was not a 200 (the
/// proxy is still starting).
async fn answered_by(addr: SocketAddr, n: usize) -> Option<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = get(addr, "/", &[]).await.expect("proxy answers");
        if r.status != 200 {
            return None;
        }
        *seen
            .entry(r.header("x-target-server").unwrap_or("-").to_owned())
            .or_default() += 1;
    }
    Some(seen)
}

/// Like [`answered_by`] once the proxy serves: every answer must be a 200.
async fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    answered_by(addr, n)
        .await
        .expect("every request answered 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_nothing_and_a_bad_one_is_refused() {
    let a = FakeBackend::start("app-a").await;
    let b = FakeBackend::start("app-b").await;
    let c = FakeBackend::start("app-c").await;
    let config = TempConfig::new(&toml(&[&a, &b], 2, 200));
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = proc.wait_listening("http", START).await;
    eventually("both members serve", DEADLINE, || async {
        (answered_by(addr, 6).await?.len() == 2).then_some(())
    })
    .await;

    // The load: two loops of requests until the reloads are done.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let (mut sent, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) && sent < LOAD_CAP {
                    sent += 1;
                    answered.fetch_add(1, Ordering::Relaxed);
                    match get(addr, "/", &[]).await {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (sent, failed)
            })
        })
        .collect();

    // add c, remove a, change settings and probe timing, back to a and b.
    let steps: [(&[&FakeBackend], u32, u32); 4] = [
        (&[&a, &b, &c], 2, 200),
        (&[&b, &c], 2, 200),
        (&[&b, &c], 1, 150),
        (&[&a, &b], 2, 200),
    ];
    let before = answered.load(Ordering::Relaxed);
    for n in 1..=20u32 {
        let (members, retries, interval) = steps[(n as usize - 1) % steps.len()];
        std::fs::write(config.path(), toml(members, retries, interval)).expect("write config");
        let mark = proc.line_count();
        proc.reload();
        let line = proc
            .wait_for_line_after(mark, &format!("reload #{n} applied"), DEADLINE)
            .await;
        assert!(!line.contains("nothing changed"), "reload {n}: {line}");
        // Let the load see each membership before the next change.
        let want: Vec<&str> = members.iter().map(|m| m.name()).collect();
        eventually(
            &format!("reload {n}: traffic reaches {want:?}"),
            DEADLINE,
            || async {
                let seen = spread(addr, 6).await;
                (seen.keys().map(String::as_str).collect::<Vec<_>>() == want).then_some(())
            },
        )
        .await;
    }
    let during = answered.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        let (sent, failed) = l.await.expect("load loop");
        total += sent;
        assert!(
            sent < LOAD_CAP,
            "a load loop hit its cap of {LOAD_CAP} before the reloads were done"
        );
        assert!(
            failed.is_empty(),
            "{} of {sent} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    // The load ran through the reloads, not only before them.
    assert!(
        during >= 20,
        "only {during} requests were sent while the 20 reloads ran"
    );
    eprintln!(
        "reload: 20 reloads under load, {total} requests ({during} during the reloads), 0 failed"
    );

    // A bad config is refused, naming the key; the old one keeps serving.
    let good = std::fs::read_to_string(config.path()).expect("read");
    std::fs::write(
        config.path(),
        good.replace("retries = 2", "retries = \"many\""),
    )
    .expect("write");
    let mark = proc.line_count();
    proc.reload();
    let line = proc
        .wait_for_line_after(mark, "reload #21 refused", DEADLINE)
        .await;
    assert!(line.contains("proxy.retries"), "{line}");
    let seen = spread(addr, 6).await;
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["app-a", "app-b"]
    );

    // A listen address is bound at start: changing it is logged, not applied.
    std::fs::write(config.path(), good.replace("127.0.0.1:0", "127.0.0.1:1")).expect("write");
    let mark = proc.line_count();
    proc.reload();
    proc.wait_for_line_after(mark, "proxy.listen changed; that takes a restart", DEADLINE)
        .await;
    assert_eq!(spread(addr, 2).await.values().sum::<usize>(), 2);
    drop(proc);
    for m in [a, b, c] {
        m.stop().await;
    }
}
