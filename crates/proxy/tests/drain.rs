//! Draining end to end: a `tether-proxy` with its embedded checker serving
//! the gRPC API (`[checker] grpc_listen`), `tetherctl drain` / `enable`
//! against it, and fake backends. A drained member gets no new clients but
//! keeps the ones pinned to it; enabled again, it gets new clients again.
//!
//! Needs `cargo build --workspace --bins` first; `bin_path` says so if not.
//! Every wait is a poll with a deadline, never a sleep.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_testkit::{FakeBackend, Proc, Reply, TempConfig, eventually, get, run_to_end};

/// A process starting and printing its listening line.
const START: Duration = Duration::from_secs(10);
/// A change reaching the routing table, or the first probes.
const DEADLINE: Duration = Duration::from_secs(10);
/// Requests from new clients sampled after a drain.
const NEW_CLIENTS: usize = 30;

const X_TARGET_SERVER: &str = "x-target-server";
const X_TARGET_SERVER_LAST_USE: &str = "x-target-server-last-use";

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("epoch ms fit in u64")
}

/// An embedded-mode proxy: it probes `backends` itself (HTTP every 200 ms)
/// and serves the checker's gRPC API on a loopback port.
fn proxy_toml(backends: &[FakeBackend]) -> String {
    let mut toml = r#"[checker]
grpc_listen = "127.0.0.1:0"

[proxy]
listen = "127.0.0.1:0"

[admin]
listen = ""

[health]
kind = "http"
path = "/health"
interval = "200ms"
timeout = "200ms"
rise = 1
fall = 2

[sticky]
window = "30s"
"#
    .to_owned();
    for b in backends {
        toml.push_str(&format!(
            "\n[[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
            b.url(),
            b.name()
        ));
    }
    toml
}

async fn ctl(checker: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--checker".to_owned(), format!("http://{checker}")];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_to_end("tetherctl", &refs, &[])
    })
    .await
    .expect("tetherctl runner panicked")
}

async fn fetch(proxy: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    get(proxy, "/", headers).await.expect("the proxy answers")
}

/// Which backends `n` new clients (no sticky headers) reach; `None` if any
/// request failed.
async fn new_clients(proxy: SocketAddr, n: usize) -> Option<Vec<String>> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let r = fetch(proxy, &[]).await;
        if r.status != 200 {
            return None;
        }
        seen.push(r.body);
    }
    Some(seen)
}

/// A client that echoes the sticky headers of each response it got.
struct Pinned {
    target: String,
    last_use: String,
}

impl Pinned {
    /// One request with fresh headers; follows what the proxy answers.
    async fn fetch(&mut self, proxy: SocketAddr) -> Reply {
        let r = fetch(
            proxy,
            &[
                (X_TARGET_SERVER, &self.target),
                (X_TARGET_SERVER_LAST_USE, &self.last_use),
            ],
        )
        .await;
        if let (Some(t), Some(at)) = (
            r.header(X_TARGET_SERVER),
            r.header(X_TARGET_SERVER_LAST_USE),
        ) {
            self.target = t.to_owned();
            self.last_use = at.to_owned();
        }
        r
    }
}

#[tokio::test]
async fn a_drained_member_keeps_its_pinned_clients_and_gets_no_new_ones() {
    let backends = vec![
        FakeBackend::start("app-1").await,
        FakeBackend::start("app-2").await,
        FakeBackend::start("app-3").await,
    ];
    let config = TempConfig::new(&proxy_toml(&backends));
    let mut proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let checker = proc.wait_listening("grpc listening", START).await;
    let proxy = proc.wait_listening("http listening", START).await;

    eventually("the proxy routes to all three", DEADLINE, || async {
        let mut seen = new_clients(proxy, 9).await?;
        seen.sort();
        seen.dedup();
        (seen == ["app-1", "app-2", "app-3"]).then_some(())
    })
    .await;

    // A client pinned to app-2 by the proxy's own answer.
    let mut pinned = Pinned {
        target: "app-2".to_owned(),
        last_use: now_ms().to_string(),
    };
    assert_eq!(pinned.fetch(proxy).await.body, "app-2");

    let (code, out, err) = ctl(checker, &["drain", "app-2"]).await;
    assert_eq!(code, 0, "tetherctl drain:\n{out}\n{err}");
    assert!(out.contains("app-2 is draining"), "{out}");

    // New clients stop reaching app-2 once the change is in the table...
    eventually("new clients pass over app-2", DEADLINE, || async {
        let seen = new_clients(proxy, 6).await?;
        (!seen.iter().any(|b| b == "app-2")).then_some(())
    })
    .await;
    let seen = new_clients(proxy, NEW_CLIENTS)
        .await
        .expect("every new client served");
    assert!(!seen.iter().any(|b| b == "app-2"), "{seen:?}");
    assert!(seen.iter().any(|b| b == "app-1") && seen.iter().any(|b| b == "app-3"));
    // ...while the pinned client stays, as long as it keeps its pin fresh.
    for _ in 0..5 {
        let r = pinned.fetch(proxy).await;
        assert_eq!((r.status, r.body.as_str()), (200, "app-2"));
        assert_eq!(r.header(X_TARGET_SERVER), Some("app-2"));
    }
    // A pin that has gone stale is a new client.
    let stale = (now_ms() - 60_000).to_string();
    for _ in 0..6 {
        let r = fetch(
            proxy,
            &[
                (X_TARGET_SERVER, "app-2"),
                (X_TARGET_SERVER_LAST_USE, &stale),
            ],
        )
        .await;
        assert_ne!(r.body, "app-2");
    }

    let (code, out, _) = ctl(checker, &["health", "app-2"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("healthy (draining)"), "{out}");

    let (code, out, err) = ctl(checker, &["enable", "app-2"]).await;
    assert_eq!(code, 0, "tetherctl enable:\n{out}\n{err}");
    eventually("new clients reach app-2 again", DEADLINE, || async {
        let seen = new_clients(proxy, 6).await?;
        seen.iter().any(|b| b == "app-2").then_some(())
    })
    .await;

    proc.kill();
    for b in backends {
        b.stop().await;
    }
}
