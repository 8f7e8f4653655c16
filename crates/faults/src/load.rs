//! Traffic: workers that each keep one HTTP/1.1 keep-alive connection to
//! the proxy and send `GET`s at a pace until stopped or a cap is reached,
//! recording every request's start, latency and result.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tether_testkit::Client;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A request that takes longer than this is a client-side timeout.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the load sends.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub workers: usize,
    /// Gap between one worker's requests (0: back to back).
    pub pace: Duration,
    /// Most requests each worker sends.
    pub cap: usize,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// A response header to record in each [`Sample`] (lower case).
    pub record: Option<String>,
}

impl LoadSpec {
    /// `workers` workers, each sending a request every `pace`, at most
    /// `cap` each, to `/`.
    pub fn new(workers: usize, pace: Duration, cap: usize) -> LoadSpec {
        LoadSpec {
            workers,
            pace,
            cap,
            path: "/".to_owned(),
            headers: Vec::new(),
            record: None,
        }
    }
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Res {
    /// 200, with the body (a fake backend answers with its name).
    Ok(String),
    Status(u16),
    /// The connection failed (refused, reset, closed mid-answer, timeout).
    Conn(String),
}

/// One request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent, after the load started.
    pub start: Duration,
    pub latency: Duration,
    pub res: Res,
    /// The value of [`LoadSpec::record`] in the response, if asked and sent.
    pub header: Option<String>,
}

/// Running traffic; [`finish`](Load::finish) stops it and returns samples.
#[derive(Debug)]
pub struct Load {
    t0: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, spec: &LoadSpec) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..spec.workers)
            .map(|_| tokio::spawn(worker(addr, spec.clone(), t0, Arc::clone(&stop))))
            .collect();
        Load { t0, stop, tasks }
    }

    /// When the load started (sample times count from here).
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Whether every worker reached its cap.
    pub fn done(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Waits until every worker has sent its cap.
    pub async fn wait(self) -> Vec<Sample> {
        self.collect().await
    }

    /// Stops the workers after their current request; all samples, by start.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.collect().await
    }

    async fn collect(self) -> Vec<Sample> {
        let mut all = Vec::new();
        for t in self.tasks {
            if let Ok(samples) = t.await {
                all.extend(samples);
            }
        }
        all.sort_by_key(|s| s.start);
        all
    }
}

async fn worker(
    addr: SocketAddr,
    spec: LoadSpec,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let headers: Vec<(&str, &str)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut out = Vec::with_capacity(spec.cap.min(100_000));
    let mut client: Option<Client> = None;
    while out.len() < spec.cap && !stop.load(Ordering::SeqCst) {
        // A connection the proxy closed between requests is not a failure:
        // a client opens a new one, as browsers and pools do.
        if client.as_ref().is_some_and(Client::is_closed) {
            client = None;
        }
        let started = Instant::now();
        let start = started - t0;
        let record = spec.record.as_deref();
        let (res, header) = match client.as_mut() {
            Some(c) => one(c, &spec.path, &headers, record).await,
            None => match tokio::time::timeout(CLIENT_TIMEOUT, Client::connect(addr)).await {
                Ok(Ok(mut c)) => {
                    let r = one(&mut c, &spec.path, &headers, record).await;
                    client = Some(c);
                    r
                }
                Ok(Err(e)) => (Res::Conn(format!("connect: {}", e.kind())), None),
                Err(_) => (Res::Conn("connect: timeout".to_owned()), None),
            },
        };
        if matches!(res, Res::Conn(_)) {
            client = None;
        }
        out.push(Sample {
            start,
            latency: started.elapsed(),
            res,
            header,
        });
        if !spec.pace.is_zero() {
            tokio::time::sleep(spec.pace).await;
        }
    }
    out
}

async fn one(
    c: &mut Client,
    path: &str,
    headers: &[(&str, &str)],
    record: Option<&str>,
) -> (Res, Option<String>) {
    match tokio::time::timeout(CLIENT_TIMEOUT, c.get(path, headers)).await {
        Ok(Ok(r)) => {
            let header = record.and_then(|name| r.header(name)).map(str::to_owned);
            let res = if r.status == 200 {
                Res::Ok(r.body)
            } else {
                Res::Status(r.status)
            };
            (res, header)
        }
        Ok(Err(e)) => (Res::Conn(short(&e.to_string())), None),
        Err(_) => (Res::Conn("timeout".to_owned()), None),
    }
}

/// An error message without addresses or numbers that differ per run.
fn short(msg: &str) -> String {
    let m = msg.to_lowercase();
    for key in [
        "connection reset",
        "connection closed",
        "incomplete message",
        "broken pipe",
        "refused",
        "canceled",
    ] {
        if m.contains(key) {
            return key.to_owned();
        }
    }
    msg.chars().take(60).collect()
}

/// The figures of a set of samples.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub sent: usize,
    pub ok: usize,
    pub by_status: BTreeMap<u16, usize>,
    pub by_error: BTreeMap<String, usize>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Figures {
    pub fn of(samples: &[Sample]) -> Figures {
        let mut f = Figures {
            sent: samples.len(),
            ..Figures::default()
        };
        for s in samples {
            match &s.res {
                Res::Ok(_) => f.ok += 1,
                Res::Status(code) => *f.by_status.entry(*code).or_default() += 1,
                Res::Conn(e) => *f.by_error.entry(e.clone()).or_default() += 1,
            }
        }
        let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        lat.sort();
        f.p50 = percentile(&lat, 50.0);
        f.p99 = percentile(&lat, 99.0);
        f.max = lat.last().copied().unwrap_or_default();
        f
    }

    pub fn failed(&self) -> usize {
        self.sent - self.ok
    }

    /// Failures as `502x3 504x1 reset x2`, or `0`.
    pub fn failures(&self) -> String {
        let mut parts: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        parts.extend(self.by_error.iter().map(|(e, n)| format!("{e}×{n}")));
        if parts.is_empty() {
            "0".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent, {} failed ({}), p50 {} p99 {} max {}",
            self.sent,
            self.failed(),
            self.failures(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// The `p`th percentile (nearest rank) of sorted `lat`.
pub fn percentile(lat: &[Duration], p: f64) -> Duration {
    if lat.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
    lat[rank.clamp(1, lat.len()) - 1]
}

/// `12.3 ms`.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}
