//! Upgraded connections (WebSocket and other `Upgrade` protocols): bytes
//! both ways until either side closes or nothing moves for `idle`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use log::{debug, info};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http1;
use crate::http1::client::Upgraded;

const BUFFER: usize = 8 * 1024;

/// Counts open tunnels so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct Tracker {
    open: AtomicUsize,
    idle: Notify,
}

/// Holds one tunnel open in its tracker's count.
#[derive(Debug)]
pub struct Tracked(Arc<Tracker>);

impl Tracker {
    pub fn track(self: &Arc<Self>) -> Tracked {
        self.open.fetch_add(1, Ordering::Relaxed);
        Tracked(self.clone())
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Completes when no tunnel is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The client's side of an upgrade, from whichever server read the
/// request.
#[derive(Debug)]
pub enum ClientUpgrade {
    Hyper(OnUpgrade),
    H1(http1::Upgrade),
}

impl ClientUpgrade {
    /// Takes the client's side out of a request's extensions, if the
    /// server left one there.
    pub fn take(extensions: &mut http::Extensions) -> Option<ClientUpgrade> {
        if let Some(h1) = extensions.remove::<http1::Upgrade>() {
            return Some(ClientUpgrade::H1(h1));
        }
        extensions.remove::<OnUpgrade>().map(ClientUpgrade::Hyper)
    }
}

/// A tunnel's clocks.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Nothing moved either way this long: close.
    pub idle: Duration,
    /// The client took none of the bytes for it this long: close, even if
    /// it still sends (it could otherwise pin the backend's side forever).
    pub send: Duration,
}

/// Waits for the client's side to finish upgrading, then relays.
pub async fn run(client: ClientUpgrade, upstream: Upgraded, timeouts: Timeouts, tracked: Tracked) {
    let _tracked = tracked;
    match client {
        ClientUpgrade::Hyper(client) => match client.await {
            Ok(client) => relay(TokioIo::new(client), upstream, timeouts).await,
            Err(e) => debug!(target: "proxy", "client upgrade failed: {e}"),
        },
        ClientUpgrade::H1(client) => match client.connection().await {
            Some(client) => relay(client, upstream, timeouts).await,
            None => debug!(target: "proxy", "client connection gone before the upgrade"),
        },
    }
}

/// Bytes both ways until either side closes, nothing moves for `idle`, or
/// the client takes nothing for `send`.
async fn relay<C, U>(client: C, upstream: U, timeouts: Timeouts)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let Timeouts { idle, send } = timeouts;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut up_read, mut up_write) = tokio::io::split(upstream);
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let relay = async {
        // A direction that ends (EOF) half-closes and the other goes on; a
        // failure either way ends both.
        let relayed = tokio::try_join!(
            pump(&mut client_read, &mut up_write, start, &last, None),
            pump(&mut up_read, &mut client_write, start, &last, Some(send)),
        );
        if let Err(e) = relayed
            && e.kind() == std::io::ErrorKind::TimedOut
        {
            info!(target: "proxy", "tunnel closed: the client took no bytes for {send:?}");
        }
    };
    let watchdog = async {
        loop {
            let last_ms = last.load(Ordering::Relaxed);
            let deadline = start + Duration::from_millis(last_ms) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        () = relay => {}
        () = watchdog => debug!(target: "proxy", "tunnel idle for {idle:?}; closing"),
    }
}

/// Copies one direction, noting the time of every transfer. With `send`,
/// a write that makes no progress for that long fails (`TimedOut`).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    start: Instant,
    last: &AtomicU64,
    send: Option<Duration>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = [0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let mut out = &buf[..n];
        while !out.is_empty() {
            let wrote = match send {
                None => to.write(out).await?,
                Some(send) => tokio::time::timeout(send, to.write(out))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??,
            };
            if wrote == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            out = &out[wrote..];
        }
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
}
