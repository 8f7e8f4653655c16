//! tether-bench-watch: many Watch subscribers for the checker benchmark.
//!
//! Opens `--subscribers` Watch streams to one checker, each on its own
//! connection as separate proxies would, and prints one line per event on
//! stdout, stamped with the wall-clock time it arrived:
//!
//! - `snapshot SUB VERSION TARGETS HEALTHY UNIX_US` for each snapshot;
//! - `ready SUB UNIX_US` the first time a subscriber sees every target
//!   healthy;
//! - `change SUB NAME STATE VERSION LAST_CHANGE_MS UNIX_US` for each state
//!   change after that subscriber was ready (the start-up flood of
//!   unknown -> healthy is not printed). A change that arrives folded into a
//!   fresh snapshot (a lagging subscriber) is printed too, as `change` with
//!   the snapshot's version;
//! - `error SUB MESSAGE` when a stream fails (that subscriber stops).
//!
//! Runs until the checker closes the streams or stdin closes.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_proto::pb::watch_response::Update;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

/// A snapshot of 10,000 targets is about a megabyte; leave ample room.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "tether-bench-watch",
    about = "Opens many Watch streams to a checker and timestamps every change"
)]
struct Args {
    /// The checker's gRPC URL.
    #[arg(long)]
    checker: String,
    /// How many subscribers (each with its own connection).
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tether-bench-watch: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args));
    ExitCode::SUCCESS
}

async fn run(args: Args) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    for sub in 0..args.subscribers {
        let tx = tx.clone();
        let url = args.checker.clone();
        tokio::spawn(async move {
            if let Err(e) = subscribe(sub, &url, &tx).await {
                let _ = tx.send(format!("error {sub} {}", e.to_string().replace('\n', " ")));
            }
        });
    }
    drop(tx);

    // The driver ends the run by closing stdin.
    let (stop_tx, mut stop_rx) = mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = stop_tx.blocking_send(());
    });

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { break };
                let _ = writeln!(out, "{line}");
                // Write everything already queued, then flush once.
                while let Ok(line) = rx.try_recv() {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
            _ = stop_rx.recv() => break,
        }
    }
    let _ = out.flush();
}

async fn subscribe(
    sub: usize,
    url: &str,
    tx: &mpsc::UnboundedSender<String>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = HealthServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = client.watch(pb::WatchRequest {}).await?.into_inner();

    let healthy_state = pb::HealthState::Healthy as i32;
    let mut states: HashMap<String, i32> = HashMap::new();
    // Kept alongside `states` so readiness is O(1) per message.
    let mut healthy = 0usize;
    let mut ready = false;
    while let Some(msg) = stream.message().await? {
        let now = unix_us();
        match msg.update {
            Some(Update::Snapshot(snapshot)) => {
                healthy = snapshot
                    .targets
                    .iter()
                    .filter(|t| t.state == healthy_state)
                    .count();
                let _ = tx.send(format!(
                    "snapshot {sub} {} {} {healthy} {now}",
                    msg.version,
                    snapshot.targets.len()
                ));
                let mut fresh = HashMap::with_capacity(snapshot.targets.len());
                for t in snapshot.targets {
                    let before = states.get(&t.name).copied();
                    if ready && before.is_some_and(|s| s != t.state) {
                        let _ = tx.send(change_line(sub, &t, msg.version, now));
                    }
                    fresh.insert(t.name, t.state);
                }
                states = fresh;
            }
            Some(Update::Change(t)) => {
                if ready {
                    let _ = tx.send(change_line(sub, &t, msg.version, now));
                }
                let after = t.state;
                if states.insert(t.name, after) == Some(healthy_state) {
                    healthy -= 1;
                }
                if after == healthy_state {
                    healthy += 1;
                }
            }
            Some(Update::Removed(name)) => {
                if states.remove(&name) == Some(healthy_state) {
                    healthy -= 1;
                }
            }
            // The checker's own state: members unchanged.
            Some(Update::Checker(_)) | None => continue,
        }
        if !ready && !states.is_empty() && healthy == states.len() {
            ready = true;
            let _ = tx.send(format!("ready {sub} {now}"));
        }
    }
    Ok(())
}

fn change_line(sub: usize, t: &pb::TargetHealth, version: u64, now: u128) -> String {
    let state = match pb::HealthState::try_from(t.state) {
        Ok(pb::HealthState::Healthy) => "healthy",
        Ok(pb::HealthState::Unhealthy) => "unhealthy",
        Ok(pb::HealthState::Unknown) => "unknown",
        _ => "unspecified",
    };
    format!(
        "change {sub} {} {state} {version} {} {now}",
        t.name,
        t.last_change_unix_ms.unwrap_or(0)
    )
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}
