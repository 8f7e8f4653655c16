//! A controllable fake HTTP/1.1 backend: answers with its name, switches its
//! health at runtime, adds latency, records what it received, and stops for
//! real (listener and open connections closed).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The path that answers `200 ok` while healthy and `503 failing` otherwise.
pub const HEALTH_PATH: &str = "/health";
/// `POST` here turns the backend unhealthy (used by the demo).
pub const FAIL_PATH: &str = "/_echo/fail";
/// `POST` here turns the backend healthy again (used by the demo).
pub const RECOVER_PATH: &str = "/_echo/recover";
/// The response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";

/// One non-health request as the backend received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A fake backend on a loopback port. Dropping it without [`stop`] stops
/// accepting in the background; [`stop`] also waits until everything closed.
///
/// [`stop`]: FakeBackend::stop
#[derive(Debug)]
pub struct FakeBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    healthy: AtomicBool,
    latency_nanos: AtomicU64,
    reset: AtomicBool,
    resets: AtomicUsize,
    health_hits: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
}

// === impl FakeBackend ===

impl FakeBackend {
    /// Starts a healthy backend on `127.0.0.1:0`.
    pub async fn start(name: &str) -> FakeBackend {
        let addr = crate::net::any_local_port();
        match Self::start_on(name, addr).await {
            Ok(backend) => backend,
            Err(e) => panic!("fake backend {name}: cannot listen on {addr}: {e}"),
        }
    }

    /// Starts a healthy backend on `addr`; use it to come back on the port of
    /// a backend that was stopped.
    pub async fn start_on(name: &str, addr: SocketAddr) -> io::Result<FakeBackend> {
        let listener = crate::net::listen(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            latency_nanos: AtomicU64::new(0),
            reset: AtomicBool::new(false),
            resets: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let server = tokio::spawn(serve(listener, Arc::clone(&shared), shutdown_rx));
        Ok(FakeBackend {
            addr,
            shared,
            shutdown,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the form a pool member's url takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether [`HEALTH_PATH`] answers `200 ok` or `503 failing`.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }

    /// Delay before answering each non-health request (after its body was read).
    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.shared.latency_nanos.store(nanos, Ordering::SeqCst);
    }

    /// While on, every newly accepted connection is reset (RST, `SO_LINGER`
    /// 0) before a byte is read or written; connections already open keep
    /// working. Health checks on new connections fail too.
    pub fn set_reset_connections(&self, reset: bool) {
        self.shared.reset.store(reset, Ordering::SeqCst);
    }

    /// How many connections were reset by [`set_reset_connections`].
    ///
    /// [`set_reset_connections`]: FakeBackend::set_reset_connections
    pub fn resets(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Requests received, not counting the health path or the control paths.
    pub fn hits(&self) -> usize {
        self.shared.log().len()
    }

    /// Requests to [`HEALTH_PATH`].
    pub fn health_hits(&self) -> usize {
        self.shared.health_hits.load(Ordering::SeqCst)
    }

    /// Every non-health request, in the order they were received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log().clone()
    }

    /// Closes the listener and every open connection and waits for both:
    /// once this returns, connects to [`addr`](FakeBackend::addr) are refused.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        if let Err(e) = self.server.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

// === impl Shared ===

impl Shared {
    fn log(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A test that panicked while holding the lock left a valid Vec behind.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::SeqCst))
    }
}

// === serving ===

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    // Connection tasks live in this set so that stopping can abort them,
    // which drops (closes) their sockets.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                if shared.reset.load(Ordering::SeqCst) {
                    reset(stream);
                    shared.resets.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                conns.spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

fn reset(stream: TcpStream) {
    // Zero linger turns the close into an RST instead of a FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| respond(Arc::clone(&shared), req));
    // Errors here are the client's business (it hung up, sent garbage).
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == HEALTH_PATH {
        shared.health_hits.fetch_add(1, Ordering::SeqCst);
        return Ok(if shared.healthy.load(Ordering::SeqCst) {
            text(StatusCode::OK, "ok")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "failing")
        });
    }
    if req.method() == Method::POST && (path == FAIL_PATH || path == RECOVER_PATH) {
        let healthy = path == RECOVER_PATH;
        shared.healthy.store(healthy, Ordering::SeqCst);
        return Ok(text(
            StatusCode::OK,
            if healthy { "recovered" } else { "failing" },
        ));
    }

    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), value)
        })
        .collect();
    let body_len = drain(req.into_body()).await;
    shared.log().push(RecordedRequest {
        method,
        uri,
        headers,
        body_len,
    });

    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut resp = text(StatusCode::OK, &shared.name);
    if let Ok(value) = http::HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert(BACKEND_HEADER, value);
    }
    Ok(resp)
}

/// Reads a request body to its end (or to the first error) and counts it.
async fn drain(mut body: Incoming) -> usize {
    let mut len = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            len += data.len();
        }
    }
    len
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
