//! Binary upgrade through the built binaries: `tether-proxy --upgrade`
//! takes the running proxy's listening sockets over `proxy.upgrade_socket`
//! while clients keep coming, on new connections and on keep-alive ones.
//! Nothing is refused, nothing fails, the old process drains and exits,
//! and the new one answers. Then the edges: no running proxy, a second
//! upgrade while one runs, a new process that never says it serves, a
//! reload between upgrades, and a new config that adds and drops listeners.
//!
//! Needs `cargo build --workspace --bins` first; `bin_path` says so if not.
//! Every wait is a poll with a deadline, never a sleep.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_testkit::raw::RawConn;
use tether_testkit::{Client, FakeBackend, Proc, TempConfig, eventually, get, run_to_end};

/// A process starting and printing its listening line.
const START: Duration = Duration::from_secs(10);
/// The configured `drain_timeout`.
const DRAIN: Duration = Duration::from_secs(5);
/// Clients opening a new connection per request.
const NEW_CONN_CLIENTS: usize = 4;
/// Clients on one keep-alive connection each (a new one when told to
/// close).
const KEEP_ALIVE_CLIENTS: usize = 4;
/// Backend latency: keep-alive requests are in flight when the drain starts.
const LATENCY: Duration = Duration::from_millis(20);
/// Answers wanted before the upgrade, and again after the old one exits.
const ANSWERS: usize = 100;

/// An embedded-mode proxy on loopback ports, with an upgrade socket.
/// `extra` is appended (more sections for one process).
fn proxy_toml(backends: &[FakeBackend], socket: &Path, admin: &str, extra: &str) -> String {
    let mut toml = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
upgrade_socket = "{}"
drain_timeout = "{}s"

[admin]
listen = "{admin}"

[health]
kind = "http"
path = "/health"
interval = "100ms"
timeout = "500ms"
rise = 1
fall = 3
{extra}
"#,
        socket.display(),
        DRAIN.as_secs(),
    );
    for b in backends {
        toml.push_str(&format!(
            "\n[[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
            b.url(),
            b.name()
        ));
    }
    toml
}

async fn backends() -> Vec<FakeBackend> {
    let backends = vec![
        FakeBackend::start("app-1").await,
        FakeBackend::start("app-2").await,
    ];
    for b in &backends {
        b.set_latency(LATENCY);
    }
    backends
}

/// A started proxy and its addresses.
struct Running {
    proc: Proc,
    proxy: SocketAddr,
}

async fn start(config: &TempConfig) -> Running {
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let proxy = proc.wait_listening("http listening", START).await;
    proc.wait_for_line("upgrade socket at", START).await;
    eventually("the proxy routes", START, || async {
        get(proxy, "/", &[]).await.ok().filter(|r| r.status == 200)
    })
    .await;
    Running { proc, proxy }
}

fn upgrade(config: &TempConfig) -> Proc {
    Proc::spawn(
        "tether-proxy",
        &["--config", config.path_str(), "--upgrade"],
        &[],
    )
}

// === load ===

/// What the clients saw.
#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    refused: AtomicUsize,
    /// Answers with `Connection: close` on a keep-alive connection: the
    /// old process finished that request and let the connection go.
    told_to_close: AtomicUsize,
    /// Anything else that went wrong: an error status, a broken answer.
    failed: Mutex<Vec<String>>,
    /// Keep-alive requests that got no answer: the id, to ask the backends
    /// whether it ever reached one.
    unanswered: Mutex<Vec<String>>,
}

impl Tally {
    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    fn fail(&self, what: String) {
        self.failed.lock().expect("tally").push(what);
    }
}

struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: SocketAddr) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..NEW_CONN_CLIENTS {
            let (tally, stop, ids) = (tally.clone(), stop.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/new/{}", ids.fetch_add(1, Ordering::Relaxed));
                    match get(proxy, &path, &[]).await {
                        Ok(r) if r.status == 200 => {
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => tally.fail(format!("{path}: status {}", r.status)),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.fail(format!("{path}: {e}")),
                    }
                }
            }));
        }
        for _ in 0..KEEP_ALIVE_CLIENTS {
            let (tally, stop, ids) = (tally.clone(), stop.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let mut client: Option<Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    let conn = match &mut client {
                        Some(c) if !c.is_closed() => c,
                        _ => match Client::connect(proxy).await {
                            Ok(c) => client.insert(c),
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                tally.refused.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Err(e) => {
                                tally.fail(format!("keep-alive connect: {e}"));
                                continue;
                            }
                        },
                    };
                    let path = format!("/kept/{}", ids.fetch_add(1, Ordering::Relaxed));
                    match conn.get(&path, &[]).await {
                        Ok(r) if r.status == 200 => {
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                            if r.header("connection") == Some("close") {
                                tally.told_to_close.fetch_add(1, Ordering::Relaxed);
                                client = None;
                            }
                        }
                        Ok(r) => tally.fail(format!("{path}: status {}", r.status)),
                        Err(_) => {
                            tally.unanswered.lock().expect("tally").push(path);
                            client = None;
                        }
                    }
                }
            }));
        }
        Load { tally, stop, tasks }
    }

    /// Waits until `n` more answers than now have arrived.
    async fn answers(&self, n: usize, what: &str) {
        let target = self.tally.answered() + n;
        eventually(what, START, || async {
            (self.tally.answered() >= target).then_some(())
        })
        .await;
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        self.tally
    }
}

/// The pid in the admin endpoint's `/status.json`: which process answers.
async fn status_pid(admin: SocketAddr) -> Option<u32> {
    let reply = get(admin, "/status.json", &[]).await.ok()?;
    let doc: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
    doc["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_refuses_nothing_and_fails_nothing() {
    let backends = backends().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("upgrade.sock");
    let config = TempConfig::new(&proxy_toml(&backends, &socket, "127.0.0.1:0", ""));
    let Running {
        proc: mut old,
        proxy,
    } = start(&config).await;
    let admin = old.wait_listening("admin listening", START).await;
    assert_eq!(status_pid(admin).await, Some(old.pid()));

    let load = Load::start(proxy);
    load.answers(ANSWERS, "answers before the upgrade").await;
    let mut h2 = h2_on_the_old(proxy).await;
    // Read (and PINGs answered) throughout, as a live client would.
    let h2 = tokio::spawn(async move { frames_until_closed(&mut h2).await });

    let started = Instant::now();
    let mut new = upgrade(&config);
    new.wait_for_line("upgrade: serving", START).await;
    let handed_over = started.elapsed();
    let status = old
        .wait_exit(DRAIN + START)
        .await
        .unwrap_or_else(|| panic!("the old proxy did not exit; output:\n{}", old.output()));
    let exited = started.elapsed();
    assert!(status.success(), "old proxy: {status}\n{}", old.output());
    load.answers(ANSWERS, "answers after the old proxy exited")
        .await;
    let tally = load.stop().await;
    // The HTTP/2 client on the old process was told to go, not cut.
    let frames = h2.await.expect("h2 reader");
    assert_eq!(
        goaway_code(&frames),
        Some(0),
        "GOAWAY (NO_ERROR): {frames:?}"
    );

    let refused = tally.refused.load(Ordering::Relaxed);
    let failed = tally.failed.lock().expect("tally").clone();
    let unanswered = tally.unanswered.lock().expect("tally").clone();
    let told_to_close = tally.told_to_close.load(Ordering::Relaxed);
    println!(
        "upgrade: {} answers, {refused} refused, {} failed, {} keep-alive requests unanswered, \
         {told_to_close} told to close; new serving after {handed_over:?}, old exited after {exited:?}",
        tally.answered(),
        failed.len(),
        unanswered.len()
    );
    assert_eq!(refused, 0, "refused connections");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    // A keep-alive request with no answer is a failure if it reached a
    // backend (it was in flight and cut). One that reached none was sent
    // on a connection the old proxy closed while it was idle, before
    // reading it: HTTP/1's keep-alive race (RFC 9112 section 9.3.1), which
    // a client answers by sending it again on a new connection.
    let seen: Vec<String> = backends
        .iter()
        .flat_map(|b| b.requests())
        .map(|r| r.uri)
        .collect();
    for path in &unanswered {
        assert!(
            !seen.iter().any(|uri| uri == path),
            "{path} reached a backend and got no answer: an in-flight request was cut"
        );
        let again = get(proxy, path, &[]).await.expect("sent again");
        assert_eq!(again.status, 200, "{path} sent again");
    }
    assert!(
        told_to_close >= 1,
        "no keep-alive client finished a request on the draining proxy"
    );
    assert!(
        !old.output().contains("drain deadline passed"),
        "the old proxy did not drain within drain_timeout:\n{}",
        old.output()
    );
    let pid = old.pid();
    new.wait_for_line(
        &format!("proxy.listen {proxy} taken over from pid {pid}"),
        START,
    )
    .await;
    new.wait_for_line(
        &format!("admin.listen {admin} taken over from pid {pid}"),
        START,
    )
    .await;
    // The old one is gone: whoever answers on the inherited admin socket
    // is the new one, and says so.
    assert_eq!(status_pid(admin).await, Some(new.pid()));
    assert_eq!(get(proxy, "/", &[]).await.expect("new").status, 200);
    // The socket file is the new process's now: it can be upgraded again.
    let mut newer = upgrade(&config);
    newer.wait_for_line("upgrade: serving", START).await;
    new.wait_exit(DRAIN + START)
        .await
        .unwrap_or_else(|| panic!("the second proxy did not exit:\n{}", new.output()));
    assert_eq!(status_pid(admin).await, Some(newer.pid()));
    newer.terminate();
    newer.wait_exit(DRAIN + START).await;
}

#[tokio::test]
async fn upgrade_without_a_running_proxy_names_the_key() {
    let backends = backends().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("nobody.sock");
    let config = TempConfig::new(&proxy_toml(&backends, &socket, "", ""));
    let (code, _, err) = blocking_run(&["--config", config.path_str(), "--upgrade"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("proxy.upgrade_socket"), "{err}");
    assert!(err.contains("no running process"), "{err}");

    let unset = TempConfig::new(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[[targets]]\nurl = \"{}\"\n",
        backends[0].url()
    ));
    let (code, _, err) = blocking_run(&["--config", unset.path_str(), "--upgrade"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("proxy.upgrade_socket"), "{err}");
}

async fn blocking_run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end("tether-proxy", &refs, &[])
    })
    .await
    .expect("runner")
}

/// A connection the old process accepted just before the hand-over, whose
/// request comes only once the old one drains, is answered (and then
/// closed), not closed unread.
#[tokio::test]
async fn a_connection_accepted_just_before_the_hand_over_is_served() {
    let backends = backends().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("upgrade.sock");
    let config = TempConfig::new(&proxy_toml(&backends, &socket, "127.0.0.1:0", ""));
    let Running {
        proc: mut old,
        proxy,
    } = start(&config).await;
    let admin = old.wait_listening("admin listening", START).await;

    let mut conn = RawConn::connect(proxy, START).await.expect("connect");
    eventually("the old proxy holds the connection", START, || async {
        let metrics = get(admin, "/metrics", &[]).await.ok()?;
        metrics
            .body
            .lines()
            .any(|l| l == "tether_open_connections 1")
            .then_some(())
    })
    .await;
    let mut new = upgrade(&config);
    old.wait_for_line(
        &format!("pid {} serves; this process stops accepting", new.pid()),
        START,
    )
    .await;
    conn.send(format!("GET / HTTP/1.1\r\nHost: {proxy}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let answer = conn
        .read_response()
        .await
        .expect("answered by the draining proxy");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"));
    old.wait_exit(DRAIN + START)
        .await
        .expect("the old proxy exits");
    assert!(
        !old.output().contains("drain deadline passed"),
        "{}",
        old.output()
    );
    new.terminate();
    new.wait_exit(DRAIN + START).await;
}

/// Speaks the protocol's first half by hand: takes the listeners, never
/// says `serving`.
fn take_without_serving(socket: &PathBuf) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect to the upgrade socket");
    stream.set_read_timeout(Some(START)).expect("read timeout");
    stream
        .write_all(b"tether-upgrade 1 pid=1\n")
        .expect("hello");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"end\n") {
        let n = stream.read(&mut buf).expect("the offer");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    stream
}

#[tokio::test]
async fn a_second_upgrade_is_refused_and_one_that_never_serves_changes_nothing() {
    let backends = backends().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("upgrade.sock");
    let config = TempConfig::new(&proxy_toml(&backends, &socket, "", ""));
    let Running { proc: old, proxy } = start(&config).await;

    // A fresh start on the same socket is not an upgrade.
    let (code, _, err) = blocking_run(&["--config", config.path_str()]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("proxy.upgrade_socket") && err.contains("--upgrade"),
        "{err}"
    );

    let holder = take_without_serving(&socket);
    let (code, _, err) = blocking_run(&["--config", config.path_str(), "--upgrade"]).await;
    assert_ne!(code, 0, "a second upgrade while one runs");
    assert!(err.contains("another upgrade is in progress"), "{err}");
    assert_eq!(get(proxy, "/", &[]).await.expect("old").status, 200);

    let mark = old.line_count();
    drop(holder);
    old.wait_for_line_after(mark, "ended before it served", START)
        .await;
    assert!(old.try_exit().is_none(), "the old proxy kept running");
    assert_eq!(get(proxy, "/", &[]).await.expect("old").status, 200);

    // A reload keeps the upgrade socket, and a real upgrade still works.
    let mark = old.line_count();
    old.reload();
    old.wait_for_line_after(mark, "reload #1 applied", START)
        .await;
    let mut new = upgrade(&config);
    new.wait_for_line("upgrade: serving", START).await;
    let mut old = old;
    old.wait_exit(DRAIN + START)
        .await
        .expect("the old proxy exits after a real upgrade");
    assert_eq!(get(proxy, "/", &[]).await.expect("new").status, 200);
    new.terminate();
    new.wait_exit(DRAIN + START).await;
}

#[tokio::test]
async fn a_new_config_binds_what_is_new_and_drops_what_is_gone() {
    let backends = backends().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("upgrade.sock");
    let old_config = TempConfig::new(&proxy_toml(&backends, &socket, "127.0.0.1:0", ""));
    let Running {
        proc: mut old,
        proxy,
    } = start(&old_config).await;
    let admin = old.wait_listening("admin listening", START).await;

    // Without the admin endpoint, with the embedded checker's gRPC API.
    let new_config = TempConfig::new(&proxy_toml(
        &backends,
        &socket,
        "",
        "\n[checker]\ngrpc_listen = \"127.0.0.1:0\"\n",
    ));
    let mut new = upgrade(&new_config);
    new.wait_for_line("upgrade: serving", START).await;
    new.wait_for_line("checker.grpc_listen 127.0.0.1:0 is new; bound fresh", START)
        .await;
    new.wait_for_line(
        &format!("admin.listen {admin} is not in this config"),
        START,
    )
    .await;
    let grpc = new.wait_listening("grpc listening", START).await;
    old.wait_exit(DRAIN + START)
        .await
        .expect("the old proxy exits");
    assert_eq!(get(proxy, "/", &[]).await.expect("new").status, 200);
    assert!(std::net::TcpStream::connect(grpc).is_ok(), "gRPC listens");
    // The old process held the only admin socket; it is closed now.
    let refused = std::net::TcpStream::connect(admin).expect_err("admin is gone");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // SIGTERM still closes the listeners at once: the copies kept for the
    // next upgrade go with them.
    new.terminate();
    eventually("the client listener closes on SIGTERM", START, || async {
        match tokio::net::TcpStream::connect(proxy).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    new.wait_exit(DRAIN + START).await.expect("exits");
}

// === a raw HTTP/2 connection, to see the GOAWAY itself ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// (type, stream, payload, flags).
type Frame = (u8, u32, Vec<u8>, u8);

/// An h2c connection (prior knowledge) past the exchange of SETTINGS: the
/// process serving it when this returns is the old one.
async fn h2_on_the_old(proxy: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
    // Its SETTINGS acknowledged, as a client does.
    hello.extend_from_slice(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]);
    tcp.write_all(&hello).await.expect("preface");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    while !parse(&bytes).iter().any(|f| f.0 == SETTINGS) {
        let n = tokio::time::timeout(START, tcp.read(&mut buf))
            .await
            .expect("the proxy's SETTINGS")
            .expect("read");
        assert!(n > 0, "closed before SETTINGS");
        bytes.extend_from_slice(&buf[..n]);
    }
    tcp
}

/// Every frame the proxy sends until it closes the connection, answering
/// its PINGs as a client does (a graceful HTTP/2 shutdown waits for one).
async fn frames_until_closed(tcp: &mut tokio::net::TcpStream) -> Vec<Frame> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let mut acked = 0;
    loop {
        match tokio::time::timeout(START, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection stayed open: {:?}", parse(&bytes)),
        }
        let pings: Vec<Vec<u8>> = parse(&bytes)
            .into_iter()
            .filter(|f| f.0 == PING && f.3 & ACK == 0)
            .map(|f| f.2)
            .collect();
        for payload in pings.iter().skip(acked) {
            let mut ack = vec![0, 0, 8, PING, ACK, 0, 0, 0, 0];
            ack.extend_from_slice(payload);
            let _ = tcp.write_all(&ack).await;
        }
        acked = pings.len();
    }
    parse(&bytes)
}

/// Frames as (type, stream, payload, flags).
fn parse(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push((bytes[3], stream, bytes[9..9 + len].to_vec(), bytes[4]));
        bytes = &bytes[9 + len..];
    }
    frames
}

/// The error code of the GOAWAY among `frames`, if any.
fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == GOAWAY && f.2.len() >= 8)
        .map(|f| u32::from_be_bytes([f.2[4], f.2[5], f.2[6], f.2[7]]))
}
