//! Tells the checkers about members this proxy ejected, so they re-probe
//! them at once and, if their probes confirm, every proxy learns within
//! milliseconds. The checkers decide; a report on its own changes nothing.
//!
//! A report goes to every live checker (stream up, not impaired): the
//! merge needs a majority of them to confirm, so asking one would leave
//! the others on their own schedule. With no live checker it goes to
//! every checker, since a re-probe request costs a checker nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::feed::{CheckerEntry, FeedCell};
use crate::source::{self, Endpoint};

const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
const REASON: &str = "consecutive connect or gateway failures";

/// Sends each ejected member's name to the checkers, until the channel
/// closes.
pub async fn run(checkers: Arc<FeedCell>, mut names: mpsc::Receiver<String>, reporter: String) {
    // Lazy channels, one per checker url, made at the first report to it.
    let mut clients: HashMap<String, HealthServiceClient<Channel>> = HashMap::new();
    while let Some(name) = names.recv().await {
        let status = checkers.load();
        let live: Vec<&CheckerEntry> = status.live().collect();
        let targets = if live.is_empty() {
            status.checkers.iter().collect()
        } else {
            live
        };
        for entry in targets {
            match &entry.endpoint {
                Endpoint::Hub(hub) => {
                    let hub = hub.clone();
                    let (name, reporter) = (name.clone(), reporter.clone());
                    tokio::spawn(async move {
                        match hub.report_from(&name, REASON, &reporter).await {
                            Ok(outcome) => {
                                debug!(target: "proxy", "reported {name} to the embedded checker: {outcome}")
                            }
                            Err(e) => warn!(target: "proxy", "cannot report {name}: {e}"),
                        }
                    });
                }
                Endpoint::Checker {
                    uri,
                    tls,
                    name: checker_name,
                } => {
                    let client = match clients.get(&entry.label) {
                        Some(c) => c.clone(),
                        None => match source::endpoint(
                            uri.clone(),
                            tls.as_ref(),
                            source::server_name(checker_name.as_deref()),
                        ) {
                            Ok(endpoint) => {
                                // Reports go over the same channel settings
                                // (TLS, client certificate) as the stream.
                                let channel = endpoint
                                    .connect_timeout(REPORT_TIMEOUT)
                                    .timeout(REPORT_TIMEOUT)
                                    .connect_lazy();
                                let client = HealthServiceClient::new(channel);
                                clients.insert(entry.label.clone(), client.clone());
                                client
                            }
                            Err(e) => {
                                warn!(target: "proxy", "cannot report to {}: {e}", entry.label);
                                continue;
                            }
                        },
                    };
                    tokio::spawn(report_grpc(
                        client,
                        entry.label.clone(),
                        name.clone(),
                        reporter.clone(),
                    ));
                }
            }
        }
    }
}

async fn report_grpc(
    mut client: HealthServiceClient<Channel>,
    label: String,
    name: String,
    reporter: String,
) {
    let request = pb::ReportRequest {
        name: name.clone(),
        reason: REASON.to_owned(),
        reporter,
    };
    match client.report(request).await {
        Ok(answer) => {
            let accepted = answer.into_inner().accepted;
            info!(target: "proxy", "reported {name} to {label} (re-probe scheduled: {accepted})");
        }
        Err(status) => {
            warn!(target: "proxy", "report of {name} to {label} failed: {}", status.message());
        }
    }
}
