//! Tells the checker about members this proxy ejected, so it re-probes them
//! at once and, if it confirms, every proxy learns within milliseconds. The
//! checker decides; a report on its own changes nothing.

use std::time::Duration;

use log::{debug, info, warn};
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::source::{self, Source};

const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
const REASON: &str = "consecutive connect or gateway failures";

/// Sends each ejected member's name to the health source, until the
/// channel closes.
pub async fn run(source: Source, mut names: mpsc::Receiver<String>, reporter: String) {
    // Lazy channels: nothing connects until the first report.
    // Reports go over the same channel settings (TLS, client certificate)
    // as the health stream.
    let mut clients: Vec<(String, HealthServiceClient<Channel>)> = match &source {
        Source::Checkers { uris, tls } => uris
            .iter()
            .filter_map(|u| match source::endpoint(u.clone(), tls.as_ref()) {
                Ok(endpoint) => {
                    let channel = endpoint
                        .connect_timeout(REPORT_TIMEOUT)
                        .timeout(REPORT_TIMEOUT)
                        .connect_lazy();
                    Some((u.to_string(), HealthServiceClient::new(channel)))
                }
                Err(e) => {
                    warn!(target: "proxy", "cannot report to {u}: {e}");
                    None
                }
            })
            .collect(),
        Source::Hub(_) => Vec::new(),
    };
    while let Some(name) = names.recv().await {
        match &source {
            Source::Hub(hub) => match hub.report_from(&name, REASON, &reporter).await {
                Ok(outcome) => {
                    debug!(target: "proxy", "reported {name} to the embedded checker: {outcome}")
                }
                Err(e) => warn!(target: "proxy", "cannot report {name}: {e}"),
            },
            Source::Checkers { .. } => report_grpc(&mut clients, &name, &reporter).await,
        }
    }
}

/// Tries each checker in order until one takes the report.
async fn report_grpc(
    clients: &mut [(String, HealthServiceClient<Channel>)],
    name: &str,
    reporter: &str,
) {
    for (uri, client) in clients.iter_mut() {
        let request = pb::ReportRequest {
            name: name.to_owned(),
            reason: REASON.to_owned(),
            reporter: reporter.to_owned(),
        };
        match client.report(request).await {
            Ok(answer) => {
                let accepted = answer.into_inner().accepted;
                info!(target: "proxy", "reported {name} to {uri} (re-probe scheduled: {accepted})");
                return;
            }
            Err(status) => {
                debug!(target: "proxy", "report of {name} to {uri} failed: {}", status.message());
            }
        }
    }
    warn!(target: "proxy", "no checker took the report of {name}");
}
