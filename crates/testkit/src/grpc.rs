//! A gRPC service for tests (`proto/tether/test/v1/echo.proto`): every
//! kind of call (unary, server streaming, client streaming, both), with
//! knobs for size, count, delay and failure. Served in a process of its
//! own by `tether-grpc-echo` (so a test can kill it mid-stream), or
//! in-process by [`serve`]. Streams the client abandons are reported on
//! the process's stdout (`stream cancelled`), so a test can wait for the
//! cancellation to reach the backend.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

#[allow(clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("tether.test.v1");
}

pub use pb::echo_client::EchoClient;
pub use pb::echo_server::EchoServer;
pub use pb::{Ask, Msg};

/// Printed (with the server's name before it) when a client abandons a
/// server stream.
pub const CANCELLED_LINE: &str = "stream cancelled";

/// The service; `name` goes into every answer.
#[derive(Clone, Debug)]
pub struct Echo {
    pub name: String,
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::echo_server::Echo for Echo {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let mut m = req.into_inner();
        m.server = self.name.clone();
        Ok(Response::new(m))
    }

    type StreamStream = MsgStream;

    async fn stream(&self, req: Request<Ask>) -> Result<Response<MsgStream>, Status> {
        let ask = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let name = self.name.clone();
        tokio::spawn(async move {
            for seq in 0..u64::from(ask.count) {
                let m = Msg {
                    seq,
                    payload: vec![(seq % 251) as u8; ask.size as usize],
                    server: name.clone(),
                    total: 0,
                };
                if tx.send(Ok(m)).await.is_err() {
                    println!("{name}: {CANCELLED_LINE}");
                    return;
                }
            }
            tokio::select! {
                () = tx.closed() => println!("{name}: {CANCELLED_LINE}"),
                () = tokio::time::sleep(Duration::from_millis(ask.hold_ms)) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn collect(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut stream = req.into_inner();
        let (mut count, mut total) = (0u64, 0u64);
        while let Some(m) = stream.next().await {
            let m = m?;
            count += 1;
            total += m.payload.len() as u64;
        }
        Ok(Response::new(Msg {
            seq: count,
            payload: Vec::new(),
            server: self.name.clone(),
            total,
        }))
    }

    type ChatStream = MsgStream;

    async fn chat(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let name = self.name.clone();
        let out = req.into_inner().map(move |m| {
            m.map(|mut m| {
                m.server = name.clone();
                m
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn wait(&self, req: Request<Ask>) -> Result<Response<Msg>, Status> {
        let ask = req.into_inner();
        tokio::time::sleep(Duration::from_millis(ask.hold_ms)).await;
        if ask.code != 0 {
            let mut status = Status::new(tonic::Code::from(ask.code as i32), ask.message);
            status.metadata_mut().insert(
                "x-detail",
                tonic::metadata::MetadataValue::from_static("kept"),
            );
            return Err(status);
        }
        Ok(Response::new(Msg {
            server: self.name.clone(),
            ..Msg::default()
        }))
    }
}

/// Serves [`Echo`] named `name` on `listener` until `shutdown` completes
/// (then a graceful stop: GOAWAY, in-flight calls finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(EchoServer::new(Echo {
            name: name.to_owned(),
        }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
