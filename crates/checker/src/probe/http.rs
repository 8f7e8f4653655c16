//! The HTTP probe: `GET {path}` with the target's Host, answered with a
//! status in 200-399; over TLS for an `https://` target, verified like the
//! proxy's own connections.

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub(super) async fn probe(
    host: &str,
    port: u16,
    authority: &str,
    path: &str,
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<(), String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, authority, path).await,
        Some((connector, name)) => {
            // rustls says why a certificate was refused
            // ("invalid peer certificate: UnknownIssuer").
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(stream, authority, path).await
        }
    }
}

async fn exchange<T>(io: T, authority: &str, path: &str) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "tether-checker")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    // Drive the connection and the request together, so that everything is
    // dropped with this future when the caller's timeout fires. With
    // `Connection: close` the connection may finish in the same poll that
    // delivers the response, so its end is not an error by itself.
    let send = sender.send_request(req);
    tokio::pin!(send);
    let res = tokio::select! {
        biased;
        res = &mut send => res,
        end = conn => match end {
            Ok(()) => send.await,
            Err(e) => return Err(format!("connection: {e}")),
        },
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = res.status();
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}
