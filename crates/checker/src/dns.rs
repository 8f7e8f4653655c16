//! DNS pools: an `expand = "dns"` entry is re-resolved every `dns_refresh`
//! by a task of its own, and every answer goes to the hub, which turns the
//! addresses into members (`"<name>@<ip>:<port>"`) and diffs them like any
//! other membership change.
//!
//! Resolution goes through [`Resolve`], so tests decide what a name
//! resolves to; the checker uses the system resolver ([`SystemResolver`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// A lookup in progress.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns a host and port into socket addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The operating system's resolver (`tokio::net::lookup_host`): hosts
/// file, search domains and all.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// One lookup's answer for the hub.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The entry's name.
    pub entry: String,
    /// The resolving task's generation: answers of a task the hub has
    /// replaced are dropped.
    pub id: u64,
    pub result: io::Result<Vec<SocketAddr>>,
}

/// What one resolving task needs.
pub(crate) struct Job {
    pub entry: String,
    pub id: u64,
    pub host: String,
    pub port: u16,
    pub every: Duration,
}

/// Resolves `job.host` now and then every `job.every`, forever (the hub
/// aborts the task when the entry goes away or changes). A lookup that
/// takes longer than the refresh counts as failed.
pub(crate) async fn resolve_loop(
    job: Job,
    resolver: Arc<dyn Resolve>,
    answers: mpsc::Sender<Resolved>,
) {
    let mut ticker = tokio::time::interval(job.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let lookup = resolver.resolve(&job.host, job.port);
        let result = match tokio::time::timeout(job.every, lookup).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}", humantime::format_duration(job.every)),
            )),
        };
        let answer = Resolved {
            entry: job.entry.clone(),
            id: job.id,
            result,
        };
        if answers.send(answer).await.is_err() {
            return;
        }
    }
}
