//! tether-testkit: test support for the Tether workspace, and nothing else.
//!
//! It owns the fakes and helpers that socket and process tests share: a
//! controllable HTTP backend ([`FakeBackend`], also served by the
//! `tether-echo` demo binary), a scripted gRPC checker ([`FakeChecker`]), a
//! small HTTP client ([`http::get`], keep-alive [`Client`]), a raw HTTP/1
//! socket ([`raw::RawConn`]), a silent listener ([`Blackhole`]) and one that drops SYNs
//! ([`SynBlackhole`]), a process
//! memory sampler ([`rss`]), helpers that run the built binaries
//! with a temp config ([`Proc`], [`TempConfig`]), certificates made in the
//! test ([`TestCa`]) and a condition poller ([`eventually`]). Production crates must never depend on it; it may
//! depend on any of them.

pub mod backend;
pub mod blackhole;
pub mod body;
pub mod checker;
pub mod grpc;
pub mod headers;
pub mod http;
mod net;
pub mod pki;
pub mod process;
pub mod raw;
pub mod rss;
pub mod wait;

pub use backend::{BYTES_PATH, FakeBackend, HEALTH_PATH, RecordedRequest, WS_PATH};
pub use blackhole::{Blackhole, SynBlackhole};
pub use checker::{FakeChecker, status};
pub use http::{Client, Reply, get};
pub use pki::{Issued, TestCa};
pub use process::{Proc, TempConfig, bin_path, run_to_end};
pub use wait::eventually;
