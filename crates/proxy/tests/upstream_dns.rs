//! New upstream connections to a member given by host name, through real
//! sockets: the name is looked up at most once per refresh, and a failed
//! lookup keeps the last addresses.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use tether_checker::dns::{Lookup, Resolve};
use tether_proxy::upstream::{Connection, Connector, Error, ErrorKind, Trust};
use tether_testkit::wait::POLL_EVERY;
use tether_testkit::{FakeBackend, eventually};

const TIMEOUT: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(4);

/// Answers every name with `addrs`, or fails once `fail` is set; counts
/// lookups.
struct Fake {
    addrs: Vec<SocketAddr>,
    lookups: AtomicUsize,
    fail: AtomicBool,
}

impl Fake {
    fn new(addrs: &[SocketAddr]) -> Arc<Fake> {
        Arc::new(Fake {
            addrs: addrs.to_vec(),
            lookups: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        })
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolve for Fake {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> Lookup<'a> {
        Box::pin(async move {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("SERVFAIL"));
            }
            Ok(self.addrs.clone())
        })
    }
}

fn localhost(backend: &FakeBackend) -> Authority {
    format!("localhost:{}", backend.addr().port())
        .parse()
        .expect("authority")
}

async fn connect(
    connector: &Connector,
    authority: &Authority,
    refresh: Duration,
) -> Result<Connection, Error> {
    let trust = Trust::default();
    connector
        .connect(authority, None, &trust, TIMEOUT, refresh)
        .await
}

async fn connections(backend: &FakeBackend, n: usize) {
    eventually(
        &format!("{n} connections at the backend"),
        TIMEOUT,
        || async { (backend.connections() >= n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn new_connections_share_one_lookup_per_refresh() {
    let backend = FakeBackend::start("b").await;
    let fake = Fake::new(&[backend.addr()]);
    let connector = Connector::with_resolver(IDLE, fake.clone());
    let authority = localhost(&backend);
    let mut open = Vec::new();
    for _ in 0..5 {
        let sender = connect(&connector, &authority, Duration::from_secs(3600)).await;
        open.push(sender.expect("connects"));
    }
    connections(&backend, 5).await;
    assert_eq!(fake.lookups(), 1);
}

#[tokio::test]
async fn an_ip_literal_is_never_looked_up() {
    let backend = FakeBackend::start("b").await;
    let fake = Fake::new(&[backend.addr()]);
    let connector = Connector::with_resolver(IDLE, fake.clone());
    let authority: Authority = backend.addr().to_string().parse().expect("authority");
    let _sender = connect(&connector, &authority, Duration::ZERO)
        .await
        .expect("connects");
    connections(&backend, 1).await;
    assert_eq!(fake.lookups(), 0);
}

#[tokio::test]
async fn a_failed_lookup_connects_to_the_last_addresses() {
    let backend = FakeBackend::start("b").await;
    let fake = Fake::new(&[backend.addr()]);
    let connector = Connector::with_resolver(IDLE, fake.clone());
    let authority = localhost(&backend);
    let refresh = Duration::from_millis(20);
    let mut open = vec![
        connect(&connector, &authority, refresh)
            .await
            .expect("connects"),
    ];
    assert_eq!(fake.lookups(), 1);

    fake.fail.store(true, Ordering::SeqCst);
    // Each connect past the refresh starts a lookup that fails; all of
    // them connect to the address the first lookup gave.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while fake.lookups() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no failed lookups");
        let sender = connect(&connector, &authority, refresh).await;
        open.push(sender.expect("connects with the stale address"));
        tokio::time::sleep(POLL_EVERY).await;
    }
    let sender = connect(&connector, &authority, refresh).await;
    open.push(sender.expect("still connects after failed lookups"));
    connections(&backend, open.len()).await;
}

#[tokio::test]
async fn a_cached_address_that_refuses_fails_the_connect() {
    let backend = FakeBackend::start("b").await;
    let fake = Fake::new(&[backend.addr()]);
    let connector = Connector::with_resolver(IDLE, fake.clone());
    let authority = localhost(&backend);
    let refresh = Duration::from_secs(3600);
    let _open = connect(&connector, &authority, refresh)
        .await
        .expect("connects");
    backend.stop().await;
    let e = connect(&connector, &authority, refresh)
        .await
        .expect_err("refused");
    assert!(matches!(e.kind(), ErrorKind::Connect(_)), "{e:?}");
    assert!(e.to_string().starts_with("connect: "), "{e}");
    assert!(!e.reused());
    assert_eq!(fake.lookups(), 1);
}

#[tokio::test]
async fn the_addresses_are_tried_in_order() {
    let backend = FakeBackend::start("b").await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let fake = Fake::new(&[refused, backend.addr()]);
    let connector = Connector::with_resolver(IDLE, fake.clone());
    let _sender = connect(&connector, &localhost(&backend), Duration::from_secs(3600))
        .await
        .expect("connects to the second address");
    connections(&backend, 1).await;
}
