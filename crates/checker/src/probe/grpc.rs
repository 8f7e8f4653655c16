//! The gRPC probe: `grpc.health.v1.Health/Check` for the target's service
//! name (`[health] service`, default `""`), answered `SERVING`; over TLS
//! (ALPN `h2`) for an `https://` target, in clear text (h2c, prior
//! knowledge) otherwise.
//!
//! Why a bare HTTP/2 connection (the `h2` crate) and a hand-encoded
//! message rather than a tonic client: the request is one string field and
//! the answer one enum, and a tonic `Channel` per target is a spawned
//! connection task plus a buffer task with its queue, alive between probes,
//! for each of possibly thousands of targets. Here a target keeps the
//! connection's state only (h2's codec and stream tables); it is polled
//! while a probe runs and never in between, like the HTTP probe's.
//!
//! Probes of one target share one connection, each probe one stream. A
//! failed probe drops it; a kept connection that turns out gone before
//! any answer (GOAWAY, closed while idle) is retried once on a new one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Addrs, ProbeError};

/// The method every probe calls.
const CHECK: &str = "/grpc.health.v1.Health/Check";
/// An answer longer than this is no health answer.
const MAX_ANSWER: usize = 64 * 1024;

/// h2's connection future: it does the I/O, polled only while a probe runs.
type Driver = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

/// A connection kept between probes.
pub(super) struct Conn {
    sender: SendRequest<Bytes>,
    driver: Driver,
    /// `http` or `https`: the `:scheme` of every request.
    scheme: &'static str,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

/// Why an exchange failed, and whether it failed before any answer.
struct Failed {
    before_answer: bool,
    error: ProbeError,
}

impl Failed {
    fn early(e: h2::Error) -> Failed {
        Failed {
            before_answer: true,
            error: format!("request: {e}").into(),
        }
    }

    fn late(message: String) -> Failed {
        Failed {
            before_answer: false,
            error: message.into(),
        }
    }
}

/// One probe. `kept` is the target's connection, if it has one; on
/// success the connection is put back there.
pub(super) async fn probe(
    kept: &mut Option<Conn>,
    addrs: &mut Addrs,
    authority: &str,
    service: &str,
    tls: Option<(&TlsConnector, ServerName<'static>)>,
) -> Result<(), ProbeError> {
    if let Some(mut conn) = kept.take() {
        match exchange(&mut conn, authority, service).await {
            Ok(()) => {
                *kept = Some(conn);
                return Ok(());
            }
            // Gone while idle: try a new connection.
            Err(e) if e.before_answer => {}
            Err(e) => return Err(e.error),
        }
    }
    let mut conn = connect(&addrs.get().await?, tls).await?;
    exchange(&mut conn, authority, service)
        .await
        .map_err(|e| e.error)?;
    *kept = Some(conn);
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
        None => Ok(handshake(stream, "http").await?),
        Some((connector, name)) => {
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok(handshake(stream, "https").await?)
        }
    }
}

async fn handshake<T>(io: T, scheme: &'static str) -> Result<Conn, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(Conn {
        sender,
        driver: Box::pin(conn),
        scheme,
    })
}

async fn exchange(conn: &mut Conn, authority: &str, service: &str) -> Result<(), Failed> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}://{authority}{CHECK}", conn.scheme))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "tether-checker")
        .body(())
        .map_err(|e| Failed::late(format!("request: {e}")))?;
    let Conn { sender, driver, .. } = conn;
    // Drive the connection and the call together, so that everything is
    // dropped with this future when the caller's timeout fires.
    let call = async {
        let mut sender = sender.clone().ready().await.map_err(Failed::early)?;
        let (answer, mut body) = sender.send_request(req, false).map_err(Failed::early)?;
        body.send_data(check_request(service), true)
            .map_err(Failed::early)?;
        let answer = answer.await.map_err(Failed::early)?;
        let (head, mut body) = answer.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(Failed::late(format!(
                "HTTP status {}",
                head.status.as_u16()
            )));
        }
        // Trailers-only: the call failed without a message.
        if head.headers.contains_key("grpc-status") {
            call_status(&head.headers)?;
            return Err(Failed::late("no answer message".to_owned()));
        }
        let mut message = BytesMut::new();
        while let Some(data) = body.data().await {
            let data = data.map_err(|e| Failed::late(format!("answer: {e}")))?;
            let _ = body.flow_control().release_capacity(data.len());
            message.extend_from_slice(&data);
            if message.len() > MAX_ANSWER {
                return Err(Failed::late("answer too large".to_owned()));
            }
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| Failed::late(format!("answer: {e}")))?
            .unwrap_or_default();
        call_status(&trailers)?;
        match serving_status(&message) {
            Some(SERVING) => Ok(()),
            Some(status) => Err(Failed::late(format!("status {}", status_name(status)))),
            None => Err(Failed::late("malformed answer message".to_owned())),
        }
    };
    tokio::pin!(call);
    tokio::select! {
        biased;
        done = &mut call => done,
        // The connection ended: h2 fails the call's stream once the
        // connection is dropped, so replace it and see what the call got.
        end = driver.as_mut() => {
            *driver = Box::pin(std::future::ready(Ok(())));
            let done = call.await;
            match (end, done) {
                (_, Ok(())) => Ok(()),
                (Err(e), Err(f)) if f.before_answer => Err(Failed {
                    before_answer: true,
                    error: format!("connection: {e}").into(),
                }),
                (_, Err(f)) => Err(f),
            }
        }
    }
}

/// A `HealthCheckRequest` as one gRPC message: the 5-byte prefix
/// (uncompressed, length), then field 1 (`service`, a string) unless it is
/// empty, which protobuf leaves out.
fn check_request(service: &str) -> Bytes {
    let mut field = BytesMut::new();
    if !service.is_empty() {
        field.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut field, service.len() as u64);
        field.put_slice(service.as_bytes());
    }
    let mut out = BytesMut::with_capacity(5 + field.len());
    out.put_u8(0);
    // A service name is far below 4 GiB (config caps nothing, but a TOML
    // string that long could not be loaded).
    out.put_u32(u32::try_from(field.len()).unwrap_or(u32::MAX));
    out.put_slice(&field);
    out.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// `grpc-status` 0, or the call's failure with its name and message.
fn call_status(headers: &HeaderMap) -> Result<(), Failed> {
    let Some(status) = headers.get("grpc-status") else {
        return Err(Failed::late("no grpc-status".to_owned()));
    };
    let code = status.to_str().ok().and_then(|s| s.parse::<u32>().ok());
    if code == Some(0) {
        return Ok(());
    }
    let name = code.map_or("invalid", code_name);
    let text = String::from_utf8_lossy(status.as_bytes());
    let message = headers
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .filter(|m| !m.is_empty());
    Err(Failed::late(match message {
        Some(m) => format!("grpc-status {text} {name}: {m}"),
        None => format!("grpc-status {text} {name}"),
    }))
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".to_owned(),
        SERVING => "SERVING".to_owned(),
        2 => "NOT_SERVING".to_owned(),
        3 => "SERVICE_UNKNOWN".to_owned(),
        other => format!("{other}"),
    }
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("unknown code")
}

/// The `status` of the one `HealthCheckResponse` in `body` (absent:
/// `UNKNOWN`, protobuf's default); `None` when `body` is not one
/// uncompressed message.
fn serving_status(body: &[u8]) -> Option<u64> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let mut message = rest.get(4..)?;
    if flag != 0 || message.len() != len {
        return None;
    }
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                let v = varint(&mut message)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => message = message.get(8..)?,
            2 => {
                let n = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(n..)?;
            }
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_the_service_name() {
        assert_eq!(&check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("ab")[..],
            [0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
    }

    #[test]
    fn answers_decode_their_status() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown field is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(SERVING)
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 3, 0x08, 1]), None);
        assert_eq!(serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None);
        assert_eq!(serving_status(&[0, 0]), None);
    }
}
