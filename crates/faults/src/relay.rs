//! A TCP relay that can freeze: while frozen it moves no byte in either
//! direction and answers nothing, but keeps every socket open, the way a
//! hung peer or a silent network partition looks to both ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const POLL: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Relays `127.0.0.1:0` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay addr");
        let frozen = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let frozen = Arc::clone(&frozen);
            let accepted = Arc::clone(&accepted);
            async move {
                loop {
                    let Ok((down, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let frozen = Arc::clone(&frozen);
                    tokio::spawn(async move {
                        wait_thawed(&frozen).await;
                        let Ok(up) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = up.set_nodelay(true);
                        let _ = down.set_nodelay(true);
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        let a = tokio::spawn(pump(dr, uw, Arc::clone(&frozen)));
                        let b = tokio::spawn(pump(ur, dw, frozen));
                        let _ = tokio::join!(a, b);
                    });
                }
            }
        });
        Relay {
            addr,
            frozen,
            accepted,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_thawed(frozen: &AtomicBool) {
    while frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(POLL).await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Frozen: read nothing, so nothing is acknowledged past the
        // socket buffers and nothing is passed on.
        wait_thawed(&frozen).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_thawed(&frozen).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
