//! A scripted fake checker: serves `tether.health.v1.HealthService` on a
//! loopback port and sends exactly what the test tells it to, including
//! version gaps and broken streams.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tether_core::{CheckerState, HealthState, HealthUpdate, ProbeKind, TargetStatus};
use tether_proto::pb;
use tether_proto::pb::health_service_server::{HealthService, HealthServiceServer};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};

/// How long [`FakeChecker::stop`] waits for connections to drain before it
/// gives up on them (the listener is closed before that in any case).
const STOP_GRACE: Duration = Duration::from_secs(5);

type WatchItem = Result<pb::WatchResponse, Status>;

/// A fake checker on a loopback port. Dropping it ends its streams and stops
/// accepting; [`stop`](FakeChecker::stop) also waits for the server to finish.
#[derive(Debug)]
pub struct FakeChecker {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Builds a `TargetStatus` with the given name, url and state, probe kind
/// TCP and nothing else known.
pub fn status(name: &str, url: &str, state: HealthState) -> TargetStatus {
    TargetStatus {
        state,
        ..TargetStatus::unknown(name, url, ProbeKind::Tcp)
    }
}

#[derive(Debug, Default)]
struct State {
    watch_calls: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    targets: Vec<TargetStatus>,
    /// What snapshots say of the checker itself (not impaired by default).
    checker: CheckerState,
    streams: Vec<mpsc::UnboundedSender<WatchItem>>,
    /// Set when stopping: no new streams, so the server can drain.
    closing: bool,
    /// While set, Watch calls are answered with this status.
    refuse_watch: Option<Status>,
    /// Every Report call received: (name, reason), in arrival order.
    reports: Vec<(String, String)>,
}

// === impl FakeChecker ===

impl FakeChecker {
    /// Starts a checker with an empty snapshot (version 0) on `127.0.0.1:0`.
    pub async fn start() -> FakeChecker {
        let addr = crate::net::any_local_port();
        match Self::start_on(addr).await {
            Ok(checker) => checker,
            Err(e) => panic!("fake checker: cannot listen on {addr}: {e}"),
        }
    }

    /// Starts a checker with an empty snapshot on `addr`; use it to come back
    /// on the port of a checker that was stopped.
    pub async fn start_on(addr: SocketAddr) -> io::Result<FakeChecker> {
        let listener = crate::net::listen(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let service = HealthServiceServer::new(Service {
            state: Arc::clone(&state),
        });
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    // A dropped sender means the same as a sent one: stop.
                    let _ = shutdown_rx.await;
                }),
        );
        Ok(FakeChecker {
            addr,
            state,
            shutdown: Some(shutdown),
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the form a proxy's `checkers` entry takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the snapshot every new Watch call receives first (one message,
    /// `update = Snapshot`, this `version`), and what List and Get answer.
    /// Streams already open are not told; use [`send`](FakeChecker::send).
    pub fn set_snapshot(&self, version: u64, targets: Vec<TargetStatus>) {
        let mut inner = self.state.lock();
        inner.version = version;
        inner.targets = targets;
    }

    /// Sets what every later snapshot (Watch, List) says of the checker
    /// itself, e.g. impaired. Streams already open are not told; send them
    /// a `HealthUpdate::checker`.
    pub fn set_checker_state(&self, state: CheckerState) {
        self.state.lock().checker = state;
    }

    /// Sends `update` to every open Watch stream as it is: no version checks
    /// and no change to the stored snapshot, so tests can send gaps.
    pub fn send(&self, update: HealthUpdate) {
        self.state.broadcast(Ok(pb::WatchResponse::from(&update)));
    }

    /// Ends every open Watch stream with `Status::unavailable`.
    pub fn break_streams(&self) {
        self.break_streams_with(Status::unavailable("stream broken by the fake checker"));
    }

    /// Ends every open Watch stream with `status`.
    pub fn break_streams_with(&self, status: Status) {
        let streams = std::mem::take(&mut self.state.lock().streams);
        for tx in streams {
            let _ = tx.send(Err(status.clone()));
        }
    }

    /// While `Some`, new Watch calls fail at once with that status (they
    /// still count in [`watch_calls`](FakeChecker::watch_calls)).
    pub fn refuse_watch(&self, status: Option<Status>) {
        self.state.lock().refuse_watch = status;
    }

    /// Watch calls received so far, refused ones included.
    pub fn watch_calls(&self) -> usize {
        self.state.watch_calls.load(Ordering::SeqCst)
    }

    /// Every Report call received so far as (name, reason), in order,
    /// unknown names included.
    pub fn reports(&self) -> Vec<(String, String)> {
        self.state.lock().reports.clone()
    }

    /// Watch streams currently open; streams whose client went away are
    /// forgotten here.
    pub fn open_streams(&self) -> usize {
        let mut inner = self.state.lock();
        inner.streams.retain(|tx| !tx.is_closed());
        inner.streams.len()
    }

    /// Ends every stream, closes the listener and waits for the server to
    /// finish; afterwards connects to [`addr`](FakeChecker::addr) are refused.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        match tokio::time::timeout(STOP_GRACE, &mut self.server).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(_)) => {}
            // The listener was dropped when the signal arrived; only
            // connections are left, and they die with the task.
            Err(_) => self.server.abort(),
        }
    }

    fn begin_shutdown(&mut self) {
        // Graceful shutdown waits for open streams, so no new ones may
        // start and the open ones end first.
        self.state.lock().closing = true;
        self.break_streams_with(Status::unavailable("fake checker stopping"));
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for FakeChecker {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

// === impl State ===

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock left valid data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broadcast(&self, item: WatchItem) {
        let mut inner = self.lock();
        inner.streams.retain(|tx| tx.send(item.clone()).is_ok());
    }
}

// === impl Service ===

#[derive(Debug)]
struct Service {
    state: Arc<State>,
}

#[tonic::async_trait]
impl HealthService for Service {
    type WatchStream = UnboundedReceiverStream<WatchItem>;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.state.watch_calls.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.state.lock();
        if inner.closing {
            return Err(Status::unavailable("fake checker stopping"));
        }
        if let Some(status) = &inner.refuse_watch {
            return Err(status.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let first = pb::WatchResponse {
            version: inner.version,
            update: Some(pb::watch_response::Update::Snapshot(pb::Snapshot {
                targets: inner.targets.iter().map(pb::TargetHealth::from).collect(),
                checker: inner
                    .checker
                    .is_impaired()
                    .then(|| pb::CheckerState::from(&inner.checker)),
            })),
        };
        // The receiver is in hand, so this send cannot fail.
        let _ = tx.send(Ok(first));
        inner.streams.push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let inner = self.state.lock();
        Ok(Response::new(pb::ListResponse {
            version: inner.version,
            targets: inner.targets.iter().map(pb::TargetHealth::from).collect(),
            checker: inner
                .checker
                .is_impaired()
                .then(|| pb::CheckerState::from(&inner.checker)),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let name = request.into_inner().name;
        let inner = self.state.lock();
        match inner.targets.iter().find(|t| t.name == name) {
            Some(target) => Ok(Response::new(pb::GetResponse {
                version: inner.version,
                target: Some(target.into()),
            })),
            None => Err(Status::not_found(format!("no target named {name:?}"))),
        }
    }

    /// Records the report; accepted for a name in the current snapshot,
    /// `NOT_FOUND` otherwise. Never changes the snapshot.
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let req = request.into_inner();
        let mut inner = self.state.lock();
        inner.reports.push((req.name.clone(), req.reason));
        if inner.targets.iter().any(|t| t.name == req.name) {
            Ok(Response::new(pb::ReportResponse { accepted: true }))
        } else {
            Err(Status::not_found(format!("no target named {:?}", req.name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::pb::health_service_client::HealthServiceClient;

    #[tokio::test]
    async fn report_is_recorded_and_answered_by_name() {
        let checker = FakeChecker::start().await;
        checker.set_snapshot(
            1,
            vec![status("a", "http://127.0.0.1:1", HealthState::Healthy)],
        );
        let mut client = HealthServiceClient::connect(checker.url())
            .await
            .expect("connect to fake checker");
        let request = |name: &str, reason: &str| pb::ReportRequest {
            name: name.to_owned(),
            reason: reason.to_owned(),
            reporter: "127.0.0.1:8080".to_owned(),
        };

        let ok = client
            .report(request("a", "connect refused"))
            .await
            .expect("report a")
            .into_inner();
        assert!(ok.accepted);
        let unknown = client
            .report(request("zz", "502"))
            .await
            .expect_err("unknown name");
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
        assert_eq!(
            checker.reports(),
            [
                ("a".to_owned(), "connect refused".to_owned()),
                ("zz".to_owned(), "502".to_owned()),
            ]
        );
        // A report changes nothing by itself.
        let listed = client
            .list(pb::ListRequest {})
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.version, 1);
        assert_eq!(listed.targets[0].state, i32::from(pb::HealthState::Healthy));
        checker.stop().await;
    }
}
