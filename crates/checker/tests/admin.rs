//! The checker's admin endpoint through a real `tether-checker` process:
//! ready once the first probe round is done, metrics and a status page.

use std::time::Duration;

use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get};

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_the_first_round_with_metrics_and_page() {
    let up = FakeBackend::start("app-1").await;
    let down = FakeBackend::start("app-2").await;
    down.set_healthy(false);
    let config = TempConfig::new(&format!(
        "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [[targets]]\nurl = \"{}\"\nname = \"app-1\"\n[[targets]]\nurl = \"{}\"\nname = \"app-2\"\n",
        up.url(),
        down.url()
    ));
    let proc = Proc::spawn("tether-checker", &["--config", config.path_str()], &[]);
    let admin = proc.wait_listening("admin", START).await;
    let r = get(admin, "/healthz", &[]).await.expect("admin answers");
    assert_eq!(r.status, 200);
    eventually("/readyz says ready", DEADLINE, || async {
        let r = get(admin, "/readyz", &[]).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let m = get(admin, "/metrics", &[]).await.expect("metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    assert!(
        m.body
            .contains("tether_target_healthy{target=\"app-1\"} 1\n"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("tether_target_healthy{target=\"app-2\"} 0\n"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("# TYPE tether_health_version gauge\n"),
        "{}",
        m.body
    );
    let page = get(admin, "/", &[]).await.expect("page");
    assert!(
        page.body.contains("app-2") && page.body.contains("unhealthy"),
        "{}",
        page.body
    );
    drop(proc);
    up.stop().await;
    down.stop().await;
}
