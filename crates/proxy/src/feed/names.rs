//! Checker names (`[health_source] expand = "dns"`): one task per name
//! looks it up every `dns_refresh` and keeps one follower per address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use log::{info, warn};
use tether_daemon::tls::ClientTls;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::follow::follow;
use super::{CheckerEntry, Event};
use crate::config::CheckerDns;
use crate::source::Endpoint;
use crate::stats::ProxyStats;

/// A lookup of a checker name taking longer than this (or than the
/// refresh) counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A checker url whose host is a name (`expand = "dns"`).
pub(super) struct Name {
    pub order: usize,
    pub uri: http::Uri,
    pub host: String,
    pub port: u16,
    pub tls: Option<ClientTls>,
}

impl Name {
    /// The endpoint of one of its addresses.
    fn endpoint(&self, addr: SocketAddr) -> Option<Endpoint> {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let uri = format!("{scheme}://{addr}").parse().ok()?;
        Some(Endpoint::Checker {
            uri,
            tls: self.tls.clone(),
            name: Some(format!("{}:{}", self.host, self.port)),
        })
    }
}

/// Looks `name` up now and every `dns.refresh`, and keeps one follower per
/// address it has: a new address gets one, a vanished address's stops. A
/// lookup that fails or answers nothing keeps the addresses there were
/// (a DNS blip is not a checker's failure), logged once per failing streak.
pub(super) async fn expand(
    name: Name,
    dns: CheckerDns,
    ids: Arc<AtomicUsize>,
    tx: mpsc::Sender<Event>,
    stats: Arc<ProxyStats>,
) {
    let label = format!("{}:{}", name.host, name.port);
    let mut followers: BTreeMap<SocketAddr, (usize, AbortHandle)> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    let mut failing = false;
    let mut ticker = tokio::time::interval(dns.refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let lookup = dns.resolver.0.resolve(&name.host, name.port);
        let answer = match tokio::time::timeout(LOOKUP_TIMEOUT.min(dns.refresh), lookup).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
            Ok(Ok(_)) => Err("no addresses".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in time".to_owned()),
        };
        let addrs: BTreeSet<SocketAddr> = match answer {
            Ok(addrs) => addrs.into_iter().collect(),
            Err(why) => {
                if !failing {
                    warn!(target: "proxy", "health feed: cannot look up checkers at {label}: {why}; keeping the {} addresses it had", followers.len());
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            info!(target: "proxy", "health feed: {label} resolves again");
            failing = false;
        }
        let gone: Vec<SocketAddr> = followers
            .keys()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        let added: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| !followers.contains_key(a))
            .copied()
            .collect();
        for addr in &gone {
            if let Some((id, handle)) = followers.remove(addr) {
                handle.abort();
                if tx.send(Event::Gone { id }).await.is_err() {
                    return;
                }
            }
        }
        for addr in &added {
            let Some(endpoint) = name.endpoint(*addr) else {
                continue;
            };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let entry = CheckerEntry {
                id,
                order: (name.order, Some(*addr)),
                label: endpoint.label(),
                endpoint: endpoint.clone(),
                view: Arc::default(),
            };
            // Announced before its follower starts, so the merger knows the
            // id before any view of it arrives.
            if tx.send(Event::Added(Box::new(entry))).await.is_err() {
                return;
            }
            let handle = tasks.spawn(follow(id, endpoint, tx.clone(), stats.clone()));
            followers.insert(*addr, (id, handle));
        }
        if !gone.is_empty() || !added.is_empty() {
            let now: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            info!(target: "proxy", "health feed: checkers at {label}: {} (added {}, gone {})", now.join(" "), added.len(), gone.len());
        }
        // Reap followers that ended (the merger went away).
        while tasks.try_join_next().is_some() {}
    }
}
