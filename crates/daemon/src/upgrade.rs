//! Binary upgrade: a running daemon hands its listening sockets to its
//! replacement over a Unix socket, so the listening sockets never close and
//! no client is refused while the binary changes.
//!
//! The old process serves [`Socket::offer`] on its upgrade socket. The new
//! one ([`inherit`]) connects, receives every listening socket as a file
//! descriptor (`SCM_RIGHTS`) with the config key and address it was bound
//! for, starts accepting on them, and says so ([`Inheritance::serving`]);
//! only then does the old one stop accepting and drain. Both processes hold
//! the same sockets meanwhile, so a connection waiting in a listen queue is
//! accepted by one of them, never refused. If the new process fails before
//! it says `serving`, the old one never stopped.
//!
//! The protocol, one line each (text, so `socat` can show it):
//!
//! ```text
//! new → old   tether-upgrade 1 pid=<new pid>
//! old → new   tether-upgrade 1 pid=<old pid> listeners=<n>       (n descriptors ride on this write)
//!             <key> <address>                                    (n lines, in descriptor order)
//!             end
//!         or  refused <why>
//! new → old   serving
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{info, warn};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

/// The protocol's version; a peer speaking another is refused.
pub const PROTOCOL: u32 = 1;
/// The first word of both hellos.
const MAGIC: &str = "tether-upgrade";
/// Listening sockets one hand-over carries at most (a daemon has three).
pub const MAX_LISTENERS: usize = 8;
/// How long a peer may take to say hello, or to send the listeners.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// Longest line either side reads; the listing is a few lines of this.
const LINE_MAX: usize = 1024;
/// Upgrade socket files are the owner's only: whoever connects can take
/// the listening sockets and make the running process drain.
const SOCKET_MODE: u32 = 0o600;

/// One listening socket handed over: the config key that bound it (such
/// as `proxy.listen`), its address, and the socket itself.
#[derive(Debug)]
pub struct Listener {
    pub key: String,
    pub addr: SocketAddr,
    pub fd: OwnedFd,
}

impl Listener {
    /// A copy of `socket`'s descriptor, offered as `key`.
    pub fn of(key: &str, socket: &impl AsFd) -> io::Result<Listener> {
        let fd = socket.as_fd().try_clone_to_owned()?;
        let addr = socket2::SockRef::from(&fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        Ok(Listener {
            key: key.to_owned(),
            addr,
            fd,
        })
    }

    /// The socket as a tokio listener (non-blocking, as tokio needs).
    pub fn into_tokio(self) -> io::Result<tokio::net::TcpListener> {
        let std = std::net::TcpListener::from(self.fd);
        std.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std)
    }
}

/// Why an upgrade could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// `key` names the setting, so the message says what to check.
    #[error("no running process answers at {} ({key}): {source}", path.display())]
    NoPeer {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "a running process answers at {} ({key}): start with --upgrade to replace it, or set another path",
        path.display()
    )]
    InUse { key: &'static str, path: PathBuf },
    #[error("the running process at {} refused the upgrade: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("upgrade socket {} ({key}): {what}", path.display())]
    Protocol {
        key: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("upgrade socket {} ({key}): {source}", path.display())]
    Io {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

// === The new process ===

/// What a new process received from the running one: its listening
/// sockets, and the connection on which to say it serves.
#[derive(Debug)]
pub struct Inheritance {
    stream: UnixStream,
    /// The running (old) process.
    pub from_pid: u32,
    listeners: Vec<Listener>,
}

/// Connects to the running process at `path` (the setting `key`) and
/// receives its listening sockets.
pub async fn inherit(key: &'static str, path: &Path) -> Result<Inheritance, UpgradeError> {
    let io_err = |source| UpgradeError::Io {
        key,
        path: path.to_owned(),
        source,
    };
    let protocol = |what: String| UpgradeError::Protocol {
        key,
        path: path.to_owned(),
        what,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| UpgradeError::NoPeer {
            key,
            path: path.to_owned(),
            source,
        })?;
    let hello = format!("{MAGIC} {PROTOCOL} pid={}\n", std::process::id());
    stream.write_all(hello.as_bytes()).await.map_err(io_err)?;
    let (text, fds) = tokio::time::timeout(HELLO_WAIT, receive(&stream))
        .await
        .map_err(|_| protocol(format!("no answer within {HELLO_WAIT:?}")))?
        .map_err(io_err)?;
    let (from_pid, listing) = match parse_offer(&text) {
        Ok(Offer::Listeners { pid, listing }) => (pid, listing),
        Ok(Offer::Refused(reason)) => {
            return Err(UpgradeError::Refused {
                path: path.to_owned(),
                reason,
            });
        }
        Err(what) => return Err(protocol(what)),
    };
    if listing.len() != fds.len() {
        return Err(protocol(format!(
            "{} listeners announced, {} descriptors received",
            listing.len(),
            fds.len()
        )));
    }
    let mut listeners = Vec::with_capacity(fds.len());
    for ((key, announced), fd) in listing.into_iter().zip(fds) {
        // The descriptor's own address, not only the text's word.
        let actual = socket2::SockRef::from(&fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket());
        if actual != Some(announced) {
            return Err(protocol(format!(
                "{key}: announced {announced}, the descriptor is bound to {actual:?}"
            )));
        }
        listeners.push(Listener {
            key,
            addr: announced,
            fd,
        });
    }
    Ok(Inheritance {
        stream,
        from_pid,
        listeners,
    })
}

impl Inheritance {
    /// Takes the first inherited listener `fits`.
    pub fn take(&mut self, fits: impl Fn(&Listener) -> bool) -> Option<Listener> {
        let at = self.listeners.iter().position(fits)?;
        Some(self.listeners.remove(at))
    }

    /// The listeners nothing took: the old process closes them when it
    /// drains.
    pub fn untaken(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter()
    }

    /// Tells the old process this one serves: it stops accepting and
    /// drains.
    pub async fn serving(mut self) -> io::Result<()> {
        self.listeners.clear();
        self.stream.write_all(b"serving\n").await?;
        self.stream.shutdown().await
    }
}

/// Reads one offer: text up to `end` (or a refusal line), and every
/// descriptor that came with it.
async fn receive(stream: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut text = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; LINE_MAX];
    loop {
        let n = stream
            .async_io(Interest::READABLE, || {
                recv_with_fds(stream.as_fd(), &mut buf, &mut fds)
            })
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the running process closed the connection",
            ));
        }
        text.extend_from_slice(&buf[..n]);
        let done =
            text.starts_with(b"refused ") && text.ends_with(b"\n") || text.ends_with(b"\nend\n");
        if done {
            break;
        }
        if text.len() > LINE_MAX * (MAX_LISTENERS + 2) {
            return Err(io::Error::other(
                "the offer is longer than the protocol allows",
            ));
        }
    }
    let text = String::from_utf8(text).map_err(|_| io::Error::other("the offer is not UTF-8"))?;
    Ok((text, fds))
}

/// One `recvmsg`, keeping the descriptors that came with the bytes.
fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(
        socket,
        &mut iov,
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(format!(
            "more than {MAX_LISTENERS} descriptors offered"
        )));
    }
    Ok(msg.bytes)
}

/// What the old process answered.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    Listeners {
        pid: u32,
        listing: Vec<(String, SocketAddr)>,
    },
    Refused(String),
}

fn parse_offer(text: &str) -> Result<Offer, String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if let Some(reason) = first.strip_prefix("refused ") {
        return Ok(Offer::Refused(reason.to_owned()));
    }
    let words: Vec<&str> = first.split(' ').collect();
    let [MAGIC, version, pid, count] = words[..] else {
        return Err(format!("unexpected answer {first:?}"));
    };
    if version != PROTOCOL.to_string() {
        return Err(format!(
            "the running process speaks protocol {version}, this one {PROTOCOL}"
        ));
    }
    let pid = field(pid, "pid=")?;
    let count: usize = field(count, "listeners=")?;
    let mut listing = Vec::with_capacity(count.min(MAX_LISTENERS));
    for line in lines.by_ref() {
        if line == "end" {
            break;
        }
        let Some((key, addr)) = line.split_once(' ') else {
            return Err(format!("unexpected listener line {line:?}"));
        };
        let addr = addr
            .parse()
            .map_err(|_| format!("{key}: {addr:?} is not an address"))?;
        listing.push((key.to_owned(), addr));
    }
    if listing.len() != count {
        return Err(format!(
            "{count} listeners announced, {} listed",
            listing.len()
        ));
    }
    Ok(Offer::Listeners { pid, listing })
}

fn field<T: std::str::FromStr>(word: &str, name: &str) -> Result<T, String> {
    word.strip_prefix(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("expected {name}N, got {word:?}"))
}

// === The socket file ===

/// An upgrade socket bound under a temporary name beside `path`, not yet
/// answering at `path`: a new process binds it before it serves (so it
/// cannot fail after) and renames it over `path` once it does. Dropped
/// uncommitted, it removes its file.
#[derive(Debug)]
pub struct PendingSocket {
    listener: Option<UnixListener>,
    key: &'static str,
    tmp: PathBuf,
    path: PathBuf,
}

impl PendingSocket {
    /// Binds beside `path` (the setting `key`); for a process starting
    /// fresh, refuses if a live process answers at `path` already.
    pub fn bind(key: &'static str, path: &Path, fresh: bool) -> Result<Self, UpgradeError> {
        let io_err = |source| UpgradeError::Io {
            key,
            path: path.to_owned(),
            source,
        };
        if fresh {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(UpgradeError::InUse {
                        key,
                        path: path.to_owned(),
                    });
                }
                // Nothing there, or a file a dead process left.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        // A leftover of a process that had this pid before.
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(io_err)?;
        let pending = PendingSocket {
            listener: Some(listener),
            key,
            tmp,
            path: path.to_owned(),
        };
        std::fs::set_permissions(&pending.tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_err)?;
        Ok(pending)
    }

    /// Moves the socket to `path`, replacing whatever file was there: from
    /// now on upgrades reach this process.
    pub fn commit(mut self) -> Result<Socket, UpgradeError> {
        let io_err = |source| UpgradeError::Io {
            key: self.key,
            path: self.path.clone(),
            source,
        };
        std::fs::rename(&self.tmp, &self.path).map_err(io_err)?;
        let listener = self
            .listener
            .take()
            .ok_or_else(|| io_err(io::Error::other("the upgrade socket was committed twice")))?;
        Ok(Socket {
            listener,
            path: self.path.clone(),
        })
    }
}

impl Drop for PendingSocket {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

// === The running (old) process ===

/// The upgrade socket a running process answers on.
#[derive(Debug)]
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
}

/// What every hand-over task of one offer shares.
#[derive(Debug)]
struct Offered {
    listeners: Vec<Listener>,
    /// Set while a process holds the listeners and has not yet said
    /// `serving`: a second one is refused meanwhile.
    busy: AtomicBool,
}

/// Clears `busy` when a hand-over ends without `serving`.
struct Claim<'a>(&'a AtomicBool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Socket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offers `listeners` to every process that connects, one at a time,
    /// until one says it serves; returns that process's pid. `logger` is
    /// the log target. A second process that connects while a hand-over
    /// runs is refused; one that fails before it serves changes nothing.
    /// Dropped, it ends every hand-over in progress.
    pub async fn offer(self, listeners: Vec<Listener>, logger: &'static str) -> u32 {
        let offered = Arc::new(Offered {
            listeners,
            busy: AtomicBool::new(false),
        });
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tasks.spawn(hand_over(stream, offered.clone(), logger));
                    }
                    Err(e) => {
                        warn!(target: logger, "upgrade socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(joined) = tasks.join_next() => match joined {
                    Ok(Ok(pid)) => return pid,
                    Ok(Err(Some(why))) => warn!(target: logger, "upgrade failed, still serving: {why}"),
                    // A connection that said nothing: a probe.
                    Ok(Err(None)) => {}
                    Err(e) => warn!(target: logger, "upgrade task: {e}"),
                },
            }
        }
    }
}

/// Answers a process that cannot have the listeners now.
async fn refuse(mut stream: UnixStream, why: &str) {
    let line = format!("refused {why}\n");
    let _ = tokio::time::timeout(HELLO_WAIT, stream.write_all(line.as_bytes())).await;
}

/// One hand-over: hello, the listeners, then wait (without a deadline: a
/// new process may take long to become ready) for `serving` or the end of
/// the connection.
/// `Err(None)`: the peer closed without a word (a process checking
/// whether this one is alive).
async fn hand_over(
    stream: UnixStream,
    offered: Arc<Offered>,
    logger: &'static str,
) -> Result<u32, Option<String>> {
    let mut reader = BufReader::new(stream);
    let mut hello = String::new();
    let mut limited = (&mut reader).take(LINE_MAX as u64);
    match tokio::time::timeout(HELLO_WAIT, limited.read_line(&mut hello)).await {
        Ok(Ok(0)) => return Err(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(Some(format!("reading the hello: {e}"))),
        Err(_) => return Err(Some(format!("no hello within {HELLO_WAIT:?}"))),
    }
    let words: Vec<&str> = hello.trim_end().split(' ').collect();
    let pid = match words[..] {
        [MAGIC, version, pid] if version == PROTOCOL.to_string() => {
            field::<u32>(pid, "pid=").map_err(|e| Some(format!("hello {hello:?}: {e}")))?
        }
        [MAGIC, version, _] => {
            let why = format!("protocol {version} is not spoken here (this process: {PROTOCOL})");
            refuse(reader.into_inner(), &why).await;
            return Err(Some(why));
        }
        _ => return Err(Some(format!("unexpected hello {hello:?}"))),
    };
    if offered.busy.swap(true, Ordering::AcqRel) {
        let why = "another upgrade is in progress";
        refuse(reader.into_inner(), why).await;
        return Err(Some(format!("pid {pid} refused: {why}")));
    }
    let _claim = Claim(&offered.busy);
    let listeners = &offered.listeners;
    let mut text = format!(
        "{MAGIC} {PROTOCOL} pid={} listeners={}\n",
        std::process::id(),
        listeners.len()
    );
    for l in listeners {
        text.push_str(&format!("{} {}\n", l.key, l.addr));
    }
    text.push_str("end\n");
    let failed = |e: io::Error| Some(format!("sending the listeners to pid {pid}: {e}"));
    let stream = reader.get_ref();
    let sent = stream.async_io(Interest::WRITABLE, || {
        send_with_fds(stream.as_fd(), text.as_bytes(), listeners)
    });
    let sent = tokio::time::timeout(HELLO_WAIT, sent)
        .await
        .map_err(|_| Some(format!("pid {pid} took no listeners within {HELLO_WAIT:?}")))?
        .map_err(failed)?;
    // The descriptors went with the first byte; the rest is plain text.
    if let Some(rest) = text.as_bytes().get(sent..).filter(|r| !r.is_empty()) {
        reader.get_mut().write_all(rest).await.map_err(failed)?;
    }
    info!(
        target: logger,
        "upgrade: handed {} listening sockets to pid {pid}; serving on until it says it serves",
        listeners.len()
    );
    let mut ack = String::new();
    let mut limited = (&mut reader).take(LINE_MAX as u64);
    match limited.read_line(&mut ack).await {
        Ok(_) if ack.trim_end() == "serving" => Ok(pid),
        Ok(0) => Err(Some(format!("pid {pid} ended before it served"))),
        Ok(_) => Err(Some(format!("pid {pid} answered {ack:?}"))),
        Err(e) => Err(Some(format!("pid {pid}: {e}"))),
    }
}

/// One `sendmsg` of `bytes` with every listener's descriptor.
fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    listeners: &[Listener],
) -> io::Result<usize> {
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|l| l.fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other(format!(
            "more than {MAX_LISTENERS} listeners to hand over"
        )));
    }
    Ok(rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_parses() {
        let text = "tether-upgrade 1 pid=42 listeners=2\nproxy.listen 127.0.0.1:8080\nadmin.listen [::1]:9901\nend\n";
        assert_eq!(
            parse_offer(text),
            Ok(Offer::Listeners {
                pid: 42,
                listing: vec![
                    ("proxy.listen".to_owned(), "127.0.0.1:8080".parse().unwrap()),
                    ("admin.listen".to_owned(), "[::1]:9901".parse().unwrap()),
                ],
            })
        );
        assert_eq!(
            parse_offer("refused another upgrade is in progress\n"),
            Ok(Offer::Refused("another upgrade is in progress".to_owned()))
        );
        assert!(parse_offer("tether-upgrade 2 pid=1 listeners=0\nend\n").is_err());
        assert!(
            parse_offer("tether-upgrade 1 pid=1 listeners=2\nproxy.listen 127.0.0.1:1\nend\n")
                .is_err()
        );
        assert!(parse_offer("hello\n").is_err());
    }

    /// The whole exchange in one process: the listener handed over is the
    /// same socket (a connection made to it is accepted on the copy), and
    /// the offer ends with the taker's `serving`.
    #[tokio::test]
    async fn listeners_travel_and_serving_ends_the_offer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("upgrade.sock");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let socket = PendingSocket::bind("test.upgrade_socket", &path, true)
            .expect("bind")
            .commit()
            .expect("commit");
        let offered = vec![Listener::of("proxy.listen", &tcp).expect("dup")];
        let offer = tokio::spawn(socket.offer(offered, "test"));

        let mut inherited = inherit("test.upgrade_socket", &path)
            .await
            .expect("inherit");
        assert_eq!(inherited.from_pid, std::process::id());
        let taken = inherited
            .take(|l| l.key == "proxy.listen")
            .expect("the listener came")
            .into_tokio()
            .expect("tokio listener");
        assert_eq!(taken.local_addr().expect("addr"), addr);
        drop(tcp);
        let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), taken.accept());
        client.expect("connect");
        accepted.expect("accepted on the inherited socket");

        assert!(!offer.is_finished());
        inherited.serving().await.expect("ack");
        let pid = tokio::time::timeout(Duration::from_secs(10), offer)
            .await
            .expect("the offer ends")
            .expect("offer task");
        assert_eq!(pid, std::process::id());
    }

    /// A taker that goes away before `serving` leaves the offer standing,
    /// and a second taker meanwhile is refused.
    #[tokio::test]
    async fn a_failed_taker_changes_nothing_and_a_second_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("upgrade.sock");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let socket = PendingSocket::bind("test.upgrade_socket", &path, true)
            .expect("bind")
            .commit()
            .expect("commit");
        assert!(matches!(
            PendingSocket::bind("test.upgrade_socket", &path, true),
            Err(UpgradeError::InUse { .. })
        ));
        let offered = vec![Listener::of("proxy.listen", &tcp).expect("dup")];
        let offer = tokio::spawn(socket.offer(offered, "test"));

        let first = inherit("test.upgrade_socket", &path).await.expect("first");
        match inherit("test.upgrade_socket", &path).await {
            Err(UpgradeError::Refused { reason, .. }) => assert!(reason.contains("in progress")),
            other => panic!("the second taker got {other:?}"),
        }
        drop(first);
        // Refused while the first held it; served once the first is gone.
        let again = inherit_when_free(&path).await;
        again.serving().await.expect("ack");
        tokio::time::timeout(Duration::from_secs(10), offer)
            .await
            .expect("the offer ends")
            .expect("offer task");
    }

    /// Retries while the offer still counts a taker that just left.
    async fn inherit_when_free(path: &Path) -> Inheritance {
        let start = std::time::Instant::now();
        loop {
            match inherit("test.upgrade_socket", path).await {
                Ok(i) => return i,
                Err(UpgradeError::Refused { .. }) if start.elapsed() < Duration::from_secs(10) => {
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("inherit: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn no_process_at_the_path_names_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = inherit("proxy.upgrade_socket", &dir.path().join("none.sock"))
            .await
            .expect_err("nothing there");
        assert!(err.to_string().contains("proxy.upgrade_socket"), "{err}");
    }
}
