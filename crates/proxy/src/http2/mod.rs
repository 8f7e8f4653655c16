//! HTTP/2 to targets (`[[targets]] protocol = "h2" | "h2c"`) and what
//! gRPC needs on the way through.
//!
//! The HTTP/1 client (`crate::http1::client`) owns `h1` targets; this
//! module is the other arm of the request path's one dispatch by protocol
//! (`crate::forward`): [`client`] keeps a few multiplexed connections per
//! target and sends on them, [`body`] the bodies that cross them (a
//! request body kept until the target has answered, so a stream it did not
//! process can go elsewhere whole; a response body that ends a broken gRPC
//! call with a status), [`grpc`] the rules of gRPC requests (deadline,
//! statuses instead of the proxy's JSON errors).

pub mod body;
pub mod client;
pub mod grpc;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use tether_daemon::config::TargetProtocol as Protocol;

use crate::table::Upstream;

/// `[[targets]] protocol` by the `host:port` of each target's url (see
/// `tether_daemon::config::target_protocols`); every member not named
/// speaks HTTP/1.1. Empty (the common case) costs a request one check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protocols(Arc<BTreeMap<String, Protocol>>);

impl Protocols {
    pub fn new(by_authority: BTreeMap<String, Protocol>) -> Protocols {
        Protocols(Arc::new(by_authority))
    }

    /// What the proxy speaks to `upstream`: looked up by its Host (the
    /// url's `host:port`, a DNS member's entry host), as `tls_ca` is.
    pub fn of(&self, upstream: &Upstream) -> Protocol {
        if self.0.is_empty() {
            return Protocol::H1;
        }
        upstream
            .host_header
            .to_str()
            .ok()
            .and_then(|host| self.0.get(host))
            .copied()
            .unwrap_or(Protocol::H1)
    }
}
