//! The upstream pool gives its connections back once traffic stops: a
//! burst's pooled connections are closed after the pool's idle timeout
//! even when no later request comes to prune them.

use std::time::Duration;

use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get};

const START: Duration = Duration::from_secs(20);
/// The pool's idle timeout is 4 s and its sweep runs as often: generous.
const DEADLINE: Duration = Duration::from_secs(30);

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_a_burst() {
    let backend = FakeBackend::start("app-1").await;
    let config = TempConfig::new(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [[targets]]\nurl = \"{}\"\nname = \"app-1\"\n",
        backend.url()
    ));
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = proc.wait_listening("http", START).await;
    eventually("the proxy serves", DEADLINE, || async {
        (get(addr, "/", &[]).await.ok()?.status == 200).then_some(())
    })
    .await;
    // Let the first requests' pooled connections age out, for a baseline
    // with nothing pooled (TCP probes close their connections).
    eventually("nothing pooled", DEADLINE, || async {
        (backend.open_connections() == 0).then_some(())
    })
    .await;
    let pid = proc.pid();
    let quiet = fds(pid);

    // A burst of concurrent requests leaves several connections pooled.
    backend.set_latency(Duration::from_millis(50));
    let burst: Vec<_> = (0..32)
        .map(|_| tokio::spawn(async move { get(addr, "/", &[]).await.map(|r| r.status) }))
        .collect();
    for r in burst {
        assert_eq!(r.await.expect("task").expect("answer"), 200);
    }
    let after_burst = fds(pid);
    let pooled = backend.open_connections();
    assert!(
        after_burst > quiet && pooled > 1,
        "the burst pooled connections: {quiet} -> {after_burst} fds, {pooled} open at the backend"
    );

    // Nothing more is sent; the pool must let them go by itself.
    eventually("pooled connections closed", DEADLINE, || async {
        (backend.open_connections() == 0 && fds(pid) <= quiet).then_some(())
    })
    .await;
    eprintln!(
        "pool: {quiet} fds quiet, {after_burst} after the burst, back to {} idle",
        fds(pid)
    );
    drop(proc);
    backend.stop().await;
}
