//! A client that never takes its answer must not hold a backend, and what
//! clients abandon is counted: `send_timeout` and the HTTP/2 abuse cases,
//! through a real `tether-proxy` process. HTTP/2 is spoken by the `h2`
//! crate as a client where it can say it (a shut window, resets after the
//! backend has the request), and by raw frames where a well-behaved client
//! would refuse to (Rapid Reset, CONTINUATION floods, HPACK bombs, unread
//! PINGs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tether_testkit::rss::vm_rss;
use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);
/// The proxy's `send_timeout` in these tests.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A proxy process in embedded mode over `backend`, with its admin
/// endpoint, ready to route.
struct Setup {
    proc: Proc,
    http: SocketAddr,
    admin: SocketAddr,
    _config: TempConfig,
}

async fn setup(backend: &FakeBackend) -> Setup {
    setup_with(backend, SEND_TIMEOUT).await
}

async fn setup_with(backend: &FakeBackend, send_timeout: Duration) -> Setup {
    let toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nsend_timeout = \"{}ms\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [log]\nlevel = \"info\"\n\
         [[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
        send_timeout.as_millis(),
        backend.url(),
        backend.name()
    );
    let config = TempConfig::new(&toml);
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let http = proc.wait_listening("http", START).await;
    let admin = proc.wait_listening("admin", START).await;
    eventually("the proxy is ready", DEADLINE, || async {
        let r = get(admin, "/readyz", &[]).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    Setup {
        proc,
        http,
        admin,
        _config: config,
    }
}

/// `name{labels}` -> value from the admin endpoint's `/metrics`.
async fn metrics(admin: SocketAddr) -> BTreeMap<String, f64> {
    let r = get(admin, "/metrics", &[]).await.expect("metrics");
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn metric(admin: SocketAddr, key: &str) -> f64 {
    metrics(admin).await.get(key).copied().unwrap_or(0.0)
}

/// Waits until `backend` has at most `open` connections, within `deadline`
/// of `since`.
async fn released(backend: &FakeBackend, open: usize, since: Instant, deadline: Duration) {
    let left = deadline.saturating_sub(since.elapsed());
    eventually("the backend connections are released", left, || async {
        (backend.open_connections() <= open).then_some(())
    })
    .await;
}

/// An HTTP/2 client (prior knowledge) whose streams never open their
/// window: `SETTINGS_INITIAL_WINDOW_SIZE = 0` and no WINDOW_UPDATE.
async fn shut_window_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    client
}

fn get_req(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_with_a_shut_window_release_their_backends() {
    const STREAMS: usize = 20;
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    let baseline = backend.open_connections();
    let client = shut_window_client(s.http).await;
    let mut pending = Vec::new();
    for _ in 0..STREAMS {
        let mut c = client.clone().ready().await.expect("stream slot");
        let (res, _) = c
            .send_request(get_req(s.http, "/bytes/1048576"), true)
            .expect("send");
        pending.push(res);
    }
    let mut bodies = Vec::new();
    for res in pending {
        let res = res.await.expect("response head");
        assert_eq!(res.status(), 200);
        bodies.push(res.into_body());
    }
    // Every answer waits for the client from here.
    let heads = Instant::now();
    assert!(
        backend.open_connections() >= baseline + STREAMS,
        "each stream holds a backend connection"
    );
    released(
        &backend,
        baseline,
        heads,
        SEND_TIMEOUT + Duration::from_secs(1),
    )
    .await;
    for mut body in bodies {
        let end = body.data().await;
        let reset = matches!(&end, Some(Err(e)) if e.reason() == Some(h2::Reason::CANCEL));
        assert!(reset, "the stream was reset: {end:?}");
    }
    assert_eq!(
        metric(s.admin, "tether_requests_cancelled_total{target=\"app-1\"}").await,
        STREAMS as f64
    );
    eventually("the GOAWAY is counted", DEADLINE, || async {
        let key = "tether_goaways_total{reason=\"send_timeout\"}";
        (metric(s.admin, key).await == 1.0).then_some(())
    })
    .await;
    s.proc
        .wait_for_line(&format!("{STREAMS} streams cut"), DEADLINE)
        .await;
    // The proxy serves on.
    assert_eq!(get(s.http, "/", &[]).await.expect("proxy").status, 200);
}

/// A socket with a small receive buffer, so the proxy's writes stall soon.
async fn small_window_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_never_reads_is_cut() {
    const LEN: u64 = 64 * 1024 * 1024;
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    let baseline = backend.open_connections();
    let mut client = small_window_socket(s.http).await;
    let sent = Instant::now();
    client
        .write_all(format!("GET /bytes/{LEN} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    eventually("the backend has the request", DEADLINE, || async {
        (backend.open_connections() > baseline).then_some(())
    })
    .await;
    // Filling the buffers takes milliseconds; then `send_timeout`.
    released(
        &backend,
        baseline,
        sent,
        SEND_TIMEOUT + Duration::from_secs(2),
    )
    .await;
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got).await;
    assert!((got.len() as u64) < LEN, "the answer was cut");
    s.proc
        .wait_for_line("took no bytes of its answer", DEADLINE)
        .await;
    assert_eq!(
        metric(s.admin, "tether_requests_cancelled_total{target=\"app-1\"}").await,
        1.0
    );
}

/// A client's kernel takes bytes in steps: its window opens after it has
/// read a few KiB, and the proxy's socket is writable again once half its
/// unsent-bytes mark (8 KiB) has gone. At 1 KiB a second that is one step
/// every 6 to 12 s on loopback (seen here), so the timeout in this test
/// is longer than that; at the 60 s default the margin is wide.
const SLOW_SEND_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_reader_is_never_cut() {
    let backend = FakeBackend::start("app-1").await;
    let s = setup_with(&backend, SLOW_SEND_TIMEOUT).await;
    let baseline = backend.open_connections();
    let mut client = small_window_socket(s.http).await;
    client
        .write_all(b"GET /bytes/16777216 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    // 1 KiB a second for more than twice the send timeout.
    let mut buf = [0u8; 1024];
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let until = Instant::now() + SLOW_SEND_TIMEOUT * 2 + Duration::from_secs(2);
    while Instant::now() < until {
        every.tick().await;
        let n = client.read(&mut buf).await.expect("read");
        assert!(n > 0, "the proxy closed a client that reads 1 KiB a second");
    }
    assert_eq!(
        backend.open_connections(),
        baseline + 1,
        "still served: {}",
        s.proc.output()
    );
    assert_eq!(
        metric(s.admin, "tether_requests_cancelled_total{target=\"app-1\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_after_the_backend_has_the_request_are_counted() {
    const STREAMS: usize = 30;
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    backend.set_latency(Duration::from_secs(30));
    let tcp = TcpStream::connect(s.http).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut pending = Vec::new();
    for _ in 0..STREAMS {
        let mut c = client.clone().ready().await.expect("stream slot");
        let (res, _) = c.send_request(get_req(s.http, "/"), true).expect("send");
        pending.push(res);
    }
    eventually("every request reached the backend", DEADLINE, || async {
        (backend.hits() >= STREAMS).then_some(())
    })
    .await;
    // Dropping a response future resets its stream (CANCEL).
    drop(pending);
    eventually("every reset is counted", DEADLINE, || async {
        let n = metric(s.admin, "tether_requests_cancelled_total{target=\"app-1\"}").await;
        (n == STREAMS as f64).then_some(())
    })
    .await;
    drop(client);
    s.proc
        .wait_for_line(
            &format!("{STREAMS} requests cancelled after reaching a backend"),
            DEADLINE,
        )
        .await;
}

// === raw HTTP/2 frames, for what a well-behaved client would not send ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame length");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// `GET /` as an HPACK block: static-table entries and a literal
/// `:authority`.
fn get_block() -> Vec<u8> {
    vec![0x82, 0x86, 0x84, 0x01, 0x01, b'x']
}

/// A connection past the preface and an empty SETTINGS.
async fn raw_h2(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    frame(&mut hello, SETTINGS, 0, 0, &[]);
    tcp.write_all(&hello).await.expect("preface");
    tcp
}

/// What the proxy sent until it closed or `deadline` passed: frames as
/// (type, flags, stream, payload).
async fn read_frames(tcp: &mut TcpStream, deadline: Duration) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            if parse(&bytes).iter().any(|f| f.0 == GOAWAY) {
                break;
            }
        }
    })
    .await;
    parse(&bytes)
}

fn parse(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    frames
}

/// The error code of the GOAWAY among `frames`, if any.
fn goaway_code(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == GOAWAY && f.3.len() >= 8)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_a_goaway_and_reaches_no_backend() {
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    let mut tcp = raw_h2(s.http).await;
    let mut flood = Vec::new();
    for i in 0..500u32 {
        let stream = 2 * i + 1;
        frame(
            &mut flood,
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &get_block(),
        );
        frame(&mut flood, RST_STREAM, 0, stream, &8u32.to_be_bytes());
    }
    let _ = tcp.write_all(&flood).await;
    let frames = read_frames(&mut tcp, DEADLINE).await;
    assert_eq!(goaway_code(&frames), Some(0xb), "ENHANCE_YOUR_CALM");
    assert_eq!(backend.hits(), 0, "no reset stream reached the backend");
    // Counted once the connection's task has seen its end.
    eventually("the GOAWAY is counted", DEADLINE, || async {
        let key = "tether_goaways_total{reason=\"enhance_your_calm\"}";
        (metric(s.admin, key).await == 1.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut() {
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    let mut tcp = raw_h2(s.http).await;
    let mut first = Vec::new();
    frame(&mut first, HEADERS, 0, 1, &get_block());
    tcp.write_all(&first).await.expect("headers");
    // Literal headers, never an END_HEADERS: 16 MiB if nothing stops it.
    let mut block = Vec::new();
    while block.len() < 16 * 1024 - 200 {
        block.extend_from_slice(&[0x00, 0x03, b'a', b'b', b'c', 0x7f, 0x00]);
        block.extend_from_slice(&[b'v'; 127]);
    }
    let mut piece = Vec::new();
    frame(&mut piece, CONTINUATION, 0, 1, &block);
    let (mut read, mut write) = tcp.into_split();
    let flood = tokio::spawn(async move {
        for _ in 0..1024 {
            if write.write_all(&piece).await.is_err() {
                break;
            }
        }
    });
    let mut bytes = Vec::new();
    let goaway = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return goaway_code(&parse(&bytes)),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            if let Some(code) = goaway_code(&parse(&bytes)) {
                return Some(code);
            }
        }
    })
    .await;
    flood.abort();
    eprintln!("CONTINUATION flood: GOAWAY {goaway:?}");
    assert!(
        matches!(goaway, Ok(Some(_))),
        "a GOAWAY ends the flood: {goaway:?}"
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused() {
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    let mut tcp = raw_h2(s.http).await;
    // One 4,000-byte header into the dynamic table, then 2,000 references
    // to it: 8 MB of headers from 6 KB on the wire.
    let mut block = get_block();
    block.extend_from_slice(&[0x40, 0x01, b'x', 0x7f]);
    // 4000 - 127 as an HPACK integer continuation.
    let mut rest = 4000 - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend_from_slice(&[b'y'; 4000]);
    block.extend(std::iter::repeat_n(0xbe, 2000));
    let mut out = Vec::new();
    let mut chunks = block.chunks(16 * 1024).peekable();
    let mut kind = HEADERS;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS | END_STREAM
        } else {
            0
        };
        frame(&mut out, kind, flags, 1, chunk);
        kind = CONTINUATION;
    }
    let _ = tcp.write_all(&out).await;
    let frames = read_frames(&mut tcp, Duration::from_secs(3)).await;
    let seen: Vec<_> = frames.iter().map(|f| (f.0, f.2, f.3.len())).collect();
    eprintln!("HPACK bomb answered with (type, stream, length): {seen:?}");
    let refused = frames
        .iter()
        .any(|f| f.2 == 1 && (f.0 == RST_STREAM || f.0 == HEADERS) || f.0 == GOAWAY);
    assert!(
        refused,
        "the bomb was answered: {:?}",
        frames.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>()
    );
    assert_eq!(backend.hits(), 0, "the bomb never reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_pings_and_settings_cost_no_memory() {
    let backend = FakeBackend::start("app-1").await;
    let s = setup(&backend).await;
    let pid = s.proc.pid();
    let mut tcp = raw_h2(s.http).await;
    let before = vm_rss(pid).expect("rss");
    let mut burst = Vec::new();
    for i in 0..1000u64 {
        frame(&mut burst, PING, 0, 0, &i.to_be_bytes());
        frame(&mut burst, SETTINGS, 0, 0, &[]);
    }
    // 100,000 of each, and never a byte read back.
    let flood = async {
        for _ in 0..100 {
            if tcp.write_all(&burst).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DEADLINE, flood).await;
    let after = vm_rss(pid).expect("rss");
    let grown = after.saturating_sub(before);
    eprintln!("unread PINGs and SETTINGS: RSS {before} -> {after} bytes");
    assert!(
        grown < 4 * 1024 * 1024,
        "RSS grew by {grown} bytes for unread PINGs and SETTINGS"
    );
    assert_eq!(get(s.http, "/", &[]).await.expect("proxy").status, 200);
}
