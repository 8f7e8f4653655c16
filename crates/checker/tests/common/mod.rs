//! The harness the checker's socket tests share: a checker serving gRPC on
//! a loopback port, the targets it probes, and a Watch stream pumped into a
//! channel.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use tether_checker::CheckerConfig;
use tether_core::{HealthUpdate, ProbeKind, ProbeSpec, Target};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{HEALTH_PATH, eventually};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Generous: the machine is shared with other builds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A target probed at [`HEALTH_PATH`] every `interval`, healthy after 2
/// successes in a row and unhealthy after `fall` failures in a row.
pub fn target(
    name: &str,
    url: String,
    kind: ProbeKind,
    interval: Duration,
    timeout: Duration,
    fall: u32,
) -> Target {
    Target {
        name: name.to_owned(),
        url,
        probe: ProbeSpec {
            kind,
            path: HEALTH_PATH.to_owned(),
            interval,
            timeout,
            rise: NonZeroU32::new(2).expect("non-zero"),
            fall: NonZeroU32::new(fall).expect("non-zero"),
        },
        tls_ca: Vec::new(),
    }
}

/// A checker serving gRPC on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tether_checker::Error>>,
}

impl Server {
    pub async fn start(targets: Vec<Target>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = CheckerConfig::new(addr, targets);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tether_checker::run_on(listener, config, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the checker")
    }

    pub async fn client(&self) -> HealthServiceClient<Channel> {
        HealthServiceClient::new(self.channel().await)
    }

    /// Completes the shutdown future and waits for `run_on` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = &self.task;
        eventually("run_on to return after shutdown", DEADLINE, || {
            std::future::ready(task.is_finished().then_some(()))
        })
        .await;
        self.task
            .await
            .expect("run_on panicked")
            .expect("run_on failed");
    }
}

/// What a Watch stream delivers, in order.
pub type WatchRx = mpsc::UnboundedReceiver<Result<HealthUpdate, tonic::Status>>;

/// Opens a Watch stream and pumps it into a channel from a task.
pub async fn open_watch(client: &mut HealthServiceClient<Channel>) -> WatchRx {
    let mut stream = client
        .watch(pb::WatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    let update = HealthUpdate::try_from(msg).expect("valid watch message");
                    if tx.send(Ok(update)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status));
                    return;
                }
            }
        }
    });
    rx
}

/// The next item of `rx`; `None` once every sender is gone.
pub async fn recv<T>(what: &str, rx: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
    eventually(what, DEADLINE, || {
        let got = match rx.try_recv() {
            Ok(item) => Some(Some(item)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
        };
        std::future::ready(got)
    })
    .await
}

/// The next update of a Watch stream; panics if it failed or ended.
pub async fn next_update(what: &str, rx: &mut WatchRx) -> HealthUpdate {
    match recv(what, rx).await {
        Some(Ok(update)) => update,
        Some(Err(status)) => panic!("watch stream failed: {status}"),
        None => panic!("watch stream ended while waiting for {what}"),
    }
}
