//! Listening sockets for the fakes.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// How many pending connections a fake's listener queues.
const BACKLOG: u32 = 1024;

/// Binds and listens with `SO_REUSEADDR`, so a fake can be restarted on the
/// port it just left while old connections sit in `TIME_WAIT`.
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_with(addr, BACKLOG)
}

/// [`listen`] with its own accept-queue length.
pub(crate) fn listen_with(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The address every fake binds by default: loopback, a port the kernel picks.
pub(crate) fn any_local_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
