//! `[limits]` through a real `tether-proxy` process: a flood from one
//! client address is answered `429` beyond its burst and costs another
//! address nothing; the connection limit; HTTP/2 streams count as
//! requests, and an HTTP/2 connection over the limit gets a GOAWAY; a
//! reload applies new limits; config errors name the key. Behind a trusted
//! proxy, `client_header` names the client; from any other peer it names no
//! one.
//!
//! Two clients on one host: sockets bound to 127.0.0.1 and 127.0.0.2
//! (all of 127/8 is loopback on Linux) before they connect.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};

use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get, run_to_end};

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);

const A: [u8; 4] = [127, 0, 0, 1];
const B: [u8; 4] = [127, 0, 0, 2];
/// The address the tests wait for the proxy from, so waiting spends
/// neither A's nor B's tokens.
const WARM: [u8; 4] = [127, 0, 0, 3];

fn toml(backend: &FakeBackend, limits: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [log]\nlevel = \"info\"\n\
         [limits]\n{limits}\n\
         [[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
        backend.url(),
        backend.name()
    )
}

async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(from), 0))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// One answer: status, `Retry-After`, `Connection`, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    connection: Option<String>,
    body: String,
}

/// A keep-alive HTTP/1.1 connection from a chosen source address.
struct Client {
    sender: http1::SendRequest<Empty<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(from: [u8; 4], to: SocketAddr) -> Client {
        let stream = connect_from(from, to).await;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { sender, conn }
    }

    async fn get(&mut self) -> Answer {
        self.get_with(&[]).await
    }

    async fn get_with(&mut self, headers: &[(&str, &str)]) -> Answer {
        self.sender.ready().await.expect("connection usable");
        let mut req = Request::get("/").header("host", "app");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Empty::new());
        let res = self
            .sender
            .send_request(req.expect("request"))
            .await
            .expect("answered");
        answer(res).await
    }

    /// Whether the proxy closed the connection.
    async fn closed(self) -> bool {
        drop(self.sender);
        tokio::time::timeout(DEADLINE, self.conn).await.is_ok()
    }
}

async fn answer(res: http::Response<hyper::body::Incoming>) -> Answer {
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, retry_after, connection) = (
        res.status().as_u16(),
        header("retry-after"),
        header("connection"),
    );
    let body = res.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        retry_after,
        connection,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Starts a proxy with `limits` and waits until it serves (from `WARM`).
async fn proxy(backend: &FakeBackend, limits: &str) -> (Proc, TempConfig, SocketAddr, SocketAddr) {
    let config = TempConfig::new(&toml(backend, limits));
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = proc.wait_listening("http", START).await;
    let admin = proc.wait_listening("admin", START).await;
    eventually("the proxy serves", DEADLINE, || async {
        let mut c = Client::connect(WARM, addr).await;
        (c.get().await.status == 200).then_some(())
    })
    .await;
    (proc, config, addr, admin)
}

async fn metric(admin: SocketAddr, line: &str) -> Option<u64> {
    let text = get(admin, "/metrics", &[]).await.expect("metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_costs_another_not_a_request() {
    let backend = FakeBackend::start("app").await;
    let (_proc, _config, addr, admin) = proxy(&backend, "client_rate = 1\nclient_burst = 10").await;
    let hits_before = backend.hits();
    // The warm-up's polls (from WARM, until the first 200) may have been
    // limited too: what the flood adds is the figure.
    let rate_limited = "tether_limited_total{limit=\"rate\"}";
    let limited_before = metric(admin, rate_limited).await.expect("the rate counter");

    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut c = Client::connect(A, addr).await;
        let mut answers = Vec::new();
        for _ in 0..300 {
            answers.push(c.get().await);
        }
        answers
    });
    // B's burst, sent while A floods: every request is served.
    let mut b = Client::connect(B, addr).await;
    for i in 0..10 {
        let got = b.get().await;
        assert_eq!(got.status, 200, "B's request {i}: {got:?}");
    }
    let answers = flood.await.expect("flood");
    let elapsed = started.elapsed().as_secs();

    let ok = answers.iter().filter(|a| a.status == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok + limited.len(), answers.len(), "only 200 and 429");
    // The burst, plus one token a second while the flood ran.
    assert!(ok >= 10, "A's burst is served: {ok}");
    assert!(ok as u64 <= 10 + elapsed + 1, "A got {ok} in {elapsed} s");
    for a in &limited {
        let secs: u64 = a
            .retry_after
            .as_deref()
            .expect("Retry-After on every 429")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=1).contains(&secs), "{a:?}");
        assert_eq!(a.body, "{\"error\":\"Too many requests\"}");
        assert_ne!(
            a.connection.as_deref(),
            Some("close"),
            "keeps the connection"
        );
    }
    assert_eq!(
        backend.hits() - hits_before,
        ok + 10,
        "a 429 never reaches the backend"
    );
    assert_eq!(
        metric(admin, rate_limited)
            .await
            .map(|n| n - limited_before),
        Some(limited.len() as u64)
    );
    let clients = metric(admin, "tether_limit_clients").await;
    assert!(clients.is_some_and(|n| (1..=3).contains(&n)), "{clients:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_count_one_request_each() {
    let backend = FakeBackend::start("app").await;
    let (_proc, _config, addr, _admin) = proxy(&backend, "client_rate = 1\nclient_burst = 5").await;
    let stream = connect_from(A, addr).await;
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    tokio::spawn(conn);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let req = Request::get(format!("http://{addr}/"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let res = sender.send_request(req).await.expect("answered");
        statuses.push(answer(res).await.status);
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!((5..=7).contains(&ok), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_connections_is_told_429_and_closed() {
    let backend = FakeBackend::start("app").await;
    let (_proc, _config, addr, admin) = proxy(&backend, "client_connections = 2").await;
    let mut first = Client::connect(A, addr).await;
    let mut second = Client::connect(A, addr).await;
    assert_eq!(first.get().await.status, 200);
    assert_eq!(second.get().await.status, 200);

    let mut third = Client::connect(A, addr).await;
    let got = third.get().await;
    assert_eq!(got.status, 429, "{got:?}");
    assert_eq!(got.retry_after.as_deref(), Some("1"));
    assert_eq!(got.connection.as_deref(), Some("close"));
    assert_eq!(got.body, "{\"error\":\"Too many requests\"}");
    assert!(third.closed().await, "the proxy closes it");

    // Another address is not counted with A.
    let mut b = Client::connect(B, addr).await;
    assert_eq!(b.get().await.status, 200);
    // A closed connection gives its place back.
    drop(first);
    eventually("A's closed connection is uncounted", DEADLINE, || async {
        let mut c = Client::connect(A, addr).await;
        (c.get().await.status == 200).then_some(())
    })
    .await;
    assert_eq!(
        second.get().await.status,
        200,
        "kept connections are served"
    );
    let refused = metric(admin, "tether_limited_total{limit=\"connections\"}").await;
    assert!(refused.is_some_and(|n| n >= 1), "{refused:?}");
}

/// An HTTP/2 connection over the limit has its stream answered 429, then a
/// GOAWAY (NO_ERROR): the client is told to open no more streams there,
/// not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_over_the_limit_gets_429_then_a_goaway() {
    let backend = FakeBackend::start("app").await;
    let (_proc, _config, addr, admin) = proxy(&backend, "client_connections = 1").await;
    let mut first = Client::connect(A, addr).await;
    assert_eq!(first.get().await.status, 200);

    let stream = connect_from(A, addr).await;
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("answered");
    let got = answer(res).await;
    assert_eq!(got.status, 429, "{got:?}");
    assert_eq!(got.retry_after.as_deref(), Some("1"));
    // The client's side of the connection ends without an error: a
    // graceful GOAWAY, which the proxy counts under its reason.
    tokio::time::timeout(DEADLINE, conn)
        .await
        .expect("the connection ends")
        .expect("connection task")
        .expect("ended gracefully");
    eventually("the GOAWAY is counted", DEADLINE, || async {
        let key = "tether_goaways_total{reason=\"client_connections\"}";
        (metric(admin, key).await >= Some(1)).then_some(())
    })
    .await;
    assert_eq!(
        first.get().await.status,
        200,
        "the kept connection is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_limits_to_new_connections() {
    let backend = FakeBackend::start("app").await;
    let (proc, config, addr, _admin) = proxy(&backend, "").await;
    let mut c = Client::connect(A, addr).await;
    for _ in 0..20 {
        assert_eq!(c.get().await.status, 200, "no limits yet");
    }

    std::fs::write(
        config.path(),
        toml(&backend, "client_rate = 1\nclient_burst = 2"),
    )
    .expect("rewrite config");
    proc.reload();
    proc.wait_for_line("reload #1 applied: settings", DEADLINE)
        .await;
    let mut c = Client::connect(A, addr).await;
    let statuses = [
        c.get().await.status,
        c.get().await.status,
        c.get().await.status,
    ];
    assert_eq!(statuses, [200, 200, 429]);

    std::fs::write(config.path(), toml(&backend, "client_rate = 0")).expect("rewrite config");
    proc.reload();
    proc.wait_for_line("reload #2 applied: settings", DEADLINE)
        .await;
    let mut c = Client::connect(A, addr).await;
    for _ in 0..20 {
        assert_eq!(c.get().await.status, 200, "limits off again");
    }
}

/// Behind another proxy: A (127.0.0.1) is a trusted proxy, B (127.0.0.2)
/// a client that is not.
const BEHIND: &str = "client_rate = 1\nclient_burst = 5\n\
    client_header = \"x-forwarded-for\"\ntrusted_proxies = [\"127.0.0.1/32\"]";

/// `n` requests on `c` with `X-Forwarded-For: xff(i)`: how many were served,
/// and how many whole seconds they took.
async fn flood(c: &mut Client, n: usize, xff: impl Fn(usize) -> String) -> (usize, u64) {
    let started = Instant::now();
    let mut ok = 0;
    for i in 0..n {
        let got = c.get_with(&[("x-forwarded-for", &xff(i))]).await;
        match got.status {
            200 => ok += 1,
            429 => {}
            _ => panic!("request {i}: {got:?}"),
        }
    }
    (ok, started.elapsed().as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_trusted_proxy_each_forwarded_client_has_its_own_rate() {
    let backend = FakeBackend::start("app").await;
    let (_proc, _config, addr, admin) = proxy(&backend, BEHIND).await;
    let mut a = Client::connect(A, addr).await;

    // Ten clients behind the proxy, each within its burst: all served,
    // though the peer address alone would have been limited after five.
    for client in 1..=10 {
        let (ok, _) = flood(&mut a, 5, |_| format!("203.0.113.{client}")).await;
        assert_eq!(ok, 5, "client 203.0.113.{client}");
    }
    // One client flooding, forging a different left-most entry each time:
    // the proxy's own entry (the right-most) is the client, so it is
    // limited to its burst and one token a second. Counted as a difference:
    // the warm-up's polls (from their own address, until the first 200) may
    // have been limited too.
    let limited = "tether_limited_total{limit=\"rate\"}";
    let before = metric(admin, limited).await.expect("the rate counter");
    let (ok, secs) = flood(&mut a, 40, |i| format!("198.51.100.{i}, 203.0.113.77")).await;
    assert!(
        (5..=5 + secs as usize + 1).contains(&ok),
        "{ok} served in {secs} s"
    );
    assert_eq!(
        metric(admin, limited).await.map(|n| n - before),
        Some(40 - ok as u64)
    );
    // Another client behind the same proxy still has its whole burst.
    let (ok, _) = flood(&mut a, 5, |_| "203.0.113.200".into()).await;
    assert_eq!(ok, 5, "the flood cost another forwarded client nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_name_another_client() {
    let backend = FakeBackend::start("app").await;
    let (_proc, _config, addr, _admin) = proxy(&backend, BEHIND).await;

    // B, not a trusted proxy, floods in 203.0.113.1's name: B's own
    // address is the client, and B is limited...
    let mut b = Client::connect(B, addr).await;
    let (ok, secs) = flood(&mut b, 40, |_| "203.0.113.1".into()).await;
    assert!(
        (5..=5 + secs as usize + 1).contains(&ok),
        "{ok} served in {secs} s"
    );
    // ...whatever name it gives next...
    let (ok, secs) = flood(&mut b, 10, |i| format!("203.0.113.{}", 100 + i)).await;
    assert!(
        ok <= secs as usize + 1,
        "B escaped its limit: {ok} in {secs} s"
    );
    // ...while 203.0.113.1, behind the trusted proxy, lost not a token.
    let mut a = Client::connect(A, addr).await;
    let (ok, _) = flood(&mut a, 5, |_| "203.0.113.1".into()).await;
    assert_eq!(ok, 5, "B spent 203.0.113.1's tokens");
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    for (limits, key) in [
        ("client_burst = 5", "limits.client_burst"),
        ("client_rate = -1", "limits.client_rate"),
        ("client_rate = 2000000", "limits.client_rate"),
        ("client_connections = \"many\"", "limits.client_connections"),
        ("client_rates = 5", "client_rates"),
        (
            "client_header = \"x-forwarded-for\"",
            "limits.trusted_proxies",
        ),
        (
            "client_header = \"x f\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
            "limits.client_header",
        ),
        (
            "client_header = \"x-forwarded-for\"\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "limits.trusted_proxies",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\"]",
            "limits.trusted_proxies",
        ),
    ] {
        let config = TempConfig::new(&format!(
            "[limits]\n{limits}\n[[targets]]\nurl = \"http://127.0.0.1:1\"\n"
        ));
        let (code, _out, err) = run_to_end(
            "tether-proxy",
            &["--config", config.path_str(), "--check-config"],
            &[],
        );
        assert_eq!(code, 2, "{limits}: {err}");
        assert!(err.contains(key), "{limits}: {err}");
    }
}
