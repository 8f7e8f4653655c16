//! A "backend" that accepts TCP connections and never answers: it reads and
//! discards whatever arrives and holds every socket open until stopped, the
//! way a hung server does; and one that never completes a handshake
//! ([`SynBlackhole`]), the way a host behind a packet-dropping firewall
//! does.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// A silent listener on a loopback port. Dropping it without
/// [`stop`](Blackhole::stop) stops it in the background.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    bytes: AtomicU64,
}

impl Blackhole {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Blackhole {
        let addr = crate::net::any_local_port();
        match Self::start_on(addr) {
            Ok(b) => b,
            Err(e) => panic!("blackhole: cannot listen on {addr}: {e}"),
        }
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr) -> io::Result<Blackhole> {
        let listener = crate::net::listen(addr)?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let server = tokio::spawn(serve(listener, Arc::clone(&counters), shutdown_rx));
        Ok(Blackhole {
            addr,
            counters,
            shutdown,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received so far, over all connections.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::SeqCst)
    }

    /// Closes the listener and every held connection, and waits for both.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        if let Err(e) = self.server.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn serve(
    listener: TcpListener,
    counters: Arc<Counters>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                counters.accepted.fetch_add(1, Ordering::SeqCst);
                let counters = Arc::clone(&counters);
                conns.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    // Until the peer closes; never a byte back.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counters.bytes.fetch_add(n as u64, Ordering::SeqCst);
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// An address that neither answers nor refuses a connect: a listener with
/// an accept queue of one (backlog 0 on Linux) that never accepts, its one
/// slot taken by a connection of its own. The kernel then drops every
/// further SYN, so a connect to it hangs until the caller's connect
/// timeout, the way a host behind a packet-dropping firewall behaves.
#[derive(Debug)]
pub struct SynBlackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _filler: Vec<TcpStream>,
}

/// How long a connect gets before the filler decides its SYN was dropped.
const SYN_DROPPED: Duration = Duration::from_millis(300);

impl SynBlackhole {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> SynBlackhole {
        let addr = crate::net::any_local_port();
        match Self::start_on(addr).await {
            Ok(b) => b,
            Err(e) => panic!("syn blackhole: cannot listen on {addr}: {e}"),
        }
    }

    /// Starts on `addr` (a port a server just left, for instance) and
    /// returns once a connect to it times out. If another client's
    /// connection took the one slot first, that connection is accepted
    /// and closed (its client sees an ordinary close) and the slot taken
    /// again.
    pub async fn start_on(addr: SocketAddr) -> io::Result<SynBlackhole> {
        let listener = crate::net::listen_with(addr, 0)?;
        let addr = listener.local_addr()?;
        let mut filler = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(SYN_DROPPED, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => filler.push(s),
                Ok(Err(e)) => return Err(e),
                Err(_) if !filler.is_empty() => {
                    return Ok(SynBlackhole {
                        addr,
                        _listener: listener,
                        _filler: filler,
                    });
                }
                Err(_) => {
                    // A stranger's connection holds the slot: let it go.
                    if let Ok(Ok((s, _))) =
                        tokio::time::timeout(SYN_DROPPED, listener.accept()).await
                    {
                        drop(s);
                    }
                }
            }
        }
        Err(io::Error::other(format!(
            "{addr}: the accept queue never filled ({} connects completed)",
            filler.len()
        )))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connect_to_a_syn_blackhole_neither_completes_nor_is_refused() {
        let hole = SynBlackhole::start().await;
        for _ in 0..3 {
            let r =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(hole.addr())).await;
            assert!(r.is_err(), "connect ended: {r:?}");
        }
    }
}
