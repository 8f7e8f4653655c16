//! The harness the in-process proxy tests share: a proxy on a loopback
//! port, fake backends `app-1..app-n`, a fake checker calling them healthy,
//! and a wait for the proxy to route to an expected set.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tether_core::{HealthState, ProbeKind, ProbeSpec, Target};
use tether_proxy::config::{HealthSource, ProxyConfig};
use tether_testkit::{FakeBackend, FakeChecker, Reply, eventually, get, status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything that should take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The proxy's own wall clock (epoch milliseconds), for sticky stamps.
pub fn now_ms() -> u64 {
    tether_daemon::clock::now_ms()
}

/// A config for a proxy in a test: loopback listener, short timeouts.
pub fn config(source: HealthSource) -> ProxyConfig {
    let mut c = ProxyConfig::with_defaults(source);
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.connect_timeout = Duration::from_secs(1);
    c.response_timeout = Duration::from_secs(5);
    c.header_read_timeout = Duration::from_secs(5);
    c
}

/// [`config`] with health from `checker`.
pub fn checker_config(checker: &FakeChecker) -> ProxyConfig {
    config(HealthSource::Checkers(vec![
        checker.url().parse().expect("checker uri"),
    ]))
}

/// The task running `run_on`.
type ProxyTask = JoinHandle<Result<(), tether_proxy::Error>>;

/// A proxy running in-process. [`Running::stop`] stops it and fails the
/// test if `run_on` returned an error; dropping it instead aborts the task,
/// and fails the test if `run_on` had already ended (with an error, or on
/// its own: only a stop may end it).
pub struct Running {
    pub addr: SocketAddr,
    /// The admin endpoint, when started with [`Running::start_with_admin`].
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<ProxyTask>,
}

impl Running {
    pub async fn start(config: ProxyConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tether_proxy::run_on(listener, config, async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            admin: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Like [`Running::start`], with the admin endpoint on a port of its own.
    pub async fn start_with_admin(config: ProxyConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin_addr = admin.local_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tether_proxy::run_on_with_admin(
            listener,
            admin,
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            admin: Some(admin_addr),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `GET /` through the proxy.
    pub async fn get(&self) -> Reply {
        self.get_with(&[]).await
    }

    /// `GET /` through the proxy with these headers.
    pub async fn get_with(&self, headers: &[(&str, &str)]) -> Reply {
        get(self.addr, "/", headers).await.expect("proxy answers")
    }

    /// Stops the proxy gracefully and waits for `run_on` to return `Ok`.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("run_on failed: {e}"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("proxy task: {e}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        if !task.is_finished() {
            task.abort();
            return;
        }
        // Finished, so one poll yields its result; no waker is needed.
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(ended) = Pin::new(&mut task).poll(&mut cx) else {
            unreachable!("a finished task is ready");
        };
        let why = match ended {
            Ok(Ok(())) => "run_on returned before the test stopped it".to_owned(),
            Ok(Err(e)) => format!("run_on failed: {e}"),
            Err(e) => format!("proxy task: {e}"),
        };
        if std::thread::panicking() {
            // The test already failed; say what the proxy did, as a clue.
            eprintln!("while the test failed, the proxy had ended: {why}");
        } else {
            panic!("the proxy ended during the test: {why}");
        }
    }
}

/// A proxy fed by `checker`, with the test [`config`].
pub async fn proxy_for(checker: &FakeChecker) -> Running {
    Running::start(checker_config(checker)).await
}

/// `n` fake backends named `app-1` to `app-n`.
pub async fn backends(n: usize) -> Vec<FakeBackend> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(FakeBackend::start(&format!("app-{i}")).await);
    }
    out
}

/// Makes `checker` serve a snapshot at `version` calling every backend
/// healthy.
pub fn healthy_snapshot(checker: &FakeChecker, version: u64, backends: &[FakeBackend]) {
    checker.set_snapshot(
        version,
        backends
            .iter()
            .map(|b| status(b.name(), &b.url(), HealthState::Healthy))
            .collect(),
    );
}

/// A fake checker calling every backend healthy (snapshot version 1).
pub async fn healthy_checker(backends: &[FakeBackend]) -> FakeChecker {
    let checker = FakeChecker::start().await;
    healthy_snapshot(&checker, 1, backends);
    checker
}

/// `n` backends, a fake checker calling them all healthy, and a proxy fed
/// by it that already routes to all of them. Keep the checker alive (bind
/// it, at least to `_checker`) for as long as the proxy is used.
pub async fn pool(n: usize) -> (Vec<FakeBackend>, FakeChecker, Running) {
    let b = backends(n).await;
    let checker = healthy_checker(&b).await;
    let proxy = proxy_for(&checker).await;
    let names: Vec<&str> = b.iter().map(|x| x.name()).collect();
    wait_routes(&proxy, &names).await;
    (b, checker, proxy)
}

/// Waits until the proxy routes to exactly `expected` (as a set).
pub async fn wait_routes(proxy: &Running, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually("the proxy routes to the expected set", DEADLINE, || async {
        let mut seen = Vec::new();
        for _ in 0..(expected.len() * 3).max(3) {
            let r = proxy.get().await;
            if r.status != 200 {
                return None;
            }
            seen.push(r.body);
        }
        seen.sort();
        seen.dedup();
        (seen == want).then_some(())
    })
    .await;
}

/// Every backend as a target with an HTTP probe of `/health` every
/// `interval` (timeout 500 ms, rise 1, down after `fall` failures).
pub fn http_targets(backends: &[FakeBackend], interval: Duration, fall: u32) -> Vec<Target> {
    let spec = ProbeSpec {
        kind: ProbeKind::Http,
        path: "/health".to_owned(),
        interval,
        timeout: Duration::from_millis(500),
        rise: NonZeroU32::new(1).expect("1"),
        fall: NonZeroU32::new(fall).expect("non-zero fall"),
    };
    backends
        .iter()
        .map(|b| Target {
            name: b.name().to_owned(),
            url: b.url(),
            probe: spec.clone(),
            tls_ca: Vec::new(),
        })
        .collect()
}
