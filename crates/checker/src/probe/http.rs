//! The HTTP probe: `GET {path}` with the target's Host, answered with a
//! status in 200-399; over TLS for an `https://` target, verified like the
//! proxy's own connections.
//!
//! Probes of one target share one kept-alive connection: a checker probing
//! 10,000 targets every second would otherwise open 10,000 connections a
//! second, each a TIME_WAIT socket and, behind Docker or Kubernetes, a
//! connection-tracking entry for two minutes. A new connection is opened
//! only when there is none: at the first probe, after a failed probe (which
//! drops its connection, so a target that hangs or answers badly is
//! judged afresh), or when the target closed the idle connection. A kept
//! connection that turns out closed before it answered is retried once on
//! a new one, so a server's keep-alive timeout is never a failed probe.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Addrs, ProbeError};

/// A response body longer than this is not read to its end; the probe
/// still counts, but the connection is closed rather than kept.
const MAX_KEPT_BODY: usize = 64 * 1024;

/// hyper's connection future: it does the I/O, polled only while a probe
/// runs (an idle connection costs its socket and buffers, no task).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A connection kept between probes.
pub(super) struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    driver: Driver,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

/// How one exchange went.
struct Exchanged {
    status: u16,
    /// The connection can carry the next probe.
    reusable: bool,
}

/// Why an exchange failed, and whether it failed before any response.
struct Failed {
    before_response: bool,
    message: String,
}

/// One probe. `kept` is the target's connection, if it has one; on
/// success the connection to keep is put back there.
pub(super) async fn probe(
    kept: &mut Option<Conn>,
    addrs: &mut Addrs,
    authority: &str,
    path: &str,
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<(), ProbeError> {
    if let Some(mut conn) = kept.take() {
        match exchange(&mut conn, authority, path).await {
            Ok(done) => return finish(kept, conn, done),
            // Closed by the target while idle: try a new connection.
            Err(e) if e.before_response => {}
            Err(e) => return Err(e.message.into()),
        }
    }
    // Looked up only for a new connection.
    let mut conn = connect(&addrs.get().await?, tls).await?;
    match exchange(&mut conn, authority, path).await {
        Ok(done) => finish(kept, conn, done),
        Err(e) => Err(e.message.into()),
    }
}

fn finish(kept: &mut Option<Conn>, conn: Conn, done: Exchanged) -> Result<(), ProbeError> {
    if !(200..400).contains(&done.status) {
        return Err(format!("status {}", done.status).into());
    }
    if done.reusable && !conn.sender.is_closed() {
        *kept = Some(conn);
    }
    Ok(())
}

async fn connect(
    addrs: &[SocketAddr],
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<Conn, ProbeError> {
    let stream = TcpStream::connect(addrs)
        .await
        .map_err(|e| ProbeError::connect(&e))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(handshake(stream).await?),
        Some((connector, name)) => {
            // rustls says why a certificate was refused
            // ("invalid peer certificate: UnknownIssuer").
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok(handshake(stream).await?)
        }
    }
}

async fn handshake<T>(io: T) -> Result<Conn, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(Conn {
        sender,
        driver: Box::pin(conn),
    })
}

async fn exchange(conn: &mut Conn, authority: &str, path: &str) -> Result<Exchanged, Failed> {
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "tether-checker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failed {
            before_response: false,
            message: format!("request: {e}"),
        })?;
    let Conn { sender, driver } = conn;
    // Drive the connection and the request together, so that everything is
    // dropped with this future when the caller's timeout fires.
    let send = async {
        let early = |e: hyper::Error| Failed {
            before_response: true,
            message: format!("request: {e}"),
        };
        sender.ready().await.map_err(early)?;
        let res = sender.send_request(req).await.map_err(early)?;
        let status = res.status().as_u16();
        // Read the body to its end, or the connection cannot be reused.
        let mut body = res.into_body();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failed {
                before_response: false,
                message: format!("body: {e}"),
            })?;
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > MAX_KEPT_BODY {
                return Ok(Exchanged {
                    status,
                    reusable: false,
                });
            }
        }
        Ok(Exchanged {
            status,
            reusable: true,
        })
    };
    tokio::pin!(send);
    tokio::select! {
        biased;
        done = &mut send => done,
        // The connection ended (the target closed it, or answered with
        // `Connection: close`): what was already received still counts,
        // but it carries no further probe.
        end = driver.as_mut() => match end {
            Ok(()) => {
                // Drop hyper's connection, or a request it will never send
                // waits for it until the timeout.
                *driver = Box::pin(std::future::ready(Ok(())));
                send.await.map(|done| Exchanged { reusable: false, ..done })
            }
            Err(e) => Err(Failed {
                before_response: true,
                message: format!("connection: {e}"),
            }),
        },
    }
}
