//! The admin endpoint every daemon serves on `[admin] listen`: `/healthz`
//! (the process runs), `/readyz` (it can do its job), `/metrics`
//! (Prometheus text), `/` (a small HTML status page) and, where the daemon
//! has one, `/status.json` (what the page shows, for tools).
//!
//! The daemon supplies what is behind them through [`Status`]; this module
//! owns only HTTP. It is for operators and scrapers, never on the request
//! path: plain HTTP/1.1, GET and HEAD only.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use log::{debug, info, warn};
use tokio::net::TcpListener;

use crate::drain::Drain;
use crate::metrics::{CONTENT_TYPE, Text};

/// How long a scraper may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long open admin connections get once the drain starts.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A boxed future, so [`Status`] can be a trait object (the checker asks
/// its hub task, which is async).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a daemon shows on its admin endpoint.
pub trait Status: Send + Sync + 'static {
    /// Whether `/readyz` answers 200, and why not.
    fn readiness(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Every metric family.
    fn metrics(&self) -> BoxFuture<'_, Text>;
    /// The status page's `<body>` content (escaped by the implementer).
    fn page(&self) -> BoxFuture<'_, String>;
    /// The page's title, e.g. `tether-proxy`.
    fn title(&self) -> &'static str;
    /// What `/status.json` answers, for tools (`tetherctl`); `None`: 404.
    fn json(&self) -> Option<BoxFuture<'_, String>> {
        None
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin endpoint on `listener` until the drain starts; logs on
/// the daemon's own logger (`logger`).
pub async fn serve(
    listener: TcpListener,
    status: Arc<dyn Status>,
    drain: Drain,
    logger: &'static str,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(target: logger, "admin listening on {addr}");
    }
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(target: logger, "admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.signaled() => break,
        };
        let status = status.clone();
        let service = service_fn(move |req| {
            let status = status.clone();
            async move { Ok::<_, Infallible>(route(&req, &*status).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(target: logger, "admin connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_GRACE, graceful.shutdown()).await;
}

async fn route(req: &Request<Incoming>, status: &dyn Status) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match status.readiness().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let out = status.metrics().await;
            respond(StatusCode::OK, CONTENT_TYPE, out.into_string())
        }
        "/" => {
            let mut body = String::with_capacity(4096);
            body.push_str("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>");
            body.push_str(&escape(status.title()));
            body.push_str("</title>\n<meta http-equiv=\"refresh\" content=\"5\">\n<style>");
            body.push_str(STYLE);
            body.push_str("</style></head><body>\n");
            body.push_str(&status.page().await);
            body.push_str("</body></html>\n");
            respond(StatusCode::OK, "text/html; charset=utf-8", body)
        }
        "/status.json" => match status.json() {
            Some(json) => respond(StatusCode::OK, "application/json", json.await),
            None => text(StatusCode::NOT_FOUND, "not found: no /status.json here\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /metrics, /healthz or /readyz\n",
        ),
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}th,td{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}.healthy,.unhealthy,.unknown{font-weight:600}\
.healthy{color:#080}.unhealthy{color:#b00}.unknown{color:#888}\
.badge{padding:.1em .5em;border-radius:.8em}.badge.healthy{background:#e6f4ea}\
.badge.unhealthy{background:#fde8e8}.badge.unknown{background:#eee}tr.row-unhealthy td{background:#fff5f5}\
td.url{font-family:ui-monospace,monospace;font-size:13px}\
.num{text-align:right;font-variant-numeric:tabular-nums}";

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

/// HTML-escapes text for the status page.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
