//! tether-core: the pool model, the health state machine, the merge of
//! several checkers' views, the routing table, the balancers (round robin,
//! least request, slow start) and the sticky decision.
//!
//! Everything here is pure computation: time and inputs arrive as arguments,
//! decisions come back as values. This crate must not depend on tokio, on
//! sockets, on a clock, on logging or on protobuf, so that every rule can be
//! unit tested without I/O and shared by the checker and the proxy alike.

pub mod balance;
pub mod health;
pub mod impaired;
pub mod merge;
pub mod pool;
pub mod slow_start;
pub mod status;
pub mod sticky;
pub mod table;
pub mod target;

pub use balance::{Policy, RoundRobin};
pub use health::{FailureClass, HealthState, HealthTracker, ProbeOutcome, Transition};
pub use impaired::{ImpairedThreshold, ImpairmentDetector};
pub use merge::{CheckerView, merge};
pub use pool::{Applied, Gap, PoolView};
pub use status::{CheckerState, HealthUpdate, Impairment, TargetStatus, UpdateKind};
pub use sticky::{Pick, StickyHint};
pub use table::{Member, RoutingTable};
pub use target::{PoolEntry, ProbeKind, ProbeSpec, Target};
