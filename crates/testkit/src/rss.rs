//! A process's resident memory from `/proc/<pid>/status` (Linux), read once
//! or sampled for its peak while a test runs.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

/// `VmRSS` of process `pid`, in bytes.
pub fn vm_rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))?;
    // "VmRSS:     12345 kB"
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad {line:?}")))?;
    Ok(kib * 1024)
}

/// Samples a process's `VmRSS` on a task, keeping the highest value seen.
#[derive(Debug)]
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling `pid` every `every` (first sample at once). A failed
    /// read (the process exited) ends the sampling.
    pub fn start(pid: u32, every: Duration) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let peak = Arc::clone(&peak);
            let samples = Arc::clone(&samples);
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Ok(rss) = vm_rss(pid) else { return };
                    peak.fetch_max(rss, Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        PeakRss {
            peak,
            samples,
            task,
        }
    }

    /// The highest `VmRSS` seen so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// How many samples were taken so far.
    pub fn samples(&self) -> usize {
        self.samples.load(Ordering::SeqCst)
    }

    /// Stops sampling; returns (peak bytes, sample count).
    pub fn stop(self) -> (u64, usize) {
        self.task.abort();
        (self.peak(), self.samples())
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::vm_rss;

    #[test]
    fn reads_our_own_rss() {
        let rss = vm_rss(std::process::id()).expect("VmRSS of this process");
        assert!(rss > 0);
    }
}
