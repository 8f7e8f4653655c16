//! tether-bench-ports: many TCP targets for the checker benchmark.
//!
//! Listens on `--count` loopback ports chosen by the kernel, prints them on
//! one line (`ports P1,P2,...`), then takes commands on stdin, one per line:
//!
//! - `close PORT`: stop listening, so connects are refused; answers
//!   `closed PORT UNIX_US` once the listener is gone (the time a probe can
//!   first fail).
//! - `open PORT`: listen again; answers `opened PORT UNIX_US`.
//! - `stats`: answers `stats ACCEPTS UNIX_US`, the connections accepted so
//!   far on all ports: what the checker opened.
//!
//! Every accepted connection is held until the peer closes it (a TCP probe
//! closes right after the handshake), then closed: the prober closes first,
//! as with a real server. Resetting instead would race the prober's connect
//! and look like a failed probe. With `--http`, each connection answers
//! every request with `200 OK` and stays open (keep-alive), so an HTTP
//! prober can reuse it; `close PORT` then also closes the port's open
//! connections, as a stopped server would. Exits when stdin closes.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Longest an accepted connection is held waiting for the peer to close.
const HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "tether-bench-ports",
    about = "Listens on many loopback ports; closes and reopens them on command"
)]
struct Args {
    /// How many ports to listen on.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Answer HTTP requests (keep-alive) instead of only holding connections.
    #[arg(long)]
    http: bool,
}

#[derive(Debug)]
enum Command {
    Close(u16),
    Open(u16),
    Stats,
}

/// What every accept loop shares.
#[derive(Debug)]
struct Serve {
    http: bool,
    accepts: AtomicU64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tether-bench-ports: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.count, args.http)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench-ports: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(count: usize, http: bool) -> anyhow::Result<()> {
    let serve = Arc::new(Serve {
        http,
        accepts: AtomicU64::new(0),
    });
    let mut listeners: HashMap<u16, JoinHandle<()>> = HashMap::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        ports.push(port.to_string());
        listeners.insert(port, tokio::spawn(accept_loop(listener, serve.clone())));
    }
    say(&format!("ports {}", ports.join(",")));

    // tokio's stdin needs a feature the workspace does not enable; a plain
    // thread reading lines is all this needs.
    let (tx, mut rx) = mpsc::channel(64);
    std::thread::spawn(move || read_commands(tx));

    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Close(port) => {
                if let Some(task) = listeners.remove(&port) {
                    task.abort();
                    // Resolves once the task, and with it the listener, is dropped.
                    let _ = task.await;
                }
                say(&format!("closed {port} {}", unix_us()));
            }
            Command::Open(port) => {
                if let Entry::Vacant(slot) = listeners.entry(port) {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    // Connections this side closed (`close` with `--http`)
                    // leave the port in TIME_WAIT; reopen it regardless.
                    let socket = TcpSocket::new_v4()?;
                    socket.set_reuseaddr(true)?;
                    socket.bind(addr)?;
                    let listener = socket.listen(1024)?;
                    slot.insert(tokio::spawn(accept_loop(listener, serve.clone())));
                }
                say(&format!("opened {port} {}", unix_us()));
            }
            Command::Stats => {
                let accepts = serve.accepts.load(Ordering::Relaxed);
                say(&format!("stats {accepts} {}", unix_us()));
            }
        }
    }
    Ok(())
}

/// Accepts on one port. Its connections belong to it, so aborting the loop
/// (`close PORT`) closes them too.
async fn accept_loop(listener: TcpListener, serve: Arc<Serve>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    serve.accepts.fetch_add(1, Ordering::Relaxed);
                    if serve.http {
                        conns.spawn(answer_http(stream));
                    } else {
                        conns.spawn(hold_until_closed(stream));
                    }
                }
                // Out of descriptors or similar: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

/// Answers each request (a head ending in a blank line; probes send no
/// body) with an empty `200 OK`, until the peer closes.
async fn answer_http(mut stream: TcpStream) {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let close = std::str::from_utf8(&buf[..end])
                .is_ok_and(|head| head.to_ascii_lowercase().contains("connection: close"));
            buf.drain(..end + 4);
            if stream.write_all(OK).await.is_err() || close {
                return;
            }
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
}

/// Waits for the peer's FIN (or a few seconds), so the peer is the one that
/// closes first.
async fn hold_until_closed(mut stream: TcpStream) {
    let mut buf = [0u8; 512];
    let wait = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(HOLD_LIMIT, wait).await;
}

fn read_commands(tx: mpsc::Sender<Command>) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let cmd = match (words.next(), words.next().and_then(|p| p.parse().ok())) {
            (Some("close"), Some(port)) => Command::Close(port),
            (Some("open"), Some(port)) => Command::Open(port),
            (Some("stats"), _) => Command::Stats,
            _ => {
                eprintln!(
                    "tether-bench-ports: ignoring {line:?} (want `close PORT`, `open PORT` or `stats`)"
                );
                continue;
            }
        };
        if tx.blocking_send(cmd).is_err() {
            break;
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}
